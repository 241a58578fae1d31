"""Training data through a DataLoader: the same batches in the same order for a seed, whatever the number of
worker processes, and for a resumed run from its iteration alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastrcnn_cli.data.voc import ImageRecord, load_dataset
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.model.backbones import TORCHVISION_IMAGENET
from fastrcnn_cli.sampling import SamplingSettings
from fastrcnn_cli.training.data import EpochPlan, FailedImage, ImageSettings, TrainImages, make_loader
from tests.test_train import losses, one_thread, tiny_settings  # noqa: F401 (one_thread: a fixture)

CPU = torch.device("cpu")


def images_of(records: list[ImageRecord], seed: int = 7) -> TrainImages:
    """Every random choice on: two scales, photometric jitter, RoIs sampled from jittered boxes."""
    rng = np.random.default_rng(0)
    proposals = {r.id: np.concatenate([r.boxes + rng.uniform(-8, 8, r.boxes.shape), r.boxes]).astype(np.float32)
                 for r in records}
    settings = ImageSettings(seed, (96, 128), 200, 0.2, SamplingSettings(rois_per_image=16))
    return TrainImages(records, proposals, settings, TORCHVISION_IMAGENET, 1 / 16)


def batches(images: TrainImages, plan: EpochPlan, start: int, count: int, workers: int = 0) -> list:
    loader = iter(make_loader(images, plan, 0, start, workers, CPU, 1))
    try:
        return [next(loader) for _ in range(count)]
    finally:
        getattr(loader, "_shutdown_workers", lambda: None)()


def test_a_batch_is_a_function_of_its_iteration_alone(synthetic_voc: Path) -> None:
    records = list(load_dataset(synthetic_voc, "train").records)
    images, plan = images_of(records), EpochPlan(records, True, 2, 1, seed=7)
    assert plan.batches_per_epoch == 12  # 24 entries (12 images and their mirrors), 2 per batch
    from_start = batches(images, plan, 0, 15)  # across an epoch boundary
    resumed = batches(images, plan, 11, 4)
    for a, b in zip(from_start[11:], resumed):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert not torch.equal(from_start[0].rois, from_start[12].rois)  # another epoch, other draws
    other_seed = batches(images_of(records, seed=8), EpochPlan(records, True, 2, 1, seed=8), 0, 1)
    assert not torch.equal(other_seed[0].rois, from_start[0].rois)


def test_worker_processes_give_the_same_batches(synthetic_voc: Path) -> None:
    records = list(load_dataset(synthetic_voc, "train").records)
    images, plan = images_of(records), EpochPlan(records, True, 2, 1, seed=7)
    alone, two = batches(images, plan, 3, 6, workers=0), batches(images, plan, 3, 6, workers=2)
    for a, b in zip(alone, two):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_each_epoch_visits_every_image_and_mirror_once_split_between_processes() -> None:
    records = [ImageRecord(str(i), Path("x"), 400 if i % 3 else 200, 300) for i in range(10)]
    plan = EpochPlan(records, True, 2, 2, seed=1)
    assert plan.batches_per_epoch == 5  # 20 entries, 4 per iteration over both processes
    for epoch in range(2):
        its = range(epoch * 5, epoch * 5 + 5)
        seen = [(k.record, k.flipped) for i in its for rank in (0, 1) for k in plan.batch(i, rank)]
        assert sorted(seen) == sorted((i, f) for i in range(10) for f in (False, True))
        slots = {k.slot for i in its for rank in (0, 1) for k in plan.batch(i, rank)}
        assert slots == {0, 1, 2, 3}


def test_an_unreadable_image_is_an_error_naming_it_not_a_worker_crash(synthetic_voc: Path, tmp_path: Path) -> None:
    records = list(load_dataset(synthetic_voc, "train").records)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    records = [ImageRecord(r.id, broken, r.width, r.height, r.boxes, r.labels) for r in records]
    plan = EpochPlan(records, False, 2, 1, seed=0)
    (batch,) = batches(images_of(records), plan, 0, 1, workers=1)
    assert isinstance(batch, FailedImage) and isinstance(batch.error, InputError)
    assert str(broken) in str(batch.error) and "Traceback" not in str(batch.error)


def test_zero_and_two_workers_train_with_the_same_losses(synthetic_voc: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.train import train

    runs = {}
    for workers in (0, 2):
        settings = tiny_settings(synthetic_voc, tmp_path / str(workers), iterations=5, scale=(128, 160),
                                 photometric=0.2, workers=workers, checkpoint_every=5)
        runs[workers] = losses(train(settings).history)
    assert len(runs[0]) == 5 and runs[0] == runs[2]


def test_difficult_boxes_are_left_out_of_training_unless_asked():
    """py-faster-rcnn's use_diff = False: difficult (iscrowd) boxes are not training targets."""
    from pathlib import Path

    import numpy as np

    from fastrcnn_cli.data.records import ImageRecord
    from fastrcnn_cli.training.data import without_difficult

    boxes = np.array([[0, 0, 9, 9], [5, 5, 20, 20], [1, 2, 3, 4]], np.float32)
    record = ImageRecord("a", Path("a.jpg"), 30, 30, boxes, np.array([0, 1, 2]), np.array([False, True, False]),
                         areas=np.array([1.0, 2.0, 3.0], np.float32))
    kept = without_difficult(record)
    assert kept.boxes.tolist() == [[0, 0, 9, 9], [1, 2, 3, 4]] and kept.labels.tolist() == [0, 2]
    assert not kept.difficult.any() and kept.areas.tolist() == [1.0, 3.0]
    assert record.num_objects == 3  # the data set's record is not changed
    plain = ImageRecord("b", Path("b.jpg"), 30, 30, boxes[:1], np.array([0]), np.array([False]))
    assert without_difficult(plain) is plain


def test_runs_recorded_before_use_difficult_keep_training_on_difficult_boxes():
    from fastrcnn_cli.training.settings import TrainSettings

    assert TrainSettings.from_dict({"data": "d", "recipe": "small-data"}).use_difficult
    assert not TrainSettings.from_dict({"data": "d", "recipe": "small-data", "use_difficult": False}).use_difficult
    assert not TrainSettings(data="d").use_difficult

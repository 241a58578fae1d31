"""Negative images (no objects): training samples background RoIs from them, evaluation counts the detections on
them as false positives, and every step between keeps them (validation, the training data path, the CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fastrcnn_cli.boxes import iou
from fastrcnn_cli.coco_metrics import evaluate_coco
from fastrcnn_cli.data.records import ImageRecord
from fastrcnn_cli.data.voc import annotation_xml, load_dataset
from fastrcnn_cli.detections import Detections, save_detections
from fastrcnn_cli.evaluation import evaluate_voc
from fastrcnn_cli.io import write_image
from fastrcnn_cli.sampling import SamplingSettings, sample_rois
from tests.test_detect import run


def _proposals(count: int, seed: int = 0, size: int = 300) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 60, (count, 2))
    wh = rng.uniform(20, 60, (count, 2))
    return torch.from_numpy(np.concatenate([xy, xy + wh], axis=1).astype(np.float32))


# ------------------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------------------


def test_a_negative_image_gives_background_rois_only() -> None:
    """No ground truth: every proposal is a background candidate (overlap 0 is below the [0.1, 0.5) band, which
    would otherwise leave the image without a single RoI)."""
    proposals = _proposals(300)
    no_boxes, no_labels = torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long)
    sampled = sample_rois(proposals, no_boxes, no_labels, SamplingSettings(), torch.Generator().manual_seed(0))
    assert len(sampled.boxes) == 64 and sampled.num_foreground == 0
    assert (sampled.labels == 0).all() and (sampled.targets == 0).all()
    # drawn from the proposals, none twice
    matches = (sampled.boxes[:, None, :] == proposals[None, :, :]).all(dim=2)
    assert (matches.sum(dim=1) == 1).all() and len(set(matches.float().argmax(dim=1).tolist())) == 64
    few = sample_rois(proposals[:10], no_boxes, no_labels, SamplingSettings(), torch.Generator().manual_seed(0))
    assert len(few.boxes) == 10 and few.num_foreground == 0  # fewer proposals than wanted: all of them
    # even a foreground threshold of 0 finds no object to match in an image that has none
    zero = SamplingSettings(fg_iou=0.0, bg_iou_low=0.0, bg_iou_high=0.0)
    assert sample_rois(proposals, no_boxes, no_labels, zero, torch.Generator()).num_foreground == 0


def test_an_image_with_objects_keeps_the_papers_background_band() -> None:
    gt = torch.tensor([[100.0, 100.0, 199.0, 199.0]])
    near = torch.tensor([[100.0, 100.0, 199.0, 129.0], [60.0, 60.0, 159.0, 159.0]])  # IoU 0.3, about 0.22
    far = torch.tensor([[0.0, 0.0, 40.0, 40.0], [250.0, 250.0, 290.0, 290.0]])  # IoU 0
    proposals = torch.cat([gt + 2, near, far])
    sampled = sample_rois(proposals, gt, torch.tensor([3]), SamplingSettings(), torch.Generator().manual_seed(0))
    overlap = iou(sampled.boxes, gt).max(dim=1).values
    background = sampled.labels == 0
    assert sampled.num_foreground == 2 and (sampled.labels[~background] == 3).all()  # the box and its copy
    assert background.sum() == 2 and ((overlap[background] >= 0.1) & (overlap[background] < 0.5)).all()


def test_sampling_settings_out_of_range_name_their_field() -> None:
    from fastrcnn_cli.errors import SettingsError

    with pytest.raises(SettingsError, match="^bg_iou_low: must be <= bg_iou_high"):
        SamplingSettings(bg_iou_low=0.6)
    with pytest.raises(SettingsError) as info:
        SamplingSettings(rois_per_image=0, fg_fraction=float("nan"))
    assert [field for field, _ in info.value.problems] == ["rois_per_image", "fg_fraction"]


# ------------------------------------------------------------------------------------------------------------
# a data set with a negative image
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_negative(synthetic_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set plus one image without objects: split ``test_neg`` is ``test`` and that image."""
    root = tmp_path_factory.mktemp("negatives") / "shapes"
    shutil.copytree(synthetic_voc, root)
    rng = np.random.default_rng(5)
    write_image(root / "JPEGImages" / "neg.jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (root / "Annotations" / "neg.xml").write_text(annotation_xml("neg.jpg", 160, 120, [], np.zeros((0, 4)), []))
    main = root / "ImageSets" / "Main"
    (main / "test_neg.txt").write_text((main / "test.txt").read_text() + "neg\n")
    return root


def test_validation_and_loading_keep_the_negative_image(with_negative: Path) -> None:
    dataset = load_dataset(with_negative, "test_neg", warn=False)
    assert "neg" in dataset.ids and dataset.num_negative == 1 and dataset.report.ok
    result = run("validate", with_negative, "--split", "test_neg", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["usable_images"] == 5 and payload["negative_images"] == 1 and payload["problems"] == []
    assert payload["format"] == "voc"


def test_the_training_data_path_keeps_negative_images_and_samples_their_background(with_negative: Path) -> None:
    from fastrcnn_cli.model.backbones import TORCHVISION_IMAGENET
    from fastrcnn_cli.training.data import load_train_image, usable_records

    records = load_dataset(with_negative, "test_neg", warn=False).records
    negative = next(r for r in records if r.id == "neg")
    proposals = {r.id: _proposals(50, size=120).numpy() for r in records}
    assert negative in usable_records(records, proposals)
    assert negative not in usable_records(records, {**proposals, "neg": np.zeros((0, 4), np.float32)})
    image = load_train_image(negative, True, 96, 200, SamplingSettings(rois_per_image=16), proposals["neg"],
                             TORCHVISION_IMAGENET, 1 / 16, torch.Generator().manual_seed(0))  # fmt: skip
    assert len(image.rois) == 16 and (image.labels == 0).all() and (image.targets == 0).all()


def _perfect(records: list[ImageRecord]) -> list[Detections]:
    return [Detections(r.id, r.boxes, np.linspace(0.9, 0.8, r.num_objects), r.labels) for r in records]


def test_detections_on_a_negative_image_are_false_positives_in_both_protocols() -> None:
    positives = [
        ImageRecord(name, Path(f"{name}.jpg"), 200, 150, np.array([box], np.float32), np.array([0]), np.array([False]))
        for name, box in (("a", [10, 10, 59, 59]), ("b", [20, 30, 99, 89]))
    ]
    negative = ImageRecord("neg", Path("neg.jpg"), 200, 150)
    detections = _perfect(positives)
    on_negative = Detections("neg", [[30, 30, 79, 79]], [0.95], [0])  # ranked first
    clean_voc = evaluate_voc(detections, positives, ["cat"], headline="area")
    voc = evaluate_voc([*detections, on_negative], [*positives, negative], ["cat"], headline="area")
    assert clean_voc.map == 1.0 and voc["cat"].fp == 1 and voc["cat"].tp == 2
    assert voc.map == pytest.approx(2 / 3)  # precision 0, 1/2, 2/3: the envelope is 2/3
    clean_coco = evaluate_coco(detections, positives, ["cat"])
    coco = evaluate_coco([*detections, on_negative], [*positives, negative], ["cat"])
    assert clean_coco.map == 1.0 and coco.map == pytest.approx(2 / 3) and coco.num_images == 3
    # the same detections with the negative image left out of the ground truth would be refused, not ignored
    with pytest.raises(Exception, match="not in the evaluated split"):
        evaluate_voc([*detections, on_negative], positives, ["cat"])


@pytest.mark.parametrize("metric", ["area", "coco"])
def test_evaluate_counts_false_positives_on_negative_images(with_negative: Path, tmp_path: Path, metric: str) -> None:
    dataset = load_dataset(with_negative, "test_neg", warn=False)
    positives = [r for r in dataset.records if r.num_objects]
    circle = dataset.classes.index("circle")
    save_detections(tmp_path / "clean.npz", _perfect(positives), dataset.classes)
    on_negative = Detections("neg", [[20, 20, 79, 79]], [0.99], [circle])
    save_detections(tmp_path / "fp.npz", [*_perfect(positives), on_negative], dataset.classes)
    results = {}
    for split, name in (("test", "clean"), ("test_neg", "fp")):
        result = run("evaluate", with_negative, "--split", split, "--detections", tmp_path / f"{name}.npz",
                     "--metric", metric, "--out", tmp_path / f"out-{name}", "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
        results[name] = json.loads(result.stdout)
    clean, fp = results["clean"], results["fp"]
    assert clean["map"] == pytest.approx(1.0) and clean["negative_images"] == 0
    assert fp["negative_images"] == 1 and fp["images"] == 5
    by_name = {c["name"]: c for c in fp["classes"]}
    assert by_name["circle"]["fp"] == 1 and by_name["circle"]["tp"] == by_name["circle"]["num_positives"] > 0
    assert fp["map"] < clean["map"]
    if metric == "coco":
        coco_class = {c["name"]: c for c in fp["coco"]["classes"]}["circle"]
        assert coco_class["ap"] < 1.0 and coco_class["num_detections"] == by_name["circle"]["num_detections"]

"""`fastrcnn detect` and the detection core: sources, post-processing (thresholds, NMS, max-det, class filter),
JSON/COCO formats, drawing, proposal files, and bad inputs (clear message, exit code 1, no traceback).

The model is a random-init efficientnet-lite0 (no download). Where a test needs detections that are right, the
network's head is replaced by an *oracle* (:func:`install_oracle`) that classifies each RoI by its overlap with
the ground truth: everything else (proposals, scaling, RoI coordinates, box decoding, clipping, NMS, output
formats) is the real code, so the detections must come back exactly on the ground-truth boxes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.data.synthetic import SHAPES
from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.detect import (
    DetectSettings,
    Detector,
    UnknownClassError,
    map_to_scales,
    find_proposal_file,
    load_image_proposals,
    read_proposal_file,
)
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.results import (
    ImageOutcome,
    build_document,
    coco_entries,
    detection_records,
    expand_sources,
    image_id_for,
    plan_outputs,
)
from fastrcnn_cli.visualize import class_colour, draw_detections, text_colour

runner = CliRunner()
#: small and fast: test images are ~300-480 px, so scale 128 makes the backbone pass cheap
TEST_SCALE, TEST_MAX_SIZE = 128, 256
PROPOSALS = {"mode": "fast", "max_side": 160, "top": 300, "min_size": 10}


# ------------------------------------------------------------------------------------------------------------
# helpers shared with test_evaluate_cli
# ------------------------------------------------------------------------------------------------------------


def build_random_model(classes: Sequence[str], seed: int = 0):
    from fastrcnn_cli.model.backbones import BackboneSpec
    from fastrcnn_cli.model.fast_rcnn import DEFAULT_HEADS, ModelConfig, build_model

    torch.manual_seed(seed)
    config = ModelConfig(BackboneSpec("efficientnet-lite0"), classes=tuple(classes), head=DEFAULT_HEADS["efficientnet-lite0"])
    return build_model(config, pretrained=False)


def make_checkpoint(path: Path, classes: Sequence[str] = SHAPES, seed: int = 0) -> Path:
    """A random-init efficientnet-lite0 checkpoint with test-friendly scale and proposal settings."""
    from fastrcnn_cli.model.checkpoint import Checkpoint, save_checkpoint

    model = build_random_model(classes, seed)
    meta = Checkpoint(
        config=model.config,
        preprocessing=model.preprocessing,
        scales=(TEST_SCALE,),
        max_size=TEST_MAX_SIZE,
        proposals=dict(PROPOSALS),
    )
    save_checkpoint(path, model, meta, normalised_regressor=False)
    return path


def install_oracle(
    monkeypatch: pytest.MonkeyPatch, truth: dict[str, tuple[np.ndarray, list[str]]], key: Callable[[str], str]
) -> None:
    """Replace the network head by a perfect classifier: a RoI whose box (mapped back to original pixels)
    overlaps a ground-truth box of the current image with IoU >= 0.5 gets that box's class with probability
    ~1, anything else the background; box offsets are 0. ``truth[key(image_id)]`` = (boxes, class names)."""
    from fastrcnn_cli.boxes import iou
    from fastrcnn_cli.model.fast_rcnn import FastRCNN, scale_factor

    state: dict = {}
    original_detect = Detector.detect

    def detect(self, image, proposals=None, image_id="", score_threshold=None):
        state.update(id=image_id, size=image.shape[:2], settings=self.settings)
        return original_detect(self, image, proposals, image_id, score_threshold)

    def head(self, features, rois):
        boxes, names = truth[key(state["id"])]
        h, w = state["size"]
        s = state["settings"]
        factor = scale_factor(h, w, s.scale[0], s.max_size)
        num_classes = self.config.num_classes
        logits = torch.full((len(rois), num_classes), -20.0)
        logits[:, 0] = 20.0
        if len(boxes):
            overlap = torch.as_tensor(iou(rois[:, 1:].double().numpy() / factor, np.asarray(boxes, np.float64)))
            best_iou, best = overlap.max(dim=1)
            for r in torch.nonzero(best_iou >= 0.5).flatten().tolist():
                logits[r, 0] = -20.0
                logits[r, 1 + self.config.classes.index(names[best[r]])] = 20.0
        return logits, torch.zeros((len(rois), 4 * num_classes))

    monkeypatch.setattr(Detector, "detect", detect)
    monkeypatch.setattr(FastRCNN, "head", head)


def truth_of(root: Path, split: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    """image id -> (ground-truth boxes, class names) of a data set split."""
    ds = load_dataset(root, split, warn=False)
    return {r.id: (r.boxes, [ds.classes[i] for i in r.labels]) for r in ds.records}


def oracle_proposals(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The ground-truth boxes and the whole image (a background box that overlaps none of them by 0.5)."""
    return np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4), [[0, 0, width - 1, height - 1]]]).astype(np.float32)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, code: int, *phrases: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    flat = "".join(result.output.split())  # Rich wraps long lines on stderr
    for phrase in phrases:
        assert "".join(phrase.split()) in flat, result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt")


@pytest.fixture(scope="module")
def model():
    return build_random_model(("a", "b", "c"))


@pytest.fixture
def images(synthetic_voc: Path, tmp_path: Path) -> list[Path]:
    """Three test images of the synthetic set, copied to a folder of their own (with a non-image file)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    ds = load_dataset(synthetic_voc, "test", warn=False)
    paths = []
    for record in ds.records[:3]:
        target = folder / record.image_path.name
        target.write_bytes(record.image_path.read_bytes())
        paths.append(target)
    (folder / "LICENSE").write_text("not an image")
    return paths


# ------------------------------------------------------------------------------------------------------------
# sources and output paths
# ------------------------------------------------------------------------------------------------------------


def _touch_images(folder: Path, names: Sequence[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        (folder / name).write_bytes(b"x")
        out.append(folder / name)
    return out


def test_sources_expand_files_folders_and_globs_in_order_each_once(tmp_path: Path) -> None:
    a, b = _touch_images(tmp_path / "one", ["b.jpg", "a.PNG"])
    (tmp_path / "one" / "notes.txt").write_text("x")
    (tmp_path / "one" / ".hidden.jpg").write_bytes(b"x")
    (c,) = _touch_images(tmp_path / "two" / "deep", ["c.jpeg"])

    single = expand_sources([str(a)])
    assert single.images == [a] and not single.collection
    assert expand_sources([str(a), str(b)]).images == [a, b]
    folder = expand_sources([str(tmp_path / "one")])
    assert folder.images == [b, a] and folder.collection  # sorted by name; txt and hidden files skipped
    assert expand_sources([str(tmp_path / "one" / "*.jpg")]).images == [a]  # a quoted glob, expanded here
    assert expand_sources([str(tmp_path / "**" / "*.jpeg")]).images == [c]  # recursive
    # an image named twice (directly and through its folder) is processed once
    assert expand_sources([str(a), str(tmp_path / "one")]).images == [a, b]


def test_sources_report_every_missing_source_at_once(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "LICENSE").write_text("x")
    with pytest.raises(InputError) as info:
        expand_sources([str(tmp_path / "nope.jpg"), str(tmp_path / "empty"), str(tmp_path / "*.png")])
    message = str(info.value)
    assert "3 sources name no image" in message
    assert "nope.jpg: no such file or folder" in message
    assert "holds no image" in message and "matches nothing" in message


def test_output_paths_file_for_one_image_folder_otherwise(tmp_path: Path) -> None:
    (a,) = _touch_images(tmp_path / "x", ["img.jpg"])
    (b,) = _touch_images(tmp_path / "y", ["img.jpg"])
    one = expand_sources([str(a)])
    assert plan_outputs(one, tmp_path / "vis.png") == [tmp_path / "vis.png"]
    assert plan_outputs(one, tmp_path / "outdir") == [tmp_path / "outdir" / "img.jpg"]
    assert plan_outputs(one, None) == [None]
    two = expand_sources([str(a), str(b)])
    assert plan_outputs(two, tmp_path / "out") == [tmp_path / "out" / "img.jpg", tmp_path / "out" / "img_2.jpg"]
    with pytest.raises(InputError, match="give a folder"):
        plan_outputs(two, tmp_path / "vis.png")
    with pytest.raises(InputError, match="overwrite an input"):
        plan_outputs(expand_sources([str(tmp_path / "x")]), tmp_path / "x")


# ------------------------------------------------------------------------------------------------------------
# JSON and COCO formats
# ------------------------------------------------------------------------------------------------------------


def test_json_records_and_coco_boxes_use_inclusive_widths() -> None:
    det = Detections("img", [[10, 20, 19, 39], [0, 0, 0, 0]], [0.5, 0.9], [1, 0])
    records = detection_records(det, ["cat", "dog"])
    assert [r["class"] for r in records] == ["cat", "dog"]  # by decreasing score
    assert records[1] == {"class": "dog", "class_index": 1, "category_id": 2, "score": 0.5, "box": [10.0, 20.0, 19.0, 39.0]}
    coco = coco_entries(7, records)
    assert coco[1] == {"image_id": 7, "category_id": 2, "bbox": [10.0, 20.0, 10.0, 20.0], "score": 0.5}
    assert coco[0]["bbox"] == [0.0, 0.0, 1.0, 1.0]  # a one-pixel box is 1 wide


def test_image_ids_are_numeric_stems_when_possible() -> None:
    assert image_id_for(Path("a/000456.jpg")) == 456
    assert image_id_for(Path("photo_1.png")) == "photo_1"


def test_document_lists_images_failures_and_coco() -> None:
    det = Detections("x", [[1, 2, 3, 4]], [0.75], [0])
    outcomes = [
        ImageOutcome(Path("d/000001.jpg"), Path("o/000001.jpg"), det, (50, 40), 12, {"proposals": 0.1, "total": 0.2}),
        ImageOutcome(Path("d/bad.jpg"), error="not a readable image"),
    ]
    doc = build_document(outcomes, ["cat"], weights="w.pt", settings={"nms": 0.3}, device="cpu")
    json.dumps(doc)  # serialisable
    assert doc["format"] == "fastrcnn-detect" and doc["categories"] == [{"id": 1, "name": "cat"}]
    (image,) = doc["images"]
    assert (image["image_id"], image["width"], image["height"], image["num_proposals"]) == (1, 50, 40, 12)
    assert image["output"] == "o/000001.jpg" and image["detections"][0]["box"] == [1.0, 2.0, 3.0, 4.0]
    assert doc["failed"] == [{"file": "d/bad.jpg", "error": "not a readable image"}]
    assert doc["coco"] == [{"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 3.0], "score": 0.75}]


def test_document_ids_are_integers_stable_when_an_image_fails_or_from_a_ground_truth() -> None:
    det = Detections("x", [[1, 2, 3, 4]], [0.75], [0])
    outcomes = [
        ImageOutcome(Path("d/cat.jpg"), None, det, (50, 40)),
        ImageOutcome(Path("d/bad.jpg"), error="not a readable image"),
        ImageOutcome(Path("e/dog.png"), None, det, (50, 40)),
    ]
    doc = build_document(outcomes, ["cat"], weights=None, settings={}, device="cpu")
    assert doc["version"] == 3 and doc["videos"] == []
    assert [i["image_id"] for i in doc["images"]] == [1, 3] == [c["image_id"] for c in doc["coco"]]
    ids = {Path("d/cat.jpg"): 17, Path("d/bad.jpg"): 4, Path("e/dog.png"): 5}
    doc = build_document(outcomes, ["cat"], weights=None, settings={}, device="cpu", image_ids=ids, category_ids=[9])
    assert [(c["image_id"], c["category_id"]) for c in doc["coco"]] == [(17, 9), (5, 9)]
    assert doc["categories"] == [{"id": 9, "name": "cat"}] and doc["images"][0]["detections"][0]["category_id"] == 9


# ------------------------------------------------------------------------------------------------------------
# drawing
# ------------------------------------------------------------------------------------------------------------


def test_drawing_keeps_the_size_and_marks_the_boxes_only() -> None:
    image = np.full((200, 300, 3), 127, np.uint8)
    drawn = draw_detections(image, np.array([[100, 80, 199, 159]]), np.array([0.9]), np.array([1]), ["a", "b"])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 127).all()  # the input is not modified
    changed = (drawn != image).any(axis=2)
    assert changed[80, 100:200].all() and changed[159, 100:200].all()  # top and bottom edges
    assert changed[80:160, 100].all() and changed[80:160, 199].all()  # left and right edges
    assert changed[80 - 12 : 80, 100:130].any()  # the label, above the box
    assert not changed[120, 150] and not changed[190:, :].any() and not changed[:, :60].any()


def test_labels_stay_inside_the_image_and_colours_differ_per_class() -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    drawn = draw_detections(image, np.array([[0, 0, 79, 59]]), np.array([0.5]), np.array([0]), ["a-long-class-name"])
    assert drawn.shape == image.shape  # label at the top edge goes inside the box, clipped to the image
    colours = {class_colour(i) for i in range(20)}
    assert len(colours) == 20
    assert text_colour((0, 255, 255)) == (0, 0, 0)  # yellow (BGR): black text
    assert text_colour((128, 0, 0)) == (255, 255, 255)  # dark blue: white text


# ------------------------------------------------------------------------------------------------------------
# post-processing on hand-made scores and boxes
# ------------------------------------------------------------------------------------------------------------


def _scored(rows: Sequence[tuple], num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """rows: (class 0-based, score, box): one proposal each, with only that class scored."""
    probs = torch.zeros((len(rows), num_classes + 1))
    boxes = torch.zeros((len(rows), 4 * (num_classes + 1)))
    for i, (c, score, box) in enumerate(rows):
        probs[i, 1 + c] = score
        probs[i, 0] = 1 - score
        boxes[i, 4 * (1 + c) : 4 * (2 + c)] = torch.tensor(box, dtype=torch.float32)
    return probs, boxes


def test_postprocess_thresholds_scores(model) -> None:
    probs, boxes = _scored([(0, 0.9, (0, 0, 9, 9)), (1, 0.4, (50, 50, 59, 59)), (2, 0.5, (80, 0, 99, 9))])
    det = Detector(model, DetectSettings(score_threshold=0.5)).postprocess("i", probs, boxes)
    assert det.labels.tolist() == [0, 2] and det.scores.tolist() == pytest.approx([0.9, 0.5])
    assert det.boxes[1].tolist() == [80, 0, 99, 9]
    det = Detector(model, DetectSettings(score_threshold=0.95)).postprocess("i", probs, boxes)
    assert len(det) == 0


def test_postprocess_nms_is_per_class_with_inclusive_areas(model) -> None:
    # A and B: 10 x 10 boxes overlapping in 10 x 5 pixels: IoU = 50 / 150 = 1/3 with the +1 convention
    # (the exclusive convention would give 9*4 / (2*81 - 36) = 0.286, under 0.3)
    a, b = (0, 0, 9, 9), (0, 5, 9, 14)
    probs, boxes = _scored([(0, 0.9, a), (0, 0.8, b), (1, 0.7, b)])
    det = Detector(model, DetectSettings(nms=0.3)).postprocess("i", probs, boxes)
    assert det.labels.tolist() == [0, 1]  # B of class 0 suppressed by A; B of class 1 is another class
    det = Detector(model, DetectSettings(nms=0.34)).postprocess("i", probs, boxes)
    assert det.labels.tolist() == [0, 0, 1]  # 1/3 is not above 0.34


def test_postprocess_keeps_the_best_max_det_over_all_classes(model) -> None:
    rows = [(i % 3, 0.5 + i / 100, (20 * i, 0, 20 * i + 9, 9)) for i in range(10)]
    probs, boxes = _scored(rows)
    det = Detector(model, DetectSettings(max_detections=4)).postprocess("i", probs, boxes)
    assert det.scores.tolist() == pytest.approx([0.59, 0.58, 0.57, 0.56])
    assert det.labels.tolist() == [0, 2, 1, 0]


def test_postprocess_class_filter(model) -> None:
    rows = [(0, 0.9, (0, 0, 9, 9)), (1, 0.8, (20, 0, 29, 9)), (2, 0.7, (40, 0, 49, 9))]
    probs, boxes = _scored(rows)
    det = Detector(model, DetectSettings(classes=("c", "a"))).postprocess("i", probs, boxes)
    assert det.labels.tolist() == [0, 2]  # labels stay indices into the model's classes
    with pytest.raises(UnknownClassError, match="^classes: names zebra, which the model does not know"):
        Detector(model, DetectSettings(classes=("zebra",)))  # the error names the setting, not a flag


def test_postprocess_in_prefixes_equals_one_batched_nms(model) -> None:
    """The prefix-at-a-time NMS gives what one batched_nms over every candidate gives (random, many boxes)."""
    from torchvision.ops import batched_nms

    gen = torch.Generator().manual_seed(0)
    p, k = 3000, 3
    probs = torch.softmax(2 * torch.randn((p, k + 1), generator=gen), dim=1)
    xy = torch.rand((p, k + 1, 2), generator=gen) * 300
    boxes = torch.cat([xy, xy + torch.rand((p, k + 1, 2), generator=gen) * 80 + 2], dim=2).view(p, -1)
    for max_det in (100, 5000):
        det = Detector(model, DetectSettings(score_threshold=0.001, max_detections=max_det)).postprocess("i", probs, boxes)
        scores, cls_boxes = probs[:, 1:], boxes.view(p, k + 1, 4)[:, 1:]
        roi, cls = torch.nonzero(scores >= 0.001, as_tuple=True)
        keep = batched_nms(cls_boxes[roi, cls] + torch.tensor([0, 0, 1.0, 1.0]), scores[roi, cls], cls, 0.3)[:max_det]
        assert len(det) == min(max_det, len(keep))
        assert np.array_equal(det.scores, scores[roi, cls][keep].numpy())  # same ranking
        # the same detections (the order of exactly tied scores is arbitrary)
        mine = np.column_stack([det.scores, det.labels, det.boxes])
        ref = np.column_stack([scores[roi, cls][keep].numpy(), cls[keep].numpy(), cls_boxes[roi, cls][keep].numpy()])
        assert np.array_equal(mine[np.lexsort(mine.T[::-1])], ref[np.lexsort(ref.T[::-1])])


def test_settings_are_checked() -> None:
    from fastrcnn_cli.errors import SettingsError

    for bad in ({"nms": 0.0}, {"score_threshold": 1.5}, {"max_detections": 0}, {"scale": (16,)}):
        with pytest.raises(SettingsError, match=next(iter(bad))):  # the error names the setting
            DetectSettings(**bad)


# ------------------------------------------------------------------------------------------------------------
# the Detector on an image
# ------------------------------------------------------------------------------------------------------------


def test_detect_returns_clipped_boxes_times_and_handles_bad_or_no_proposals(model) -> None:
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    detector = Detector(model, DetectSettings(scale=(64,), max_size=128, score_threshold=0.0, max_detections=7))
    proposals = np.array([[0, 0, 59, 44], [30, 20, 119, 89], [-10, -5, 200, 300], [np.nan, 0, 5, 5], [50, 50, 40, 60]])
    result = detector.detect(image, proposals, "img")
    assert result.num_proposals == 3  # NaN and x2 < x1 rows dropped, the oversized one clipped
    assert result.image_size == (120, 90)
    det = result.detections
    assert 0 < len(det) <= 7 and det.image_id == "img"
    assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= 119).all() and (det.boxes[:, 3] <= 89).all()
    assert result.times.backbone > 0 and result.times.head > 0 and result.times.total >= result.times.network
    empty = detector.detect(image, np.zeros((0, 4)), "img")
    assert len(empty.detections) == 0 and empty.num_proposals == 0


def test_multi_scale_pools_each_box_at_the_scale_nearest_224(model) -> None:
    boxes = np.array([[0, 0, 99, 99], [0, 0, 399, 399]], np.float32)
    assert map_to_scales(boxes, [1.0, 2.24, 0.56]).tolist() == [1, 2]
    image = np.random.default_rng(1).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    det = Detector(model, DetectSettings(scale=(48, 96), max_size=200, score_threshold=0.0)).detect(image, boxes[:1] / 5)
    assert len(det.detections) > 0


def test_detections_come_back_on_the_ground_truth_with_an_oracle_head(
    synthetic_voc: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scaling, RoI coordinates, box decoding and clipping are exact: a perfect head gives back the boxes."""
    from fastrcnn_cli.io import read_image
    from fastrcnn_cli.model.checkpoint import load_checkpoint

    truth = truth_of(synthetic_voc, "test")
    install_oracle(monkeypatch, truth, key=lambda image_id: image_id)
    model_, meta = load_checkpoint(checkpoint)
    detector = Detector(model_, DetectSettings.for_checkpoint(meta, score_threshold=0.5))
    for record in load_dataset(synthetic_voc, "test", warn=False).records:
        image = read_image(record.image_path)
        props = oracle_proposals(record.boxes, record.width, record.height)
        det = detector.detect(image, props, record.id).detections
        boxes, names = truth[record.id]
        assert len(det) == len(boxes)
        got = sorted((meta.classes[label], tuple(np.round(box, 3))) for box, label in zip(det.boxes, det.labels))
        assert got == sorted((n, tuple(np.round(b, 3))) for b, n in zip(boxes, names))


# ------------------------------------------------------------------------------------------------------------
# proposal files
# ------------------------------------------------------------------------------------------------------------


def test_proposal_files_mat_and_npy(tmp_path: Path) -> None:
    from scipy.io import savemat

    boxes = np.array([[0, 0, 23, 15], [5, 6, 70, 80]], np.uint16)
    savemat(tmp_path / "000004_boxes.mat", {"boxes": boxes})
    np.save(tmp_path / "photo.npy", boxes.astype(np.float32))
    assert read_proposal_file(tmp_path / "000004_boxes.mat", (100, 100)).tolist() == boxes.tolist()
    assert read_proposal_file(tmp_path / "photo.npy").dtype == np.float32
    assert find_proposal_file(tmp_path, Path("x/000004.jpg")) == tmp_path / "000004_boxes.mat"
    assert find_proposal_file(tmp_path, Path("photo.png")) == tmp_path / "photo.npy"
    assert find_proposal_file(tmp_path, Path("other.png")) is None
    assert load_image_proposals(tmp_path, Path("photo.png"), (100, 100)).tolist() == boxes.tolist()
    with pytest.raises(InputError, match="no proposal file for this image"):
        load_image_proposals(tmp_path, Path("other.png"), (100, 100))
    savemat(tmp_path / "wrong.mat", {"rects": boxes})
    np.save(tmp_path / "flat.npy", np.zeros(8))
    with pytest.raises(InputError, match="no variable 'boxes'"):
        read_proposal_file(tmp_path / "wrong.mat")
    with pytest.raises(InputError, match=r"\[P, 4\]"):
        read_proposal_file(tmp_path / "flat.npy")


def test_the_original_demo_proposal_file_reads() -> None:
    from tests.conftest import shared_path

    boxes = read_proposal_file(shared_path("reference", "fast-rcnn-demo", "000004_boxes.mat"), (500, 406))
    assert boxes.shape[1] == 4 and len(boxes) > 2000 and boxes[:, 2].max() <= 499 and boxes[:, 3].max() <= 405


def test_proposals_from_a_propose_cache_by_image_id(synthetic_voc: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.proposals import ProposalSettings, load_or_compute_proposals

    ds = load_dataset(synthetic_voc, "test", warn=False)
    cache = tmp_path / "cache"
    computed = load_or_compute_proposals(ds, ProposalSettings(**PROPOSALS), cache, 1)
    record = ds.records[0]
    boxes = load_image_proposals(cache, record.image_path, (record.width, record.height))
    assert np.array_equal(boxes, computed[record.id])
    with pytest.raises(InputError, match="no proposals for image id"):
        load_image_proposals(cache, record.image_path, (record.width + 1, record.height))  # another image


# ------------------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------------------


def test_cli_one_image_writes_the_visualisation_and_json(images: list[Path], checkpoint: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.io import read_image

    vis = tmp_path / "vis.png"
    result = run("detect", images[0], "--out", vis, "--weights", checkpoint, "--conf", "0", "--max-det", "3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (image,) = doc["images"]
    assert image["output"] == str(vis) and len(image["detections"]) == 3
    assert set(image["times"]) == {"proposals_s", "network_s", "postprocess_s", "total_s"}
    assert doc["settings"]["scale"] == [TEST_SCALE] and doc["settings"]["proposals"]["top"] == PROPOSALS["top"]
    drawn, original = read_image(vis), read_image(images[0])
    assert drawn.shape == original.shape and (drawn != original).any()
    assert f"{images[0]}" in result.stderr and "3 detections" in result.stderr and "network" in result.stderr


def test_cli_folder_writes_a_folder_json_and_coco(
    images: list[Path], checkpoint: Path, synthetic_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an oracle head and ground-truth proposals (--proposals folder), the JSON holds the true boxes."""
    truth = truth_of(synthetic_voc, "test")
    install_oracle(monkeypatch, truth, key=lambda image_id: Path(image_id).stem)
    props = tmp_path / "props"
    props.mkdir()
    ds = {r.id: r for r in load_dataset(synthetic_voc, "test", warn=False).records}
    for path in images:
        r = ds[path.stem]
        np.save(props / f"{path.stem}.npy", oracle_proposals(r.boxes, r.width, r.height))
    out, doc_path, coco_path = tmp_path / "out", tmp_path / "d.json", tmp_path / "coco.json"
    folder = images[0].parent
    result = run("detect", folder, "--out", out, "--weights", checkpoint, "--proposals", props,
                 "--save-json", doc_path, "--save-coco", coco_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in images)
    doc = json.loads(doc_path.read_text())
    assert [Path(i["file"]).name for i in doc["images"]] == sorted(p.name for p in images)
    assert json.loads(coco_path.read_text()) == doc["coco"]
    for image in doc["images"]:
        boxes, names = truth[Path(image["file"]).stem]
        got = sorted((d["class"], tuple(d["box"])) for d in image["detections"])
        assert got == sorted((n, tuple(round(float(v), 2) for v in b)) for b, n in zip(boxes, names))
        assert (image["width"], image["height"]) == (ds[Path(image["file"]).stem].width, ds[Path(image["file"]).stem].height)
    assert len(doc["coco"]) == sum(len(i["detections"]) for i in doc["images"]) > 0
    for entry, d in zip(doc["coco"], [d for i in doc["images"] for d in i["detections"]]):
        x1, y1, x2, y2 = d["box"]
        assert entry["bbox"] == [x1, y1, round(x2 - x1 + 1, 2), round(y2 - y1 + 1, 2)]
        assert entry["category_id"] == d["class_index"] + 1 == SHAPES.index(d["class"]) + 1


def test_cli_class_filter(images: list[Path], checkpoint: Path) -> None:
    result = run("detect", images[0], "--weights", checkpoint, "--conf", "0", "--classes", "star,ring", "--json")
    assert result.exit_code == 0, result.output
    classes = {d["class"] for d in json.loads(result.stdout)["images"][0]["detections"]}
    assert classes and classes <= {"star", "ring"}
    assert_clean_failure(run("detect", images[0], "--weights", checkpoint, "--classes", "zebra"), 1, "zebra")


def test_cli_missing_inputs_are_clear_failures(images: list[Path], checkpoint: Path, tmp_path: Path) -> None:
    assert_clean_failure(run("detect", tmp_path / "nope.jpg", "--weights", checkpoint), 1, "nope.jpg", "no such file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_failure(run("detect", empty, "--weights", checkpoint), 1, "holds no image")
    assert_clean_failure(run("detect", str(tmp_path / "*.png"), "--weights", checkpoint), 1, "matches nothing")
    assert_clean_failure(run("detect", images[0], "--weights", checkpoint, "--conf", "2"), 2)


def test_cli_weights_that_are_not_a_checkpoint(images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert_clean_failure(run("detect", images[0], "--weights", bad), 1, "bad.pt", "not a fastrcnn checkpoint")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    assert_clean_failure(run("detect", images[0], "--weights", plain), 1, "not a fastrcnn checkpoint")
    monkeypatch.setenv("FASTRCNN_WEIGHTS", str(tmp_path / "missing.pt"))
    assert_clean_failure(run("detect", images[0]), 1, "missing.pt", "--weights")


def test_cli_default_weights_missing_says_so(images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastrcnn_cli.model.checkpoint as ckpt

    monkeypatch.delenv("FASTRCNN_WEIGHTS", raising=False)
    monkeypatch.setattr(ckpt, "DEFAULT_WEIGHTS", tmp_path / "weights" / "shipped.pt")
    assert_clean_failure(run("detect", images[0]), 1, "shipped model is missing", "--weights")


def test_cli_a_corrupt_image_is_skipped_the_rest_processed_exit_1(
    images: list[Path], checkpoint: Path, tmp_path: Path
) -> None:
    folder = images[0].parent
    (folder / "broken.jpg").write_bytes(images[0].read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    out, doc_path = tmp_path / "out", tmp_path / "d.json"
    result = run("detect", folder, "--out", out, "--weights", checkpoint, "--save-json", doc_path)
    assert_clean_failure(result, 1, "broken.jpg", "not a readable image", "empty.png", "2 of 5 image(s)")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in images)
    doc = json.loads(doc_path.read_text())
    assert len(doc["images"]) == 3
    assert sorted(Path(f["file"]).name for f in doc["failed"]) == ["broken.jpg", "empty.png"]


def test_cli_proposal_file_checks(images: list[Path], checkpoint: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", np.array([[0, 0, 50, 50]], np.float32))
    assert_clean_failure(
        run("detect", images[0], images[1], "--weights", checkpoint, "--proposals", tmp_path / "p.npy"), 1, "fits one image"
    )
    assert_clean_failure(
        run("detect", images[0], "--weights", checkpoint, "--proposals", tmp_path / "none"), 1, "no such proposal"
    )
    result = run("detect", images[0], images[1], "--weights", checkpoint, "--proposals", tmp_path)
    assert_clean_failure(result, 1, "no proposal file for this image")


def test_cli_voc2007_samples_run_on_every_image(checkpoint: Path, tmp_path: Path) -> None:
    """The issue's check, with a random checkpoint (the shipped model detects shapes, not VOC classes)."""
    from tests.conftest import shared_path

    samples = shared_path("reference", "voc2007-samples")
    out, doc_path = tmp_path / "out", tmp_path / "d.json"
    result = run("detect", samples, "--out", out, "--save-json", doc_path, "--weights", checkpoint, "--conf", "0.1")
    assert result.exit_code == 0, result.output
    doc = json.loads(doc_path.read_text())
    assert len(doc["images"]) == 5 and doc["failed"] == []
    assert len(list(out.iterdir())) == 5

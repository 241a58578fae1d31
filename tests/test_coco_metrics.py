"""COCO metrics by pycocotools from our detections and records: agreement with our VOC AP where the two must
agree, and identity with pycocotools run directly on the files we write."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fastrcnn_cli.cli.render_eval import render_coco_table
from fastrcnn_cli.coco_metrics import (
    STATS,
    coco_documents,
    evaluate_coco,
    evaluate_coco_documents,
    evaluate_coco_files,
    write_coco_files,
)
from fastrcnn_cli.data.records import ImageRecord
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.evaluation import evaluate_voc

CLASSES = ("cat", "dog", "fox")


def _record(image_id: str, boxes: list, labels: list, difficult: list | None = None) -> ImageRecord:
    return ImageRecord(
        image_id, Path(f"{image_id}.jpg"), 200, 150,
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
        np.asarray(difficult if difficult is not None else [False] * len(labels), bool),
    )  # fmt: skip


def _dets(image_id: str, rows: list[tuple]) -> Detections:
    """rows: (x1, y1, x2, y2, score, label)."""
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(image_id, a[:, :4], a[:, 4], a[:, 5])


def test_detections_equal_to_the_ground_truth_score_ap_1_in_both() -> None:
    records = [
        _record("a", [[10, 10, 49, 39], [60, 60, 120, 140]], [0, 1]),
        _record("b", [[5, 5, 30, 30]], [0]),
        _record("negative", [], []),
    ]
    detections = [Detections(r.id, r.boxes, np.ones(r.num_objects), r.labels) for r in records]
    coco = evaluate_coco(detections, records, CLASSES[:2])
    voc = evaluate_voc(detections, records, CLASSES[:2], headline="area")
    assert coco.stats["ap"] == coco.stats["ap50"] == coco.stats["ap75"] == voc.map_area == 1.0
    assert coco.stats["ar100"] == 1.0 and [c.ap for c in coco.classes] == pytest.approx([1.0, 1.0], abs=1e-12)


def test_a_hand_checked_case_gives_two_thirds_in_both() -> None:
    """Class cat: 2 positives (a, b) and one difficult box (a). Ranked: a false positive on the negative image
    (0.9), a detection of the difficult box (0.85, ignored by both), the two positives (0.8, 0.7). Precision
    0, 1/2, 2/3 at recall 0, 1/2, 1: the envelope is 2/3 everywhere, so the area AP, the 101-point AP at each
    IoU (the boxes are exact) and so AP @[.5:.95] are all 2/3."""
    records = [
        _record("a", [[10, 10, 49, 39], [100, 20, 140, 70]], [0, 0], [False, True]),
        _record("b", [[5, 5, 30, 30]], [0]),
        _record("negative", [], []),
    ]
    detections = [
        _dets("negative", [(50, 50, 90, 90, 0.9, 0)]),
        _dets("a", [(100, 20, 140, 70, 0.85, 0), (10, 10, 49, 39, 0.8, 0)]),
        _dets("b", [(5, 5, 30, 30, 0.7, 0)]),
    ]
    voc = evaluate_voc(detections, records, CLASSES[:1], headline="area")
    coco = evaluate_coco(detections, records, CLASSES[:1])
    assert voc["cat"].ignored == 1 and voc["cat"].fp == 1
    assert voc.map_area == pytest.approx(2 / 3, abs=1e-12)
    assert coco.stats["ap50"] == pytest.approx(voc.map_area, abs=1e-12)
    assert coco.stats["ap"] == pytest.approx(2 / 3, abs=1e-12)
    assert coco.classes[0].num_positives == 2


def test_a_class_without_ground_truth_is_undefined_not_zero() -> None:
    records = [_record("a", [[10, 10, 49, 39]], [0]), _record("b", [[5, 5, 30, 30]], [1], [True])]
    detections = [_dets("a", [(10, 10, 49, 39, 0.9, 0), (0, 0, 20, 20, 0.8, 2)])]
    coco = evaluate_coco(detections, records, CLASSES)
    by_name = {c.name: c for c in coco.classes}
    assert by_name["cat"].ap == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(by_name["dog"].ap) and math.isnan(by_name["fox"].ap)  # dog: only a difficult box
    assert coco.stats["ap"] == pytest.approx(1.0, abs=1e-12)  # the mean over the classes with positives only
    assert coco.to_dict()["classes"][1]["ap"] is None and any("dog, fox" in n for n in coco.notes)


def test_no_detections_score_zero_and_unknown_images_are_refused() -> None:
    records = [_record("a", [[10, 10, 49, 39]], [0])]
    assert evaluate_coco([], records, CLASSES[:1]).stats["ap"] == 0.0
    with pytest.raises(InputError, match="'elsewhere'"):
        evaluate_coco([_dets("elsewhere", [(1, 1, 5, 5, 0.5, 0)])], records, CLASSES[:1])


def _random_case(seed: int = 0) -> tuple[list[ImageRecord], list[Detections]]:
    """30 images, 3 classes, objects of every COCO size, some difficult; detections: jittered boxes, misses,
    duplicates and false positives, with random scores."""
    rng = np.random.default_rng(seed)
    records, detections = [], []
    for i in range(30):
        n = int(rng.integers(0, 5))
        sizes = rng.choice([12.0, 50.0, 130.0], size=n)
        x1 = rng.uniform(0, 60, n)
        y1 = rng.uniform(0, 10, n)
        boxes = np.stack([x1, y1, x1 + sizes - 1, y1 + sizes * rng.uniform(0.6, 1.0, n) - 1], axis=1).round()
        labels = rng.integers(0, 3, n)
        records.append(_record(f"img{i}", boxes, labels, rng.random(n) < 0.15))
        rows = []
        for box, label in zip(boxes, labels):
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                jitter = rng.normal(0, 0.08 * (box[2] - box[0] + 1), 4)
                rows.append((*(box + jitter), rng.random(), label))
        for _ in range(int(rng.integers(0, 3))):
            x, y, s = rng.uniform(0, 150), rng.uniform(0, 100), rng.uniform(10, 50)
            rows.append((x, y, x + s, y + s, rng.random() * 0.6, rng.integers(0, 3)))
        detections.append(_dets(f"img{i}", rows))
    return records, detections


def test_our_numbers_equal_pycocotools_run_on_the_files_we_write(tmp_path: Path) -> None:
    records, detections = _random_case()
    ours = evaluate_coco(detections, records, CLASSES, category_ids=[1, 5, 9])
    write_coco_files(tmp_path / "gt.json", tmp_path / "results.json", detections, records, CLASSES,
                     category_ids=[1, 5, 9])
    with contextlib.redirect_stdout(io.StringIO()):  # the library's own evaluator, as its users run it
        gt = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "results.json")), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = [math.nan if v < 0 else v for v in evaluator.stats]
    np.testing.assert_array_equal([ours.stats[name] for name in STATS], expected)
    assert 0.2 < ours.stats["ap"] < ours.stats["ap50"] < 1  # a case that measures something
    assert all(not math.isnan(ours.stats[k]) for k in ("ap_small", "ap_medium", "ap_large"))
    assert evaluate_coco_files(tmp_path / "gt.json", tmp_path / "results.json").stats == ours.stats
    assert json.loads((tmp_path / "gt.json").read_text())["categories"][1] == {"id": 5, "name": "dog"}


def _grid_case(seed: int) -> tuple[list[ImageRecord], list[Detections]]:
    """Objects one per cell of a grid (no two overlap, so both protocols match alike), some difficult;
    detections: jittered boxes, misses, duplicates and false positives in empty cells, random scores."""
    rng = np.random.default_rng(seed)
    records, detections = [], []
    for i in range(40):
        cells = rng.permutation(6)[: int(rng.integers(1, 6))]
        boxes = np.array([[100 * (c % 3) + 10, 70 * (c // 3) + 10, 100 * (c % 3) + 79, 70 * (c // 3) + 59] for c in cells],
                         np.float64)
        occupied = len(cells) - 1  # the last cell gets no object: false positives go there
        labels = rng.integers(0, 3, occupied)
        records.append(_record(f"img{i}", boxes[:occupied], labels, rng.random(occupied) < 0.15))
        rows = []
        for box, label in zip(boxes[:occupied], labels):
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                rows.append((*(box + rng.normal(0, 3, 4)), rng.random(), label))
        if rng.random() < 0.5:
            rows.append((*(boxes[-1] + rng.normal(0, 3, 4)), rng.random() * 0.8, rng.integers(0, 3)))
        detections.append(_dets(f"img{i}", rows))
    return records, detections


def test_voc_area_ap_and_coco_ap50_agree_within_the_interpolation() -> None:
    """Same matching, same +1 IoU: only the interpolation differs (exact area against 101 recall points)."""
    records, detections = _grid_case(seed=1)
    voc = evaluate_voc(detections, records, CLASSES, headline="area")
    coco = evaluate_coco(detections, records, CLASSES)
    for ours, theirs in zip(voc.classes, coco.classes):
        assert theirs.ap50 == pytest.approx(ours.ap_area, abs=0.01), ours.name
    assert coco.stats["ap50"] == pytest.approx(voc.map_area, abs=0.01)


def test_coco_areas_of_the_records_set_small_medium_large() -> None:
    """A 50 x 50 box whose COCO ``area`` (a mask's) is 900 is small (< 32^2) there, medium by its box."""
    box = [[10, 10, 59, 59]]
    detections = [_dets("a", [(10, 10, 59, 59, 0.9, 0)])]
    by_box = evaluate_coco(detections, [_record("a", box, [0])], CLASSES[:1])
    record = _record("a", box, [0])
    record.areas = np.array([900.0], np.float32)
    by_mask = evaluate_coco(detections, [record], CLASSES[:1])
    assert by_box.stats["ap_medium"] == pytest.approx(1.0, abs=1e-12) and math.isnan(by_box.stats["ap_small"])
    assert by_mask.stats["ap_small"] == pytest.approx(1.0, abs=1e-12) and math.isnan(by_mask.stats["ap_medium"])


def test_the_table_shows_percent_with_one_decimal_and_names_classes_without_ground_truth() -> None:
    from rich.console import Console

    records = [_record("a", [[10, 10, 49, 39], [60, 60, 90, 90]], [0, 1], [False, True])]
    console = Console(record=True, width=160)
    console.print(render_coco_table(evaluate_coco([_dets("a", [(10, 10, 49, 39, 0.9, 0)])], records, CLASSES)))
    text = console.export_text()
    assert "COCO mAP 100.0 %" in text and "AR@100" in text and "n/a" in text
    assert "dog (only crowd)" in text and "fox (no ground truth)" in text and "cat (" not in text


def test_evaluating_documents_leaves_them_as_written(tmp_path: Path) -> None:
    """pycocotools writes into what it reads (loadRes adds area, id, segmentation; COCOeval an ignore flag):
    the documents written after an evaluation are the same as before it, and score the same."""
    records, detections = _random_case(seed=3)
    documents = coco_documents(detections, records, CLASSES)
    before = json.dumps([documents.ground_truth, documents.results])
    first = evaluate_coco_documents(documents)
    assert json.dumps([documents.ground_truth, documents.results]) == before
    assert set(documents.results[0]) == {"image_id", "category_id", "bbox", "score"}
    documents.write(tmp_path / "gt.json", tmp_path / "results.json")
    assert evaluate_coco_files(tmp_path / "gt.json", tmp_path / "results.json").stats == first.stats
    assert evaluate_coco_documents(documents).stats == first.stats

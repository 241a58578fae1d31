"""The shipped demo model (weights/) still loads and finds the shapes in the example images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastrcnn_cli.boxes import iou
from fastrcnn_cli.data.voc import parse_annotation
from fastrcnn_cli.detect import DetectSettings, Detector, proposal_settings_from_meta
from fastrcnn_cli.io import read_image
from fastrcnn_cli.model.checkpoint import DEFAULT_WEIGHTS, load_checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def detector() -> Detector:
    model, meta = load_checkpoint(None)  # None: the shipped model
    return Detector(model, DetectSettings.for_checkpoint(meta), "cpu", proposal_settings_from_meta(meta))


def test_shipped_model_is_small_and_self_describing() -> None:
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 50 * 2**20
    _, meta = load_checkpoint(DEFAULT_WEIGHTS)
    assert meta.classes == ("circle", "square", "triangle", "star", "ring")
    assert meta.dtype == "float16" and meta.config.backbone.name == "efficientnet-lite0"


@pytest.mark.parametrize("name", ["shapes-1", "shapes-2", "shapes-3"])
def test_shipped_model_finds_every_shape_of_the_example(detector: Detector, name: str) -> None:
    annotation = parse_annotation(EXAMPLES / f"{name}.xml")
    image = read_image(EXAMPLES / f"{name}.jpg")
    dets = detector.detect(image, image_id=name).detections
    classes = detector.model.config.classes
    gt = [o for o in annotation.objects if not o.difficult]
    assert gt, "the example has objects"
    gt_boxes = np.array([o.box for o in gt], np.float32)
    overlaps = iou(dets.boxes, gt_boxes) if len(dets) else np.zeros((0, len(gt)))
    for j, obj in enumerate(gt):
        found = [
            i for i in range(len(dets)) if classes[int(dets.labels[i])] == obj.name and overlaps[i, j] >= 0.5
        ]
        assert found, f"{name}: the {obj.name} at {obj.box} was not found (detections: {dets})"
        assert max(float(dets.scores[i]) for i in found) >= 0.8
    # and almost nothing else: at most one confident detection that matches no shape
    stray = [i for i in range(len(dets)) if overlaps[i].max(initial=0.0) < 0.5 and dets.scores[i] >= 0.8]
    assert len(stray) <= 1, f"{name}: stray detections {[(classes[int(dets.labels[i])], dets.boxes[i]) for i in stray]}"

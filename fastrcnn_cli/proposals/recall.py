"""How good are the proposals: recall at IoU thresholds and (mean) average best overlap, per class.

For every ground-truth box g of an image with proposals P (Uijlings et al., IJCV 2013, section 5.1):

    best(g)      = max over p in P of IoU(g, p)        (0 when the image has no proposal)
    recall@t     = |{g : best(g) >= t}| / |{g}|
    ABO(class c) = mean of best(g) over the boxes g of class c
    MABO         = mean over the classes (with at least one box) of ABO(c)

IoU is the devkit's overlap with the +1 of inclusive pixels (:func:`fastrcnn_cli.boxes.iou`).
Boxes marked ``difficult`` are **excluded** (neither counted nor scored), as the VOC devkit leaves them
out of detection recall; the report says how many were left out. An image of the split with no entry
in ``proposals`` counts with no proposal (best overlap 0) and is reported as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastrcnn_cli.data.voc import ImageRecord


@dataclass
class ClassRecall:
    name: str
    num_boxes: int
    recall: dict[float, float]  #: threshold -> recall (nan when there is no box)
    abo: float  #: average best overlap (nan when there is no box)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.name,
            "boxes": self.num_boxes,
            "recall": {f"{t:g}": _num(r) for t, r in self.recall.items()},
            "abo": _num(self.abo),
        }


@dataclass
class RecallReport:
    thresholds: tuple[float, ...]
    overall: ClassRecall  #: every (non-difficult) box of every class
    per_class: list[ClassRecall]
    mabo: float  #: mean over classes with boxes of their ABO
    num_images: int
    mean_proposals: float  #: proposals per image (images with proposals)
    difficult_excluded: int
    missing_images: list[str] = field(default_factory=list)

    def recall(self, threshold: float) -> float:
        return self.overall.recall[threshold]

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "images": self.num_images,
            "boxes": self.overall.num_boxes,
            "recall": {f"{t:g}": _num(r) for t, r in self.overall.recall.items()},
            "abo": _num(self.overall.abo),
            "mabo": _num(self.mabo),
            "mean_proposals_per_image": round(self.mean_proposals, 1),
            "difficult_excluded": self.difficult_excluded,
            "missing_images": list(self.missing_images),
            "per_class": [c.to_dict() for c in self.per_class],
            "protocol": "best IoU (+1 pixel areas) of each ground-truth box with any proposal of its image; "
            "difficult boxes excluded; MABO = mean over classes of the average best overlap",
        }

    def summary(self) -> str:
        parts = [f"recall@{t:g} {fmt(self.overall.recall[t])}" for t in self.thresholds]
        return ", ".join(parts) + f", MABO {fmt(self.mabo)} ({self.overall.num_boxes} boxes)"


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 4)  # NaN -> null in JSON


def fmt(x: float) -> str:
    """A recall or overlap for people: three decimals, "-" for none (NaN)."""
    return "-" if x != x else f"{x:.3f}"


def best_overlaps(gt_boxes: np.ndarray, proposals: np.ndarray | None) -> np.ndarray:
    """For each ground-truth box, its best IoU with any proposal (0 when there is none)."""
    from fastrcnn_cli.boxes import iou  # here: boxes imports torch, which the proposals package never needs

    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    if proposals is None or len(proposals) == 0 or len(gt_boxes) == 0:
        return np.zeros(len(gt_boxes))
    return iou(gt_boxes, np.asarray(proposals, np.float64).reshape(-1, 4)).max(axis=1)


def _class_recall(name: str, overlaps: np.ndarray, thresholds: Sequence[float]) -> ClassRecall:
    n = len(overlaps)
    if n == 0:
        return ClassRecall(name, 0, {t: float("nan") for t in thresholds}, float("nan"))
    return ClassRecall(
        name, n, {t: float(np.mean(overlaps >= t)) for t in thresholds}, float(np.mean(overlaps))
    )


def proposal_recall(
    dataset_records: Iterable[ImageRecord],
    proposals: Mapping[str, np.ndarray],
    classes: Sequence[str],
    iou_thresholds: Sequence[float] = (0.5, 0.7),
) -> RecallReport:
    """Recall at each IoU threshold and (M)ABO, over all boxes and per class; difficult boxes excluded."""
    thresholds = tuple(float(t) for t in iou_thresholds)
    per_class_overlaps: list[list[np.ndarray]] = [[] for _ in classes]
    all_overlaps: list[np.ndarray] = []
    difficult = 0
    missing: list[str] = []
    counts: list[int] = []
    num_images = 0
    for record in dataset_records:
        num_images += 1
        props = proposals.get(record.id)
        if props is None:
            missing.append(record.id)
        else:
            counts.append(len(props))
        hard = np.asarray(record.difficult, bool).reshape(-1)
        difficult += int(hard.sum())
        keep = ~hard
        gt = np.asarray(record.boxes).reshape(-1, 4)[keep]
        labels = np.asarray(record.labels).reshape(-1)[keep]
        overlaps = best_overlaps(gt, props)
        all_overlaps.append(overlaps)
        for k in range(len(classes)):
            per_class_overlaps[k].append(overlaps[labels == k])
    per_class = [
        _class_recall(name, np.concatenate(o) if o else np.zeros(0), thresholds)
        for name, o in zip(classes, per_class_overlaps)
    ]
    overall = _class_recall("all", np.concatenate(all_overlaps) if all_overlaps else np.zeros(0), thresholds)
    abos = [c.abo for c in per_class if c.num_boxes > 0]
    return RecallReport(
        thresholds=thresholds,
        overall=overall,
        per_class=per_class,
        mabo=float(np.mean(abos)) if abos else float("nan"),
        num_images=num_images,
        mean_proposals=float(np.mean(counts)) if counts else 0.0,
        difficult_excluded=difficult,
        missing_images=missing,
    )

"""Evaluation: PASCAL VOC average precision, the one mAP implementation of fastrcnn.

Train-time evaluation, ``fastrcnn evaluate`` and the ``compress-svd --eval`` report all call
:func:`evaluate_voc` (through :func:`fastrcnn_cli.pipeline.evaluate_split`), so they report the same number
for the same detections.

The protocol (the MATLAB devkit's ``VOCevaldet``), for each class c separately:

1. Collect the detections of class c over all test images and sort them by score, descending. Ties keep
   their input order: images in the order of ``ground_truth``, then the order inside each image's
   :class:`Detections` (a stable sort, like the devkit's MATLAB ``sort`` over a results file written image
   by image). The order in which ``detections`` is passed therefore never matters.
2. Walk down that list. For detection d in image i, compute its IoU with every ground-truth box of class c
   in image i (areas with +1 pixel, :func:`fastrcnn_cli.boxes.iou`) and take the box j with the largest
   overlap (the first one on a tie), whether or not j is already matched or difficult. Then

   - IoU(d, j) >= ``iou_threshold`` (0.5; the devkit's ``>=``, not the strict ``>`` of py-faster-rcnn's port):
       - j difficult               -> d is ignored (neither true nor false positive);
       - j not yet matched         -> true positive, j becomes matched;
       - j already matched         -> false positive (a duplicate);
   - otherwise (including images with no box of class c) -> false positive.
3. With TP(k), FP(k) the counts among the first k counted (non-ignored) detections and P the number of
   non-difficult ground-truth boxes of class c ("positives"):

       recall(k) = TP(k) / P,        precision(k) = TP(k) / (TP(k) + FP(k)).

   Ignored detections are left out of the curve: in the devkit they repeat the previous (recall, precision)
   point, which changes neither AP below.
4. AP from the curve (:func:`average_precision`), both ways:

   - VOC2007, 11-point interpolated:   AP = 1/11 * sum_{t in 0, 0.1, ..., 1} max{precision(k) : recall(k) >= t}
     (0 where no point reaches t);
   - VOC2010 and later, area:          p_env(k) = max_{k' >= k} precision(k')  (the monotone envelope),
                                         AP = sum_k (recall(k) - recall(k - 1)) * p_env(k),  recall(0) = 0.

5. mAP is the mean of the per-class APs.

Decisions beyond the devkit, documented here once:

- A class with no positives (P = 0: no non-difficult box in the whole split) has no recall, so its AP is
  undefined: it is NaN, left out of both mAPs, and named in :attr:`VOCResult.notes`. (The devkit divides by
  zero there.) A class that has positives but no detections has AP 0.
- The 11 thresholds are computed as k / 10, so a recall of exactly 3/10 counts at t = 0.3. The devkit's
  ``0:0.1:1`` and the Python ports' ``np.arange(0, 1.1, 0.1)`` give some thresholds a rounding error above
  k / 10 (0.30000000000000004); the two can differ only when a class's recall is exactly k / 10.
- A detection for an image that is not in ``ground_truth`` is an error (:class:`InputError`), as in the
  devkit ("unrecognized image"): it usually means detections and data set do not belong together. An image
  of ``ground_truth`` with no boxes (of a class) makes all its detections (of that class) false positives.
- When every detection of a class is ignored, AP is 0 (the devkit's 11-point code gives NaN there).

Raw detections can be saved and evaluated again without the model (:mod:`fastrcnn_cli.detections`); the
command line presents a result (:mod:`fastrcnn_cli.cli.render_eval`: the table and the precision-recall plot).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from fastrcnn_cli import boxes as box_ops
from fastrcnn_cli.detections import Detections, DetectionsLike, group_by_image
from fastrcnn_cli.errors import InputError

Headline = Literal["voc07", "area"]

#: the PASCAL VOC overlap criterion
DEFAULT_IOU_THRESHOLD = 0.5

HEADLINE_NAMES: dict[str, str] = {"voc07": "VOC07 11-point AP", "area": "area AP (VOC2010+)"}


class GroundTruth(Protocol):
    """What evaluation reads from a :class:`fastrcnn_cli.data.voc.ImageRecord`."""

    id: str
    boxes: np.ndarray  #: [N, 4] our convention
    labels: np.ndarray  #: [N] 0-based into classes
    difficult: np.ndarray  #: [N] bool


# --------------------------------------------------------------------------------------------------
# average precision
# --------------------------------------------------------------------------------------------------


def average_precision(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool) -> float:
    """AP of one precision/recall curve (points in ranked order, recall non-decreasing).

    ``use_07_metric=True``: VOC2007's 11-point interpolated AP, the mean over t = 0, 0.1, ..., 1 (computed as
    k / 10) of the largest precision at recall >= t (0 where no point reaches t).

    ``use_07_metric=False``: the area under the monotone precision envelope (VOC2010 and later): with the
    curve padded by (recall 0, precision 0) in front and (recall 1, precision 0) behind,
    p_env(k) = max_{k' >= k} p(k') and AP = sum over the points where recall increases of
    (r(k) - r(k - 1)) * p_env(k).

    An empty curve (no detections) has AP 0.
    """
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall has {rec.size} points and precision {prec.size}")
    if not (np.isfinite(rec).all() and np.isfinite(prec).all()):
        raise ValueError("recall and precision must be finite")
    if rec.size > 1 and np.any(np.diff(rec) < 0):
        raise ValueError("recall must be non-decreasing (points of a ranked list)")

    if use_07_metric:
        ap = 0.0
        for k in range(11):
            reached = rec >= k / 10.0
            ap += (float(prec[reached].max()) if reached.any() else 0.0) / 11.0
        return ap

    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope: max of precision at or after each point
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class ClassResult:
    """AP of one class and the counts behind it."""

    name: str
    ap_voc07: float  #: 11-point interpolated AP; NaN when the class has no positives
    ap_area: float  #: area under the precision envelope; NaN when the class has no positives
    num_positives: int  #: non-difficult ground-truth boxes
    num_difficult: int  #: difficult ground-truth boxes (neither counted nor penalised)
    num_detections: int  #: all detections of the class (tp + fp + ignored)
    tp: int  #: true positives
    fp: int  #: false positives (no match, or a duplicate)
    ignored: int  #: detections whose best match is a difficult box
    recall: float  #: final recall tp / num_positives (NaN with no positives)
    precision: float  #: final precision tp / (tp + fp) (NaN with no counted detections)
    #: precision and recall after each counted detection, in ranked order (for plotting)
    precision_curve: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    recall_curve: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    #: the score of each point of the curves (the threshold that produces it)
    score_curve: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))

    @property
    def defined(self) -> bool:
        """False when the class has no positives, so that its AP is undefined (NaN)."""
        return self.num_positives > 0

    def ap(self, metric: Headline) -> float:
        return self.ap_voc07 if metric == "voc07" else self.ap_area

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "ap_voc07": _nan_to_none(self.ap_voc07),
            "ap_area": _nan_to_none(self.ap_area),
            "num_positives": self.num_positives,
            "num_difficult": self.num_difficult,
            "num_detections": self.num_detections,
            "tp": self.tp,
            "fp": self.fp,
            "ignored": self.ignored,
            "recall": _nan_to_none(self.recall),
            "precision": _nan_to_none(self.precision),
        }
        if curves:
            d["recall_curve"] = self.recall_curve.tolist()
            d["precision_curve"] = self.precision_curve.tolist()
            d["score_curve"] = self.score_curve.tolist()
        return d


@dataclass
class VOCResult:
    """Per-class AP and mAP under the PASCAL VOC protocol, both metrics, with the headline named."""

    classes: list[ClassResult]
    map_voc07: float  #: mean 11-point AP over the classes with positives (NaN if none has any)
    map_area: float  #: mean area AP over the classes with positives
    headline: Headline  #: which metric is *the* mAP (VOC07 11-point for VOC 2007 data)
    iou_threshold: float
    protocol: str  #: one line, e.g. "PASCAL VOC: IoU >= 0.5 (+1 px areas), difficult ignored, ..."
    num_images: int
    notes: list[str] = field(default_factory=list)  #: e.g. classes left out of the mean, and why

    @property
    def map(self) -> float:
        """The headline mAP."""
        return self.map_voc07 if self.headline == "voc07" else self.map_area

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __getitem__(self, name: str) -> ClassResult:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """Plain JSON-ready data; undefined (NaN) values become ``None``. ``curves`` adds the PR curves."""
        return {
            "protocol": self.protocol,
            "headline": self.headline,
            "map": _nan_to_none(self.map),
            "map_voc07": _nan_to_none(self.map_voc07),
            "map_area": _nan_to_none(self.map_area),
            "iou_threshold": self.iou_threshold,
            "num_images": self.num_images,
            "notes": list(self.notes),
            "classes": [c.to_dict(curves=curves) for c in self.classes],
        }


def protocol_description(iou_threshold: float = DEFAULT_IOU_THRESHOLD, headline: Headline = "voc07") -> str:
    other = "area" if headline == "voc07" else "VOC07 11-point"
    return (
        f"PASCAL VOC: IoU >= {iou_threshold:g} (+1 px areas), difficult ignored, duplicates false positives, "
        f"{HEADLINE_NAMES[headline]} headline ({other} AP also reported)"
    )


def headline_for(dataset: str | os.PathLike) -> Headline:
    """The metric to headline for a data set: VOC07 11-point for PASCAL VOC 2007 (as the paper reports),
    the area AP otherwise. ``dataset`` is a data set's root folder or name."""
    parts = Path(dataset).parts or (str(dataset),)
    return "voc07" if any(re.fullmatch(r"VOC2007.*", p, flags=re.IGNORECASE) for p in parts) else "area"


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------


def _match_image(
    det: Detections, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_difficult: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(tp, ignored) flags [N] for one image's detections, all classes at once, in ``det``'s order.

    Matching state is per image and per class, so walking one image's detections in score order (stable) is
    exactly what the global walk of step 2 does to that image.
    """
    n = len(det)
    tp = np.zeros(n, bool)
    ignored = np.zeros(n, bool)
    if n == 0 or gt_boxes.shape[0] == 0:
        return tp, ignored
    order = np.argsort(-det.scores, kind="stable")
    labels = det.labels[order]
    overlap = box_ops.iou(det.boxes[order], gt_boxes)  # [N, G] float64, areas with +1
    overlap[labels[:, None] != gt_labels[None, :]] = -np.inf  # only boxes of the detection's class
    best = np.argmax(overlap, axis=1)  # first maximum, as the devkit's strict "ov > ovmax"
    hit = overlap[np.arange(n), best] >= iou_threshold
    on_difficult = hit & gt_difficult[best]
    candidates = np.flatnonzero(hit & ~on_difficult)
    # the first detection (in score order) to reach a box takes it; later ones are duplicates
    _, first = np.unique(best[candidates], return_index=True)
    tp[order[candidates[first]]] = True
    ignored[order[on_difficult]] = True
    return tp, ignored


def evaluate_voc(
    detections: DetectionsLike,
    ground_truth: Sequence[GroundTruth],
    classes: Sequence[str],
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    *,
    headline: Headline = "voc07",
) -> VOCResult:
    """Per-class AP (both metrics) and mAP of ``detections`` against ``ground_truth`` (the module docstring
    states the protocol and every decision).

    ``detections``: :class:`Detections`, as a sequence or a mapping image id -> Detections; an image may
    appear more than once (its entries are concatenated) or not at all (no detections). ``ground_truth``:
    the split's images (:class:`fastrcnn_cli.data.voc.ImageRecord` or anything with ``id``, ``boxes``,
    ``labels`` and ``difficult``); its order sets the order of tied scores. ``classes``: the class names,
    indexed by the labels. Raises :class:`InputError` when a detection names an image that is not in
    ``ground_truth`` or a label outside ``classes``.
    """
    if headline not in HEADLINE_NAMES:
        raise ValueError(f"headline must be one of {sorted(HEADLINE_NAMES)}, not {headline!r}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    classes = [str(c) for c in classes]
    num_classes = len(classes)

    index_of: dict[str, int] = {}
    for i, rec in enumerate(ground_truth):
        if rec.id in index_of:
            raise ValueError(f"image {rec.id!r} appears twice in the ground truth")
        index_of[rec.id] = i

    by_image = group_by_image(detections)
    unknown = [image_id for image_id in by_image if image_id not in index_of]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise InputError(
            f"detections for {len(unknown)} image(s) that are not in the evaluated split: {shown} "
            "(do the detections belong to this data set and split?)"
        )

    num_positives = np.zeros(num_classes, np.int64)
    num_difficult = np.zeros(num_classes, np.int64)
    flags_tp: list[np.ndarray] = []
    flags_ignored: list[np.ndarray] = []
    det_scores: list[np.ndarray] = []
    det_labels: list[np.ndarray] = []
    for rec in ground_truth:  # ground-truth order: the tie order
        gt_labels = np.asarray(rec.labels, dtype=np.int64).reshape(-1)
        gt_difficult = np.asarray(rec.difficult, dtype=bool).reshape(-1)
        gt_boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
        if not (gt_labels.shape[0] == gt_difficult.shape[0] == gt_boxes.shape[0]):
            raise ValueError(f"ground truth of {rec.id!r}: boxes, labels and difficult differ in length")
        if gt_labels.size and (gt_labels.min() < 0 or gt_labels.max() >= num_classes):
            raise ValueError(f"ground truth of {rec.id!r}: a label is outside the {num_classes} classes")
        num_positives += np.bincount(gt_labels[~gt_difficult], minlength=num_classes)
        num_difficult += np.bincount(gt_labels[gt_difficult], minlength=num_classes)

        det = by_image.get(rec.id)
        if det is None or len(det) == 0:
            continue
        if det.labels.min() < 0 or det.labels.max() >= num_classes:
            bad = int(det.labels[(det.labels < 0) | (det.labels >= num_classes)][0])
            raise InputError(
                f"detections of image {rec.id!r}: label {bad} is outside the {num_classes} classes "
                "(were they made with a model for other classes?)"
            )
        tp, ignored = _match_image(det, gt_boxes, gt_labels, gt_difficult, iou_threshold)
        flags_tp.append(tp)
        flags_ignored.append(ignored)
        det_scores.append(det.scores)
        det_labels.append(det.labels)

    if det_scores:
        all_tp = np.concatenate(flags_tp)
        all_ignored = np.concatenate(flags_ignored)
        all_scores = np.concatenate(det_scores)
        all_labels = np.concatenate(det_labels)
    else:
        all_tp = all_ignored = np.zeros(0, bool)
        all_scores = np.zeros(0, np.float32)
        all_labels = np.zeros(0, np.int64)

    # stable sorts keep the concatenation order (ground-truth image order, then order within an image)
    by_class = np.argsort(all_labels, kind="stable")
    bounds = np.searchsorted(all_labels[by_class], np.arange(num_classes + 1))

    results: list[ClassResult] = []
    for c, name in enumerate(classes):
        members = by_class[bounds[c] : bounds[c + 1]]
        members = members[np.argsort(-all_scores[members], kind="stable")]
        ignored = all_ignored[members]
        counted = members[~ignored]
        tp_cum = np.cumsum(all_tp[counted], dtype=np.int64)
        fp_cum = np.arange(1, counted.size + 1, dtype=np.int64) - tp_cum
        tp, fp = (int(tp_cum[-1]), int(fp_cum[-1])) if counted.size else (0, 0)
        npos = int(num_positives[c])
        precision_curve = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        if npos > 0:
            recall_curve = tp_cum / float(npos)
            ap07 = average_precision(recall_curve, precision_curve, use_07_metric=True)
            ap_area = average_precision(recall_curve, precision_curve, use_07_metric=False)
            recall = tp / npos
        else:
            recall_curve = np.full(counted.size, np.nan)
            ap07 = ap_area = recall = math.nan
        results.append(
            ClassResult(
                name=name,
                ap_voc07=ap07,
                ap_area=ap_area,
                num_positives=npos,
                num_difficult=int(num_difficult[c]),
                num_detections=int(members.size),
                tp=tp,
                fp=fp,
                ignored=int(ignored.sum()),
                recall=recall,
                precision=tp / (tp + fp) if counted.size else math.nan,
                precision_curve=precision_curve,
                recall_curve=recall_curve,
                score_curve=all_scores[counted],
            )
        )

    notes: list[str] = []
    undefined = [r.name for r in results if not r.defined]
    if undefined:
        notes.append(
            f"AP undefined (no non-difficult ground truth in these {len(ground_truth)} images) for "
            f"{', '.join(undefined)}: left out of the mAP"
        )
    defined = [r for r in results if r.defined]
    map07 = float(np.mean([r.ap_voc07 for r in defined])) if defined else math.nan
    map_area = float(np.mean([r.ap_area for r in defined])) if defined else math.nan
    return VOCResult(
        classes=results,
        map_voc07=map07,
        map_area=map_area,
        headline=headline,
        iou_threshold=float(iou_threshold),
        protocol=protocol_description(iou_threshold, headline),
        num_images=len(ground_truth),
        notes=notes,
    )

"""The COCO detection metrics, computed by pycocotools' ``COCOeval`` (the reference implementation), never here.

This module only translates: the project's ground truth (:class:`fastrcnn_cli.data.records.ImageRecord`, or
anything with ``id``, ``boxes``, ``labels``, ``difficult``) and :class:`fastrcnn_cli.detections.Detections`
become a COCO ground-truth document and a COCO results list (:func:`coco_ground_truth`, :func:`coco_results`),
which pycocotools evaluates with ``iouType="bbox"`` and its default parameters. :func:`coco_documents` makes the
two documents once; :meth:`COCODocuments.write` writes them (``fastrcnn evaluate --metric coco``:
``coco_gt.json`` and ``coco_results.json``) and :func:`evaluate_coco_documents` evaluates them, so that
``COCO(gt).loadRes(results)`` + ``COCOeval`` run by anyone on those files gives exactly the same numbers
(:func:`evaluate_coco_files` is that run). The table people read is drawn by the command line
(:func:`fastrcnn_cli.cli.render_eval.render_coco_table`).

The twelve numbers (``COCOeval.stats``, in this order; fractions in [0, 1]):

====================  ======================================================================================
``ap``                AP averaged over IoU 0.50, 0.55, ..., 0.95 (101-point interpolated precision), the COCO mAP
``ap50``, ``ap75``    AP at IoU 0.5 and 0.75
``ap_small`` ...      AP of objects of area < 32^2, 32^2 .. 96^2, > 96^2 pixels (``ap_medium``, ``ap_large``)
``ar1`` ...           recall with at most 1, 10, 100 detections per image (``ar10``, ``ar100``), over the IoUs
``ar_small`` ...      ``ar100`` by object area (``ar_medium``, ``ar_large``)
====================  ======================================================================================

Translation, decided once:

- boxes: ``bbox = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]`` (:func:`fastrcnn_cli.data.box_formats.to_coco`); COCO's
  IoU on these equals the project's +1-pixel IoU, so AP50 is scored with VOC's overlap (VOC's ``>=`` 0.5 too);
- difficult boxes are COCO's crowd regions (``iscrowd: 1``): never counted as positives, and a detection on one
  is ignored, as in VOC -- but pycocotools matches a crowd region by the share of the *detection* it covers
  (intersection over the detection's area), not by IoU;
- areas (small / medium / large): the record's own ``areas`` when it has them (a COCO file's ``area``, a mask's
  for COCO itself), else the box area ``w * h``;
- image ids: the records' COCO ids (``source_id``) when every record has a distinct one, else 1, 2, ... in
  ground-truth order; category ids: the data set's (``category_ids``) when given, else 1, 2, ... in class order;
- a class without any positive has no AP: pycocotools gives -1, reported here as NaN (``None`` in JSON) and left
  out of the means by pycocotools itself, as the VOC evaluation does (:mod:`fastrcnn_cli.evaluation`); an image
  without boxes counts the false positives on it.

Per class: ``ap`` and ``ap50`` are the means of pycocotools' own precision table (``eval["precision"]``, all areas,
100 detections) over that class alone, as ``COCOeval.summarize`` averages it over every class. The
interpolation differs from VOC's area AP (101 recall points against the exact area), so the two AP50s agree
exactly only where the precision envelope is flat between recall points (AP 0 or 1, or e.g. one false positive
ranked first: 2/3 for both), and within about a point otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fastrcnn_cli.data.box_formats import to_coco
from fastrcnn_cli.detections import DetectionsLike, group_by_image
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.io import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from fastrcnn_cli.evaluation import GroundTruth

#: the names of ``COCOeval.stats``, in its order
STATS: tuple[str, ...] = (
    "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip
#: how people read each of :data:`STATS`
STAT_LABELS: dict[str, str] = {
    "ap": "AP @[.5:.95]", "ap50": "AP50", "ap75": "AP75", "ap_small": "AP small", "ap_medium": "AP medium",
    "ap_large": "AP large", "ar1": "AR@1", "ar10": "AR@10", "ar100": "AR@100", "ar_small": "AR small",
    "ar_medium": "AR medium", "ar_large": "AR large",
}  # fmt: skip


def protocol_description() -> str:
    return (
        f"COCO (pycocotools {version('pycocotools')} COCOeval, bbox): AP over IoU 0.50:0.05:0.95, 101-point "
        "interpolation, 100 detections per image; difficult/iscrowd boxes are crowd regions (ignored); areas "
        "small < 32^2 <= medium < 96^2 <= large"
    )


@dataclass
class COCOClassResult:
    name: str
    category_id: int
    ap: float  #: AP @[.5:.95]; NaN when the class has no positives
    ap50: float
    num_positives: int  #: non-crowd (non-difficult) ground-truth boxes
    num_detections: int
    num_crowd: int = 0  #: crowd (difficult) ground-truth boxes: ignored

    @property
    def defined(self) -> bool:
        return self.num_positives > 0


def _none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class COCOResult:
    """The COCO metrics of a set of detections (fractions; NaN where there is nothing to measure)."""

    stats: dict[str, float]  #: :data:`STATS` -> value
    classes: list[COCOClassResult]
    num_images: int
    protocol: str = field(default_factory=protocol_description)
    notes: list[str] = field(default_factory=list)

    @property
    def map(self) -> float:
        """AP @[.5:.95], COCO's headline."""
        return self.stats["ap"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the twelve numbers as fractions (``None`` where undefined), per class ap and ap50."""
        return {
            "protocol": self.protocol,
            "map": _none(self.map),
            **{name: _none(value) for name, value in self.stats.items()},
            "num_images": self.num_images,
            "notes": list(self.notes),
            "classes": [
                {"name": c.name, "category_id": c.category_id, "ap": _none(c.ap), "ap50": _none(c.ap50),
                 "num_positives": c.num_positives, "num_crowd": c.num_crowd, "num_detections": c.num_detections}
                for c in self.classes
            ],
        }


# --------------------------------------------------------------------------------------------------
# translation
# --------------------------------------------------------------------------------------------------


def image_ids_for(ground_truth: Sequence[GroundTruth]) -> dict[str, int]:
    """record id -> COCO image id: the records' own ``source_id`` when all have distinct ones, else 1, 2, ..."""
    own = [getattr(r, "source_id", None) for r in ground_truth]
    if all(isinstance(v, int) for v in own) and len(set(own)) == len(own):
        return {r.id: int(v) for r, v in zip(ground_truth, own)}  # type: ignore[arg-type]
    return {r.id: n for n, r in enumerate(ground_truth, start=1)}


def coco_ground_truth(
    ground_truth: Sequence[GroundTruth],
    classes: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
    image_ids: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A COCO ground-truth document (``images``, ``annotations``, ``categories``) of the records."""
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(classes) + 1))
    if len(category_ids) != len(classes):
        raise ValueError(f"{len(category_ids)} category ids for {len(classes)} classes")
    image_ids = image_ids if image_ids is not None else image_ids_for(ground_truth)
    images, annotations = [], []
    for record in ground_truth:
        width, height = getattr(record, "width", None), getattr(record, "height", None)
        entry: dict[str, Any] = {"id": image_ids[record.id], "file_name": str(record.id)}
        if width is not None and height is not None:
            entry.update(width=int(width), height=int(height))
        images.append(entry)
        boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)
        areas = getattr(record, "areas", None)
        for k in range(boxes.shape[0]):
            bbox = to_coco(boxes[k])
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_ids[record.id],
                "category_id": int(category_ids[int(record.labels[k])]),
                "bbox": bbox,
                "area": float(areas[k]) if areas is not None else bbox[2] * bbox[3],
                "iscrowd": int(bool(record.difficult[k])),
            })
    categories = [{"id": int(c), "name": str(n)} for c, n in zip(category_ids, classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(
    detections: DetectionsLike,
    image_ids: Mapping[str, int],
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """A COCO results list (``image_id``, ``category_id``, ``bbox``, ``score``) of the detections.
    :class:`InputError` for a detection of an image that ``image_ids`` lacks or a label outside the classes."""
    out = []
    for image_id, det in group_by_image(detections).items():
        if image_id not in image_ids:
            raise InputError(f"detections of image {image_id!r}, which is not in the evaluated split "
                             "(do the detections belong to this data set and split?)")
        if len(det) and (det.labels.min() < 0 or det.labels.max() >= len(category_ids)):
            raise InputError(f"detections of image {image_id!r}: a label is outside the {len(category_ids)} classes")
        boxes = det.boxes.astype(np.float64)
        for k in range(len(det)):
            out.append({
                "image_id": image_ids[image_id],
                "category_id": int(category_ids[int(det.labels[k])]),
                "bbox": to_coco(boxes[k]),
                "score": float(det.scores[k]),
            })
    return out


@dataclass(frozen=True)
class COCODocuments:
    """The two documents pycocotools reads: a ground-truth document and a results list."""

    ground_truth: dict[str, Any]  #: ``images``, ``annotations``, ``categories``
    results: list[dict[str, Any]]  #: ``image_id``, ``category_id``, ``bbox``, ``score``

    def write(self, gt_path: str | os.PathLike, results_path: str | os.PathLike) -> None:
        """Both as JSON files (atomically), for anyone's pycocotools or faster-coco-eval:
        ``COCO(gt_path).loadRes(results_path)``."""
        atomic_write_text(gt_path, json.dumps(self.ground_truth))
        atomic_write_text(results_path, json.dumps(self.results))


def coco_documents(
    detections: DetectionsLike,
    ground_truth: Sequence[GroundTruth],
    classes: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
) -> COCODocuments:
    """The ground truth (labels index ``classes``) and the detections as COCO documents (see the module
    docstring for the image and category ids)."""
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(classes) + 1))
    image_ids = image_ids_for(ground_truth)
    document = coco_ground_truth(ground_truth, classes, category_ids=category_ids, image_ids=image_ids)
    return COCODocuments(document, coco_results(detections, image_ids, category_ids))


# --------------------------------------------------------------------------------------------------
# evaluation (pycocotools)
# --------------------------------------------------------------------------------------------------


def _coco(document: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = document
    coco.createIndex()
    return coco


def _run(gt: COCO, results: list[dict[str, Any]] | str) -> COCOResult:
    """COCOeval on a ground-truth COCO object and a results list (or results file), its prints silenced."""
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(results, list) and not results:  # loadRes cannot take an empty list: no detections at all
            dt = _coco({"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                        "annotations": []})
        else:
            dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: (math.nan if v < 0 else float(v)) for name, v in zip(STATS, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [T IoUs, R recalls, K classes, A areas, M max detections]
    classes = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        crowd = [bool(a.get("iscrowd", 0)) for a in gt.loadAnns(gt.getAnnIds(catIds=[cat_id]))]
        classes.append(COCOClassResult(
            name=str(gt.cats[cat_id]["name"]),
            category_id=int(cat_id),
            ap=float(p[p > -1].mean()) if (p > -1).any() else math.nan,
            ap50=float(p50[p50 > -1].mean()) if (p50 > -1).any() else math.nan,
            num_positives=crowd.count(False),
            num_detections=len(dt.getAnnIds(catIds=[cat_id])),
            num_crowd=crowd.count(True),
        ))
    notes = []
    undefined = [c.name for c in classes if not c.defined]
    if undefined:
        notes.append(f"AP undefined (no non-difficult ground truth) for {', '.join(undefined)}: left out of the means")
    return COCOResult(stats=stats, classes=classes, num_images=len(gt.getImgIds()), notes=notes)


def evaluate_coco_documents(documents: COCODocuments) -> COCOResult:
    """pycocotools on the two documents (on copies: ``loadRes`` and ``COCOeval`` write into what they read, so
    ``documents`` stay as :meth:`COCODocuments.write` writes them)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = _coco(copy.deepcopy(documents.ground_truth))
    return _run(gt, copy.deepcopy(documents.results))


def evaluate_coco(
    detections: DetectionsLike,
    ground_truth: Sequence[GroundTruth],
    classes: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
) -> COCOResult:
    """The COCO metrics of ``detections`` against ``ground_truth`` (labels index ``classes``), by pycocotools."""
    return evaluate_coco_documents(coco_documents(detections, ground_truth, classes, category_ids=category_ids))


def write_coco_files(
    gt_path: str | os.PathLike,
    results_path: str | os.PathLike,
    detections: DetectionsLike,
    ground_truth: Sequence[GroundTruth],
    classes: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
) -> None:
    """Write the ground truth and results :func:`evaluate_coco` evaluates (:meth:`COCODocuments.write`)."""
    coco_documents(detections, ground_truth, classes, category_ids=category_ids).write(gt_path, results_path)


def evaluate_coco_files(gt_path: str | os.PathLike, results_path: str | os.PathLike) -> COCOResult:
    """pycocotools on a ground-truth file and a results file, as its users run it."""
    for path in (gt_path, results_path):
        if not Path(path).is_file():
            raise InputError("no such file", path)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            gt = COCO(str(gt_path))
        except (json.JSONDecodeError, AssertionError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InputError(f"not a COCO ground-truth file ({type(exc).__name__}: {exc})", gt_path) from None
    try:
        results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a JSON results file ({exc})", results_path) from None
    if not isinstance(results, list):
        raise InputError("not a COCO results list (a JSON array of detections)", results_path)
    unknown = {r.get("image_id") for r in results if isinstance(r, dict)} - set(gt.getImgIds())
    if unknown:
        raise InputError(f"results for {len(unknown)} image id(s) that {gt_path} lacks, e.g. {min(map(str, unknown))}",
                         results_path)
    return _run(gt, results)

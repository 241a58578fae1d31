"""One inference and evaluation pipeline, used by every command that runs a model.

``fastrcnn detect``, ``fastrcnn evaluate``, ``compress-svd --eval``, training's periodic evaluation and
``fastrcnn benchmark`` all assemble a detector and score a split with these functions, so that the same model on
the same data gives the same mAP, bit for bit, whichever command asks (``tests/test_pipeline.py``)::

    weights ─ load_detector ──────> LoadedDetector  (model, checkpoint meta, DetectSettings, ProposalSettings, Detector)
    live model ─ detector_for_model ─> Detector     (training: the model being trained, normalised offsets)
    data, split ─ load_eval_data ──> EvalData        (the validated split, evaluated classes, proposals, headline)
    Detector + EvalData ─ evaluate_split ─> SplitEvaluation  (VOCResult, raw detections, stage times)

1. :func:`load_detector`: the weights (the shipped model when none are given, or ``FASTRCNN_WEIGHTS``), read
   safely (tensors and plain data, never pickled code; an ``.onnx`` file runs in ONNX Runtime); the detection
   settings from the checkpoint (its first training scale and ``max_size`` unless given,
   :meth:`DetectSettings.for_checkpoint`); the proposal settings it was trained with, with what the user gave laid
   over them (:class:`ProposalOverrides`, :func:`~fastrcnn_cli.detect.proposal_settings_from_meta`: an unusable
   recorded set is a :class:`CheckpointError` naming the file).
2. :func:`load_eval_data`: the split, read and validated once; the classes to evaluate matched **by name**
   between the detector and the data set (:func:`resolve_eval_classes`: equal sets, or the ``requested`` ones,
   which both must know); the ground truth restricted to them; the proposals from the ``fastrcnn propose``
   cache, computed when missing; the headline metric (VOC07 11-point for VOC 2007 data, else the area AP).
3. :func:`evaluate_split`: detection under the evaluation protocol (:data:`EVAL_SCORE_THRESHOLD` score floor,
   100 detections per image, candidates restricted to the evaluated classes; the test scale, the NMS IoU and the
   proposals as loaded: the model's own NMS IoU, :data:`~fastrcnn_cli.detect_settings.DEFAULT_NMS` for a model
   that records none), the detections mapped to the evaluated classes, then
   :func:`~fastrcnn_cli.evaluation.evaluate_voc`. :func:`score_detections` is the last step alone, for saved
   detections (``fastrcnn evaluate --detections``).

Errors name settings fields (``classes``, ``score_threshold``), never command-line flags; the command line maps
them to its flags.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrcnn_cli import proposals as proposal_module
from fastrcnn_cli.data.records import Dataset, ImageRecord
from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.detect import (
    EVAL_SCORE_THRESHOLD,
    DetectSettings,
    Detector,
    NetworkBackend,
    StageTimes,
    UnknownClassError,
    detect_dataset,
    proposal_settings_from_meta,
)
from fastrcnn_cli.detect_settings import DEFAULT_NMS
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.devices import resolve_device
from fastrcnn_cli.evaluation import DEFAULT_IOU_THRESHOLD, Headline, VOCResult, evaluate_voc, headline_for
from fastrcnn_cli.model.checkpoint import Checkpoint, resolve_weights
from fastrcnn_cli.model.fast_rcnn import FastRCNN
from fastrcnn_cli.onnx_backend import load_network
from fastrcnn_cli.proposal_settings import ProposalSettings

__all__ = [
    "EVAL_MAX_DETECTIONS",
    "ClassMatchError",
    "EvalData",
    "EvalGroundTruth",
    "LoadedDetector",
    "ProposalOverrides",
    "SplitEvaluation",
    "category_ids_for",
    "detector_for_model",
    "eval_settings",
    "evaluate_split",
    "load_detector",
    "load_eval_data",
    "load_proposals",
    "remap_detections",
    "resolve_eval_classes",
    "restrict_ground_truth",
    "score_detections",
]

#: the evaluation protocol's detections per image (py-faster-rcnn's test protocol); the NMS IoU is the model's
EVAL_MAX_DETECTIONS = 100


# ---------------------------------------------------------------------------------------------------------
# the detector


@dataclass(frozen=True)
class ProposalOverrides:
    """Proposal settings the user gave, laid over a checkpoint's recorded ones (None: keep the recorded value).

    The five settings of :class:`~fastrcnn_cli.proposals.ProposalSettings`; enum values (the command line's
    choices) are taken by their value."""

    mode: str | None = None
    max_side: int | None = None
    top: int | None = None
    min_size: int | None = None
    proposer: str | None = None

    def __post_init__(self) -> None:
        for name in ("mode", "proposer"):
            value = getattr(self, name)
            if isinstance(value, Enum):
                object.__setattr__(self, name, value.value)

    def apply(self, meta: Checkpoint) -> ProposalSettings:
        """The checkpoint's proposal settings with these laid over them."""
        return proposal_settings_from_meta(
            meta, self.top, self.proposer, mode=self.mode, max_side=self.max_side, min_size=self.min_size
        )


@dataclass(frozen=True)
class LoadedDetector:
    """A model read from a weights file, with every setting derived from it, ready to detect."""

    model: FastRCNN | NetworkBackend  #: the PyTorch model, or an ONNX Runtime network
    meta: Checkpoint  #: the checkpoint's metadata (classes, scales, proposal settings, training summary)
    detect_settings: DetectSettings
    proposal_settings: ProposalSettings
    detector: Detector
    device: torch.device
    weights_path: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.classes)

    @property
    def runtime(self) -> str | None:
        """The runtime's name for people when it is not PyTorch (e.g. "ONNX Runtime"), else None."""
        return None if self.detector.backend is None else self.detector.backend.runtime


def load_detector(
    weights: str | os.PathLike | None,
    device: str | torch.device = "auto",
    *,
    scale: Sequence[int] | None = None,
    max_size: int | None = None,
    score_threshold: float = 0.5,
    nms: float | None = None,
    max_detections: int = EVAL_MAX_DETECTIONS,
    classes: Sequence[str] | None = None,
    proposals: ProposalOverrides | None = None,
) -> LoadedDetector:
    """Find the weights (``None``: the shipped model), read them, and build the :class:`Detector`.

    ``scale`` / ``max_size`` / ``nms`` None: the checkpoint's first training scale, its ``max_size`` and its NMS
    IoU (:data:`~fastrcnn_cli.detect_settings.DEFAULT_NMS` when it records none). ``classes``:
    keep only these class names (each must be the model's: :class:`UnknownClassError` names ``classes``
    otherwise). ``proposals``: Selective Search settings laid over the checkpoint's recorded ones.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = resolve_weights(weights)
    model, meta = load_network(path, dev)  # a checkpoint (PyTorch) or an exported .onnx (ONNX Runtime)
    detect_settings = DetectSettings.for_checkpoint(
        meta,
        scale,
        max_size,
        score_threshold=score_threshold,
        nms=nms,
        max_detections=max_detections,
        classes=None if classes is None else tuple(classes),
    )
    proposal_settings = (proposals or ProposalOverrides()).apply(meta)
    detector = Detector(model, detect_settings, dev, proposal_settings)
    return LoadedDetector(model, meta, detect_settings, proposal_settings, detector, dev, path)


def detector_for_model(
    model: FastRCNN,
    test_scale: int | Sequence[int],
    max_size: int,
    proposal_settings: ProposalSettings | None,
    device: str | torch.device = "cpu",
    *,
    normalised_deltas: bool = False,
    score_threshold: float = EVAL_SCORE_THRESHOLD,
    nms: float = DEFAULT_NMS,
) -> Detector:
    """A :class:`Detector` for a model in memory (training's periodic evaluation: the live model, whose
    regressor still predicts normalised offsets, ``normalised_deltas=True``), with the evaluation protocol's
    settings at ``test_scale`` (an int, or several scales), ``max_size`` and the NMS IoU the saved model will
    record. The model stays in the mode it is in (training's model keeps training between evaluations)."""
    scales = (int(test_scale),) if isinstance(test_scale, (int, np.integer)) else tuple(int(s) for s in test_scale)
    settings = DetectSettings(
        scale=scales, max_size=int(max_size), score_threshold=score_threshold, nms=nms,
        max_detections=EVAL_MAX_DETECTIONS,
    )
    training = model.training
    detector = Detector(model, settings, device, proposal_settings, normalised_deltas=normalised_deltas)
    model.train(training)  # evaluate_split puts it in eval mode for its loop and gives it back as it was
    return detector


# ---------------------------------------------------------------------------------------------------------
# classes matched by name


class ClassMatchError(UnknownClassError):
    """The detector's (or a detections file's) classes and the data set's do not fit: exit code 1.

    Its message names the ``classes`` setting; :meth:`render` puts the command line's flag in its place."""

    _FIELD = "\0classes\0"  # where the setting's name goes (class names may hold any character)

    def __init__(self, template: str) -> None:
        self.template = template
        self.problems = [("classes", template)]
        Exception.__init__(self, self.render(str))
        self.path = None

    def render(self, name: Callable[[str], str]) -> str:
        return self.template.replace(self._FIELD, name("classes"))


def resolve_eval_classes(
    source: Sequence[str], data: Sequence[str], requested: Sequence[str] | None, source_name: str = "the model"
) -> tuple[str, ...]:
    """The classes to evaluate, by name: ``requested`` (each known to both), or the data set's when the two
    sets are equal (in the data set's order). Raises a :class:`ClassMatchError` that names the missing and
    extra classes and, when they share some, the ``classes`` value that scores those."""
    field = ClassMatchError._FIELD
    src, dat = list(source), list(data)
    if requested:
        not_in_data = [c for c in requested if c not in dat]
        not_in_source = [c for c in requested if c not in src]
        problems = []
        if not_in_data:
            problems.append(f"the data set has no class {', '.join(not_in_data)} (it has: {', '.join(dat)})")
        if not_in_source:
            problems.append(f"{source_name} has no class {', '.join(not_in_source)} (it has: {', '.join(src)})")
        if problems:
            raise ClassMatchError(f"{field}: " + "; ".join(problems))
        return tuple(requested)
    if set(src) == set(dat):
        return tuple(dat)
    lacking = [c for c in dat if c not in src]
    extra = [c for c in src if c not in dat]
    shared = [c for c in dat if c in src]
    parts = []
    if lacking:
        parts.append(f"{source_name} lacks {', '.join(lacking)}")
    if extra:
        parts.append(f"the data set lacks {', '.join(extra)}")
    hint = (
        f"; to score the {len(shared)} shared class(es) only, give {field} {','.join(shared)}"
        if shared
        else "; they share no class: is this the right model for this data set?"
    )
    raise ClassMatchError(f"the classes of {source_name} do not match the data set's: " + "; ".join(parts) + hint)


def _index_map(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """source label -> target label, -1 where the source class is not evaluated."""
    return np.array([list(target).index(c) if c in target else -1 for c in source], dtype=np.int64)


def remap_detections(detections: Sequence[Detections], source: Sequence[str], target: Sequence[str]) -> list[Detections]:
    """Detections with labels into ``source`` -> labels into ``target`` (classes not in ``target`` dropped)."""
    mapping = _index_map(source, target)
    out = []
    for det in detections:
        labels = mapping[det.labels] if len(det) else det.labels
        keep = labels >= 0
        out.append(Detections(det.image_id, det.boxes[keep], det.scores[keep], labels[keep]))
    return out


@dataclass(frozen=True)
class EvalGroundTruth:
    """An image's ground truth restricted to the evaluated classes (what :func:`evaluate_voc` reads, and
    :func:`~fastrcnn_cli.coco_metrics.evaluate_coco`: the objects' own areas for small/medium/large, the COCO
    image id and the image size)."""

    id: str
    boxes: np.ndarray
    labels: np.ndarray  #: indices into the evaluated classes
    difficult: np.ndarray
    width: int | None = None
    height: int | None = None
    areas: np.ndarray | None = None  #: a COCO file's ``area`` of each box kept; None: the box areas
    source_id: int | None = None  #: the image's id in its COCO file


def restrict_ground_truth(
    records: Sequence[ImageRecord], source: Sequence[str], target: Sequence[str]
) -> list[EvalGroundTruth]:
    """Ground truth with labels into the data set's classes -> into ``target`` (other classes' boxes left out)."""
    mapping = _index_map(source, target)
    out = []
    for r in records:
        labels = mapping[r.labels] if len(r.labels) else mapping[:0]
        keep = labels >= 0
        areas = getattr(r, "areas", None)
        out.append(EvalGroundTruth(
            r.id, r.boxes[keep], labels[keep], r.difficult[keep],
            width=getattr(r, "width", None), height=getattr(r, "height", None),
            areas=None if areas is None else np.asarray(areas)[keep], source_id=getattr(r, "source_id", None),
        ))  # fmt: skip
    return out


def category_ids_for(dataset: Dataset, classes: Sequence[str]) -> list[int] | None:
    """The COCO category id of each of ``classes`` (the data set's, by name), or None when the data set has none
    (VOC, YOLO: the COCO metrics number the classes 1, 2, ...)."""
    if dataset.category_ids is None:
        return None
    by_name = dict(zip(dataset.classes, dataset.category_ids))
    return [int(by_name[c]) for c in classes]


# ---------------------------------------------------------------------------------------------------------
# the split


@dataclass(frozen=True)
class EvalData:
    """A split loaded once for evaluation: its images, the evaluated classes, ground truth and proposals."""

    dataset: Dataset
    records: list[ImageRecord]  #: the images, in order (the order of tied scores in :func:`evaluate_voc`)
    proposals: Mapping[str, np.ndarray]  #: image id -> [P, 4] boxes; empty when loaded without proposals
    classes: tuple[str, ...]  #: the evaluated classes, by name
    headline: Headline  #: which AP is *the* mAP
    ground_truth: list[EvalGroundTruth]  #: ``records`` restricted to ``classes`` (labels into ``classes``)
    proposal_settings: ProposalSettings | None = None  #: how ``proposals`` were made (None: none loaded)
    load_s: float = 0.0  #: seconds reading and validating the split
    proposals_s: float = 0.0  #: seconds loading (or computing) the proposals

    @property
    def root(self) -> Path:
        return self.dataset.root

    @property
    def split(self) -> str:
        return self.dataset.split


def load_eval_data(
    data: str | os.PathLike | Dataset,
    split: str | None,
    classes: Sequence[str],
    proposal_settings: ProposalSettings | None,
    *,
    requested: Sequence[str] | None = None,
    source_name: str = "the model",
    data_classes: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    strict: bool = False,
    metric: Headline | None = None,
    proposals: Mapping[str, np.ndarray] | None = None,
    warn: bool = True,
    format: str | None = None,
) -> EvalData:
    """Read and validate a split, match its classes to the detector's, and load its proposals.

    ``data``: a data set folder (read with ``split``), or a split already loaded (training's held-out part).
    ``classes``: the detector's classes (or a detections file's, named by ``source_name``); ``requested``: evaluate
    only these (:func:`resolve_eval_classes`). ``data_classes``: the class list to read the data set with
    (None: its own, from ``classes.txt``, the VOC release or the annotations; training gives the list it
    trained with). ``proposal_settings`` None: no proposals (re-scoring saved detections, or
    :func:`load_proposals` later); else :func:`load_proposals` with ``cache_dir``, ``workers`` and ``proposals``.
    ``metric``: the headline AP (None: :func:`~fastrcnn_cli.evaluation.headline_for` the data set).
    ``format``: the data set's format, "voc", "coco" or "yolo" (None: detected from the folder).
    """
    t = time.perf_counter()
    if isinstance(data, Dataset):
        dataset = data
    else:
        if split is None:
            raise ValueError("split is needed to read a data set folder")
        dataset = load_dataset(data, split, data_classes, strict=strict, warn=warn, format=format)
    eval_classes = resolve_eval_classes(tuple(classes), dataset.classes, requested, source_name)
    loaded = EvalData(
        dataset=dataset,
        records=list(dataset.records),
        proposals={},
        classes=eval_classes,
        headline=metric or headline_for(dataset.root),
        ground_truth=restrict_ground_truth(dataset.records, dataset.classes, eval_classes),
        load_s=time.perf_counter() - t,
    )
    if proposal_settings is None:
        return loaded
    return load_proposals(loaded, proposal_settings, cache_dir=cache_dir, workers=workers, proposals=proposals)


def load_proposals(
    data: EvalData,
    settings: ProposalSettings,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    proposals: Mapping[str, np.ndarray] | None = None,
) -> EvalData:
    """``data`` with the proposals of its images: ``proposals`` when given (a caller that loaded them already),
    else from the cache in ``cache_dir`` (default: per data set and settings), computed there with ``workers``
    processes when missing."""
    t = time.perf_counter()
    if proposals is None:
        cache = Path(cache_dir) if cache_dir is not None else None
        # through the package attribute, so that tests can stand in for the proposal stage
        proposals = proposal_module.load_or_compute_proposals(data.dataset, settings, cache, workers)
    return dataclasses.replace(
        data, proposals=proposals, proposal_settings=settings, proposals_s=time.perf_counter() - t
    )


# ---------------------------------------------------------------------------------------------------------
# scoring


@dataclass(frozen=True)
class SplitEvaluation:
    """What :func:`evaluate_split` returns."""

    voc: VOCResult  #: per-class AP and mAP over the evaluated classes
    detections: list[Detections]  #: per image, labels into ``detector_classes`` (what detections.npz keeps)
    detector_classes: tuple[str, ...]
    settings: DetectSettings  #: the detection settings used (the evaluation protocol's)
    times: StageTimes  #: summed over the images
    detection_s: float  #: wall seconds of the detection loop
    evaluation_s: float  #: seconds of the AP computation

    @property
    def map(self) -> float:
        return self.voc.map

    def times_dict(self) -> dict[str, float]:
        """Seconds, each key with its unit."""
        return {
            "detection_s": self.detection_s,
            "proposals_s": self.times.proposals,  # images missing from the cache, searched on the fly
            "network_s": self.times.network,
            "postprocess_s": self.times.postprocess,
            "evaluation_s": self.evaluation_s,
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`VOCResult.to_dict` (mAP and AP as fractions in [0, 1]) plus ``settings`` and ``times``."""
        return {**self.voc.to_dict(), "settings": self.settings.to_dict(), "times": self.times_dict()}


def eval_settings(settings: DetectSettings, classes: Sequence[str] | None) -> DetectSettings:
    """``settings`` (test scales, ``max_size``, NMS IoU) under the evaluation protocol: score floor
    :data:`EVAL_SCORE_THRESHOLD`, :data:`EVAL_MAX_DETECTIONS` per image, only ``classes`` competing for them."""
    return dataclasses.replace(
        settings,
        score_threshold=EVAL_SCORE_THRESHOLD,
        max_detections=EVAL_MAX_DETECTIONS,
        classes=None if classes is None else tuple(classes),
    )


def score_detections(
    detections: Sequence[Detections],
    source_classes: Sequence[str],
    data: EvalData,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> VOCResult:
    """VOC AP of detections whose labels index ``source_classes``, over ``data``'s evaluated classes."""
    return evaluate_voc(
        remap_detections(detections, source_classes, data.classes),
        data.ground_truth,
        data.classes,
        iou_threshold,
        headline=data.headline,
    )


def evaluate_split(
    detector: Detector,
    data: EvalData,
    *,
    description: str = "evaluating",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> SplitEvaluation:
    """Detect on every image of ``data`` with its proposals, under the evaluation protocol
    (:func:`eval_settings`; ``detector``'s test scales, device and network kept), and score the detections.

    A PyTorch model is put in eval mode for the loop and given back in the mode it had (training's evaluation).
    """
    detector_classes = tuple(detector.model.config.classes)
    detector = detector.with_settings(eval_settings(detector.settings, data.classes))
    t = time.perf_counter()
    dets, times = detect_dataset(detector, data.records, data.proposals, EVAL_SCORE_THRESHOLD, description)
    detection_s = time.perf_counter() - t
    t = time.perf_counter()
    voc = score_detections(dets, detector_classes, data, iou_threshold)
    return SplitEvaluation(
        voc=voc,
        detections=dets,
        detector_classes=detector_classes,
        settings=detector.settings,
        times=times,
        detection_s=detection_s,
        evaluation_s=time.perf_counter() - t,
    )

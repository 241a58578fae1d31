"""``fastrcnn evaluate``'s work: PASCAL VOC AP (and the COCO metrics) of a model, or of saved detections, on a
data set split.

:func:`run_evaluate` takes :class:`EvaluateSettings` and returns an :class:`EvaluateResult`; the command line
(:mod:`fastrcnn_cli.cli.evaluate`) parses the options into the settings and renders the result (table, plot,
``results.json``).

With a model: :func:`~fastrcnn_cli.pipeline.load_detector` (the checkpoint's test scale and proposal settings,
what the user gave laid over them), :func:`~fastrcnn_cli.pipeline.load_eval_data` (the split, the classes matched
by name, the cached proposals) and :func:`~fastrcnn_cli.pipeline.evaluate_split` (the evaluation protocol: score
floor 0.001, NMS 0.3, 100 detections per image), the same three calls as training's periodic evaluation and
``compress-svd --eval``. The raw detections are saved (:func:`fastrcnn_cli.detections.save_detections`) into the
run folder (a new ``runs/eval``, ``runs/eval2``, ... unless ``out`` is given).

With ``detections`` (a file an earlier evaluation saved): no model runs; the file's classes are matched to the
data set's by name and its detections scored with :func:`~fastrcnn_cli.pipeline.score_detections`.

The data set may be VOC, COCO or YOLO (``data_format``, None: detected; :func:`fastrcnn_cli.data.formats.locate`).
Negative images (no objects) are evaluated like the others: every detection on one is a false positive.

``metric`` "coco": the VOC evaluation runs as always (its headline the data set's default), and the same
detections are scored by pycocotools too (:mod:`fastrcnn_cli.coco_metrics`, AP @[.5:.95], which becomes the
headline ``map``): the ground truth keeps each object's own COCO ``area`` (small/medium/large), each image its
COCO id and size, each class its category id, and the two documents pycocotools reads are written into the run
folder, ``coco_gt.json`` and ``coco_results.json``, so that anyone's ``COCO("coco_gt.json").loadRes(
"coco_results.json")`` + ``COCOeval`` gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastrcnn_cli import progress
from fastrcnn_cli.coco_metrics import COCOResult, coco_documents, evaluate_coco_documents
from fastrcnn_cli.data.formats import FORMATS
from fastrcnn_cli.detections import Detections, SavedDetections, load_detections, save_detections
from fastrcnn_cli.devices import describe_device
from fastrcnn_cli.errors import InputError, SettingsError
from fastrcnn_cli.evaluation import DEFAULT_IOU_THRESHOLD, Headline, VOCResult
from fastrcnn_cli.pipeline import (
    EvalData,
    LoadedDetector,
    ProposalOverrides,
    SplitEvaluation,
    category_ids_for,
    evaluate_split,
    load_detector,
    load_eval_data,
    load_proposals,
    remap_detections,
    score_detections,
)
from fastrcnn_cli.run_dir import new_run_dir

#: the headline metrics: VOC07 11-point AP, the area AP (both at ``iou_threshold``), COCO's AP @[.5:.95]
Metric = Literal["voc07", "area", "coco"]
METRICS: tuple[str, ...] = ("voc07", "area", "coco")
DEFAULT_RUNS = Path("runs")
#: the files ``metric="coco"`` writes into the run folder
COCO_GT_FILE, COCO_RESULTS_FILE = "coco_gt.json", "coco_results.json"


@dataclass(frozen=True)
class EvaluateSettings:
    """What ``fastrcnn evaluate`` is asked to do (its options, by field)."""

    data: Path  #: a data set folder: VOC, COCO or YOLO
    split: str = "test"
    classes: tuple[str, ...] | None = None  #: evaluate only these (matched by name); None: all, sets must agree
    strict: bool = False  #: stop on any data set problem instead of skipping bad images
    weights: Path | None = None  #: None: the shipped model (unless ``detections``)
    detections: Path | None = None  #: re-score this detections file instead of running a model
    scale: tuple[int, ...] | None = None  #: test scales (None: the checkpoint's training scale)
    max_size: int | None = None  #: longer side cap (None: the checkpoint's)
    nms: float | None = None  #: per-class NMS IoU (None: the checkpoint's, else the paper's; checked by DetectSettings)
    device: str = "auto"
    metric: Metric | None = None  #: the headline AP (None: voc07 for VOC 2007 data, else area)
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    out: Path | None = None  #: the run folder (None: a new one under ``runs_dir``)
    save_detections: Path | None = None  #: where the raw detections go (None: ``out/detections.npz``)
    proposal_cache: Path | None = None
    workers: int | None = None
    proposals: ProposalOverrides = field(default_factory=ProposalOverrides)
    runs_dir: Path = DEFAULT_RUNS
    data_format: str | None = None  #: "voc", "coco" or "yolo" (None: detected from the folder)

    def __post_init__(self) -> None:
        problems = []
        if self.metric is not None and self.metric not in METRICS:
            problems.append(("metric", f"choose {', '.join(METRICS)}, not {self.metric!r}"))
        if self.data_format is not None and self.data_format not in FORMATS:
            problems.append(("data_format", f"choose {', '.join(FORMATS)}, not {self.data_format!r}"))
        if not 0.0 < self.iou_threshold <= 1.0:  # also refuses NaN
            problems.append(("iou_threshold", f"must be in (0, 1] (got {self.iou_threshold:g})"))
        if self.detections is not None:
            for name in ("weights", "scale", "max_size", "nms", "save_detections"):
                if getattr(self, name) is not None:
                    problems.append((name, "applies when the model runs, and detections re-scores saved detections"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])

    @property
    def voc_headline(self) -> Headline | None:
        """The headline of the VOC evaluation (None: the data set's default; always so with ``metric`` "coco")."""
        return None if self.metric == "coco" else self.metric  # type: ignore[return-value]


@dataclass(frozen=True)
class EvaluateResult:
    """What :func:`run_evaluate` found and wrote; :meth:`to_dict` is ``results.json`` (without the plot)."""

    settings: EvaluateSettings
    voc: VOCResult
    data: EvalData
    run_dir: Path
    loaded: LoadedDetector | None = None  #: the model, when one ran
    split_evaluation: SplitEvaluation | None = None  #: its detections and times, when a model ran
    saved: SavedDetections | None = None  #: the re-scored file, when ``detections`` was given
    detections_path: Path | None = None  #: where the raw detections were written (a model ran)
    seconds: dict[str, float] = field(default_factory=dict)  #: ``*_s`` keys: load_data_s ... total_s
    coco: COCOResult | None = None  #: the COCO metrics (``metric`` "coco")
    coco_files: tuple[Path, Path] | None = None  #: the ground truth and results pycocotools read (``metric`` "coco")

    @property
    def map(self) -> float:
        """The headline mAP: COCO's AP @[.5:.95] with ``metric`` "coco", else the VOC headline's."""
        return self.coco.map if self.coco is not None else self.voc.map

    @property
    def num_images(self) -> int:
        return len(self.data.records)

    def to_dict(self) -> dict[str, Any]:
        """:meth:`VOCResult.to_dict` (``map``/``ap`` as fractions in [0, 1]) plus the run's description:
        ``data``, ``data_format``, ``split``, ``images``, ``negative_images``, ``evaluated_classes``, ``weights``,
        ``settings`` and ``proposals`` (or ``detections`` and ``detections_meta``), ``saved_detections`` and
        ``times`` (seconds, ``*_s``). With the COCO metrics: ``headline`` "coco", ``map`` COCO's AP @[.5:.95],
        ``coco`` (:meth:`COCOResult.to_dict`, fractions) and ``coco_files`` (``ground_truth``, ``results``)."""
        out: dict[str, Any] = {
            **self.voc.to_dict(),
            "data": str(self.data.root),
            "data_format": self.data.dataset.format,
            "split": self.data.split,
            "images": self.num_images,
            "negative_images": sum(1 for r in self.data.records if r.num_objects == 0),
            "evaluated_classes": list(self.data.classes),
        }
        if self.coco is not None and self.coco_files is not None:
            coco = self.coco.to_dict()
            out.update(headline="coco", map=coco["map"], coco=coco,
                       coco_files={"ground_truth": str(self.coco_files[0]), "results": str(self.coco_files[1])})
        if self.saved is not None:
            out["detections"] = str(self.settings.detections)
            out["detections_meta"] = self.saved.meta
        if self.loaded is not None and self.split_evaluation is not None:
            out["weights"] = str(self.loaded.weights_path)
            out["settings"] = self.split_evaluation.settings.to_dict()
            out["proposals"] = self.loaded.proposal_settings.to_dict()
            out["saved_detections"] = str(self.detections_path)
        out["times"] = {k: round(v, 3) for k, v in self.seconds.items()}
        return out


def run_evaluate(settings: EvaluateSettings) -> EvaluateResult:
    """Evaluate a model (or re-score saved detections) on a split; see the module docstring."""
    s = settings
    t_start = time.perf_counter()
    if s.detections is not None:
        saved = load_detections(s.detections)  # before the data set: a wrong file fails fast
        data = load_eval_data(
            s.data, s.split, saved.classes, None, requested=s.classes,
            source_name=f"the detections file {s.detections}", strict=s.strict, metric=s.voc_headline,
            format=s.data_format,
        )  # fmt: skip
        run_dir = _make_run_dir(s)
        return _rescore(s, saved, data, run_dir, t_start)

    loaded = load_detector(s.weights, s.device, scale=s.scale, max_size=s.max_size, nms=s.nms, proposals=s.proposals)
    data = load_eval_data(
        s.data, s.split, loaded.classes, None, requested=s.classes, strict=s.strict, metric=s.voc_headline,
        format=s.data_format,
    )  # proposals next, once the run folder exists and the plan is said
    run_dir = _make_run_dir(s)
    progress.info(
        f"evaluating {loaded.weights_path} on {data.root} split {s.split!r} ({len(data.records)} images, "
        f"{len(data.classes)} classes) on {describe_device(loaded.device)}"
        + (f" with {loaded.runtime}" if loaded.runtime else "")
        + f"; scale {'/'.join(str(x) for x in loaded.detect_settings.scale)}, max size {loaded.detect_settings.max_size}"
        + f", NMS {loaded.detect_settings.nms:g}"
    )
    data = load_proposals(data, loaded.proposal_settings, cache_dir=s.proposal_cache, workers=s.workers)
    evaluation = evaluate_split(loaded.detector, data, description="detecting", iou_threshold=s.iou_threshold)
    det_path = s.save_detections or run_dir / "detections.npz"
    save_detections(
        det_path,
        evaluation.detections,
        evaluation.detector_classes,
        meta={
            "weights": str(loaded.weights_path),
            "data": str(data.root),
            "split": s.split,
            "settings": evaluation.settings.to_dict(),
            "proposals": loaded.proposal_settings.to_dict(),
        },
    )
    coco, coco_files, coco_s = _coco_metrics(s, evaluation.detections, evaluation.detector_classes, data, run_dir)
    seconds = {
        "load_data_s": data.load_s,
        "proposals_s": data.proposals_s + evaluation.times.proposals,  # + images searched on the fly
        "detection_s": evaluation.detection_s,
        "network_s": evaluation.times.network,
        "postprocess_s": evaluation.times.postprocess,
        "evaluation_s": evaluation.evaluation_s + coco_s,
        "total_s": time.perf_counter() - t_start,
    }
    return EvaluateResult(s, evaluation.voc, data, run_dir, loaded, evaluation, None, det_path, seconds,
                          coco, coco_files)


def _rescore(s: EvaluateSettings, saved: SavedDetections, data: EvalData, run_dir: Path, t_start: float) -> EvaluateResult:
    dets = saved.detections
    made_on = saved.meta.get("split"), saved.meta.get("data")
    progress.info(
        f"re-scoring {sum(len(d) for d in dets)} saved detections of {len(dets)} images"
        + (f" (made on split {made_on[0]!r} of {made_on[1]})" if made_on[0] else "")
    )
    have = {d.image_id for d in dets}
    missing = [r.id for r in data.records if r.id not in have]
    if missing:
        progress.warn(f"{len(missing)} of {len(data.records)} images of split {s.split!r} have no entry in "
                      f"{s.detections}: they count as images without detections")
    t = time.perf_counter()
    voc = score_detections(dets, saved.classes, data, s.iou_threshold)
    evaluation_s = time.perf_counter() - t
    coco, coco_files, coco_s = _coco_metrics(s, dets, saved.classes, data, run_dir)
    seconds = {"load_data_s": data.load_s, "evaluation_s": evaluation_s + coco_s,
               "total_s": time.perf_counter() - t_start}
    return EvaluateResult(s, voc, data, run_dir, saved=saved, seconds=seconds, coco=coco, coco_files=coco_files)


def _coco_metrics(
    s: EvaluateSettings, detections: list[Detections], source_classes: Sequence[str], data: EvalData, run_dir: Path
) -> tuple[COCOResult | None, tuple[Path, Path] | None, float]:
    """With ``metric`` "coco": the detections (labels into ``source_classes``) scored by pycocotools over the
    evaluated classes, the two documents written into ``run_dir`` first; (result, files, seconds)."""
    if s.metric != "coco":
        return None, None, 0.0
    t = time.perf_counter()
    documents = coco_documents(
        remap_detections(detections, source_classes, data.classes), data.ground_truth, data.classes,
        category_ids=category_ids_for(data.dataset, data.classes),
    )  # fmt: skip
    files = (run_dir / COCO_GT_FILE, run_dir / COCO_RESULTS_FILE)
    documents.write(*files)
    return evaluate_coco_documents(documents), files, time.perf_counter() - t


def _make_run_dir(s: EvaluateSettings) -> Path:
    try:
        if s.out is None:
            return new_run_dir(s.runs_dir, "eval")
        s.out.mkdir(parents=True, exist_ok=True)
        return s.out
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror or exc})", s.out or s.runs_dir) from None

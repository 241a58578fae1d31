"""What a detection is asked to do: :class:`DetectSettings` (one image, the :class:`~fastrcnn_cli.detect.Detector`'s
test-time settings) and :class:`DetectRunSettings` (a whole ``fastrcnn detect`` run: sources, outputs, video,
labels, model and proposals).

Both are frozen dataclasses whose fields describe themselves (:func:`fastrcnn_cli.fields.setting`); values out of
range raise :class:`~fastrcnn_cli.errors.SettingsError` naming the *field* (``score_threshold``), which the command
line renders as its flag (``--conf``). ``fastrcnn detect`` generates most of its options from
:class:`DetectRunSettings` (:func:`fastrcnn_cli.cli.fields.settings_options`), so an option and its setting have
one name, one default and one help text.

The test scale is ``scale`` everywhere (a tuple: several scales are multi-scale testing), as in
:class:`~fastrcnn_cli.training.settings.TrainSettings`; documents written before the rename say ``scales``, which
:meth:`DetectSettings.from_dict` still reads (``old_names``). Checkpoints keep their ``input.scales`` entry (a
file format, :mod:`fastrcnn_cli.model.checkpoint`).

This module is light (standard library only): the command line reads it before anything heavy is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastrcnn_cli.errors import SettingsError
from fastrcnn_cli.fields import FRACTION, PIXELS, POSITIVE_FRACTION, count, range_problems, recorded_values, setting
from fastrcnn_cli.proposal_settings import MODES, PROPOSERS

if TYPE_CHECKING:  # the checkpoint module imports torch
    from fastrcnn_cli.model.checkpoint import Checkpoint

#: the panels of ``fastrcnn detect --help``
OUTPUT, LABELS, VIDEO = "Output", "Labels out (data sets, crops)", "Video and camera"
MODEL, PROPOSALS = "Model", "Proposals"
#: the test scale and longer-side cap of a checkpoint that records none
DEFAULT_SCALE, DEFAULT_MAX_SIZE = 600, 1000
#: the per-class NMS IoU of a checkpoint that records none: the paper's (its test-time NMS, 0.3)
DEFAULT_NMS = 0.3


@dataclass(frozen=True)
class DetectSettings:
    """How the :class:`~fastrcnn_cli.detect.Detector` detects on one image (see :mod:`fastrcnn_cli.detect`)."""

    scale: tuple[int, ...] = setting(
        (DEFAULT_SCALE,),
        "Test scales: the shorter side in pixels, one backbone pass each; with several, each proposal is pooled "
        "from the scale where its area is closest to 224 x 224 pixels.",
        old_names=("scales",),
    )
    max_size: int = setting(DEFAULT_MAX_SIZE, "Longer side cap in pixels.")
    score_threshold: float = setting(
        0.5, "Keep detections scoring at least this (evaluation uses the floor EVAL_SCORE_THRESHOLD)."
    )
    nms: float = setting(DEFAULT_NMS, "Per-class NMS IoU threshold (1 keeps all but exact duplicates).")
    max_detections: int = setting(100, "Detections kept per image, over all classes.")
    classes: tuple[str, ...] | None = setting(None, "Keep only these class names (None: all).")
    dedup: bool = setting(True, "Pool proposals that round to the same feature cells once (DEDUP_BOXES).")

    def __post_init__(self) -> None:
        problems = []  # (field, message): the command line names its own flag for each field
        if not self.scale or any(int(s) < 32 for s in self.scale):
            shown = ", ".join(str(s) for s in self.scale) or "none"
            problems.append(("scale", f"must be at least 32 pixels (got {shown})"))
        if self.max_size < 32:
            problems.append(("max_size", f"must be at least 32 pixels (got {self.max_size})"))
        if not 0.0 <= self.score_threshold <= 1.0:  # also refuses NaN
            problems.append(("score_threshold", f"must be in [0, 1] (got {self.score_threshold:g})"))
        if not 0.0 < self.nms <= 1.0:
            problems.append(("nms", f"must be in (0, 1] (got {self.nms:g}; 1 keeps everything but exact duplicates)"))
        if self.max_detections < 1:
            problems.append(("max_detections", f"must be at least 1 (got {self.max_detections})"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])

    @classmethod
    def for_checkpoint(
        cls, meta: Checkpoint, scale: tuple[int, ...] | list[int] | None = None, max_size: int | None = None,
        nms: float | None = None, **kw: Any,
    ) -> DetectSettings:
        """Settings for a checkpoint's model: the test scale is the checkpoint's first training scale (the one
        ``train``'s periodic evaluation uses), its ``max_size`` and its NMS IoU (:data:`DEFAULT_NMS` when it
        records none), unless given."""
        meta_scales = tuple(meta.scales) or (DEFAULT_SCALE,)
        if nms is None:
            nms = meta.nms if meta.nms is not None else DEFAULT_NMS
        return cls(
            scale=tuple(int(s) for s in scale) if scale else (int(meta_scales[0]),),
            max_size=int(max_size) if max_size is not None else int(meta.max_size or DEFAULT_MAX_SIZE),
            nms=float(nms),
            **kw,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "scale": list(self.scale),
            "max_size": self.max_size,
            "score_threshold": self.score_threshold,
            "nms": self.nms,
            "max_detections": self.max_detections,
            "classes": None if self.classes is None else list(self.classes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectSettings:
        """Settings as a document records them (:meth:`to_dict`; ``fastrcnn detect``'s JSON, a detections file's
        meta): renamed fields read under their new names (``scales``), lists become tuples, unknown keys (the
        proposal settings beside them) are ignored."""
        return cls(**recorded_values(cls, data))


def _path(value: str | os.PathLike | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class DetectRunSettings:
    """What ``fastrcnn detect`` is asked to do, by field; :func:`fastrcnn_cli.detect_run.run_detect` does it.

    Fields left ``None`` take the model's values (scale, max size, proposal settings) or are not written (the
    outputs). Path fields take strings too."""

    sources: tuple[str, ...] = setting(
        (),
        "Images and videos (.mp4 .avi .mov .mkv .webm .m4v): files, folders (their images and videos) or glob "
        "patterns (quoted or not); or a camera index (0), alone. URLs are refused: download the file first.",
    )
    example: bool = setting(
        False, "Also detect on the example image shipped with fastrcnn (shapes-1.jpg), from any folder.",
        negatable=False,
    )
    # what is written
    out: Path | None = setting(
        None,
        "Annotated image or video: a file for one image (vis.png) or one video (out.mp4), else a folder (created). "
        "Without it none is written.",
        panel=OUTPUT, aliases=("-o",), path=True,
    )
    save_json: Path | None = setting(
        None, "Write the JSON document (detections per image and per video frame, COCO list) here.", panel=OUTPUT,
        path=True,
    )
    save_coco: Path | None = setting(
        None, "Write only the COCO-style results list here (still images).", panel=OUTPUT, path=True
    )
    coco_gt: Path | None = setting(
        None,
        "A COCO ground-truth JSON: the results' image_id and category_id are its ids (images matched by file name, "
        "classes by name), so they evaluate against it. Default: numeric file stems, else 1, 2, ...",
        panel=OUTPUT, path=True,
    )
    save_voc: Path | None = setting(
        None,
        "Write a PASCAL VOC data set of the detections here (a new folder): JPEGImages/, Annotations/ (one XML per "
        "image), ImageSets/Main/<split>.txt, classes.txt; `fastrcnn validate` and `train` read it.",
        panel=LABELS, path=True,
    )
    save_txt: Path | None = setting(
        None,
        "Write a YOLO data set here (a new folder): images/, labels/<id>.txt (class cx cy w h, normalised), "
        "<split>.txt, classes.txt.",
        panel=LABELS, path=True,
    )
    save_conf: bool = setting(
        False, "End each --save-txt line with the score (as Ultralytics writes it).", panel=LABELS, negatable=False
    )
    save_crops: Path | None = setting(
        None, "Write one crop per detection here (a new folder): <class>/<image>_<n>.jpg.", panel=LABELS, path=True
    )
    split: str = setting("detect", "The split written by --save-voc and --save-txt (its list file's name).",
                         panel=LABELS, aliases=("-s",))
    vid_stride: int = setting(
        1, "Process every N-th frame of a video (the annotated video then plays at fps / N).", panel=VIDEO,
        interval=count(1, 100_000),
    )
    # the model and its thresholds
    weights: Path | None = setting(
        None, "A fastrcnn checkpoint or an exported .onnx (default: the model shipped in weights/).", path=True
    )
    score_threshold: float = setting(0.5, "Score threshold (the paper's demo used 0.8).", panel=MODEL,
                                     interval=FRACTION)
    nms: float | None = setting(
        None, "Per-class NMS IoU threshold, 1 keeps all but exact duplicates (default: the model's, which its "
        f"training recipe chose on validation data; {DEFAULT_NMS}, the paper's, for models that record none).",
        panel=MODEL, interval=POSITIVE_FRACTION,
    )
    max_detections: int = setting(100, "Detections kept per image, over all classes.", panel=MODEL,
                                  interval=count(1, 100_000))
    classes: tuple[str, ...] | None = setting(
        None, "Keep only these classes: comma-separated, or a file with one per line.", panel=MODEL
    )
    scale: tuple[int, ...] | None = setting(
        None, "Shorter side in pixels; several: multi-scale testing (default: the checkpoint's training scale).",
        panel=MODEL, interval=PIXELS,
    )
    max_size: int | None = setting(None, "Longer side cap (default: the checkpoint's).", panel=MODEL,
                                   interval=PIXELS)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N (auto: CUDA when present).")
    # proposals
    proposals: Path | None = setting(
        None,
        "Use these proposals instead of Selective Search: a .mat ('boxes', x1 y1 x2 y2, 0-based, as the original's "
        "demo files) or .npy file for one image; a proposal cache folder of `fastrcnn propose` (images found by "
        "file stem = image id); or a folder of <stem>_boxes.mat / <stem>.mat / <stem>.npy files.",
        panel=PROPOSALS, path=True,
    )
    proposal_mode: str | None = setting(None, "Selective Search mode (default: the model's).", panel=PROPOSALS,
                                        choices=MODES)
    proposal_max_side: int | None = setting(
        None, "Selective Search's longer side (default: the model's).", panel=PROPOSALS, interval=count(16, 100_000)
    )
    proposal_top: int | None = setting(None, "Proposals kept per image (default: the model's).", panel=PROPOSALS,
                                       interval=count(1, 100_000))
    proposal_min_size: int | None = setting(
        None, "Drop proposals narrower or shorter than this (default: the model's).", panel=PROPOSALS,
        interval=count(0, 100_000),
    )
    proposer: str | None = setting(None, "Whose Selective Search: opencv or native (default: the model's).",
                                   panel=PROPOSALS, choices=PROPOSERS)
    proposal_cache: Path | None = setting(
        None, "Read each image's proposals from this `fastrcnn propose` cache (as proposals).", panel=PROPOSALS,
        path=True,
    )

    def __post_init__(self) -> None:
        sources = self.sources
        if isinstance(sources, (str, os.PathLike)):  # one source given alone, not its characters
            sources = (sources,)
        object.__setattr__(self, "sources", tuple(str(s) for s in sources))
        for name in ("out", "save_json", "save_coco", "coco_gt", "save_voc", "save_txt", "save_crops", "weights",
                     "proposals", "proposal_cache"):
            object.__setattr__(self, name, _path(getattr(self, name)))
        for name in ("classes", "scale"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        problems = range_problems(self)
        if not self.sources and not self.example:
            problems.append(("sources", "give at least one image, video, folder, glob or camera index (or example)"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])

    @property
    def proposal_overrides(self) -> dict[str, Any]:
        """The Selective Search settings given, to lay over the model's recorded ones
        (:class:`~fastrcnn_cli.pipeline.ProposalOverrides`' fields)."""
        return {"mode": self.proposal_mode, "max_side": self.proposal_max_side, "top": self.proposal_top,
                "min_size": self.proposal_min_size, "proposer": self.proposer}

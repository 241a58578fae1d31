"""``fastrcnn detect``'s work: detections on images, videos and a camera, drawn, as JSON and as data set labels.

:func:`run_detect` takes :class:`~fastrcnn_cli.detect_settings.DetectRunSettings` and returns a :class:`DetectRun`
(:meth:`DetectRun.to_dict` is the JSON document of :mod:`fastrcnn_cli.results`); the command line
(:mod:`fastrcnn_cli.cli.detect`) parses the options into the settings, prints the document with ``--json`` and
the summary line, and maps a stopped or partly failed run to its exit code. The same call works from Python::

    from fastrcnn_cli.detect_run import run_detect
    from fastrcnn_cli.detect_settings import DetectRunSettings

    run = run_detect(DetectRunSettings(sources=("photos/",), out="out/", score_threshold=0.8))
    for image in run.images:
        print(image.file, image.detections)

The order of the work:

1. :func:`plan_detect`, everything that can fail without the model, so that a typo fails in the first second and
   never after the model loaded: the sources expanded (:func:`~fastrcnn_cli.results.expand_sources`), the
   annotated images and videos named (:func:`~fastrcnn_cli.results.plan_outputs`), the proposal file, folder or
   cache checked, every output checked (writable, not an input, not another output; labels folders new or empty),
   the COCO ground truth's image ids read, every video probed (its first frame decodes).
2. The camera opened, :func:`fastrcnn_cli.pipeline.load_detector` (the checkpoint's test scale and proposal
   settings, what the settings give laid over them).
3. The images, then the videos, then the camera, each image or frame through :meth:`Detector.detect
   <fastrcnn_cli.detect.Detector.detect>`, drawn (:func:`~fastrcnn_cli.visualize.draw_detections`), added to the
   labels outputs (:mod:`fastrcnn_cli.labels_out`) and reported by a progress line (:mod:`fastrcnn_cli.progress`).
   An image that cannot be read is reported and skipped (:attr:`ImageOutcome.error`); Ctrl-C stops the loop and
   what was done is kept (:attr:`DetectRun.stopped`).
4. The labels folders moved into place, the JSON document and the COCO list written (atomically).

Errors name settings fields (``save_json``, ``proposal_cache``); those about where a file goes are
:class:`FieldInputError`, which the command line renders with its flags.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fastrcnn_cli import pipeline, progress
from fastrcnn_cli.data.convert import check_destination
from fastrcnn_cli.detect import DetectSettings, Detector, load_image_proposals
from fastrcnn_cli.detect_settings import DetectRunSettings
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.devices import describe_device
from fastrcnn_cli.errors import ExitCode, InputError, SettingsError
from fastrcnn_cli.io import atomic_write_json, read_image, write_image
from fastrcnn_cli.labels_out import LabelsOut, LabelsOutSettings, WrittenLabels
from fastrcnn_cli.model.checkpoint import default_weights_path
from fastrcnn_cli.outputs import check_output_file, check_output_folder, probe_writable, same_file
from fastrcnn_cli.proposal_settings import ProposalSettings
from fastrcnn_cli.results import (
    FrameOutcome,
    ImageOutcome,
    Sources,
    VideoOutcome,
    build_document,
    coco_category_ids,
    coco_ground_truth_images,
    expand_sources,
    plan_outputs,
    plan_video_outputs,
)
from fastrcnn_cli.shipped import example_path
from fastrcnn_cli.video import AnnotatedVideoWriter, VideoReader, probe_video
from fastrcnn_cli.visualize import draw_detections

#: the run's field of each labels-out setting (:class:`~fastrcnn_cli.labels_out.LabelsOutSettings`)
LABEL_FIELDS = {"voc": "save_voc", "yolo": "save_txt", "crops": "save_crops", "scores": "save_conf", "split": "split"}
#: the stages a detection's time is split into, summed over a run (:meth:`DetectRun.stage_seconds`)
STAGES = ("proposals", "network", "postprocess")


# ---------------------------------------------------------------------------------------------------------
# errors that name fields


_FIELD = re.compile("\0([a-z_]+)\0")


def _named(name: str) -> str:
    """Where a settings field's name goes in a message (:class:`FieldInputError` puts the field, or the flag, there)."""
    return f"\0{name}\0"


class FieldInputError(SettingsError, InputError):
    """An input or output the settings name cannot be used (exit code 1); the message names settings fields, which
    :meth:`render` replaces by what the caller calls them (the command line: its flags)."""

    exit_code = ExitCode.FAILURE

    def __init__(self, template: str, path: object | None = None) -> None:
        self.template = template
        self.path = None if path is None else str(path)
        text = self.render(str)
        self.problems = [(name, text) for name in dict.fromkeys(_FIELD.findall(template))] or [("", text)]
        Exception.__init__(self, text)

    def render(self, name: Callable[[str], str]) -> str:
        text = _FIELD.sub(lambda m: name(m.group(1)), self.template)
        return f"{self.path}: {text}" if self.path else text


@contextmanager
def _fields_named() -> Iterator[None]:
    """An :class:`InputError` whose message holds :func:`_named` fields (from :mod:`fastrcnn_cli.outputs`, which
    says what it is given) becomes a :class:`FieldInputError`."""
    try:
        yield
    except InputError as exc:
        message = str(exc)
        if "\0" not in message or isinstance(exc, FieldInputError):
            raise
        if exc.path is not None and message.startswith(f"{exc.path}: "):
            message = message[len(exc.path) + 2 :]
        raise FieldInputError(message, exc.path) from None


# ---------------------------------------------------------------------------------------------------------
# the plan: everything checked before the model loads


@dataclass(frozen=True)
class DetectPlan:
    """What a run will read and write, checked (:func:`plan_detect`)."""

    sources: Sources
    image_outputs: list[Path | None]  #: the annotated image of each of ``sources.images`` (None: not drawn)
    video_outputs: list[Path | None]  #: the annotated video of each video, then the camera's
    proposals: Path | None  #: a proposal file, folder or cache for the images (None: Selective Search)
    labels: LabelsOutSettings
    coco_image_ids: dict[Path, int] | None  #: the COCO ground truth's id of each image (``coco_gt``)


def plan_detect(settings: DetectRunSettings) -> DetectPlan:
    """Expand the sources, name the outputs and check every input and output, without loading the model.

    Raises :class:`~fastrcnn_cli.errors.InputError` (a source naming nothing, an undecodable video, a proposal
    file for several images, ...), :class:`FieldInputError` (an output over an input or another output, an
    unwritable folder) or :class:`~fastrcnn_cli.errors.SettingsError` (the labels settings)."""
    s = settings
    sources = list(s.sources) + ([str(example_path())] if s.example else [])
    srcs = expand_sources(sources)
    image_outputs = plan_outputs(srcs, s.out)
    video_outputs = plan_video_outputs(srcs, s.out, image_outputs)
    proposals = _proposal_source(s, srcs)
    try:
        labels = LabelsOutSettings(voc=s.save_voc, yolo=s.save_txt, crops=s.save_crops, split=s.split,
                                   scores=s.save_conf)
    except SettingsError as exc:  # named by the run's fields
        problems = [(LABEL_FIELDS.get(f, f), m) for f, m in exc.problems]
        raise SettingsError(*problems[0], *problems[1:]) from None
    with _fields_named():
        _check_outputs(s, srcs, [*image_outputs, *video_outputs], proposals, labels)
    coco_image_ids = None
    if s.coco_gt is not None:
        if not srcs.images:
            raise InputError("a COCO ground truth names still images, and no image is given (video frames have no "
                             "entry there)", s.coco_gt)
        coco_image_ids = coco_ground_truth_images(s.coco_gt, srcs.images)
    _probe_videos(srcs.videos)
    return DetectPlan(srcs, image_outputs, video_outputs, proposals, labels, coco_image_ids)


def _proposal_source(s: DetectRunSettings, srcs: Sources) -> Path | None:
    """The proposal file, folder or cache (``proposals`` or ``proposal_cache``) when it fits the sources."""
    proposals = s.proposals
    if s.proposal_cache is not None:  # a `fastrcnn propose` cache: its entries, by image id (the file stem)
        if proposals is not None:
            raise FieldInputError(f"{_named('proposals')} and {_named('proposal_cache')} both say where the "
                                  "proposals are; give one")
        proposals = s.proposal_cache
    if proposals is None:
        return None
    if srcs.videos or srcs.camera is not None:
        raise FieldInputError(
            "proposal files and caches are per image; video and camera frames get Selective Search: give the "
            f"videos without {_named('proposals')} / {_named('proposal_cache')}",
            proposals,
        )
    if not proposals.exists():
        raise InputError("no such proposal file or folder", proposals)
    if proposals.is_file() and len(srcs.images) != 1:
        raise InputError(
            f"a single proposal file fits one image, but {len(srcs.images)} were given; give a proposal cache "
            "folder or a folder of per-image files (<stem>_boxes.mat, <stem>.mat or <stem>.npy)",
            proposals,
        )
    return proposals


def _check_outputs(
    s: DetectRunSettings, srcs: Sources, drawn_outputs: list[Path | None], proposals: Path | None,
    labels: LabelsOutSettings,
) -> None:
    """No output overwrites an input (images, videos, weights, proposals, a ground truth) or another output, every
    output folder accepts files, and each labels folder is new or empty."""
    others = (s.weights, proposals, s.coco_gt)
    inputs = [*srcs.images, *srcs.videos, *(o for o in others if o is not None), default_weights_path()]
    drawn = [o for o in drawn_outputs if o is not None]
    for folder in dict.fromkeys(o.parent for o in drawn):
        probe_writable(folder)
    if s.save_json is not None:
        check_output_file(s.save_json, _named("save_json"), [*inputs, *drawn])
    if s.save_coco is not None:
        check_output_file(s.save_coco, _named("save_coco"), [*inputs, *drawn])
        if s.save_json is not None and same_file(s.save_json, s.save_coco):
            raise FieldInputError(f"{_named('save_coco')} and {_named('save_json')} name the same file", s.save_coco)
    folders = {LABEL_FIELDS[kind]: folder for kind, folder in labels.folders().items()}
    files = [(f, p) for f, p in (("save_json", s.save_json), ("save_coco", s.save_coco)) if p is not None]
    files += [("out", p) for p in drawn]
    for n, (name, folder) in enumerate(folders.items()):
        check_output_folder(folder, _named(name), inputs)
        check_destination(folder, [])  # new or empty: nothing in it is overwritten
        for other, other_folder in list(folders.items())[:n] + ([("out", s.out)] if s.out is not None else []):
            if same_file(folder, other_folder):
                raise FieldInputError(f"{_named(name)} and {_named(other)} name the same folder; give each its own",
                                      folder)
        inside = folder.expanduser().resolve()
        for file_field, file in files:
            if inside in Path(file).expanduser().resolve().parents:
                raise FieldInputError(f"{_named(file_field)} {file} is inside {_named(name)} {folder}, which is "
                                      "written as a whole; put it elsewhere", folder)


def _probe_videos(videos: list[Path]) -> None:
    """Every video opens and its first frame decodes, or one error lists those that do not."""
    problems = []
    for video in videos:
        try:
            probe_video(video)
        except InputError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        raise InputError(f"{len(problems)} videos cannot be read:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class DetectRun:
    """What :func:`run_detect` did: every image's and video's outcome, the outputs written, the settings used."""

    settings: DetectRunSettings
    sources: Sources
    weights: Path  #: the weights file that ran
    classes: tuple[str, ...]  #: the model's classes (labels index them)
    device: str
    runtime: str | None  #: the runtime when it is not PyTorch ("ONNX Runtime")
    detect_settings: DetectSettings  #: the test scale, thresholds and class filter used
    proposal_settings: ProposalSettings | None  #: how Selective Search ran (None: proposals from ``proposals``)
    proposal_source: Path | None  #: the proposal file, folder or cache the images' proposals came from
    images: list[ImageOutcome]  #: one per input image, in order (failed ones with ``error``)
    videos: list[VideoOutcome]  #: one per video, then the camera
    labels: list[WrittenLabels]  #: the labels outputs written (VOC, YOLO, crops)
    files: list[Path]  #: the JSON document and COCO list written
    load_s: float  #: seconds from the call to the loaded model (checks included)
    stopped: bool = False  #: Ctrl-C stopped the work; what was done before is kept and written
    coco_image_ids: dict[Path, int] | None = None
    category_ids: tuple[int, ...] | None = None  #: each class's COCO category id (``coco_gt``; else k + 1)

    @property
    def done(self) -> list[ImageOutcome]:
        return [o for o in self.images if o.error is None]

    @property
    def failed(self) -> list[ImageOutcome]:
        """The images that could not be read or processed (each named with the reason in ``error``)."""
        return [o for o in self.images if o.error is not None]

    @property
    def frames(self) -> list[FrameOutcome]:
        return [f for v in self.videos for f in v.frames]

    @property
    def num_detections(self) -> int:
        return sum(len(o.detections or ()) for o in self.done) + sum(len(f.detections) for f in self.frames)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds in each stage (:data:`STAGES`, keys ``<stage>_s``) over every image and frame."""
        times = [o.times or {} for o in self.done] + [f.times or {} for f in self.frames]
        return {f"{k}_s": sum(t.get(f"{k}_s", 0.0) for t in times) for k in STAGES}

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of :mod:`fastrcnn_cli.results` (what ``--json`` prints and ``save_json`` holds)."""
        return build_document(
            self.images,
            self.classes,
            weights=self.weights,
            settings={
                **self.detect_settings.to_dict(),
                "proposals": None if self.proposal_settings is None else self.proposal_settings.to_dict(),
                "proposal_source": None if self.proposal_source is None else str(self.proposal_source),
            },
            device=self.device,
            videos=self.videos,
            image_ids=self.coco_image_ids,
            category_ids=self.category_ids,
        )


def run_detect(settings: DetectRunSettings) -> DetectRun:
    """Detect on every source and write every output asked for; see the module docstring.

    Returns when the work is done or Ctrl-C stopped it (``stopped``); images that could not be processed are in
    :attr:`DetectRun.failed`. Errors before the work (:func:`plan_detect`, the model) leave nothing written."""
    s = settings
    t_start = time.perf_counter()
    plan = plan_detect(s)
    srcs = plan.sources
    camera = VideoReader.open_camera(srcs.camera) if srcs.camera is not None else None
    try:
        loaded = pipeline.load_detector(  # through the module: tests stand in for the loading
            s.weights, s.device, scale=s.scale, max_size=s.max_size, score_threshold=s.score_threshold, nms=s.nms,
            max_detections=s.max_detections, classes=s.classes,
            proposals=pipeline.ProposalOverrides(**s.proposal_overrides),
        )  # fmt: skip
        detect_settings, classes = loaded.detect_settings, loaded.classes
        proposal_settings = loaded.proposal_settings if plan.proposals is None else None
        load_s = time.perf_counter() - t_start
        progress.info(
            f"model {loaded.weights_path} ({len(classes)} classes: {', '.join(classes)}) on "
            f"{describe_device(loaded.device)}" + (f" with {loaded.runtime}, " if loaded.runtime else ", ")
            + f"loaded in {load_s:.2f} s; scale {'/'.join(str(x) for x in detect_settings.scale)}, max size "
            f"{detect_settings.max_size}, conf {detect_settings.score_threshold:g}, NMS {detect_settings.nms:g}; "
            "proposals: " + (f"from {plan.proposals}" if proposal_settings is None
                             else f"Selective Search ({proposal_settings.describe()})")
        )
        category_ids = _category_ids(s, detect_settings, classes)
        labels = LabelsOut(plan.labels, classes)
        images: list[ImageOutcome] = []
        videos: list[VideoOutcome] = []
        try:
            stopped = _process(loaded.detector, plan, camera, s.vid_stride, classes, labels, images, videos)
        except BaseException:
            labels.abort()
            raise
    finally:
        if camera is not None:
            camera.close()
    written = labels.finish()
    run = DetectRun(
        settings=s, sources=srcs, weights=loaded.weights_path, classes=classes, device=str(loaded.device),
        runtime=loaded.runtime, detect_settings=detect_settings, proposal_settings=proposal_settings,
        proposal_source=plan.proposals, images=images, videos=videos, labels=written,
        files=[p for p in (s.save_json, s.save_coco) if p is not None], load_s=load_s,
        stopped=stopped, coco_image_ids=plan.coco_image_ids, category_ids=category_ids,
    )  # fmt: skip
    document = run.to_dict()
    for target, payload in ((s.save_json, document), (s.save_coco, document["coco"])):
        if target is not None:
            try:
                atomic_write_json(target, payload)
            except OSError as exc:
                raise InputError(f"cannot write ({exc.strerror or exc})", target) from None
            progress.info(f"wrote {target}")
    for item in written:
        progress.info(f"wrote {item.describe()}")
    return run


def _category_ids(s: DetectRunSettings, detect: DetectSettings, classes: Sequence[str]) -> tuple[int, ...] | None:
    """The COCO ground truth's category id of each class of the model (0 for those ``classes`` leaves out)."""
    if s.coco_gt is None:
        return None
    ids = coco_category_ids(s.coco_gt, detect.classes or classes)
    if not detect.classes:
        return ids
    by_name = dict(zip(detect.classes, ids))  # only those are detected; the others need no category
    return tuple(by_name.get(c, 0) for c in classes)


def _process(
    detector: Detector,
    plan: DetectPlan,
    camera: VideoReader | None,
    stride: int,
    classes: Sequence[str],
    labels: LabelsOut,
    images: list[ImageOutcome],
    videos: list[VideoOutcome],
) -> bool:
    """The images, then the videos, then the camera, into ``images`` and ``videos`` (so that what was done before
    a Ctrl-C is kept); True when Ctrl-C stopped it."""
    srcs = plan.sources
    try:
        _detect_images(detector, srcs.images, plan.image_outputs, plan.proposals, classes, labels, images)
        readers = [(lambda v=v: VideoReader.open_file(v)) for v in srcs.videos]
        if camera is not None:
            readers.append(lambda: camera)
        for open_reader, output in zip(readers, plan.video_outputs):
            with open_reader() as reader:
                _detect_video(detector, reader, output, stride, classes, labels, videos)
    except KeyboardInterrupt:
        progress.info("stopped (Ctrl-C): writing what was done")
        return True
    return False


def _read(path: Path) -> np.ndarray:
    """The image, or an :class:`InputError` naming it for anything that stops it being read or converted,
    so that one odd file is skipped instead of ending the whole batch."""
    try:
        return read_image(path)
    except InputError:
        raise
    except (cv2.error, ValueError, TypeError, OverflowError, MemoryError, OSError) as exc:
        raise InputError(f"cannot be read or converted ({type(exc).__name__}: {exc})", path) from None


def _times(result: Any) -> dict[str, float]:
    t = result.times
    return {"proposals_s": t.proposals, "network_s": t.network, "postprocess_s": t.postprocess, "total_s": t.total}


def _detect_images(
    detector: Detector,
    paths: list[Path],
    outputs: list[Path | None],
    proposals: Path | None,
    classes: Sequence[str],
    labels: LabelsOut,
    images: list[ImageOutcome],
) -> None:
    """Detect, draw, write the labels of and report each image, into ``images``; an unusable image is reported
    and skipped."""
    width = len(str(len(paths)))
    for n, (path, output) in enumerate(zip(paths, outputs), start=1):
        prefix = f"[{n:>{width}}/{len(paths)}] {path}"
        try:
            image = _read(path)
            boxes = None
            t_props = 0.0
            if proposals is not None:
                t = time.perf_counter()
                boxes = load_image_proposals(proposals, path, (int(image.shape[1]), int(image.shape[0])))
                t_props = time.perf_counter() - t
            result = detector.detect(image, boxes, image_id=str(path))
            if boxes is not None:
                result.times.proposals = t_props
            det = result.detections
            if output is not None:
                drawn = draw_detections(image, det.boxes, det.scores, det.labels, classes)
                try:
                    write_image(output, drawn)
                except OSError as exc:
                    raise InputError(f"cannot write the annotated image ({exc.strerror or exc})", output) from None
        except InputError as exc:
            message = str(exc)
            if exc.path is not None and Path(exc.path) == path:  # the file is named already
                message = message[len(exc.path) + 2 :]
            images.append(ImageOutcome(file=path, error=message))
            progress.info(f"{prefix}: skipped: {message}")
            continue
        if labels.active:
            labels.add(path.stem, det, image, source=path)
        images.append(ImageOutcome(path, output, det, result.image_size, result.num_proposals, _times(result)))
        t = result.times
        progress.info(
            f"{prefix} {result.image_size[0]}x{result.image_size[1]}: {_describe(det, classes)} | "
            f"{result.num_proposals} proposals {t.proposals:.2f} s, network {t.network:.2f} s, "
            f"post {t.postprocess * 1000:.1f} ms" + (f" -> {output}" if output is not None else "")
        )


def _detect_video(
    detector: Detector,
    reader: VideoReader,
    output: Path | None,
    stride: int,
    classes: Sequence[str],
    labels: LabelsOut,
    videos: list[VideoOutcome],
) -> None:
    """Detect on every ``stride``-th frame of ``reader``, write the annotated video and the frames' labels, and
    report each frame; the outcome goes into ``videos`` at once and grows frame by frame."""
    info = reader.info
    outcome = VideoOutcome(reader.name, output, info, stride, complete=False)
    videos.append(outcome)
    total = info.frames_at(stride)
    width = len(str(total)) if total else 1
    stem = Path(reader.name).stem if not reader.live else reader.name.replace(" ", "")
    writer = AnnotatedVideoWriter(output, info.fps / stride, (info.width, info.height)) if output is not None else None
    with writer or nullcontext():
        for n, frame in enumerate(reader.frames(stride), start=1):
            result = detector.detect(frame.image, None, image_id=f"{reader.name}#{frame.index}")
            det = result.detections
            if writer is not None:
                writer.write(draw_detections(frame.image, det.boxes, det.scores, det.labels, classes))
            if labels.active:
                labels.add(f"{stem}_{frame.index:06d}", det, frame.image)
            outcome.frames.append(FrameOutcome(frame.index, frame.time_s, det, result.num_proposals, _times(result)))
            t = result.times
            progress.info(
                f"[{n:>{width}}/{total or '?'}] {reader.name} frame {frame.index} ({frame.time_s:.2f} s): "
                f"{_describe(det, classes)} | {result.num_proposals} proposals {t.proposals:.2f} s, "
                f"network {t.network:.2f} s, post {t.postprocess * 1000:.1f} ms"
            )
        outcome.complete = True
    if output is not None:
        progress.info(f"{reader.name}: {len(outcome.frames)} frame(s) at {info.fps / stride:g} fps -> {output}")


def _describe(det: Detections, classes: Sequence[str]) -> str:
    """'3 detections: 2 dog (best 0.97), 1 person (0.81)'."""
    if len(det) == 0:
        return "no detections"
    parts = []
    for label in dict.fromkeys(det.labels[np.argsort(-det.scores, kind="stable")].tolist()):
        mask = det.labels == label
        parts.append(f"{int(mask.sum())} {classes[label]} ({float(det.scores[mask].max()):.2f})")
    shown = ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")
    return f"{len(det)} detection{'s' if len(det) != 1 else ''}: {shown}"

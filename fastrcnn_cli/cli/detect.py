"""``fastrcnn detect``: detections on images, videos and a camera, drawn, as JSON, and as data set labels
(formats: :mod:`fastrcnn_cli.results`, :mod:`fastrcnn_cli.video`, :mod:`fastrcnn_cli.labels_out`).

Start-up: only Typer and the package's light modules are imported here; Rich's console, NumPy, OpenCV and
torch are imported inside the command (``fastrcnn --help`` does not pay for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, WeightsOption, command, examples
from fastrcnn_cli.cli.options import (
    PROPOSALS_PANEL,
    ProposalCacheOption,
    ProposalMaxSideOption,
    ProposalMinSizeOption,
    ProposalModeOption,
    ProposalTopOption,
    ProposerOption,
    ThreadsOption,
    split_option,
)
from fastrcnn_cli.errors import FastRCNNError, InputError, OutputError

if TYPE_CHECKING:  # pragma: no cover
    from fastrcnn_cli.detect import Detector
    from fastrcnn_cli.detections import Detections
    from fastrcnn_cli.labels_out import LabelsOut, LabelsOutSettings
    from fastrcnn_cli.results import ImageOutcome, Sources, VideoOutcome
    from fastrcnn_cli.video import VideoReader

_OUT, _MODEL, _VIDEO, _LABELS = "Output", "Model and thresholds", "Video and camera", "Labels out (data sets, crops)"
#: the flag of each labels-out setting (errors of LabelsOutSettings name the field)
_LABEL_FLAGS = {"voc": "--save-voc", "yolo": "--save-txt", "crops": "--save-crops", "scores": "--save-conf"}


@command(
    "detect",
    flags={"score_threshold": "--conf", "max_detections": "--max-det", "scales": "--scale", **_LABEL_FLAGS},
    epilog=examples(
        "fastrcnn detect img.jpg --out vis.png",
        "fastrcnn detect --example --out vis.png   [dim]# the shipped model on the shipped example image[/dim]",
        "fastrcnn detect photos/ --out out/ --save-json dets.json",
        "fastrcnn detect 'photos/**/*.jpg' --out out/ --conf 0.8 --classes dog,cat",
        "fastrcnn detect clip.mp4 --out out.mp4 --vid-stride 2 --save-json frames.json   [dim]# every 2nd frame[/dim]",
        "fastrcnn detect 0 --out cam.mp4   [dim]# camera 0, until Ctrl-C[/dim]",
        "fastrcnn detect photos/ --save-voc new_labels/ --conf 0.8   [dim]# a VOC data set to correct and train on[/dim]",
        "fastrcnn detect photos/ --save-txt yolo_labels/ --save-crops crops/",
        "fastrcnn detect val2017/ --save-coco results.json --coco-gt instances_val2017.json",
        "fastrcnn detect img.jpg --json --weights runs/train/best.pt --scale 480 --scale 600 --scale 800",
        "fastrcnn detect 000004.jpg --proposals 000004_boxes.mat --out vis.png   [dim]# the original's demo boxes[/dim]",
        "fastrcnn detect img.jpg --weights model.onnx --out vis.png   [dim]# ONNX Runtime (fastrcnn export)[/dim]",
    ),
)
def detect(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Images and videos (.mp4 .avi .mov .mkv .webm .m4v): files, folders (their images and videos) or "
            "glob patterns (quoted or not); or a camera index (0), alone. URLs are refused: download the file first.",
            show_default=False,
        ),
    ] = None,
    example: Annotated[
        bool,
        typer.Option("--example", help="Also detect on the example image shipped with fastrcnn (shapes-1.jpg), from any folder."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o",
            help="Annotated image or video: a file for one image (vis.png) or one video (out.mp4), else a folder "
            "(created). Without it none is written.",
            rich_help_panel=_OUT,
        ),
    ] = None,
    json_: JsonOption = False,
    save_json: Annotated[
        Path | None, typer.Option("--save-json", help="Write the JSON document (detections per image and per video frame, COCO list) here.", rich_help_panel=_OUT)
    ] = None,
    save_coco: Annotated[
        Path | None, typer.Option("--save-coco", help="Write only the COCO-style results list here (still images).", rich_help_panel=_OUT)
    ] = None,
    coco_gt: Annotated[
        Path | None,
        typer.Option(
            "--coco-gt",
            help="A COCO ground-truth JSON: the results' image_id and category_id are its ids (images matched by "
            "file name, classes by name), so they evaluate against it. Default: numeric file stems, else 1, 2, ...",
            rich_help_panel=_OUT,
        ),
    ] = None,
    save_voc: Annotated[
        Path | None,
        typer.Option(
            "--save-voc",
            help="Write a PASCAL VOC data set of the detections here (a new folder): JPEGImages/, Annotations/ "
            "(one XML per image), ImageSets/Main/<split>.txt, classes.txt; `fastrcnn validate` and `train` read it.",
            rich_help_panel=_LABELS,
        ),
    ] = None,
    save_txt: Annotated[
        Path | None,
        typer.Option(
            "--save-txt",
            help="Write a YOLO data set here (a new folder): images/, labels/<id>.txt (class cx cy w h, normalised), "
            "<split>.txt, classes.txt.",
            rich_help_panel=_LABELS,
        ),
    ] = None,
    save_conf: Annotated[
        bool, typer.Option("--save-conf", help="End each --save-txt line with the score (as Ultralytics writes it).", rich_help_panel=_LABELS)
    ] = False,
    save_crops: Annotated[
        Path | None,
        typer.Option("--save-crops", help="Write one crop per detection here (a new folder): <class>/<image>_<n>.jpg.", rich_help_panel=_LABELS),
    ] = None,
    split: Annotated[str, split_option("The split written by --save-voc and --save-txt (its list file's name).")] = "detect",
    vid_stride: Annotated[
        int,
        typer.Option(
            "--vid-stride",
            parser=ranges.count(1, 100_000),
            help="Process every N-th frame of a video (the annotated video then plays at fps / N).",
            rich_help_panel=_VIDEO,
        ),
    ] = 1,
    weights: WeightsOption = None,
    conf: Annotated[
        float, typer.Option("--conf", parser=ranges.FRACTION, help="Score threshold (the paper's demo used 0.8).", rich_help_panel=_MODEL)
    ] = 0.5,
    nms: Annotated[float, typer.Option("--nms", parser=ranges.POSITIVE_FRACTION, help="Per-class NMS IoU threshold (1 keeps all but exact duplicates).", rich_help_panel=_MODEL)] = 0.3,
    max_det: Annotated[int, typer.Option("--max-det", parser=ranges.count(1, 100_000), help="Detections kept per image, over all classes.", rich_help_panel=_MODEL)] = 100,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Keep only these classes: comma-separated, or a file with one per line.", rich_help_panel=_MODEL),
    ] = None,
    scale: Annotated[
        list[int] | None,
        typer.Option(
            "--scale",
            parser=ranges.PIXELS,
            help="Shorter side in pixels; repeat for multi-scale testing (default: the checkpoint's training scale).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    max_size: Annotated[
        int | None, typer.Option("--max-size", parser=ranges.PIXELS, help="Longer side cap (default: the checkpoint's).", rich_help_panel=_MODEL)
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    proposals: Annotated[
        Path | None,
        typer.Option(
            "--proposals",
            help="Use these proposals instead of Selective Search: a .mat ('boxes', x1 y1 x2 y2, 0-based, as the "
            "original's demo files) or .npy file for one image; a proposal cache folder of `fastrcnn propose` "
            "(images found by file stem = image id); or a folder of <stem>_boxes.mat / <stem>.mat / <stem>.npy files.",
            rich_help_panel=PROPOSALS_PANEL,
        ),
    ] = None,
    proposal_mode: ProposalModeOption = None,
    proposal_max_side: ProposalMaxSideOption = None,
    proposal_top: ProposalTopOption = None,
    proposal_min_size: ProposalMinSizeOption = None,
    proposer: ProposerOption = None,
    proposal_cache: ProposalCacheOption = None,
) -> None:
    """Detect objects in images and videos with a trained Fast R-CNN model (default: the model shipped in weights/).

    Per image (or video frame): Selective Search proposals (with the checkpoint's settings), one network pass at
    the test scale, class-specific box regression, clipping, per-class NMS, the score threshold and the best
    --max-det. A line per image or frame on stderr gives the count and the time of each stage (proposals,
    network, post-processing). Results go to stdout with --json; boxes are x1,y1,x2,y2 in original pixels,
    0-based, inclusive (COCO bbox width = x2 - x1 + 1).

    A video is read frame by frame (every --vid-stride-th frame) and written back annotated at fps / stride,
    with its frames' detections under "videos" in the JSON. A camera index (0) reads that camera until Ctrl-C.

    --save-voc, --save-txt and --save-crops write the detections as a VOC data set, a YOLO data set and crops,
    each a new folder moved into place when complete: correct the labels, then train on them.

    The proposal options set Selective Search (default: the checkpoint's settings); --proposal-cache CACHE
    reads each image's boxes from a `fastrcnn propose` cache instead (as --proposals CACHE).

    Exit code 1 when an input cannot be used: a missing file, a video that cannot be decoded, a camera that
    does not open, a URL, or a weights file that is not a checkpoint stops before any work (before the model
    loads); an unreadable image among several is reported and skipped, the others are processed and written,
    and the exit code is still 1. Ctrl-C stops at once and writes what was done (exit code 130; 0 for a camera,
    which only Ctrl-C ends).
    """
    import time

    t_imports = time.perf_counter()  # imports are a stage of their own, not part of the first image's
    import cv2  # noqa: F401 - else imported inside the first image's proposals
    import torch

    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.devices import describe_device, resolve_device
    from fastrcnn_cli.interrupts import Interrupted
    from fastrcnn_cli.labels_out import LabelsOut, LabelsOutSettings
    from fastrcnn_cli.pipeline import ProposalOverrides, load_detector
    from fastrcnn_cli.results import (
        build_document,
        coco_category_ids,
        coco_ground_truth_images,
        expand_sources,
        plan_outputs,
        plan_video_outputs,
    )
    from fastrcnn_cli.video import VideoReader

    t_start = time.perf_counter()
    import_time = t_start - t_imports
    # everything that can be checked without the model, first
    sources = list(sources or [])
    if example:
        from fastrcnn_cli.shipped import example_path

        sources.append(str(example_path()))
    if not sources:
        raise typer.BadParameter("give at least one image, video, folder, glob or camera index (or --example)", param_hint="SOURCES")
    srcs = expand_sources(sources)
    outputs = plan_outputs(srcs, out)
    video_outputs = plan_video_outputs(srcs, out, outputs)
    if proposal_cache is not None:  # a `fastrcnn propose` cache: its entries, by image id (the file stem)
        if proposals is not None:
            raise InputError("--proposals and --proposal-cache both say where the proposals are; give one")
        proposals = proposal_cache
    if proposals is not None:
        if srcs.videos or srcs.camera is not None:
            raise InputError(
                "proposal files and caches are per image; video and camera frames get Selective Search: give the "
                "videos without --proposals / --proposal-cache",
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
    labels_settings = LabelsOutSettings(voc=save_voc, yolo=save_txt, crops=save_crops, split=split, scores=save_conf)
    _check_outputs(srcs, outputs, video_outputs, save_json, save_coco, labels_settings, out, [weights, proposals, coco_gt])
    gt_image_ids = None
    if coco_gt is not None:
        if not srcs.images:
            raise InputError("a COCO ground truth names still images, and no image is given (video frames have no "
                             "entry there)", coco_gt)
        gt_image_ids = coco_ground_truth_images(coco_gt, srcs.images)
    _probe_videos(srcs.videos)
    camera = VideoReader.open_camera(srcs.camera) if srcs.camera is not None else None
    try:
        if threads:
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        keep_classes = parse_classes_option(classes)

        loaded = load_detector(
            weights, dev, scales=scale, max_size=max_size, score_threshold=conf, nms=nms, max_detections=max_det,
            classes=keep_classes,
            proposals=ProposalOverrides(proposal_mode, proposal_max_side, proposal_top, proposal_min_size, proposer),
        )  # fmt: skip
        settings, classes_ = loaded.detect_settings, loaded.classes
        proposal_settings = loaded.proposal_settings if proposals is None else None
        load_time = time.perf_counter() - t_start
        err.print(
            f"model {loaded.weights_path} ({len(classes_)} classes: {', '.join(classes_)}) on {describe_device(dev)}"
            + (f" with {loaded.runtime}, " if loaded.runtime else ", ")
            + f"loaded in {load_time:.2f} s; scale {'/'.join(str(s) for s in settings.scales)}, max size {settings.max_size}, "
            f"conf {conf:g}, NMS {nms:g}; proposals: "
            + (f"from {proposals}" if proposal_settings is None else f"Selective Search ({proposal_settings.describe()})"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        category_ids = None
        if coco_gt is not None:
            category_ids = coco_category_ids(coco_gt, settings.classes or classes_)
            if settings.classes:  # --classes: only those are detected; the others need no category
                by_name = dict(zip(settings.classes, category_ids))
                category_ids = tuple(by_name.get(c, 0) for c in classes_)

        labels = LabelsOut(labels_settings, classes_)
        outcomes: list[ImageOutcome] = []
        videos: list[VideoOutcome] = []
        try:
            stopped = _process(loaded.detector, srcs, outputs, video_outputs, camera, proposals, vid_stride, classes_,
                               labels, outcomes, videos)  # fmt: skip
        except BaseException:
            labels.abort()
            raise
    finally:
        if camera is not None:
            camera.close()
    written = labels.finish()

    document = build_document(
        outcomes,
        classes_,
        weights=loaded.weights_path,
        settings={**settings.to_dict(), "proposals": None if proposal_settings is None else proposal_settings.to_dict(),
                  "proposal_source": None if proposals is None else str(proposals)},
        device=str(dev),
        videos=videos,
        image_ids=gt_image_ids,
        category_ids=category_ids,
    )
    from fastrcnn_cli.io import atomic_write_json

    for target, payload in ((save_json, document), (save_coco, document["coco"])):
        if target is not None:
            try:
                atomic_write_json(target, payload)
            except OSError as exc:
                raise InputError(f"cannot write ({exc.strerror or exc})", target) from None
            err.print(f"wrote {target}", markup=False, highlight=False, soft_wrap=True)
    for item in written:
        err.print(f"wrote {item.describe()}", markup=False, highlight=False, soft_wrap=True)
    if json_:
        print_json(document)

    done = [o for o in outcomes if o.error is None]
    failed = [o for o in outcomes if o.error is not None]
    frames = [f for v in videos for f in v.frames]
    stage_times = [o.times or {} for o in done] + [f.times or {} for f in frames]
    sums = {k: sum(t.get(f"{k}_s", 0.0) for t in stage_times) for k in ("proposals", "network", "postprocess")}
    n_det = sum(len(o.detections) for o in done) + sum(len(f.detections) for f in frames)
    from fastrcnn_cli import entry

    startup = None if entry.process_started is None else t_imports - entry.process_started
    total = time.perf_counter() - (t_imports if startup is None else entry.process_started)  # type: ignore[operator]
    saved = out is not None or json_ or save_json or save_coco or written
    err.print(
        f"{len(done)} image(s), "
        + (f"{len(frames)} frame(s) of {len(videos)} video(s), " if videos else "")
        + f"{n_det} detection(s) in {total:.2f} s: "
        + ("" if startup is None else f"start-up {startup:.2f} s, ")
        + f"imports {import_time:.2f} s, model load {load_time:.2f} s, "
        f"proposals {sums['proposals']:.2f} s, network {sums['network']:.2f} s, post-processing {sums['postprocess']:.3f} s"
        + (f"; annotated {'images and videos' if done and videos else 'videos' if videos else 'images'} in {out}"
           if out is not None and (done or videos) else "")
        + ("" if saved else " (nothing saved: add --out, --json, --save-json or --save-voc)"),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if stopped and srcs.camera is None:
        raise Interrupted("stopped by Ctrl-C; what was processed before is written")
    if failed:
        raise FastRCNNError(f"{len(failed)} of {len(outcomes)} image(s) could not be processed (listed above)")


def _check_outputs(
    srcs: Sources,
    outputs: list[Path | None],
    video_outputs: list[Path | None],
    save_json: Path | None,
    save_coco: Path | None,
    labels: LabelsOutSettings,
    out: Path | None,
    others: list,
) -> None:
    """Before any work: no output overwrites an input (images, videos, weights, proposals, a ground truth) or
    another output, every output folder accepts files, and each labels folder is new or empty."""
    from fastrcnn_cli.data.convert import check_destination
    from fastrcnn_cli.model.checkpoint import default_weights_path
    from fastrcnn_cli.outputs import check_output_file, check_output_folder, probe_writable, same_file

    inputs = [*srcs.images, *srcs.videos, *(o for o in others if o is not None), default_weights_path()]
    drawn = [o for o in (*outputs, *video_outputs) if o is not None]
    for folder in dict.fromkeys(o.parent for o in drawn):
        probe_writable(folder)
    if save_json is not None:
        check_output_file(save_json, "--save-json", [*inputs, *drawn])
    if save_coco is not None:
        check_output_file(save_coco, "--save-coco", [*inputs, *drawn])
        if save_json is not None and same_file(save_json, save_coco):
            raise OutputError("--save-coco and --save-json name the same file", save_coco)
    folders = {_LABEL_FLAGS[kind]: folder for kind, folder in labels.folders().items()}
    files = [(f, p) for f, p in (("--save-json", save_json), ("--save-coco", save_coco)) if p is not None]
    files += [("--out", p) for p in drawn]
    for n, (flag, folder) in enumerate(folders.items()):
        check_output_folder(folder, flag, inputs)
        check_destination(folder, [])  # new or empty: nothing in it is overwritten
        for other_flag, other in list(folders.items())[:n] + ([("--out", out)] if out is not None else []):
            if same_file(folder, other):
                raise OutputError(f"{flag} and {other_flag} name the same folder; give each its own", folder)
        inside = folder.expanduser().resolve()
        for file_flag, file in files:
            if inside in Path(file).expanduser().resolve().parents:
                raise OutputError(f"{file_flag} {file} is inside {flag} {folder}, which is written as a whole; "
                                  "put it elsewhere", folder)


def _process(
    detector: Detector,
    srcs: Sources,
    outputs: list[Path | None],
    video_outputs: list[Path | None],
    camera: VideoReader | None,
    proposals: Path | None,
    stride: int,
    classes: Sequence[str],
    labels: LabelsOut,
    outcomes: list[ImageOutcome],
    videos: list[VideoOutcome],
) -> bool:
    """The images, then the videos, then the camera, into ``outcomes`` and ``videos``; True when Ctrl-C
    stopped it (what was done before is kept)."""
    from fastrcnn_cli.console import err
    from fastrcnn_cli.video import VideoReader

    try:
        _run(detector, srcs.images, outputs, proposals, classes, labels, outcomes)
        readers = [(lambda v=v: VideoReader.open_file(v)) for v in srcs.videos]
        if camera is not None:
            readers.append(lambda: camera)
        for open_reader, output in zip(readers, video_outputs):
            with open_reader() as reader:
                _run_video(detector, reader, output, stride, classes, labels, videos)
    except KeyboardInterrupt:
        err.print("stopped (Ctrl-C): writing what was done", markup=False, highlight=False)
        return True
    return False


def _probe_videos(videos: list[Path]) -> None:
    """Every video opens and its first frame decodes, or one error lists those that do not (before the model
    loads)."""
    from fastrcnn_cli.video import probe_video

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


def _read(path: Path):
    """The image, or an :class:`InputError` naming it for anything that stops it being read or converted,
    so that one odd file is skipped instead of ending the whole batch."""
    import cv2

    from fastrcnn_cli.io import read_image

    try:
        return read_image(path)
    except InputError:
        raise
    except (cv2.error, ValueError, TypeError, OverflowError, MemoryError, OSError) as exc:
        raise InputError(f"cannot be read or converted ({type(exc).__name__}: {exc})", path) from None


def _run(
    detector: Detector,
    images: list[Path],
    outputs: list[Path | None],
    proposals: Path | None,
    classes: Sequence[str],
    labels: LabelsOut,
    outcomes: list[ImageOutcome],
) -> None:
    """Detect, draw, write the labels of and report each image, into ``outcomes`` (so that what was done before
    a Ctrl-C is kept); an unusable image is reported and skipped."""
    import time

    from rich.markup import escape

    from fastrcnn_cli.console import err
    from fastrcnn_cli.detect import load_image_proposals
    from fastrcnn_cli.io import write_image
    from fastrcnn_cli.results import ImageOutcome
    from fastrcnn_cli.visualize import draw_detections

    width = len(str(len(images)))
    for n, (path, output) in enumerate(zip(images, outputs), start=1):
        prefix = f"[{n:>{width}}/{len(images)}] {path}"
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
            outcomes.append(ImageOutcome(file=path, error=message))
            err.print(f"{escape(prefix)}: [bold red]skipped:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
            continue
        if labels.active:
            labels.add(path.stem, det, image, source=path)
        t = result.times
        times = {"proposals_s": t.proposals, "network_s": t.network, "postprocess_s": t.postprocess, "total_s": t.total}
        outcomes.append(ImageOutcome(path, output, det, result.image_size, result.num_proposals, times))
        err.print(
            f"{prefix} {result.image_size[0]}x{result.image_size[1]}: {_describe(det, classes)} | "
            f"{result.num_proposals} proposals {t.proposals:.2f} s, network {t.network:.2f} s, "
            f"post {t.postprocess * 1000:.1f} ms" + (f" -> {output}" if output is not None else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _run_video(
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
    from contextlib import nullcontext

    from fastrcnn_cli.console import err
    from fastrcnn_cli.results import FrameOutcome, VideoOutcome
    from fastrcnn_cli.video import AnnotatedVideoWriter
    from fastrcnn_cli.visualize import draw_detections

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
            t = result.times
            times = {"proposals_s": t.proposals, "network_s": t.network, "postprocess_s": t.postprocess, "total_s": t.total}
            outcome.frames.append(FrameOutcome(frame.index, frame.time_s, det, result.num_proposals, times))
            err.print(
                f"[{n:>{width}}/{total or '?'}] {reader.name} frame {frame.index} ({frame.time_s:.2f} s): "
                f"{_describe(det, classes)} | {result.num_proposals} proposals {t.proposals:.2f} s, "
                f"network {t.network:.2f} s, post {t.postprocess * 1000:.1f} ms",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        outcome.complete = True
    if output is not None:
        err.print(f"{reader.name}: {len(outcome.frames)} frame(s) at {info.fps / stride:g} fps -> {output}",
                  markup=False, highlight=False, soft_wrap=True)


def _describe(det: Detections, classes: Sequence[str]) -> str:
    """'3 detections: 2 dog (best 0.97), 1 person (0.81)'."""
    import numpy as np

    if len(det) == 0:
        return "no detections"
    parts = []
    for label in dict.fromkeys(det.labels[np.argsort(-det.scores, kind="stable")].tolist()):
        mask = det.labels == label
        parts.append(f"{int(mask.sum())} {classes[label]} ({float(det.scores[mask].max()):.2f})")
    shown = ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")
    return f"{len(det)} detection{'s' if len(det) != 1 else ''}: {shown}"

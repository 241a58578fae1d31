"""``fastrcnn detect``: detections on images, videos and a camera, drawn, as JSON, and as data set labels.

The options are generated from :class:`~fastrcnn_cli.detect_settings.DetectRunSettings`
(:mod:`fastrcnn_cli.cli.fields`), named after its fields, but for the flags users know from other tools
(``--conf``, ``--max-det``) and the options shared with other commands (:mod:`fastrcnn_cli.cli.options`). The
command calls :func:`fastrcnn_cli.detect_run.run_detect`, prints the JSON document with ``--json`` and a summary
line with the time of every stage, and turns a run stopped by Ctrl-C or with failed images into its exit code.

Start-up: only Typer and the package's light modules are imported here; Rich's console, NumPy, OpenCV and
torch are imported inside the command (``fastrcnn --help`` does not pay for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from fastrcnn_cli.cli.app import DeviceOption, JsonOption, WeightsOption, command, examples
from fastrcnn_cli.cli.fields import field_help, parser_for, settings_options
from fastrcnn_cli.cli.options import (
    PROPOSAL_FLAGS,
    PROPOSAL_OPTIONS,
    MaxSizeOption,
    NmsOption,
    ScaleOption,
    ThreadsOption,
    split_option,
)
from fastrcnn_cli.detect_settings import MODEL, DetectRunSettings
from fastrcnn_cli.errors import FastRCNNError
from fastrcnn_cli.fields import described_fields

if TYPE_CHECKING:  # pragma: no cover
    from fastrcnn_cli.detect_run import DetectRun

#: the flags that are not the fields' names (the ones users bring from other detection tools)
FLAGS = {"score_threshold": "--conf", "max_detections": "--max-det"}


def _option(name: str) -> Any:
    """The option of a field of :class:`DetectRunSettings` under its flag in :data:`FLAGS`."""
    f, setting, hint = next(d for d in described_fields(DetectRunSettings) if d[0].name == name)
    assert setting.interval is not None
    return Annotated[hint, typer.Option(FLAGS[name], help=setting.help, rich_help_panel=setting.panel,
                                        parser=parser_for(setting.interval))]


@command(
    "detect",
    flags={**PROPOSAL_FLAGS, **FLAGS},
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
@settings_options(
    DetectRunSettings,
    exclude={"sources", "classes"},
    shared={
        "split": Annotated[str, split_option(field_help(DetectRunSettings, "split"))],
        "weights": WeightsOption,
        "score_threshold": _option("score_threshold"),
        "max_detections": _option("max_detections"),
        "scale": ScaleOption,
        "max_size": MaxSizeOption,
        "nms": NmsOption,
        "device": DeviceOption,
        **PROPOSAL_OPTIONS,
    },
)
def detect(
    sources: Annotated[
        list[str] | None,
        typer.Argument(help=field_help(DetectRunSettings, "sources"), show_default=False),
    ] = None,
    classes: Annotated[
        str | None, typer.Option("--classes", help=field_help(DetectRunSettings, "classes"), rich_help_panel=MODEL)
    ] = None,
    json_: JsonOption = False,
    threads: ThreadsOption = None,
    *,
    options: dict[str, Any],
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
    import torch

    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.detect_run import run_detect  # OpenCV, NumPy: else imported inside the first image's work
    from fastrcnn_cli.interrupts import Interrupted

    import_s = time.perf_counter() - t_imports
    if not sources and not options["example"]:
        raise typer.BadParameter("give at least one image, video, folder, glob or camera index (or --example)",
                                 param_hint="SOURCES")
    if threads:
        torch.set_num_threads(threads)
    settings = DetectRunSettings(sources=tuple(sources or ()), classes=parse_classes_option(classes), **options)
    run = run_detect(settings)
    if json_:
        print_json(run.to_dict())
    err.print(summary(run, t_imports, import_s, json_), markup=False, highlight=False, soft_wrap=True)
    if run.stopped and run.sources.camera is None:
        raise Interrupted("stopped by Ctrl-C; what was processed before is written")
    if run.failed:
        raise FastRCNNError(f"{len(run.failed)} of {len(run.images)} image(s) could not be processed (listed above)")


def summary(run: DetectRun, t_imports: float, import_s: float, json_: bool) -> str:
    """The last line: what was processed, and where the time went from the process's start (when known) or the
    command's imports (``t_imports``) on."""
    import time

    from fastrcnn_cli import entry

    s, done, videos = run.settings, run.done, run.videos
    stages = run.stage_seconds()
    startup = None if entry.process_started is None else t_imports - entry.process_started
    total = time.perf_counter() - (t_imports if entry.process_started is None else entry.process_started)
    saved = s.out is not None or json_ or run.files or run.labels
    kinds = "images and videos" if done and videos else "videos" if videos else "images"
    return (
        f"{len(done)} image(s), "
        + (f"{len(run.frames)} frame(s) of {len(videos)} video(s), " if videos else "")
        + f"{run.num_detections} detection(s) in {total:.2f} s: "
        + ("" if startup is None else f"start-up {startup:.2f} s, ")
        + f"imports {import_s:.2f} s, model load {run.load_s:.2f} s, proposals {stages['proposals_s']:.2f} s, "
        f"network {stages['network_s']:.2f} s, post-processing {stages['postprocess_s']:.3f} s"
        + (f"; annotated {kinds} in {s.out}" if s.out is not None and (done or videos) else "")
        + ("" if saved else " (nothing saved: add --out, --json, --save-json or --save-voc)")
    )

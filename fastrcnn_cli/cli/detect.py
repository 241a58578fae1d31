"""``fastrcnn detect``: detections on images, drawn and as JSON (formats: :mod:`fastrcnn_cli.results`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

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
)
from fastrcnn_cli.console import err, print_json
from fastrcnn_cli.errors import FastRCNNError, InputError, OutputError
from fastrcnn_cli.outputs import check_output_file, probe_writable, same_file

if TYPE_CHECKING:  # pragma: no cover
    from fastrcnn_cli.detect import Detector
    from fastrcnn_cli.detections import Detections
    from fastrcnn_cli.results import ImageOutcome

_OUT, _MODEL = "Output", "Model and thresholds"


@command(
    "detect",
    flags={"score_threshold": "--conf", "max_detections": "--max-det", "scales": "--scale"},
    epilog=examples(
        "fastrcnn detect img.jpg --out vis.png",
        "fastrcnn detect --example --out vis.png   [dim]# the shipped model on the shipped example image[/dim]",
        "fastrcnn detect photos/ --out out/ --save-json dets.json",
        "fastrcnn detect 'photos/**/*.jpg' --out out/ --conf 0.8 --classes dog,cat",
        "fastrcnn detect img.jpg --json --weights runs/train/best.pt --scale 480 --scale 600 --scale 800",
        "fastrcnn detect 000004.jpg --proposals 000004_boxes.mat --out vis.png   [dim]# the original's demo boxes[/dim]",
        "fastrcnn detect img.jpg --weights model.onnx --out vis.png   [dim]# ONNX Runtime (fastrcnn export)[/dim]",
    ),
)
def detect(
    sources: Annotated[
        list[str] | None,
        typer.Argument(help="Images: files, folders (their images) or glob patterns (quoted or not).", show_default=False),
    ] = None,
    example: Annotated[
        bool,
        typer.Option("--example", help="Also detect on the example image shipped with fastrcnn (shapes-1.jpg), from any folder."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o",
            help="Annotated image: a file for one image (vis.png), else a folder (created). Without it no image is written.",
            rich_help_panel=_OUT,
        ),
    ] = None,
    json_: JsonOption = False,
    save_json: Annotated[
        Path | None, typer.Option("--save-json", help="Write the JSON document (per-image detections and COCO list) here.", rich_help_panel=_OUT)
    ] = None,
    save_coco: Annotated[
        Path | None, typer.Option("--save-coco", help="Write only the COCO-style results list here.", rich_help_panel=_OUT)
    ] = None,
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
    """Detect objects in images with a trained Fast R-CNN model (default: the model shipped in weights/).

    Per image: Selective Search proposals (with the checkpoint's settings), one network pass at the test scale,
    class-specific box regression, clipping, per-class NMS, the score threshold and the best --max-det.
    A line per image on stderr gives the count and the time of each stage (proposals, network,
    post-processing). Results go to stdout with --json; boxes are x1,y1,x2,y2 in original pixels, 0-based,
    inclusive (COCO bbox width = x2 - x1 + 1).

    The proposal options set Selective Search (default: the checkpoint's settings); --proposal-cache CACHE
    reads each image's boxes from a `fastrcnn propose` cache instead (as --proposals CACHE).

    Exit code 1 when an input cannot be used: a missing file or a weights file that is not a checkpoint stops
    before any work; an unreadable image among several is reported and skipped, the others are processed and
    written, and the exit code is still 1.
    """
    import time

    t_imports = time.perf_counter()  # imports are a stage of their own, not part of the first image's
    import cv2  # noqa: F401 - else imported inside the first image's proposals

    import torch

    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.devices import describe_device, resolve_device
    from fastrcnn_cli.pipeline import ProposalOverrides, load_detector
    from fastrcnn_cli.results import build_document, expand_sources, plan_outputs

    t_start = time.perf_counter()
    import_time = t_start - t_imports
    # everything that can be checked without the model, first
    sources = list(sources or [])
    if example:
        from fastrcnn_cli.shipped import example_path

        sources.append(str(example_path()))
    if not sources:
        raise typer.BadParameter("give at least one image, folder or glob (or --example)", param_hint="SOURCES")
    srcs = expand_sources(sources)
    outputs = plan_outputs(srcs, out)
    if proposal_cache is not None:  # a `fastrcnn propose` cache: its entries, by image id (the file stem)
        if proposals is not None:
            raise InputError("--proposals and --proposal-cache both say where the proposals are; give one")
        proposals = proposal_cache
    if proposals is not None:
        if not proposals.exists():
            raise InputError("no such proposal file or folder", proposals)
        if proposals.is_file() and len(srcs.images) != 1:
            raise InputError(
                f"a single proposal file fits one image, but {len(srcs.images)} were given; give a proposal cache "
                "folder or a folder of per-image files (<stem>_boxes.mat, <stem>.mat or <stem>.npy)",
                proposals,
            )
    _check_outputs(srcs.images, outputs, save_json, save_coco, [weights, proposals])
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

    outcomes = _run(loaded.detector, srcs.images, outputs, proposals, classes_)

    document = build_document(
        outcomes,
        classes_,
        weights=loaded.weights_path,
        settings={**settings.to_dict(), "proposals": None if proposal_settings is None else proposal_settings.to_dict(),
                  "proposal_source": None if proposals is None else str(proposals)},
        device=str(dev),
    )
    from fastrcnn_cli.io import atomic_write_json

    for target, payload in ((save_json, document), (save_coco, document["coco"])):
        if target is not None:
            try:
                atomic_write_json(target, payload)
            except OSError as exc:
                raise InputError(f"cannot write ({exc.strerror or exc})", target) from None
            err.print(f"wrote {target}", markup=False, highlight=False, soft_wrap=True)
    if json_:
        print_json(document)

    done = [o for o in outcomes if o.error is None]
    failed = [o for o in outcomes if o.error is not None]
    sums = {k: sum((o.times or {}).get(f"{k}_s", 0.0) for o in done) for k in ("proposals", "network", "postprocess")}
    n_det = sum(len(o.detections) for o in done)
    from fastrcnn_cli import entry

    startup = None if entry.process_started is None else t_imports - entry.process_started
    total = time.perf_counter() - (t_imports if startup is None else entry.process_started)  # type: ignore[operator]
    err.print(
        f"{len(done)} image(s), {n_det} detection(s) in {total:.2f} s: "
        + ("" if startup is None else f"start-up {startup:.2f} s, ")
        + f"imports {import_time:.2f} s, model load {load_time:.2f} s, "
        f"proposals {sums['proposals']:.2f} s, network {sums['network']:.2f} s, post-processing {sums['postprocess']:.3f} s"
        + (f"; annotated images in {out}" if out is not None and done else "")
        + ("" if out is not None or json_ or save_json or save_coco else " (nothing saved: add --out, --json or --save-json)"),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if failed:
        raise FastRCNNError(f"{len(failed)} of {len(outcomes)} image(s) could not be processed (listed above)")


def _check_outputs(
    images: list[Path], outputs: list[Path | None], save_json: Path | None, save_coco: Path | None, others: list
) -> None:
    """Before any work: no output overwrites an input (images, weights, proposals) or another output, and
    every output folder accepts files."""
    from fastrcnn_cli.model.checkpoint import default_weights_path

    inputs = [*images, *(o for o in others if o is not None), default_weights_path()]
    for folder in dict.fromkeys(o.parent for o in outputs if o is not None):
        probe_writable(folder)
    drawn = [o for o in outputs if o is not None]
    if save_json is not None:
        check_output_file(save_json, "--save-json", [*inputs, *drawn])
    if save_coco is not None:
        check_output_file(save_coco, "--save-coco", [*inputs, *drawn])
        if save_json is not None and same_file(save_json, save_coco):
            raise OutputError("--save-coco and --save-json name the same file", save_coco)


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
    detector: Detector, images: list[Path], outputs: list[Path | None], proposals: Path | None, classes: Sequence[str]
) -> list[ImageOutcome]:
    """Detect, draw and report each image; an unusable image is reported and skipped."""
    import time

    from fastrcnn_cli.detect import load_image_proposals
    from fastrcnn_cli.io import write_image
    from fastrcnn_cli.results import ImageOutcome
    from fastrcnn_cli.visualize import draw_detections

    outcomes = []
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
        t = result.times
        times = {"proposals_s": t.proposals, "network_s": t.network, "postprocess_s": t.postprocess, "total_s": t.total}
        outcomes.append(
            ImageOutcome(path, output, det, result.image_size, result.num_proposals, times)
        )
        err.print(
            f"{prefix} {result.image_size[0]}x{result.image_size[1]}: {_describe(det, classes)} | "
            f"{result.num_proposals} proposals {t.proposals:.2f} s, network {t.network:.2f} s, "
            f"post {t.postprocess * 1000:.1f} ms" + (f" -> {output}" if output is not None else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return outcomes


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

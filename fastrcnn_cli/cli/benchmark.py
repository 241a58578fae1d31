"""``fastrcnn benchmark``: where the time of a detection goes (:mod:`fastrcnn_cli.benchmark`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, WeightsOption, command, examples
from fastrcnn_cli.cli.propose import PROPOSER_HELP, Proposer

_WHAT, _OUT = "What to time", "Output"


def _parse_sections(values: list[str] | None) -> tuple[str, ...]:
    """``--sections stages,shared`` or repeated ``--sections``; None: all four."""
    from fastrcnn_cli.benchmark import SECTIONS

    if not values:
        return SECTIONS
    names = [v.strip().lower() for value in values for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise typer.BadParameter(
            f"{', '.join(unknown) or 'nothing'}: choose some of {', '.join(SECTIONS)}", param_hint="'--sections'"
        )
    return tuple(names)


def _parse_rank(value: str | None) -> tuple[tuple[int, int | None] | None, bool]:
    """``--rank R`` (fc6 R, fc7 the default min(R, 256)), ``--rank R6,R7`` or ``--rank R6,none``."""
    if value is None:
        return None, False
    parts = [p.strip().lower() for p in value.split(",")]
    try:
        if len(parts) == 1:
            return (int(parts[0]), None), False
        if len(parts) == 2:
            if parts[1] in ("none", "off", "keep"):
                return (int(parts[0]), None), True
            return (int(parts[0]), int(parts[1])), False
    except ValueError:
        pass
    raise typer.BadParameter(f"{value!r} is not R, R6,R7 or R6,none (integers)", param_hint="'--rank'")


@command(
    "benchmark",
    epilog=examples(
        "fastrcnn benchmark",
        "fastrcnn benchmark --plot where-the-time-went.png --csv bench.csv",
        "fastrcnn benchmark --weights runs/train/best.pt --image photo.jpg --runs 10 --warmup 2",
        "fastrcnn benchmark --sections stages,shared --proposals 2000 --threads 2",
        "fastrcnn benchmark --sections head --rank 256 --json > head.json",
        "fastrcnn benchmark --device cuda --sections roipool --roipool-case vgg16",
        "fastrcnn benchmark --weights model.onnx   [dim]# the stages with ONNX Runtime (fastrcnn export)[/dim]",
    ),
)
def benchmark(
    weights: WeightsOption = None,
    image: Annotated[
        Path | None,
        typer.Option(
            "--image", "-i", show_default=False,
            help="The image to time (default: the example image examples/shapes-1.jpg).",
        ),
    ] = None,
    device: DeviceOption = "auto",
    runs: Annotated[
        int | None,
        typer.Option(
            "--runs", parser=ranges.count(1, 100_000), show_default=False,
            help="Timed runs of every section (default: 5 for stages, 3 for the others).",
        ),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(
            "--warmup", parser=ranges.count(0, 100_000), show_default=False, help="Untimed warm-up runs before them (default: 1, none for head)."
        ),
    ] = None,
    proposals: Annotated[
        int | None,
        typer.Option(
            "--proposals", "-p", parser=ranges.count(1, 100_000), show_default=False, rich_help_panel=_WHAT,
            help="Selective Search proposals kept (top N; default: the checkpoint's, normally 2000, as detect). "
            "Also the number of RoIs of the shared, roipool and head sections.",
        ),
    ] = None,
    rank: Annotated[
        str | None,
        typer.Option(
            "--rank", metavar="R|R6,R7|R6,none", rich_help_panel=_WHAT,
            help="Also time this model's own head against its truncated SVD at these ranks (fc7 default: "
            "min(R, 256)). VGG16's head at the paper's 1024/256 is always timed.",
        ),
    ] = None,
    sections: Annotated[
        list[str] | None,
        typer.Option(
            "--sections", "-s", metavar="stages,proposals,shared,roipool,head", rich_help_panel=_WHAT, show_default=False,
            help="Which sections to run, comma-separated or repeated (default: all).",
        ),
    ] = None,
    rcnn_sample: Annotated[
        int,
        typer.Option(
            "--rcnn-sample", parser=ranges.count(1, 100_000), rich_help_panel=_WHAT,
            help="Proposals the R-CNN side of 'shared' is timed on (then scaled to all).",
        ),
    ] = 32,
    rcnn_batch: Annotated[
        int,
        typer.Option("--rcnn-batch", parser=ranges.count(1, 100_000), rich_help_panel=_WHAT, help="Crops per backbone batch on the R-CNN side."),
    ] = 32,
    roipool_case: Annotated[
        str,
        typer.Option(
            "--roipool-case", rich_help_panel=_WHAT,
            help="RoI pooling features: 'vgg16' (1x512x38x63, VGG16's conv5 for a 600 x 1000 image, the paper's "
            "case) or 'model' (this model's feature map at this image's size).",
        ),
    ] = "vgg16",
    proposer: Annotated[
        Proposer | None,
        typer.Option("--proposer", rich_help_panel=_WHAT, show_default=False,
                     help=PROPOSER_HELP + " For the stages section (the proposals section times both). "
                     "Default: as in training."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", parser=ranges.THREADS, help="CPU threads for torch (default: all cores).")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", rich_help_panel=_OUT,
            help="Write the 'where the time went' bar chart (PNG, square-root scaled bars) here.",
        ),
    ] = None,
    csv_out: Annotated[
        Path | None,
        typer.Option("--csv", rich_help_panel=_OUT, help="Write every number (statistics and each run) as CSV here."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Measure where the time of a detection goes, on this machine (default: the shipped model and example image).

    Five sections, each a median with its spread over --runs runs after --warmup untimed ones (synchronised on
    CUDA): [bold]stages[/bold] -- one `detect` call split into Selective Search, preprocessing, the backbone, RoI
    pooling + heads for all proposals, and NMS / post-processing (the same clocks `fastrcnn detect` reads);
    [bold]proposals[/bold] -- OpenCV's Selective Search against ours (--proposer native), fast and quality: CPU time
    and latency of one image with 1 and all threads;
    [bold]shared[/bold] -- "share the features": R-CNN's way (crop and warp every proposal to 224x224, one backbone
    pass each; timed on a sample and scaled up) against Fast R-CNN's (one backbone pass, RoI pooling) on the same
    proposals and backbone, and the speedup; [bold]roipool[/bold] -- our RoI pooling operator against torchvision's
    and the pure-PyTorch reference, forward and backward; [bold]head[/bold] -- fc6/fc7 full against truncated SVD
    (VGG16's at the paper's ranks, and this model's at --rank).

    Tables go to stderr; --json prints every number on stdout instead.
    """
    import torch

    from fastrcnn_cli.benchmark import (
        BenchmarkSettings,
        plot_stages,
        render_report,
        run_benchmark,
        summary_line,
        write_csv,
    )
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.errors import InputError

    chosen = _parse_sections(sections)
    if weights is not None and weights.suffix.lower() == ".onnx":  # ONNX Runtime: the stage breakdown only
        if sections and chosen != ("stages",):
            raise typer.BadParameter(
                "an ONNX model is timed in the stages section only; give the checkpoint for shared, roipool and head",
                param_hint="'--sections'",
            )
        chosen = ("stages",)
    ranks, fc7_none = _parse_rank(rank)
    if roipool_case not in ("model", "vgg16"):
        raise typer.BadParameter(f"{roipool_case!r}: choose model or vgg16", param_hint="'--roipool-case'")
    if plot is not None and "stages" not in chosen:
        raise typer.BadParameter("the plot shows the stages section; add stages to --sections", param_hint="'--plot'")
    from fastrcnn_cli.outputs import check_output_file

    for target, flag in ((plot, "--plot"), (csv_out, "--csv")):
        if target is not None:  # writable and not an input, before the minutes of timing
            check_output_file(target, flag, [weights, image, plot if flag == "--csv" else None])
    if threads:
        torch.set_num_threads(threads)
    settings = BenchmarkSettings(
        runs=runs, warmup=warmup, proposals=proposals, sections=chosen, ranks=ranks, fc7_none=fc7_none,
        rcnn_sample=rcnn_sample, rcnn_batch=rcnn_batch, roipool_case=roipool_case,
        proposer=proposer.value if proposer else None,
    )

    def log(message: str) -> None:
        err.print(message, markup=False, highlight=False, soft_wrap=True)

    result = run_benchmark(weights, image, device, settings, log=log)

    for target, write in ((plot, plot_stages), (csv_out, write_csv)):
        if target is not None:
            try:
                write(result, target)
            except OSError as exc:
                raise InputError(f"cannot write ({exc.strerror or exc})", target) from None
    if json_:
        print_json(result)
    else:
        for renderable in render_report(result):
            err.print(renderable)
        err.print(summary_line(result), markup=False, highlight=False, soft_wrap=True)
    for target in (plot, csv_out):
        if target is not None:
            err.print(f"wrote {target}", markup=False, highlight=False, soft_wrap=True)

"""``fastrcnn benchmark``: where the time of a detection goes (:mod:`fastrcnn_cli.benchmark`).

Parse the options into :class:`~fastrcnn_cli.benchmark.BenchmarkSettings`, call
:func:`~fastrcnn_cli.benchmark.run_benchmark`, render its :class:`~fastrcnn_cli.benchmark.BenchmarkResult`:
the tables on stderr (:mod:`fastrcnn_cli.cli.render_benchmark`), or ``--json`` on stdout; ``--plot`` and
``--csv`` files.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, WeightsOption, command, examples
from fastrcnn_cli.cli.compress_svd import _parse_rank_fc7
from fastrcnn_cli.cli.options import PROPOSAL_FLAGS, ProposalChoices, ThreadsOption, proposal_options

_WHAT, _OUT = "What to time", "Output"
#: the sections (:data:`fastrcnn_cli.benchmark.SECTIONS`; written here too, so that --help loads no torch)
SECTION_NAMES = ("stages", "proposals", "shared", "roipool", "head")


class RoIPoolCase(str, Enum):
    vgg16 = "vgg16"
    model = "model"


def _parse_sections(values: list[str] | None) -> tuple[str, ...]:
    """``--sections stages,shared`` or repeated ``--sections``; None: all five."""
    if not values:
        return SECTION_NAMES
    names = [v.strip().lower() for value in values for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SECTION_NAMES]
    if unknown or not names:
        raise typer.BadParameter(
            f"{', '.join(unknown) or 'nothing'}: choose some of {', '.join(SECTION_NAMES)}", param_hint="'--sections'"
        )
    return tuple(names)


@command(
    "benchmark",
    flags=PROPOSAL_FLAGS,
    epilog=examples(
        "fastrcnn benchmark",
        "fastrcnn benchmark --plot where-the-time-went.png --csv bench.csv",
        "fastrcnn benchmark --weights runs/train/best.pt --image photo.jpg --runs 10 --warmup 2",
        "fastrcnn benchmark -S stages,shared --proposal-top 2000 --threads 2",
        "fastrcnn benchmark --sections head --rank 256 --json > head.json",
        "fastrcnn benchmark -S head --rank 512 --rank-fc7 none   [dim]# fc7 left dense[/dim]",
        "fastrcnn benchmark --device cuda --sections roipool --roipool-case vgg16",
        "fastrcnn benchmark --weights model.onnx   [dim]# the stages with ONNX Runtime (fastrcnn export)[/dim]",
    ),
)
@proposal_options
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
            help="Timed runs of every section (default: 5 for stages, 3 for shared, roipool and head, 2 for "
            "proposals).",
        ),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(
            "--warmup", parser=ranges.count(0, 100_000), show_default=False,
            help="Untimed warm-up runs before them (default: 1, none for head).",
        ),
    ] = None,
    threads: ThreadsOption = None,
    sections: Annotated[
        list[str] | None,
        typer.Option(
            "--sections", "-S", metavar="stages,proposals,shared,roipool,head", rich_help_panel=_WHAT,
            show_default=False, help="Which sections to run, comma-separated or repeated (default: all).",
        ),
    ] = None,
    rank: Annotated[
        int | None,
        typer.Option(
            "--rank", "-r", parser=ranges.count(1, 1_000_000), rich_help_panel=_WHAT, show_default=False,
            help="Also time this model's own head against its truncated SVD, fc6 at this rank (as compress-svd "
            "--rank). VGG16's head at the paper's 1024/256 is always timed.",
        ),
    ] = None,
    rank_fc7: Annotated[
        str | None,
        typer.Option(
            "--rank-fc7", metavar="INTEGER|none", rich_help_panel=_WHAT, show_default=False,
            help="fc7's rank for --rank, or 'none' to leave fc7 dense. Default: min(--rank, 256), as compress-svd.",
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
        typer.Option("--rcnn-batch", parser=ranges.count(1, 100_000), rich_help_panel=_WHAT,
                     help="Crops per backbone batch on the R-CNN side."),
    ] = 32,
    roipool_case: Annotated[
        RoIPoolCase,
        typer.Option(
            "--roipool-case", rich_help_panel=_WHAT,
            help="RoI pooling features: 'vgg16' (1x512x38x63, VGG16's conv5 for a 600 x 1000 image, the paper's "
            "case) or 'model' (this model's feature map at this image's size).",
        ),
    ] = RoIPoolCase.vgg16,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", rich_help_panel=_OUT,
                     help="Write the 'where the time went' bar chart (PNG, square-root scaled bars) here."),
    ] = None,
    csv_out: Annotated[
        Path | None,
        typer.Option("--csv", rich_help_panel=_OUT, help="Write every number (statistics and each run) as CSV here."),
    ] = None,
    json_: JsonOption = False,
    *,
    proposals: ProposalChoices,
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

    The proposal options set Selective Search as `fastrcnn detect` runs it (default: the checkpoint's settings;
    with --proposal-cache, those that cache was made with); --proposal-top is also the number of RoIs of the
    shared, roipool and head sections.

    Tables go to stderr; --json prints every number on stdout instead.
    """
    import torch

    from fastrcnn_cli.benchmark import BenchmarkSettings, run_benchmark
    from fastrcnn_cli.cli.render_benchmark import plot_stages, render_report, summary_line, write_csv
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.outputs import check_output_file
    from fastrcnn_cli.pipeline import ProposalOverrides

    chosen = _parse_sections(sections)
    if weights is not None and weights.suffix.lower() == ".onnx":  # ONNX Runtime: the stage breakdown only
        if sections and chosen != ("stages",):
            raise typer.BadParameter(
                "an ONNX model is timed in the stages section only; give the checkpoint for shared, roipool and head",
                param_hint="'--sections'",
            )
        chosen = ("stages",)
    rank7 = _parse_rank_fc7(rank_fc7)
    if rank is None and rank_fc7 is not None:
        raise typer.BadParameter("give --rank (fc6's rank) with it", param_hint="'--rank-fc7'")
    ranks = None if rank is None else (rank, rank7 if isinstance(rank7, int) else None)
    if plot is not None and "stages" not in chosen:
        raise typer.BadParameter("the plot shows the stages section; add stages to --sections", param_hint="'--plot'")
    for target, flag in ((plot, "--plot"), (csv_out, "--csv")):
        if target is not None:  # writable and not an input, before the minutes of timing
            check_output_file(target, flag, [weights, image, plot if flag == "--csv" else None])
    if threads:
        torch.set_num_threads(threads)
    settings = BenchmarkSettings(
        runs=runs, warmup=warmup, sections=chosen, ranks=ranks, fc7_none=rank7 is None, rcnn_sample=rcnn_sample,
        rcnn_batch=rcnn_batch, roipool_case=roipool_case.value, proposal_cache=proposals.cache,
        proposals=ProposalOverrides(**proposals.overrides),
    )
    result = run_benchmark(weights, image, device, settings)

    for target, write in ((plot, plot_stages), (csv_out, write_csv)):
        if target is not None:
            write(result, target)  # an OutputError (exit 1) names the file when it cannot be written
    if json_:
        print_json(result.to_dict())
    else:
        for renderable in render_report(result):
            err.print(renderable)
        err.print(summary_line(result), markup=False, highlight=False, soft_wrap=True)
    for target in (plot, csv_out):
        if target is not None:
            err.print(f"wrote {target}", markup=False, highlight=False, soft_wrap=True)

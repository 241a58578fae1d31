"""``fastrcnn compress-svd``: truncated SVD of fc6 and fc7 (:mod:`fastrcnn_cli.svd`,
:mod:`fastrcnn_cli.svd_checkpoint`): parse the options, :func:`~fastrcnn_cli.svd_checkpoint.run_compress_svd`,
render the report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, StrictOption, WeightsOption, command, examples
from fastrcnn_cli.cli.options import (
    PROPOSAL_FLAGS,
    ProposalChoices,
    ThreadsOption,
    WorkersOption,
    proposal_options,
    split_option,
)
from fastrcnn_cli.outputs import check_output_file

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Group

    from fastrcnn_cli.svd_checkpoint import CompressionReport

_EVAL = "Evaluation (--eval)"


def _parse_rank_fc7(value: str | None) -> int | str | None:
    """``--rank-fc7``: an integer >= 1, or ``none`` (leave fc7 as it is); not given: "default"."""
    if value is None:
        return "default"
    text = value.strip().lower()
    if text in ("none", "off", "keep"):
        return None
    try:
        rank = int(text)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an integer or 'none'", param_hint="'--rank-fc7'") from None
    if not 1 <= rank <= 1_000_000:
        raise typer.BadParameter(f"{rank} is not allowed (an integer, 1 <= x <= 1000000, or 'none' to leave fc7 as it "
                                 "is)", param_hint="'--rank-fc7'")
    return rank


@command(
    "compress-svd",
    flags={**PROPOSAL_FLAGS, "rank_fc6": "--rank", "eval_data": "--eval", "eval_split": "--split",
           "cache_dir": "--proposal-cache"},
    epilog=examples(
        "fastrcnn compress-svd --rank 1024",
        "fastrcnn compress-svd --weights runs/train/best.pt --rank 1024 --rank-fc7 256 --out vgg16-svd.pt",
        "fastrcnn compress-svd -w best.pt --rank 256 --rank-fc7 none",
        "fastrcnn compress-svd -w best.pt --rank 512 --eval VOCdevkit/VOC2007 --split test --json > svd.json",
    ),
)
@proposal_options
def compress_svd(
    rank: Annotated[
        int,
        typer.Option("--rank", "-r", parser=ranges.count(1, 1_000_000), help="Rank t of fc6 (the paper: 1024 for VGG16's 4096 x 25088 fc6)."),
    ],
    rank_fc7: Annotated[
        str | None,
        typer.Option(
            "--rank-fc7",
            metavar="INTEGER|none",
            help="Rank of fc7, or 'none' to leave fc7 as it is. Default: min(--rank, 256), the paper's 256 for "
            "VGG16 unless --rank is smaller, capped at what fc7 allows.",
            show_default=False,
        ),
    ] = None,
    weights: WeightsOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the compressed checkpoint. Default: <weights stem>-svd<rank>.pt next to the "
            "weights (-fc7-<r> added for a non-default fc7 rank), or in the current folder if that one is not writable.",
            show_default=False,
        ),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval", help="Also report mAP before and after on this VOC-format data set (as `fastrcnn evaluate`).",
                     rich_help_panel=_EVAL),
    ] = None,
    split: Annotated[str, split_option("Split to evaluate with --eval.")] = "test",
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="With --eval: evaluate only these classes (comma-separated or a file), matched "
                     "by name; needed when the model's classes and the data set's differ.", rich_help_panel=_EVAL),
    ] = None,
    strict: StrictOption = False,
    workers: WorkersOption = None,
    timing: Annotated[
        bool, typer.Option("--time/--no-time", help="Time the head (fc6 + fc7) before and after on --device.")
    ] = True,
    rois: Annotated[int, typer.Option("--rois", parser=ranges.count(1, 1_000_000), help="RoIs in the timed batch.")] = 2000,
    runs: Annotated[int, typer.Option("--runs", parser=ranges.count(1, 100_000), help="Timed runs of each head (after the warm-up).")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", parser=ranges.count(0, 100_000), help="Untimed warm-up runs of each head.")] = 1,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    *,
    proposals: ProposalChoices,
) -> None:
    """Compress fc6 and fc7 with truncated SVD (Fast R-CNN, section 3.1), with no fine-tuning.

    Each layer W (u x v) becomes two linear layers, S_t V_t^T (t outputs, no bias) then U_t (with the
    original bias): t(u + v) + u parameters instead of u v + u. The SVD is computed in float64; the result
    is a normal checkpoint in the input's dtype (float16 stays float16) that detect, evaluate and benchmark
    load with no extra flags, and that records what was done. A layer that is already compressed can be
    re-compressed to a lower (or equal) rank.

    Prints, per layer, the shape, rank, parameters before and after and the share of the energy kept
    (sum of the kept squared singular values over all), the file sizes, the time of the head on a batch
    of --rois RoIs before and after (median, min-max), and with --eval the mAP before and after (as `fastrcnn
    evaluate` measures it: the checkpoint's test scale and proposal settings, which the proposal options override).

    Exit codes: 1 for a file that is not a fastrcnn checkpoint; 2 for a rank of 0 or less, or larger than
    the layer allows (min(u, v), or its current rank).
    """
    from fastrcnn_cli.console import err, info, print_json, warn  # Rich: kept out of start-up

    import torch

    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.devices import resolve_device
    from fastrcnn_cli.pipeline import ProposalOverrides
    from fastrcnn_cli.svd_checkpoint import CompressSVDSettings, run_compress_svd

    rank7 = _parse_rank_fc7(rank_fc7)
    if out is not None:  # the default output is chosen next to the weights, or here, where writing works
        from fastrcnn_cli.model.checkpoint import resolve_weights

        check_output_file(out, "--out", [resolve_weights(weights)])
    if threads:
        torch.set_num_threads(threads)
    settings = CompressSVDSettings(
        weights=weights,
        out=out,
        rank_fc6=rank,
        rank_fc7=rank7,  # type: ignore[arg-type]  # an int, None or "default"
        device=resolve_device(device),
        time_head=timing,
        num_rois=rois,
        runs=runs,
        warmup=warmup,
        eval_data=eval_data,
        eval_split=split,
        classes=parse_classes_option(classes),
        cache_dir=proposals.cache,
        workers=workers,
        proposals=ProposalOverrides(**proposals.overrides),
        strict=strict,
    )
    report = run_compress_svd(settings)
    for note in report.notes:
        warn(note)
    if json_:
        print_json(report.to_dict())
    else:
        err.print(render_report(report))
    info(f"wrote {report.output}")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


def _ms(stats: Mapping[str, Any]) -> str:
    """A timing's median and range, from :meth:`TimingStats.to_dict <fastrcnn_cli.timing.TimingStats.to_dict>`."""
    return f"{stats['median_ms']:.1f} ms ({stats['min_ms']:.1f}-{stats['max_ms']:.1f})"


def render_report(report: CompressionReport) -> Group:
    """Rich tables of a :class:`CompressionReport`: one row per layer, then files, time and mAP (in %)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    from fastrcnn_cli.cli.render_eval import pct

    layers = Table(title="truncated SVD of the head", title_justify="left")
    for col in ("layer", "u x v", "rank", "params before", "after", "ratio", "energy kept"):
        layers.add_column(col, justify="left" if col in ("layer", "u x v") else "right", no_wrap=True)
    for r in report.layers:
        rank = f"{r.previous_rank} -> {r.rank}" if r.previous_rank else str(r.rank)
        layers.add_row(
            r.name, r.shape, rank, f"{r.params_before:,}", f"{r.params_after:,}",
            f"{r.params_after / r.params_before:.3f}", f"{100 * r.energy_kept:.2f}%",
        )
    caption = None
    if report.timing:
        t = report.timing
        caption = f"times: median (min-max) of {t['runs']} runs on {t['num_rois']} RoIs, {t['device']}"
    summary = Table(title="before -> after", title_justify="left", caption=caption, caption_justify="left")
    summary.add_column("")
    summary.add_column("before", justify="right")
    summary.add_column("after", justify="right")
    summary.add_column("", justify="right")
    summary.add_row(
        f"file ({report.dtype})", _size(report.size_before), _size(report.size_after),
        f"x{report.size_after / max(report.size_before, 1):.3f}",
    )
    summary.add_row(
        "weights", _size(report.weights_before), _size(report.weights_after),
        f"x{report.weights_after / max(report.weights_before, 1):.3f}",
    )
    if report.timing:
        t = report.timing
        for part in ("fc6", "fc7", "total"):
            label = "head time (fc6 + fc7)" if part == "total" else f"{part} time"
            b, a = t["before"][part], t["after"][part]
            summary.add_row(label, _ms(b), _ms(a), f"speed-up {b['median_ms'] / a['median_ms']:.2f}x")
    if report.evaluation:
        e = report.evaluation
        before, after = e.results["before"], e.results["after"]
        metrics = [("map", f"mAP % ({e.headline}, {e.split})")]
        metrics += [(key, label) for key, label in (("map_voc07", "mAP % VOC07 11-pt"), ("map_area", "mAP % area"))
                    if key != f"map_{e.headline}"]
        for key, label in metrics:
            b, a = getattr(before, key), getattr(after, key)
            delta = "" if math.isnan(a - b) else f"{100 * (a - b):+.1f} points"
            summary.add_row(label, pct(b), pct(a), delta)
    parts = [layers, summary]
    if report.timing:
        t = report.timing
        parts.append(f"[dim]timed: {t['timed']}; {t['warmup']} warm-up run(s) first[/dim]")
    if report.evaluation:
        parts.append(f"[dim]{escape(report.evaluation.protocol)}[/dim]")
    return Group(*parts)

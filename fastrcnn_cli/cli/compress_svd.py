"""``fastrcnn compress-svd``: truncated SVD of fc6 and fc7 (:mod:`fastrcnn_cli.svd`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, WeightsOption, command, examples


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
    epilog=examples(
        "fastrcnn compress-svd --rank 1024",
        "fastrcnn compress-svd --weights runs/train/best.pt --rank 1024 --rank-fc7 256 --out vgg16-svd.pt",
        "fastrcnn compress-svd -w best.pt --rank 256 --rank-fc7 none",
        "fastrcnn compress-svd -w best.pt --rank 512 --eval VOCdevkit/VOC2007 --split test --json > svd.json",
    ),
)
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
        typer.Option("--eval", help="Also report mAP before and after on this VOC-format data set (as `fastrcnn evaluate`)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", "-s", help="Split to evaluate with --eval.")] = "test",
    cache: Annotated[
        Path | None, typer.Option("--proposal-cache", help="Selective Search cache folder for --eval (default: the usual one).")
    ] = None,
    timing: Annotated[
        bool, typer.Option("--time/--no-time", help="Time the head (fc6 + fc7) before and after on --device.")
    ] = True,
    rois: Annotated[int, typer.Option("--rois", parser=ranges.count(1, 1_000_000), help="RoIs in the timed batch.")] = 2000,
    runs: Annotated[int, typer.Option("--runs", parser=ranges.count(1, 100_000), help="Timed runs of each head (after the warm-up).")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", parser=ranges.count(0, 100_000), help="Untimed warm-up runs of each head.")] = 1,
    device: DeviceOption = "auto",
    json_: JsonOption = False,
) -> None:
    """Compress fc6 and fc7 with truncated SVD (Fast R-CNN, section 3.1), with no fine-tuning.

    Each layer W (u x v) becomes two linear layers, S_t V_t^T (t outputs, no bias) then U_t (with the
    original bias): t(u + v) + u parameters instead of u v + u. The SVD is computed in float64; the result
    is a normal checkpoint in the input's dtype (float16 stays float16) that detect, evaluate and benchmark
    load with no extra flags, and that records what was done. A layer that is already compressed can be
    re-compressed to a lower (or equal) rank.

    Prints, per layer, the shape, rank, parameters before and after and the share of the energy kept
    (sum of the kept squared singular values over all), the file sizes, the time of the head on a batch
    of --rois RoIs before and after (median, min-max), and with --eval the mAP before and after.

    Exit codes: 1 for a file that is not a fastrcnn checkpoint; 2 for a rank of 0 or less, or larger than
    the layer allows (min(u, v), or its current rank).
    """
    from fastrcnn_cli.console import err, info, print_json, warn
    from fastrcnn_cli.devices import resolve_device
    from fastrcnn_cli.svd import render_report, run_compress_svd

    rank7 = _parse_rank_fc7(rank_fc7)
    if out is not None:  # the default output is chosen next to the weights, or here, where writing works
        from fastrcnn_cli.model.checkpoint import resolve_weights
        from fastrcnn_cli.outputs import check_output_file

        check_output_file(out, "--out", [resolve_weights(weights)])
    dev = resolve_device(device)
    report = run_compress_svd(
        weights,
        out,
        rank,
        rank7,
        device=dev,
        time_head=timing,
        num_rois=rois,
        runs=runs,
        warmup=warmup,
        eval_data=eval_data,
        eval_split=split,
        cache_dir=cache,
    )
    for note in report.notes:
        warn(note)
    if json_:
        print_json(report.to_dict())
    else:
        err.print(render_report(report))
    info(f"wrote {report.output}")

"""``fastrcnn export``: a checkpoint made small for shipping (no training state, float16 weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli.app import JsonOption, command, examples


@command(
    "export",
    epilog=examples(
        "fastrcnn export runs/train/best.pt model.pt",
        "fastrcnn export runs/train/best.pt model-fp32.pt --no-half",
    ),
)
def export(
    src: Annotated[Path, typer.Argument(help="A checkpoint, e.g. runs/train/best.pt.")],
    dst: Annotated[Path, typer.Argument(help="The file to write.")],
    half: Annotated[bool, typer.Option("--half/--no-half", help="Store the weights in float16 (loaded as float32).")] = True,
    json_: JsonOption = False,
) -> None:
    """Strip a training checkpoint's optimiser and random states and store its weights in half precision.

    The result loads everywhere a checkpoint is accepted (detect, evaluate, compress-svd, benchmark); it cannot
    be used to --resume training.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.model.checkpoint import export_checkpoint

    report = export_checkpoint(src, dst, half=half)
    if json_:
        print_json(report)
    else:
        err.print(
            f"wrote {dst} ({report['dtype']}, {report['bytes_after'] / 2**20:.1f} MB; "
            f"was {report['bytes_before'] / 2**20:.1f} MB)"
        )

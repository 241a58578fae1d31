"""``fastrcnn export``: a trained detector as ONNX, TorchScript or a slim checkpoint (:mod:`fastrcnn_cli.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli.app import JsonOption, command, examples
from fastrcnn_cli.outputs import check_output_file


@command(
    "export",
    epilog=examples(
        "fastrcnn export runs/train/best.pt model.onnx                 [dim]# ONNX Runtime, no PyTorch needed[/dim]",
        "fastrcnn detect photo.jpg --weights model.onnx --out vis.png   [dim]# run it[/dim]",
        "fastrcnn export runs/train/best.pt model.torchscript           [dim]# torch.jit.load, no fastrcnn[/dim]",
        "fastrcnn export runs/train/best.pt model.pt                    [dim]# slim float16 checkpoint[/dim]",
        "fastrcnn export runs/train/best.pt model-fp32.pt --format checkpoint --no-half",
    ),
)
def export(
    src: Annotated[Path, typer.Argument(help="A fastrcnn checkpoint, e.g. runs/train/best.pt (compress-svd outputs too).")],
    dst: Annotated[
        Path, typer.Argument(help="The file to write: .onnx, .torchscript, or .pt / .pth for a checkpoint.")
    ],
    format_: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", metavar="onnx|torchscript|checkpoint", show_default=False,
            help="What to write (default: from the extension of DST, which must match).",
        ),
    ] = None,
    half: Annotated[
        bool, typer.Option("--half/--no-half", help="checkpoint only: store the weights in float16 (loaded as float32).")
    ] = True,
    json_: JsonOption = False,
) -> None:
    """Export a trained detector for deployment.

    [bold]onnx[/bold]: the whole network after the proposals as one ONNX graph (normalisation, backbone, RoI max
    pooling as the standard MaxRoiPool, fc6/fc7, the heads, softmax, box decoding and clipping); inputs: the
    resized BGR image (uint8 H x W x 3), the proposals in original pixels (R x 4) and im_info (height, width,
    factor); outputs: class scores and per-class boxes. Dynamic image size and proposal count. The classes,
    test scale, max size, proposal settings and box coding are in the file's metadata, so
    `fastrcnn detect --weights model.onnx` runs it with ONNX Runtime (pip install 'fastrcnn[onnx]').
    [bold]torchscript[/bold]: the same graph for torch.jit.load (needs torch and torchvision only).
    [bold]checkpoint[/bold]: the checkpoint without optimiser and random states, float16 weights; it loads
    everywhere a checkpoint does but cannot --resume training.

    Exit code 2 when the output's extension does not fit the format, 1 when the input is not a fastrcnn checkpoint.
    """
    from fastrcnn_cli.console import err, print_json  # Rich: kept out of start-up

    from fastrcnn_cli.export import export_model

    check_output_file(dst, "OUTPUT", [src])  # never over the input, and writable, before the export runs
    report = export_model(src, dst, format_, half=half)
    if json_:
        print_json(report)
        return
    text = f"wrote {dst} ({report['format']}, {report['bytes_after'] / 2**20:.1f} MB"
    if report["format"] == "checkpoint":
        text += f", {report['dtype']}; was {report['bytes_before'] / 2**20:.1f} MB)"
    elif report["format"] == "onnx":
        text += f", opset {report['opset']}, checked with onnx.checker); run it: fastrcnn detect IMAGE --weights {dst}"
    else:
        text += "); load it: torch.jit.load (after import torchvision)"
    err.print(text, markup=False, highlight=False, soft_wrap=True)

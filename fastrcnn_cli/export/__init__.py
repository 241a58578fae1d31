"""Exporting a trained detector: ONNX, TorchScript, or a slim checkpoint (``fastrcnn export``).

==============  =============  ==================================================================================
format          extension      what it is
==============  =============  ==================================================================================
``onnx``        ``.onnx``      the network after the proposals as one ONNX graph (:mod:`.graph`, :mod:`.onnx_file`)
                               with its metadata (:mod:`.metadata`); runs in ONNX Runtime, no PyTorch
``torchscript`` ``.torchscript`` the same graph traced to TorchScript; needs torch + torchvision only
``checkpoint``  ``.pt``/``.pth`` a fastrcnn checkpoint without training state, float16 weights by default
==============  =============  ==================================================================================

The format comes from the ``format`` setting or, without it, from the output's extension; an extension that does
not belong to the format is refused (:class:`ExportUsageError`, exit code 2), so ``model.onnx`` is always an ONNX
file.

RoI pooling in ONNX Runtime. ``MaxRoiPool``'s CPU kernel (onnxruntime/core/providers/cpu/nn/roi_pool.cc) does
Caffe's arithmetic, which is also ours (docs: reference-facts 'RoI max pooling'): corners ``round(coord *
spatial_scale)`` with C ``round`` (half away from zero), sizes ``max(end - start + 1, 1)``, float32 bin sizes,
``floor`` / ``ceil`` bin edges offset and clipped to [0, H] / [0, W], an empty bin 0, the batch index
truncated to an integer. One difference was found in its source: a non-empty bin
starts from ``numeric_limits<float>::min()`` (the smallest positive float, not the lowest), which would turn a
negative maximum into 1e-38, and EfficientNet's features (a linear projection) are often negative. ONNX Runtime
1.32 returns the negative maxima (measured: the pooled values agree with ours on all-negative features), and
``tests/test_export.py`` checks exactly that, so a runtime that still clamps is caught. No pre-rounding of the RoIs is
needed: both round the same scaled float32 value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastrcnn_cli.errors import CheckpointError, SettingsError

FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "torchscript": (".torchscript",),
    "checkpoint": (".pt", ".pth"),
}


class ExportUsageError(SettingsError):
    """A format and a file name that do not go together: a usage error (exit code 2) of the ``format`` setting."""


def _known_extensions() -> str:
    return "; ".join(f"{', '.join(exts)} for {fmt}" for fmt, exts in FORMATS.items())


def resolve_format(dst: str | os.PathLike, fmt: str | None) -> str:
    """The export format for output ``dst``: ``fmt`` when given (its extension must match), else the one its
    extension names. :class:`ExportUsageError` otherwise."""
    dst = Path(dst)
    suffix = dst.suffix.lower()
    by_suffix = next((f for f, exts in FORMATS.items() if suffix in exts), None)
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ExportUsageError("format", f"must be one of {', '.join(FORMATS)} (got {fmt!r})")
        if suffix not in FORMATS[fmt]:
            expected = " or ".join(FORMATS[fmt])
            hint = f"; {suffix} is the extension of the {by_suffix} format" if by_suffix else ""
            raise ExportUsageError(
                "format",
                f"{fmt} writes a {expected} file, but the output is named {dst.name!r}{hint}; rename the output or "
                "change the format",
            )
        return fmt
    if by_suffix is None:
        raise ExportUsageError(
            "format",
            f"cannot tell the format of {str(dst)!r} from its extension {suffix or '(none)'!r}: use "
            f"{_known_extensions()} (or give the format and a matching name)",
        )
    return by_suffix


def _check_source(src: Path) -> None:
    suffix = src.suffix.lower()
    for fmt in ("onnx", "torchscript"):
        if suffix in FORMATS[fmt] and src.is_file():
            raise CheckpointError(
                f"is an exported {fmt} file; export reads a fastrcnn checkpoint (.pt, e.g. runs/train/best.pt)", src
            )


def export_model(
    src: str | os.PathLike | None, dst: str | os.PathLike, fmt: str | None = None, *, half: bool = True
) -> dict[str, Any]:
    """Export checkpoint ``src`` (None: the shipped model) to ``dst`` in format ``fmt`` (None: from the
    extension). Returns a report: format, source, output, sizes and format-specific details."""
    from fastrcnn_cli.model.checkpoint import export_checkpoint, load_checkpoint, resolve_weights

    dst = Path(dst)
    fmt = resolve_format(dst, fmt)
    src_path = resolve_weights(src)
    _check_source(src_path)
    if dst.exists() and dst.resolve() == src_path.resolve():
        raise CheckpointError("refusing to overwrite the input; choose another output file", dst)
    if dst.is_dir():
        raise CheckpointError("is a folder; give a file name", dst)
    if fmt == "checkpoint":
        report = export_checkpoint(src_path, dst, half=half)
        return {"format": fmt, **report}
    model, meta = load_checkpoint(src_path, "cpu")
    if fmt == "onnx":
        from fastrcnn_cli.export.onnx_file import export_onnx

        details = export_onnx(model, meta, dst)
    else:
        from fastrcnn_cli.export.torchscript import export_torchscript

        details = export_torchscript(model, meta, dst)
    return {
        "format": fmt,
        "source": str(src_path),
        "output": str(dst),
        "bytes_before": src_path.stat().st_size,
        "bytes_after": dst.stat().st_size,
        "dtype": "float32",
        "classes": list(meta.classes),
        **details,
    }

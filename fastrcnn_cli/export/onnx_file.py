"""Writing a checkpoint's network as an ONNX file (:func:`export_onnx`).

torch.onnx's TorchScript-based exporter (``dynamo=False``) traces :class:`~fastrcnn_cli.export.graph.DeployGraph`
with dynamic image height / width and RoI count; ``torch.ops.fastrcnn.roi_pool`` becomes the standard
``MaxRoiPool`` through its registered symbolic, TF-'SAME' convolutions ``Conv(auto_pad="SAME_UPPER")``. That
exporter (not the dynamo one) is used because it needs nothing beyond torch and ``onnx``, and its custom-op
symbolics are the documented way to map an operator of our own to a standard one.

Opset :data:`OPSET`: ``MaxRoiPool`` has two versions, 1 and 22 (22 only widened the types); ONNX Runtime
implements version 1 only, so the opset must stay below 22. 17 gives the axis-wise ``Softmax`` (13) and is
read by every current runtime.
"""

from __future__ import annotations

import importlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from fastrcnn_cli import __version__
from fastrcnn_cli.errors import FastRCNNError
from fastrcnn_cli.export.graph import ROI_POOL_ONNX, DeployGraph, dynamic_same_padding
from fastrcnn_cli.export.metadata import ONNX_FORMAT, metadata_props
from fastrcnn_cli.io import atomic_write_bytes
from fastrcnn_cli.model.checkpoint import Checkpoint
from fastrcnn_cli.model.fast_rcnn import FastRCNN

OPSET = 17
INPUT_NAMES = ("image", "rois", "im_info")
OUTPUT_NAMES = ("scores", "boxes")
DYNAMIC_AXES = {"image": {0: "height", 1: "width"}, "rois": {0: "num_rois"}, "scores": {0: "num_rois"},
                "boxes": {0: "num_rois"}}


class MissingDependencyError(FastRCNNError):
    """An optional package (onnx, onnxruntime) is not installed."""


def require(module: str, purpose: str) -> Any:
    """``import module``, or a clear error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package, which is not installed: pip install 'fastrcnn[onnx]' "
            "(or pip install onnx onnxruntime)"
        ) from None


def example_inputs(height: int = 67, width: int = 93, num_rois: int = 5) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: odd sizes, so no size-dependent constant can hide behind an even default."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g)
    x1 = torch.rand(num_rois, generator=g) * width
    y1 = torch.rand(num_rois, generator=g) * height
    rois = torch.stack([x1, y1, x1 + 20, y1 + 15], dim=1)
    return image, rois, torch.tensor([float(height), float(width), 1.0])


def onnx_bytes(model: FastRCNN, opset: int = OPSET) -> bytes:
    """The serialised ONNX graph of ``model`` (no metadata yet)."""
    from fastrcnn_cli.ops import load_extension
    from fastrcnn_cli.ops.roi_pool import register_onnx_symbolic

    load_extension()  # the op is traced as itself, so it must exist (built on first use, cached)
    register_onnx_symbolic(opset)
    graph = DeployGraph(model.float().cpu().eval(), roi_pool=ROI_POOL_ONNX)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter about the TorchScript-based exporter
        with dynamic_same_padding(model, "onnx"), torch.no_grad():
            torch.onnx.export(
                graph, example_inputs(), buffer, dynamo=False, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES,
                do_constant_folding=True,
            )
    return buffer.getvalue()


def export_onnx(model: FastRCNN, meta: Checkpoint, dst: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Write ``model`` as a self-describing ONNX file at ``dst`` (atomically) and check it with
    ``onnx.checker``. Returns what was written (opset, inputs, outputs, operators used, size)."""
    onnx = require("onnx", "exporting to ONNX")
    proto = onnx.load_from_string(onnx_bytes(model, opset))
    proto.producer_name = "fastrcnn"
    proto.producer_version = __version__
    proto.doc_string = (
        f"Fast R-CNN ({meta.config.backbone.name}), {len(meta.classes)} classes: {', '.join(meta.classes)}. "
        "Inputs: image, rois, im_info; outputs: scores, boxes (see the metadata 'inputs' and 'outputs')."
    )
    del proto.metadata_props[:]
    for key, value in metadata_props(meta, ONNX_FORMAT).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write_bytes(dst, data)
    ops = sorted({n.op_type for n in proto.graph.node})
    return {"opset": opset, "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "operators": ops,
            "bytes": len(data)}

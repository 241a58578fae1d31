"""Writing a checkpoint's network as a TorchScript file (:func:`export_torchscript`).

The graph is :class:`~fastrcnn_cli.export.graph.DeployGraph` traced with torchvision's ``roi_pool`` (forward
bit-identical to our operator) and TF-'SAME' padding scripted from the runtime shape, so the file runs at any
image size and RoI count and loads with ``import torch, torchvision; torch.jit.load(path)``, no fastrcnn and no
compiler needed. The metadata of :mod:`fastrcnn_cli.export.metadata` is stored as the extra file
:data:`EXTRA_FILE` (``torch.jit.load(path, _extra_files={"fastrcnn.json": ""})`` reads it).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from fastrcnn_cli.export.graph import ROI_POOL_TORCHVISION, DeployGraph, dynamic_same_padding
from fastrcnn_cli.export.metadata import TORCHSCRIPT_FORMAT, metadata_props
from fastrcnn_cli.export.onnx_file import example_inputs
from fastrcnn_cli.io import atomic_write_bytes
from fastrcnn_cli.model.checkpoint import Checkpoint
from fastrcnn_cli.model.fast_rcnn import FastRCNN

EXTRA_FILE = "fastrcnn.json"


def export_torchscript(model: FastRCNN, meta: Checkpoint, dst: str | Path) -> dict[str, Any]:
    """Trace ``model`` into a TorchScript file at ``dst`` (atomically). Returns what was written."""
    graph = DeployGraph(model.float().cpu().eval(), roi_pool=ROI_POOL_TORCHVISION)
    extra = {EXTRA_FILE: json.dumps(metadata_props(meta, TORCHSCRIPT_FORMAT), sort_keys=True)}
    buffer = io.BytesIO()
    # warnings: TracerWarnings about shapes (the shape-dependent parts are scripted) and torch.jit's deprecation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dynamic_same_padding(model, "torchscript"), torch.no_grad():
            traced = torch.jit.trace(graph, example_inputs(), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files=extra)
    data = buffer.getvalue()
    atomic_write_bytes(dst, data)
    return {"inputs": ["image", "rois", "im_info"], "outputs": ["scores", "boxes"], "bytes": len(data)}

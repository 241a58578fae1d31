"""What an exported file says about itself: the ONNX ``metadata_props`` (TorchScript: an extra file).

Keys (all values are strings; JSON where structured)::

    fastrcnn.format          "fastrcnn-onnx" / "fastrcnn-torchscript"
    fastrcnn.format_version  "1"
    fastrcnn.checkpoint      the checkpoint's metadata, as in a .pt checkpoint (model, preprocessing, input,
                             proposals, box_coding, compression, training); detect / evaluate read this
    classes                  JSON list of the class names, background excluded (score column i + 1)
    scales, max_size         the test scale(s) and the longer-side cap the image is resized with
    proposals                JSON: the Selective Search settings the model was trained with
    box_coding               JSON: regression normalisation (folded into the weights: the graph decodes raw offsets)
    preprocessing            JSON: channel order, mean, std applied inside the graph
    inputs, outputs          what the graph takes and returns, in words (see :mod:`fastrcnn_cli.export.graph`)

Reading needs no ``onnx`` package: ONNX Runtime's ``custom_metadata_map`` gives the same strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastrcnn_cli.errors import CheckpointError
from fastrcnn_cli.model.checkpoint import Checkpoint, checkpoint_meta

ONNX_FORMAT = "fastrcnn-onnx"
TORCHSCRIPT_FORMAT = "fastrcnn-torchscript"
FORMAT_VERSION = 1
KEY_FORMAT = "fastrcnn.format"
KEY_VERSION = "fastrcnn.format_version"
KEY_CHECKPOINT = "fastrcnn.checkpoint"

INPUTS_TEXT = (
    "image: uint8 [H, W, 3] BGR (as cv2.imread gives it), resized so the shorter side is the scale and the longer "
    "at most max_size (cv2.resize, INTER_LINEAR, rounded sizes); rois: float32 [R, 4] proposals x1, y1, x2, y2 in "
    "original image pixels (0-based, inclusive); im_info: float32 [3] original height, original width, resize factor"
)
OUTPUTS_TEXT = (
    "scores: float32 [R, K+1] softmax probabilities, column 0 background, column i + 1 classes[i]; boxes: float32 "
    "[R, 4(K+1)] per-class boxes x1, y1, x2, y2 in original pixels, clipped; then per-class NMS (+1 areas) at the "
    "checkpoint entry's postprocess.nms IoU (0.3 when absent)"
)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def metadata_props(meta: Checkpoint, fmt: str) -> dict[str, str]:
    """The key -> string metadata of an exported file of format ``fmt`` (:data:`ONNX_FORMAT` or
    :data:`TORCHSCRIPT_FORMAT`)."""
    info = meta.to_dict()
    return {
        KEY_FORMAT: fmt,
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_CHECKPOINT: _json(info),
        "classes": _json(list(meta.classes)),
        "scales": _json(list(meta.scales)),
        "max_size": str(meta.max_size),
        "proposals": _json(dict(meta.proposals)),
        "box_coding": _json(dict(meta.box_coding)),
        "preprocessing": _json(meta.preprocessing.to_dict()),
        "inputs": INPUTS_TEXT,
        "outputs": OUTPUTS_TEXT,
    }


def checkpoint_from_props(props: Mapping[str, str], path: Path, fmt: str, producer: str = "") -> Checkpoint:
    """The :class:`Checkpoint` metadata an exported file carries, or a :class:`CheckpointError` naming ``path``
    when it is not a file fastrcnn exported (e.g. an ONNX model from another tool)."""
    if props.get(KEY_FORMAT) != fmt:
        made_by = f" (made by {producer})" if producer else ""
        raise CheckpointError(
            f"not a fastrcnn {'ONNX' if fmt == ONNX_FORMAT else 'TorchScript'} model{made_by}: its metadata has no "
            f"'{KEY_FORMAT}: {fmt}' entry, so its inputs, classes and test scale are unknown; export one with "
            "`fastrcnn export best.pt model.onnx`",
            path,
        )
    try:
        version = int(props.get(KEY_VERSION, "0"))
        payload = json.loads(props[KEY_CHECKPOINT])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"malformed fastrcnn metadata ({type(exc).__name__}: {exc})", path) from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"exported by a newer fastrcnn (format {version}); upgrade fastrcnn", path)
    if not isinstance(payload, dict):
        raise CheckpointError("malformed fastrcnn metadata (the checkpoint entry is not an object)", path)
    return checkpoint_meta(payload, path)

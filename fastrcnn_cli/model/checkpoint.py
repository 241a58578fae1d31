"""Self-describing checkpoints: everything detect and evaluate need, in one file.

A checkpoint is a ``torch.save``-d dict::

    format            "fastrcnn-checkpoint"
    format_version    1
    fastrcnn_version  the version that wrote it
    model             ModelConfig.to_dict(): backbone spec, classes (no background), head (hidden, RoI size, SVD ranks)
    preprocessing     how images are normalised (channel order, mean, std)
    input             {"scales": [600], "max_size": 1000}: the test scale(s) it was trained for
    postprocess       {"nms": 0.4}: the NMS IoU its training recipe tests with (absent: the paper's 0.3)
    proposals         the Selective Search settings used in training (detect uses the same by default)
    box_coding        {"means", "stds", "folded": true}: regression normalisation, already folded into bbox_pred
    state_dict        the weights (float32, or float16 for shipped models: ``dtype``)
    dtype             "float32" | "float16"
    compression       None, or what truncated SVD did (per layer: rank, shapes, energy kept)
    training          a summary: data, split, iterations, time, metrics (free-form)
    train_state       only in training checkpoints (``last``/``best``): optimiser, schedule, iteration,
                      random state and the unfolded regressor, for ``--resume``

Files are written atomically (:func:`fastrcnn_cli.io.atomic_torch_save`). Loading uses
``torch.load(weights_only=True)``: a checkpoint holds only tensors and plain data, never code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastrcnn_cli import __version__, box_coding, shipped
from fastrcnn_cli.errors import CheckpointError, MissingInputError
from fastrcnn_cli.io import atomic_torch_save
from fastrcnn_cli.model.backbones import Preprocessing
from fastrcnn_cli.model.fast_rcnn import FastRCNN, ModelConfig, build_model
from fastrcnn_cli.model.safe_load import load_weights_file
from fastrcnn_cli.versioned import FileFormat

FORMAT = "fastrcnn-checkpoint"
FORMAT_VERSION = 1
#: the header every checkpoint starts with, and its check
CHECKPOINT_FORMAT = FileFormat(
    FORMAT, FORMAT_VERSION, "fastrcnn checkpoint", error=CheckpointError,
    hint="train one with `fastrcnn train` or use the shipped weights/",
)
#: the model shipped inside the package (see weights/README.md and :mod:`fastrcnn_cli.shipped`)
DEFAULT_WEIGHTS = shipped.model_path()
WEIGHTS_ENV = "FASTRCNN_WEIGHTS"


@dataclass
class Checkpoint:
    """The metadata of a checkpoint (everything but the weights), and the path it came from."""

    config: ModelConfig
    preprocessing: Preprocessing
    scales: tuple[int, ...] = (600,)
    max_size: int = 1000
    #: the per-class NMS IoU detect and evaluate use by default (None: written before it was recorded; 0.3)
    nms: float | None = None
    proposals: dict[str, Any] = field(default_factory=dict)
    box_coding: dict[str, Any] = field(default_factory=dict)
    compression: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    path: Path | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    def to_dict(self) -> dict[str, Any]:
        return {
            **CHECKPOINT_FORMAT.header(),
            "fastrcnn_version": __version__,
            "model": self.config.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "input": {"scales": list(self.scales), "max_size": self.max_size},
            **({} if self.nms is None else {"postprocess": {"nms": float(self.nms)}}),
            "proposals": dict(self.proposals),
            "box_coding": dict(self.box_coding),
            "compression": self.compression,
            "training": dict(self.training),
            "dtype": self.dtype,
        }


def default_weights_path() -> Path:
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else DEFAULT_WEIGHTS


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The weights file given (it must exist), else the shipped model (or ``FASTRCNN_WEIGHTS``); when that one is
    missing, a :class:`MissingInputError` naming the ``weights`` field and saying what to do."""
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise CheckpointError("no such weights file", path)
        return path
    path = default_weights_path()
    if not path.exists():
        if os.environ.get(WEIGHTS_ENV):
            raise MissingInputError("weights", f"none given, and {WEIGHTS_ENV} names {path}, which does not exist")
        raise MissingInputError(
            "weights",
            f"none given and the shipped model is missing ({path}); give a checkpoint (e.g. runs/train/best.pt), "
            f"set {WEIGHTS_ENV}, or reinstall fastrcnn (its wheel carries the model)",
        )
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: FastRCNN,
    meta: Checkpoint,
    *,
    normalised_regressor: bool = True,
    half: bool = False,
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically. With ``normalised_regressor`` the model's bbox_pred predicts normalised
    offsets (as during training) and the normalisation is folded into the saved weights."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if normalised_regressor:
        w, b = box_coding.fold_normalisation(state["bbox_pred.weight"], state["bbox_pred.bias"])
        state["bbox_pred.weight"], state["bbox_pred.bias"] = w, b
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = meta.to_dict()
    payload["dtype"] = "float16" if half else "float32"
    payload["box_coding"] = {"means": list(box_coding.BBOX_MEANS), "stds": list(box_coding.BBOX_STDS), "folded": True}
    payload["state_dict"] = state
    if train_state is not None:
        payload["train_state"] = train_state
    atomic_torch_save(path, payload)


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw dict of a checkpoint file, with clear errors for anything that is not one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such weights file", path)
    # tensors and plain data only, never pickled code; says "truncated or corrupt" for a damaged file
    try:
        payload = load_weights_file(path, CheckpointError)
    except CheckpointError as exc:
        detail = str(exc)[len(str(path)) + 2 :] if exc.path else str(exc)
        if "truncated" in detail or "corrupt" in detail or "cannot be read" in detail:
            raise
        raise CheckpointError(f"not a fastrcnn checkpoint: it {detail}", path) from None
    CHECKPOINT_FORMAT.check(payload, path)
    return payload


def checkpoint_meta(payload: dict[str, Any], path: Path | None = None) -> Checkpoint:
    try:
        config = ModelConfig.from_dict(payload["model"])
        inp = payload.get("input") or {}
        nms = (payload.get("postprocess") or {}).get("nms")
        if nms is not None and not 0.0 < float(nms) <= 1.0:
            raise ValueError(f"postprocess.nms must be in (0, 1], not {nms!r}")
        return Checkpoint(
            config=config,
            preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
            scales=tuple(int(s) for s in inp.get("scales", (600,))),
            max_size=int(inp.get("max_size", 1000)),
            nms=None if nms is None else float(nms),
            proposals=dict(payload.get("proposals") or {}),
            box_coding=dict(payload.get("box_coding") or {}),
            compression=payload.get("compression"),
            training=dict(payload.get("training") or {}),
            dtype=str(payload.get("dtype", "float32")),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed fastrcnn checkpoint ({type(exc).__name__}: {exc})", path) from None


def load_checkpoint(
    path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> tuple[FastRCNN, Checkpoint]:
    """The model (float32, eval mode, on ``device``) and its metadata. ``None`` loads the shipped model."""
    path = resolve_weights(path)
    payload = read_checkpoint_file(path)
    return model_from_payload(payload, path, device)


def model_from_payload(
    payload: dict[str, Any], path: Path | None = None, device: torch.device | str = "cpu"
) -> tuple[FastRCNN, Checkpoint]:
    """Build the model a checkpoint's dict describes and load its weights (as float32, eval mode)."""
    meta = checkpoint_meta(payload, path)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError("malformed fastrcnn checkpoint (no state_dict)", path)
    model = build_model(meta.config, pretrained=False)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(floats, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit the model it describes ({str(exc).splitlines()[0]})", path) from None
    model.eval().to(device)
    return model, meta


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, half: bool = True) -> dict[str, Any]:
    """A checkpoint for shipping: no training state (optimiser, random states), weights in float16 if ``half``.

    Returns sizes before and after. The metadata (model, classes, preprocessing, training summary) is kept.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("refusing to overwrite the input; choose another output file", dst)
    payload = read_checkpoint_file(src)
    payload.pop("train_state", None)
    if half:
        payload["state_dict"] = {
            k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
        }
        payload["dtype"] = "float16"
    atomic_torch_save(dst, payload)
    return {"source": str(src), "output": str(dst), "bytes_before": src.stat().st_size,
            "bytes_after": dst.stat().st_size, "dtype": payload.get("dtype", "float32")}

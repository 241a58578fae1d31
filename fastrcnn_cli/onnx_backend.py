"""Running an exported ONNX detector with ONNX Runtime, behind the same :class:`~fastrcnn_cli.detect.Detector`.

:class:`OnnxNetwork` is the ONNX Runtime side of the Detector's network interface
(:class:`fastrcnn_cli.detect.NetworkBackend`): given the BGR image and its proposals it returns the class
probabilities and the regressed, clipped boxes of every proposal, exactly what the PyTorch path's
``scores_and_boxes`` returns, so proposals, NMS, thresholds and every output format are the same code. Per test
scale, the image is resized with OpenCV (as the PyTorch path does) and one ``session.run`` does the rest (see
:mod:`fastrcnn_cli.export.graph`); the proposals are not de-duplicated first (the graph decodes each against its
own box). Nothing here needs the RoI pooling operator, a compiler or the ``onnx`` package: ``onnxruntime`` and
numpy only (``pip install 'fastrcnn[onnx]'``).

:func:`load_network` is what the commands call for ``--weights``: an ``.onnx`` file gives an
:class:`OnnxNetwork`, anything else the checkpoint's PyTorch model; both come with the same
:class:`~fastrcnn_cli.model.checkpoint.Checkpoint` metadata.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrcnn_cli import progress
from fastrcnn_cli.detect import DetectSettings, StageTimes, map_to_scales
from fastrcnn_cli.errors import CheckpointError
from fastrcnn_cli.export.metadata import ONNX_FORMAT, checkpoint_from_props
from fastrcnn_cli.model.checkpoint import Checkpoint, load_checkpoint, resolve_weights
from fastrcnn_cli.model.fast_rcnn import ModelConfig, resize_image, scale_factor

ONNX_SUFFIX = ".onnx"
RUNTIME_NAME = "ONNX Runtime"


def is_onnx_path(path: str | os.PathLike | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ONNX_SUFFIX


def _providers(device: torch.device | str, available: list[str]) -> list[str]:
    """ONNX Runtime's execution providers for ``device``: CUDA's when asked for and installed (nodes it lacks,
    such as MaxRoiPool, then run on the CPU provider), else the CPU's, with a warning when CUDA was asked for."""
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        progress.warn(f"ONNX Runtime here has no CUDA provider (it has: {', '.join(available)}; onnxruntime-gpu has one): "
             "the ONNX model runs on the CPU")
    return ["CPUExecutionProvider"]


class OnnxNetwork:
    """An ONNX Runtime session of a file written by ``fastrcnn export ... model.onnx``, plus its metadata."""

    runtime = RUNTIME_NAME

    def __init__(self, session: Any, meta: Checkpoint, path: Path) -> None:
        self.session = session
        self.meta = meta
        self.path = path
        self.config: ModelConfig = meta.config
        self.spatial_scale = 1.0 / 16  # every backbone of fastrcnn has stride 16
        self.provider = session.get_providers()[0]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.meta.classes

    def run(self, resized: np.ndarray, proposals: np.ndarray, height: int, width: int, factor: float
            ) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the graph: scores [R, K+1] and boxes [R, 4(K+1)] for ``proposals`` (original pixels)."""
        feed = {
            "image": np.ascontiguousarray(resized, dtype=np.uint8),
            "rois": np.ascontiguousarray(proposals, dtype=np.float32),
            "im_info": np.array([height, width, factor], np.float32),
        }
        scores, boxes = self.session.run(["scores", "boxes"], feed)
        return scores, boxes

    def scores_and_boxes(self, image: np.ndarray, proposals: np.ndarray, settings: DetectSettings, times: StageTimes
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The :class:`~fastrcnn_cli.detect.NetworkBackend` call: per test scale, resize (``times.preprocess``)
        and run the graph on the proposals assigned to that scale (``times.backbone``: the whole graph, backbone,
        RoI pooling, heads and decoding; ``times.head`` stays 0)."""
        height, width = image.shape[:2]
        t = time.perf_counter()
        factors = [scale_factor(height, width, s, settings.max_size) for s in settings.scale]
        levels = map_to_scales(proposals, factors)
        times.preprocess += time.perf_counter() - t
        k = self.config.num_classes
        probs = np.zeros((len(proposals), k), np.float32)
        boxes = np.zeros((len(proposals), 4 * k), np.float32)
        for level, factor in enumerate(factors):
            idx = np.nonzero(levels == level)[0]
            if len(idx) == 0:
                continue
            t = time.perf_counter()
            resized = resize_image(image, factor)
            times.preprocess += time.perf_counter() - t
            t = time.perf_counter()
            probs[idx], boxes[idx] = self.run(resized, proposals[idx], height, width, factor)
            times.backbone += time.perf_counter() - t
        return torch.from_numpy(probs), torch.from_numpy(boxes)


def load_onnx(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[OnnxNetwork, Checkpoint]:
    """An :class:`OnnxNetwork` for ``path`` and its metadata; clear :class:`CheckpointError` for a missing or
    unreadable file, one that is not ONNX, or an ONNX model that fastrcnn did not export."""
    from fastrcnn_cli.export.onnx_file import require

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such ONNX file" if not path.exists() else "is a folder, not an ONNX file", path)
    ort = require("onnxruntime", "running an ONNX model")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers on stderr
    threads = torch.get_num_threads()
    options.intra_op_num_threads = threads  # as many as torch uses (--threads), so the two compare fairly
    try:
        session = ort.InferenceSession(str(path), options, providers=_providers(device, ort.get_available_providers()))
    except Exception as exc:  # noqa: BLE001 - any load failure of the runtime: not a usable ONNX file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"ONNX Runtime cannot load this file ({first[:300]})", path) from None
    model_meta = session.get_modelmeta()
    meta = checkpoint_from_props(model_meta.custom_metadata_map, path, ONNX_FORMAT, model_meta.producer_name)
    names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if names != (["image", "rois", "im_info"], ["scores", "boxes"]):
        raise CheckpointError(
            f"its inputs {names[0]} and outputs {names[1]} are not those of a fastrcnn export "
            "(image, rois, im_info -> scores, boxes)",
            path,
        )
    return OnnxNetwork(session, meta, path), meta


def load_network(weights: str | os.PathLike | None, device: torch.device | str = "cpu") -> tuple[Any, Checkpoint]:
    """``--weights``: an ``.onnx`` file runs in ONNX Runtime (:class:`OnnxNetwork`), anything else is a fastrcnn
    checkpoint (the PyTorch model); None is the shipped model. Returns (network, metadata)."""
    path = resolve_weights(weights)
    if is_onnx_path(path):
        return load_onnx(path, device)
    if path.suffix.lower() == ".torchscript":
        raise CheckpointError(
            "is a TorchScript export; detect, evaluate and benchmark run a fastrcnn checkpoint (.pt) or an ONNX "
            "export (.onnx); load TorchScript files with torch.jit.load",
            path,
        )
    return load_checkpoint(path, device)

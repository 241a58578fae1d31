"""``vgg16``: the paper's network ("L"), torchvision's VGG16 cut before pool5, and its ImageNet weights.

torchvision's VGG16 ``features`` from conv1_1 to conv5_3 + ReLU; the last max pool (pool5) is dropped, so the
map has stride 16 and 512 channels. RoI pooling to 7 x 7 replaces pool5, and fc6/fc7 are initialised from the
ImageNet classifier (``classifier[0]`` and ``classifier[3]``), as in the paper. conv1_1 .. conv2_2 are frozen
by default: "learning starts at conv3_1". torchvision's pooling rounds down (floor mode), so a 600 x 1000 image
gives a 37 x 62 map where Caffe's ceil-mode VGG16 gave 38 x 63.

Preprocessing: torchvision's ImageNet normalisation (:data:`TORCHVISION_IMAGENET`: RGB, mean
0.485/0.456/0.406 and std 0.229/0.224/0.225 times 255). The original Fast R-CNN used the Caffe VGG16, which
takes BGR with the pixel means 102.98/115.95/122.77 subtracted and no scaling; we use torchvision's weights,
which were trained on RGB input normalised by the ImageNet std, so their preprocessing is the one that fits.

The weights come from, in order: a file the caller names, the torch hub cache, a download (unless
``FASTRCNN_OFFLINE`` forbids it, :mod:`.weights`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrcnn_cli import progress
from fastrcnn_cli.errors import FastRCNNError, InputError
from fastrcnn_cli.model.backbones.base import Backbone
from fastrcnn_cli.model.backbones.preprocessing import Preprocessing
from fastrcnn_cli.model.backbones.spec import BackboneSpec
from fastrcnn_cli.model.backbones.weights import OFFLINE_ENV, downloads_allowed, unwrap_state_dict
from fastrcnn_cli.model.safe_load import load_weights_file

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"

#: torchvision's ImageNet normalisation, in 0..255 units (used by its VGG16 weights)
TORCHVISION_IMAGENET = Preprocessing(
    "RGB", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
)

# VGG16 configuration "D": output channels of each 3x3 conv, "M" for a 2x2 max pool; torchvision's layout
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                     512, 512, 512)  # pool5 dropped
#: index in ``features`` where each conv block (conv1 .. conv5) starts
_VGG16_BLOCK_STARTS = (0, 5, 10, 17, 24, 30)


class VGG16Backbone(Backbone):
    """conv1_1 .. conv5_3 + ReLU of torchvision's VGG16 (``features[:30]``, same indices and names).

    NCHW: on CPU, channels_last made the forward pass a little faster but forward + backward more than twice
    as slow (``docs/measurements.md``).
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__(spec, 512, TORCHVISION_IMAGENET)
        layers: list[nn.Module] = []
        in_channels = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_channels = int(v)
        self.features = nn.Sequential(*layers)
        self.freeze()

    def frozen_modules(self) -> list[nn.Module]:
        end = _VGG16_BLOCK_STARTS[self.spec.frozen_stages or 0]
        return list(self.features[:end])

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        for _ in range(4):  # four 2x2 max pools, floor mode
            height, width = height // 2, width // 2
        return height, width


def build_vgg16(spec: BackboneSpec, *, pretrained: bool, weights_path: str | os.PathLike | None,
                allow_download: bool | None) -> tuple[VGG16Backbone, dict[str, torch.Tensor] | None]:
    """The backbone and, with ``pretrained``, fc6/fc7 initialised from the ImageNet classifier (see
    :func:`~fastrcnn_cli.model.backbones.build_backbone`)."""
    backbone = VGG16Backbone(spec)
    if not pretrained:
        return backbone, None
    state = load_vgg16_state_dict(weights_path, allow_download=allow_download)
    backbone.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=True)
    fc = {"fc6.weight": state["classifier.0.weight"], "fc6.bias": state["classifier.0.bias"],
          "fc7.weight": state["classifier.3.weight"], "fc7.bias": state["classifier.3.bias"]}
    return backbone, {k: v.clone() for k, v in fc.items()}


def vgg16_hub_path() -> Path:
    """Where torch (and torchvision) cache the VGG16 weights: ``<torch hub dir>/checkpoints/vgg16-397923af.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def _missing_message(cached: Path, reason: str) -> str:
    return (
        f"no ImageNet weights for vgg16 ({reason}). Put torchvision's VGG16 weights file {VGG16_FILENAME} "
        f"(528 MB) at {cached}, e.g. 'curl -L --create-dirs -o {cached} {VGG16_URL}' on a machine with internet "
        "access, or give a local VGG16 weights file as the backbone weights (backbone_weights)"
    )


def load_vgg16_state_dict(weights_path: str | os.PathLike | None = None, *,
                          allow_download: bool | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 state dict, from (in order) ``weights_path``, the torch hub cache, a download.

    ``weights_path`` holds a state dict (possibly under a ``"state_dict"`` or ``"model"`` key), read without
    unpickling any object (a whole pickled model is refused with the command that converts a trusted one).
    ``allow_download=None`` follows :func:`~fastrcnn_cli.model.backbones.weights.downloads_allowed`.
    """
    if weights_path is not None:
        return _check_state_dict(load_weights_file(Path(weights_path)), weights_path)
    cached = vgg16_hub_path()
    if cached.is_file():
        return _check_state_dict(load_weights_file(cached), cached)
    if allow_download is None:
        allow_download = downloads_allowed()
    if not allow_download:
        raise FastRCNNError(_missing_message(cached, f"not in the torch hub cache, and {OFFLINE_ENV} forbids "
                                                     "downloading it"))
    progress.info(f"downloading the VGG16 ImageNet weights from {VGG16_URL} to {cached}")
    try:
        state = torch.hub.load_state_dict_from_url(VGG16_URL, progress=progress.live(), check_hash=True,
                                                   map_location="cpu")
    except Exception as exc:  # URLError, HTTPError, OSError, a hash mismatch (RuntimeError)
        raise FastRCNNError(_missing_message(cached, f"the download failed: {exc}")) from exc
    return _check_state_dict(state, cached)


def _feature_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    index, in_channels = 0, 3
    for v in _VGG16_CFG:
        if v == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (int(v), in_channels, 3, 3)
        shapes[f"features.{index}.bias"] = (int(v),)
        index, in_channels = index + 2, int(v)  # conv, ReLU
    return shapes


def _check_state_dict(obj: Any, path: object) -> dict[str, torch.Tensor]:
    state = unwrap_state_dict(obj)
    if not isinstance(state, Mapping):
        raise InputError(f"not a VGG16 state dict (found a {type(state).__name__})", path)
    shapes = _feature_shapes() | {"classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
                                  "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)}
    for key, shape in shapes.items():
        if key not in state:
            raise InputError(f"not a torchvision VGG16 state dict: no '{key}'", path)
        if tuple(state[key].shape) != shape:
            raise InputError(f"not a torchvision VGG16 state dict: '{key}' has shape {tuple(state[key].shape)}, "
                             f"expected {shape}", path)
    return {k: state[k].float() for k in shapes}

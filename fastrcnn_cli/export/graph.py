"""The deployable network: everything after the proposals, as one traceable module (:class:`DeployGraph`).

Inputs and outputs (the same for the ONNX and the TorchScript export)::

    image    uint8 [H, W, 3]   the BGR image (as OpenCV reads it), already resized to the test scale
    rois     float32 [R, 4]    proposals x1, y1, x2, y2 in ORIGINAL image pixels (0-based, inclusive corners)
    im_info  float32 [3]       original height, original width, resize factor (Caffe's ``im_info``)
    ->
    scores   float32 [R, K+1]  softmax class probabilities, column 0 the background
    boxes    float32 [R, 4(K+1)]  class-specific regressed boxes in original pixels, clipped to the image

Inside: channel order and ``(pixel - mean) / std`` (the checkpoint's preprocessing), the backbone, RoI max
pooling of ``rois * factor`` (batch index 0) out of the stride-16 map, fc6 / fc7 (or their truncated-SVD
pairs), the two sibling layers, softmax, box decoding relative to the original-pixel proposals and clipping.
Every step is the arithmetic the PyTorch path of :class:`fastrcnn_cli.detect.Detector` does, in the same
order and dtype, so the two agree to rounding (the resize stays outside: it is OpenCV's, on both paths).

Two pieces need care to export with dynamic image sizes:

- TensorFlow 'SAME' padding of EfficientNet's stride-2 convolutions depends on the parity of the input size
  (:class:`~fastrcnn_cli.model.backbones.Conv2dSame` computes it in Python, which a trace would freeze). For ONNX
  such a convolution becomes one ``Conv`` with ``auto_pad="SAME_UPPER"``, which is exactly TF 'SAME' (the
  extra pixel after); for TorchScript the padding is a scripted function of the runtime shape.
- RoI pooling: for ONNX ``torch.ops.fastrcnn.roi_pool`` is translated to the standard ``MaxRoiPool``
  (:func:`fastrcnn_cli.ops.roi_pool.register_onnx_symbolic`); the TorchScript file calls torchvision's
  ``roi_pool`` (forward bit-identical to ours), so it loads with ``import torchvision`` and no fastrcnn.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from fastrcnn_cli.box_coding import MAX_LOG_SCALE
from fastrcnn_cli.boxes import PIXEL
from fastrcnn_cli.model.backbones import Conv2dSame
from fastrcnn_cli.model.fast_rcnn import FastRCNN

#: how the RoI pooling is written into the exported graph
ROI_POOL_ONNX = "onnx"  #: torch.ops.fastrcnn.roi_pool, translated to ONNX MaxRoiPool
ROI_POOL_TORCHVISION = "torchvision"  #: torchvision.ops.roi_pool (TorchScript files)


def decode_boxes(proposals: Tensor, deltas: Tensor, num_classes: int) -> Tensor:
    """:func:`fastrcnn_cli.box_coding.decode` written without in-place slice writes (which exporters turn into
    scatters): the same operations in the same order, so the same floats. proposals [R, 4], deltas [R, 4K]."""
    pw = proposals[:, 2:3] - proposals[:, 0:1] + PIXEL
    ph = proposals[:, 3:4] - proposals[:, 1:2] + PIXEL
    px = proposals[:, 0:1] + 0.5 * pw
    py = proposals[:, 1:2] + 0.5 * ph
    d = deltas.reshape(-1, num_classes, 4)
    dx, dy = d[:, :, 0], d[:, :, 1]
    dw = d[:, :, 2].clamp(max=MAX_LOG_SCALE)
    dh = d[:, :, 3].clamp(max=MAX_LOG_SCALE)
    cx, cy = dx * pw + px, dy * ph + py
    w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - PIXEL, cy + 0.5 * h - PIXEL], dim=2)


def clip_boxes(boxes: Tensor, width: Tensor, height: Tensor) -> Tensor:
    """Clip [R, K, 4] boxes to (0, 0, W - 1, H - 1), ``width`` / ``height`` 0-d tensors (dynamic in the graph)."""
    zero = torch.zeros((), dtype=boxes.dtype)
    xs = torch.minimum(torch.maximum(boxes[:, :, 0::2], zero), width - PIXEL)
    ys = torch.minimum(torch.maximum(boxes[:, :, 1::2], zero), height - PIXEL)
    return torch.stack([xs[:, :, 0], ys[:, :, 0], xs[:, :, 1], ys[:, :, 1]], dim=2)


class DeployGraph(nn.Module):
    """A loaded :class:`FastRCNN` (eval mode, float32, CPU) as the graph described in the module docstring."""

    def __init__(self, model: FastRCNN, roi_pool: str = ROI_POOL_ONNX) -> None:
        super().__init__()
        if roi_pool not in (ROI_POOL_ONNX, ROI_POOL_TORCHVISION):
            raise ValueError(f"roi_pool must be {ROI_POOL_ONNX!r} or {ROI_POOL_TORCHVISION!r}, not {roi_pool!r}")
        self.model = model.eval()
        self.roi_pool_impl = roi_pool
        pre = model.preprocessing
        self.rgb = pre.channel_order == "RGB"
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("bgr_to_rgb", torch.tensor([2, 1, 0], dtype=torch.int64), persistent=False)
        self.num_classes = model.config.num_classes
        self.pooled = (model.config.head.roi_size, model.config.head.roi_size)
        self.spatial_scale = float(model.spatial_scale)

    def preprocess(self, image: Tensor) -> Tensor:
        """uint8 [H, W, 3] BGR -> the normalised network input [1, 3, H, W] (Preprocessing.image_to_tensor)."""
        x = image.permute(2, 0, 1)
        if self.rgb:
            x = x.index_select(0, self.bgr_to_rgb)
        x = x.float()
        return ((x - self.mean) / self.std).unsqueeze(0)

    def pool(self, features: Tensor, rois: Tensor) -> Tensor:
        if self.roi_pool_impl == ROI_POOL_TORCHVISION:
            return torchvision.ops.roi_pool(features, rois, self.pooled, self.spatial_scale)
        return torch.ops.fastrcnn.roi_pool(features, rois, self.spatial_scale, *self.pooled)[0]

    def forward(self, image: Tensor, rois: Tensor, im_info: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.features(self.preprocess(image))
        scaled = rois * im_info[2]
        rois5 = torch.cat([torch.zeros_like(scaled[:, :1]), scaled], dim=1)
        logits, deltas = self.model.classify(self.pool(features, rois5))
        scores = torch.softmax(logits, dim=1)
        boxes = decode_boxes(rois, deltas, self.num_classes)
        boxes = clip_boxes(boxes, im_info[1], im_info[0])
        return scores, boxes.reshape(-1, 4 * self.num_classes)


# ---------------------------------------------------------------------------------------------------------------
# TF 'SAME' convolutions with the padding computed from the runtime shape


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class _SameUpperConv(torch.autograd.Function):
    """A TF-'SAME' convolution (no bias) that the ONNX exporter writes as ``Conv(auto_pad="SAME_UPPER")``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: tuple[int, int], dilation: tuple[int, int],  # noqa: ANN001
                groups: int) -> Tensor:
        k = weight.shape[-2:]
        top, bottom = _same_pads(int(x.shape[-2]), int(k[0]), stride[0], dilation[0])
        left, right = _same_pads(int(x.shape[-1]), int(k[1]), stride[1], dilation[1])
        return F.conv2d(F.pad(x, [left, right, top, bottom]), weight, None, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, stride, dilation, groups):  # noqa: ANN001, ANN205 - torch.onnx's signature
        kernel = weight.type().sizes()[-2:]
        return g.op("Conv", x, weight, auto_pad_s="SAME_UPPER", kernel_shape_i=list(kernel),
                    strides_i=list(stride), dilations_i=list(dilation), group_i=groups)


def _onnx_same_forward(self: Conv2dSame, x: Tensor) -> Tensor:
    return _SameUpperConv.apply(x, self.weight, tuple(self.stride), tuple(self.dilation), self.groups)


def _scripted_same_pad():  # noqa: ANN202 - a torch.jit.ScriptFunction
    def same_pad(x: Tensor, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> Tensor:
        ih, iw = x.size(2), x.size(3)
        th = max((-(-ih // sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        tw = max((-(-iw // sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        return F.pad(x, [tw // 2, tw - tw // 2, th // 2, th - th // 2])

    return torch.jit.script(same_pad)


def _torchscript_same_forward(pad):  # noqa: ANN001, ANN202
    def forward(self: Conv2dSame, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        x = pad(x, kh, kw, sh, sw, dh, dw)
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)

    return forward


@contextlib.contextmanager
def dynamic_same_padding(model: nn.Module, target: str) -> Iterator[int]:
    """While active, every stride-2 TF-'SAME' convolution of ``model`` pads from the runtime shape in a way the
    ``target`` ("onnx" or "torchscript") exporter keeps; yields how many were switched. Restores them after."""
    convs = [m for m in model.modules() if isinstance(m, Conv2dSame) and m.dynamic_same]
    if target == "onnx":
        forward = _onnx_same_forward
    elif target == "torchscript":
        forward = _torchscript_same_forward(_scripted_same_pad())
    else:
        raise ValueError(f"target must be 'onnx' or 'torchscript', not {target!r}")
    for conv in convs:
        conv.forward = types.MethodType(forward, conv)  # type: ignore[method-assign]
    try:
        yield len(convs)
    finally:
        for conv in convs:
            del conv.forward  # back to the class's forward

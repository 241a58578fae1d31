"""RoI max pooling (Fast R-CNN, section 2.1): ``roi_pool`` and the ``RoIPool`` module.

Each RoI ``(x1, y1, x2, y2)`` (input-image pixels, inclusive corners as everywhere in fastrcnn, see
:mod:`fastrcnn_cli.boxes`) is projected onto the feature map with ``spatial_scale`` (1/16 for VGG16 conv5),
divided into an ``ph x pw`` grid of bins, and each bin is max-pooled, channel by channel. The exact arithmetic
(Caffe's, bit-identical to ``torchvision.ops.roi_pool``) is written down in :mod:`fastrcnn_cli.ops.reference`.

The work is done by the native operator ``torch.ops.fastrcnn.roi_pool`` (C++ / CUDA, see ``csrc/``), built on first
use by :mod:`fastrcnn_cli.ops._extension`; if it cannot be built, by the pure-PyTorch reference (with a warning).
The operator has fake (meta) kernels and an autograd formula registered here, so it works with autograd, meta
tensors, ``torch.compile`` and ``torch.library.opcheck``; the backward is itself differentiable. When no gradient
is wanted (``torch.no_grad``, inference mode, or an input that does not require one), ``roi_pool`` calls
``torch.ops.fastrcnn.roi_pool_inference`` instead: the same values, bit for bit, without computing or storing
the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastrcnn_cli.ops import _extension
from fastrcnn_cli.ops.reference import roi_pool_reference

__all__ = ["RoIPool", "roi_pool", "rois_from_boxes"]


def rois_from_boxes(boxes: Sequence[Tensor], dtype: torch.dtype | None = None) -> Tensor:
    """Per-image boxes (a list of [L_i, 4] tensors) to one [K, 5] tensor of (batch_index, x1, y1, x2, y2)."""
    if len(boxes) == 0:
        return torch.zeros((0, 5), dtype=dtype or torch.float32)
    dtype = dtype or boxes[0].dtype
    device = boxes[0].device
    parts = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"roi_pool: boxes[{i}] must be a [L, 4] tensor of (x1, y1, x2, y2), got {tuple(b.shape)}")
        b = b.to(device=device, dtype=dtype)
        parts.append(torch.cat([torch.full_like(b[:, :1], i), b], dim=1))
    return torch.cat(parts, dim=0)


def _pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    sizes = [output_size] * 2 if isinstance(output_size, int) else [int(s) for s in output_size]
    if len(sizes) != 2 or min(sizes) <= 0:
        raise ValueError(f"roi_pool: output_size must be a positive int or (height, width), got {output_size!r}")
    return sizes[0], sizes[1]


def roi_pool(
    input: Tensor,
    rois: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Max-pool every RoI of ``rois`` from the feature map ``input`` into an ``output_size`` grid.

    Args:
        input: [N, C, H, W] feature maps, float32, float64, float16 or bfloat16, contiguous or channels-last.
        rois: a [K, 5] tensor of (batch_index, x1, y1, x2, y2), or a list of N [L_i, 4] tensors of
            (x1, y1, x2, y2), one per image. Converted to ``input``'s dtype and device (the kernels compute the
            bins in the input's dtype, as torchvision does), except float32 RoIs with a float16 or bfloat16
            input (mixed precision): the bins are then placed in float32 and the output has the input's dtype.
        output_size: ``ph`` or ``(ph, pw)``.
        spatial_scale: feature-map cells per input pixel (1/16 for VGG16 conv5).

    Returns:
        [K, C, ph, pw], differentiable in ``input``.

    Raises:
        ValueError: bad shapes, or a RoI whose batch index names no image of ``input``.
    """
    if not isinstance(input, Tensor) or input.dim() != 4:
        raise ValueError(f"roi_pool: input must be a [N, C, H, W] tensor, got {_describe(input)}")
    if not input.is_floating_point():
        raise ValueError(f"roi_pool: input must be a floating-point tensor, got {input.dtype}")
    if isinstance(rois, Tensor):
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"roi_pool: rois must be a [K, 5] tensor of (batch_index, x1, y1, x2, y2) or a list of [L, 4] "
                f"boxes per image, got a tensor of shape {tuple(rois.shape)}"
            )
        if input.dtype in _LOW_PRECISION and rois.dtype == torch.float32:
            # low-precision features (autocast) with float32 boxes: the bins are placed in float32 (bfloat16 would
            # round a coordinate of 800 to a multiple of 4, float16 of 1500 to 1). A max is exact in any type,
            # so pooling the upcast features and casting back gives the low-precision type's own values.
            return roi_pool(input.float(), rois, output_size, spatial_scale).to(input.dtype)
        rois = rois.to(device=input.device, dtype=input.dtype)
    else:
        rois = rois_from_boxes(list(rois), dtype=input.dtype).to(input.device)
    ph, pw = _pair(output_size)
    spatial_scale = float(spatial_scale)
    if not spatial_scale > 0 or spatial_scale == float("inf"):
        raise ValueError(f"roi_pool: spatial_scale must be positive and finite, got {spatial_scale}")
    if input.is_cuda and not torch.compiler.is_compiling():
        check_rois(rois, input.shape[0], spatial_scale)
    if _extension.native_available(input.device.type):
        if _needs_argmax(input):
            output, _ = torch.ops.fastrcnn.roi_pool(input, rois, spatial_scale, ph, pw)
            return output
        return torch.ops.fastrcnn.roi_pool_inference(input, rois, spatial_scale, ph, pw)
    output, _ = roi_pool_reference(input, rois, (ph, pw), spatial_scale)
    return output


_LOW_PRECISION = (torch.float16, torch.bfloat16)


class RoIPool(nn.Module):
    """The RoI max pooling layer of Fast R-CNN: ``RoIPool(7, 1 / 16)(features, rois)``."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


#: |coordinate x spatial scale| must stay below this (as ``kMaxScaledCoordinate`` in csrc/roi_pool_checks.h)
MAX_SCALED_COORDINATE = 268435456.0  # 2^28


def check_rois(rois: Tensor, batch_size: int, spatial_scale: float) -> None:
    """Raise ValueError, with the C++ operator's message, for the first RoI whose batch index names no image of
    the batch or whose coordinates are not finite or huge. One synchronisation on a GPU.

    The operator checks the same; :func:`roi_pool` checks here first on CUDA so that a bad RoI is a Python error
    even where the check inside the CUDA operator cannot run (an error thrown from inside the CUDA operator
    has crashed the process: ``docs/measurements.md``).
    """
    if rois.shape[0] == 0:
        return
    b = rois[:, 0]
    b_ok = (b > -1) & (b < batch_size)
    good = b_ok & ((rois[:, 1:].double() * spatial_scale).abs() < MAX_SCALED_COORDINATE).all(dim=1)
    if bool(good.all()):
        return
    k = int((~good).int().argmax())
    row = [float(v) for v in rois[k].double().cpu()]
    if not bool(b_ok[k]):
        raise ValueError(
            f"roi_pool: rois[{k}, 0] = {row[0]:g} is not a batch index of the input (batch size {batch_size})"
        )
    bad = next(v for v in row[1:] if not abs(v * spatial_scale) < MAX_SCALED_COORDINATE)
    raise ValueError(f"roi_pool: rois[{k}] has a non-finite or huge coordinate ({bad:g})")


def register_onnx_symbolic(opset: int) -> None:
    """Teach torch.onnx's TorchScript-based exporter (``dynamo=False``) to write ``torch.ops.fastrcnn.roi_pool``
    (and ``roi_pool_inference``) as the standard ONNX ``MaxRoiPool`` (rois [K, 5]: batch index, x1, y1, x2, y2; ``pooled_shape``,
    ``spatial_scale``), so an exported model needs no custom domain. The argmax output has no ONNX counterpart
    (it only serves the backward). ONNX Runtime's MaxRoiPool kernel does Caffe's arithmetic (C ``round`` of the
    scaled corners, +1 sizes, float bins, floor / ceil, empty bins 0): see :mod:`fastrcnn_cli.export`."""
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx.symbolic_helper import parse_args

    @parse_args("v", "v", "f", "i", "i")
    def symbolic(g, input, rois, spatial_scale, pooled_height, pooled_width):  # noqa: ANN001, ANN202
        pooled = g.op("MaxRoiPool", input, rois, pooled_shape_i=[pooled_height, pooled_width],
                      spatial_scale_f=spatial_scale)
        return pooled, None

    @parse_args("v", "v", "f", "i", "i")
    def symbolic_inference(g, input, rois, spatial_scale, pooled_height, pooled_width):  # noqa: ANN001, ANN202
        return g.op("MaxRoiPool", input, rois, pooled_shape_i=[pooled_height, pooled_width],
                    spatial_scale_f=spatial_scale)

    register_custom_op_symbolic("fastrcnn::roi_pool", symbolic, opset)
    register_custom_op_symbolic("fastrcnn::roi_pool_inference", symbolic_inference, opset)


def _needs_argmax(input: Tensor) -> bool:
    """Whether the forward must keep the argmax: a gradient will flow to ``input``. Otherwise (inference, or
    ``torch.no_grad``) ``roi_pool_inference`` gives the same values without computing or writing it. Tracing
    for export keeps ``roi_pool`` (the operator the exporters know)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return torch.is_grad_enabled() and input.requires_grad


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__


# ----------------------------------------------------------------------------------------------------------
# fake kernels and autograd of torch.ops.fastrcnn.*, registered once the native library is loaded

_registered = False


def _register_python_parts() -> None:
    """Register fake kernels and autograd for the fastrcnn ops (called by _extension after loading them)."""
    global _registered
    if _registered:
        return
    _registered = True

    @torch.library.register_fake("fastrcnn::roi_pool")
    def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
        torch._check(input.dim() == 4, lambda: "roi_pool: input must be [N, C, H, W]")
        torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "roi_pool: rois must be [K, 5]")
        torch._check(input.dtype == rois.dtype, lambda: "roi_pool: input and rois must have the same dtype")
        shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
        return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)

    @torch.library.register_fake("fastrcnn::roi_pool_inference")
    def _roi_pool_inference_fake(input, rois, spatial_scale, pooled_height, pooled_width):
        torch._check(input.dim() == 4, lambda: "roi_pool: input must be [N, C, H, W]")
        torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "roi_pool: rois must be [K, 5]")
        torch._check(input.dtype == rois.dtype, lambda: "roi_pool: input and rois must have the same dtype")
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

    @torch.library.register_fake("fastrcnn::roi_pool_backward")
    def _roi_pool_backward_fake(
        grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width
    ):
        return grad.new_empty((batch_size, channels, height, width))

    def _setup_forward(ctx, inputs, output):
        input, rois, spatial_scale, pooled_height, pooled_width = inputs
        _, argmax = output
        ctx.mark_non_differentiable(argmax)
        # no zero-filled gradient for argmax (hundreds of MB for 2000 RoIs: as long as the backward itself)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(rois, argmax)
        ctx.spatial_scale = spatial_scale
        ctx.pooled = (pooled_height, pooled_width)
        ctx.input_shape = tuple(input.shape)

    def _backward(ctx, grad_output, grad_argmax):
        if grad_output is None:
            return None, None, None, None, None
        rois, argmax = ctx.saved_tensors
        grad_input = torch.ops.fastrcnn.roi_pool_backward(
            grad_output, rois, argmax, ctx.spatial_scale, *ctx.pooled, *ctx.input_shape
        )
        return grad_input, None, None, None, None

    torch.library.register_autograd("fastrcnn::roi_pool", _backward, setup_context=_setup_forward)

    # the backward is linear in grad: its own gradient gathers at the argmax (double backward)
    def _setup_backward(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        grad, rois, argmax = inputs[:3]
        ctx.save_for_backward(rois, argmax)
        ctx.channels = inputs[7]
        ctx.plane = inputs[8] * inputs[9]

    def _backward_of_backward(ctx, grad_grad_input):
        if grad_grad_input is None:
            return (None,) * 10
        rois, argmax = ctx.saved_tensors
        return (_gather_at_argmax(grad_grad_input, rois, argmax, ctx.channels, ctx.plane),) + (None,) * 9

    torch.library.register_autograd(
        "fastrcnn::roi_pool_backward", _backward_of_backward, setup_context=_setup_backward
    )


def _gather_at_argmax(values: Tensor, rois: Tensor, argmax: Tensor, channels, plane) -> Tensor:
    """values [N, C, H, W] read at each RoI's argmax: [K, C, ph, pw], 0 where argmax is -1."""
    k = rois.shape[0]
    batch = rois[:, 0].to(torch.int64)
    base = (batch[:, None] * channels + torch.arange(channels, device=values.device)[None, :]) * plane
    where = base[:, :, None, None] + argmax.clamp(min=0).to(torch.int64)
    picked = values.reshape(-1)[where.reshape(-1)].view(argmax.shape) if k else values.new_zeros(argmax.shape)
    return torch.where(argmax >= 0, picked, torch.zeros((), dtype=values.dtype, device=values.device))


# A process that loaded the library some other way (torch.ops.load_library) still gets fakes and autograd.
try:
    torch.ops.fastrcnn.roi_pool  # noqa: B018
except (AttributeError, RuntimeError):
    pass
else:
    _register_python_parts()

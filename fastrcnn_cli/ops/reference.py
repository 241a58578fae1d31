"""RoI max pooling in plain PyTorch: the reference the native kernels are tested against, and their fallback.

Same semantics, bit for bit, as the native operator, Caffe and ``torchvision.ops.roi_pool`` (Fast R-CNN, section
2.1). For RoI ``(b, x1, y1, x2, y2)`` in input-image pixels, scale ``s`` and output ``ph x pw``::

    start_w = round(x1 * s), end_w = round(x2 * s)    C round, half away from zero; x * s in the input dtype
    roi_w   = max(end_w - start_w + 1, 1)              (inclusive corners, see fastrcnn_cli.boxes)
    bin_w   = roi_w / pw                               in the input dtype (float16 arithmetic for float16)
    bin j   = [floor(j * bin_w), ceil((j + 1) * bin_w)) + start_w, clipped to [0, W]

(rows likewise). An empty bin gives 0 and argmax -1. Otherwise the output is the max over the bin of the values
greater than ``dtype(-FLT_MAX)``, and argmax the flat index ``h * W + w`` of its first occurrence in (h, w) order;
if no value qualifies (all NaN or -inf) the output is ``dtype(-FLT_MAX)`` and argmax -1.

How it is computed without a Python loop over RoIs. "First maximum in scan order" is "the maximum, with ties
going to the smaller flat index", and that rule is associative and commutative, so the max over a window can be
assembled from any overlapping cover of it. A sparse table holds, for every power-of-two height ``2^a`` and width
``2^b``, the (value, index) max of the ``2^a x 2^b`` window at every position; a bin of size ``h x w`` is the max
of 4 such windows (``2^a <= h < 2^(a+1)``, likewise ``b``) anchored at its corners. Tables are built level by level
on a channels-last copy of a block of channels, and each bin gathers 4 rows of channels from the table of its
level. The output values are then gathered from the input at the argmax, so autograd gives the usual backward
(gradient to the argmax, summed over overlapping bins).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: float32's largest value; ``dtype(-FLT_MAX)`` is the running maximum a bin starts from (``-inf`` in float16).
FLT_MAX = 3.4028234663852886e38

#: channel-block size is chosen so that one level of the sparse table has at most this many elements
_TABLE_ELEMENTS = 1 << 22


def round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: to the nearest integer, halves away from zero (``torch.round`` sends halves to even).

    Exact for any floating dtype: ``x - trunc(x)`` is representable, so no ``x + 0.5`` rounding error.
    """
    t = torch.trunc(x)
    return torch.where((x - t).abs() >= 0.5, t + torch.sign(x), t)


def _as_dtype_scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    # C++ converts the double scale to the kernel's T; for half and bfloat16 through float
    via = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.tensor(value, dtype=via, device=device).to(dtype)


def roi_bins(
    rois: Tensor, spatial_scale: float, output_size: tuple[int, int], height: int, width: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The bins of every RoI: (hstart, hend) of shape [K, ph] and (wstart, wend) of shape [K, pw], int64,
    clipped to the feature map, computed in the arithmetic of ``dtype`` exactly as the kernels do."""
    ph, pw = output_size
    device = rois.device
    r = rois.to(dtype)
    scale = _as_dtype_scalar(spatial_scale, dtype, device)
    corners = round_half_away((r[:, 1:5] * scale).to(torch.float64)).to(torch.int64)  # x1, y1, x2, y2
    start_w, start_h, end_w, end_h = corners.unbind(1)
    roi_w = (end_w - start_w + 1).clamp(min=1)
    roi_h = (end_h - start_h + 1).clamp(min=1)

    def ranges(size: Tensor, pooled: int, start: Tensor, limit: int) -> tuple[Tensor, Tensor]:
        bin_size = size.to(dtype) / torch.tensor(pooled, dtype=dtype, device=device)
        i = torch.arange(pooled + 1, device=device).to(dtype)
        edges = i[None, :] * bin_size[:, None]  # in dtype, as C++ computes T(i) * bin_size
        lo = torch.floor(edges[:, :-1]).to(torch.int64) + start[:, None]
        hi = torch.ceil(edges[:, 1:]).to(torch.int64) + start[:, None]
        return lo.clamp(0, limit), hi.clamp(0, limit)

    hs, he = ranges(roi_h, ph, start_h, height)
    ws, we = ranges(roi_w, pw, start_w, width)
    return hs, he, ws, we


def batch_indices(rois: Tensor, batch_size: int) -> Tensor:
    """The image of each RoI (C++'s truncation of the float); ValueError if one names no image of the batch."""
    b = rois[:, 0]
    bad = ~((b > -1) & (b < batch_size))
    if rois.shape[0] and bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"roi_pool: rois[{k}, 0] = {float(b[k])} is not a batch index of the input (batch size {batch_size})"
        )
    return b.to(torch.int64)


def _combine(v1: Tensor, i1: Tensor, v2: Tensor, i2: Tensor) -> tuple[Tensor, Tensor]:
    """Max of two (value, index) candidates; on equal values the smaller index (the earlier cell) wins."""
    take2 = (v2 > v1) | ((v2 == v1) & (i2 < i1))
    return torch.where(take2, v2, v1), torch.where(take2, i2, i1)


class _Keys:
    """(value, index) candidates packed into one int64 per element, so that their max is ``torch.maximum``.

    The high 32 bits order like the float32 value (the sign-magnitude bits of negative floats flipped), the low
    32 bits are ``2^32 - 1 - index`` (a smaller index wins a tie). For float32, float16 and bfloat16 (exact in
    float32). float64 keeps separate (value, index) tensors, see :class:`_Pairs`.
    """

    def __init__(self, values: Tensor, index: Tensor) -> None:
        v = values.to(torch.float32) + 0.0  # -0.0 -> +0.0: the two compare equal, the first one must win
        bits = v.view(torch.int32).to(torch.int64)
        order = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        self.key = (order << 32) | (0xFFFFFFFF - index)
        neg_inf = torch.tensor(float("-inf"), dtype=torch.float32).view(torch.int32).to(torch.int64)
        self.lost = int(neg_inf ^ 0x7FFFFFFF)  # the order of -inf: no candidate won

    @staticmethod
    def combine(a: Tensor, b: Tensor) -> Tensor:
        return torch.maximum(a, b)

    def argmax(self, key: Tensor) -> Tensor:
        index = 0xFFFFFFFF - (key & 0xFFFFFFFF)
        return torch.where((key >> 32) == self.lost, torch.full_like(index, -1), index)


def _floor_log2(n: Tensor) -> Tensor:
    # exact for n >= 1 (n small enough for float64)
    out = torch.zeros_like(n)
    m = n.clone()
    while bool((m > 1).any()):
        out += (m > 1).to(out.dtype)
        m = torch.div(m, 2, rounding_mode="floor")
    return out


#: bins gathered at once (bounds the memory of the gathers: rows x channels x 8 bytes each)
_ROWS_PER_GATHER = 4096


@torch.no_grad()
def _argmax(input: Tensor, batch: Tensor, hs: Tensor, he: Tensor, ws: Tensor, we: Tensor) -> Tensor:
    """argmax [K, ph, pw, C] (int32, -1 where nothing qualifies or the bin is empty)."""
    n, c, height, width = input.shape
    k, ph = hs.shape
    pw = ws.shape[1]
    device = input.device
    argmax = torch.full((k, ph, pw, c), -1, dtype=torch.int32, device=device)
    if k == 0 or c == 0 or height == 0 or width == 0:
        return argmax

    # every bin as a row: its RoI, window, and sparse-table level
    kk = torch.arange(k, device=device)[:, None, None].expand(k, ph, pw).reshape(-1)
    h0 = hs[:, :, None].expand(k, ph, pw).reshape(-1)
    h1 = he[:, :, None].expand(k, ph, pw).reshape(-1)
    w0 = ws[:, None, :].expand(k, ph, pw).reshape(-1)
    w1 = we[:, None, :].expand(k, ph, pw).reshape(-1)
    rows = ((h1 > h0) & (w1 > w0)).nonzero().squeeze(1)  # bins that pool something
    if rows.numel() == 0:
        return argmax
    kk, h0, h1, w0, w1 = kk[rows], h0[rows], h1[rows], w0[rows], w1[rows]
    bb = batch[kk]
    la = _floor_log2(h1 - h0)
    lb = _floor_log2(w1 - w0)
    max_a, max_b = int(la.max()), int(lb.max())
    levels = [((la == a) & (lb == b)).nonzero().squeeze(1) for a in range(max_a + 1) for b in range(max_b + 1)]

    packed = input.dtype != torch.float64
    threshold = torch.tensor(-FLT_MAX, dtype=torch.float32).to(input.dtype).to(device)
    flat_index = torch.arange(height * width, device=device, dtype=torch.int64).view(1, height, width, 1)
    out_flat = argmax.view(k * ph * pw, c)
    block = max(1, _TABLE_ELEMENTS // max(1, n * height * width))
    for c0 in range(0, c, block):
        x = input[:, c0 : c0 + block].permute(0, 2, 3, 1)  # [N, H, W, Cb] view
        cb = x.shape[3]
        # values that may win; the others (NaN, -inf, <= -FLT_MAX) can never beat anything
        value0 = torch.where(x > threshold, x, torch.full_like(x, float("-inf")))
        index0 = flat_index.expand(n, height, width, cb)
        if packed:
            keys = _Keys(value0, index0)
            level0 = (keys.key,)

            def combine(p, q):
                return (torch.maximum(p[0], q[0]),)
        else:
            level0 = (value0.contiguous(), index0.contiguous())

            def combine(p, q):
                return _combine(p[0], p[1], q[0], q[1])

        column = level0  # level (0, b): windows 1 x 2^b
        for b in range(max_b + 1):
            if b > 0:
                step = 1 << (b - 1)
                column = combine(tuple(t[:, :, :-step] for t in column), tuple(t[:, :, step:] for t in column))
            level = column  # level (a, b): windows 2^a x 2^b
            for a in range(max_a + 1):
                if a > 0:
                    step = 1 << (a - 1)
                    level = combine(tuple(t[:, :-step] for t in level), tuple(t[:, step:] for t in level))
                sel_all = levels[a * (max_b + 1) + b]
                if sel_all.numel() == 0:
                    continue
                lh, lw = level[0].shape[1], level[0].shape[2]
                tables = tuple(t.reshape(-1, cb) for t in level)
                for r0 in range(0, sel_all.numel(), _ROWS_PER_GATHER):
                    sel = sel_all[r0 : r0 + _ROWS_PER_GATHER]
                    top, bottom = h0[sel], h1[sel] - (1 << a)
                    left, right = w0[sel], w1[sel] - (1 << b)
                    base = bb[sel] * lh
                    best = None
                    for r in (top, bottom):
                        for col in (left, right):
                            pos = (base + r) * lw + col
                            cand = tuple(t.index_select(0, pos) for t in tables)
                            best = cand if best is None else combine(best, cand)
                    if packed:
                        found = keys.argmax(best[0])
                    else:
                        found = torch.where(best[0] == float("-inf"), torch.full_like(best[1], -1), best[1])
                    out_flat[rows[sel], c0 : c0 + cb] = found.to(torch.int32)
    return argmax


def roi_pool_reference(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float
) -> tuple[Tensor, Tensor]:
    """RoI max pooling of ``input`` [N, C, H, W] over ``rois`` [K, 5]: (output [K, C, ph, pw], argmax int32).

    Differentiable in ``input`` through autograd (the output values are gathered at the argmax).
    """
    if input.dim() != 4:
        raise ValueError(f"roi_pool: input must be a [N, C, H, W] tensor, got shape {tuple(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_pool: rois must be a [K, 5] tensor, got shape {tuple(rois.shape)}")
    n, c, height, width = input.shape
    ph, pw = output_size
    rois = rois.to(device=input.device)
    batch = batch_indices(rois, n)
    hs, he, ws, we = roi_bins(rois, spatial_scale, (ph, pw), height, width, input.dtype)
    argmax = _argmax(input.detach(), batch, hs, he, ws, we)  # [K, ph, pw, C]

    # the values, gathered from the input at the argmax, so that autograd differentiates (few large temporaries:
    # these tensors are K x C x ph x pw, hundreds of MB for Fast R-CNN's 2000 RoIs)
    k = rois.shape[0]
    device = input.device
    argmax_out = torch.empty((k, c, ph, pw), dtype=torch.int32, device=device)
    argmax_out.copy_(argmax.permute(0, 3, 1, 2))
    del argmax
    won = argmax_out >= 0
    where = argmax_out.to(torch.int64).clamp_(min=0)
    plane = (batch[:, None] * c + torch.arange(c, device=device)) * (height * width)  # [K, C]
    where += plane[:, :, None, None]
    flat = input.reshape(-1)
    gathered = flat[where.view(-1)].view(k, c, ph, pw) if flat.numel() else torch.zeros_like(where, dtype=input.dtype)
    del where
    empty = ((he <= hs)[:, :, None] | (we <= ws)[:, None, :])[:, None]  # [K, 1, ph, pw]
    threshold = torch.tensor(-FLT_MAX, dtype=torch.float32).to(input.dtype).to(device)
    filler = torch.where(empty, torch.zeros((), dtype=input.dtype, device=device), threshold)
    output = torch.where(won, gathered, filler)
    return output, argmax_out


def roi_pool_backward_reference(
    grad: Tensor, rois: Tensor, argmax: Tensor, input_shape: tuple[int, int, int, int]
) -> Tensor:
    """grad_input [N, C, H, W]: each output gradient added at its argmax (nothing for argmax -1)."""
    n, c, height, width = input_shape
    k = rois.shape[0]
    grad_input = torch.zeros(n * c * height * width, dtype=grad.dtype, device=grad.device)
    if k == 0 or grad.numel() == 0:
        return grad_input.view(n, c, height, width)
    batch = batch_indices(rois.to(grad.device), n)
    argmax = argmax.to(torch.int64)
    plane = (batch[:, None] * c + torch.arange(c, device=grad.device)[None, :]) * (height * width)
    where = plane[:, :, None, None] + argmax
    valid = argmax >= 0
    grad_input.index_add_(0, where[valid], grad[valid])
    return grad_input.view(n, c, height, width)

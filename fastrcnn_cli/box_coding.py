"""Box regression targets: the offsets (tx, ty, tw, th) from a proposal P to a box G, and back.

With centres and sizes in the project's convention (:mod:`fastrcnn_cli.boxes`: w = x2 - x1 + 1,
centre x = x1 + w / 2)::

    tx = (Gx - Px) / Pw        ty = (Gy - Py) / Ph
    tw = log(Gw / Pw)          th = log(Gh / Ph)

(R-CNN's parameterisation, used unchanged by Fast R-CNN). :func:`decode` is the exact inverse of
:func:`encode` (x2 = centre + w / 2 - 1, so decode(P, encode(P, G)) == G); the original's
``bbox_transform_inv`` omitted the ``- 1``, which Detectron later fixed. ``tw`` and ``th`` are clamped at
``log(1000 / 16)`` when decoding so an untrained network cannot overflow ``exp``.

Targets are normalised for training, ``(t - mean) / std`` with mean 0 and std (0.1, 0.1, 0.2, 0.2)
(py-faster-rcnn's fixed values; the original measured per-class values on the training set). The
normalisation is folded into the regressor's weights when a model is saved (:func:`fold_normalisation`),
so a saved model outputs raw offsets.
"""

from __future__ import annotations

import math

import torch

from fastrcnn_cli.boxes import PIXEL, heights, widths

BBOX_MEANS: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
BBOX_STDS: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
#: the largest tw / th applied when decoding
MAX_LOG_SCALE = math.log(1000.0 / 16)


def encode(proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Offsets [N, 4] that move each proposal [N, 4] onto its target box [N, 4]."""
    pw, ph = widths(proposals), heights(proposals)
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = widths(targets), heights(targets)
    gx, gy = targets[:, 0] + 0.5 * gw, targets[:, 1] + 0.5 * gh
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)


def decode(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Apply offsets to proposals. ``deltas`` is [N, 4k] (k boxes per proposal); returns [N, 4k]."""
    if proposals.shape[0] == 0:
        return deltas.new_zeros(deltas.shape)
    proposals = proposals.to(deltas.dtype)
    pw, ph = widths(proposals)[:, None], heights(proposals)[:, None]
    px, py = proposals[:, 0:1] + 0.5 * pw, proposals[:, 1:2] + 0.5 * ph
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]
    dw = deltas[:, 2::4].clamp(max=MAX_LOG_SCALE)
    dh = deltas[:, 3::4].clamp(max=MAX_LOG_SCALE)
    cx, cy = dx * pw + px, dy * ph + py
    w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
    out = torch.empty_like(deltas)
    out[:, 0::4] = cx - 0.5 * w
    out[:, 1::4] = cy - 0.5 * h
    out[:, 2::4] = cx + 0.5 * w - PIXEL
    out[:, 3::4] = cy + 0.5 * h - PIXEL
    return out


def normalise(targets: torch.Tensor, means=BBOX_MEANS, stds=BBOX_STDS) -> torch.Tensor:
    return (targets - targets.new_tensor(means)) / targets.new_tensor(stds)


def fold_normalisation(
    weight: torch.Tensor, bias: torch.Tensor, means=BBOX_MEANS, stds=BBOX_STDS
) -> tuple[torch.Tensor, torch.Tensor]:
    """The regressor's weight [4(K+1), D] and bias with ``t = t_norm * std + mean`` built in (W*std, b*std+mean)."""
    repeat = weight.shape[0] // 4
    std = weight.new_tensor(stds).repeat(repeat)
    mean = weight.new_tensor(means).repeat(repeat)
    return weight * std[:, None], bias * std + mean

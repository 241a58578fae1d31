"""Greedy non-maximum suppression, the same arithmetic as ``torchvision.ops.nms`` / ``batched_nms`` on the CPU.

Ours so that detection never imports torchvision's Python package, which imports ``torch._dynamo`` (over a
second of start-up for a one-image ``fastrcnn detect``). The results are torchvision's, bit for bit
(tests/test_nms.py checks them against it): boxes are visited by decreasing score (a stable sort: ties in input
order); a box is kept unless a kept box of higher rank overlaps it with IoU > ``iou_threshold``, where, in float32
as torchvision computes it, ``IoU = inter / (area_i + area_j - inter)``, ``inter = max(0, xx2 - xx1) *
max(0, yy2 - yy1)``, ``area = (x2 - x1) * (y2 - y1)`` (exclusive corners: callers with inclusive ones add 1 to
x2 and y2 first), and the comparison is in double precision. ``batched_nms`` keeps classes apart as torchvision
does on the CPU: for up to 1000 boxes by shifting each class's boxes by ``class * (max coordinate + 1)``, above
that by one NMS per class.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: torchvision's CPU switch from the coordinate trick to one NMS per class (boxes.numel() above this)
VANILLA_ABOVE_NUMEL = 4000


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices (int64) of the boxes [N, 4] (x1, y1, x2, y2) kept, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True)[1].numpy()
    b = boxes.detach().cpu().contiguous().numpy()
    x1, y1, x2, y2 = (np.ascontiguousarray(b[order, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    threshold = float(iou_threshold)
    zero = b.dtype.type(0)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        rest = slice(i + 1, None)
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest] |= overlap.astype(np.float64) > threshold
    return torch.as_tensor(np.asarray(keep, dtype=np.int64))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category ``idxs``; indices kept, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    if boxes.numel() > VANILLA_ABOVE_NUMEL:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            members = torch.where(idxs == class_id)[0]
            keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[torch.sort(scores[kept], descending=True, stable=True)[1]]
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)

"""The one box convention of fastrcnn, written down once.

Every box inside this code base, in every module, file format and tensor, is

    (x1, y1, x2, y2)   float, 0-based pixel indices, both corners INCLUSIVE

so a box covers the pixel columns x1 .. x2 and rows y1 .. y2 and its size is

    width  = x2 - x1 + 1
    height = y2 - y1 + 1

This is the convention of the original Fast R-CNN, of Caffe's and torchvision's RoI pooling
(``roi_w = x2 - x1 + 1``) and of the PASCAL VOC devkit's overlap (areas with +1). PASCAL VOC
annotation files store 1-based inclusive pixels (``xmin .. xmax``); they are converted exactly once,
when an annotation is read (:func:`from_voc`), and back only when writing VOC files (:func:`to_voc`).
An image of size W x H spans the boxes (0, 0, W - 1, H - 1); :func:`clip` keeps boxes inside it.

JSON output and the COCO-style results list are derived from this in :mod:`fastrcnn_cli.results`
(COCO's ``[x, y, w, h]`` is ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``).

The functions below accept torch tensors or numpy arrays of shape [N, 4] (or [4]) and return the same
kind of object.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Boxes = TypeVar("Boxes", torch.Tensor, np.ndarray)

#: The +1 of the inclusive convention, named so that every use is greppable.
PIXEL = 1.0


def from_voc(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """PASCAL VOC's 1-based inclusive corners to our 0-based inclusive corners."""
    return (float(xmin) - 1.0, float(ymin) - 1.0, float(xmax) - 1.0, float(ymax) - 1.0)


def to_voc(box: tuple[float, float, float, float] | np.ndarray) -> tuple[int, int, int, int]:
    """Our corners to PASCAL VOC's 1-based inclusive integer corners (for writing annotation files)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (int(round(x1)) + 1, int(round(y1)) + 1, int(round(x2)) + 1, int(round(y2)) + 1)


def widths(boxes: Boxes) -> Boxes:
    return boxes[..., 2] - boxes[..., 0] + PIXEL


def heights(boxes: Boxes) -> Boxes:
    return boxes[..., 3] - boxes[..., 1] + PIXEL


def area(boxes: Boxes) -> Boxes:
    """Area in pixels, with the +1 of the inclusive convention (never negative)."""
    if isinstance(boxes, torch.Tensor):
        return widths(boxes).clamp(min=0) * heights(boxes).clamp(min=0)
    return np.clip(widths(boxes), 0, None) * np.clip(heights(boxes), 0, None)


def iou(a: Boxes, b: Boxes) -> Boxes:
    """Pairwise intersection over union, [N, 4] x [M, 4] -> [N, M], areas with +1 (the devkit's overlap)."""
    if isinstance(a, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        ix1 = torch.maximum(a[:, None, 0], b[None, :, 0])
        iy1 = torch.maximum(a[:, None, 1], b[None, :, 1])
        ix2 = torch.minimum(a[:, None, 2], b[None, :, 2])
        iy2 = torch.minimum(a[:, None, 3], b[None, :, 3])
        inter = (ix2 - ix1 + PIXEL).clamp(min=0) * (iy2 - iy1 + PIXEL).clamp(min=0)
        union = area(a)[:, None] + area(b)[None, :] - inter
        return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1 + PIXEL, 0, None) * np.clip(iy2 - iy1 + PIXEL, 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def clip(boxes: Boxes, width: int, height: int) -> Boxes:
    """Clip boxes to an image of ``width`` x ``height`` pixels, i.e. to (0, 0, W - 1, H - 1)."""
    if isinstance(boxes, torch.Tensor):
        out = boxes.clone()
        out[..., 0::2] = out[..., 0::2].clamp(0, width - 1)
        out[..., 1::2] = out[..., 1::2].clamp(0, height - 1)
        return out
    out = np.array(boxes, copy=True)
    out[..., 0::2] = np.clip(out[..., 0::2], 0, width - 1)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, height - 1)
    return out


def hflip(boxes: Boxes, width: int) -> Boxes:
    """Mirror boxes for an image of ``width`` pixels flipped left-right: x -> W - 1 - x."""
    if isinstance(boxes, torch.Tensor):
        out = boxes.clone()
    else:
        out = np.array(boxes, copy=True)
    out[..., 0] = width - 1 - boxes[..., 2]
    out[..., 2] = width - 1 - boxes[..., 0]
    return out


def scale(boxes: Boxes, factor: float) -> Boxes:
    """Boxes of an image resized by ``factor`` (pixel indices scale linearly, as in the original)."""
    return boxes * factor

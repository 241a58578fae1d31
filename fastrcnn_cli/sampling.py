"""Hierarchical sampling of RoIs for a training mini-batch (the paper's section 2.3).

A mini-batch holds N images (2) and R RoIs (128), R / N = 64 from each image. Of each image's RoIs, a
fraction (25%) are foreground, drawn from the proposals whose IoU with a ground-truth box is at least
0.5 (the ground-truth boxes themselves are in the candidate pool, so there is always some foreground);
the rest are background, drawn from the proposals whose best IoU lies in [0.1, 0.5). The lower bound acts
as a heuristic hard-example mining. When there are fewer candidates than wanted, fewer RoIs are taken
(as in the original; nothing is drawn twice).

Negative images (no ground-truth box; a data set's background-only pictures) are decided here: **every
proposal of such an image is a background candidate**, and the image gives ``rois_per_image`` background RoIs
(fewer when it has fewer proposals) and no foreground. The [0.1, 0.5) band exists to pick hard negatives
*near objects* -- proposals that overlap an object a little -- and a negative image has no object to be near:
every overlap is 0, so the band would leave it no RoI at all and the image would teach nothing, when what it
shows (the background a detector must not fire on) is exactly what a negative image is for. A mini-batch that
holds a negative image therefore has less than ``fg_fraction`` foreground over its R RoIs (the fraction is kept
per image, as the paper samples per image). An image *with* objects keeps the paper's band unchanged.

Duplicate RoIs: proposals that map to the same cells of the feature map (coordinates rounded at the
feature stride) give identical pooled features; :func:`unique_rois` keeps one of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fastrcnn_cli import box_coding
from fastrcnn_cli.boxes import iou
from fastrcnn_cli.errors import SettingsError


@dataclass(frozen=True)
class SamplingSettings:
    """Per image: ``rois_per_image`` RoIs, ``fg_fraction`` of them foreground (IoU >= ``fg_iou``), the rest
    background (``bg_iou_low`` <= IoU < ``bg_iou_high``; every proposal of an image without ground truth)."""

    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5  #: foreground: IoU >= fg_iou
    bg_iou_low: float = 0.1  #: background: bg_iou_low <= IoU < bg_iou_high
    bg_iou_high: float = 0.5

    def __post_init__(self) -> None:
        """:class:`SettingsError` naming each field out of range (NaN fails every check)."""
        problems = []
        if not (isinstance(self.rois_per_image, (int, np.integer)) and self.rois_per_image >= 1):
            problems.append(("rois_per_image", f"must be a whole number >= 1 (got {self.rois_per_image!r})"))
        if not 0.0 < self.fg_fraction <= 1.0:
            problems.append(("fg_fraction", f"must be in (0, 1] (got {self.fg_fraction:g})"))
        for name in ("fg_iou", "bg_iou_low", "bg_iou_high"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append((name, f"must be in [0, 1] (got {getattr(self, name):g})"))
        if not problems and not self.bg_iou_low <= self.bg_iou_high <= self.fg_iou:
            problems.append(("bg_iou_low", "must be <= bg_iou_high, itself <= fg_iou (got "
                             f"{self.bg_iou_low:g}, {self.bg_iou_high:g}, {self.fg_iou:g})"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])


@dataclass
class SampledRoIs:
    """The RoIs of one image for one iteration; labels are 1-based (0 = background)."""

    boxes: torch.Tensor  #: [R, 4] in the image's (network input) pixels
    labels: torch.Tensor  #: [R] int64
    targets: torch.Tensor  #: [R, 4] raw regression offsets to the matched ground truth (zeros for background)

    @property
    def num_foreground(self) -> int:
        return int((self.labels > 0).sum())


def unique_rois(boxes: np.ndarray, spatial_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first of each group of boxes that round to the same feature cells, and the inverse map.

    ``boxes[keep][inverse]`` gives back one representative per original box.
    """
    if len(boxes) == 0:
        return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    # C's round (half away from zero), as the RoI pooling operator maps corners to cells; np.round rounds
    # halves to even and would merge boxes that pool differently
    scaled = np.asarray(boxes, np.float64) * spatial_scale
    keys = (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)
    _, keep, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(keep)  # keep the original order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return keep[order], rank[inverse.reshape(-1)]


def sample_rois(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator,
) -> SampledRoIs:
    """Sample one image's RoIs from its proposals [P, 4] and ground truth [G, 4] (labels [G], 1-based).

    The ground-truth boxes are added to the candidate pool. Each candidate is matched to the ground truth
    it overlaps most; its regression target is the offset to that box. Without ground truth (a negative
    image) every proposal is a background candidate (see the module docstring).
    """
    candidates = torch.cat([gt_boxes.to(proposals.dtype), proposals], dim=0) if len(gt_boxes) else proposals
    if len(gt_boxes):
        overlaps = iou(candidates, gt_boxes.to(candidates.dtype))
        max_iou, matched = overlaps.max(dim=1)
        fg = torch.nonzero(max_iou >= settings.fg_iou).flatten()
        bg = torch.nonzero((max_iou < settings.bg_iou_high) & (max_iou >= settings.bg_iou_low)).flatten()
    else:  # a negative image: no object to pick hard negatives near, so every proposal is background
        matched = torch.zeros(len(candidates), dtype=torch.long)
        fg = torch.zeros(0, dtype=torch.long)
        bg = torch.arange(len(candidates))
    fg_wanted = int(round(settings.fg_fraction * settings.rois_per_image))
    num_fg = min(fg_wanted, len(fg))
    fg = fg[torch.randperm(len(fg), generator=generator)[:num_fg]]
    num_bg = min(settings.rois_per_image - num_fg, len(bg))
    bg = bg[torch.randperm(len(bg), generator=generator)[:num_bg]]
    keep = torch.cat([fg, bg])
    boxes = candidates[keep]
    labels = torch.zeros(len(keep), dtype=torch.long)
    targets = torch.zeros((len(keep), 4), dtype=candidates.dtype)
    if num_fg:
        labels[:num_fg] = gt_labels[matched[fg]].long()
        targets[:num_fg] = box_coding.encode(boxes[:num_fg], gt_boxes[matched[fg]].to(candidates.dtype))
    return SampledRoIs(boxes=boxes, labels=labels, targets=targets)

"""Section ``shared``: "share the features" -- R-CNN's way against Fast R-CNN's, same backbone, same proposals.

Both start from the BGR image and the same ``P`` proposals and end with class scores and box offsets for every
proposal; proposals and post-processing are left out of both.

- Fast R-CNN: resize and normalise the image once, one backbone pass, RoI pooling of all ``P`` proposals from
  the shared feature map, fc6, fc7, cls_score and bbox_pred on all of them (no de-duplication, so both sides
  classify the same ``P`` regions).
- R-CNN: each proposal is cropped from the image (no context padding; R-CNN added 16 pixels, which costs the
  same) and warped (bilinear) to the backbone's classification input, 224 x 224; the crops are normalised and
  run through the same backbone in batches; each crop's 14 x 14 feature map is RoI-pooled as a whole to 7 x 7
  (what pool5 does in R-CNN's VGG16) and goes through the same fc6, fc7, cls_score and bbox_pred. This is
  R-CNN's "one CNN per proposal", with our sibling layers in place of its SVMs and box regressors.

The R-CNN side is timed on a fixed random sample of ``sample`` proposals and scaled by ``P / sample`` (the
network's cost is the same for every crop, all being 224 x 224; only the warp depends a little on the box
size). The two ways alternate round by round, so that a machine whose load changes disturbs both alike; the
speedup is the ratio of the per-image medians. When Selective Search gives fewer than the requested ``top``
proposals (small images), the proposals are topped up with jittered copies of the real ones
(:func:`top_up_proposals`) so that the comparison is made at the requested count, as in the paper (2000).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from fastrcnn_cli.devices import synchronize
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.model.backbones import Preprocessing
from fastrcnn_cli.model.fast_rcnn import FastRCNN, batch_images, prepare_image, size_multiple
from fastrcnn_cli.timing import TimingStats

#: the size R-CNN warps every proposal to: the backbone's ImageNet classification input
RCNN_INPUT_SIZE = 224
#: the steps of each way, in order
STEPS: tuple[str, ...] = ("prepare", "backbone", "head")


@dataclass(frozen=True)
class RatioStats:
    """Per-round ratios (dimensionless): median, min, max and every one."""

    median: float
    min: float
    max: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, numerators: Sequence[float], denominators: Sequence[float]) -> RatioStats:
        ratios = tuple(n / d for n, d in zip(numerators, denominators) if d > 0)
        if not ratios:
            return cls(math.nan, math.nan, math.nan, ())
        return cls(statistics.median(ratios), min(ratios), max(ratios), ratios)

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "runs": list(self.runs)}


@dataclass(frozen=True)
class WayTimes:
    """One way's per-image time, step by step (``prepare``: the input, ``backbone``, ``head``: RoI pooling and
    the fc layers) and in all."""

    prepare: TimingStats
    backbone: TimingStats
    head: TimingStats
    total: TimingStats

    def to_dict(self) -> dict[str, Any]:
        return {step: getattr(self, step).to_dict() for step in (*STEPS, "total")}


@dataclass(frozen=True)
class RCNNSide:
    """R-CNN's way, scaled from the ``sampled`` proposals to all of them."""

    sampled: int
    batch_size: int
    scale_factor: float  #: P / sampled
    crop_feature_shape: list[int]  #: the backbone's output for one crop (C, H, W)
    times: WayTimes  #: per image (scaled)
    per_crop: TimingStats  #: per proposal
    sample_total: TimingStats  #: the sample's own time (unscaled)
    crop_size: int = RCNN_INPUT_SIZE

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "batch_size": self.batch_size,
            "scale_factor": self.scale_factor,
            "crop_size": self.crop_size,
            "crop_feature_shape": list(self.crop_feature_shape),
            **self.times.to_dict(),
            "per_crop": self.per_crop.to_dict(),
            "sample_total": self.sample_total.to_dict(),
        }


@dataclass(frozen=True)
class SharedResult:
    """Per-image times of both ways on the same ``num_proposals`` proposals, and the speedup."""

    runs: int
    warmup: int
    num_proposals: int
    fast_rcnn: WayTimes
    rcnn: RCNNSide
    speedup: float  #: R-CNN's median / Fast R-CNN's median
    speedup_per_round: RatioStats
    method: str  #: what was timed, in words
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "num_proposals": self.num_proposals,
            "fast_rcnn": self.fast_rcnn.to_dict(),
            "rcnn": self.rcnn.to_dict(),
            "speedup": self.speedup,
            "speedup_per_round": self.speedup_per_round.to_dict(),
            "method": self.method,
            "elapsed_s": self.elapsed_s,
        }


def top_up_proposals(
    proposals: np.ndarray, count: int, width: int, height: int, seed: int = 0
) -> tuple[np.ndarray, int]:
    """``count`` proposals: the first ``count`` given ones, topped up with jittered copies when there are fewer.

    A copy is a random given box (uniformly chosen), its centre moved by up to 20 % of its width / height and its
    sides scaled by a factor in [0.8, 1.25] (log-uniform), rounded to whole pixels and clipped to the image, so
    the sizes look like Selective Search's. Returns the boxes [count, 4] float32 and how many were added.
    """
    boxes = np.asarray(proposals, np.float32).reshape(-1, 4)
    if len(boxes) >= count:
        return np.ascontiguousarray(boxes[:count]), 0
    if len(boxes) == 0:
        boxes = np.array([[0, 0, width - 1, height - 1]], np.float32)
    rng = np.random.default_rng(seed)
    need = count - len(boxes)
    src = boxes[rng.integers(0, len(boxes), need)]
    w = src[:, 2] - src[:, 0] + 1
    h = src[:, 3] - src[:, 1] + 1
    cx = (src[:, 0] + src[:, 2]) / 2 + rng.uniform(-0.2, 0.2, need) * w
    cy = (src[:, 1] + src[:, 3]) / 2 + rng.uniform(-0.2, 0.2, need) * h
    w = w * np.exp(rng.uniform(math.log(0.8), math.log(1.25), need))
    h = h * np.exp(rng.uniform(math.log(0.8), math.log(1.25), need))
    new = np.stack([cx - (w - 1) / 2, cy - (h - 1) / 2, cx + (w - 1) / 2, cy + (h - 1) / 2], axis=1).round()
    new[:, 0::2] = np.clip(new[:, 0::2], 0, width - 1)
    new[:, 1::2] = np.clip(new[:, 1::2], 0, height - 1)
    new[:, 2] = np.maximum(new[:, 2], new[:, 0])
    new[:, 3] = np.maximum(new[:, 3], new[:, 1])
    return np.ascontiguousarray(np.concatenate([boxes, new.astype(np.float32)])), need


def warp_proposal(image: np.ndarray, box: np.ndarray, size: int = RCNN_INPUT_SIZE) -> np.ndarray:
    """R-CNN's input for one proposal: the box's pixels (inclusive corners) warped to ``size`` x ``size``."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)
    y1, y2 = min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)
    crop = image[y1 : max(y2, y1) + 1, x1 : max(x2, x1) + 1]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)


def rcnn_inputs(
    image: np.ndarray, boxes: np.ndarray, preprocessing: Preprocessing, device: torch.device
) -> torch.Tensor:
    """R-CNN's network input for a batch of proposals: each box warped (:func:`warp_proposal`), then the whole
    batch moved to ``device`` and normalised at once, [B, 3, 224, 224]."""
    crops = np.stack([warp_proposal(image, box) for box in boxes])  # [B, 224, 224, 3] uint8 BGR
    x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()
    if preprocessing.channel_order == "RGB":
        x = x.flip(1)
    return preprocessing.normalize(x.contiguous())


def _way(steps: list[tuple[float, float, float]], factor: float = 1.0) -> WayTimes:
    return WayTimes(
        *(TimingStats.from_samples([t[k] * factor for t in steps]) for k in range(len(STEPS))),
        total=TimingStats.from_samples([sum(t) * factor for t in steps]),
    )


def time_shared(
    model: FastRCNN,
    image: np.ndarray,
    proposals: np.ndarray,
    *,
    scale: int,
    max_size: int,
    device: torch.device | str,
    runs: int,
    warmup: int,
    sample: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> SharedResult:
    """Per-image time of R-CNN's way and of Fast R-CNN's way on the same proposals (see the module docstring).

    Rounds alternate the two ways (Fast R-CNN, then R-CNN). Each way is split into its steps (preparing the
    input, the backbone, RoI pooling + the head); the R-CNN numbers are per image, i.e. the sample's time times
    ``P / sample``; ``rcnn.per_crop`` is per proposal. ``progress`` is called after every round.
    """
    device = torch.device(device)
    boxes = np.asarray(proposals, np.float32).reshape(-1, 4)
    num = len(boxes)
    if num == 0:
        raise InputError("no proposals to compare the two ways on")
    rng = np.random.default_rng(seed)
    sample_idx = np.sort(rng.choice(num, size=min(sample, num), replace=False))
    n_sample = len(sample_idx)
    factor_scale = num / n_sample
    preprocessing = model.preprocessing

    def clock() -> float:
        synchronize(device)
        return time.perf_counter()

    def fast_rcnn() -> tuple[float, float, float]:
        t0 = clock()
        x, factor = prepare_image(model, image, scale, max_size)
        x = batch_images([x], size_multiple(device)).to(device)
        t1 = clock()
        features = model.features(x)
        t2 = clock()
        rois = torch.zeros((num, 5), dtype=features.dtype)
        rois[:, 1:] = torch.from_numpy(boxes * factor)
        model.head(features, rois.to(device))
        t3 = clock()
        return t1 - t0, t2 - t1, t3 - t2

    whole_crop = torch.tensor([0.0, 0.0, RCNN_INPUT_SIZE - 1.0, RCNN_INPUT_SIZE - 1.0])

    def rcnn() -> tuple[float, float, float]:
        crop_t = backbone_t = head_t = 0.0
        for start in range(0, n_sample, batch_size):
            idx = sample_idx[start : start + batch_size]
            t0 = clock()
            x = rcnn_inputs(image, boxes[idx], preprocessing, device)
            t1 = clock()
            features = model.features(x)
            t2 = clock()
            rois = torch.cat([torch.arange(len(idx), dtype=features.dtype)[:, None],
                              whole_crop.to(features.dtype).expand(len(idx), 4)], dim=1)
            model.head(features, rois.to(device))
            t3 = clock()
            crop_t += t1 - t0
            backbone_t += t2 - t1
            head_t += t3 - t2
        return crop_t, backbone_t, head_t

    fast_times: list[tuple[float, float, float]] = []
    rcnn_times: list[tuple[float, float, float]] = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            f = fast_rcnn()
            r = rcnn()
            if i >= warmup:
                fast_times.append(f)
                rcnn_times.append(r)
            if progress:
                progress()
        probe = torch.zeros((1, 3, RCNN_INPUT_SIZE, RCNN_INPUT_SIZE), device=device)
        crop_feature_shape = list(model.features(probe).shape)

    fast_total = [sum(t) for t in fast_times]
    rcnn_sample_total = [sum(t) for t in rcnn_times]
    rcnn_total = [s * factor_scale for s in rcnn_sample_total]
    batch = min(batch_size, n_sample)
    return SharedResult(
        runs=runs,
        warmup=warmup,
        num_proposals=num,
        fast_rcnn=_way(fast_times),
        rcnn=RCNNSide(
            sampled=n_sample,
            batch_size=batch,
            scale_factor=factor_scale,
            crop_feature_shape=crop_feature_shape[1:],
            times=_way(rcnn_times, factor_scale),
            per_crop=TimingStats.from_samples([s / n_sample for s in rcnn_sample_total]),
            sample_total=TimingStats.from_samples(rcnn_sample_total),
        ),
        speedup=statistics.median(rcnn_total) / statistics.median(fast_total),
        speedup_per_round=RatioStats.of(rcnn_total, fast_total),
        method=(
            f"Same {num} proposals and backbone, from the BGR image to scores and box offsets of every proposal "
            "(proposals and post-processing excluded from both). Fast R-CNN: resize + normalise once, one backbone "
            f"pass, RoI pooling + fc head on all {num}. R-CNN: crop + warp each proposal to "
            f"{RCNN_INPUT_SIZE}x{RCNN_INPUT_SIZE} (bilinear, no context padding), backbone per crop in batches of "
            f"{batch}, each crop's whole feature map RoI-pooled to the head's grid and the same fc head; timed on a "
            f"fixed random sample of {n_sample} proposals and scaled by {num}/{n_sample} = {factor_scale:.4g}. "
            "Speedup = ratio of the per-image medians."
        ),
    )

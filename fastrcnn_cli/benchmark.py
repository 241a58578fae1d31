"""Benchmarks: where the time of a detection goes, measured (what ``fastrcnn benchmark`` runs).

The seed's story is a timing story, and each section of :func:`run_benchmark` measures one part of it on the
user's machine, with the user's model and image. Every timing is a median over ``runs`` timed runs after
``warmup`` untimed ones, with its spread (min, max, quartiles) and every run kept; on CUDA the device is
synchronised before each clock reading.

``stages`` -- one detection, stage by stage
    :meth:`fastrcnn_cli.detect.Detector.detect` on the image, exactly as ``fastrcnn detect`` runs it (same
    settings, the checkpoint's Selective Search settings with ``top`` proposals): Selective Search, preprocessing
    (resize to the test scale, normalise, copy to the device), one backbone pass, RoI pooling + fc6/fc7 + the two
    sibling layers for every proposal (proposals that round to the same feature cells are pooled once, as
    ``detect`` does), and post-processing (box decoding, clipping, per-class NMS, the best detections). The
    numbers are :class:`~fastrcnn_cli.detect.StageTimes`, the very measurements ``detect`` prints. This section
    runs first, and its first run, the process's first detection, is also reported ("cold"): a one-image
    ``fastrcnn detect`` measures such a run (the native RoI pooling operator is loaded before any timing, though).

``proposals`` -- Selective Search: OpenCV's and ours (``--proposer native``), fast and quality mode
    Each proposer and mode on the image at the checkpoint's ``max_side`` (resize included), as ``detect`` runs
    it: the process CPU time of one image (all its threads) with one thread, and the wall-clock latency of one
    image with one thread and with all of torch's threads (OpenCV's thread count and torch's set alike), and the
    number of boxes. The four (proposer, mode) pairs alternate within each round.

``shared`` -- "share the features": R-CNN's way against Fast R-CNN's, same backbone, same proposals
    Both start from the BGR image and the same ``P`` proposals and end with class scores and box offsets for
    every proposal; proposals and post-processing are left out of both.

    - Fast R-CNN: resize and normalise the image once, one backbone pass, RoI pooling of all ``P`` proposals
      from the shared feature map, fc6, fc7, cls_score and bbox_pred on all of them (no de-duplication, so both
      sides classify the same ``P`` regions).
    - R-CNN: each proposal is cropped from the image (no context padding; R-CNN added 16 pixels, which costs the
      same) and warped (bilinear) to the backbone's classification input, 224 x 224; the crops are normalised and
      run through the same backbone in batches of ``rcnn_batch``; each crop's 14 x 14 feature map is RoI-pooled as
      a whole to 7 x 7 (what pool5 does in R-CNN's VGG16) and goes through the same fc6, fc7, cls_score and
      bbox_pred. This is R-CNN's "one CNN per proposal", with our sibling layers in place of its SVMs and box
      regressors.

    The R-CNN side is timed on a fixed random sample of ``rcnn_sample`` proposals and scaled by ``P /
    rcnn_sample`` (the network's cost is the same for every crop, all being 224 x 224; only the warp depends a
    little on the box size). The two ways alternate round by round; the speedup is the ratio of the per-image
    medians. When Selective Search gives fewer than the requested ``top`` proposals (small images), the
    proposals of this section are topped up with jittered copies of the real ones (:func:`top_up_proposals`) so
    that the comparison is made at the requested count, as in the paper (2000); the output says how many.

``roipool`` -- RoI max pooling: our operator, torchvision's, the pure-PyTorch reference
    :func:`fastrcnn_cli.ops.bench.benchmark_roi_pool`, forward and forward + backward, on random features of the
    model's own feature-map shape at this image's network input (``case="model"``) or of VGG16's conv5 for a
    600 x 1000 image (1 x 512 x 38 x 63, ``case="vgg16"``), with ``P`` Selective-Search-like RoIs.

``head`` -- the fully connected head, full against truncated SVD
    :func:`fastrcnn_cli.svd.benchmark_head`: fc6 + ReLU + fc7 + ReLU on ``P`` RoIs, dense against factorised,
    for VGG16's head (25088 -> 4096 -> 4096) at the paper's ranks 1024 / 256, and, when ranks are given, for the
    loaded model's own head shape at those ranks.

:func:`run_benchmark` returns plain data (JSON-ready); :func:`render_report` makes the Rich tables,
:func:`plot_stages` the "where the time went" bar chart (square-root scaled, like the seed's figure) and
:func:`write_csv` one row per number.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fastrcnn_cli.errors import InputError
from fastrcnn_cli.shipped import example_path

#: the sections, in the order they run and are printed
SECTIONS: tuple[str, ...] = ("stages", "proposals", "shared", "roipool", "head")
SECTION_TITLES = {
    "stages": "1. Where the time went: one detection, stage by stage",
    "proposals": "1b. Selective Search: OpenCV's against ours (native), fast and quality modes",
    "shared": "2. Share the features: R-CNN's way against Fast R-CNN's",
    "roipool": "3. RoI max pooling: our operator, torchvision's, the pure-PyTorch reference",
    "head": "4. The fully connected head: full against truncated SVD",
}
#: the example image shipped with the package (a synthetic shapes picture)
DEFAULT_IMAGE = example_path()
#: the size R-CNN warps every proposal to: the backbone's ImageNet classification input
RCNN_INPUT_SIZE = 224
#: VGG16's conv5 map for a 600 x 1000 image (Caffe's ceil-mode pooling), the paper's RoI pooling case
VGG16_CONV5 = (1, 512, 38, 63)
#: timed runs and warm-up runs per section when not given. Chosen so that the whole benchmark with no arguments
#: stays well under 3 minutes on a 2-core CPU: VGG16's fc6 on 2000 RoIs alone takes seconds there (a dense
#: product needs no warm-up), and the pure-PyTorch RoI pooling reference seconds a call, so it is timed once
#: after one warm-up (``REFERENCE_RUNS``).
DEFAULT_RUNS = {"stages": 5, "proposals": 2, "shared": 3, "roipool": 3, "head": 3}
DEFAULT_WARMUP = {"stages": 1, "proposals": 1, "shared": 1, "roipool": 1, "head": 0}
REFERENCE_RUNS = 1
#: the stages of one detection (:class:`~fastrcnn_cli.detect.StageTimes` fields) and how the output names them
STAGES: tuple[str, ...] = ("proposals", "preprocess", "backbone", "head", "postprocess")
ROIPOOL_CASES = ("model", "vgg16")


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to time and how often. ``runs`` / ``warmup`` None: :data:`DEFAULT_RUNS` / :data:`DEFAULT_WARMUP`.

    ``proposals``: Selective Search's ``top`` (None: the checkpoint's, as ``fastrcnn detect``), also the number
    of RoIs of the ``shared``, ``roipool`` and ``head`` sections. ``ranks``: SVD ranks (fc6, fc7) to time on the
    loaded model's own head (fc7 None: the default of ``compress-svd``, min(fc6 rank, 256)).
    """

    runs: int | None = None
    warmup: int | None = None
    proposals: int | None = None
    sections: tuple[str, ...] = SECTIONS
    ranks: tuple[int, int | None] | None = None
    fc7_none: bool = False  #: leave fc7 uncompressed in the own-head comparison (``--rank R,none``)
    rcnn_sample: int = 32
    rcnn_batch: int = 32
    roipool_case: str = "vgg16"
    seed: int = 0
    proposer: str | None = None  #: "opencv" | "native" for the stages section (None: the checkpoint's)

    def __post_init__(self) -> None:
        problems = []
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            got = ", ".join(self.sections) or "none"
            problems.append(f"sections must be some of {', '.join(SECTIONS)} (got {got})")
        if self.runs is not None and self.runs < 1:
            problems.append(f"--runs must be at least 1 (got {self.runs})")
        if self.warmup is not None and self.warmup < 0:
            problems.append(f"--warmup must be at least 0 (got {self.warmup})")
        if self.proposals is not None and self.proposals < 1:
            problems.append(f"--proposals must be at least 1 (got {self.proposals})")
        if self.rcnn_sample < 1 or self.rcnn_batch < 1:
            problems.append("the R-CNN sample and batch size must be at least 1")
        if self.roipool_case not in ROIPOOL_CASES:
            problems.append(
                f"the RoI pooling case must be one of {', '.join(ROIPOOL_CASES)} (got {self.roipool_case!r})"
            )
        if problems:
            raise InputError("; ".join(problems))
        # keep the canonical order, drop repeats
        object.__setattr__(self, "sections", tuple(s for s in SECTIONS if s in self.sections))

    def runs_for(self, section: str) -> int:
        return int(self.runs) if self.runs is not None else DEFAULT_RUNS[section]

    def warmup_for(self, section: str) -> int:
        return int(self.warmup) if self.warmup is not None else DEFAULT_WARMUP[section]


# ---------------------------------------------------------------------------------------------------------------
# statistics


def summarize(seconds: Sequence[float]) -> dict[str, Any]:
    """Median, mean, min, max, quartiles (inclusive method), IQR and every run, in milliseconds.

    The same keys as :mod:`fastrcnn_cli.svd`'s head timings, so every table reads them alike.
    """
    runs = [1000.0 * float(s) for s in seconds]
    if not runs:
        raise ValueError("summarize needs at least one run")
    ms = sorted(runs)
    q1, q3 = (statistics.quantiles(ms, n=4, method="inclusive")[::2] if len(ms) >= 2 else (ms[0], ms[0]))
    return {
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "p25_ms": q1,
        "p75_ms": q3,
        "iqr_ms": q3 - q1,
        "runs_ms": runs,
    }


def _ratio_stats(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-round ratios (dimensionless): median, min, max and every one."""
    ratios = [n / d for n, d in zip(numerators, denominators) if d > 0]
    if not ratios:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "runs": []}
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "runs": ratios}


# ---------------------------------------------------------------------------------------------------------------
# inputs


def resolve_image(image: str | os.PathLike | None) -> Path:
    """``--image``, or the example image; a clear :class:`InputError` when that one is missing."""
    if image is not None:
        path = Path(image)
        if not path.exists():
            raise InputError("no such image", path)
        return path
    if not DEFAULT_IMAGE.exists():
        raise InputError("no --image given and the example image is missing; pass --image FILE", DEFAULT_IMAGE)
    return DEFAULT_IMAGE


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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(device: Any) -> dict[str, Any]:
    """Where the timings were taken: device, library versions, threads, date."""
    import cv2
    import torch
    import torchvision

    from fastrcnn_cli import __version__

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "fastrcnn": __version__,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------------------------
# section 1: stages


def time_stages(
    detector: Any, image: np.ndarray, runs: int, warmup: int, progress: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Stage times of ``detector.detect(image)`` (Selective Search included) over ``runs`` runs after ``warmup``.

    Returns the stats of each stage, of ``network`` (preprocess + backbone + head, what ``detect`` prints as
    network) and of the total, the first run's times ("cold"), the number of proposals and of detections.
    """
    timed = []
    cold: dict[str, float] | None = None
    last = None
    for i in range(warmup + runs):
        result = detector.detect(image)
        if cold is None:
            cold = result.times.to_dict()
        if i >= warmup:
            timed.append(result.times)
        last = result
        if progress:
            progress()
    assert last is not None and cold is not None
    out: dict[str, Any] = {
        "runs": runs,
        "warmup": warmup,
        "num_proposals": int(last.num_proposals),
        "num_detections": int(len(last.detections.scores)),
        "stages": {name: summarize([getattr(t, name) for t in timed]) for name in STAGES},
        "network": summarize([t.network for t in timed]),
        "total": summarize([t.total for t in timed]),
        "cold_ms": {**{k: 1000.0 * v for k, v in cold.items()},
                    "network": 1000.0 * (cold["preprocess"] + cold["backbone"] + cold["head"])},
    }
    return out


# ---------------------------------------------------------------------------------------------------------------
# section 2: shared features against one CNN pass per proposal


def warp_proposal(image: np.ndarray, box: np.ndarray, size: int = RCNN_INPUT_SIZE) -> np.ndarray:
    """R-CNN's input for one proposal: the box's pixels (inclusive corners) warped to ``size`` x ``size``."""
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)
    y1, y2 = min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)
    crop = image[y1 : max(y2, y1) + 1, x1 : max(x2, x1) + 1]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)


def rcnn_inputs(image: np.ndarray, boxes: np.ndarray, preprocessing: Any, device: Any) -> Any:
    """R-CNN's network input for a batch of proposals: each box warped (:func:`warp_proposal`), then the whole
    batch moved to ``device`` and normalised at once, [B, 3, 224, 224]."""
    import torch

    crops = np.stack([warp_proposal(image, box) for box in boxes])  # [B, 224, 224, 3] uint8 BGR
    x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()
    if preprocessing.channel_order == "RGB":
        x = x.flip(1)
    return preprocessing.normalize(x.contiguous())


def time_shared(
    model: Any,
    image: np.ndarray,
    proposals: np.ndarray,
    *,
    scale: int,
    max_size: int,
    device: Any,
    runs: int,
    warmup: int,
    sample: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Per-image time of R-CNN's way and of Fast R-CNN's way on the same proposals (see the module docstring).

    Rounds alternate the two ways (Fast R-CNN, then R-CNN), so a machine whose load changes disturbs both alike.
    Each way is split into its steps (preparing the input, the backbone, RoI pooling + the head); the R-CNN
    numbers are per image, i.e. the sample's time times ``P / sample``; ``rcnn.per_crop`` is per proposal.
    """
    import torch

    from fastrcnn_cli.devices import synchronize
    from fastrcnn_cli.model.fast_rcnn import batch_images, prepare_image, size_multiple

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
    steps = ("prepare", "backbone", "head")
    speedup = _ratio_stats(rcnn_total, fast_total)
    return {
        "runs": runs,
        "warmup": warmup,
        "num_proposals": num,
        "fast_rcnn": {
            **{step: summarize([t[k] for t in fast_times]) for k, step in enumerate(steps)},
            "total": summarize(fast_total),
        },
        "rcnn": {
            "sampled": n_sample,
            "batch_size": min(batch_size, n_sample),
            "scale_factor": factor_scale,
            "crop_size": RCNN_INPUT_SIZE,
            "crop_feature_shape": crop_feature_shape[1:],
            **{step: summarize([t[k] * factor_scale for t in rcnn_times]) for k, step in enumerate(steps)},
            "total": summarize(rcnn_total),
            "per_crop": summarize([s / n_sample for s in rcnn_sample_total]),
            "sample_total": summarize(rcnn_sample_total),
        },
        "speedup": statistics.median(rcnn_total) / statistics.median(fast_total),
        "speedup_per_round": speedup,
        "method": (
            f"Same {num} proposals and backbone, from the BGR image to scores and box offsets of every proposal "
            "(proposals and post-processing excluded from both). Fast R-CNN: resize + normalise once, one backbone "
            f"pass, RoI pooling + fc head on all {num}. R-CNN: crop + warp each proposal to "
            f"{RCNN_INPUT_SIZE}x{RCNN_INPUT_SIZE} (bilinear, no context padding), backbone per crop in batches of "
            f"{min(batch_size, n_sample)}, each crop's whole feature map RoI-pooled to the head's grid and the same "
            f"fc head; timed on a fixed random sample of {n_sample} proposals and scaled by {num}/{n_sample} = "
            f"{factor_scale:.4g}. Speedup = ratio of the per-image medians."
        ),
    }


# ---------------------------------------------------------------------------------------------------------------
# section 3: RoI pooling


def time_roipool(
    device: Any,
    feature_shape: Sequence[int],
    num_rois: int,
    image_size: tuple[int, int] | None,
    output_size: int,
    spatial_scale: float,
    runs: int,
    warmup: int,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`fastrcnn_cli.ops.bench.benchmark_roi_pool` on one case, as plain data (``timings`` in ms)."""
    try:
        from fastrcnn_cli.ops.bench import benchmark_roi_pool
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        return {"error": f"the RoI pooling benchmark is not available ({exc})"}
    result = benchmark_roi_pool(
        device=device,
        feature_shape=tuple(int(v) for v in feature_shape),  # type: ignore[arg-type]
        num_rois=num_rois,
        output_size=output_size,
        spatial_scale=spatial_scale,
        runs=runs,
        warmup=warmup,
        seed=seed,
        reference_runs=min(REFERENCE_RUNS, runs),
        image_size=image_size,
    )
    data = result.as_dict()
    data["runs"] = runs
    data["warmup"] = warmup
    data["reference_runs"] = min(REFERENCE_RUNS, runs)
    data["reference_warmup"] = 1
    data["image_size"] = list(image_size) if image_size else None
    return data


# ---------------------------------------------------------------------------------------------------------------
# section 1b: Selective Search, OpenCV's against ours


def time_proposals(
    picture: np.ndarray, settings: Any, runs: int, warmup: int, progress: Callable[[], None] | None = None
) -> dict[str, Any]:
    """OpenCV's and the native Selective Search, fast and quality mode, on one image: CPU time (1 thread) and
    latency (1 thread, all threads) per image, boxes. ``settings``: the :class:`ProposalSettings` to vary."""
    import dataclasses

    import cv2
    import torch

    from fastrcnn_cli.proposals import selective_search

    all_threads = torch.get_num_threads()
    cv_threads = cv2.getNumThreads()
    pairs = [(p, m) for m in ("fast", "quality") for p in ("opencv", "native")]
    cpu: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    latency: dict[tuple[str, str, int], list[float]] = {(*pair, t): [] for pair in pairs for t in (1, all_threads)}
    boxes: dict[tuple[str, str], int] = {}

    def one(pair: tuple[str, str], threads: int) -> tuple[float, float, int]:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        s = dataclasses.replace(settings, proposer=pair[0], mode=pair[1])
        c0, w0 = time.process_time(), time.perf_counter()
        n = len(selective_search(picture, s))
        return time.process_time() - c0, time.perf_counter() - w0, n

    try:
        for i in range(warmup + runs):
            for pair in pairs:
                for threads in dict.fromkeys((1, all_threads)):
                    c, w, n = one(pair, threads)
                    if i >= warmup:
                        latency[(*pair, threads)].append(w)
                        if threads == 1:
                            cpu[pair].append(c)
                    boxes[pair] = n
            if progress:
                progress()
    finally:
        torch.set_num_threads(all_threads)
        cv2.setNumThreads(cv_threads)
    rows = {}
    for pair in pairs:
        rows[f"{pair[0]}-{pair[1]}"] = {
            "proposer": pair[0], "mode": pair[1], "boxes": boxes[pair],
            "cpu_1_thread": summarize(cpu[pair]),
            "latency_1_thread": summarize(latency[(*pair, 1)]),
            "latency_all_threads": summarize(latency[(*pair, all_threads)]),
        }
    base = rows["opencv-fast"]["cpu_1_thread"]["median_ms"]
    for row in rows.values():
        row["cpu_vs_opencv_fast"] = row["cpu_1_thread"]["median_ms"] / base if base > 0 else float("nan")
        one_t = row["latency_1_thread"]["median_ms"]
        row["latency_all_vs_1_thread"] = row["latency_all_threads"]["median_ms"] / one_t if one_t > 0 else float("nan")
    return {
        "rows": rows, "threads": all_threads, "max_side": int(settings.max_side), "top": int(settings.top),
        "runs": runs, "warmup": warmup,
    }


# ---------------------------------------------------------------------------------------------------------------
# section 4: the head, full against truncated SVD


def resolve_head_ranks(model: Any, ranks: tuple[int, int | None], fc7_none: bool = False) -> dict[str, Any]:
    """The loaded model's head shape and the (fc6, fc7) ranks to time it at; :class:`~fastrcnn_cli.svd.RankError`
    (a usage error) when a rank does not fit. Call before any timing, so a bad rank fails at once."""
    from fastrcnn_cli.svd import check_rank, default_fc7_rank, head_shapes

    shapes = head_shapes(model)
    u6, v6, _ = shapes["fc6"]
    u7, v7, _ = shapes["fc7"]
    r6 = check_rank(ranks[0], "fc6", u6, v6)
    if fc7_none:
        r7 = None
    elif ranks[1] is None:
        r7 = default_fc7_rank(r6, min(u7, v7))
    else:
        r7 = check_rank(ranks[1], "fc7", u7, v7)
    return {"in_features": v6, "hidden": u6, "ranks": (r6, r7)}


def time_head(
    num_rois: int,
    runs: int,
    warmup: int,
    device: Any,
    own: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """VGG16's head at the paper's ranks and, with ``own`` (:func:`resolve_head_ranks`), the model's own head."""
    from fastrcnn_cli.svd import PAPER_RANKS, benchmark_head

    out: dict[str, Any] = {
        "runs": runs,
        "warmup": warmup,
        "vgg16": benchmark_head(
            25088, 4096, (PAPER_RANKS["fc6"], PAPER_RANKS["fc7"]), num_rois,
            runs=runs, warmup=warmup, device=device, seed=seed,
        ),
    }
    if own is not None:
        out["model"] = benchmark_head(
            int(own["in_features"]), int(own["hidden"]), tuple(own["ranks"]), num_rois,  # type: ignore[arg-type]
            runs=runs, warmup=warmup, device=device, seed=seed,
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# the whole benchmark


class _RecordingDetector:
    """Wraps :meth:`Detector.propose` to keep the last proposals, so the stage runs' Selective Search boxes can be
    reused by the other sections without an extra (warming) call before the first, cold, run."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.proposals: np.ndarray | None = None
        self._propose = detector.propose
        detector.propose = self._record  # an instance attribute: only this detector is affected

    def _record(self, image: np.ndarray) -> np.ndarray:
        self.proposals = self._propose(image)
        return self.proposals


def run_benchmark(
    weights: str | os.PathLike | None = None,
    image: str | os.PathLike | None = None,
    device: str | None = None,
    settings: BenchmarkSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load the model and the image, run the chosen sections, return every number as plain data.

    ``weights`` / ``image`` None: the shipped model and the example image. ``log`` receives a line as each
    section starts (the command line prints them on stderr). The stages section runs first, so that its first
    run is the process's first detection (its "cold" column); the other sections reuse its proposals. The
    native RoI pooling operator is loaded (built, the first time ever) before anything is timed.
    """
    import torch

    from fastrcnn_cli.console import make_progress
    from fastrcnn_cli.detect import DetectSettings, Detector, proposal_settings_from_meta, sanitise_proposals
    from fastrcnn_cli.devices import resolve_device
    from fastrcnn_cli.io import read_image
    from fastrcnn_cli.model.fast_rcnn import scale_factor
    from fastrcnn_cli.onnx_backend import RUNTIME_NAME, is_onnx_path, load_network
    from fastrcnn_cli.ops import load_extension
    from fastrcnn_cli.ops._extension import native_available
    from fastrcnn_cli.sampling import unique_rois

    settings = settings or BenchmarkSettings()
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    from fastrcnn_cli.model.checkpoint import resolve_weights

    weights_path = resolve_weights(weights)
    image_path = resolve_image(image)
    dev = resolve_device(device)
    picture = read_image(image_path)
    onnx = is_onnx_path(weights_path)  # an exported .onnx: the stages run in ONNX Runtime, the rest needs torch
    if onnx and settings.sections != ("stages",):
        raise InputError(
            "an ONNX model can be timed in the stages section only (--sections stages); the shared, roipool and "
            "head sections time PyTorch modules: give the checkpoint for those"
        )
    model, meta = load_network(weights_path, dev)
    own_head = None
    if settings.ranks and "head" in settings.sections:
        own_head = resolve_head_ranks(model, settings.ranks, settings.fc7_none)

    detect_settings = DetectSettings.for_checkpoint(meta)
    proposal_settings = proposal_settings_from_meta(meta, settings.proposals, settings.proposer)
    top = int(proposal_settings.top)  # type: ignore[attr-defined]
    detector = Detector(model, detect_settings, dev, proposal_settings)
    recorder = _RecordingDetector(detector)
    height, width = picture.shape[:2]
    scale, max_size = detect_settings.scales[0], detect_settings.max_size
    factor = scale_factor(height, width, scale, max_size)
    input_w, input_h = max(1, int(round(width * factor))), max(1, int(round(height * factor)))

    # the native RoI pooling operator is loaded (or built) now, so that no timed run pays for it
    if not onnx:
        try:
            load_extension(with_cuda=dev.type == "cuda")
        except Exception:  # noqa: BLE001 - roi_pool falls back to the reference and warns; native_available says so
            pass
    roi_native = False if onnx else native_available(dev.type)
    runs = {s: settings.runs_for(s) for s in settings.sections}
    warmups = {s: settings.warmup_for(s) for s in settings.sections}
    sections: dict[str, Any] = {}

    @contextmanager
    def rounds(section: str, total: int) -> Iterator[Callable[[], None]]:
        with make_progress() as progress:
            task = progress.add_task(section, total=total)
            yield lambda: progress.advance(task)

    described = proposal_settings.describe()  # type: ignore[attr-defined]
    say(f"proposals: Selective Search ({described}) on {image_path} ({width} x {height}); "
        f"network input {input_w} x {input_h}; device {dev}, {torch.get_num_threads()} torch threads")
    if "stages" in settings.sections:
        r, w = runs["stages"], warmups["stages"]
        say(f"[stages] detect() on the image: {_plural(r, 'run')} after {w} warm-up")
        t0 = time.perf_counter()
        with rounds("stages", r + w) as tick:
            sections["stages"] = time_stages(detector, picture, r, w, tick)
        sections["stages"]["elapsed_s"] = time.perf_counter() - t0
        sections["stages"]["runtime"] = RUNTIME_NAME if onnx else "PyTorch"
    if recorder.proposals is None:
        recorder.proposals = detector.propose(picture)
    ss_boxes = sanitise_proposals(recorder.proposals, width, height)
    boxes, added = top_up_proposals(ss_boxes, top, width, height, settings.seed)
    unique = len(unique_rois(ss_boxes * factor, model.spatial_scale)[0])
    features_shape = [1, 0, -(-input_h // 16), -(-input_w // 16)]  # ONNX: channels unknown outside the graph
    if not onnx:
        with torch.inference_mode():
            features_shape = list(model.features(torch.zeros((1, 3, input_h, input_w), device=dev)).shape)

    for section in settings.sections:
        if section == "stages":
            continue
        r, w = runs[section], warmups[section]
        t0 = time.perf_counter()
        if section == "shared":
            say(f"[shared] R-CNN's way against Fast R-CNN's on {len(boxes)} proposals: {_plural(r, 'round')} "
                f"after {w} warm-up")
            with rounds("shared", r + w) as tick:
                data = time_shared(
                    model, picture, boxes, scale=scale, max_size=max_size, device=dev, runs=r, warmup=w,
                    sample=settings.rcnn_sample, batch_size=settings.rcnn_batch, seed=settings.seed, progress=tick,
                )
        elif section == "proposals":
            say(f"[proposals] OpenCV's and the native Selective Search, fast and quality, 1 and "
                f"{torch.get_num_threads()} threads: {_plural(r, 'round')} after {w} warm-up")
            with rounds("proposals", r + w) as tick:
                data = time_proposals(picture, proposal_settings, r, w, tick)
        elif section == "roipool":
            if settings.roipool_case == "vgg16":
                # the paper's case: VGG16 conv5 of a 600 x 1000 image, 7 x 7 bins, stride 16
                shape, image_size, roi_size, roi_scale = VGG16_CONV5, (600, 1000), 7, 1 / 16
                case = "VGG16's conv5 for a 600 x 1000 image (the paper's case)"
            else:
                shape, image_size = tuple(features_shape), (input_h, input_w)
                roi_size, roi_scale = model.config.head.roi_size, model.spatial_scale
                case = f"this model's feature map for this image ({input_w} x {input_h} network input)"
            say(f"[roipool] {len(boxes)} RoIs on {'x'.join(str(v) for v in shape)} features: {_plural(r, 'run')} "
                f"after {w} warm-up (the reference: {_plural(min(REFERENCE_RUNS, r), 'run')} after 1)")
            data = time_roipool(dev, shape, len(boxes), image_size, roi_size, roi_scale, r, w, settings.seed)
            data["case"] = settings.roipool_case
            data["case_description"] = case
        else:
            say(f"[head] fc6 + fc7 full against truncated SVD on {len(boxes)} RoIs: {_plural(r, 'run')} "
                f"after {w} warm-up")
            data = time_head(len(boxes), r, w, dev, own_head, settings.seed)
        data["elapsed_s"] = time.perf_counter() - t0
        sections[section] = data

    return {
        "benchmark": "fastrcnn benchmark",
        "environment": environment(dev),
        "setup": {
            "weights": str(weights_path),
            "model": {
                "backbone": meta.config.backbone.to_dict(),
                "classes": list(meta.classes),
                "head": meta.config.head.to_dict(),
                "feature_map": features_shape[1:],
                "stride": int(round(1.0 / model.spatial_scale)),
            },
            "image": {
                "path": str(image_path),
                "width": width,
                "height": height,
                "input_width": input_w,
                "input_height": input_h,
                "scale": scale,
                "max_size": max_size,
                "factor": factor,
            },
            "detect_settings": detect_settings.to_dict(),
            "proposals": {
                "settings": proposal_settings.to_dict(),  # type: ignore[attr-defined]
                "requested": top,
                "selective_search": int(len(ss_boxes)),
                "unique_rois": unique,
                "sections_use": int(len(boxes)),
                "added_jittered": int(added),
            },
            "roi_pool_native": roi_native,
            "runtime": (f"{RUNTIME_NAME} {_onnxruntime_version()} ({model.provider})" if onnx else "PyTorch"),
            "sections": list(settings.sections),
            "runs": runs,
            "warmup": warmups,
        },
        "sections": {name: sections[name] for name in settings.sections},
        "elapsed_s": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------------------------
# output: text, tables, plot, CSV


def fmt_ms(ms: float) -> str:
    """A duration for people: 0.042 ms, 4.21 ms, 42.1 ms, 421 ms, 4.21 s, 42.1 s."""
    if not math.isfinite(ms):
        return "-"
    if ms >= 1000.0:
        s = ms / 1000.0
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s" if s < 100 else f"{s:.0f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms"


def fmt_range(lo_ms: float, hi_ms: float) -> str:
    """``209–215 ms``, or ``980 ms–1.02 s`` when the ends need different units."""
    lo, hi = fmt_ms(lo_ms), fmt_ms(hi_ms)
    lo_value, _, lo_unit = lo.partition(" ")
    hi_value, _, hi_unit = hi.partition(" ")
    if lo_unit == hi_unit:
        return f"{lo_value}–{hi_value} {hi_unit}"
    return f"{lo}–{hi}"


def _spread(stats: Mapping[str, Any]) -> str:
    return fmt_range(stats["min_ms"], stats["max_ms"])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _runs_text(section: Mapping[str, Any]) -> str:
    return f"median of {_plural(int(section['runs']), 'run')} after {int(section['warmup'])} warm-up"


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


#: the stage names when the network ran in ONNX Runtime: one session.run does backbone, RoI pooling and heads
ONNX_STAGE_LABELS = {
    "backbone": "ONNX Runtime: backbone + RoI pool + heads × {n}",
    "head": "(inside the ONNX graph)",
}

STAGE_LABELS = {
    "proposals": "Selective Search",
    "preprocess": "preprocessing",
    "backbone": "conv backbone",
    "head": "RoI pool + heads × {n}",
    "postprocess": "NMS, post-process",
}


def header_rows(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What was timed, and where: (key, text) pairs."""
    env, setup = result["environment"], result["setup"]
    img, props, model = setup["image"], setup["proposals"], setup["model"]
    cuda = "CPU-only torch"
    if env.get("cuda"):
        cuda = f"CUDA {env['cuda']}" + (f", cuDNN {env['cudnn']}" if env.get("cudnn") else "")
    backbone = model["backbone"]["name"] + (f" ({model['backbone']['cut']})" if model["backbone"].get("cut") else "")
    head = model["head"]
    ranks = head.get("ranks") or [None, None]
    head_text = f"fc6/fc7 {head['hidden']}"
    if any(r is not None for r in ranks):
        head_text += f", SVD ranks {ranks[0]}/{ranks[1]}"
    runs, warm = setup["runs"], setup["warmup"]
    runs_text = "; ".join(f"{s} {runs[s]} after {warm[s]}" for s in setup["sections"])
    proposals = (
        f"{props['selective_search']} from Selective Search (top {props['requested']}), "
        f"{props['unique_rois']} unique after rounding to feature cells"
    )
    if props["added_jittered"]:
        proposals += (
            f"; shared/roipool/head use {props['sections_use']}: {props['added_jittered']} jittered copies added "
            f"to reach {props['requested']}"
        )
    return [
        ("device", f"{env['device']}: {env['device_name']}"),
        ("threads", f"torch {env['torch_threads']} (inter-op {env['torch_interop_threads']}), OpenCV "
                    f"{env['opencv_threads']}; {env['cpu_count']} CPU cores ({env['cpu']})"),
        ("software", f"torch {env['torch']} ({cuda}), torchvision {env['torchvision']}, OpenCV {env['opencv']}, "
                     f"python {env['python']}, fastrcnn {env['fastrcnn']}"),
        ("model", f"{setup['weights']}: {backbone}, {head_text}, {len(model['classes'])} classes; feature map "
                  f"{'x'.join(str(v) for v in model['feature_map'])} (stride {model['stride']})"),
        ("image", f"{img['path']}: {img['width']} x {img['height']}, network input {img['input_width']} x "
                  f"{img['input_height']} (scale {img['scale']}, max size {img['max_size']})"),
        ("proposals", proposals),
        ("RoI pooling", "native operator" if setup["roi_pool_native"]
         else "ONNX MaxRoiPool, in the graph" if setup.get("runtime", "PyTorch") != "PyTorch"
         else "pure-PyTorch fallback (the native operator is not available)"),
        ("runtime", setup.get("runtime", "PyTorch")),
        ("runs", f"timed runs after warm-up runs: {runs_text}; medians, spread min–max"),
        ("date", env["date"]),
    ]


def _table(title: str, caption: str):
    from rich import box
    from rich.table import Table

    return Table(title=f"[bold]{title}[/bold]", title_justify="left", caption=caption, caption_justify="left",
                 box=box.SIMPLE_HEAD, pad_edge=False)


def _stages_table(data: Mapping[str, Any]):
    total = data["total"]["median_ms"]
    table = _table(
        SECTION_TITLES["stages"],
        f"Detector.detect() on the image: the call and clocks of `fastrcnn detect` ({_runs_text(data)}; "
        f"{data['num_proposals']} proposals, {data['num_detections']} detections). cold: the first run of the "
        "process, as a one-image `fastrcnn detect` measures it.",
    )
    for name, justify in (("stage", "left"), ("median", "right"), ("min–max", "right"), ("share", "right"),
                          ("cold", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    labels = {**STAGE_LABELS, **(ONNX_STAGE_LABELS if data.get("runtime") == "ONNX Runtime" else {})}
    for name in STAGES:
        s = data["stages"][name]
        share = s["median_ms"] / total if total > 0 else float("nan")
        table.add_row(labels[name].format(n=data["num_proposals"]), fmt_ms(s["median_ms"]), _spread(s),
                      f"{100 * share:.0f} %", fmt_ms(data["cold_ms"][name]))
    table.add_section()
    net = data["network"]
    net_share = f"{100 * net['median_ms'] / total:.0f} %" if total > 0 else ""
    table.add_row("network (detect's)", fmt_ms(net["median_ms"]), _spread(net), net_share,
                  fmt_ms(data["cold_ms"]["network"]))
    table.add_row("[bold]total[/bold]", f"[bold]{fmt_ms(total)}[/bold]", _spread(data["total"]), "100 %",
                  fmt_ms(data["cold_ms"]["total"]))
    return table


def _shared_table(data: Mapping[str, Any]):
    fast, rcnn = data["fast_rcnn"], data["rcnn"]
    n = data["num_proposals"]
    spr = data["speedup_per_round"]
    table = _table(
        SECTION_TITLES["shared"],
        f"Per image, {n} proposals, {_runs_text(data)}. The R-CNN side is measured on {rcnn['sampled']} of the "
        f"{n} proposals and scaled x{rcnn['scale_factor']:.4g}. How: {data['method']}",
    )
    table.add_column("per image")
    table.add_column("R-CNN: CNN per proposal", justify="right")
    table.add_column("Fast R-CNN: shared", justify="right")
    steps = (("input: crop+warp / resize", "prepare"), ("conv backbone", "backbone"), ("RoI pool + fc head", "head"))
    for label, key in steps:
        table.add_row(label, fmt_ms(rcnn[key]["median_ms"]), fmt_ms(fast[key]["median_ms"]))
    table.add_section()
    table.add_row("[bold]total[/bold]", f"[bold]{fmt_ms(rcnn['total']['median_ms'])}[/bold]",
                  f"[bold]{fmt_ms(fast['total']['median_ms'])}[/bold]")
    table.add_row("min–max", _spread(rcnn["total"]), _spread(fast["total"]))
    table.add_row("per proposal", fmt_ms(rcnn["per_crop"]["median_ms"]), fmt_ms(fast["total"]["median_ms"] / n))
    table.add_section()
    table.add_row("[bold]speedup[/bold]", "", f"[bold]{data['speedup']:.0f}x[/bold]")
    table.add_row("per round, min–max", "", f"{spr['min']:.0f}–{spr['max']:.0f}x")
    return table


def _roipool_table(data: Mapping[str, Any]):
    if "error" in data:
        return f"[yellow]{SECTION_TITLES['roipool']}: not run: {data['error']}[/yellow]"
    n, c, h, w = data["feature_shape"]
    match = data.get("matches_torchvision")
    match_text = "" if match is None else (" Our forward output and argmax are identical to torchvision's." if match
                                           else " [red]Our forward output DIFFERS from torchvision's.[/red]")
    table = _table(
        SECTION_TITLES["roipool"],
        f"{data.get('case_description', 'features')}: random {n}x{c}x{h}x{w} {data['dtype']}, {data['num_rois']} "
        f"Selective-Search-like RoIs, {data['output_size'][0]}x{data['output_size'][1]} bins, scale "
        f"{data['spatial_scale']:g}; {_runs_text(data)} (the slow reference: {_plural(data['reference_runs'], 'run')} "
        f"after {data['reference_warmup']}). fwd+bwd: forward and the gradient of the features. x: time / ours."
        + match_text,
    )
    for name, justify in (("implementation", "left"), ("pass", "left"), ("median", "right"), ("min–max", "right"),
                          ("x ours", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    names = {"fastrcnn": "ours (native)", "fastrcnn-no-argmax": "ours, no argmax (inference)",
             "torchvision": "torchvision", "reference": "PyTorch reference"}
    ours = data["timings"].get("fastrcnn", {})
    for i, (impl, phases) in enumerate(data["timings"].items()):
        if i:
            table.add_section()
        for j, phase in enumerate(("forward", "forward_backward")):
            t = phases.get(phase)
            if t is None:
                continue
            base = ours.get(phase)
            ratio = t["median_ms"] / base["median_ms"] if base and base["median_ms"] > 0 else None
            table.add_row(names.get(impl, impl) if j == 0 else "", "forward" if phase == "forward" else "fwd+bwd",
                          fmt_ms(t["median_ms"]), _spread(t), f"{ratio:.3g}" if ratio is not None else "-")
    for impl, why in (data.get("skipped") or {}).items():
        table.add_row(names.get(impl, impl), "not timed", why)
    return table


def _proposals_table(data: Mapping[str, Any]):
    n = data["threads"]
    table = _table(
        SECTION_TITLES["proposals"],
        f"the image at longer side {data['max_side']}, top {data['top']} boxes; {_runs_text(data)}. CPU: process CPU "
        f"time of one image on 1 thread; latency: wall clock with 1 and {n} threads (torch's and OpenCV's).",
    )
    for name, justify in (("proposer", "left"), ("mode", "left"), ("boxes", "right"), ("CPU / image", "right"),
                          ("x OpenCV fast", "right"), ("latency, 1 thread", "right"), (f"latency, {n} threads", "right"),
                          (f"{n} / 1 threads", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i, row in enumerate(data["rows"].values()):
        if i and i % 2 == 0:
            table.add_section()
        table.add_row(row["proposer"], row["mode"], str(row["boxes"]), fmt_ms(row["cpu_1_thread"]["median_ms"]),
                      f"{row['cpu_vs_opencv_fast']:.3f}", fmt_ms(row["latency_1_thread"]["median_ms"]),
                      fmt_ms(row["latency_all_threads"]["median_ms"]), f"{row['latency_all_vs_1_thread']:.2f}")
    return table


def _head_table(data: Mapping[str, Any]):
    first = data.get("vgg16") or data.get("model") or {}
    table = _table(
        SECTION_TITLES["head"],
        f"fc6 + ReLU + fc7 + ReLU on {first.get('num_rois')} RoIs at once, random weights of these shapes (a dense "
        f"product's time does not depend on the values), full and SVD alternating, {_runs_text(data)}. Paper (VGG16, "
        "K40 GPU): fc6 122 -> 37 ms, fc7 20 -> 4 ms."
        + ("" if "model" in data else " --rank R[,R7] times this model's own head too."),
    )
    for name, justify in (("head", "left"), ("layer", "left"), ("rank", "right"), ("full", "right"),
                          ("SVD", "right"), ("speedup", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    labels = {"vgg16": "VGG16 (paper)", "model": "this model"}
    for key in ("vgg16", "model"):
        d = data.get(key)
        if d is None:
            continue
        if key == "model":
            table.add_section()
        r = d["ranks"]
        shapes = {"fc6": f"{d['in_features']}→{d['hidden']}", "fc7": f"{d['hidden']}→{d['hidden']}"}
        for i, layer in enumerate(("fc6", "fc7")):
            b, a = d["before"][layer]["median_ms"], d["after"][layer]["median_ms"]
            table.add_row(labels[key] if i == 0 else "", f"{layer} {shapes[layer]}", str(r[layer] or "-"),
                          fmt_ms(b), fmt_ms(a), f"{b / a:.2f}x" if a > 0 else "-")
        b, a = d["before"]["total"], d["after"]["total"]
        table.add_row("", "[bold]fc6 + fc7[/bold]", "", f"[bold]{fmt_ms(b['median_ms'])}[/bold]",
                      f"[bold]{fmt_ms(a['median_ms'])}[/bold]", f"[bold]{d['speedup']:.2f}x[/bold]")
        table.add_row("", "min–max", "", _spread(b), _spread(a), "")
        table.add_row("", "parameters", "", f"{d['params_before'] / 1e6:.1f} M", f"{d['params_after'] / 1e6:.1f} M",
                      f"{d['params_before'] / d['params_after']:.1f}x fewer")
    return table


def render_report(result: Mapping[str, Any]) -> list[Any]:
    """Rich renderables: the header, then one table per section run."""
    from rich.table import Table

    header = Table.grid(padding=(0, 1))
    header.add_column(style="bold", no_wrap=True)
    header.add_column()
    for key, text in header_rows(result):
        header.add_row(key, text)
    out: list[Any] = ["[bold]fastrcnn benchmark[/bold]", header, ""]
    makers = {"stages": _stages_table, "proposals": _proposals_table, "shared": _shared_table, "roipool": _roipool_table,
              "head": _head_table}
    for name in SECTIONS:
        if name in result["sections"]:
            out += [makers[name](result["sections"][name]), ""]
    out.append(f"benchmark took {result['elapsed_s']:.0f} s")
    return out


def summary_line(result: Mapping[str, Any]) -> str:
    """One line with the headline numbers."""
    parts = []
    sections = result["sections"]
    if "stages" in sections:
        s = sections["stages"]
        parts.append(f"detection {fmt_ms(s['total']['median_ms'])} (network {fmt_ms(s['network']['median_ms'])})")
    if "proposals" in sections:
        rows = sections["proposals"]["rows"]
        parts.append(f"native Selective Search {1 / rows['native-fast']['cpu_vs_opencv_fast']:.1f}x less CPU than "
                     "OpenCV's (fast)")
    if "shared" in sections:
        parts.append(f"sharing the features {sections['shared']['speedup']:.0f}x faster than R-CNN's way")
    if "roipool" in sections and "timings" in sections["roipool"]:
        tv = (sections["roipool"].get("speedup_vs_torchvision") or {}).get("forward")
        if tv:
            parts.append(f"our RoI pooling {tv:.1f}x faster than torchvision's (forward)")
    if "head" in sections:
        parts.append(f"SVD head {sections['head']['vgg16']['speedup']:.2f}x faster (VGG16)")
    return "; ".join(parts)


def _tick_label(ms: float) -> str:
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _sqrt_ticks(top: float) -> list[float]:
    """Round tick values up to ``top`` that are not crowded on a square-root axis."""
    candidates = [v * 10**e for e in range(-1, 7) for v in (1, 2, 5)]
    ticks: list[float] = [0.0]
    for v in candidates:
        if v > top:
            break
        if math.sqrt(v) - math.sqrt(ticks[-1]) >= 0.11 * math.sqrt(top):
            ticks.append(v)
    return ticks


def plot_stages(result: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the "where the time went" PNG: one horizontal bar per stage (median, min–max whisker), square-root
    scaled x axis, each bar labelled with its time; with the ``shared`` section, a second panel with R-CNN's and
    Fast R-CNN's per-image times on the same kind of axis. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fastrcnn_cli.io import atomic_write_bytes

    stages = result["sections"].get("stages")
    if stages is None:
        raise InputError("the plot shows the stages section; include 'stages' in --sections")
    shared = result["sections"].get("shared")
    setup, env = result["setup"], result["environment"]
    n = stages["num_proposals"]
    rows = 2 if shared else 1
    fig = Figure(figsize=(8.0, 3.3 + (2.0 if shared else 0.0)), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False, gridspec_kw={"height_ratios": [5, 2.4][:rows]})[:, 0]

    def bars(ax: Any, labels: list[str], stats: list[Mapping[str, Any]], colors: list[str]) -> None:
        medians = np.array([max(s["median_ms"], 1e-6) for s in stats])
        lows = np.array([s["min_ms"] for s in stats])
        highs = np.array([s["max_ms"] for s in stats])
        y = np.arange(len(labels))[::-1]
        ax.barh(y, medians, color=colors, height=0.6)
        ax.errorbar(medians, y, xerr=[np.maximum(medians - lows, 0), np.maximum(highs - medians, 0)], fmt="none",
                    ecolor="0.3", lw=0.8, capsize=2)
        ax.set_yticks(y, labels, fontsize=9)
        ax.set_xscale("function", functions=(lambda v: np.sqrt(np.clip(v, 0, None)), np.square))
        top = float(max(highs.max(), medians.max())) * 1.5
        ax.set_xlim(0, top)
        ticks = _sqrt_ticks(top)
        ax.set_xticks(ticks, ["0"] + [_tick_label(t) for t in ticks[1:]], fontsize=7)
        ax.set_xlabel("time per image (square-root scale)", fontsize=8)
        for yi, m, hi in zip(y, medians, highs):
            ax.annotate(fmt_ms(float(m)), xy=(max(float(m), float(hi)), yi), xytext=(5, 0), textcoords="offset points",
                        va="center", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)

    names = {**STAGE_LABELS, **(ONNX_STAGE_LABELS if stages.get("runtime") == "ONNX Runtime" else {})}
    labels = [names[s].format(n=n) for s in STAGES]
    colors = ["#c0504d", "#9bbb59", "#4f81bd", "#f79646", "#8064a2"]
    bars(axes[0], labels, [stages["stages"][s] for s in STAGES], colors)
    model = setup["model"]["backbone"]["name"]
    axes[0].set_title(
        f"Where the time went: {model}, {env['device_name']} ({env['torch_threads']} threads)\n"
        f"{setup['image']['input_width']} x {setup['image']['input_height']} input, {n} proposals, "
        f"{_runs_text(stages)}; total {fmt_ms(stages['total']['median_ms'])}",
        fontsize=9,
    )
    if shared:
        bars(
            axes[1],
            [f"R-CNN: {shared['num_proposals']} CNN passes", "Fast R-CNN: 1 CNN pass"],
            [shared["rcnn"]["total"], shared["fast_rcnn"]["total"]],
            ["#7f7f7f", "#4f81bd"],
        )
        axes[1].set_title(
            f"Share the features: {shared['speedup']:.0f}x faster than one CNN pass per proposal\n"
            f"(R-CNN timed on {shared['rcnn']['sampled']} crops, scaled to {shared['num_proposals']}; "
            "proposals and NMS excluded from both)",
            fontsize=9,
        )
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def csv_rows(result: Mapping[str, Any]) -> Iterator[tuple[str, str, str, Any, str]]:
    """Every number as ``(section, item, statistic, value, unit)``: the environment and setup first, then each
    section's timings, one row per statistic (``median``, ``min``, ``max``, ``p25``, ...) and one per run
    (``run_1``, ``run_2``, ...). ``item`` is the dotted path of the timing in the JSON document."""

    def unit(path: Sequence[str]) -> str:
        if any(p.endswith("_ms") for p in path):
            return "ms"
        if path and path[-1].endswith("_s"):
            return "s"
        if any("speedup" in p for p in path):
            return "x"
        return ""

    def walk(section: str, path: list[str], node: Any) -> Iterator[tuple[str, str, str, Any, str]]:
        if isinstance(node, Mapping):
            if "median_ms" in node and "min_ms" in node:  # a timing: its statistics and its runs
                item = ".".join(path)
                for key, value in node.items():
                    if key == "runs_ms":
                        for i, v in enumerate(value, start=1):
                            yield section, item, f"run_{i}", v, "ms"
                    elif key.endswith("_ms"):
                        yield section, item, key[: -len("_ms")], value, "ms"
                    elif key == "runs":
                        yield section, item, "runs", value, ""
                return
            for key, value in node.items():
                yield from walk(section, [*path, str(key)], value)
            return
        item, stat = ".".join(path[:-1]), (path[-1] if path else "")
        if isinstance(node, (list, tuple)):
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
                for i, v in enumerate(node, start=1):
                    yield section, item, f"{stat}_{i}", v, unit(path)
            else:
                yield section, item, stat, " ".join(str(v) for v in node), ""
        else:
            numeric = isinstance(node, (int, float)) and not isinstance(node, bool)
            yield section, item, stat, node, unit(path) if numeric else ""

    yield from walk("environment", [], result["environment"])
    yield from walk("setup", [], result["setup"])
    for name, data in result["sections"].items():
        yield from walk(name, [], data)
    yield "all", "", "elapsed_s", result.get("elapsed_s"), "s"


def write_csv(result: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Every number of ``result`` as CSV rows (header ``section,item,statistic,value,unit``), written atomically."""
    from fastrcnn_cli.io import atomic_write_text

    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("section", "item", "statistic", "value", "unit"))
    for row in csv_rows(result):
        section, item, stat, value, unit = row
        if isinstance(value, float):
            value = repr(value)
        elif value is None:
            value = ""
        writer.writerow((section, item, stat, value, unit))
    atomic_write_text(path, buf.getvalue())

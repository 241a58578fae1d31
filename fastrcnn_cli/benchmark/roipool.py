"""Section ``roipool``: RoI max pooling -- our operator, torchvision's, the pure-PyTorch reference.

:func:`fastrcnn_cli.ops.bench.benchmark_roi_pool`, forward and forward + backward, on random features of the
model's own feature-map shape at this image's network input (``case="model"``) or of VGG16's conv5 for a
600 x 1000 image (1 x 512 x 38 x 63, ``case="vgg16"``, the paper's case: 7 x 7 bins, stride 16), with ``P``
Selective-Search-like RoIs. The reference, seconds a call on a CPU, is timed
:data:`~fastrcnn_cli.benchmark.settings.REFERENCE_RUNS` time(s), without warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fastrcnn_cli.benchmark.settings import REFERENCE_RUNS
from fastrcnn_cli.ops.bench import RoIPoolBenchmark, benchmark_roi_pool

#: VGG16's conv5 map for a 600 x 1000 image (Caffe's ceil-mode pooling), the paper's RoI pooling case
VGG16_CONV5 = (1, 512, 38, 63)
VGG16_IMAGE = (600, 1000)


@dataclass(frozen=True)
class RoIPoolResult:
    """The timings of :func:`~fastrcnn_cli.ops.bench.benchmark_roi_pool` and how they were taken."""

    timings: RoIPoolBenchmark
    case: str  #: "vgg16" or "model"
    case_description: str
    image_size: tuple[int, int] | None  #: (height, width) the RoIs are drawn on
    runs: int
    warmup: int
    reference_runs: int
    reference_warmup: int = 0  #: the reference is timed without warm-up (:func:`benchmark_roi_pool`)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.timings.to_dict(),
            "runs": self.runs,
            "warmup": self.warmup,
            "reference_runs": self.reference_runs,
            "reference_warmup": self.reference_warmup,
            "image_size": list(self.image_size) if self.image_size else None,
            "case": self.case,
            "case_description": self.case_description,
            "elapsed_s": self.elapsed_s,
        }


def time_roipool(
    device: torch.device | str,
    feature_shape: Sequence[int],
    num_rois: int,
    image_size: tuple[int, int],
    output_size: int,
    spatial_scale: float,
    runs: int,
    warmup: int,
    *,
    case: str,
    case_description: str,
    seed: int = 0,
) -> RoIPoolResult:
    """Every RoI pooling implementation on one case (``num_rois`` RoIs drawn on an image of ``image_size``)."""
    n, c, h, w = (int(v) for v in feature_shape)
    reference_runs = min(REFERENCE_RUNS, runs)
    timings = benchmark_roi_pool(
        device=device,
        feature_shape=(n, c, h, w),
        num_rois=num_rois,
        output_size=output_size,
        spatial_scale=spatial_scale,
        runs=runs,
        warmup=warmup,
        seed=seed,
        reference_runs=reference_runs,
        image_size=image_size,
    )
    return RoIPoolResult(timings=timings, case=case, case_description=case_description, image_size=image_size,
                         runs=runs, warmup=warmup, reference_runs=reference_runs)

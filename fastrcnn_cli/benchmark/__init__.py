"""Benchmarks: where the time of a detection goes, measured (what ``fastrcnn benchmark`` runs).

The seed's story is a timing story, and each section measures one part of it on the user's machine, with the
user's model and image, one module each:

- ``stages`` (:mod:`.stages`): one detection, stage by stage, with the clocks ``fastrcnn detect`` reads;
- ``proposals`` (:mod:`.proposers`): Selective Search, OpenCV's against ours, fast and quality mode;
- ``shared`` (:mod:`.shared`): "share the features", R-CNN's way against Fast R-CNN's;
- ``roipool`` (:mod:`.roipool`): RoI max pooling, our operator against torchvision's and the reference;
- ``head`` (:mod:`.head`): the fully connected head, full against truncated SVD.

Every timing is a :class:`~fastrcnn_cli.timing.TimingStats`: a median over ``runs`` timed runs after ``warmup``
untimed ones, with its spread and every run kept; on CUDA the device is synchronised before each clock reading.
:func:`run_benchmark` (:mod:`.run`) loads the model through :func:`fastrcnn_cli.pipeline.load_detector` and
returns a :class:`BenchmarkResult`, one typed result per section, ``to_dict()`` for JSON; the tables, the plot and
the CSV are made from it by :mod:`fastrcnn_cli.cli.render_benchmark`.
"""

from __future__ import annotations

from fastrcnn_cli.benchmark.environment import Environment
from fastrcnn_cli.benchmark.head import HeadComparison, HeadResult, HeadShape, HeadTimes
from fastrcnn_cli.benchmark.proposers import ProposerRow, ProposersResult
from fastrcnn_cli.benchmark.roipool import RoIPoolResult
from fastrcnn_cli.benchmark.run import (
    BenchmarkResult,
    ImageInfo,
    ModelInfo,
    ProposalsInfo,
    Sections,
    Setup,
    resolve_image,
    run_benchmark,
)
from fastrcnn_cli.benchmark.settings import (
    DEFAULT_RUNS,
    DEFAULT_WARMUP,
    ROIPOOL_CASES,
    SECTIONS,
    BenchmarkSettings,
)
from fastrcnn_cli.benchmark.shared import (
    RCNN_INPUT_SIZE,
    RatioStats,
    RCNNSide,
    SharedResult,
    WayTimes,
    rcnn_inputs,
    top_up_proposals,
    warp_proposal,
)
from fastrcnn_cli.benchmark.stages import STAGES, StagesResult, time_stages

__all__ = [
    "DEFAULT_RUNS",
    "DEFAULT_WARMUP",
    "RCNN_INPUT_SIZE",
    "ROIPOOL_CASES",
    "SECTIONS",
    "STAGES",
    "BenchmarkResult",
    "BenchmarkSettings",
    "Environment",
    "HeadComparison",
    "HeadResult",
    "HeadShape",
    "HeadTimes",
    "ImageInfo",
    "ModelInfo",
    "ProposalsInfo",
    "ProposerRow",
    "ProposersResult",
    "RCNNSide",
    "RatioStats",
    "RoIPoolResult",
    "Sections",
    "Setup",
    "SharedResult",
    "StagesResult",
    "WayTimes",
    "rcnn_inputs",
    "resolve_image",
    "run_benchmark",
    "time_stages",
    "top_up_proposals",
    "warp_proposal",
]

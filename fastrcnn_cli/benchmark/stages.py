"""Section ``stages``: one detection, stage by stage, with the clocks ``fastrcnn detect`` reads.

:meth:`fastrcnn_cli.detect.Detector.detect` on the image, exactly as ``fastrcnn detect`` runs it (same settings,
the checkpoint's Selective Search settings): Selective Search, preprocessing (resize to the test scale,
normalise, copy to the device), one backbone pass, RoI pooling + fc6/fc7 + the two sibling layers for every
proposal (proposals that round to the same feature cells are pooled once, as ``detect`` does), and
post-processing (box decoding, clipping, per-class NMS, the best detections). The numbers are
:class:`~fastrcnn_cli.detect.StageTimes`, the very measurements ``detect`` prints. This section runs first, and
its first run, the process's first detection, is also reported ("cold"): a one-image ``fastrcnn detect``
measures such a run (the native RoI pooling operator is loaded before any timing, though).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fastrcnn_cli.detect import DetectionResult
from fastrcnn_cli.timing import TimingStats

#: the stages of one detection (:class:`~fastrcnn_cli.detect.StageTimes` fields), in the order they run
STAGES: tuple[str, ...] = ("proposals", "preprocess", "backbone", "head", "postprocess")


class _Detects(Protocol):
    def detect(self, image: np.ndarray) -> DetectionResult: ...


@dataclass(frozen=True)
class StagesResult:
    """The stage times of ``runs`` detections after ``warmup``, and the first one ("cold")."""

    runs: int
    warmup: int
    num_proposals: int
    num_detections: int
    stages: dict[str, TimingStats]  #: per stage of :data:`STAGES`
    network: TimingStats  #: preprocess + backbone + head, what ``detect`` prints as network
    total: TimingStats
    cold: dict[str, float]  #: seconds of the first run: each stage, ``total`` and ``network``
    runtime: str = "PyTorch"  #: or "ONNX Runtime" for an exported model
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "num_proposals": self.num_proposals,
            "num_detections": self.num_detections,
            "stages": {name: stats.to_dict() for name, stats in self.stages.items()},
            "network": self.network.to_dict(),
            "total": self.total.to_dict(),
            "cold_ms": {name: 1000.0 * seconds for name, seconds in self.cold.items()},
            "elapsed_s": self.elapsed_s,
            "runtime": self.runtime,
        }


def time_stages(
    detector: _Detects, image: np.ndarray, runs: int, warmup: int, progress: Callable[[], None] | None = None
) -> StagesResult:
    """Stage times of ``detector.detect(image)`` (Selective Search included) over ``runs`` runs after ``warmup``;
    ``progress`` is called after every run."""
    if runs < 1:
        raise ValueError("timing the stages needs at least one run")
    timed = []
    cold: dict[str, float] = {}
    for i in range(warmup + runs):
        last = detector.detect(image)
        if not cold:  # the process's first detection, when this section runs first
            cold = {**last.times.to_dict(), "network": last.times.network}
        if i >= warmup:
            timed.append(last.times)
        if progress:
            progress()
    return StagesResult(
        runs=runs,
        warmup=warmup,
        num_proposals=int(last.num_proposals),
        num_detections=int(len(last.detections.scores)),
        stages={name: TimingStats.from_samples([getattr(t, name) for t in timed]) for name in STAGES},
        network=TimingStats.from_samples([t.network for t in timed]),
        total=TimingStats.from_samples([t.total for t in timed]),
        cold=cold,
    )

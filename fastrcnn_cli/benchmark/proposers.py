"""Section ``proposals``: Selective Search, OpenCV's and ours (``proposer="native"``), fast and quality mode.

Each proposer and mode on the image at the settings' ``max_side`` (resize included), as ``detect`` runs it: the
process CPU time of one image (all its threads) with one thread, and the wall-clock latency of one image with
one thread and with all of torch's threads (OpenCV's thread count and torch's set alike), and the number of
boxes. The four (proposer, mode) pairs alternate within each round, so that a machine whose load changes
disturbs them alike.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from fastrcnn_cli.proposals import ProposalSettings, selective_search
from fastrcnn_cli.timing import TimingStats

#: (proposer, mode) pairs, in the order they run and are printed
PAIRS: tuple[tuple[str, str], ...] = tuple((p, m) for m in ("fast", "quality") for p in ("opencv", "native"))


@dataclass(frozen=True)
class ProposerRow:
    """One proposer in one mode."""

    proposer: str
    mode: str
    boxes: int
    cpu_1_thread: TimingStats  #: process CPU time of one image, one thread
    latency_1_thread: TimingStats  #: wall clock of one image, one thread
    latency_all_threads: TimingStats  #: wall clock of one image, all threads
    cpu_vs_opencv_fast: float  #: CPU time / OpenCV's in fast mode
    latency_all_vs_1_thread: float  #: latency with all threads / with one

    @property
    def key(self) -> str:
        return f"{self.proposer}-{self.mode}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposer": self.proposer,
            "mode": self.mode,
            "boxes": self.boxes,
            "cpu_1_thread": self.cpu_1_thread.to_dict(),
            "latency_1_thread": self.latency_1_thread.to_dict(),
            "latency_all_threads": self.latency_all_threads.to_dict(),
            "cpu_vs_opencv_fast": self.cpu_vs_opencv_fast,
            "latency_all_vs_1_thread": self.latency_all_vs_1_thread,
        }


@dataclass(frozen=True)
class ProposersResult:
    """Every (proposer, mode) pair of :data:`PAIRS`, keyed ``"opencv-fast"``, ``"native-fast"``, ..."""

    rows: dict[str, ProposerRow]
    threads: int  #: "all threads": torch's thread count
    max_side: int
    top: int
    runs: int
    warmup: int
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": {key: row.to_dict() for key, row in self.rows.items()},
            "threads": self.threads,
            "max_side": self.max_side,
            "top": self.top,
            "runs": self.runs,
            "warmup": self.warmup,
            "elapsed_s": self.elapsed_s,
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def time_proposals(
    picture: np.ndarray, settings: ProposalSettings, runs: int, warmup: int,
    progress: Callable[[], None] | None = None,
) -> ProposersResult:
    """OpenCV's and the native Selective Search, fast and quality mode, on one image: CPU time (1 thread) and
    latency (1 thread, all threads) per image, boxes. ``settings``: the :class:`ProposalSettings` to vary
    (proposer and mode); ``progress`` is called after every round. The thread counts are restored."""
    all_threads = torch.get_num_threads()
    cv_threads = cv2.getNumThreads()
    cpu: dict[tuple[str, str], list[float]] = {pair: [] for pair in PAIRS}
    latency: dict[tuple[str, str, int], list[float]] = {(*pair, t): [] for pair in PAIRS for t in (1, all_threads)}
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
            for pair in PAIRS:
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
    stats = {
        pair: (
            TimingStats.from_samples(cpu[pair]),
            TimingStats.from_samples(latency[(*pair, 1)]),
            TimingStats.from_samples(latency[(*pair, all_threads)]),
        )
        for pair in PAIRS
    }
    base = stats[("opencv", "fast")][0].median
    rows = [
        ProposerRow(
            proposer=pair[0], mode=pair[1], boxes=boxes[pair], cpu_1_thread=c, latency_1_thread=one_t,
            latency_all_threads=all_t, cpu_vs_opencv_fast=_ratio(c.median, base),
            latency_all_vs_1_thread=_ratio(all_t.median, one_t.median),
        )
        for pair, (c, one_t, all_t) in stats.items()
    ]
    return ProposersResult(
        rows={row.key: row for row in rows}, threads=all_threads, max_side=int(settings.max_side),
        top=int(settings.top), runs=runs, warmup=warmup,
    )

"""Statistics of repeated timings: the one summary every timing of fastrcnn reports (benchmark, SVD, RoI pooling).

A timing is measured ``n`` times (after untimed warm-up runs) and summarised by its median -- the number the
tables print, robust to the odd run that a busy machine slows down -- with its spread: min, max, the quartiles
``p25`` / ``p75`` (the "inclusive" method of :func:`statistics.quantiles`: linear interpolation between the
sorted runs, so that they always lie within [min, max]), the mean and the sample standard deviation (``n - 1``
in the denominator; 0 for a single run). Every run is kept, in the order it ran.

The fields are in seconds; :meth:`TimingStats.to_dict` gives milliseconds with the unit in every key
(``median_ms``, ``p25_ms``, ``runs_ms``, ...), the form the JSON and CSV outputs carry.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: the statistics :meth:`TimingStats.to_dict` writes, each with the suffix ``_ms``, in this order
STAT_KEYS: tuple[str, ...] = ("median", "mean", "min", "max", "std", "p25", "p75", "iqr")


@dataclass(frozen=True)
class TimingStats:
    """``n`` timed runs of one thing, in seconds: median, mean, min, max, sample std, quartiles, every run."""

    n: int
    mean: float
    median: float
    min: float
    max: float
    std: float
    p25: float
    p75: float
    samples: tuple[float, ...]  #: every run, seconds, in the order they ran

    @classmethod
    def from_samples(cls, seconds: Sequence[float]) -> TimingStats:
        """The statistics of ``seconds`` (at least one run; each finite and not negative)."""
        runs = tuple(float(s) for s in seconds)
        if not runs:
            raise ValueError("timing statistics need at least one run")
        if not all(math.isfinite(s) and s >= 0 for s in runs):
            raise ValueError(f"timings must be finite and not negative (got {list(runs)})")
        ordered = sorted(runs)
        if len(ordered) >= 2:
            p25, _, p75 = statistics.quantiles(ordered, n=4, method="inclusive")
            std = statistics.stdev(ordered)
        else:
            p25 = p75 = ordered[0]
            std = 0.0
        return cls(
            n=len(runs),
            mean=statistics.fmean(ordered),
            median=statistics.median(ordered),
            min=ordered[0],
            max=ordered[-1],
            std=std,
            p25=p25,
            p75=p75,
            samples=runs,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimingStats:
        """Back from :meth:`to_dict` (the statistics are recomputed from ``runs_ms``)."""
        return cls.from_samples([float(v) / 1000.0 for v in data["runs_ms"]])

    @property
    def iqr(self) -> float:
        """The interquartile range ``p75 - p25``, seconds."""
        return self.p75 - self.p25

    @property
    def median_ms(self) -> float:
        return 1000.0 * self.median

    def scaled(self, factor: float) -> TimingStats:
        """Every run multiplied by ``factor`` (a time measured on a part, scaled to the whole)."""
        return TimingStats.from_samples([s * factor for s in self.samples])

    def to_dict(self) -> dict[str, Any]:
        """Milliseconds, the unit in every key: ``median_ms`` ... ``iqr_ms``, ``runs_ms`` (every run), and ``n``."""
        values = {"median": self.median, "mean": self.mean, "min": self.min, "max": self.max, "std": self.std,
                  "p25": self.p25, "p75": self.p75, "iqr": self.iqr}
        out: dict[str, Any] = {f"{key}_ms": 1000.0 * values[key] for key in STAT_KEYS}
        out["runs_ms"] = [1000.0 * s for s in self.samples]
        out["n"] = self.n
        return out

"""Section ``head``: the fully connected head, full against truncated SVD.

:func:`fastrcnn_cli.svd_timing.benchmark_head`: fc6 + ReLU + fc7 + ReLU on ``P`` RoIs, dense against factorised,
for VGG16's head (25088 -> 4096 -> 4096) at the paper's ranks 1024 / 256 and, when ranks are given, for the
loaded model's own head shape at those ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastrcnn_cli.svd import PAPER_RANKS, check_rank, default_fc7_rank, head_shapes
from fastrcnn_cli.svd_timing import benchmark_head
from fastrcnn_cli.timing import TimingStats

#: VGG16's head: fc6 input (512 x 7 x 7) and width
VGG16_HEAD = (25088, 4096)


@dataclass(frozen=True)
class HeadShape:
    """A head to time: fc6's input size, the hidden width, and the (fc6, fc7) ranks (None: left dense)."""

    in_features: int
    hidden: int
    ranks: tuple[int | None, int | None]


@dataclass(frozen=True)
class HeadTimes:
    """fc6, fc7 and their sum, each with its ReLU."""

    fc6: TimingStats
    fc7: TimingStats
    total: TimingStats

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadTimes:
        return cls(*(TimingStats.from_dict(data[part]) for part in ("fc6", "fc7", "total")))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total.to_dict(), "fc6": self.fc6.to_dict(), "fc7": self.fc7.to_dict()}


@dataclass(frozen=True)
class HeadComparison:
    """One head timed dense (``before``) and factorised (``after``) in the same run."""

    shape: HeadShape
    before: HeadTimes
    after: HeadTimes
    params_before: int
    params_after: int
    speedup: float  #: ratio of the medians of the totals
    context: dict[str, Any]  #: what was timed and where (:func:`~fastrcnn_cli.svd_timing.timing_context`)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadComparison:
        """From :func:`~fastrcnn_cli.svd_timing.benchmark_head`'s plain data."""
        known = {"in_features", "hidden", "ranks", "params_before", "params_after", "before", "after", "speedup"}
        ranks = data["ranks"]
        return cls(
            shape=HeadShape(int(data["in_features"]), int(data["hidden"]), (ranks["fc6"], ranks["fc7"])),
            before=HeadTimes.from_dict(data["before"]),
            after=HeadTimes.from_dict(data["after"]),
            params_before=int(data["params_before"]),
            params_after=int(data["params_after"]),
            speedup=float(data["speedup"]),
            context={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.context,
            "in_features": self.shape.in_features,
            "hidden": self.shape.hidden,
            "ranks": {"fc6": self.shape.ranks[0], "fc7": self.shape.ranks[1]},
            "params_before": self.params_before,
            "params_after": self.params_after,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "speedup": self.speedup,
        }


@dataclass(frozen=True)
class HeadResult:
    """VGG16's head at the paper's ranks, and the model's own when ranks were given."""

    runs: int
    warmup: int
    vgg16: HeadComparison
    model: HeadComparison | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runs": self.runs, "warmup": self.warmup, "vgg16": self.vgg16.to_dict()}
        if self.model is not None:
            out["model"] = self.model.to_dict()
        out["elapsed_s"] = self.elapsed_s
        return out


def resolve_head_ranks(model: nn.Module, ranks: tuple[int, int | None], fc7_none: bool = False) -> HeadShape:
    """The loaded model's head shape and the (fc6, fc7) ranks to time it at; :class:`~fastrcnn_cli.svd.RankError`
    (a usage error) when a rank does not fit. Call before any timing, so a bad rank fails at once."""
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
    return HeadShape(in_features=v6, hidden=u6, ranks=(r6, r7))


def time_head(
    num_rois: int, runs: int, warmup: int, device: torch.device | str, own: HeadShape | None = None, seed: int = 0
) -> HeadResult:
    """VGG16's head at the paper's ranks and, with ``own`` (:func:`resolve_head_ranks`), the model's own head."""

    def compare(shape: HeadShape) -> HeadComparison:
        data = benchmark_head(shape.in_features, shape.hidden, shape.ranks, num_rois, runs=runs, warmup=warmup,
                              device=device, seed=seed)
        return HeadComparison.from_dict(data)

    vgg16 = HeadShape(*VGG16_HEAD, ranks=(PAPER_RANKS["fc6"], PAPER_RANKS["fc7"]))
    return HeadResult(runs=runs, warmup=warmup, vgg16=compare(vgg16), model=compare(own) if own else None)

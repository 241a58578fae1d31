"""The time of a Fast R-CNN head (fc6 and fc7) before and after truncated SVD (:mod:`fastrcnn_cli.svd`).

At test time the head runs once per RoI, about 2000 per image (:data:`TIMING_ROIS`), so the head is timed on one
batch of that many RoIs. Heads are timed in turn within each round (A, B, A, B, ...) so that a machine whose load
changes during the measurement disturbs all of them alike; each summary is a
:class:`~fastrcnn_cli.timing.TimingStats`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fastrcnn_cli.devices import describe_device, synchronize
from fastrcnn_cli.svd import HEAD_LAYERS, PAPER_RANKS, LayerError, check_rank, layer_shape
from fastrcnn_cli.timing import TimingStats

#: RoIs per image at test time (the batch the head is timed on)
TIMING_ROIS = 2000


def time_heads(
    heads: Mapping[str, tuple[nn.Module, nn.Module]],
    num_rois: int = TIMING_ROIS,
    *,
    runs: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Time ``relu(fc7(relu(fc6(x))))`` of each named head on one batch ``x`` of ``num_rois`` RoIs.

    ``x`` is uniform random in [0, 1) (non-negative, like pooled post-ReLU features), float32, of fc6's input
    size, on ``device``. Heads are run in turn within each round (A, B, A, B, ...) so that a machine whose load
    changes during the measurement disturbs all of them alike. After ``warmup`` untimed rounds, ``runs``
    rounds are timed under ``torch.inference_mode`` with the device synchronised after each layer; fc6 and
    fc7 (each with its ReLU) are timed separately and ``total`` is their sum. Dropout is not part of the test-
    time head and is not run. The cls_score / bbox_pred layers are left out (they are not compressed).

    Returns ``{name: {"total": stats, "fc6": stats, "fc7": stats}}``; stats are
    :meth:`TimingStats.to_dict <fastrcnn_cli.timing.TimingStats.to_dict>` (median, mean, min, max, std, quartiles
    and every run, in milliseconds).
    """
    if runs < 1 or warmup < 0 or num_rois < 1:
        raise ValueError("timing needs runs >= 1, warmup >= 0 and at least one RoI")
    device = torch.device(device)
    in_features = {layer_shape(fc6, "fc6")[0][1] for fc6, _ in heads.values()}
    if len(in_features) != 1:
        raise LayerError(f"the heads to compare take different input sizes: {sorted(in_features)}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((num_rois, in_features.pop()), generator=generator).to(device)
    modules = {name: (fc6.to(device).eval(), fc7.to(device).eval()) for name, (fc6, fc7) in heads.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"fc6": [], "fc7": []} for name in heads}
    with torch.inference_mode():
        for round_ in range(warmup + runs):
            for name, (fc6, fc7) in modules.items():
                synchronize(device)
                t0 = time.perf_counter()
                h = torch.relu(fc6(x))
                synchronize(device)
                t1 = time.perf_counter()
                torch.relu(fc7(h))
                synchronize(device)
                t2 = time.perf_counter()
                del h
                if round_ >= warmup:
                    times[name]["fc6"].append(t1 - t0)
                    times[name]["fc7"].append(t2 - t1)
    result: dict[str, dict[str, Any]] = {}
    for name, t in times.items():
        total = [a + b for a, b in zip(t["fc6"], t["fc7"])]
        result[name] = {part: TimingStats.from_samples(runs_s).to_dict()
                        for part, runs_s in (("total", total), ("fc6", t["fc6"]), ("fc7", t["fc7"]))}
    return result


def timing_context(device: torch.device | str, num_rois: int, runs: int, warmup: int) -> dict[str, Any]:
    """What was timed, and where (goes with every timing we report)."""
    device = torch.device(device)
    return {
        "timed": "fc6 + ReLU + fc7 + ReLU on one batch of RoIs (float32, inference mode, synchronised); "
        "RoI pooling, dropout, cls_score and bbox_pred excluded",
        "num_rois": num_rois,
        "runs": runs,
        "warmup": warmup,
        "device": describe_device(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def compare_heads(
    before: nn.Module,
    after: nn.Module,
    num_rois: int = TIMING_ROIS,
    *,
    runs: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The head of two Fast R-CNN models (fc6 and fc7 attributes) timed in one run: before, after, speed-up."""
    timed = time_heads(
        {"before": (before.fc6, before.fc7), "after": (after.fc6, after.fc7)},
        num_rois,
        runs=runs,
        warmup=warmup,
        device=device,
    )
    return {
        **timing_context(device, num_rois, runs, warmup),
        "before": timed["before"],
        "after": timed["after"],
        "speedup": timed["before"]["total"]["median_ms"] / timed["after"]["total"]["median_ms"],
    }


def benchmark_head(
    in_features: int = 25088,
    hidden: int = 4096,
    ranks: tuple[int | None, int | None] = (PAPER_RANKS["fc6"], PAPER_RANKS["fc7"]),
    num_rois: int = TIMING_ROIS,
    *,
    runs: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Time an uncompressed head against its truncated-SVD version, in one run.

    The defaults are VGG16's head (fc6 25088 -> 4096, fc7 4096 -> 4096) with the paper's ranks 1024 / 256 and
    2000 RoIs. The weights are random (PyTorch's default initialisation) and the factorised layers are just
    layers of the factorised shapes, not an SVD of the others: the time of a dense matrix product does not
    depend on the values, and this avoids a float64 SVD of a 4096 x 25088 matrix. A rank of None leaves that
    layer uncompressed. Returns plain data (JSON-ready): what was timed, the stats before and after (total,
    fc6, fc7), the speed-up of the medians, and the parameter counts.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    shapes = {"fc6": (hidden, in_features), "fc7": (hidden, hidden)}
    for name, rank in zip(HEAD_LAYERS, ranks):
        if rank is not None:
            check_rank(rank, name, *shapes[name])

    def dense(name: str) -> nn.Linear:
        u, v = shapes[name]
        return nn.Linear(v, u, device=device)

    def factorised(name: str, rank: int | None) -> nn.Module:
        u, v = shapes[name]
        if rank is None:
            return dense(name)
        return nn.Sequential(nn.Linear(v, rank, bias=False, device=device), nn.Linear(rank, u, device=device))

    before = (dense("fc6"), dense("fc7"))
    after = (factorised("fc6", ranks[0]), factorised("fc7", ranks[1]))
    timed = time_heads({"before": before, "after": after}, num_rois, runs=runs, warmup=warmup, device=device, seed=seed)

    def params(layers: tuple[nn.Module, nn.Module]) -> int:
        return sum(p.numel() for m in layers for p in m.parameters())

    return {
        **timing_context(device, num_rois, runs, warmup),
        "weights": "random (timing of dense products does not depend on the values)",
        "in_features": in_features,
        "hidden": hidden,
        "ranks": {"fc6": ranks[0], "fc7": ranks[1]},
        "params_before": params(before),
        "params_after": params(after),
        "before": timed["before"],
        "after": timed["after"],
        "speedup": timed["before"]["total"]["median_ms"] / timed["after"]["total"]["median_ms"],
    }

"""Truncated SVD of the fully connected head (Fast R-CNN, section 3.1), for faster detection.

At test time the head runs once per RoI (about 2000 per image), so fc6 and fc7 dominate the time after the
convolutional pass. A layer ``y = W x + b`` with ``W`` of shape ``u x v`` (u outputs, v inputs) is
approximated by its rank-``t`` singular value decomposition::

    W = U S V^T  ~  U_t S_t V_t^T          (U_t: u x t, S_t: the t largest singular values, V_t: v x t)

    y ~ U_t (S_t V_t^T x) + b

so it becomes two linear layers with nothing in between: the first, ``S_t V_t^T`` (t x v), has no bias and
``t`` outputs; the second, ``U_t`` (u x t), keeps the original bias ``b``. Parameters and multiply-adds per
RoI go from ``u v`` (+ ``u`` for the bias) to ``t (u + v)`` (+ ``u``); the factorisation only pays when
``t < u v / (u + v)`` (the *break-even rank*). By the Eckart-Young theorem the rank-``t`` truncation is the
best rank-``t`` approximation of ``W`` in the Frobenius norm, and the share of the layer's *energy* it keeps
is ``sum_{i<=t} s_i^2 / sum_i s_i^2`` (1 minus the relative squared Frobenius error).

As in the original (``tools/compress_net.py``, ranks fc6 1024 and fc7 256 for VGG16) there is no
fine-tuning afterwards. The SVD is computed in float64 (``torch.linalg.svd``, ``full_matrices=False``)
and the factors are stored in the checkpoint's own dtype (float32, or float16 for a float16 checkpoint:
the factors are then rounded to float16 like every other weight of that file).

A layer that is already factorised (``Linear(v, t0, bias=False) -> Linear(t0, u)``) is multiplied back
(``W = W_2 W_1``, rank at most ``t0``) and can be re-compressed to any rank ``<= t0``; its energy share is
then relative to that factorised layer, not to the original uncompressed one (which is gone).

The model side is :func:`fastrcnn_cli.model.fast_rcnn.make_fc`; ``HeadSpec.ranks`` records the ranks, so a
compressed checkpoint loads with :func:`fastrcnn_cli.model.checkpoint.load_checkpoint` like any other.

Public API: :func:`svd_factors`, :func:`compress_layer`, :func:`compress_model`, :func:`compress_checkpoint`,
:func:`time_heads` / :func:`compare_heads` (head timing), :func:`benchmark_head` (the VGG16-shaped head,
random weights), :func:`evaluate_before_after` and :func:`run_compress_svd` (what ``fastrcnn compress-svd``
does).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrcnn_cli.errors import CheckpointError, ExitCode, FastRCNNError, InputError

#: the original's ranks for VGG16 (fc6 25088 -> 4096, fc7 4096 -> 4096)
PAPER_RANKS: dict[str, int] = {"fc6": 1024, "fc7": 256}
#: the layers of the head that truncated SVD applies to, in order
HEAD_LAYERS: tuple[str, ...] = ("fc6", "fc7")
#: RoIs per image at test time (the batch the head is timed on)
TIMING_ROIS = 2000


class RankError(FastRCNNError, ValueError):
    """A rank that the layer cannot take (zero, negative, larger than it allows): a usage error (exit code 2)."""

    exit_code = ExitCode.USAGE


class LayerError(InputError):
    """A layer that is missing, or neither a linear layer nor a truncated-SVD pair."""


# ---------------------------------------------------------------------------------------------------------
# one layer


@dataclass
class LayerReport:
    """What truncated SVD did to one layer ``W`` (u x v)."""

    name: str
    out_features: int  #: u
    in_features: int  #: v
    rank: int  #: t
    params_before: int  #: u v + u (or t0 (u + v) + u for a layer that was already factorised)
    params_after: int  #: t (u + v) + u
    energy_kept: float  #: sum of the t largest s_i^2 over the sum of all s_i^2
    previous_rank: int | None = None  #: t0 when the layer was already factorised, else None
    bias: bool = True

    @property
    def max_rank(self) -> int:
        return min(self.out_features, self.in_features, self.previous_rank or self.in_features)

    @property
    def break_even_rank(self) -> int:
        """The largest rank below which factorising saves parameters: ``t (u + v) < u v``."""
        u, v = self.out_features, self.in_features
        return (u * v - 1) // (u + v)

    @property
    def reduces(self) -> bool:
        """Whether the factorised layer has fewer parameters than the layer it replaced."""
        return self.params_after < self.params_before

    @property
    def shape(self) -> str:
        return f"{self.out_features} x {self.in_features}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": [self.out_features, self.in_features],
            "rank": self.rank,
            "previous_rank": self.previous_rank,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_ratio": self.params_after / self.params_before,
            "energy_kept": self.energy_kept,
            "break_even_rank": self.break_even_rank,
        }


def layer_weight(module: nn.Module, name: str = "layer") -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """``(W [u, v], bias [u] or None, previous rank)`` of a linear layer or of a truncated-SVD pair
    ``Sequential(Linear(v, t0, bias=False), Linear(t0, u))``, whose ``W = W_2 W_1`` (computed in float64)."""
    if isinstance(module, nn.Linear):
        return module.weight.detach(), None if module.bias is None else module.bias.detach(), None
    if (
        isinstance(module, nn.Sequential)
        and len(module) == 2
        and all(isinstance(m, nn.Linear) for m in module)
        and module[0].bias is None
        and module[0].out_features == module[1].in_features
    ):
        first, second = module[0], module[1]
        w = second.weight.detach().double() @ first.weight.detach().double()
        bias = None if second.bias is None else second.bias.detach()
        return w, bias, first.out_features
    raise LayerError(
        f"{name} is a {type(module).__name__}, neither a linear layer nor a truncated-SVD pair "
        "(Linear without bias followed by Linear); it cannot be compressed"
    )


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rank-``t`` factors of ``W`` (u x v), in float64: ``(S_t V_t^T [t, v], U_t [u, t], all singular values)``."""
    u, v = weight.shape
    w = weight.detach().to(torch.float64)
    if not torch.isfinite(w).all():
        raise LayerError("the weights contain NaN or infinite values; there is nothing sensible to compress")
    if w.device.type not in ("cpu", "cuda"):  # pragma: no cover - e.g. mps has no float64
        w = w.cpu()
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    first = S[:rank, None] * Vh[:rank]  # S_t V_t^T
    second = U[:, :rank]  # U_t
    return first, second, S


def energy_share(singular_values: torch.Tensor, rank: int) -> float:
    """``sum_{i<=t} s_i^2 / sum_i s_i^2`` for singular values sorted in decreasing order (1.0 for W = 0)."""
    energy = singular_values.double() ** 2
    total = float(energy.sum())
    if total == 0.0:
        return 1.0
    return float(energy[:rank].sum()) / total


def check_rank(rank: object, name: str, out_features: int, in_features: int, previous_rank: int | None = None) -> int:
    """The rank as an int, or a :class:`RankError` that says what the layer allows."""
    limit = min(out_features, in_features)
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise RankError(f"the rank of {name} must be an integer, not {rank!r}")
    if rank < 1:
        raise RankError(f"the rank of {name} must be at least 1, not {rank}")
    if previous_rank is not None and rank > previous_rank:
        raise RankError(
            f"{name} is already compressed to rank {previous_rank}; it can only be re-compressed to a rank of at "
            f"most {previous_rank} (start from the uncompressed checkpoint for a higher rank)"
        )
    if rank > limit:
        raise RankError(
            f"rank {rank} is too large for {name} ({out_features} x {in_features}): at most min(u, v) = {limit}"
        )
    return rank


def compress_layer(module: nn.Module, rank: int, name: str = "layer") -> tuple[nn.Sequential, LayerReport]:
    """Replace ``module`` (a linear layer, or an already factorised pair) by its rank-``rank`` truncated SVD.

    Returns ``Sequential(Linear(v, t, bias=False) = S_t V_t^T, Linear(t, u) = U_t with the original bias)``
    in the dtype and on the device of the input's weights, and the :class:`LayerReport`.
    """
    weight, bias, previous = layer_weight(module, name)
    u, v = weight.shape
    rank = check_rank(rank, name, u, v, previous)
    ref = next(module.parameters())
    dtype, device = ref.dtype, ref.device
    first_w, second_w, singular = svd_factors(weight, rank)
    first = nn.Linear(v, rank, bias=False, device=device, dtype=dtype)
    second = nn.Linear(rank, u, bias=bias is not None, device=device, dtype=dtype)
    with torch.no_grad():
        first.weight.copy_(first_w.to(device=device, dtype=dtype))
        second.weight.copy_(second_w.to(device=device, dtype=dtype))
        if bias is not None:
            second.bias.copy_(bias.to(device=device, dtype=dtype))
    layer = nn.Sequential(first, second)
    layer.train(module.training)
    bias_params = u if bias is not None else 0
    report = LayerReport(
        name=name,
        out_features=u,
        in_features=v,
        rank=rank,
        params_before=sum(p.numel() for p in module.parameters()),
        params_after=rank * (u + v) + bias_params,
        energy_kept=energy_share(singular, rank),
        previous_rank=previous,
        bias=bias is not None,
    )
    return layer, report


# ---------------------------------------------------------------------------------------------------------
# a model


def compress_model(model: nn.Module, ranks: Mapping[str, int]) -> tuple[nn.Module, list[LayerReport]]:
    """Factorise the named layers (e.g. ``{"fc6": 1024, "fc7": 256}``) of ``model`` in place.

    Every rank is checked before any layer changes, so an error leaves the model as it was. For a
    :class:`~fastrcnn_cli.model.fast_rcnn.FastRCNN`, ``model.config.head.ranks`` is updated too, so a
    checkpoint saved from it rebuilds the factorised shape.
    """
    if not ranks:
        raise RankError("no layer to compress (give a rank for fc6 and/or fc7)")
    for name, rank in ranks.items():
        module = _get_layer(model, name)
        weight_shape, previous = _layer_shape(module, name)
        check_rank(rank, name, *weight_shape, previous)
    reports = []
    for name, rank in ranks.items():
        layer, report = compress_layer(_get_layer(model, name), rank, name)
        _set_layer(model, name, layer)
        reports.append(report)
    config = getattr(model, "config", None)
    head = getattr(config, "head", None)
    if head is not None and hasattr(head, "ranks"):
        new_ranks = tuple(int(ranks[n]) if n in ranks else head.ranks[i] for i, n in enumerate(HEAD_LAYERS))
        model.config = dataclasses.replace(config, head=dataclasses.replace(head, ranks=new_ranks))
    return model, reports


def _get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise LayerError(f"the model has no layer {name!r} to compress") from None


def _set_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, layer)


def _layer_shape(module: nn.Module, name: str) -> tuple[tuple[int, int], int | None]:
    """((u, v), previous rank) without multiplying anything."""
    if isinstance(module, nn.Sequential) and len(module) == 2 and all(isinstance(m, nn.Linear) for m in module):
        if module[0].bias is None and module[0].out_features == module[1].in_features:
            return (module[1].out_features, module[0].in_features), module[0].out_features
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features), None
    layer_weight(module, name)  # raises the LayerError
    raise AssertionError  # pragma: no cover


def head_shapes(model: nn.Module) -> dict[str, tuple[int, int, int | None]]:
    """``{"fc6": (u, v, current rank or None), "fc7": ...}`` of a Fast R-CNN model."""
    shapes = {}
    for name in HEAD_LAYERS:
        (u, v), previous = _layer_shape(_get_layer(model, name), name)
        shapes[name] = (u, v, previous)
    return shapes


def default_fc7_rank(rank_fc6: int, fc7_limit: int) -> int:
    """fc7's rank when only fc6's is given: the paper's 256, or fc6's rank when that is smaller, and never
    more than fc7 allows (``fc7_limit``: min(u, v), or its current rank when it is already factorised)."""
    return max(1, min(rank_fc6, PAPER_RANKS["fc7"], fc7_limit))


# ---------------------------------------------------------------------------------------------------------
# timing the head


def _stats(seconds: Sequence[float]) -> dict[str, Any]:
    ms = sorted(1000.0 * s for s in seconds)
    n = len(ms)
    quartiles = statistics.quantiles(ms, n=4, method="inclusive") if n >= 2 else [ms[0], ms[0], ms[0]]
    return {
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "p25_ms": quartiles[0],
        "p75_ms": quartiles[2],
        "iqr_ms": quartiles[2] - quartiles[0],
        "runs_ms": [1000.0 * s for s in seconds],
    }


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

    Returns ``{name: {"total": stats, "fc6": stats, "fc7": stats}}``; stats are median, mean, min, max,
    quartiles and every run, in milliseconds.
    """
    from fastrcnn_cli.devices import synchronize

    if runs < 1 or warmup < 0 or num_rois < 1:
        raise ValueError("timing needs runs >= 1, warmup >= 0 and at least one RoI")
    device = torch.device(device)
    in_features = {_layer_shape(fc6, "fc6")[0][1] for fc6, _ in heads.values()}
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
        result[name] = {"total": _stats(total), "fc6": _stats(t["fc6"]), "fc7": _stats(t["fc7"])}
    return result


def timing_context(device: torch.device | str, num_rois: int, runs: int, warmup: int) -> dict[str, Any]:
    """What was timed, and where (goes with every timing we report)."""
    from fastrcnn_cli.devices import describe_device

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


# ---------------------------------------------------------------------------------------------------------
# a checkpoint


@dataclass
class CompressionReport:
    """Everything ``fastrcnn compress-svd`` reports; :meth:`to_dict` is its ``--json``."""

    input: Path
    output: Path
    dtype: str  #: of both files: "float32" or "float16"
    layers: list[LayerReport]
    size_before: int  #: bytes of the file
    size_after: int
    weights_before: int = 0  #: bytes of the weights alone (the files may hold more, e.g. a training state)
    weights_after: int = 0
    timing: dict[str, Any] | None = None  #: :func:`compare_heads`
    evaluation: dict[str, Any] | None = None  #: :func:`evaluate_before_after`
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "dtype": self.dtype,
            "layers": [layer.to_dict() for layer in self.layers],
            "params_before": sum(layer.params_before for layer in self.layers),
            "params_after": sum(layer.params_after for layer in self.layers),
            "file_size_before": self.size_before,
            "file_size_after": self.size_after,
            "weights_bytes_before": self.weights_before,
            "weights_bytes_after": self.weights_after,
            "timing": self.timing,
            "evaluation": self.evaluation,
            "notes": list(self.notes),
        }


def default_output_path(
    in_path: str | os.PathLike, rank_fc6: int | None, rank_fc7: int | None, fc7_default: int | None = None
) -> Path:
    """``<in stem>-svd<fc6 rank>.pt`` next to the input (``-fc7-<rank>`` added when fc7's rank is not
    ``fc7_default``, the one :func:`default_fc7_rank` gives; ``-fc6-none`` / ``-fc7-none`` for a layer left as it is), or in the current folder when the
    input's folder is not writable."""
    in_path = Path(in_path)
    name = f"{in_path.stem}-svd" + (str(rank_fc6) if rank_fc6 is not None else "-fc6-none")
    if rank_fc7 is None:
        name += "-fc7-none"
    elif rank_fc7 != fc7_default:
        name += f"-fc7-{rank_fc7}"
    folder = in_path.parent
    if not os.access(folder, os.W_OK):
        folder = Path.cwd()
    return folder / f"{name}.pt"


def _load(path: Path, device: torch.device | str = "cpu"):
    """The model and metadata of a checkpoint, with clear errors for a file that is not one or has no fc head."""
    from fastrcnn_cli.model.checkpoint import model_from_payload, read_checkpoint_file

    payload = read_checkpoint_file(path)
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError("malformed fastrcnn checkpoint (no state_dict)", path)
    for name in HEAD_LAYERS:
        if f"{name}.weight" not in state and f"{name}.0.weight" not in state:
            raise CheckpointError(f"has no fully connected layer {name} (no {name}.weight in its weights) to compress", path)
    model, meta = model_from_payload(payload, path, device)
    info = {"weights_bytes": _state_bytes(state), "train_state": "train_state" in payload}
    return model, meta, info


def _state_bytes(state: Mapping[str, Any], half: bool = False) -> int:
    """Bytes of the tensors of a state dict (floating-point ones counted as float16 with ``half``)."""
    total = 0
    for t in state.values():
        if torch.is_tensor(t):
            size = 2 if half and t.is_floating_point() else t.element_size()
            total += t.numel() * size
    return total


def compress_checkpoint(
    in_path: str | os.PathLike | None,
    out_path: str | os.PathLike | None,
    rank_fc6: int | None,
    rank_fc7: int | None | str = "default",
) -> CompressionReport:
    """Read a checkpoint, factorise fc6 and fc7, and write the result as a normal checkpoint (atomically).

    ``in_path`` None: the shipped model. ``out_path`` None: :func:`default_output_path`. A rank of None leaves
    that layer as it is; ``rank_fc7="default"``: :func:`default_fc7_rank`. The output keeps the input's dtype
    (a float16 file gives a float16 file), its metadata (``training`` included; a training checkpoint's
    ``train_state`` is dropped: the factorised model is for inference) and records ``compression``: method,
    per-layer ranks, shapes, parameters and energy kept, the source file, and any earlier compression.
    """
    from fastrcnn_cli.model.checkpoint import resolve_weights, save_checkpoint

    in_path = resolve_weights(in_path)
    model, meta, loaded = _load(in_path)
    shapes = head_shapes(model)
    u, v, previous = shapes["fc7"]
    fc7_default = None if rank_fc6 is None else default_fc7_rank(rank_fc6, min(u, v, previous or v))
    if isinstance(rank_fc7, str):
        if rank_fc7 != "default":
            raise RankError(f"rank_fc7 must be an integer, None or 'default', not {rank_fc7!r}")
        rank_fc7 = fc7_default
    ranks = {name: r for name, r in zip(HEAD_LAYERS, (rank_fc6, rank_fc7)) if r is not None}
    out = Path(out_path) if out_path is not None else default_output_path(in_path, rank_fc6, rank_fc7, fc7_default)
    if out.exists() and out.resolve() == in_path.resolve():
        raise InputError("the output would overwrite the input checkpoint; choose another --out", out)
    if out.is_dir():
        raise InputError("is a folder; give a file name for the compressed checkpoint", out)

    _, reports = compress_model(model, ranks)
    compression = {
        "method": "truncated-svd",
        "reference": "Fast R-CNN (Girshick, ICCV 2015), section 3.1; no fine-tuning afterwards",
        "source": str(in_path),
        "source_dtype": meta.dtype,
        "svd_dtype": "float64",
        "layers": {r.name: r.to_dict() for r in reports},
        "previous": meta.compression,
    }
    new_meta = dataclasses.replace(meta, config=model.config, compression=compression, path=out)
    try:
        # the loaded regressor already outputs raw offsets (normalisation folded in when it was saved)
        save_checkpoint(out, model, new_meta, normalised_regressor=False, half=meta.dtype == "float16")
    except OSError as exc:
        raise InputError(f"cannot write the compressed checkpoint ({exc.strerror or exc})", out) from None
    notes = []
    if loaded["train_state"]:
        notes.append(
            "the input is a training checkpoint: its train_state (optimiser, schedule) is not carried over, so "
            "compare the weights' sizes rather than the files' (the output cannot be --resume-d)"
        )
    if meta.dtype == "float16":
        notes.append("float16 checkpoint: SVD computed in float64 from the float16 weights, factors stored in float16")
    for r in reports:
        if not r.reduces:
            notes.append(
                f"{r.name}: rank {r.rank} does not reduce its parameters ({r.params_before:,} -> {r.params_after:,}); "
                f"factorising pays only below rank {r.break_even_rank + 1} for {r.shape}"
            )
    return CompressionReport(
        input=in_path,
        output=out,
        dtype=meta.dtype,
        layers=reports,
        size_before=in_path.stat().st_size,
        size_after=out.stat().st_size,
        weights_before=loaded["weights_bytes"],
        weights_after=_state_bytes(model.state_dict(), half=meta.dtype == "float16"),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------------
# mAP before and after


def evaluate_before_after(
    models: Mapping[str, nn.Module],
    meta: Any,
    data: str | os.PathLike,
    split: str = "test",
    device: torch.device | str = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """mAP of each model on one split, with exactly what ``fastrcnn evaluate`` does: the checkpoint's proposal
    settings (cached Selective Search), its test scale, :data:`~fastrcnn_cli.detect.EVAL_SCORE_THRESHOLD`,
    :func:`~fastrcnn_cli.detect.detect_dataset` and :func:`~fastrcnn_cli.evaluation.evaluate_voc`.

    Returns ``{"data", "split", "protocol", "headline", name: VOCResult.to_dict() ..., "delta_map"}``, with
    ``delta_map`` = after - before (headline metric) when both ``"before"`` and ``"after"`` are given.
    """
    from fastrcnn_cli.data.voc import load_dataset
    from fastrcnn_cli.detect import DetectSettings, Detector, detect_dataset
    from fastrcnn_cli.evaluation import evaluate_voc, headline_for
    from fastrcnn_cli.proposals import ProposalSettings, load_or_compute_proposals

    dataset = load_dataset(data, split, meta.classes)
    settings = ProposalSettings.from_dict(meta.proposals) if meta.proposals else ProposalSettings()
    proposals = load_or_compute_proposals(dataset, settings, Path(cache_dir) if cache_dir else None, workers)
    headline = headline_for(dataset.root)
    result: dict[str, Any] = {"data": str(dataset.root), "split": split, "num_images": len(dataset.records)}
    for name, model in models.items():
        detector = Detector(model, DetectSettings(scales=(meta.scales[0],), max_size=meta.max_size), device, settings)
        dets, _ = detect_dataset(detector, dataset.records, proposals, description=f"evaluating ({name})")
        voc = evaluate_voc(dets, dataset.records, meta.classes, headline=headline)
        result[name] = voc.to_dict()
        result["protocol"] = voc.protocol
        result["headline"] = voc.headline
    if "before" in result and "after" in result:
        b, a = result["before"]["map"], result["after"]["map"]
        result["delta_map"] = None if a is None or b is None else a - b
    return result


# ---------------------------------------------------------------------------------------------------------
# the whole command


def run_compress_svd(
    in_path: str | os.PathLike | None,
    out_path: str | os.PathLike | None,
    rank_fc6: int | None,
    rank_fc7: int | None | str = "default",
    *,
    device: torch.device | str = "cpu",
    time_head: bool = True,
    num_rois: int = TIMING_ROIS,
    runs: int = 5,
    warmup: int = 1,
    eval_data: str | os.PathLike | None = None,
    eval_split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> CompressionReport:
    """Compress, then reload both checkpoints on ``device`` (so the *saved* weights, in their stored dtype, are
    what is timed and evaluated), time their heads in one run and, with ``eval_data``, evaluate both."""
    from fastrcnn_cli.console import info

    report = compress_checkpoint(in_path, out_path, rank_fc6, rank_fc7)
    if not time_head and eval_data is None:
        return report
    before, meta, _ = _load(report.input, device)
    after, _, _ = _load(report.output, device)
    if time_head:
        info(f"timing the head on {num_rois} RoIs ({warmup} warm-up + {runs} runs each, before and after, on {device})")
        report.timing = compare_heads(before, after, num_rois, runs=runs, warmup=warmup, device=device)
    if eval_data is not None:
        report.evaluation = evaluate_before_after(
            {"before": before, "after": after}, meta, eval_data, eval_split, device, cache_dir=cache_dir, workers=workers
        )
    return report


# ---------------------------------------------------------------------------------------------------------
# printing


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _ms(stats: Mapping[str, Any]) -> str:
    return f"{stats['median_ms']:.1f} ms ({stats['min_ms']:.1f}-{stats['max_ms']:.1f})"


def render_report(report: CompressionReport):
    """Rich tables of a :class:`CompressionReport`: one row per layer, then files, time and mAP."""
    from rich.console import Group
    from rich.table import Table

    layers = Table(title="truncated SVD of the head", title_justify="left")
    for col in ("layer", "u x v", "rank", "params before", "after", "ratio", "energy kept"):
        layers.add_column(col, justify="left" if col in ("layer", "u x v") else "right", no_wrap=True)
    for r in report.layers:
        rank = f"{r.previous_rank} -> {r.rank}" if r.previous_rank else str(r.rank)
        layers.add_row(
            r.name, r.shape, rank, f"{r.params_before:,}", f"{r.params_after:,}",
            f"{r.params_after / r.params_before:.3f}", f"{100 * r.energy_kept:.2f}%",
        )
    caption = None
    if report.timing:
        t = report.timing
        caption = f"times: median (min-max) of {t['runs']} runs on {t['num_rois']} RoIs, {t['device']}"
    summary = Table(title="before -> after", title_justify="left", caption=caption, caption_justify="left")
    summary.add_column("")
    summary.add_column("before", justify="right")
    summary.add_column("after", justify="right")
    summary.add_column("", justify="right")
    summary.add_row(
        f"file ({report.dtype})", _size(report.size_before), _size(report.size_after),
        f"x{report.size_after / max(report.size_before, 1):.3f}",
    )
    summary.add_row(
        "weights", _size(report.weights_before), _size(report.weights_after),
        f"x{report.weights_after / max(report.weights_before, 1):.3f}",
    )
    if report.timing:
        t = report.timing
        for part in ("fc6", "fc7", "total"):
            label = "head time (fc6 + fc7)" if part == "total" else f"{part} time"
            b, a = t["before"][part], t["after"][part]
            summary.add_row(label, _ms(b), _ms(a), f"speed-up {b['median_ms'] / a['median_ms']:.2f}x")
    if report.evaluation:
        e = report.evaluation
        for key, label in (("map", f"mAP ({e['headline']}, {e['split']})"), ("map_voc07", "mAP VOC07 11-pt"), ("map_area", "mAP area")):
            if key != "map" and key == f"map_{e['headline']}":
                continue
            b, a = e["before"][key], e["after"][key]
            fmt = (lambda x: "n/a" if x is None else f"{100 * x:.2f}")
            delta = "" if a is None or b is None else f"{100 * (a - b):+.2f} points"
            summary.add_row(label, fmt(b), fmt(a), delta)
    parts = [layers, summary]
    if report.timing:
        t = report.timing
        parts.append(f"[dim]timed: {t['timed']}; {t['warmup']} warm-up run(s) first[/dim]")
    if report.evaluation:
        parts.append(f"[dim]{report.evaluation['protocol']}[/dim]")
    return Group(*parts)

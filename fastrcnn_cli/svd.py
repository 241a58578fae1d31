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

This module is the factorisation: :func:`svd_factors`, :func:`compress_layer`, :func:`compress_model`. A
checkpoint's compression (reading, writing, the mAP before and after: what ``fastrcnn compress-svd`` does) is
:mod:`fastrcnn_cli.svd_checkpoint`; the timing of a head before and after is :mod:`fastrcnn_cli.svd_timing`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastrcnn_cli.errors import ExitCode, FastRCNNError, InputError

#: the original's ranks for VGG16 (fc6 25088 -> 4096, fc7 4096 -> 4096)
PAPER_RANKS: dict[str, int] = {"fc6": 1024, "fc7": 256}
#: the layers of the head that truncated SVD applies to, in order
HEAD_LAYERS: tuple[str, ...] = ("fc6", "fc7")


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
        module = get_layer(model, name)
        weight_shape, previous = layer_shape(module, name)
        check_rank(rank, name, *weight_shape, previous)
    reports = []
    for name, rank in ranks.items():
        layer, report = compress_layer(get_layer(model, name), rank, name)
        _set_layer(model, name, layer)
        reports.append(report)
    config = getattr(model, "config", None)
    head = getattr(config, "head", None)
    if head is not None and hasattr(head, "ranks"):
        new_ranks = tuple(int(ranks[n]) if n in ranks else head.ranks[i] for i, n in enumerate(HEAD_LAYERS))
        model.config = dataclasses.replace(config, head=dataclasses.replace(head, ranks=new_ranks))
    return model, reports


def get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise LayerError(f"the model has no layer {name!r} to compress") from None


def _set_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, layer)


def layer_shape(module: nn.Module, name: str) -> tuple[tuple[int, int], int | None]:
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
        (u, v), previous = layer_shape(get_layer(model, name), name)
        shapes[name] = (u, v, previous)
    return shapes


def default_fc7_rank(rank_fc6: int, fc7_limit: int) -> int:
    """fc7's rank when only fc6's is given: the paper's 256, or fc6's rank when that is smaller, and never
    more than fc7 allows (``fc7_limit``: min(u, v), or its current rank when it is already factorised)."""
    return max(1, min(rank_fc6, PAPER_RANKS["fc7"], fc7_limit))

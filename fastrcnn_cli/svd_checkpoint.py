"""Truncated SVD of a checkpoint: read it, factorise its head (:mod:`fastrcnn_cli.svd`), write the result, and
measure what changed -- the head's time (:mod:`fastrcnn_cli.svd_timing`) and the mAP before and after.

:func:`run_compress_svd` is what ``fastrcnn compress-svd`` does with :class:`CompressSVDSettings`; it returns a
:class:`CompressionReport` (``to_dict()`` is the command's ``--json``; the command line renders the tables).

The mAP before and after (:func:`evaluate_before_after`) goes through the one evaluation pipeline
(:mod:`fastrcnn_cli.pipeline`): the checkpoint's test scale and proposal settings (with any given laid over
them, the cached Selective Search), the classes matched by name as ``fastrcnn evaluate`` matches them, and
:func:`~fastrcnn_cli.pipeline.evaluate_split`. The "before" mAP is therefore the mAP ``fastrcnn evaluate`` reports
for the input checkpoint, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fastrcnn_cli import progress
from fastrcnn_cli.detect import DetectSettings, Detector
from fastrcnn_cli.devices import describe_device
from fastrcnn_cli.errors import CheckpointError, InputError, SettingsError
from fastrcnn_cli.evaluation import Headline, VOCResult
from fastrcnn_cli.model.checkpoint import (
    Checkpoint,
    model_from_payload,
    read_checkpoint_file,
    resolve_weights,
    save_checkpoint,
)
from fastrcnn_cli.model.fast_rcnn import FastRCNN
from fastrcnn_cli.pipeline import ProposalOverrides, evaluate_split, load_eval_data
from fastrcnn_cli.svd import HEAD_LAYERS, LayerReport, RankError, compress_model, default_fc7_rank, head_shapes
from fastrcnn_cli.svd_timing import TIMING_ROIS, compare_heads


@dataclass(frozen=True)
class BeforeAfter:
    """The mAP of the checkpoint before and after compression on one split."""

    data: Path
    split: str
    num_images: int
    classes: tuple[str, ...]  #: the evaluated classes
    headline: Headline
    results: dict[str, VOCResult]  #: "before", "after"

    @property
    def protocol(self) -> str:
        return next(iter(self.results.values())).protocol

    @property
    def delta_map(self) -> float | None:
        """after - before, headline mAP (None when either is undefined)."""
        if "before" not in self.results or "after" not in self.results:
            return None
        delta = self.results["after"].map - self.results["before"].map
        return None if math.isnan(delta) else delta

    def to_dict(self) -> dict[str, Any]:
        """``map``/``ap`` as fractions in [0, 1] (:meth:`VOCResult.to_dict` under ``before`` and ``after``)."""
        return {
            "data": str(self.data),
            "split": self.split,
            "num_images": self.num_images,
            "evaluated_classes": list(self.classes),
            "protocol": self.protocol,
            "headline": self.headline,
            **{name: result.to_dict() for name, result in self.results.items()},
            "delta_map": self.delta_map,
        }


@dataclass(frozen=True)
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
    timing: dict[str, Any] | None = None  #: :func:`~fastrcnn_cli.svd_timing.compare_heads`
    evaluation: BeforeAfter | None = None  #: :func:`evaluate_before_after`
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "dtype": self.dtype,
            "layers": [layer.to_dict() for layer in self.layers],
            "params_before": sum(layer.params_before for layer in self.layers),
            "params_after": sum(layer.params_after for layer in self.layers),
            "file_bytes_before": self.size_before,
            "file_bytes_after": self.size_after,
            "weights_bytes_before": self.weights_before,
            "weights_bytes_after": self.weights_after,
            "timing": self.timing,
            "evaluation": None if self.evaluation is None else self.evaluation.to_dict(),
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


def load_for_compression(path: Path, device: torch.device | str = "cpu") -> tuple[FastRCNN, Checkpoint, dict[str, Any]]:
    """The model and metadata of a checkpoint, with clear errors for a file that is not one or has no fc head,
    and ``{"weights_bytes", "train_state"}`` (the size of its weights, whether it holds a training state)."""
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
    in_path = resolve_weights(in_path)
    model, meta, loaded = load_for_compression(in_path)
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
        raise InputError("the output would overwrite the input checkpoint; choose another output file", out)
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
            "compare the weights' sizes rather than the files' (training cannot resume from the output)"
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
    meta: Checkpoint,
    data: str | os.PathLike,
    split: str = "test",
    device: torch.device | str = "cpu",
    *,
    classes: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    proposals: ProposalOverrides | None = None,
    strict: bool = False,
) -> BeforeAfter:
    """mAP of each model (all with ``meta``'s classes, test scale and proposal settings) on one split, through
    the pipeline ``fastrcnn evaluate`` uses: :func:`~fastrcnn_cli.pipeline.load_eval_data` once (classes matched
    by name; ``classes``: evaluate only these), then :func:`~fastrcnn_cli.pipeline.evaluate_split` per model."""
    proposal_settings = (proposals or ProposalOverrides()).apply(meta)
    eval_data = load_eval_data(
        data, split, meta.classes, proposal_settings, requested=classes, cache_dir=cache_dir, workers=workers,
        strict=strict,
    )  # fmt: skip
    results = {}
    for name, model in models.items():
        detector = Detector(model, DetectSettings.for_checkpoint(meta), device, proposal_settings)
        results[name] = evaluate_split(detector, eval_data, description=f"evaluating ({name})").voc
    return BeforeAfter(
        data=eval_data.root,
        split=split,
        num_images=len(eval_data.records),
        classes=eval_data.classes,
        headline=eval_data.headline,
        results=results,
    )


# ---------------------------------------------------------------------------------------------------------
# the whole command


@dataclass(frozen=True)
class CompressSVDSettings:
    """What ``fastrcnn compress-svd`` is asked to do (its options, by field)."""

    weights: Path | None = None  #: the checkpoint to compress (None: the shipped model)
    out: Path | None = None  #: where the result goes (None: :func:`default_output_path`)
    rank_fc6: int | None = None  #: None leaves fc6 as it is
    rank_fc7: int | None | Literal["default"] = "default"  #: "default": :func:`default_fc7_rank`
    device: str | torch.device = "cpu"
    time_head: bool = True
    num_rois: int = TIMING_ROIS
    runs: int = 5
    warmup: int = 1
    eval_data: Path | None = None  #: a data set to measure the mAP before and after on
    eval_split: str = "test"
    classes: tuple[str, ...] | None = None  #: evaluate only these classes
    cache_dir: Path | None = None  #: the proposal cache folder
    workers: int | None = None
    proposals: ProposalOverrides = field(default_factory=ProposalOverrides)
    strict: bool = False

    def __post_init__(self) -> None:
        def whole(value: object, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        problems = [
            (name, f"must be an integer >= {low}, got {value!r}")
            for name, value, low, ok in (
                ("rank_fc6", self.rank_fc6, 1, self.rank_fc6 is None or whole(self.rank_fc6, 1)),
                ("rank_fc7", self.rank_fc7, 1, self.rank_fc7 in (None, "default") or whole(self.rank_fc7, 1)),
                ("num_rois", self.num_rois, 1, whole(self.num_rois, 1)),
                ("runs", self.runs, 1, whole(self.runs, 1)),
                ("warmup", self.warmup, 0, whole(self.warmup, 0)),
            )
            if not ok
        ]
        if problems:
            raise SettingsError(*problems[0], *problems[1:])


def run_compress_svd(settings: CompressSVDSettings) -> CompressionReport:
    """Compress, then reload both checkpoints on ``device`` (so the *saved* weights, in their stored dtype, are
    what is timed and evaluated), time their heads in one run and, with ``eval_data``, evaluate both."""
    s = settings
    report = compress_checkpoint(s.weights, s.out, s.rank_fc6, s.rank_fc7)
    if not s.time_head and s.eval_data is None:
        return report
    before, meta, _ = load_for_compression(report.input, s.device)
    after, _, _ = load_for_compression(report.output, s.device)
    if s.time_head:
        progress.info(f"timing the head on {s.num_rois} RoIs ({s.warmup} warm-up + {s.runs} runs each, before and "
                      f"after, on {describe_device(torch.device(s.device))})")
        timing = compare_heads(before, after, s.num_rois, runs=s.runs, warmup=s.warmup, device=s.device)
        report = dataclasses.replace(report, timing=timing)
    if s.eval_data is not None:
        evaluation = evaluate_before_after(
            {"before": before, "after": after}, meta, s.eval_data, s.eval_split, s.device, classes=s.classes,
            cache_dir=s.cache_dir, workers=s.workers, proposals=s.proposals, strict=s.strict,
        )  # fmt: skip
        report = dataclasses.replace(report, evaluation=evaluation)
    return report

"""Single-stage, multi-task training of Fast R-CNN (the paper's section 2.3), with a run folder and resume.

One SGD iteration: take N images (2) in the epoch's order, each possibly flipped and rescaled; sample R / N
RoIs (64) from each (:mod:`fastrcnn_cli.sampling`); one forward pass of the whole network (shared
backbone, RoI pooling, head); the multi-task loss (:mod:`fastrcnn_cli.loss`); one backward pass through
everything that is not frozen, RoI pooling included; one SGD step with momentum and weight decay. The
learning rate is multiplied by ``gamma`` at each of ``lr_steps``. Biases get twice the learning rate and no
weight decay, as in the original's Caffe solver (``bias_lr_factor``).

Each epoch visits every image and (with ``flip``) its mirror image once, in a random order that pairs images
of the same orientation (the original's aspect grouping), so a batch needs little padding.

A run writes to a fresh folder (``runs/train``, ``runs/train2``, ...): ``args.json`` (the resolved
settings), ``metrics.csv`` (a row per log interval; mAP columns on evaluation rows), ``loss.png`` and
``map.png``, and the checkpoints ``last.pt`` (every ``checkpoint_every`` iterations, at the end and on
Ctrl-C) and ``best.pt`` (best evaluation mAP), all written atomically. ``resume`` continues exactly: model,
optimiser, schedule, iteration, data order and every random state are in ``last.pt``.

Data-parallel training: launched with ``torchrun --nproc-per-node P``, every process trains on its own
batches (N images each, so the effective batch is P x N) and gradients are averaged by
DistributedDataParallel (gloo on the CPU, NCCL on GPUs). Process 0 alone writes the run folder and
evaluates.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fastrcnn_cli import box_coding
from fastrcnn_cli.boxes import hflip
from fastrcnn_cli.console import err, info, progress_enabled, warn
from fastrcnn_cli.data.advice import training_advice
from fastrcnn_cli.data.holdout import hold_out
from fastrcnn_cli.data.voc import ImageRecord, VOCDataset, available_splits, load_dataset, read_split_ids
from fastrcnn_cli.devices import resolve_device
from fastrcnn_cli.errors import DivergedError, ExitCode, FastRCNNError, InputError, OutputError, SettingsError
from fastrcnn_cli.interrupts import DeferredStop
from fastrcnn_cli.io import atomic_write_json, atomic_write_text, read_image
from fastrcnn_cli.loss import fast_rcnn_loss
from fastrcnn_cli.model.backbones import BackboneSpec
from fastrcnn_cli.monitor import RunMonitor, prior_loss
from fastrcnn_cli.model.checkpoint import Checkpoint, read_checkpoint_file, save_checkpoint
from fastrcnn_cli.model.fast_rcnn import (
    DEFAULT_HEADS,
    FastRCNN,
    HeadSpec,
    ModelConfig,
    batch_images,
    size_multiple,
    build_model,
    resize_image,
    scale_factor,
)
from fastrcnn_cli.recipes import RECIPES, recipe_for
from fastrcnn_cli.sampling import SamplingSettings, sample_rois, unique_rois


class Interrupted(FastRCNNError):
    exit_code = ExitCode.INTERRUPTED


#: ``eval_split`` values with a meaning of their own
EVAL_AUTO, EVAL_NONE = "auto", "none"


@dataclass(frozen=True)
class TrainSettings:
    """Every number of the training procedure.

    Fields left ``None`` come from the recipe (:mod:`fastrcnn_cli.recipes`: ``paper`` for vgg16,
    ``small-data`` for efficientnet-lite0) when the run starts (:meth:`resolved`); ``args.json`` records the
    resolved values, so a resumed run needs no recipe.
    """

    data: str
    split: str = "trainval"
    #: validation for periodic evaluation and best.pt: "auto" (val, else a held-out part of ``split``; see
    #: :mod:`fastrcnn_cli.data.holdout`), a split name, or "none"
    eval_split: str = EVAL_AUTO
    holdout_fraction: float = 0.12  #: share of ``split`` held out for validation when there is no val split
    recipe: str | None = None  #: paper or small-data (None: the backbone's default)
    classes: tuple[str, ...] | None = None
    strict: bool = False
    # the network
    backbone: str = "vgg16"
    backbone_cut: str | None = None
    frozen_stages: int | None = None
    backbone_weights: str | None = None
    pretrained: bool = True  #: start from ImageNet weights (False: random init, for timing or from-scratch runs)
    hidden: int | None = None  #: fc6/fc7 width (default: 4096 for vgg16, 1024 for efficientnet-lite0)
    dropout: float | None = None  #: after fc6 and fc7 (default: 0.5 for vgg16, 0 for efficientnet-lite0)
    # hierarchical sampling
    images_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou_low: float = 0.1
    bg_iou_high: float = 0.5
    flip: bool = True
    scales: tuple[int, ...] | None = None  #: shorter side per training image, drawn at random when several
    max_size: int | None = None
    test_scale: int | None = None  #: evaluation / detection scale (default: the only scale, or 600 for several)
    photometric: float | None = None  #: brightness / contrast / saturation jitter strength (0: none)
    # the solver
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    bias_lr_factor: float = 2.0
    lr_steps: tuple[int, ...] | None = None  #: iterations where lr is multiplied by gamma (default: the recipe's fractions)
    gamma: float = 0.1
    iterations: int | None = None  #: total iterations (default: the recipe's, or its epochs)
    epochs: float | None = None  #: schedule length in epochs (an epoch: every training image and its mirror)
    time_budget: float | None = None  #: minutes: fit iterations to this from the measured speed
    warmup_iterations: int | None = None  #: linear warm-up from lr / 10 (0: none, as in the paper)
    box_loss_weight: float = 1.0
    backbone_lr_factor: float | None = None  #: learning-rate multiplier of the backbone's trained layers
    clip_grad_norm: float | None = None  #: clip the global gradient norm to this (inf: no clipping, as in the paper)
    # bookkeeping
    eval_every: int | None = None  #: iterations between evaluations (0: only at the end; default: 4 per run)
    checkpoint_every: int = 1000
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    amp: bool = False  #: automatic mixed precision (CUDA only; diverged at lr 0.01 on an H100, so opt-in)
    runs_dir: str = "runs"
    name: str = "train"
    # proposals
    proposal_mode: str = "fast"
    proposal_max_side: int = 500
    proposal_top: int = 2000
    proposal_cache: str | None = None
    workers: int | None = None
    proposal_proposer: str = "opencv"  #: "opencv" | "native" (fastrcnn_cli.proposals.native)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for k, v in data.items():
            if k not in known:
                continue
            if isinstance(v, list):
                v = tuple(v)
            values[k] = v
        if "recipe" not in data:  # a run folder from before recipes: what it trained with had none of them
            values.update(backbone_lr_factor=1.0, clip_grad_norm=math.inf, photometric=0.0)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.eval_split is None:  # run folders before "auto" wrote null for no evaluation
            object.__setattr__(self, "eval_split", EVAL_NONE)

    def resolved(self, num_train_images: int) -> TrainSettings:
        """Every ``None`` filled from the recipe, and the schedule fitted to ``num_train_images``.

        Scales, maximum size and test scale come from the recipe only as a group (a user's ``--scale 600``
        is not tested at the recipe's 480); learning-rate steps given as the recipe's fractions of the
        schedule follow a user's ``iterations``.
        """
        recipe = recipe_for(self.recipe, self.backbone)
        values = {k: v for k, v in recipe.overrides().items() if getattr(self, k) is None}
        if self.scales is not None:  # the user's scales: test at them, not at the recipe's test scale
            values.pop("test_scale", None)
            if self.max_size is None:
                values["max_size"] = max(recipe.max_size, max(self.scales))
        values["recipe"] = recipe.name
        entries = num_train_images * (2 if self.flip else 1)
        if self.iterations is None:
            if self.epochs is not None:
                values["iterations"] = max(1, math.ceil(self.epochs * entries / self.images_per_batch))
            else:
                values["iterations"] = recipe.schedule(entries, self.images_per_batch)
        iterations = values.get("iterations", self.iterations)
        if self.lr_steps is None:
            values["lr_steps"] = tuple(int(round(f * iterations)) for f in recipe.step_fractions)
        if self.eval_every is None:
            values["eval_every"] = max(1, math.ceil(iterations / recipe.evaluations))
        return dataclasses.replace(self, **values)

    @property
    def resolved_test_scale(self) -> int:
        if self.test_scale:
            return int(self.test_scale)
        if len(self.scales) == 1:
            return int(self.scales[0])
        return 600 if min(self.scales) <= 600 <= max(self.scales) else int(sorted(self.scales)[len(self.scales) // 2])

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.rois_per_image, self.fg_fraction, self.fg_iou, self.bg_iou_low, self.bg_iou_high)

    def proposal_settings(self):
        from fastrcnn_cli.proposals import ProposalSettings

        return ProposalSettings(
            mode=self.proposal_mode, max_side=self.proposal_max_side, top=self.proposal_top, proposer=self.proposal_proposer
        )

    def model_config(self, classes: Sequence[str]) -> ModelConfig:
        default = DEFAULT_HEADS[self.backbone]
        head = HeadSpec(
            hidden=default.hidden if self.hidden is None else self.hidden,
            roi_size=default.roi_size,
            dropout=default.dropout if self.dropout is None else self.dropout,
        )
        spec = BackboneSpec(self.backbone, self.backbone_cut, self.frozen_stages)
        return ModelConfig(backbone=spec, classes=tuple(classes), head=head)

    def validate(self) -> None:
        """Check every value (``None``: from the recipe, checked once resolved). Raises :class:`SettingsError`
        whose problems name the fields (the command line shows its flags instead); NaN fails every check."""
        problems: list[tuple[str, str]] = []

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                problems.append((name, message))

        def finite(v: float | None) -> bool:
            return v is None or math.isfinite(v)

        need(self.images_per_batch >= 1, "images_per_batch", "must be at least 1")
        need(self.rois_per_image >= 1, "rois_per_image", "must be at least 1")
        need(0 < self.fg_fraction <= 1, "fg_fraction", "must be in (0, 1]")
        for name in ("fg_iou", "bg_iou_low", "bg_iou_high"):
            need(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        if all(0 <= getattr(self, name) <= 1 for name in ("fg_iou", "bg_iou_low", "bg_iou_high")):
            need(self.bg_iou_low <= self.bg_iou_high <= self.fg_iou, "bg_iou_low",
                 "must be <= the background upper bound, itself <= the foreground IoU threshold")
        need(0 < self.holdout_fraction < 1, "holdout_fraction", "must be in (0, 1)")
        need(self.iterations is None or self.iterations >= 1, "iterations", "must be at least 1")
        need(self.epochs is None or (finite(self.epochs) and self.epochs > 0), "epochs", "must be a positive number")
        need(self.time_budget is None or (finite(self.time_budget) and self.time_budget > 0), "time_budget",
             "must be a positive number of minutes")
        need(self.lr is None or (finite(self.lr) and self.lr > 0), "lr", "must be a positive number")
        need(finite(self.momentum) and 0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(self.weight_decay is None or (finite(self.weight_decay) and self.weight_decay >= 0), "weight_decay",
             "must be >= 0")
        need(finite(self.bias_lr_factor) and self.bias_lr_factor >= 0, "bias_lr_factor", "must be >= 0")
        need(finite(self.gamma) and self.gamma > 0, "gamma", "must be a positive number")
        need(self.lr_steps is None or all(v >= 0 for v in self.lr_steps), "lr_steps", "must be >= 0")
        need(self.backbone_lr_factor is None or (finite(self.backbone_lr_factor) and self.backbone_lr_factor >= 0),
             "backbone_lr_factor", "must be >= 0")
        need(self.clip_grad_norm is None or self.clip_grad_norm > 0, "clip_grad_norm", "must be > 0 (inf: no clipping)")
        need(self.photometric is None or (finite(self.photometric) and 0 <= self.photometric < 1), "photometric",
             "must be in [0, 1)")
        need(self.warmup_iterations is None or self.warmup_iterations >= 0, "warmup_iterations", "must be >= 0")
        need(self.hidden is None or self.hidden >= 1, "hidden", "must be at least 1")
        need(self.dropout is None or (finite(self.dropout) and 0 <= self.dropout < 1), "dropout", "must be in [0, 1)")
        need(self.eval_every is None or self.eval_every >= 0, "eval_every", "must be >= 0 (0: at the end only)")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be at least 1")
        need(self.log_every >= 1, "log_every", "must be at least 1")
        need(self.seed >= 0, "seed", "must be >= 0")
        need(self.test_scale is None or self.test_scale >= 32, "test_scale", "must be >= 32")
        need(self.proposal_max_side >= 16, "proposal_max_side", "must be >= 16")
        need(self.proposal_top >= 1, "proposal_top", "must be at least 1")
        need(self.workers is None or self.workers >= 1, "workers", "must be at least 1")
        if self.scales is not None:
            need(bool(self.scales) and all(v >= 32 for v in self.scales), "scales", "must be >= 32")
            need(self.max_size is None or not self.scales or self.max_size >= max(self.scales), "max_size",
                 "must be at least the largest scale")
        need(self.recipe is None or self.recipe in RECIPES, "recipe", f"must be one of {', '.join(RECIPES)}")
        need(self.backbone in DEFAULT_HEADS, "backbone",
             f"unknown backbone {self.backbone!r}; choose one of {', '.join(DEFAULT_HEADS)}")
        if self.backbone in DEFAULT_HEADS:
            try:  # the frozen stages and the cut a backbone allows
                BackboneSpec(self.backbone, self.backbone_cut, self.frozen_stages)
            except (ValueError, TypeError) as exc:
                need(False, "backbone_cut" if "cut" in str(exc) else "frozen_stages", str(exc))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])


# ---------------------------------------------------------------------------------------------------------------
# Data: epochs, batches, one image's inputs
# ---------------------------------------------------------------------------------------------------------------


def epoch_order(
    records: Sequence[ImageRecord], flip: bool, images_per_batch: int, rng: np.random.Generator
) -> np.ndarray:
    """The entries (record index, flipped) of one epoch, [E, 2], grouped so a batch shares an orientation."""
    entries = [(i, 0) for i in range(len(records))]
    if flip:
        entries += [(i, 1) for i in range(len(records))]
    entries_arr = np.asarray(entries, np.int64)
    wide = np.array([records[i].width >= records[i].height for i, _ in entries], bool)
    groups = []
    for mask in (wide, ~wide):
        idx = np.nonzero(mask)[0]
        idx = idx[rng.permutation(len(idx))]
        usable = len(idx) - len(idx) % images_per_batch
        groups.append(idx[:usable].reshape(-1, images_per_batch))
        if usable < len(idx):  # the leftover images fill one more batch, topped up from the group's start
            leftover = idx[usable:]
            top_up = np.resize(idx, images_per_batch - len(leftover))
            groups.append(np.concatenate([leftover, top_up])[None, :])
    batches = np.concatenate([g for g in groups if len(g)], axis=0)
    batches = batches[rng.permutation(len(batches))]
    return entries_arr[batches.reshape(-1)]


@dataclass
class TrainImage:
    image: torch.Tensor  #: [3, H, W] network input
    rois: torch.Tensor  #: [R, 4] network-input pixels
    labels: torch.Tensor  #: [R]
    targets: torch.Tensor  #: [R, 4] normalised offsets


def photometric_jitter(image: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
    """Scale a BGR uint8 image's brightness, then its contrast (about the mean), then its saturation (about
    each pixel's grey value) by the three ``factors``."""
    brightness, contrast, saturation = factors
    x = image.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR luma weights
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def load_train_image(
    record: ImageRecord,
    flipped: bool,
    scale: int,
    settings: TrainSettings,
    proposals: np.ndarray,
    preprocessing,
    spatial_scale: float,
    generator: torch.Generator,
    jitter: tuple[float, float, float] | None = None,
) -> TrainImage:
    image = read_image(record.image_path)
    if jitter is not None:
        image = photometric_jitter(image, jitter)
    height, width = image.shape[:2]
    gt = record.boxes.astype(np.float32)
    props = np.asarray(proposals, np.float32).reshape(-1, 4)
    if flipped:
        image = image[:, ::-1]
        gt = hflip(gt, width)
        props = hflip(props, width)
    factor = scale_factor(height, width, scale, settings.max_size)
    image = resize_image(np.ascontiguousarray(image), factor)
    gt = gt * factor
    props = props * factor
    keep, _ = unique_rois(props, spatial_scale)
    props = props[keep]
    sampled = sample_rois(
        torch.from_numpy(props), torch.from_numpy(gt), torch.from_numpy(record.labels + 1), settings.sampling, generator
    )
    return TrainImage(
        image=preprocessing.image_to_tensor(image),
        rois=sampled.boxes.float(),
        labels=sampled.labels,
        targets=box_coding.normalise(sampled.targets.float()),
    )


def usable_records(records: Sequence[ImageRecord], proposals: dict[str, np.ndarray]) -> list[ImageRecord]:
    """Images that can give a RoI: with a ground-truth box (always foreground) or with proposals at all."""
    return [r for r in records if r.num_objects > 0 or len(proposals.get(r.id, ())) > 0]


# ---------------------------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------------------------


def make_optimizer(model: FastRCNN, s: TrainSettings) -> torch.optim.SGD:
    """SGD with four parameter groups: (backbone, head) x (weights, biases).

    Biases get ``bias_lr_factor`` times the rate and no weight decay (the original's Caffe solver); the
    backbone's layers get ``backbone_lr_factor`` times the rate on top.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("backbone."), name.endswith(".bias")), []).append(p)
    param_groups = []
    for (in_backbone, is_bias), params in sorted(groups.items()):
        factor = (s.bias_lr_factor if is_bias else 1.0) * (s.backbone_lr_factor if in_backbone else 1.0)
        param_groups.append(
            {"params": params, "lr_factor": factor, "weight_decay": 0.0 if is_bias else s.weight_decay}
        )
    return torch.optim.SGD(param_groups, lr=s.lr, momentum=s.momentum)


def gradient_norms(model: FastRCNN) -> tuple[float, float]:
    """The L2 norms of the gradient of the backbone's and of the head's trained parameters."""
    backbone, head = [], []
    for name, p in model.named_parameters():
        if p.grad is not None:
            (backbone if name.startswith("backbone.") else head).append(p.grad.detach())

    def norm(grads: list[torch.Tensor]) -> float:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0

    return norm(backbone), norm(head)


def learning_rate(s: TrainSettings, iteration: int) -> float:
    """The step schedule (and optional linear warm-up) at a 0-based iteration."""
    lr = s.lr * s.gamma ** sum(iteration >= step for step in s.lr_steps)
    if s.warmup_iterations and iteration < s.warmup_iterations:
        alpha = iteration / s.warmup_iterations
        lr *= 0.1 * (1 - alpha) + alpha
    return lr


# ---------------------------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------------------------

METRIC_FIELDS = [
    "iteration", "epoch", "loss", "loss_cls", "loss_loc", "prior_loss", "lr", "fg_fraction", "grad_norm", "grad_norm_backbone",
    "grad_norm_head", "fc6_active", "fc7_active", "images_per_s", "elapsed_s", "map_voc07", "map_area", "warning",
]  # fmt: skip


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """runs/train, then runs/train2, runs/train3, ...: never an existing folder."""
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = runs / (name if n == 1 else f"{name}{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def plot_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """loss.png, health.png (gradient norms, live head units) and map.png from the metrics rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(name: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            v = r.get(name)
            if v not in (None, ""):
                xs.append(float(r["iteration"]))
                ys.append(float(v))
        return xs, ys

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("loss", "total"), ("loss_cls", "classification"), ("loss_loc", "box regression")):
        xs, ys = col(name)
        ax.plot(xs, ys, label=label)
    xs, ys = col("prior_loss")
    ax.plot(xs, ys, linestyle="--", color="grey", label="knows nothing (prior loss)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title("Fast R-CNN multi-task loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, run_dir / "loss.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("grad_norm", "gradient norm"), ("grad_norm_backbone", "backbone"), ("grad_norm_head", "head")):
        xs, ys = col(name)
        ax.plot(xs, ys, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("gradient norm (before clipping)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    for name, label, style in (("fc6_active", "fc6 units alive", ":"), ("fc7_active", "fc7 units alive", "-.")):
        xs, ys = col(name)
        right.plot(xs, ys, linestyle=style, color="black", label=label)
    right.set_ylim(0, 1.05)
    right.set_ylabel("share of head units alive")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower left")
    ax.set_title("training health")
    fig.tight_layout()
    _save_figure(fig, run_dir / "health.png")
    plt.close(fig)

    xs, ys = col("map_voc07")
    xa, ya = col("map_area")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, ys, marker="o", label="mAP (VOC07 11-point)")
    ax.plot(xa, ya, marker="s", label="mAP (area)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mAP @ IoU 0.5")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("held-out mAP" if xs else "held-out mAP (no evaluation yet)")
    fig.tight_layout()
    _save_figure(fig, run_dir / "map.png")
    plt.close(fig)


def _save_figure(fig, path: Path) -> None:
    import io

    from fastrcnn_cli.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info_ = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info_


def barrier(d: DistInfo) -> None:
    if d.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    last: Path
    best: Path | None
    best_map: float | None
    seconds: float
    images_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Holds the state of one run; :meth:`run` trains to ``settings.iterations``."""

    def __init__(self, settings: TrainSettings, run_dir: Path | None = None, resume: Path | None = None) -> None:
        settings.validate()
        # a checkpoint to resume is read (safely: tensors and plain data only) before any long work
        self._resume_payload = read_checkpoint_file(resume) if resume is not None else None
        self.settings = s = settings
        self.device = resolve_device(s.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        self.amp = bool(s.amp and self.device.type == "cuda")

        self.train_set: VOCDataset = load_dataset(s.data, s.split, s.classes, strict=s.strict, warn=self.dist.is_main)
        self.classes = self.train_set.classes
        self.eval_set, train_records, self.validation = self._validation_split()

        self.proposal_settings = s.proposal_settings()
        self.train_props, self.eval_props = self._proposals()
        records = usable_records(train_records, self.train_props)
        if not records:
            raise InputError(f"split {s.split!r} has no image with a box or a proposal to train on", self.train_set.root)
        self.records = records
        # the recipe's values for what the user left unset, the schedule fitted to this data set
        self.settings = s = s.resolved(len(records))
        s.validate()
        if self.dist.is_main and resume is None:
            for note in training_advice(records, self.classes, self.train_props, s.resolved_test_scale):
                warn(note)

        torch.manual_seed(s.seed + self.dist.rank)
        # resuming: every weight comes from last.pt, so no backbone weights file (args.json names one) is read
        self.model = build_model(
            s.model_config(self.classes), pretrained=s.pretrained and resume is None, backbone_weights=s.backbone_weights
        ).to(self.device)
        self.model.train()
        self.optimizer = make_optimizer(self.model, s)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.np_rng = np.random.default_rng([s.seed, self.dist.rank])
        self.sample_gen = torch.Generator().manual_seed(s.seed * 1000 + self.dist.rank)
        self.iteration = 0
        self.epoch = 0
        self.order = np.zeros((0, 2), np.int64)
        self.position = 0
        self.best_map: float | None = None
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.run_dir = run_dir
        if resume is not None:
            self._load(resume)
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    # -- set-up ----------------------------------------------------------------------------------------------

    def _epochs(self, iterations: int) -> float:
        """``iterations`` in epochs of this run's training images (and their mirror images)."""
        entries = len(self.records) * (2 if self.settings.flip else 1)
        return iterations * self.settings.images_per_batch * self.dist.world_size / max(entries, 1)

    def _validation_split(self) -> tuple[VOCDataset | None, list[ImageRecord], str]:
        """(validation set or None, training images, how the validation set was chosen); see
        :mod:`fastrcnn_cli.data.holdout`."""
        s, train = self.settings, self.train_set
        main = self.dist.is_main
        name = s.eval_split
        if name.lower() == EVAL_NONE:
            return None, list(train.records), "none"
        if name == EVAL_AUTO:
            if s.split != "val" and "val" in available_splits(train.root) and read_split_ids(train.root, "val"):
                name = "val"
            else:
                kept, held = hold_out(train.records, len(self.classes), s.holdout_fraction)
                if not held:
                    if main:
                        warn(f"{len(train.records)} training images are too few to hold any out: no validation")
                    return None, kept, "none"
                how = (f"{len(held)} images held out of {s.split!r} ({s.holdout_fraction:.0%}, the same ones in "
                       f"every run); training on the other {len(kept)}")
                if main:
                    info(f"validation: {how} (the data set has no 'val' split)")
                return VOCDataset(train.root, f"{s.split}-holdout", self.classes, held), kept, how
        elif name.lower() == "test" and main:
            warn("validating on the test split: picking best.pt (and any setting) by test results inflates them; "
                 "leave --eval-split unset to validate on 'val' or a held-out part of the training split")
        try:
            eval_set = load_dataset(train.root, name, self.classes, strict=s.strict, warn=main)
        except InputError as exc:
            if "no split named" not in str(exc):
                raise
            if main:
                warn(f"no evaluation: {exc}")
            return None, list(train.records), "none"
        held_ids = set(eval_set.ids)
        kept = [r for r in train.records if r.id not in held_ids]
        how = f"split {name!r} ({len(eval_set)} images)"
        if len(kept) < len(train.records):
            how += f"; its {len(train.records) - len(kept)} images in {s.split!r} are left out of training"
        if main:
            info(f"validation: {how}")
        return eval_set, kept, how

    def _proposals(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        from fastrcnn_cli.proposals import load_or_compute_proposals

        s = self.settings
        cache = Path(s.proposal_cache) if s.proposal_cache else None
        train = evals = {}
        for rank_turn in (0, 1):  # process 0 computes what is missing, the others then read the cache
            if (rank_turn == 0) == self.dist.is_main:
                train = load_or_compute_proposals(self.train_set, self.proposal_settings, cache, s.workers)
                if self.eval_set is not None:
                    evals = load_or_compute_proposals(self.eval_set, self.proposal_settings, cache, s.workers)
            barrier(self.dist)
        return train, evals

    def _meta(self) -> Checkpoint:
        s = self.settings
        return Checkpoint(
            config=self.model.config,
            preprocessing=self.model.preprocessing,
            scales=(s.resolved_test_scale,),
            max_size=s.max_size,
            proposals=self.proposal_settings.to_dict(),
            training={
                "data": str(self.train_set.root),
                "split": s.split,
                "eval_split": s.eval_split,
                "validation": self.validation,
                "iterations": self.iteration,
                "seconds": round(self.elapsed, 1),
                "best_map": self.best_map,
                "settings": s.to_dict(),
            },
        )

    def _train_state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "epoch": self.epoch,
            "order": torch.from_numpy(self.order.copy()),
            "position": self.position,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "numpy_rng": json.dumps(self.np_rng.bit_generator.state),
            "sample_gen": self.sample_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "bbox_pred": {
                "weight": self.model.bbox_pred.weight.detach().cpu().clone(),
                "bias": self.model.bbox_pred.bias.detach().cpu().clone(),
            },
            "best_map": self.best_map,
            "elapsed": self.elapsed,
            "world_size": self.dist.world_size,
        }

    def _kept_checkpoint(self) -> str:
        """What is left on disk after a stop: the last checkpoint written, if there is one."""
        last = self.run_dir / "last.pt" if self.run_dir is not None else None
        if last is None or not last.is_file():
            return "No checkpoint had been written yet."
        return f"The last good checkpoint is kept: {last}."

    def _load(self, path: Path) -> None:
        payload = self._resume_payload if self._resume_payload is not None else read_checkpoint_file(path)
        self._resume_payload = None
        state = payload.get("train_state")
        if state is None:
            raise InputError("has no training state (only last.pt / best.pt of a run can be resumed)", path)
        if int(state.get("world_size", 1)) != self.dist.world_size:
            raise InputError(
                f"was trained with {state.get('world_size')} process(es); resume it with the same number", path
            )
        weights = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        weights["bbox_pred.weight"] = state["bbox_pred"]["weight"]
        weights["bbox_pred.bias"] = state["bbox_pred"]["bias"]
        self.model.load_state_dict(weights, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.np_rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.sample_gen.set_state(state["sample_gen"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.iteration = int(state["iteration"])
        self.epoch = int(state["epoch"])
        self.order = state["order"].numpy()
        self.position = int(state["position"])
        self.best_map = state.get("best_map")
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.run_dir is not None:
            rows = read_metrics(self.run_dir / "metrics.csv")
            self.history = [r for r in rows if int(r["iteration"]) <= self.iteration]

    # -- one iteration -----------------------------------------------------------------------------------------

    def _next_entries(self) -> np.ndarray:
        """The next batch's entries for this process (each process takes every world_size-th batch)."""
        s = self.settings
        n = s.images_per_batch
        needed = n * self.dist.world_size
        if self.position + needed > len(self.order):
            self.order = epoch_order(self.records, s.flip, n, self.np_rng)
            self.position = 0
            self.epoch += 1
            if len(self.order) < needed:  # tiny data sets: repeat the epoch's order
                reps = -(-needed // len(self.order))
                self.order = np.concatenate([self.order] * reps)
        start = self.position + self.dist.rank * n
        entries = self.order[start : start + n]
        self.position += needed
        return entries

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.settings
        entries = self._next_entries()
        images, rois, labels, targets = [], [], [], []
        for b, (index, flipped) in enumerate(entries):
            record = self.records[int(index)]
            scale = int(s.scales[int(self.np_rng.integers(len(s.scales)))]) if len(s.scales) > 1 else s.scales[0]
            jitter = None
            if s.photometric:
                jitter = tuple(float(f) for f in self.np_rng.uniform(1 - s.photometric, 1 + s.photometric, 3))
            item = load_train_image(
                record, bool(flipped), scale, s, self.train_props.get(record.id, np.zeros((0, 4))),
                self.model.preprocessing, self.model.spatial_scale, self.sample_gen, jitter,
            )
            images.append(item.image)
            rois.append(torch.cat([torch.full((len(item.rois), 1), float(b)), item.rois], dim=1))
            labels.append(item.labels)
            targets.append(item.targets)
        return batch_images(images, size_multiple(self.device)), torch.cat(rois), torch.cat(labels), torch.cat(targets)

    def step(self) -> dict[str, float]:
        """One SGD iteration; returns its losses. Raises DivergedError on a NaN/inf loss."""
        s = self.settings
        lr = learning_rate(s, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        images, rois, labels, targets = self._batch()
        images, rois = images.to(self.device, non_blocking=True), rois.to(self.device)
        labels, targets = labels.to(self.device), targets.to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            logits, deltas = self.ddp_model(images, rois)
        # the loss in float32 whatever the head computed in (float16 under --amp)
        loss = fast_rcnn_loss(logits.float(), deltas.float(), labels, targets, s.box_loss_weight)
        if not torch.isfinite(loss.total):
            raise DivergedError(
                f"the loss became {loss.total.item()} at iteration {self.iteration + 1} (lr {lr:g}). Likely causes: "
                + ("mixed precision (float16 overflow: try --no-amp), " if self.amp else "")
                + "a learning rate too high for this backbone/batch (try --lr 10x smaller or --warmup), or "
                "degenerate boxes in the data (run `fastrcnn validate`). " + self._kept_checkpoint()
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        self.scaler.unscale_(self.optimizer)  # true gradients for the norms and the clipping (a no-op without amp)
        grad_backbone, grad_head = gradient_norms(self.model)
        if s.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        fc6_active, fc7_active = self.model.head_activity
        return {
            "loss": float(loss.total.detach()),
            "loss_cls": float(loss.classification.detach()),
            "loss_loc": float(loss.localisation.detach()),
            "lr": lr,
            "fg_fraction": float((labels > 0).float().mean()) if len(labels) else 0.0,
            "prior_loss": prior_loss(labels, len(self.classes) + 1),
            "grad_norm": math.hypot(grad_backbone, grad_head),
            "grad_norm_backbone": grad_backbone,
            "grad_norm_head": grad_head,
            "fc6_active": fc6_active,
            "fc7_active": fc7_active,
        }

    # -- evaluation and checkpoints ---------------------------------------------------------------------------

    def evaluate(self):
        """Held-out mAP with the same code as ``fastrcnn evaluate`` (returns None without an eval split)."""
        from fastrcnn_cli.detect import DetectSettings, Detector, detect_dataset
        from fastrcnn_cli.evaluation import evaluate_voc, headline_for

        if self.eval_set is None:
            return None
        s = self.settings
        detector = Detector(
            self.model,
            DetectSettings(scales=(s.resolved_test_scale,), max_size=s.max_size),
            self.device,
            self.proposal_settings,
            normalised_deltas=True,
        )
        dets, _ = detect_dataset(detector, self.eval_set.records, self.eval_props, description="evaluating")
        self.model.train()
        return evaluate_voc(dets, self.eval_set.records, self.classes, headline=headline_for(self.eval_set.root))

    def save(self, name: str = "last.pt") -> Path:
        assert self.run_dir is not None
        path = self.run_dir / name
        save_checkpoint(path, self.model, self._meta(), normalised_regressor=True, train_state=self._train_state())
        return path

    # -- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        s = self.settings
        main = self.dist.is_main
        if main:
            assert self.run_dir is not None
            atomic_write_json(self.run_dir / "args.json", s.to_dict())
            ids = "\n".join(self.eval_set.ids) + "\n" if self.eval_set is not None else ""
            atomic_write_text(self.run_dir / "validation.txt", f"# {self.validation}\n{ids}")
            info(
                f"training {s.backbone} on {len(self.records)} images of {self.train_set.root.name}/{s.split} "
                f"({len(self.classes)} classes) on {self.device}"
                + (f" x {self.dist.world_size} processes" if self.dist.enabled else "")
                + f"; run folder {self.run_dir}"
            )
            info(
                f"recipe {s.recipe}: {s.iterations} iterations ({self._epochs(s.iterations):.1f} epochs"
                + (f", fitted to {s.time_budget:g} min after the first iterations" if s.time_budget else "")
                + f"), lr {s.lr:g} x{s.gamma:g} at {', '.join(map(str, s.lr_steps)) or 'never'}, warm-up "
                f"{s.warmup_iterations}, backbone lr x{s.backbone_lr_factor:g}, clip "
                f"{'off' if math.isinf(s.clip_grad_norm) else f'{s.clip_grad_norm:g}'}, scales "
                f"{'/'.join(map(str, s.scales))} (test {s.resolved_test_scale}, max {s.max_size})"
            )
        monitor = RunMonitor(warmup=s.warmup_iterations)
        window: list[dict[str, float]] = []
        window_images = 0
        window_start = time.perf_counter()
        images_per_iter = s.images_per_batch * self.dist.world_size
        total_images = 0
        t_run = time.perf_counter()
        elapsed_before = self.elapsed
        progress = _TrainProgress(s.iterations, self.iteration, enabled=main)  # plain lines when stderr is not a terminal
        last_path = self.run_dir / "last.pt" if self.run_dir else None
        stop = DeferredStop("this iteration")
        try:
            with progress, stop:  # Ctrl-C / SIGTERM: finish the iteration, then save a consistent state
                budget = _BudgetFit(self) if s.time_budget else None
                while self.iteration < s.iterations:
                    metrics = self.step()
                    if budget is not None and budget.after_step():
                        s = self.settings
                        progress.set_total(s.iterations)
                    window.append(metrics)
                    window_images += images_per_iter
                    total_images += images_per_iter
                    self.elapsed = elapsed_before + (time.perf_counter() - t_run)
                    ips = window_images / max(time.perf_counter() - window_start, 1e-9)
                    progress.update(self.iteration, metrics, ips)
                    at_end = self.iteration == s.iterations
                    if self.iteration % s.log_every == 0 or at_end:
                        row = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                        row.update(iteration=self.iteration, epoch=self.epoch, lr=metrics["lr"],
                                   images_per_s=round(ips, 3), elapsed_s=round(self.elapsed, 1))
                        problem = monitor.check(row)
                        if problem is not None:
                            row["warning"] = problem[0]
                            if main:
                                progress.pause()
                                warn(problem[1])
                                progress.resume()
                        if main:
                            self.history.append(row)
                            if not progress_enabled():  # a log file gets every row in full
                                err.print(
                                    f"iter {self.iteration}/{s.iterations}  loss {row['loss']:.4f} "
                                    f"(cls {row['loss_cls']:.4f}, box {row['loss_loc']:.4f}, prior "
                                    f"{row['prior_loss']:.3f})  grad {row['grad_norm']:.3g}  active "
                                    f"{row['fc6_active']:.0%}/{row['fc7_active']:.0%}  lr {row['lr']:.2g}  {ips:.2f} img/s"
                                )
                        window, window_images, window_start = [], 0, time.perf_counter()
                    evaluate_now = at_end or (s.eval_every and self.iteration % s.eval_every == 0)
                    if evaluate_now and self.eval_set is not None:
                        barrier(self.dist)
                        t_eval = time.perf_counter()
                        if main:
                            progress.pause()
                            self._evaluate_and_record()
                            progress.resume()
                        barrier(self.dist)
                        if budget is not None and budget.after_evaluation(time.perf_counter() - t_eval):
                            s = self.settings
                            progress.set_total(s.iterations)
                    saved_now = main and (self.iteration % s.checkpoint_every == 0 or at_end)
                    if saved_now:
                        last_path = self.save("last.pt")
                        write_metrics(self.run_dir / "metrics.csv", self.history)
                        plot_metrics(self.run_dir, self.history)
                    if not at_end and stop.requested(self.dist.enabled, self.device):
                        if main and self.run_dir is not None:  # a step boundary: the state resumes exactly
                            if not saved_now:
                                last_path = self.save("last.pt")
                                write_metrics(self.run_dir / "metrics.csv", self.history)
                            raise Interrupted(
                                f"stopped by {stop.name} after iteration {self.iteration}; saved {last_path}. "
                                f"Resume with: fastrcnn train --resume {self.run_dir}"
                            )
                        raise Interrupted(f"stopped by {stop.name} after iteration {self.iteration}")
        except KeyboardInterrupt:  # a second Ctrl-C: mid-iteration, so nothing is saved (it would not resume exactly)
            if main and self.run_dir is not None:
                raise Interrupted(
                    f"stopped at once during iteration {self.iteration + 1}, without saving. {self._kept_checkpoint()}"
                    + (f" Resume with: fastrcnn train --resume {self.run_dir}" if (self.run_dir / "last.pt").is_file() else "")
                ) from None
            raise
        except DivergedError:
            if main and self.run_dir is not None:
                write_metrics(self.run_dir / "metrics.csv", self.history)
            raise
        finally:
            if self.dist.enabled and dist.is_initialized():
                dist.destroy_process_group()
        seconds = time.perf_counter() - t_run
        best = self.run_dir / "best.pt" if self.run_dir and (self.run_dir / "best.pt").exists() else None
        return TrainResult(
            run_dir=self.run_dir,  # type: ignore[arg-type]
            iterations=self.iteration,
            last=last_path,  # type: ignore[arg-type]
            best=best,
            best_map=self.best_map,
            seconds=seconds,
            images_per_s=total_images / max(seconds, 1e-9),
            history=self.history,
        )

    def _evaluate_and_record(self) -> None:
        from fastrcnn_cli.evaluation import render_table

        assert self.run_dir is not None
        result = self.evaluate()
        if result is None:
            return
        headline = result.map_voc07 if result.headline == "voc07" else result.map_area
        row = self.history[-1] if self.history and int(self.history[-1]["iteration"]) == self.iteration else None
        if row is None:
            row = {"iteration": self.iteration, "epoch": self.epoch, "elapsed_s": round(self.elapsed, 1)}
            self.history.append(row)
        row["map_voc07"] = round(float(result.map_voc07), 6)
        row["map_area"] = round(float(result.map_area), 6)
        err.print(render_table(result))
        info(f"iteration {self.iteration}: mAP {headline:.4f} ({result.protocol})")
        if self.best_map is None or headline > self.best_map:
            self.best_map = float(headline)
            self.save("best.pt")
        atomic_write_json(self.run_dir / "eval_last.json", result.to_dict())


class _BudgetFit:
    """``time_budget``: the schedule (iterations, learning-rate steps, evaluation interval) fitted to the
    minutes given, from the measured time of iterations :data:`BUDGET_TIMED` and of the first evaluation.

    The budget covers the whole loop, evaluations included, less a margin for the final checkpoint. The
    fitted values replace the settings (and ``args.json``), so a resumed run keeps them.
    """

    BUDGET_TIMED = (5, 35)  #: iterations (counted from the start of this process) that are timed
    MARGIN = 0.95

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.start = trainer.iteration
        self.t0: float | None = None
        self.seconds_per_iteration: float | None = None
        self.fits = 0

    def after_step(self) -> bool:
        done = self.trainer.iteration - self.start
        if done == self.BUDGET_TIMED[0]:
            self.t0 = time.perf_counter()
        elif done == self.BUDGET_TIMED[1] and self.t0 is not None:
            self.seconds_per_iteration = (time.perf_counter() - self.t0) / (self.BUDGET_TIMED[1] - self.BUDGET_TIMED[0])
            # until an evaluation is timed: one image at the test scale ~ half a training iteration
            evaluation = 0.5 * self.seconds_per_iteration * len(self.trainer.eval_set or ())
            return self._fit(evaluation)
        return False

    def after_evaluation(self, seconds: float) -> bool:
        if self.fits != 1 or self.seconds_per_iteration is None:
            return False
        return self._fit(seconds)

    def _fit(self, seconds_per_evaluation: float) -> bool:
        t = self.trainer
        s = t.settings
        recipe = recipe_for(s.recipe, s.backbone)
        remaining = s.time_budget * 60 * self.MARGIN - t.elapsed
        # evaluations still to come: every eval_every iterations, and one at the end
        total = t.iteration
        for _ in range(3):  # the number of evaluations depends on the total; two refinements settle it
            evaluations = recipe.evaluations - (t.iteration * recipe.evaluations) // max(total, 1) if t.eval_set else 0
            total = t.iteration + max(1, int((remaining - evaluations * seconds_per_evaluation) / self.seconds_per_iteration))
        total = max(total, t.iteration + 1)
        steps = tuple(int(round(f * total)) for f in recipe.step_fractions)
        if any(old <= t.iteration < new or new <= t.iteration < old for old, new in zip(s.lr_steps, steps)):
            steps = s.lr_steps  # a step already taken, or about to be skipped, stays where it was
        eval_every = max(1, math.ceil(total / recipe.evaluations))
        if t.dist.enabled:  # every process takes process 0's numbers
            numbers = torch.tensor([total, eval_every], dtype=torch.long)
            dist.broadcast(numbers, 0)
            total, eval_every = (int(v) for v in numbers)
            steps = tuple(int(round(f * total)) for f in recipe.step_fractions)
        self.fits += 1
        final = self.fits == 2 or t.eval_set is None
        t.settings = dataclasses.replace(s, iterations=total, lr_steps=steps, eval_every=eval_every,
                                         time_budget=None if final else s.time_budget)
        if t.dist.is_main and t.run_dir is not None:
            atomic_write_json(t.run_dir / "args.json", t.settings.to_dict())
            info(f"--time-budget {s.time_budget:g} min: {self.seconds_per_iteration:.2f} s per iteration"
                 + (f", {seconds_per_evaluation:.0f} s per evaluation" if t.eval_set is not None else "")
                 + f" -> {total} iterations ({t._epochs(total):.1f} epochs), lr steps at "
                 f"{', '.join(map(str, steps)) or 'none'}")
        if final:
            self.seconds_per_iteration = None  # nothing more to fit
        return True


class _TrainProgress:
    """A Rich progress bar with loss, lr, images/s and ETA (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total, self.start = total, start
        self._progress = None
        self._task = None

    def __enter__(self) -> _TrainProgress:
        if self.enabled:
            from rich.progress import TextColumn

            from fastrcnn_cli.console import make_progress

            self._progress = make_progress(TextColumn("{task.fields[stats]}"))
            self._progress.__enter__()
            self._task = self._progress.add_task("training", total=self.total, completed=self.start, stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, iteration: int, metrics: dict[str, float], ips: float) -> None:
        if self._progress is not None:
            stats = f"loss {metrics['loss']:.3f} lr {metrics['lr']:.2g} {ips:.2f} img/s"
            self._progress.update(self._task, completed=iteration, stats=stats)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def pause(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def resume(self) -> None:
        if self._progress is not None:
            self._progress.start()


def find_resume_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run folder, last.pt) for ``--resume`` given a run folder or a checkpoint inside one."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "last.pt"
        if not ckpt.is_file():
            raise InputError("no last.pt in this run folder (nothing to resume)", path)
        return path, ckpt
    if path.is_file():
        return path.parent, path
    raise InputError("no such run folder or checkpoint", path)


def train(settings: TrainSettings | None = None, resume: str | Path | None = None, iterations: int | None = None) -> TrainResult:
    """Train from scratch (``settings``) or resume a run (``resume``: its folder or ``last.pt``).

    When resuming, the run's own ``args.json`` gives the settings; ``iterations`` may extend the run.
    """
    if resume is not None:
        run_dir, ckpt = find_resume_checkpoint(resume)
        args = run_dir / "args.json"
        if not args.is_file():
            raise InputError("no args.json next to the checkpoint (not a fastrcnn run folder)", run_dir)
        saved = read_run_settings(args)
        if iterations is not None:
            saved = dataclasses.replace(saved, iterations=iterations)
        from fastrcnn_cli.outputs import probe_writable

        probe_writable(run_dir)  # last.pt and metrics.csv go back there
        trainer = Trainer(saved, run_dir=run_dir, resume=ckpt)
        info(f"resuming {run_dir} at iteration {trainer.iteration} of {saved.iterations}")
        return trainer.run()
    assert settings is not None
    if iterations is not None:
        settings = dataclasses.replace(settings, iterations=iterations)
    # absolute paths in args.json, so a run can be resumed from any folder
    settings = dataclasses.replace(
        settings,
        data=str(Path(settings.data).expanduser().resolve()),
        proposal_cache=str(Path(settings.proposal_cache).resolve()) if settings.proposal_cache else None,
        backbone_weights=str(Path(settings.backbone_weights).resolve()) if settings.backbone_weights else None,
    )
    settings.validate()
    _check_before_work(settings)
    trainer = Trainer(settings)  # validates data and builds everything before a run folder exists
    if trainer.dist.is_main:
        try:
            trainer.run_dir = new_run_dir(settings.runs_dir, settings.name)
        except OSError as exc:
            raise OutputError(f"cannot create a run folder here ({exc.strerror or exc})", settings.runs_dir) from None
    return trainer.run()


def _check_before_work(settings: TrainSettings) -> None:
    """What can fail cheaply fails first: the runs folder must accept files, and a backbone weights file must be
    readable without unpickling anything (a file that holds pickled code is refused, never run)."""
    from fastrcnn_cli.model.safe_load import check_weights_file
    from fastrcnn_cli.outputs import check_output_folder

    check_output_folder(settings.runs_dir, "the runs folder")
    if settings.pretrained and settings.backbone_weights:
        check_weights_file(settings.backbone_weights)


def read_run_settings(path: Path) -> TrainSettings:
    """A run folder's ``args.json`` as settings, with a clear error naming it when it is damaged or foreign."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot be read as a run's settings ({type(exc).__name__}: {exc}); the file is damaged: "
                         "restore it from a copy, or start a new run", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), str):
        raise InputError("is not the settings of a fastrcnn run (a JSON object with 'data', 'backbone', ...)", path)
    try:
        settings = TrainSettings.from_dict(data)
        settings.validate()
    except SettingsError as exc:
        raise InputError(f"holds settings out of range: {exc}", path) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"holds values of the wrong type ({type(exc).__name__}: {exc})", path) from None
    return settings

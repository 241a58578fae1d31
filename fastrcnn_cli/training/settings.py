"""Every number of the training procedure, in one frozen dataclass that is also the command line's source.

Each field of :class:`TrainSettings` carries its default, help text, allowed range and command-line panel
(:func:`fastrcnn_cli.fields.setting`); ``fastrcnn train`` generates its options from them, named after the
fields (``warmup`` is ``--warmup``). Fields left ``None`` come from the recipe (:mod:`fastrcnn_cli.recipes`)
when the run starts (:meth:`TrainSettings.resolved`); ``args.json`` records the resolved values, so a resumed run
needs no recipe. Files written before a field was renamed still read (``old_names``, :meth:`TrainSettings.from_dict`).

This module is light (no torch): the command line imports it to build its options.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastrcnn_cli.detect_settings import DEFAULT_NMS
from fastrcnn_cli.errors import InputError, SettingsError
from fastrcnn_cli.fields import (
    FRACTION,
    MAX_INT,
    PIXELS,
    POSITIVE_FRACTION,
    SEED,
    count,
    number,
    range_problems,
    recorded_values,
    setting,
)
from fastrcnn_cli.proposal_settings import MODES, PROPOSERS, ProposalSettings
from fastrcnn_cli.recipes import DEFAULT_RECIPE, MULTI_SCALE_TEST_SCALE, RECIPES, recipe_for, recipe_values

if TYPE_CHECKING:
    from fastrcnn_cli.model.fast_rcnn import ModelConfig
    from fastrcnn_cli.sampling import SamplingSettings

#: ``eval_split`` values with a meaning of their own
EVAL_AUTO, EVAL_NONE = "auto", "none"

DATA, MODEL, SAMPLING, SOLVER, RUN, PROPOSALS = "Data", "Model", "Sampling", "Solver", "Run", "Proposals"

_PAPER = RECIPES["paper"]
_DEFAULT_PROPOSALS = ProposalSettings()


@dataclass(frozen=True)
class TrainSettings:
    """Every number of the training procedure (see the module docstring for defaults, recipes and names)."""

    data: str = setting(
        dataclasses.MISSING,
        "A data set folder: VOC (JPEGImages/ + Annotations/ + ImageSets/Main/), COCO (a detection JSON + its "
        "images) or YOLO (images/ + labels/); see --data-format.",
        panel=DATA, path=True,
    )
    data_format: str = setting(
        "auto", "The data set's format: auto (detected from the folder: VOC, else COCO, else YOLO), voc, coco or yolo.",
        panel=DATA, choices=("auto", "voc", "coco", "yolo"),
    )
    split: str = setting("trainval", "Training split.", panel=DATA, aliases=("-s",))
    eval_split: str = setting(
        EVAL_AUTO,
        "Validation for periodic evaluation and best.pt: 'auto' (the 'val' split, else a fixed held-out part of "
        "the training split), a split name ('test' warns: selecting on test inflates it), or 'none'.",
        panel=DATA,
    )
    holdout: float = setting(
        0.12, "Share of the training split held out for validation when there is no 'val' split.", panel=DATA,
        interval=number(0.0, 1.0, lo_open=True, hi_open=True), old_names=("holdout_fraction",),
    )
    recipe: str | None = setting(
        None,
        f"Defaults for everything below left unset: 'paper' (VGG16 / VOC 2007: lr {_PAPER.lr:g}, {_PAPER.iterations} "
        f"iterations, scale {_PAPER.scale[0]}) or 'small-data' (efficientnet-lite0 on a few hundred images). "
        "Default: " + ", ".join(f"{b} -> {r}" for b, r in DEFAULT_RECIPE.items()) + ".",
        panel=SOLVER, choices=tuple(RECIPES),
    )
    classes: tuple[str, ...] | None = setting(
        None, "Class names, comma-separated, or a file with one per line (default: from the data).", panel=DATA
    )
    strict: bool = setting(
        False, "Stop (exit code 3) on any data set problem instead of skipping bad images.", panel=DATA,
        negatable=False,
    )
    # the network
    backbone: str = setting(
        "vgg16", "vgg16 (the paper's) or efficientnet-lite0 (fast on a CPU, weights ship offline).", panel=MODEL
    )
    backbone_weights: str | None = setting(
        None, "ImageNet weights file for the backbone (default: torch hub cache / packaged).", panel=MODEL, path=True
    )
    pretrained: bool = setting(
        True, "Start from ImageNet weights (--no-pretrained: random init, for timing or from-scratch runs).",
        panel=MODEL,
    )
    backbone_cut: str | None = setting(
        None, "efficientnet-lite0 only: stage5 (112 ch) or dilated (320 ch).", panel=MODEL
    )
    frozen_stages: int | None = setting(
        None, "Leading stages not trained (vgg16: 2 = conv1..conv2, as in the paper).", panel=MODEL,
        interval=count(0, 10),
    )
    hidden: int | None = setting(
        None, "fc6/fc7 width (default 4096 for vgg16, 1024 for efficientnet-lite0).", panel=MODEL,
        interval=count(1, 65536),
    )
    dropout: float | None = setting(
        None, "Dropout after fc6 and fc7 (default 0.5 for vgg16, 0 otherwise).", panel=MODEL,
        interval=number(0.0, 1.0, hi_open=True),
    )
    # hierarchical sampling
    images_per_batch: int = setting(
        2, "N: images per mini-batch (per process).", panel=SAMPLING, interval=count(1, 1024)
    )
    rois_per_image: int = setting(64, "R / N: RoIs sampled per image.", panel=SAMPLING, interval=count(1, 100_000))
    fg_fraction: float = setting(0.25, "Share of foreground RoIs.", panel=SAMPLING, interval=POSITIVE_FRACTION)
    fg_iou: float = setting(0.5, "Foreground: IoU with a ground truth >= this.", panel=SAMPLING, interval=FRACTION)
    bg_iou_low: float = setting(0.1, "Background: IoU in [this, --bg-iou-high).", panel=SAMPLING, interval=FRACTION)
    bg_iou_high: float = setting(0.5, "Upper bound of background IoU.", panel=SAMPLING, interval=FRACTION)
    flip: bool = setting(True, "Add horizontally flipped images.", panel=SAMPLING)
    use_difficult: bool = setting(
        False, "Train on boxes marked difficult (VOC) or iscrowd (COCO); the original leaves them out "
        "(evaluation ignores them either way).", panel=SAMPLING,
    )
    scale: tuple[int, ...] | None = setting(
        None, f"Shorter side in pixels; repeat for multi-scale training, one drawn per image ({recipe_values('scale')}).",
        panel=SAMPLING, interval=PIXELS, old_names=("scales",),
    )
    max_size: int | None = setting(
        None, f"Longer side cap in pixels ({recipe_values('max_size')}).", panel=SAMPLING, interval=PIXELS
    )
    photometric: float | None = setting(
        None, f"Brightness/contrast/saturation jitter strength, 0 = off ({recipe_values('photometric')}).",
        panel=SAMPLING, interval=number(0.0, 1.0, hi_open=True),
    )
    test_scale: int | None = setting(
        None,
        "Scale for evaluation and the saved model's detect default (default: the training scale, or "
        f"{MULTI_SCALE_TEST_SCALE} with several).",
        panel=SAMPLING, interval=PIXELS,
    )
    test_nms: float | None = setting(
        None,
        f"Per-class NMS IoU for evaluation and the saved model's detect default ({recipe_values('test_nms')}).",
        panel=SAMPLING, interval=POSITIVE_FRACTION,
    )
    # the solver
    lr: float | None = setting(
        None, f"Base learning rate ({recipe_values('lr')}).", panel=SOLVER, interval=number(0.0, 100.0, lo_open=True)
    )
    momentum: float = setting(0.9, "SGD momentum.", panel=SOLVER, interval=number(0.0, 1.0, hi_open=True))
    weight_decay: float | None = setting(
        None, f"L2 weight decay, not on biases ({recipe_values('weight_decay')}).", panel=SOLVER,
        interval=number(0.0, 1.0),
    )
    backbone_lr_factor: float | None = setting(
        None, f"Learning-rate multiplier of the backbone ({recipe_values('backbone_lr_factor')}).", panel=SOLVER,
        interval=number(0.0, 1000.0),
    )
    depthwise_lr_factor: float | None = setting(
        None, "Learning-rate multiplier of the backbone's depthwise convolutions, instead of --backbone-lr-factor "
        f"({recipe_values('depthwise_lr_factor')}).", panel=SOLVER, interval=number(0.0, 1000.0),
    )
    clip_grad_norm: float | None = setting(
        None, f"Clip the gradient's global norm to this; inf = off ({recipe_values('clip_grad_norm')}).",
        panel=SOLVER, interval=number(0.0, lo_open=True, allow_inf=True),
    )
    bias_lr_factor: float = setting(
        2.0, "Learning-rate multiplier of biases (no weight decay on them).", panel=SOLVER,
        interval=number(0.0, 1000.0),
    )
    lr_step: tuple[int, ...] | None = setting(
        None, f"Iteration where the lr is multiplied by --gamma; repeatable ({recipe_values('lr_step')}).",
        panel=SOLVER, interval=count(0, MAX_INT), old_names=("lr_steps",),
    )
    gamma: float = setting(0.1, "Learning-rate factor at each --lr-step.", panel=SOLVER,
                           interval=number(0.0, 1000.0, lo_open=True))
    iterations: int | None = setting(
        None, f"Total SGD iterations ({recipe_values('iterations')}).", panel=SOLVER, interval=count(1, MAX_INT)
    )
    epochs: float | None = setting(
        None, "Schedule length in epochs (an epoch: each training image and its mirror once).", panel=SOLVER,
        interval=number(0.0, 1_000_000.0, lo_open=True),
    )
    time_budget: float | None = setting(
        None, "Minutes: fit the schedule to this from the measured speed (evaluations included).", panel=SOLVER,
        interval=number(0.0, 10_000_000.0, lo_open=True),
    )
    warmup: int | None = setting(
        None, f"Linear warm-up iterations from lr/10 ({recipe_values('warmup')}).", panel=SOLVER,
        interval=count(0, MAX_INT), old_names=("warmup_iterations",),
    )
    box_loss_weight: float = setting(
        1.0, "Weight of the box-regression loss against the classification loss (the paper's lambda).",
        panel=SOLVER, interval=number(0.0, 1000.0),
    )
    # bookkeeping
    eval_every: int | None = setting(
        None, "Evaluate every this many iterations (0: at the end only; default: 4 per run).", panel=RUN,
        interval=count(0, MAX_INT),
    )
    checkpoint_every: int = setting(
        1000, "Write last.pt every this many iterations.", panel=RUN, interval=count(1, MAX_INT)
    )
    log_every: int = setting(20, "Iterations per metrics row / log line.", panel=RUN, interval=count(1, MAX_INT))
    seed: int = setting(0, "Seed of every random choice: data order, scales, jitter, RoIs, initial weights.",
                        panel=RUN, interval=SEED)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N (auto: CUDA when present).", panel=RUN)
    amp: bool = setting(
        False,
        "Mixed precision on CUDA (autocast in --amp-dtype; float32 weights and loss). Off by default.",
        panel=RUN,
    )
    amp_dtype: str = setting(
        "bfloat16",
        "The autocast type of --amp: bfloat16 (float32's range, no loss scaling; GPUs from Ampere on) or float16 "
        "(with dynamic loss scaling).",
        panel=RUN, choices=("bfloat16", "float16"),
    )
    runs_dir: str = setting("runs", "Where run folders go.", panel=RUN, path=True)
    name: str = setting("train", "Run folder name (train, train2, ...).", panel=RUN)
    workers: int | None = setting(
        None,
        "Worker processes preparing data: the training images (0: in the training process; default: on CUDA "
        "one per core up to 8, on a CPU one per 4 cores up to 4) and missing proposals (default: all cores).",
        panel=RUN, interval=count(0, 1024), aliases=("-j",), envvar="FASTRCNN_WORKERS",
    )
    # proposals (the defaults are ProposalSettings', so a cache made by `fastrcnn propose` matches)
    proposal_mode: str = setting(_DEFAULT_PROPOSALS.mode, "Selective Search mode: fast or quality.", panel=PROPOSALS,
                                 choices=MODES)
    proposal_max_side: int = setting(
        _DEFAULT_PROPOSALS.max_side, "Selective Search works on images resized to this longer side.",
        panel=PROPOSALS, interval=count(16, 100_000),
    )
    proposal_top: int = setting(_DEFAULT_PROPOSALS.top, "Proposals kept per image.", panel=PROPOSALS,
                                interval=count(1, 100_000))
    proposal_min_size: int = setting(
        _DEFAULT_PROPOSALS.min_size, "Drop proposals narrower or shorter than this (original pixels).",
        panel=PROPOSALS, interval=count(0, 100_000),
    )
    proposer: str = setting(_DEFAULT_PROPOSALS.proposer, "Whose Selective Search: opencv or native.",
                            panel=PROPOSALS, choices=PROPOSERS, old_names=("proposal_proposer",))
    proposal_cache: str | None = setting(
        None, "Proposal cache folder (default: per data set, in the user cache).", panel=PROPOSALS, path=True
    )

    @property
    def format(self) -> str | None:
        """The data layer's ``format`` argument: None (detect it) for "auto"."""
        return None if self.data_format == "auto" else self.data_format

    def __post_init__(self) -> None:
        if self.eval_split is None:  # run folders before "auto" wrote null for no evaluation
            object.__setattr__(self, "eval_split", EVAL_NONE)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """Settings as recorded (``args.json``, a checkpoint's ``training.settings``): renamed fields read under
        their new names, lists become tuples, unknown keys are ignored."""
        values = recorded_values(cls, data)
        if "amp_dtype" not in data:  # written before bfloat16: its --amp meant float16
            values["amp_dtype"] = "float16"
        if "use_difficult" not in data:  # written before difficult boxes were left out: it trained on them
            values["use_difficult"] = True
        if "test_nms" not in data:  # written before the NMS IoU was a setting: it evaluated at the paper's
            values["test_nms"] = DEFAULT_NMS
        if "recipe" not in data:  # a run folder from before recipes: what it trained with had none of them
            values.update(backbone_lr_factor=1.0, clip_grad_norm=math.inf, photometric=0.0)
        if "depthwise_lr_factor" not in data:  # written before: the depthwise convolutions had the backbone's rate
            values["depthwise_lr_factor"] = values.get("backbone_lr_factor")
        return cls(**values)

    def resolved(self, num_train_images: int) -> TrainSettings:
        """Every ``None`` filled from the recipe, and the schedule fitted to ``num_train_images``.

        Scales, maximum size and test scale come from the recipe only as a group (a user's ``--scale 600``
        is not tested at the recipe's 480); learning-rate steps given as the recipe's fractions of the
        schedule follow a user's ``iterations``.
        """
        recipe = recipe_for(self.recipe, self.backbone)
        values = {k: v for k, v in recipe.overrides().items() if getattr(self, k) is None}
        if self.scale is not None:  # the user's scales: test at them, not at the recipe's test scale
            values.pop("test_scale", None)
            if self.max_size is None:
                values["max_size"] = max(recipe.max_size, max(self.scale))
        values["recipe"] = recipe.name
        entries = num_train_images * (2 if self.flip else 1)
        if self.iterations is None:
            if self.epochs is not None:
                values["iterations"] = max(1, math.ceil(self.epochs * entries / self.images_per_batch))
            else:
                values["iterations"] = recipe.schedule(entries, self.images_per_batch)
        iterations = values.get("iterations", self.iterations)
        if self.lr_step is None:
            values["lr_step"] = tuple(int(round(f * iterations)) for f in recipe.step_fractions)
        if self.eval_every is None:
            values["eval_every"] = max(1, math.ceil(iterations / recipe.evaluations))
        return dataclasses.replace(self, **values)

    @property
    def resolved_test_nms(self) -> float:
        """The per-class NMS IoU of evaluation and of the saved model: ``test_nms``, else the paper's."""
        return float(self.test_nms) if self.test_nms is not None else DEFAULT_NMS

    @property
    def resolved_test_scale(self) -> int:
        """The evaluation scale: ``test_scale``, else the only training scale, else
        :data:`~fastrcnn_cli.recipes.MULTI_SCALE_TEST_SCALE` when the scales span it (else their median)."""
        if self.test_scale:
            return int(self.test_scale)
        if len(self.scale) == 1:
            return int(self.scale[0])
        if min(self.scale) <= MULTI_SCALE_TEST_SCALE <= max(self.scale):
            return MULTI_SCALE_TEST_SCALE
        return int(sorted(self.scale)[len(self.scale) // 2])

    @property
    def sampling(self) -> SamplingSettings:
        from fastrcnn_cli.sampling import SamplingSettings

        return SamplingSettings(self.rois_per_image, self.fg_fraction, self.fg_iou, self.bg_iou_low, self.bg_iou_high)

    def proposal_settings(self) -> ProposalSettings:
        return ProposalSettings(
            mode=self.proposal_mode, max_side=self.proposal_max_side, top=self.proposal_top,
            min_size=self.proposal_min_size, proposer=self.proposer,
        )

    def model_config(self, classes: Sequence[str]) -> ModelConfig:
        from fastrcnn_cli.model.backbones import BackboneSpec
        from fastrcnn_cli.model.fast_rcnn import DEFAULT_HEADS, HeadSpec, ModelConfig

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
        whose problems name the fields (the command line shows its flags instead); NaN fails every check.

        Each field's own range is declared with the field; here are only the rules across fields."""
        from fastrcnn_cli.model.backbones import BackboneSpec  # torch: only when training
        from fastrcnn_cli.model.fast_rcnn import DEFAULT_HEADS

        problems = range_problems(self)
        bad = {name for name, _ in problems}

        def need(ok: bool, name: str, message: str) -> None:
            if not ok and name not in bad:
                problems.append((name, message))

        if not bad & {"fg_iou", "bg_iou_low", "bg_iou_high"}:
            need(self.bg_iou_low <= self.bg_iou_high <= self.fg_iou, "bg_iou_low",
                 "must be <= the background upper bound, itself <= the foreground IoU threshold")
        if self.scale and self.max_size is not None and "scale" not in bad:
            need(self.max_size >= max(self.scale), "max_size", "must be at least the largest scale")
        need(self.backbone in DEFAULT_HEADS, "backbone",
             f"unknown backbone {self.backbone!r}; choose one of {', '.join(DEFAULT_HEADS)}")
        if self.backbone in DEFAULT_HEADS and not bad & {"backbone_cut", "frozen_stages"}:
            try:  # the frozen stages and the cut a backbone allows
                BackboneSpec(self.backbone, self.backbone_cut, self.frozen_stages)
            except (ValueError, TypeError) as exc:
                need(False, "backbone_cut" if "cut" in str(exc) else "frozen_stages", str(exc))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])


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

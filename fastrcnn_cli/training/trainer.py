"""The training loop: single-stage, multi-task training of Fast R-CNN (the paper's section 2.3).

One SGD iteration (:meth:`Trainer.step`): the iteration's N images (2), each possibly flipped and rescaled,
with R / N RoIs (64) sampled from each (:mod:`fastrcnn_cli.training.data`); one forward pass of the whole
network (shared backbone, RoI pooling, head); the multi-task loss (:mod:`fastrcnn_cli.loss`); one backward pass
through everything that is not frozen, RoI pooling included; one SGD step (:mod:`fastrcnn_cli.training.solver`).

:meth:`Trainer.run` takes the batches from a DataLoader (worker processes prepare them while the network
trains) and leaves everything else to hooks (:mod:`fastrcnn_cli.training.hooks`): progress, metrics rows and
log lines, periodic evaluation, checkpoints, Ctrl-C, the time budget.

Exact resume: ``last.pt`` holds the model, the optimiser (momentum), the loss scaler, the iteration and torch's
random state (dropout); the data needs only the iteration, since every random choice about it is seeded by
its place (:mod:`fastrcnn_cli.training.data`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrcnn_cli import progress
from fastrcnn_cli.data.advice import training_advice
from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.devices import amp_dtype, resolve_device
from fastrcnn_cli.errors import DivergedError, InputError
from fastrcnn_cli.interrupts import Interrupted
from fastrcnn_cli.loss import fast_rcnn_loss
from fastrcnn_cli.model.checkpoint import Checkpoint, read_checkpoint_file, save_checkpoint
from fastrcnn_cli.model.fast_rcnn import build_model, size_multiple
from fastrcnn_cli.monitor import prior_loss
from fastrcnn_cli.pipeline import EvalData, SplitEvaluation, detector_for_model, evaluate_split, load_eval_data
from fastrcnn_cli.proposals import load_or_compute_proposals
from fastrcnn_cli.training.budget import BudgetHook
from fastrcnn_cli.training.data import (
    Batch,
    EpochPlan,
    FailedImage,
    ImageSettings,
    TrainImages,
    default_workers,
    make_loader,
    usable_records,
    without_difficult,
)
from fastrcnn_cli.training.distributed import barrier, finish, init_distributed
from fastrcnn_cli.training.hooks import CheckpointHook, EvalHook, HookBase, LogHook, ProgressHook, StopHook
from fastrcnn_cli.training.metrics import read_metrics
from fastrcnn_cli.training.settings import TrainSettings
from fastrcnn_cli.training.solver import gradient_norms, learning_rate, make_optimizer
from fastrcnn_cli.training.validation import Validation, choose_validation

#: how ``last.pt`` says its data order is drawn (seeded by place); checkpoints without it drew theirs from a
#: generator's history, so a resumed run goes on with another order than theirs would have been
DATA_ORDER = "seeded-by-iteration"


@dataclass
class TrainResult:
    run_dir: Path | None  #: None on the processes of a data-parallel run other than process 0
    iterations: int
    last: Path | None
    best: Path | None
    best_map: float | None  #: the best held-out mAP, a fraction in [0, 1]
    seconds: float
    images_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary ``fastrcnn train --json`` prints (mAP as a fraction, times with their unit)."""
        return {
            "run_dir": str(self.run_dir),
            "iterations": self.iterations,
            "seconds": round(self.seconds, 1),
            "images_per_s": round(self.images_per_s, 3),
            "best_map": self.best_map,
            "last": str(self.last),
            "best": str(self.best) if self.best else None,
        }


def default_hooks(trainer: Trainer, extra: Sequence[HookBase] = ()) -> list[HookBase]:
    """The hooks of a run, in the order they run: the time budget (when set: it may change the schedule, which
    the others then follow), progress, log rows, evaluation, ``extra``, checkpoints, and the stop on Ctrl-C
    last (it saves unless the checkpoint hook just did)."""
    budget: list[HookBase] = [BudgetHook()] if trainer.settings.time_budget else []
    return [*budget, ProgressHook(), LogHook(), EvalHook(), *extra, CheckpointHook(), StopHook()]


class Trainer:
    """Holds the state of one run; :meth:`run` trains to ``settings.iterations``.

    Everything that can fail on the data or the settings fails here, before a run folder exists. ``hooks``:
    more hooks, run after evaluation and before checkpointing (:func:`default_hooks`).
    """

    def __init__(
        self,
        settings: TrainSettings,
        run_dir: Path | None = None,
        resume: Path | None = None,
        hooks: Sequence[HookBase] = (),
    ) -> None:
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
        self.amp_dtype = amp_dtype(s.amp_dtype, self.device) if self.amp else torch.float32

        self.train_set = load_dataset(s.data, s.split, s.classes, strict=s.strict, warn=self.dist.is_main, format=s.format)
        self.classes = self.train_set.classes
        validation = choose_validation(self.train_set, s, self.dist.is_main)
        self.eval_set, self.validation = validation.eval_set, validation.how
        self.proposal_settings = s.proposal_settings()
        self.train_props, self.eval_data = self._proposals(validation)
        train_records = validation.train_records
        if not s.use_difficult:
            train_records = [without_difficult(r) for r in train_records]
        records = usable_records(train_records, self.train_props)
        if not records:
            raise InputError(f"split {s.split!r} has no image with a box or a proposal to train on", self.train_set.root)
        self.records = records
        # the recipe's values for what the user left unset, the schedule fitted to this data set
        self.settings = s = s.resolved(len(records))
        s.validate()
        if self.dist.is_main and resume is None:
            for note in training_advice(records, self.classes, self.train_props, s.resolved_test_scale):
                progress.warn(note)

        torch.manual_seed(s.seed + self.dist.rank)
        # resuming: every weight comes from last.pt, so no backbone weights file (args.json names one) is read
        self.model = build_model(
            s.model_config(self.classes), pretrained=s.pretrained and resume is None, backbone_weights=s.backbone_weights
        ).to(self.device)
        self.model.train()
        self.optimizer = make_optimizer(self.model, s)
        # loss scaling only for float16 (its 5-bit exponent underflows small gradients); bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.workers = s.workers if s.workers is not None else default_workers(self.device)
        self.plan = EpochPlan(records, s.flip, s.images_per_batch, self.dist.world_size, s.seed)
        self.images = TrainImages(
            records, self.train_props, ImageSettings(s.seed, s.scale, s.max_size, s.photometric or 0.0, s.sampling),
            self.model.preprocessing, self.model.spatial_scale,
        )
        self.iteration = 0
        self.epoch = 0
        self.best_map: float | None = None
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.run_dir = run_dir
        self.metrics: dict[str, float] = {}  #: the last step's
        self.evaluations: list[tuple[int, float]] = []  #: (iteration, seconds) of each evaluation of this process
        self.last_evaluation: SplitEvaluation | None = None
        self.saved_at: dict[str, int] = {}  #: checkpoint name -> the iteration it was last written at
        if resume is not None:
            self._load(resume)
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.hooks = default_hooks(self, hooks)

    # -- set-up ----------------------------------------------------------------------------------------------

    @property
    def images_per_iteration(self) -> int:
        return self.settings.images_per_batch * self.dist.world_size

    @property
    def at_end(self) -> bool:
        return self.iteration >= self.settings.iterations

    def epochs(self, iterations: int) -> float:
        """``iterations`` in epochs of this run's training images (and their mirror images)."""
        entries = len(self.records) * (2 if self.settings.flip else 1)
        return iterations * self.images_per_iteration / max(entries, 1)

    def _proposals(self, validation: Validation) -> tuple[dict[str, np.ndarray], EvalData | None]:
        """The training images' proposals and the validation data (with its proposals), from the cache or
        computed: process 0 computes what is missing, the others then read the cache."""
        s = self.settings
        cache = Path(s.proposal_cache) if s.proposal_cache else None
        workers = None if s.workers is None else max(1, s.workers)  # 0: in this process, as 1 does
        train: dict[str, np.ndarray] = {}
        evals = None
        for rank_turn in (0, 1):
            if (rank_turn == 0) == self.dist.is_main:
                train = load_or_compute_proposals(self.train_set, self.proposal_settings, cache, workers)
                if validation.eval_set is not None:
                    evals = load_eval_data(validation.eval_set, None, self.classes, self.proposal_settings,
                                           cache_dir=cache, workers=workers, warn=self.dist.is_main)
            barrier(self.dist)
        return train, evals

    # -- checkpoints -----------------------------------------------------------------------------------------

    def _meta(self) -> Checkpoint:
        s = self.settings
        return Checkpoint(
            config=self.model.config,
            preprocessing=self.model.preprocessing,
            scales=(s.resolved_test_scale,),
            max_size=s.max_size,
            nms=s.resolved_test_nms,
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
            "data_order": DATA_ORDER,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
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

    def save(self, name: str = "last.pt") -> Path:
        """The model and the whole training state, atomically, as ``run_dir / name``."""
        assert self.run_dir is not None
        path = self.run_dir / name
        save_checkpoint(path, self.model, self._meta(), normalised_regressor=True, train_state=self._train_state())
        self.saved_at[name] = self.iteration
        return path

    def kept_checkpoint(self) -> str:
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
        if state.get("data_order") != DATA_ORDER and self.dist.is_main:
            progress.warn(f"{path} was written by an earlier version, whose data order came from a generator's "
                          "history: the run goes on with this version's order, so it resumes, but not exactly")
        weights = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        weights["bbox_pred.weight"] = state["bbox_pred"]["weight"]
        weights["bbox_pred.bias"] = state["bbox_pred"]["bias"]
        self.model.load_state_dict(weights, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.iteration = int(state["iteration"])
        self.epoch = int(state["epoch"])
        self.best_map = state.get("best_map")
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.run_dir is not None:
            rows = read_metrics(self.run_dir / "metrics.csv")
            self.history = [r for r in rows if int(r["iteration"]) <= self.iteration]

    # -- one iteration -----------------------------------------------------------------------------------------

    def step(self, batch: Batch) -> dict[str, float]:
        """One SGD iteration on ``batch``; returns (and keeps in :attr:`metrics`) its losses and health numbers.
        Raises :class:`DivergedError` on a NaN/inf loss."""
        s = self.settings
        lr = learning_rate(s, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        images, rois, labels, targets = batch.to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits, deltas = self.ddp_model(images, rois)
        # the loss in float32 whatever the head computed in (bfloat16 or float16 with amp)
        loss = fast_rcnn_loss(logits.float(), deltas.float(), labels, targets, s.box_loss_weight)
        if not torch.isfinite(loss.total):
            raise DivergedError(
                f"the loss became {loss.total.item()} at iteration {self.iteration + 1} (lr {lr:g}). Likely causes: "
                + (f"mixed precision ({self.amp_dtype}: try amp off), " if self.amp else "")
                + "a learning rate too high for this backbone/batch (try lr 10x smaller, or a warmup), or "
                "degenerate boxes in the data (run `fastrcnn validate`). " + self.kept_checkpoint()
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
        self.epoch = self.plan.epoch(self.iteration - 1) + 1
        fc6_active, fc7_active = self.model.head_activity
        self.metrics = {
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
        return self.metrics

    def evaluate(self) -> SplitEvaluation | None:
        """The held-out evaluation of the live model, through the pipeline ``fastrcnn evaluate`` uses (None
        without validation data)."""
        if self.eval_data is None:
            return None
        s = self.settings
        detector = detector_for_model(self.model, s.resolved_test_scale, s.max_size, self.proposal_settings,
                                      self.device, normalised_deltas=True, nms=s.resolved_test_nms)
        try:
            return evaluate_split(detector, self.eval_data, description="evaluating")
        finally:
            self.model.train()

    # -- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to ``settings.iterations`` (which a time budget may move), with the hooks around each step."""
        started, first, elapsed_before = time.perf_counter(), self.iteration, self.elapsed
        active: list[HookBase] = []
        error: BaseException | None = None
        batches = None
        try:
            for hook in self.hooks:
                hook.trainer = self
                hook.before_train()
                active.append(hook)
            batches = iter(make_loader(self.images, self.plan, self.dist.rank, self.iteration, self.workers,
                                       self.device, size_multiple(self.device)))
            while self.iteration < self.settings.iterations:
                batch = next(batches)
                if isinstance(batch, FailedImage):
                    raise batch.error
                self.step(batch)
                self.elapsed = elapsed_before + (time.perf_counter() - started)
                for hook in self.hooks:
                    hook.after_step()
        except KeyboardInterrupt as exc:  # a second Ctrl-C: mid-iteration, so nothing is saved (it would not resume exactly)
            error = exc
            if self.dist.is_main and self.run_dir is not None:
                raise Interrupted(
                    f"stopped at once during iteration {self.iteration + 1}, without saving. {self.kept_checkpoint()}",
                    resumable=self.run_dir if (self.run_dir / "last.pt").is_file() else None,
                ) from None
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)  # the workers end now, not when collected
            if shutdown is not None:
                shutdown()
            for hook in reversed(active):
                hook.after_train(error)
            finish(self.dist)
        seconds = time.perf_counter() - started
        best = self.run_dir / "best.pt" if self.run_dir and (self.run_dir / "best.pt").exists() else None
        return TrainResult(
            run_dir=self.run_dir,
            iterations=self.iteration,
            last=self.run_dir / "last.pt" if self.run_dir else None,
            best=best,
            best_map=self.best_map,
            seconds=seconds,
            images_per_s=(self.iteration - first) * self.images_per_iteration / max(seconds, 1e-9),
            history=self.history,
        )

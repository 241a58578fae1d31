"""What happens around the training loop, one concern per hook: progress, metrics and log lines, evaluation,
checkpoints and the run folder, and stopping on Ctrl-C / SIGTERM.

The model is detectron2's ``HookBase``: :class:`~fastrcnn_cli.training.trainer.Trainer` runs ::

    before_train()                              every hook, in order
    for each iteration: step, after_step()      every hook, in order
    after_train(error)                          every hook that started, in reverse order; error: None or
                                                the exception that ends the run (it still propagates)

and a hook reads and changes the trainer's state (``iteration``, ``settings``, ``history``, ...). Unlike
detectron2, ``after_train`` is told how the run ended, so that a hook can leave its files consistent on failure
(``metrics.csv`` after a diverged loss). The trainer's default hooks and their order are
:func:`fastrcnn_cli.training.trainer.default_hooks`'s; callers add their own (the command line prints each
evaluation's table) between evaluation and checkpointing.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np

from fastrcnn_cli import progress
from fastrcnn_cli.errors import DivergedError
from fastrcnn_cli.interrupts import DeferredStop, Interrupted
from fastrcnn_cli.io import atomic_write_json, atomic_write_text
from fastrcnn_cli.monitor import RunMonitor
from fastrcnn_cli.training.distributed import barrier
from fastrcnn_cli.training.metrics import write_metrics
from fastrcnn_cli.training.plots import plot_metrics

if TYPE_CHECKING:
    from fastrcnn_cli.training.trainer import Trainer


class HookBase:
    """One concern around the loop; override what it needs. ``trainer`` is set when the run starts."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self, error: BaseException | None) -> None:
        pass


def percent(fraction: float) -> str:
    """A fraction as people read an mAP: ``89.8 %``."""
    return "n/a" if fraction is None or math.isnan(fraction) else f"{100 * fraction:.1f} %"


class ProgressHook(HookBase):
    """The progress of the run (a live bar on a terminal, occasional plain lines otherwise), with the last
    loss, the learning rate and the images per second since this process started."""

    def before_train(self) -> None:
        t = self.trainer
        self.start_iteration, self.start_time = t.iteration, time.perf_counter()
        self.task = progress.task("training", total=t.settings.iterations, completed=t.iteration,
                                  show=t.dist.is_main)

    def after_step(self) -> None:
        t = self.trainer
        seconds = max(time.perf_counter() - self.start_time, 1e-9)
        ips = (t.iteration - self.start_iteration) * t.images_per_iteration / seconds
        status = f"loss {t.metrics['loss']:.3f} lr {t.metrics['lr']:.2g} {ips:.2f} img/s"
        self.task.update(completed=t.iteration, total=t.settings.iterations, status=status)

    def after_train(self, error: BaseException | None) -> None:
        self.task.end()


class LogHook(HookBase):
    """The run's header lines, then every ``log_every`` iterations (and at the end) a row of the run's history:
    the mean of the window's metrics, with speed and time. The run monitor (:mod:`fastrcnn_cli.monitor`) checks
    each row and warns once per kind of problem. Without a live progress bar (a log file), each row is also a
    full log line."""

    def before_train(self) -> None:
        t = self.trainer
        s = t.settings
        self.monitor = RunMonitor(warmup=s.warmup)
        self.window: list[dict[str, float]] = []
        self.window_start = time.perf_counter()
        if not t.dist.is_main:
            return
        progress.info(
            f"training {s.backbone} on {len(t.records)} images of {t.train_set.root.name}/{s.split} "
            f"({len(t.classes)} classes) on {t.device}"
            + (f" x {t.dist.world_size} processes" if t.dist.enabled else "")
            + f", {t.workers} data worker{'s' if t.workers != 1 else ''}; run folder {t.run_dir}"
        )
        progress.info(
            f"recipe {s.recipe}: {s.iterations} iterations ({t.epochs(s.iterations):.1f} epochs"
            + (f", fitted to {s.time_budget:g} min after the first iterations" if s.time_budget else "")
            + f"), lr {s.lr:g} x{s.gamma:g} at {', '.join(map(str, s.lr_step)) or 'never'}, warm-up "
            f"{s.warmup}, backbone lr x{s.backbone_lr_factor:g}"
            + (f" (depthwise x{s.depthwise_lr_factor:g})" if s.depthwise_lr_factor != s.backbone_lr_factor else "")
            + ", clip "
            f"{'off' if math.isinf(s.clip_grad_norm) else f'{s.clip_grad_norm:g}'}, scales "
            f"{'/'.join(map(str, s.scale))} (test {s.resolved_test_scale}, max {s.max_size}, "
            f"NMS {s.resolved_test_nms:g})"
        )

    def after_step(self) -> None:
        t = self.trainer
        self.window.append(t.metrics)
        if t.iteration % t.settings.log_every and not t.at_end:
            return
        now = time.perf_counter()
        ips = len(self.window) * t.images_per_iteration / max(now - self.window_start, 1e-9)
        row = {k: float(np.mean([m[k] for m in self.window])) for k in self.window[0]}
        row.update(iteration=t.iteration, epoch=t.epoch, lr=t.metrics["lr"], images_per_s=round(ips, 3),
                   elapsed_s=round(t.elapsed, 1))
        self.window, self.window_start = [], now
        problem = self.monitor.check(row)
        if problem is not None:
            row["warning"] = problem[0]
        if not t.dist.is_main:
            return
        if problem is not None:
            progress.warn(problem[1])
        t.history.append(row)
        if not progress.live():  # a log file gets every row in full
            progress.info(
                f"iter {t.iteration}/{t.settings.iterations}  loss {row['loss']:.4f} (cls {row['loss_cls']:.4f}, "
                f"box {row['loss_loc']:.4f}, prior {row['prior_loss']:.3f})  grad {row['grad_norm']:.3g}  active "
                f"{row['fc6_active']:.0%}/{row['fc7_active']:.0%}  lr {row['lr']:.2g}  {ips:.2f} img/s"
            )


class EvalHook(HookBase):
    """Every ``eval_every`` iterations and at the end: the held-out mAP through the shared evaluation pipeline
    (:meth:`Trainer.evaluate`), recorded on the history row of that iteration, in ``eval_last.json``, and as
    ``best.pt`` when it is the best so far. Process 0 evaluates while the others wait; the time it takes goes to
    ``trainer.evaluations`` (the time budget counts it)."""

    def after_step(self) -> None:
        t = self.trainer
        s = t.settings
        if t.eval_data is None or not (t.at_end or (s.eval_every and t.iteration % s.eval_every == 0)):
            return
        barrier(t.dist)
        start = time.perf_counter()
        if t.dist.is_main:
            self._evaluate_and_record()
        barrier(t.dist)
        t.evaluations.append((t.iteration, time.perf_counter() - start))

    def _evaluate_and_record(self) -> None:
        t = self.trainer
        evaluation = t.evaluate()
        voc = evaluation.voc
        row = t.history[-1] if t.history and int(t.history[-1]["iteration"]) == t.iteration else None
        if row is None:
            row = {"iteration": t.iteration, "epoch": t.epoch, "elapsed_s": round(t.elapsed, 1)}
            t.history.append(row)
        row["map_voc07"] = round(float(voc.map_voc07), 6)
        row["map_area"] = round(float(voc.map_area), 6)
        t.last_evaluation = evaluation
        progress.info(f"iteration {t.iteration}: mAP {percent(voc.map)} ({voc.protocol})")
        if t.best_map is None or voc.map > t.best_map:
            t.best_map = float(voc.map)
            t.save("best.pt")
        atomic_write_json(t.run_dir / "eval_last.json", evaluation.to_dict())


class CheckpointHook(HookBase):
    """The run folder: ``args.json`` and ``validation.txt`` at the start; ``last.pt``, ``metrics.csv`` and the
    plots every ``checkpoint_every`` iterations and at the end; ``metrics.csv`` when the loss diverges."""

    def before_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        atomic_write_json(t.run_dir / "args.json", t.settings.to_dict())
        ids = "\n".join(t.eval_set.ids) + "\n" if t.eval_set is not None else ""
        atomic_write_text(t.run_dir / "validation.txt", f"# {t.validation}\n{ids}")

    def after_step(self) -> None:
        t = self.trainer
        if t.dist.is_main and (t.iteration % t.settings.checkpoint_every == 0 or t.at_end):
            t.save("last.pt")
            write_metrics(t.run_dir / "metrics.csv", t.history)
            plot_metrics(t.run_dir, t.history)

    def after_train(self, error: BaseException | None) -> None:
        t = self.trainer
        if isinstance(error, DivergedError) and t.dist.is_main and t.run_dir is not None:
            write_metrics(t.run_dir / "metrics.csv", t.history)


class StopHook(HookBase):
    """Ctrl-C / SIGTERM: the current iteration ends, then ``last.pt`` (unless just written) and ``metrics.csv``
    are saved at that step boundary, where the state resumes exactly, and the run stops with
    :class:`~fastrcnn_cli.interrupts.Interrupted` (:mod:`fastrcnn_cli.interrupts`). It runs last."""

    def before_train(self) -> None:
        self.stop = DeferredStop("this iteration").__enter__()

    def after_step(self) -> None:
        t = self.trainer
        if t.at_end or not self.stop.requested(t.dist.enabled, t.device):
            return
        if t.dist.is_main and t.run_dir is not None:
            if t.saved_at.get("last.pt") != t.iteration:
                t.save("last.pt")
                write_metrics(t.run_dir / "metrics.csv", t.history)
            raise Interrupted(
                f"stopped by {self.stop.name} after iteration {t.iteration}; saved {t.run_dir / 'last.pt'}.",
                resumable=t.run_dir,
            )
        raise Interrupted(f"stopped by {self.stop.name} after iteration {t.iteration}")

    def after_train(self, error: BaseException | None) -> None:
        self.stop.__exit__(None, None, None)


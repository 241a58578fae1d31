"""``time_budget``: the schedule (iterations, learning-rate steps, evaluation interval) fitted to the minutes
given, from the measured speed.

The iterations :data:`BudgetHook.TIMED` (counted from the start of this process) are timed; until an
evaluation has been timed, one evaluation is estimated at half a training iteration per validation image. The
first fit comes after the timed iterations, a second one after the first evaluation (when there is
validation), then the budget is spent: ``time_budget`` is cleared. The budget covers the whole loop,
evaluations included, less a margin for the final checkpoint. The fitted values replace the settings (and
``args.json``), so a resumed run keeps them.
"""

from __future__ import annotations

import dataclasses
import math
import time

from fastrcnn_cli import progress
from fastrcnn_cli.io import atomic_write_json
from fastrcnn_cli.recipes import recipe_for
from fastrcnn_cli.training.distributed import broadcast_ints
from fastrcnn_cli.training.hooks import HookBase


class BudgetHook(HookBase):
    """Fits the schedule to ``time_budget`` minutes (see the module docstring); it runs first, so the other
    hooks already follow the new schedule at the iteration it changes."""

    TIMED = (5, 35)  #: iterations (counted from the start of this process) that are timed
    MARGIN = 0.95

    def before_train(self) -> None:
        self.start = self.trainer.iteration
        self.evaluations_seen = len(self.trainer.evaluations)
        self.t0: float | None = None
        self.seconds_per_iteration: float | None = None
        self.fits = 0

    def after_step(self) -> None:
        t = self.trainer
        if self.seconds_per_iteration is not None and self.fits == 1 and len(t.evaluations) > self.evaluations_seen:
            self._fit(t.evaluations[-1][1])  # the first evaluation's time, measured
            return
        done = t.iteration - self.start
        if done == self.TIMED[0]:
            self.t0 = time.perf_counter()
        elif done == self.TIMED[1] and self.t0 is not None and self.fits == 0:
            self.seconds_per_iteration = (time.perf_counter() - self.t0) / (self.TIMED[1] - self.TIMED[0])
            self._fit(0.5 * self.seconds_per_iteration * len(t.eval_data.records if t.eval_data else ()))

    def _fit(self, seconds_per_evaluation: float) -> None:
        t = self.trainer
        s = t.settings
        recipe = recipe_for(s.recipe, s.backbone)
        remaining = s.time_budget * 60 * self.MARGIN - t.elapsed
        # evaluations still to come: every eval_every iterations, and one at the end
        total = t.iteration
        for _ in range(3):  # the number of evaluations depends on the total; two refinements settle it
            evaluations = recipe.evaluations - (t.iteration * recipe.evaluations) // max(total, 1) if t.eval_data else 0
            total = t.iteration + max(1, int((remaining - evaluations * seconds_per_evaluation) / self.seconds_per_iteration))
        total = max(total, t.iteration + 1)
        eval_every = max(1, math.ceil(total / recipe.evaluations))
        total, eval_every = broadcast_ints(t.dist, total, eval_every)  # every process takes process 0's numbers
        steps = tuple(int(round(f * total)) for f in recipe.step_fractions)
        if any(old <= t.iteration < new or new <= t.iteration < old for old, new in zip(s.lr_step, steps)):
            steps = s.lr_step  # a step already taken, or about to be skipped, stays where it was
        self.fits += 1
        self.evaluations_seen = len(t.evaluations)
        final = self.fits == 2 or t.eval_data is None
        t.settings = dataclasses.replace(s, iterations=total, lr_step=steps, eval_every=eval_every,
                                         time_budget=None if final else s.time_budget)
        if t.dist.is_main and t.run_dir is not None:
            atomic_write_json(t.run_dir / "args.json", t.settings.to_dict())
            progress.info(
                f"time budget {s.time_budget:g} min: {self.seconds_per_iteration:.2f} s per iteration"
                + (f", {seconds_per_evaluation:.0f} s per evaluation" if t.eval_data is not None else "")
                + f" -> {total} iterations ({t.epochs(total):.1f} epochs), lr steps at "
                f"{', '.join(map(str, steps)) or 'none'}"
            )
        if final:
            self.seconds_per_iteration = None  # nothing more to fit

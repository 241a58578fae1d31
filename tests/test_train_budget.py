"""The time budget (a hook around the training loop) fits the schedule to the minutes given."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from fastrcnn_cli.recipes import RECIPES
from fastrcnn_cli.training.budget import BudgetHook
from fastrcnn_cli.training.distributed import DistInfo
from fastrcnn_cli.training.settings import TrainSettings


def run_steps(hook: BudgetHook, trainer: SimpleNamespace, clock: list[float], upto: int, seconds: float) -> None:
    while trainer.iteration < upto:
        clock[0] += seconds
        trainer.iteration += 1
        trainer.elapsed = clock[0]
        hook.after_step()


def test_the_schedule_is_fitted_from_the_timed_iterations_then_the_first_evaluation(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("fastrcnn_cli.training.budget.time.perf_counter", lambda: clock[0])
    settings = TrainSettings(data="x", backbone="efficientnet-lite0", time_budget=10.0).resolved(300)
    trainer = SimpleNamespace(settings=settings, iteration=0, elapsed=0.0, eval_data=SimpleNamespace(records=[0] * 20),
                              evaluations=[], dist=DistInfo(), run_dir=None, epochs=lambda n: n / 300)
    hook = BudgetHook()
    hook.trainer = trainer
    hook.before_train()
    run_steps(hook, trainer, clock, 35, 2.0)  # 2 s per iteration; iterations 5..35 are timed
    # 570 s of budget (5 % margin) - 70 s spent = 500 s; evaluations estimated at 0.5 x 2 s x 20 images = 20 s,
    # 4 of them still to come: 420 s of training at 2 s -> 210 more iterations
    s = trainer.settings
    assert s.iterations == 35 + 210 and s.time_budget == 10.0  # a second fit will follow the first evaluation
    assert s.lr_step == (round(RECIPES["small-data"].step_fractions[0] * 245),) and s.eval_every == math.ceil(245 / 4)
    run_steps(hook, trainer, clock, s.eval_every, 2.0)
    trainer.evaluations.append((trainer.iteration, 60.0))  # the first evaluation took 60 s
    clock[0] += 60.0
    run_steps(hook, trainer, clock, s.eval_every + 1, 2.0)
    fitted = trainer.settings
    assert fitted.time_budget is None  # spent: nothing more to fit
    remaining = 570 - clock[0]
    evaluations = 4 - (trainer.iteration * 4) // fitted.iterations
    assert fitted.iterations == pytest.approx(trainer.iteration + (remaining - evaluations * 60.0) / 2.0, abs=2)
    assert fitted.iterations < s.iterations  # evaluations are slower than estimated: fewer iterations fit


def test_without_validation_one_fit_spends_the_budget(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("fastrcnn_cli.training.budget.time.perf_counter", lambda: clock[0])
    settings = TrainSettings(data="x", backbone="efficientnet-lite0", time_budget=10.0).resolved(300)
    trainer = SimpleNamespace(settings=settings, iteration=0, elapsed=0.0, eval_data=None, evaluations=[],
                              dist=DistInfo(), run_dir=None, epochs=lambda n: n / 300)
    hook = BudgetHook()
    hook.trainer = trainer
    hook.before_train()
    run_steps(hook, trainer, clock, 35, 2.0)
    assert trainer.settings.iterations == 35 + 250 and trainer.settings.time_budget is None

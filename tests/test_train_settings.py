"""Training settings are declared once: each field of TrainSettings carries its default, help, range and name,
and ``fastrcnn train``'s options are generated from them (fastrcnn_cli.cli.fields)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.cli.fields import settings_options
from fastrcnn_cli.errors import SettingsError
from fastrcnn_cli.fields import count, described_fields, number, setting
from fastrcnn_cli.recipes import RECIPES
from fastrcnn_cli.training.settings import TrainSettings

runner = CliRunner()
HAND_WRITTEN = {"data", "classes"}  # the data argument, and --classes (parsed from text or a file)


def train_command() -> Any:
    return typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]


def test_every_setting_is_an_option_of_the_same_name_and_default() -> None:
    params = {p.name: p for p in train_command().params}
    for f, s, _ in described_fields(TrainSettings):
        if f.name in HAND_WRITTEN:
            continue
        assert f.name in params, f"TrainSettings.{f.name} has no option"
        param = params[f.name]
        assert param.opts[0] == "--" + f.name.replace("_", "-"), (f.name, param.opts)
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        assert param.default == default or getattr(param.default, "value", None) == default, f.name
        assert s.help, f.name


def test_renamed_flags_are_the_field_names() -> None:
    names = {opt for p in train_command().params for opt in p.opts}
    assert {"--warmup", "--scale", "--lr-step", "--holdout", "--proposer", "--proposal-min-size", "-j"} <= names


def capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake_train(settings=None, resume=None, iterations=None, hooks=()):
        seen.update(settings=settings, resume=resume, iterations=iterations)
        raise SystemExit(0)

    monkeypatch.setattr("fastrcnn_cli.train.train", fake_train)
    return seen


def test_options_reach_the_settings_with_their_field_types(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = capture(monkeypatch)
    result = runner.invoke(app, [
        "train", str(tmp_path), "-s", "train", "--scale", "416", "--scale", "480", "--lr-step", "300",
        "--warmup", "7", "--proposal-min-size", "5", "--mode", "quality", "--proposer", "native", "--no-flip",
        "--workers", "0", "--proposal-cache", str(tmp_path / "cache"), "--classes", "cat,dog", "--holdout", "0.2",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    s: TrainSettings = seen["settings"]
    assert (s.split, s.scale, s.lr_step, s.warmup, s.flip, s.workers, s.holdout) == (
        "train", (416, 480), (300,), 7, False, 0, 0.2)
    assert (s.proposal_min_size, s.proposal_mode, s.proposer) == (5, "quality", "native")
    assert s.proposal_cache == str(tmp_path / "cache") and s.classes == ("cat", "dog")
    # what was not given keeps the field's default
    assert (s.momentum, s.proposal_top, s.iterations, s.device) == (0.9, 2000, None, "auto")


def test_resume_passes_the_new_length(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = capture(monkeypatch)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--iterations", "50"])
    assert result.exit_code == 0, result.output
    assert seen["resume"] == tmp_path and seen["iterations"] == 50 and seen["settings"] is None


def test_core_errors_name_fields_and_the_command_line_names_flags() -> None:
    with pytest.raises(SettingsError) as info:
        TrainSettings(data="x", iterations=0, warmup=-1, scale=(16,)).validate()
    assert {f for f, _ in info.value.problems} == {"iterations", "warmup", "scale"}
    assert "--" not in str(info.value)
    result = runner.invoke(app, ["train", "/nonexistent", "--bg-iou-low", "0.6"])  # a rule across fields
    assert result.exit_code == 2 and "--bg-iou-low" in result.output, result.output


def test_help_quotes_the_recipes_values() -> None:
    helps = {p.name: p.help for p in train_command().params}
    lrs = " or ".join(f"{r.lr:g}" for r in RECIPES.values())
    assert lrs in helps["lr"]
    assert str(RECIPES["paper"].iterations) in helps["iterations"]


@dataclass(frozen=True)
class Toy:
    """A settings class of its own: the mechanism is not tied to training."""

    name: str = setting("toy", "A name.", aliases=("-n",))
    size: int = setting(3, "A size.", interval=count(1, 10))
    ratio: float | None = setting(None, "A ratio.", interval=number(0.0, 1.0))
    sides: tuple[int, ...] | None = setting(None, "Sides, repeatable.", interval=count(1, 100))
    fast: bool = setting(True, "Go fast.")


def test_a_new_field_is_a_new_option_with_its_range() -> None:
    toy = typer.Typer()
    got: list[Toy] = []

    @toy.command()
    @settings_options(Toy)
    def run(*, options: dict[str, Any]) -> None:
        got.append(Toy(**options))

    result = runner.invoke(toy, ["-n", "x", "--size", "4", "--sides", "5", "--sides", "6", "--no-fast"])
    assert result.exit_code == 0, result.output
    assert got[-1] == Toy(name="x", size=4, ratio=None, sides=(5, 6), fast=False)
    result = runner.invoke(toy, ["--size", "11"])
    assert result.exit_code == 2 and "--size" in result.output and "1 <= x <= 10" in result.output
    assert runner.invoke(toy, []).exit_code == 0 and got[-1] == Toy()
    assert dataclasses.fields(Toy)[1].metadata  # the description lives on the field itself


def test_amp_runs_recorded_before_bfloat16_resume_in_float16():
    """--amp meant float16 before --amp-dtype existed: an old args.json resumes with the type it trained in."""
    from fastrcnn_cli.training.settings import TrainSettings

    old = TrainSettings.from_dict({"data": "d", "amp": True, "recipe": "small-data"})
    assert old.amp and old.amp_dtype == "float16"
    new = TrainSettings.from_dict({"data": "d", "amp": True, "amp_dtype": "bfloat16", "recipe": "small-data"})
    assert new.amp_dtype == "bfloat16"
    assert TrainSettings(data="d").amp_dtype == "bfloat16"

"""Slow real-data checks (``pytest -m slow``): the README's raccoon result, reproduced end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastrcnn_cli.cli import app


@pytest.mark.slow
def test_raccoon_training_reaches_ap50_of_085_within_20_minutes(raccoon: Path, tmp_path: Path) -> None:
    """The README's command (about 16 minutes on 2 cores): VOC07 11-point AP50 >= 0.85 on the test split."""
    runner = CliRunner()
    args = [
        "train", str(raccoon), "--backbone", "efficientnet-lite0", "--iterations", "1600", "--lr", "0.01",
        "--lr-step", "1200", "--warmup", "100", "--scale", "480", "--max-size", "800", "--eval-every", "1600",
        "--checkpoint-every", "400", "--log-every", "50", "--runs-dir", str(tmp_path / "runs"),
        "--proposal-cache", str(tmp_path / "proposals"), "--json",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    evaluation = json.loads((Path(summary["run_dir"]) / "eval_last.json").read_text())
    assert evaluation["map_voc07"] >= 0.85, evaluation

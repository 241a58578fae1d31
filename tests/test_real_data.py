"""Slow real-data checks (``pytest -m slow``): the README's raccoon result with the defaults, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastrcnn_cli.cli import app

#: the default recipe's raccoon test AP50 (VOC07 11-point) in README's results, less a margin for run-to-run noise
RACCOON_TEST_AP50_FLOOR = 0.85


@pytest.mark.slow
def test_raccoon_defaults_validate_on_val_and_reach_the_readme_test_ap(raccoon: Path, tmp_path: Path) -> None:
    """README's command (about 15 minutes on 2 idle cores): train with the defaults, validate on 'val',
    then evaluate best.pt once on the test split."""
    runner = CliRunner()
    runs, cache = tmp_path / "runs", tmp_path / "proposals"
    args = ["train", str(raccoon), "--backbone", "efficientnet-lite0", "--runs-dir", str(runs),
            "--proposal-cache", str(cache), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    run_dir = Path(summary["run_dir"])
    held = set((run_dir / "validation.txt").read_text().splitlines()[1:])
    assert held == set((raccoon / "ImageSets" / "Main" / "val.txt").read_text().split())
    args = ["evaluate", str(raccoon), "--split", "test", "--weights", summary["best"], "--proposal-cache", str(cache),
            "--out", str(tmp_path / "eval"), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    evaluation = json.loads(result.stdout[result.stdout.index("{") :])
    assert evaluation["map_voc07"] >= RACCOON_TEST_AP50_FLOOR, evaluation

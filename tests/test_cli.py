"""The command line: help, version, exit codes and error messages without tracebacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastrcnn_cli.cli import app

runner = CliRunner()
COMMANDS = ["propose", "train", "detect", "evaluate", "compress-svd", "benchmark", "validate", "make-synthetic", "export"]


def run(*args: str):
    return runner.invoke(app, list(args))


def test_top_level_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help_with_examples(name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples" in result.output and "fastrcnn" in result.output


def test_version_reports_torch_and_device() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "fastrcnn" in result.output and "torch" in result.output and "device" in result.output


def test_console_script_is_installed_and_runs() -> None:
    exe = shutil.which("fastrcnn") or str(Path(sys.executable).with_name("fastrcnn"))
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("fastrcnn")


def test_validate_reports_broken_data_without_traceback(synthetic_voc: Path, tmp_path: Path) -> None:
    from tests.test_data import _break

    root = tmp_path / "broken"
    shutil.copytree(synthetic_voc, root)
    expected = _break(root)
    default = run("validate", str(root), "--split", "train")
    assert default.exit_code == 0, default.output
    strict = run("validate", str(root), "--split", "train", "--strict")
    assert strict.exit_code == 3
    for result in (default, strict):
        assert "Traceback" not in result.output
        for image_id in expected:
            assert image_id in result.output


def test_missing_data_set_is_a_clear_failure() -> None:
    result = run("validate", "/no/such/folder")
    assert result.exit_code == 1
    assert "no such data set folder" in result.output and "Traceback" not in result.output


def test_make_synthetic_then_validate_json(tmp_path: Path) -> None:
    import json

    out = tmp_path / "shapes"
    assert run("make-synthetic", str(out), "--train", "3", "--val", "1", "--test", "1").exit_code == 0
    result = runner.invoke(app, ["validate", str(out), "--split", "trainval", "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["usable_images"] == 4 and payload["problems"] == []

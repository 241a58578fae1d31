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


# ---------------------------------------------------------------------------------------------------------
# --config FILE


def flat(text: str) -> str:
    """The output with Rich's panel borders and line wrapping undone, to search for phrases."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_every_command_takes_config() -> None:
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        assert any("--config" in p.opts for p in command.params if p.param_type_name == "option"), name


def _propose_settings(*args: str) -> dict:
    import json

    from fastrcnn_cli.shipped import example_path

    result = runner.invoke(app, ["propose", str(example_path()), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["settings"]


def test_config_file_sets_options_and_command_line_flags_override_it(tmp_path: Path) -> None:
    config = tmp_path / "propose.toml"
    # canonical names, aliases, with '-' or '_': all name the same options
    config.write_text('proposal-top = 5\nmax_side = 64\nproposal_min_size = 0\nmode = "fast"\n')
    assert _propose_settings("--config", str(config)) == {"mode": "fast", "max_side": 64, "top": 5, "min_size": 0}
    overridden = _propose_settings("--config", str(config), "--top", "3", "--proposal-max-side", "48")
    assert overridden["top"] == 3 and overridden["max_side"] == 48 and overridden["min_size"] == 0


def test_config_values_are_checked_like_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text("proposal-top = 0\n")
    result = run("propose", "x.jpg", "--config", "c.toml")
    assert result.exit_code == 2 and "0 is not allowed" in flat(result.output), result.output


def test_unknown_config_keys_are_a_usage_error_naming_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text("proposal-top = 5\ntopp = 3\n")
    result = run("propose", "x.jpg", "--config", "c.toml")
    text = flat(result.output)
    assert result.exit_code == 2, result.output
    assert "c.toml: unknown key 'topp'" in text and "did you mean top" in text and "Traceback" not in text
    Path("d.toml").write_text("imgsz = 640\n")  # another tool's name: the pointer to ours
    assert "--scale" in flat(run("detect", "x.jpg", "--config", "d.toml").output)
    Path("e.toml").write_text("proposal-top = [\n")
    result = run("propose", "x.jpg", "--config", "e.toml")
    assert result.exit_code == 2 and "e.toml: not valid TOML" in flat(result.output)
    result = run("propose", "x.jpg", "--config", "missing.toml")
    assert result.exit_code == 2 and "missing.toml: cannot be read" in flat(result.output)


# ---------------------------------------------------------------------------------------------------------
# flags users bring from other tools


@pytest.mark.parametrize(
    ("args", "pointer"),
    [
        (["detect", "--imgsz", "640", "x.jpg"], "`fastrcnn detect` calls the image size --scale"),
        (["train", "--imgsz", "640", "data"], "`fastrcnn train` calls the image size --scale or --test-scale"),
        (["detect", "--half", "x.jpg"], "`fastrcnn detect` has no option for half precision; see `fastrcnn train --amp`"),
        (["detect", "--source", "x.jpg"], "give them as arguments"),
        (["detect", "--epochs", "3"], "see `fastrcnn train --epochs`"),
        (["train", "--batch-size", "4", "data"], "`fastrcnn train` calls the batch size --images-per-batch"),
        (["detect", "--conf-thres", "0.3", "x.jpg"], "calls the score threshold --conf"),
        (["detect", "--iou-thres", "0.5", "x.jpg"], "calls the NMS IoU threshold --nms"),
        (["propose", "--weights", "w.pt", "x.jpg"], "see `fastrcnn benchmark --weights`"),
        (["validate", "--resume", "run"], "--resume is an option of `fastrcnn train`"),
    ],
)
def test_flags_from_other_tools_get_a_pointer_to_ours(args: list[str], pointer: str) -> None:
    result = run(*args)
    text = flat(result.output)
    assert result.exit_code == 2, result.output
    assert f"No such option: {args[1]}" in text and pointer in text, text


def test_other_unknown_flags_keep_clicks_message() -> None:
    result = run("detect", "--no-such-flag-at-all", "x.jpg")
    assert result.exit_code == 2 and "No such option: --no-such-flag-at-all" in flat(result.output)

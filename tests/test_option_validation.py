"""Every numeric option of every command is validated where it is read: a usage error (exit code 2) naming the
flag and the allowed range, never a traceback and never a silent default.

The table is built from the Typer/Click command objects, so an option added later is covered without touching
this file: each must declare its range (:mod:`fastrcnn_cli.cli.ranges`), and each gets 0, a negative value,
NaN and a huge value. A value inside the declared range must be accepted: the command then goes on to its
first real step, which the test makes fail on purpose on a missing input (the "sentinel"), proving that the
option was accepted and that no later step tripped on it first.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.cli.ranges import Range

runner = CliRunner()
MISSING = "/nonexistent-fastrcnn-input"
VALUES = {int: ["0", "-1", "nan", "1" + "0" * 30], float: ["0", "-1", "nan", "1e30", "inf"]}


def sentinels(tmp: Path) -> dict[str, list[str]]:
    """Arguments that make each command stop with exit code 1 on a missing input, after parsing its options."""
    full = tmp / "nonexistent-fastrcnn-input-but-a-full-folder"
    full.mkdir(exist_ok=True)
    (full / "x").write_text("x")
    return {
        "train": [MISSING],
        "detect": [MISSING + ".jpg"],
        "evaluate": [MISSING],
        "propose": [MISSING + ".jpg"],
        "compress-svd": ["--rank", "8", "--weights", MISSING + ".pt"],
        "benchmark": ["--weights", MISSING + ".pt"],
        "make-synthetic": [str(full)],
    }


def commands() -> dict[str, typing.Any]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def numeric_kind(param: typing.Any) -> type | None:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if typing.get_origin(annotation) in (list, tuple):
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    return annotation if annotation in (int, float) else None


def numeric_options() -> list[tuple[str, str, type, typing.Any]]:
    rows = []
    for name, command in sorted(commands().items()):
        for param in command.params:
            kind = numeric_kind(param)
            if kind is not None and getattr(param, "opts", None) and param.opts[0].startswith("--"):
                rows.append((name, param.opts[0], kind, param))
    return rows


OPTIONS = numeric_options()


_CLI = typer.main.get_command(app)


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    """--threads N is legal and applied: restore torch's thread count after each test. Also reuse one Click
    command for every invocation (Typer otherwise rebuilds it from the functions each time, the slow part)."""
    import typer.testing

    monkeypatch.setattr(typer.testing, "_get_command", lambda a: _CLI if a is app else typer.main.get_command(a))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_table_covers_every_command_with_numbers() -> None:
    names = {row[0] for row in OPTIONS}
    assert {"train", "detect", "evaluate", "propose", "compress-svd", "benchmark", "make-synthetic"} <= names
    assert names <= set(sentinels(Path("/tmp")))  # a new command with numbers needs a sentinel here


@pytest.mark.parametrize("command,flag,kind,param", OPTIONS, ids=[f"{r[0]}{r[1]}" for r in OPTIONS])
def test_every_numeric_option_declares_a_range(command: str, flag: str, kind: type, param: typing.Any) -> None:
    parser = param.type_descriptor.parameter_info.parser
    assert isinstance(parser, Range), f"{command} {flag}: give it a range from fastrcnn_cli.cli.ranges"
    assert parser.kind is kind
    if kind is int:
        assert parser.lo is not None and parser.hi is not None, f"{command} {flag}: integers need both bounds"


@pytest.mark.parametrize("command,flag,kind,param", OPTIONS, ids=[f"{r[0]}{r[1]}" for r in OPTIONS])
def test_zero_negative_nan_and_huge_values(command: str, flag: str, kind: type, param: typing.Any, tmp_path: Path) -> None:
    allowed: Range = param.type_descriptor.parameter_info.parser
    base = sentinels(tmp_path)[command]
    for value in VALUES[kind]:
        result = runner.invoke(app, [command, *base, flag, value])
        output = result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{command} {flag} {value}: {result.exception!r}\n{output}"
        )
        assert "Traceback" not in output, output
        try:
            legal = allowed.contains(int(value) if kind is int else float(value))
        except ValueError:  # 'nan' for an integer
            legal = False
        if not legal:
            assert result.exit_code == 2, f"{command} {flag} {value} was accepted:\n{output}"
            assert flag in output and "x" in output, output  # the flag and the allowed range
        else:
            assert result.exit_code in (0, 1, 2), output
            if result.exit_code == 1:  # the sentinel: the missing input, so the value itself was accepted
                assert "nonexistent-fastrcnn-input" in output, f"{command} {flag} {value}:\n{output}"
            if result.exit_code == 2:  # refused by a rule across options: it must name a flag
                assert "--" in output, output


@pytest.mark.parametrize(
    "args,flag",
    [
        (["train", MISSING, "--iterations", "0"], "--iterations"),
        (["train", MISSING, "--hidden", "0"], "--hidden"),
        (["train", MISSING, "--threads", "0"], "--threads"),
        (["train", MISSING, "--warmup", "-10"], "--warmup"),
        (["train", MISSING, "--checkpoint-every", "0"], "--checkpoint-every"),
        (["train", MISSING, "--log-every", "0"], "--log-every"),
        (["train", MISSING, "--dropout", "2"], "--dropout"),
        (["train", MISSING, "--momentum", "-5"], "--momentum"),
        (["train", MISSING, "--lr", "nan"], "--lr"),
        (["train", MISSING, "--frozen-stages", "99"], "--frozen-stages"),
        (["train", MISSING, "--bg-iou-low", "0.6"], "--bg-iou-low"),
        (["detect", MISSING, "--nms", "0"], "--nms"),
        (["compress-svd", "--rank", "8", "--rank-fc7", "nan"], "--rank-fc7"),
        (["propose", MISSING, "--shard", "0/0"], "--shard"),
    ],
)
def test_the_reported_cases_are_usage_errors(args: list[str], flag: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output, result.output


def test_core_settings_errors_name_the_field_and_the_cli_names_the_flag() -> None:
    from fastrcnn_cli.detect import DetectSettings
    from fastrcnn_cli.errors import SettingsError

    with pytest.raises(SettingsError, match="score_threshold") as info:
        DetectSettings(score_threshold=2.0)
    assert info.value.problems[0][0] == "score_threshold"
    from fastrcnn_cli.cli.app import flag_for

    assert flag_for("score_threshold", {"score_threshold": "--conf"}) == "--conf"
    assert flag_for("max_detections") == "--max-detections"

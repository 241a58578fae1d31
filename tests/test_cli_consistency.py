"""One name per idea across the command line, and core errors that name settings fields, not flags.

The command-line checks read the Click command objects Typer builds (``typer.main.get_command``), so a command
or option added later is covered without touching this file. The core checks build each settings dataclass
with a bad value, and scan the source of every core module (outside ``fastrcnn_cli/cli/``) for exception
messages that spell one of the command line's flags.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from fastrcnn_cli.cli import app
from fastrcnn_cli.errors import SettingsError

PACKAGE = Path(__file__).resolve().parents[1] / "fastrcnn_cli"
CLI = typer.main.get_command(app)
COMMANDS: dict[str, Any] = dict(CLI.commands)  # type: ignore[attr-defined]

#: the proposal settings every command that makes or uses proposals accepts (canonical names)
PROPOSAL_FLAGS = (
    "--proposal-mode", "--proposal-max-side", "--proposal-top", "--proposal-min-size", "--proposer",
    "--proposal-cache",
)
PROPOSAL_COMMANDS = ("propose", "train", "evaluate", "detect", "benchmark")
#: commands that compute (Selective Search, a network, SVD): each takes --threads
COMPUTING_COMMANDS = ("propose", "train", "detect", "evaluate", "compress-svd", "benchmark")


def options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option"]


def option(command: Any, flag: str) -> Any | None:
    return next((p for p in options(command) if flag in p.opts), None)


def kind(param: Any) -> tuple[Any, ...]:
    """What an option takes: its annotation, its parser, flag or not, repeated or not."""
    descriptor = getattr(param, "type_descriptor", None)
    info = getattr(descriptor, "parameter_info", None)
    return (getattr(descriptor, "annotation", None), getattr(info, "parser", None), param.is_flag, param.multiple)


# ---------------------------------------------------------------------------------------------------------
# (a) the proposal settings


@pytest.mark.parametrize("name", PROPOSAL_COMMANDS)
@pytest.mark.parametrize("flag", PROPOSAL_FLAGS)
def test_every_proposal_command_accepts_the_same_proposal_settings(name: str, flag: str) -> None:
    """A cache made by ``propose`` with any setting is usable downstream: the same flag, aliases and type."""
    reference = option(COMMANDS["propose"], flag)
    assert reference is not None, f"propose has no {flag}"
    param = option(COMMANDS[name], flag)
    assert param is not None, f"`fastrcnn {name}` has no {flag}"
    assert sorted(param.opts) == sorted(reference.opts), f"{name} {flag}: aliases {param.opts} vs {reference.opts}"
    assert kind(param) == kind(reference), f"{name} {flag} takes another type than propose's"


# ---------------------------------------------------------------------------------------------------------
# (b) the split, --threads, and one meaning per flag


def test_the_split_is_dash_s_split_on_every_command_that_has_one() -> None:
    for name, command in COMMANDS.items():
        for param in options(command):
            if param.name == "split" or "--split" in param.opts:
                assert sorted(param.opts) == ["--split", "-s"], f"{name}: the split is {param.opts}"
            elif "-s" in param.opts:
                pytest.fail(f"`fastrcnn {name}`: -s is {param.opts}, but -s means --split everywhere")


@pytest.mark.parametrize("name", COMPUTING_COMMANDS)
def test_every_command_that_computes_takes_threads(name: str) -> None:
    param = option(COMMANDS[name], "--threads")
    assert param is not None, f"`fastrcnn {name}` has no --threads"
    assert kind(param) == kind(option(COMMANDS["propose"], "--threads"))


def test_a_flag_means_one_kind_of_thing_on_every_command() -> None:
    """``--proposals`` is a file everywhere or a count everywhere, never both (and so for every flag)."""
    seen: dict[str, tuple[str, tuple[Any, ...]]] = {}
    clashes = []
    for name, command in sorted(COMMANDS.items()):
        for param in options(command):
            annotation = kind(param)[0]
            for flag in param.opts:
                if flag.startswith("--") and flag not in ("--help", "--config"):
                    first = seen.setdefault(flag, (name, annotation))
                    if first[1] != annotation:
                        clashes.append(f"{flag}: {first[0]} takes {first[1]}, {name} takes {annotation}")
    assert not clashes, "\n".join(clashes)


# ---------------------------------------------------------------------------------------------------------
# (c) core errors name fields, not flags


def find(class_name: str, *modules: str) -> type:
    """The class from the first of ``modules`` that defines it (modules move while the code is reorganised)."""
    for module in modules:
        try:
            found = getattr(importlib.import_module(module), class_name, None)
        except ModuleNotFoundError:
            continue
        if found is not None:
            return found
    raise AssertionError(f"{class_name} is in none of {', '.join(modules)}")


#: (class, modules it may live in, keyword arguments with one bad value, the field at fault)
BAD_SETTINGS = [
    ("ProposalSettings", ("fastrcnn_cli.proposal_settings",), {"top": 0}, "top"),
    ("ProposalSettings", ("fastrcnn_cli.proposal_settings",), {"mode": "slow"}, "mode"),
    ("DetectSettings", ("fastrcnn_cli.detect",), {"score_threshold": 2.0}, "score_threshold"),
    ("DetectSettings", ("fastrcnn_cli.detect",), {"max_detections": 0}, "max_detections"),
    ("SamplingSettings", ("fastrcnn_cli.sampling",), {"fg_fraction": 1.5}, "fg_fraction"),
    ("SamplingSettings", ("fastrcnn_cli.sampling",), {"rois_per_image": 0}, "rois_per_image"),
    ("TrainSettings", ("fastrcnn_cli.training.settings", "fastrcnn_cli.training", "fastrcnn_cli.train"),
     {"data": "data", "iterations": 0}, "iterations"),
    ("EvaluateSettings", ("fastrcnn_cli.evaluate", "fastrcnn_cli.evaluation"),
     {"data": Path("data"), "iou_threshold": 2.0}, "iou_threshold"),
    ("BenchmarkSettings", ("fastrcnn_cli.benchmark.settings", "fastrcnn_cli.benchmark"), {"runs": 0}, "runs"),
    ("CompressSVDSettings", ("fastrcnn_cli.svd_checkpoint", "fastrcnn_cli.svd"), {"rank_fc6": 0}, "rank_fc6"),
]


@pytest.mark.parametrize(
    ("class_name", "modules", "kwargs", "field"), BAD_SETTINGS, ids=[f"{c}-{f}" for c, _, _, f in BAD_SETTINGS]
)
def test_settings_errors_name_the_field_not_a_flag(
    class_name: str, modules: tuple[str, ...], kwargs: dict[str, Any], field: str
) -> None:
    settings_class = find(class_name, *modules)
    with pytest.raises(SettingsError) as info:
        made = settings_class(**kwargs)
        validate = getattr(made, "validate", None)  # settings checked once resolved (e.g. after a recipe)
        if callable(validate):
            validate()
    assert field in [f for f, _ in info.value.problems], info.value.problems
    assert "--" not in str(info.value), str(info.value)


def our_flags() -> set[str]:
    return {o for c in COMMANDS.values() for p in options(c) for o in (*p.opts, *p.secondary_opts)
            if o.startswith("--") and o not in ("--help",)}


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _strings(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value


def _message_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Where exception messages are written: ``raise`` statements, calls of ``...Error``/``...Exception``
    classes, and ``problems.append(...)`` (settings validation collects its messages so)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node.exc
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.endswith(("Error", "Exception")):
                yield node
            elif (name == "append" and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                  and "problem" in func.value.id):
                yield node


def test_no_core_module_puts_a_flag_into_an_exception_message() -> None:
    """Core modules name settings fields; only ``fastrcnn_cli/cli/`` knows the flags (shell commands quoted
    in a message, like ``pip install --force-reinstall``, are not our flags and pass)."""
    flags = our_flags()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in _message_nodes(tree):
            for text in _strings(node):
                named = sorted({f for f in FLAG.findall(text) if f in flags})
                if named:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {', '.join(named)}")
    assert not found, "core modules naming flags in errors:\n" + "\n".join(sorted(set(found)))

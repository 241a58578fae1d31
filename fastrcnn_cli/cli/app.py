"""The Typer application object, the :func:`command` decorator every command is made with, and shared options.

:func:`command` gives every command the same behaviour in one place:

* user errors (:class:`~fastrcnn_cli.errors.FastRCNNError`) become one message and their exit code, Ctrl-C
  exit code 130, and a :class:`~fastrcnn_cli.errors.SettingsError` names the flags of this command;
* ``--config FILE``: a TOML file whose keys are the command's option names (``proposal-top`` or
  ``proposal_top``; any alias, e.g. ``top``) sets those options' defaults (Click's ``default_map``), so a
  flag given on the command line still wins. Precedence: command line, then environment variable, then the
  file, then the built-in default. Unknown keys are a usage error naming the file and the key;
* an unknown flag that users bring from other detection tools (``--imgsz``, ``--half``, ``--source``,
  ``--conf-thres``, ...) or that belongs to another of our commands gets a one-line pointer to ours after
  Click's usual "No such option" (exit code 2 as before).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from fastrcnn_cli.errors import DatasetError, ExitCode, FastRCNNError, SettingsError

try:  # the Click that Typer runs on: vendored as typer._click by recent Typer, the click package before
    from typer import _click as click
except ImportError:  # pragma: no cover - older Typer
    import click

NoSuchOption = click.exceptions.NoSuchOption

app = typer.Typer(
    name="fastrcnn",
    help="Fast R-CNN (Girshick, ICCV 2015): Selective Search proposals, training, detection, evaluation, "
    "truncated-SVD compression and benchmarks.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def report_error(exc: Exception) -> None:
    """Print a user-facing error (and a data set's problem table) on stderr, without a traceback."""
    from rich.markup import escape

    from fastrcnn_cli.console import err

    if isinstance(exc, DatasetError) and exc.problems:
        from fastrcnn_cli.data.validate import ValidationReport

        report = ValidationReport(root=Path(exc.path or ""), split="", problems=list(exc.problems))
        report.print(limit=None)
    # escaped: file names and messages may hold brackets, which are not markup
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)


def flag_for(field: str, flags: dict[str, str] | None = None) -> str:
    """The command-line flag of a core setting: ``flags[field]``, else ``--field-name``."""
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


# ---------------------------------------------------------------------------------------------------------
# --config FILE


def _option_keys(command: typer.core.TyperCommand) -> dict[str, str]:
    """Config keys -> parameter names: every long flag of every option, with ``-`` or ``_``, and the name."""
    keys: dict[str, str] = {}
    for param in command.params:
        if param.param_type_name != "option" or param.name in (None, "config", "help"):
            continue
        for key in [param.name, *(o.lstrip("-") for o in param.opts if o.startswith("--"))]:
            keys[key] = keys[key.replace("_", "-")] = keys[key.replace("-", "_")] = param.name
    return keys


def read_config(path: Path, command: typer.core.TyperCommand, group: Any = None) -> dict[str, Any]:
    """The defaults a config file sets for ``command``: {parameter name: value}. Usage errors name the file
    and the key. ``group``: the command's group (the hint for a key that is another command's option)."""
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        raise typer.BadParameter(f"{path}: config files are TOML (key = value lines, e.g. proposal-top = 300)")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10: the backport, an optional package there
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise typer.BadParameter("reading TOML needs Python 3.11 or the tomli package (pip install tomli)")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise typer.BadParameter(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise typer.BadParameter(f"{path}: not valid TOML: {exc}") from None
    keys = _option_keys(command)
    params = {p.name: p for p in command.params}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = keys.get(key)
        if name is None:
            close = difflib.get_close_matches(key, sorted(keys), n=3)
            hint = flag_hint("--" + key.replace("_", "-"), command, group)
            raise typer.BadParameter(
                f"{path}: unknown key {key!r}: `fastrcnn {command.name}` has no option --{key.replace('_', '-')}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + (f" ({hint})" if hint else "")
            )
        if isinstance(value, Mapping):
            raise typer.BadParameter(f"{path}: {key!r} is a table; give it a value (key = value)")
        param = params[name]
        if (param.multiple or (param.nargs or 1) != 1) and not isinstance(value, list):
            value = [value]  # an option given several times on the command line: one value is a list of one
        if name in defaults:
            raise typer.BadParameter(f"{path}: {key!r} sets --{name.replace('_', '-')} a second time")
        defaults[name] = value
    return defaults


def _apply_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """``--config``'s callback (eager: it runs before the other options are read, so they see its defaults)."""
    if value is not None and not ctx.resilient_parsing:
        command = ctx.command
        assert isinstance(command, typer.core.TyperCommand)
        group = ctx.parent.command if ctx.parent else None
        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, command, group)}
    return value


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", is_eager=True, callback=_apply_config, metavar="FILE", show_default=False,
        help="A TOML file of this command's options (key = value, keys as the flags without '--', e.g. "
        "proposal-top = 300); flags given on the command line override it. Relative paths in it are relative "
        "to the current folder.",
    ),
]


# ---------------------------------------------------------------------------------------------------------
# hints for flags from other tools


class _Foreign:
    """A flag of another detection tool: what it means and the flags that do it here (any command)."""

    def __init__(self, name: str, ours: tuple[str, ...] = (), note: str = "") -> None:
        self.name, self.ours, self.note = name, ours, note


_IMAGE_SIZE = _Foreign("the image size", ("--scale", "--test-scale"), "the shorter side in pixels, with --max-size")
_HALF = _Foreign(
    "half precision", ("--amp",),
    "detection runs in float32; `fastrcnn export --half` writes a float16 model for other runtimes",
)
_BATCH = _Foreign("the batch size", ("--images-per-batch",), "and the RoIs sampled from each: --rois-per-image")
_CONF = _Foreign("the score threshold", ("--conf",))
_NMS = _Foreign("the NMS IoU threshold", ("--nms",))
_CONFIG = _Foreign("a file of options", ("--config",))
#: Ultralytics ``yolo``, Detectron2's and MMDetection's tools, torchvision's reference scripts
_FOREIGN: dict[str, _Foreign] = {
    "--imgsz": _IMAGE_SIZE, "--img-size": _IMAGE_SIZE, "--img": _IMAGE_SIZE, "--image-size": _IMAGE_SIZE,
    "--half": _HALF, "--fp16": _HALF, "--amp": _HALF,
    "--source": _Foreign("the images", (), "give them as arguments: `fastrcnn detect IMAGE...` takes files, "
                         "folders and patterns; train and evaluate take the data set folder"),
    "--batch": _BATCH, "--batch-size": _BATCH, "--bs": _BATCH,
    "--conf-thres": _CONF, "--conf-threshold": _CONF, "--score-thr": _CONF, "--score-threshold": _CONF,
    "--iou": _NMS, "--iou-thres": _NMS, "--nms-thr": _NMS, "--nms-threshold": _NMS,
    "--epochs": _Foreign("the training length", ("--epochs", "--iterations", "--time-budget")),
    "--max-iter": _Foreign("the training length", ("--iterations", "--epochs")),
    "--lr0": _Foreign("the learning rate", ("--lr",)),
    "--weights": _Foreign("the model", ("--weights",)),
    "--checkpoint": _Foreign("the model", ("--weights", "--resume")),
    "--cfg": _CONFIG, "--hyp": _CONFIG, "--config-file": _CONFIG,
    "--project": _Foreign("the run folder", ("--runs-dir", "--name", "--out")),
    "--data": _Foreign("the data set", (), "give its folder as an argument: `fastrcnn train DATA`"),
    "--save-txt": _Foreign("machine-readable results", ("--json", "--save-json", "--save-coco")),
}


def _flags(command: Any) -> set[str]:
    return {o for p in command.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def _elsewhere(flags: tuple[str, ...], command: typer.core.TyperCommand, group: Any) -> list[str]:
    """``fastrcnn CMD --flag`` for each other command of ``group`` that has one of ``flags``."""
    return [
        f"`fastrcnn {name} {flag}`"
        for name, other in sorted(getattr(group, "commands", {}).items())
        for flag in flags
        if other is not command and flag in _flags(other)
    ]


def flag_hint(option: str, command: typer.core.TyperCommand, group: Any = None) -> str | None:
    """A one-line pointer for an unknown ``option`` of ``command`` (a flag of another tool, or of another of
    our commands), or None when there is nothing to say. ``group``: the command's group, for the others."""
    option = option.split("=", 1)[0]
    foreign = _FOREIGN.get(option)
    this = f"`fastrcnn {command.name}`"
    if foreign is None:
        where = _elsewhere((option,), command, group)
        return f"{option} is an option of {', '.join(w.rsplit(' ', 1)[0] + '`' for w in where)}" if where else None
    note = f" ({foreign.note})" if foreign.note else ""
    here = [f for f in foreign.ours if f in _flags(command)]
    if here:
        return f"{this} calls {foreign.name} {' or '.join(here)}{note}"
    if foreign.ours:
        where = _elsewhere(foreign.ours, command, group)
        return f"{this} has no option for {foreign.name}" + (f"; see {', '.join(where)}" if where else "") + note
    return f"{foreign.name}: {foreign.note}"


class FastRCNNCommand(typer.core.TyperCommand):
    """Every command's Click class: an unknown flag gets :func:`flag_hint`'s pointer."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as exc:
            hint = flag_hint(exc.option_name, self, ctx.parent.command if ctx.parent else None)
            if hint:
                exc.message = f"{exc.message}. {hint[0].upper()}{hint[1:]}."
                exc.possibilities = None
            raise


# ---------------------------------------------------------------------------------------------------------
# the command decorator


def command(
    *args: Any, flags: dict[str, str] | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` that turns user errors into a message and their exit code, and Ctrl-C into 130, and adds
    ``--config FILE`` and the hints for foreign flags (see the module docstring).

    ``flags`` maps the core's setting names to this command's flags where they differ (``score_threshold``:
    ``--conf``), so a :class:`~fastrcnn_cli.errors.SettingsError` names the flag the user typed.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
            kw.pop("config", None)  # applied already, as the other options' defaults
            try:
                return func(*a, **kw)
            except SettingsError as exc:
                report_error(Exception(exc.render(lambda field: flag_for(field, flags))))
                raise typer.Exit(int(exc.exit_code)) from None
            except FastRCNNError as exc:
                report_error(exc)
                raise typer.Exit(int(exc.exit_code)) from None
            except KeyboardInterrupt:
                from fastrcnn_cli.console import err

                err.print("interrupted")
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

        signature = inspect.signature(func, eval_str=True)
        if "config" in signature.parameters:
            raise TypeError(f"{func.__name__}: 'config' is the name of the shared --config option")
        config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOption)
        # Typer reads the command's options from this signature: the command's own, evaluated now (so every
        # annotation must be defined above the command, as Typer needs anyway), and --config
        setattr(run, "__signature__", signature.replace(parameters=[*signature.parameters.values(), config]))
        run.__annotations__ = {**func.__annotations__, "config": ConfigOption}
        kwargs.setdefault("cls", FastRCNNCommand)
        return app.command(*args, **kwargs)(run)

    return decorate


DeviceOption = Annotated[
    str,
    typer.Option("--device", envvar="FASTRCNN_DEVICE", help="auto, cpu, cuda or cuda:N (auto: CUDA when present)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.")]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Stop (exit code 3) on any data set problem instead of skipping bad images.")
]
ClassesOption = Annotated[
    str | None,
    typer.Option("--classes", help="Class names, comma-separated, or a file with one per line (default: from the data)."),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="A fastrcnn checkpoint (default: the model shipped in weights/)."),
]


def examples(*lines: str) -> str:
    """A help epilog of worked examples, one per paragraph."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  [cyan]{line}[/cyan]" for line in lines)

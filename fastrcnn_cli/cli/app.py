"""The Typer application object and the options several commands share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

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
    from fastrcnn_cli.console import err
    from fastrcnn_cli.errors import DatasetError

    if isinstance(exc, DatasetError) and exc.problems:
        from fastrcnn_cli.data.validate import ValidationReport

        report = ValidationReport(root=exc.path or "", split="", problems=list(exc.problems))  # type: ignore[arg-type]
        report.print(limit=None)
    from rich.markup import escape

    # escaped: file names and messages may hold brackets, which are not markup
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)


def flag_for(field: str, flags: dict[str, str] | None = None) -> str:
    """The command-line flag of a core setting: ``flags[field]``, else ``--field-name``."""
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


def command(
    *args: Any, flags: dict[str, str] | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` that turns user errors into a message and their exit code, and Ctrl-C into 130.

    ``flags`` maps the core's setting names to this command's flags where they differ (``score_threshold``:
    ``--conf``), so a :class:`~fastrcnn_cli.errors.SettingsError` names the flag the user typed.
    """
    from fastrcnn_cli.errors import ExitCode, FastRCNNError, SettingsError

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
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


def not_yet(command: str) -> None:
    """For commands a later version provides: say so and exit non-zero, never pretend to work."""
    from fastrcnn_cli.errors import ExitCode, FastRCNNError

    class NotImplementedYet(FastRCNNError):
        exit_code = ExitCode.NOT_IMPLEMENTED

    raise NotImplementedYet(f"`fastrcnn {command}` is not implemented in this version yet")

"""The ``fastrcnn`` command line: a thin layer that parses, calls one function of the core, and prints.

Every command lives in a module of its own here; errors a user can cause (:mod:`fastrcnn_cli.errors`) are
printed as one clear message (no traceback) and mapped to their exit code by :func:`main`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fastrcnn_cli.cli.app import app

# importing the command modules registers their commands on ``app``
from fastrcnn_cli.cli import data as _data  # noqa: F401,E402
from fastrcnn_cli.cli import convert as _convert  # noqa: F401,E402
from fastrcnn_cli.cli import propose as _propose  # noqa: F401,E402
from fastrcnn_cli.cli import train as _train  # noqa: F401,E402
from fastrcnn_cli.cli import detect as _detect  # noqa: F401,E402
from fastrcnn_cli.cli import evaluate as _evaluate  # noqa: F401,E402
from fastrcnn_cli.cli import compress_svd as _compress_svd  # noqa: F401,E402
from fastrcnn_cli.cli import benchmark as _benchmark  # noqa: F401,E402
from fastrcnn_cli.cli import export as _export  # noqa: F401,E402
from fastrcnn_cli.cli import build_ops as _build_ops  # noqa: F401,E402


def _version_callback(value: bool) -> None:
    if value:
        from fastrcnn_cli.versions import version_text  # here: importlib.metadata costs start-up time

        sys.stdout.write(version_text() + "\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version_callback, is_eager=True, help="Show versions and device, then exit."),
    ] = False,
) -> None:
    """Fast R-CNN (Girshick, ICCV 2015) as a command-line toolkit.

    Every command takes --config FILE: a TOML file of its options (flags on the command line override it).

    Exit codes: 0 ok, 1 failure, 2 usage error, 3 data set validation failed, 4 training diverged
    (NaN/inf loss), 130 interrupted.
    """


def main() -> None:
    """Entry point of the ``fastrcnn`` console script."""
    app(prog_name="fastrcnn")


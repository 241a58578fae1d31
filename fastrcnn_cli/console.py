"""Where output goes: results on stdout, everything else (logs, progress, warnings, tables) on stderr.

Rich honours ``NO_COLOR`` and switches off colour and live progress when the stream is not a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: logs, progress bars, warnings and human-readable tables
err = Console(stderr=True, highlight=False)
#: results: JSON, CSV and anything a script may parse
out = Console(highlight=False, soft_wrap=True)

T = TypeVar("T")


def info(message: str) -> None:
    err.print(message)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, plain (no colour, no wrapping) so it can be piped."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def progress_enabled() -> bool:
    return err.is_terminal


def make_progress(*extra_columns: Any) -> Progress:
    """A Rich progress bar on stderr with count, rate-friendly ETA; silent when stderr is not a terminal."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
        console=err,
        disable=not progress_enabled(),
        transient=False,
    )


@contextmanager
def progress_task(description: str, total: int | None) -> Iterator[tuple[Progress, Any]]:
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        yield progress, task


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (no bar when stderr is not a terminal)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_task(description, total) as (progress, task):
        for item in items:
            yield item
            progress.advance(task)

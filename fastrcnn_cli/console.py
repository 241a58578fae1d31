"""Where output goes: results on stdout, everything else (logs, progress, warnings, tables) on stderr.

Rich honours ``NO_COLOR`` and switches off colour and live progress when the stream is not a terminal. When
stderr is not a terminal (a pipe, ``2> log``), what goes there is laid out for a file, not for 80 columns:
tables get :data:`PIPE_WIDTH` columns (or the terminal's, if wider; ``COLUMNS`` still wins when set), text lines
are never wrapped (a path stays whole), and progress bars become occasional plain lines (:class:`PlainProgress`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: columns for tables on stderr when it is not a terminal: class names, paths and numbers fit, nothing is cut
PIPE_WIDTH = 240
#: plain progress lines (stderr not a terminal): the first after this many seconds of a loop, then at most one
#: per :data:`PLAIN_PROGRESS_EVERY` seconds, and a last one when a loop that printed ends
PLAIN_PROGRESS_FIRST = 5.0
PLAIN_PROGRESS_EVERY = 30.0


class _LogConsole(Console):
    """A Console that lays its output out for a file when its stream is not a terminal (see the module doc)."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(max(size.width, PIPE_WIDTH), size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        if soft_wrap is None and not self.is_terminal:
            soft_wrap = True  # a log line stays one line, however long
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


#: logs, progress bars, warnings and human-readable tables
err = _LogConsole(stderr=True, highlight=False)
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


def make_progress(*extra_columns: Any) -> Progress | PlainProgress:
    """A Rich progress bar on stderr with count and ETA; when stderr is not a terminal, a :class:`PlainProgress`
    (the same methods) that prints an occasional plain line instead."""
    if not progress_enabled():
        return PlainProgress()
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
        transient=False,
    )


class PlainProgress:
    """Progress as plain lines on stderr, for a pipe or a log file: ``description: 120/400 (30 %), 62 s, eta
    145 s[, fields]``, at most one per :data:`PLAIN_PROGRESS_EVERY` seconds once a loop has run
    :data:`PLAIN_PROGRESS_FIRST` seconds, and a last line when a loop that printed ends. Loops shorter than that
    print nothing. It has the methods of :class:`rich.progress.Progress` that fastrcnn uses."""

    def __init__(self) -> None:
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task_id, task in self._tasks.items():
            if task["printed"] and task["last_done"] != task["completed"]:
                self._line(task_id)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        task_id = len(self._tasks)
        now = time.perf_counter()
        self._tasks[task_id] = {"description": description, "total": total, "completed": completed,
                                "start": completed, "fields": fields, "started": now, "last": now,
                                "printed": False, "last_done": None}
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if description is not None:
            task["description"] = description
        task["fields"].update(fields)
        now = time.perf_counter()
        wait = PLAIN_PROGRESS_EVERY if task["printed"] else PLAIN_PROGRESS_FIRST
        if now - task["last"] >= wait:
            self._line(task_id)

    def start(self) -> None:  # Progress' live display; nothing to resume here
        pass

    def stop(self) -> None:
        pass

    def _line(self, task_id: int) -> None:
        task = self._tasks[task_id]
        now = time.perf_counter()
        elapsed = now - task["started"]
        done, total = task["completed"], task["total"]
        text = f"{task['description']}: {done:g}"
        if total:
            text += f"/{total:g} ({100 * done / total:.0f} %)"
        text += f", {elapsed:.0f} s"
        rate = (done - task["start"]) / elapsed if elapsed > 0 else 0.0
        if total and rate > 0 and done < total:
            text += f", eta {(total - done) / rate:.0f} s"
        extra = ", ".join(str(v) for v in task["fields"].values() if str(v))
        err.print(text + (f", {extra}" if extra else ""), markup=False, highlight=False)
        task.update(last=now, printed=True, last_done=done)


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

"""Progress and messages out of the core: one small interface; what the user sees is decided in one place.

Core modules never print. They report through the functions of this module::

    from fastrcnn_cli import progress

    progress.info(f"computed {n} images in {seconds:.1f} s")   # a log line
    progress.warn(f"{k} images have no proposals")              # a warning
    with progress.task("proposals", total=len(todo), unit="img") as bar:
        for ...:
            bar.advance()                                       # or bar.update(completed=i, status="loss 0.41")
    for record in progress.track(records, "detecting"):
        ...

and the active :class:`Reporter` turns these events into output. The default, :class:`ConsoleReporter`, writes
on stderr (:data:`fastrcnn_cli.console.err`), results staying alone on stdout:

- **a terminal**: a live Rich bar per task: description, bar, count, percent, elapsed time, ETA, rate (with a
  ``unit``) and a status text. A task started while another runs (the evaluation inside training) is a second
  bar of the same display, and messages print above the bars.
- **not a terminal** (a pipe, ``2> log``): plain lines, ``description: 120/400 (30 %), 62 s, eta 145 s,
  1.94 img/s, status``, without any control character: the first once a task has run :data:`PLAIN_FIRST`
  seconds, then at most one per :data:`PLAIN_EVERY` seconds, and a last one when a task that printed ends.
  Tasks shorter than :data:`PLAIN_FIRST` print nothing.
- **NO_COLOR** (set to anything): no colour, on a terminal too (Rich's console honours it); the bar still moves.

:func:`silenced` mutes progress and info lines (warnings still show unless asked), for library use and
``--quiet``-like callers; :class:`Recorder` keeps every event (tests, or a program that shows progress its own
way, with :func:`reporting_to`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from fastrcnn_cli import console

#: plain progress lines (stderr not a terminal): the first after this many seconds of a task, then at most one
#: per :data:`PLAIN_EVERY` seconds, and a last one when a task that printed ends
PLAIN_FIRST = 5.0
PLAIN_EVERY = 30.0

T = TypeVar("T")


class Level(str, Enum):
    """How much a message matters."""

    INFO = "info"
    WARNING = "warning"


class Task:
    """One long loop's progress: ``completed`` of ``total`` (None: unknown), a ``status`` text, a rate ``unit``.

    Made by :func:`task`; a context manager that tells its reporter when it ends. Every change goes to the
    reporter at once; the reporter decides how often the user sees it.
    """

    def __init__(self, reporter: Reporter, description: str, total: float | None, completed: float = 0,
                 unit: str | None = None, status: str = "") -> None:
        self.reporter = reporter
        self.description = description
        self.total = total
        self.completed = completed
        self.unit = unit
        self.status = status
        self.started_at = time.perf_counter()
        self.first_completed = completed  #: where the task started (a resumed training run): the rate counts from it
        self.ended = False

    def advance(self, amount: float = 1, *, status: str | None = None) -> None:
        self.update(completed=self.completed + amount, status=status)

    def update(self, *, completed: float | None = None, total: float | None = None, status: str | None = None,
               description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if status is not None:
            self.status = status
        if description is not None:
            self.description = description
        self.reporter.task_changed(self)

    @property
    def elapsed(self) -> float:
        """Seconds since the task started."""
        return time.perf_counter() - self.started_at

    @property
    def rate(self) -> float | None:
        """Units per second since the start (None before the first unit)."""
        done, elapsed = self.completed - self.first_completed, self.elapsed
        return done / elapsed if done > 0 and elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None when unknown)."""
        rate = self.rate
        if rate is None or not self.total or self.completed >= self.total:
            return None
        return (self.total - self.completed) / rate

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.reporter.task_ended(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


class Reporter:
    """Where progress and messages go. This base class drops everything; subclasses show or keep them."""

    #: a live display is on screen (a caller that would print a line per step can leave that to the bar)
    live: bool = False

    def message(self, level: Level, text: str) -> None:
        pass

    def task_started(self, task: Task) -> None:
        pass

    def task_changed(self, task: Task) -> None:
        pass

    def task_ended(self, task: Task) -> None:
        pass


class _RateColumn(ProgressColumn):
    """``1.94 img/s`` for a task with a unit (since its start), nothing for one without."""

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit")
        if not unit:
            return Text("")
        elapsed = task.finished_time if task.finished else task.elapsed
        done = task.completed - task.fields.get("first", 0)
        rate = done / elapsed if done > 0 and elapsed else None
        return Text(f"-- {unit}/s" if rate is None else f"{rate:.2f} {unit}/s", style="progress.data.speed")


class ConsoleReporter(Reporter):
    """Progress and messages on a Rich console (default: stderr): live bars on a terminal, plain lines
    otherwise (see the module docstring)."""

    def __init__(self, target: Console | None = None) -> None:
        self.console = target if target is not None else console.err
        self._progress: Progress | None = None
        self._ids: dict[int, TaskID] = {}
        self._plain: dict[int, dict[str, Any]] = {}

    @property
    def live(self) -> bool:  # type: ignore[override]
        return self.console.is_terminal

    # -- messages ---------------------------------------------------------------------------------------------

    def message(self, level: Level, text: str) -> None:
        line = Text(text)
        if level is Level.WARNING:
            line = Text.assemble(("warning:", "yellow"), " ", line)
        self.console.print(line, highlight=False)

    # -- tasks ------------------------------------------------------------------------------------------------

    def task_started(self, task: Task) -> None:
        if not self.live:
            self._plain[id(task)] = {"last": None, "printed": False, "last_done": None}
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                _RateColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        self._ids[id(task)] = self._progress.add_task(
            task.description, total=task.total, completed=task.completed, status=task.status, unit=task.unit,
            first=task.first_completed,
        )

    def task_changed(self, task: Task) -> None:
        if self._progress is not None and id(task) in self._ids:
            self._progress.update(self._ids[id(task)], completed=task.completed, total=task.total,
                                  description=task.description, status=task.status)
            return
        state = self._plain.get(id(task))
        if state is None:
            return
        now = time.perf_counter()
        due = now - state["last"] >= PLAIN_EVERY if state["printed"] else task.elapsed >= PLAIN_FIRST
        if due:
            self._line(task, state, now)

    def task_ended(self, task: Task) -> None:
        task_id = self._ids.pop(id(task), None)
        if task_id is not None and self._progress is not None:
            if self._ids:  # others still run (an evaluation inside training): this bar leaves the display
                self._progress.remove_task(task_id)
            else:  # the last one: the display stops, its final state stays on screen
                self._progress.update(task_id, completed=task.completed, total=task.total, status=task.status)
                self._progress.stop()
                self._progress = None
            return
        state = self._plain.pop(id(task), None)
        if state is not None and state["printed"] and state["last_done"] != task.completed:
            self._line(task, state, time.perf_counter())

    def _line(self, task: Task, state: dict[str, Any], now: float) -> None:
        self.console.print(plain_line(task), markup=False, highlight=False)
        state.update(last=now, printed=True, last_done=task.completed)


def plain_line(task: Task) -> str:
    """``description: 120/400 (30 %), 62 s, eta 145 s, 1.94 img/s, status``: a task's state as plain text."""
    done, total = task.completed, task.total
    text = f"{task.description}: {done:g}"
    if total:
        text += f"/{total:g} ({100 * done / total:.0f} %)"
    text += f", {task.elapsed:.0f} s"
    eta, rate = task.eta, task.rate
    if eta is not None:
        text += f", eta {eta:.0f} s"
    if task.unit and rate is not None:
        text += f", {rate:.2f} {task.unit}/s"
    return text + (f", {task.status}" if task.status else "")


class Recorder(Reporter):
    """Keeps every event as a tuple: ``("info" | "warning", text)``, ``("start", description, total)``,
    ``("update", description, completed)``, ``("end", description, completed)``."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def message(self, level: Level, text: str) -> None:
        self.events.append((level.value, text))

    def task_started(self, task: Task) -> None:
        self.events.append(("start", task.description, task.total))

    def task_changed(self, task: Task) -> None:
        self.events.append(("update", task.description, task.completed))

    def task_ended(self, task: Task) -> None:
        self.events.append(("end", task.description, task.completed))

    def messages(self, level: Level | None = None) -> list[str]:
        """The texts of the messages (of one level)."""
        return [e[1] for e in self.events if e[0] in ({level.value} if level else {"info", "warning"})]


class _Quiet(Reporter):
    """Drops progress and info; passes warnings to ``inner`` unless those are muted too."""

    def __init__(self, inner: Reporter, warnings: bool) -> None:
        self.inner = inner
        self.warnings = warnings

    def message(self, level: Level, text: str) -> None:
        if level is Level.WARNING and self.warnings:
            self.inner.message(level, text)


_reporter: Reporter | None = None


def current() -> Reporter:
    """The active reporter (a :class:`ConsoleReporter` on stderr unless :func:`use` set another)."""
    global _reporter
    if _reporter is None:
        _reporter = ConsoleReporter()
    return _reporter


def use(reporter: Reporter) -> Reporter:
    """Make ``reporter`` the active one; returns the one it replaces."""
    global _reporter
    previous = current()
    _reporter = reporter
    return previous


@contextmanager
def reporting_to(reporter: Reporter) -> Iterator[Reporter]:
    """Send everything to ``reporter`` inside the block."""
    previous = use(reporter)
    try:
        yield reporter
    finally:
        use(previous)


@contextmanager
def silenced(*, warnings: bool = False) -> Iterator[None]:
    """No progress and no info lines inside the block; warnings still show unless ``warnings`` is True."""
    with reporting_to(_Quiet(current(), not warnings)):
        yield


def info(text: str) -> None:
    """A log line (plain text: brackets are not markup)."""
    current().message(Level.INFO, text)


def warn(text: str) -> None:
    """A warning: something the user should know, that does not stop the work."""
    current().message(Level.WARNING, text)


def live() -> bool:
    """Whether progress shows as a live display (a terminal), not as occasional lines."""
    return current().live


def task(description: str, total: float | None = None, *, completed: float = 0, unit: str | None = None,
         status: str = "", show: bool = True) -> Task:
    """Start reporting the progress of a loop; use as a context manager (it ends with the block). ``show``
    False: a task that reports to nobody (for a caller asked for no progress)."""
    reporter = current() if show else Reporter()
    started = Task(reporter, description, total, completed, unit, status)
    reporter.task_started(started)
    return started


def track(items: Iterable[T], description: str, total: int | None = None, *, unit: str | None = None) -> Iterator[T]:
    """Iterate over ``items`` reporting the progress (``total``: ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total, unit=unit) as bar:
        for item in items:
            yield item
            bar.advance()

"""Progress and messages from the core: a live bar on a terminal, plain lines in a pipe, no colour under NO_COLOR,
silence on request, every event for a program that shows them its own way."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from fastrcnn_cli import progress

#: an SGR sequence that sets a colour (30-37, 38;..., 90-97, or the backgrounds)
COLOUR = re.compile(r"\x1b\[[0-9;]*\b(3[0-8]|4[0-8]|9[0-7]|10[0-7])\b[0-9;]*m")


def console_on(terminal: bool, **kwargs: object) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120, **kwargs), buffer  # type: ignore[arg-type]


def test_a_terminal_gets_a_live_bar_with_rate_and_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    target, buffer = console_on(terminal=True)
    with progress.reporting_to(progress.ConsoleReporter(target)):
        assert progress.live()
        with progress.task("proposals", total=4, unit="img") as bar:
            for _ in range(4):
                bar.advance(status="almost")
        progress.warn("look [here]")  # brackets are text, not markup
    text = buffer.getvalue()
    assert "proposals" in text and "4/4" in text and "img/s" in text and "almost" in text
    assert "\x1b[" in text  # a live display: cursor movement and colour
    assert "warning:" in text and "look [here]" in text


def test_no_color_keeps_the_bar_and_drops_the_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    target, buffer = console_on(terminal=True)  # Rich reads NO_COLOR when the console is made
    with progress.reporting_to(progress.ConsoleReporter(target)):
        with progress.task("detecting", total=2) as bar:
            bar.advance()
            bar.advance()
        progress.warn("careful")
    text = buffer.getvalue()
    assert "detecting" in text and "2/2" in text and "warning: careful" in text
    assert not COLOUR.search(text), repr(text)


def test_a_pipe_gets_plain_lines_without_control_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_FIRST", 0.0)
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    target, buffer = console_on(terminal=False)
    with progress.reporting_to(progress.ConsoleReporter(target)):
        assert not progress.live()
        for _ in progress.track(range(3), "images", unit="img"):
            pass
        progress.info("done [1/1]")
        progress.warn("careful")
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("images: 1/3 (33 %), ") and "img/s" in lines[0]
    assert lines[2].startswith("images: 3/3 (100 %)")
    assert lines[-2:] == ["done [1/1]", "warning: careful"]
    assert not any("\x1b" in line or "\r" in line for line in lines)


def test_a_pipe_gets_a_line_per_interval_and_a_last_one() -> None:
    target, buffer = console_on(terminal=False)
    reporter = progress.ConsoleReporter(target)
    bar = progress.Task(reporter, "training", total=100)
    reporter.task_started(bar)
    bar.started_at -= progress.PLAIN_FIRST + 1  # the task has run long enough for a first line
    bar.update(completed=10)
    bar.update(completed=20)  # within PLAIN_EVERY of the first line: none
    bar.end()  # the last state, since a line was printed
    lines = buffer.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["training: 10/100 (10 %)", "training: 20/100 (20 %)"]


def test_a_task_inside_another_shares_the_display() -> None:
    target, buffer = console_on(terminal=True)
    with progress.reporting_to(progress.ConsoleReporter(target)):
        with progress.task("training", total=10) as outer:
            outer.update(completed=5)
            for _ in progress.track(range(2), "evaluating"):  # Rich allows one live display: no error
                pass
            outer.update(completed=10)
    assert "evaluating" in buffer.getvalue() and "10/10" in buffer.getvalue()


def test_silenced_drops_progress_and_info_but_not_warnings() -> None:
    recorder = progress.Recorder()
    with progress.reporting_to(recorder):
        with progress.silenced():
            progress.info("hidden")
            progress.warn("shown")
            for _ in progress.track(range(2), "hidden too"):
                pass
        with progress.silenced(warnings=True):
            progress.warn("hidden as well")
        progress.info("after")
    assert recorder.events == [("warning", "shown"), ("info", "after")]


def test_the_recorder_keeps_every_event_in_order() -> None:
    recorder = progress.Recorder()
    with progress.reporting_to(recorder):
        with progress.task("loop", total=2) as bar:
            bar.advance()
            bar.update(total=3, completed=3)
        progress.info("x")
    assert recorder.events == [("start", "loop", 2), ("update", "loop", 1), ("update", "loop", 3),
                               ("end", "loop", 3), ("info", "x")]
    assert recorder.messages() == ["x"] and recorder.messages(progress.Level.WARNING) == []


def test_a_task_that_is_not_shown_reports_to_nobody() -> None:
    recorder = progress.Recorder()
    with progress.reporting_to(recorder), progress.task("quiet", 3, show=False) as bar:
        bar.advance()
    assert recorder.events == [] and bar.completed == 1


def test_rate_and_eta_count_from_where_the_task_started() -> None:
    bar = progress.Task(progress.Reporter(), "resumed", total=100, completed=40)
    bar.started_at -= 10.0
    bar.update(completed=60)  # 20 done in 10 s
    assert bar.rate == pytest.approx(2.0, rel=0.01) and bar.eta == pytest.approx(20.0, rel=0.01)
    assert "eta 20 s" in progress.plain_line(bar)

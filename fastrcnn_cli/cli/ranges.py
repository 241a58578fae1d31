"""Allowed ranges of numeric options, checked where the command line reads them.

Every ``int`` or ``float`` option of every command gets its parser from here (``typer.Option(parser=...)``):
the text is parsed, NaN and infinities are refused, and a value outside the range is a usage error (exit
code 2) whose message names the flag (Typer adds "Invalid value for '--flag'") and the allowed range::

    Invalid value for '--iterations': 0 is not allowed (an integer, 1 <= x <= 1000000000)

0 is a value like any other: options where 0 means something (``--warmup 0``: no warm-up) allow it, the
others refuse it; nothing silently replaces it with a default. Integers have an upper bound too, so that a
huge value is refused here rather than overflowing deep inside torch or NumPy. ``tests/test_option_validation.py``
walks every command's options and checks that each numeric one has a range and that the range is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

import typer

from fastrcnn_cli.fields import MAX_INT, Interval


@dataclass(frozen=True)
class Range(Interval):
    """A numeric option's type and allowed interval (:class:`fastrcnn_cli.fields.Interval`, which settings fields
    declare too); call it on the option's text to parse and check it."""

    def __call__(self, text: object) -> int | float:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            value = text
        else:
            raw = str(text).strip()
            try:
                value = int(raw) if self.kind is int else float(raw)
            except ValueError:
                raise typer.BadParameter(f"{raw!r} is not {self.describe()}") from None
        if not self.contains(value):
            raise typer.BadParameter(f"{text} is not allowed ({self.describe()})")
        return self.kind(value)


def count(lo: int = 1, hi: int = MAX_INT) -> Range:
    """An integer in [lo, hi] (default: a positive count)."""
    return Range(int, lo, hi)


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
    allow_inf: bool = False,
) -> Range:
    """A finite float in the interval (closed unless ``*_open``); with ``allow_inf``, also +inf."""
    return Range(float, lo, hi, lo_open, hi_open, allow_inf)


#: shared ranges
FRACTION = number(0.0, 1.0)  #: [0, 1]: IoU and score thresholds
POSITIVE_FRACTION = number(0.0, 1.0, lo_open=True)  #: (0, 1]
PIXELS = count(32, 100_000)  #: image sides (scales, max sizes)
THREADS = count(1, 1024)
WORKERS = count(1, 1024)
SEED = count(0, 2**32 - 1)

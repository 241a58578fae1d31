"""Settings fields that describe themselves: default, help text, allowed range and command-line names, once.

A settings dataclass declares each field with :func:`setting`::

    iterations: int | None = setting(None, "Total SGD iterations.", panel="Solver", interval=count(1))

and that one line is everything about the field: the core validates it with :func:`range_problems` (a problem
names the *field*, ``iterations``), and the command line (:mod:`fastrcnn_cli.cli.fields`) generates its option
from it, named after the field (``--iterations``), with the help text, the panel and a parser that enforces the
same range. A new setting is one edit; nothing is copied field by field.

A field that is renamed keeps the old name in ``old_names``, so files written before (a run's ``args.json``)
still read (:func:`current_names`).

This module imports only the standard library: settings modules import it, and the command line reads the
descriptions before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any

#: the default upper bound of integer settings: far above any sensible count, far below any overflow
MAX_INT = 1_000_000_000
#: the key of a field's :class:`Setting` in ``dataclasses.field(metadata=...)``
METADATA_KEY = "fastrcnn.setting"


@dataclass(frozen=True)
class Interval:
    """The type and allowed interval of a numeric setting (closed unless ``*_open``; NaN never inside)."""

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    allow_inf: bool = False  #: +inf is a meaningful value ("no limit"), e.g. a clipping norm

    def describe(self) -> str:
        """``an integer, 1 <= x <= 1000000000``: the type and the interval in words."""
        what = "an integer" if self.kind is int else "a number"
        lo = "" if self.lo is None else f"{_num(self.lo)} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {_num(self.hi)}"
        text = f"{what}, {lo}x{hi}" if (lo or hi) else what
        return text + " or inf" if self.allow_inf else text

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return self.allow_inf and value == math.inf
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def admits(self, value: object) -> bool:
        """Whether ``value`` has the right type (an integer for ``int``, any real number for ``float``; never a
        bool) and lies in the interval."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        return self.contains(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def count(lo: int = 1, hi: int = MAX_INT) -> Interval:
    """An integer in [lo, hi] (default: a positive count)."""
    return Interval(int, lo, hi)


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
    allow_inf: bool = False,
) -> Interval:
    """A finite float in the interval (closed unless ``*_open``); with ``allow_inf``, also +inf."""
    return Interval(float, lo, hi, lo_open, hi_open, allow_inf)


FRACTION = number(0.0, 1.0)  #: [0, 1]: IoU thresholds
POSITIVE_FRACTION = number(0.0, 1.0, lo_open=True)  #: (0, 1]
PIXELS = count(32, 100_000)  #: image sides (scales, maximum sizes)
SEED = count(0, 2**32 - 1)


@dataclass(frozen=True)
class Setting:
    """What a settings field says about itself (kept in its ``metadata``; see :func:`setting`)."""

    help: str
    panel: str | None = None  #: the group of options it belongs to in ``--help``
    interval: Interval | None = None  #: numbers: the type and range (for tuples: of each element)
    choices: tuple[str, ...] = ()  #: strings: the values allowed (empty: any)
    aliases: tuple[str, ...] = ()  #: more command-line names (``-s``); the first is always ``--field-name``
    negatable: bool = True  #: booleans: ``--flag/--no-flag`` (False: ``--flag`` only)
    path: bool = False  #: a file or folder: a path on the command line, a string in the settings
    envvar: str | None = None  #: an environment variable the command line reads it from
    old_names: tuple[str, ...] = ()  #: names it had in files written before a rename


def setting(
    default: Any,
    help: str,
    *,
    panel: str | None = None,
    interval: Interval | None = None,
    choices: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    negatable: bool = True,
    path: bool = False,
    envvar: str | None = None,
    old_names: tuple[str, ...] = (),
) -> Any:
    """A dataclass field with its default and its :class:`Setting` description."""
    described = Setting(help, panel, interval, tuple(choices), tuple(aliases), negatable, path, envvar, tuple(old_names))
    return dataclasses.field(default=default, metadata={METADATA_KEY: described})


def described(field: dataclasses.Field) -> Setting | None:
    """The :class:`Setting` of a field declared with :func:`setting` (None otherwise)."""
    return field.metadata.get(METADATA_KEY)


def described_fields(cls: type) -> list[tuple[dataclasses.Field, Setting, Any]]:
    """(field, setting, type hint) of every described field of a settings class, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, s, hints[f.name]) for f in dataclasses.fields(cls) if (s := described(f)) is not None]


def current_names(cls: type) -> dict[str, str]:
    """Old field name -> current name, for every rename recorded in ``old_names``."""
    return {old: f.name for f, s, _ in described_fields(cls) for old in s.old_names}


def recorded_values(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The values of ``cls``'s fields in a dict as a file records them (written by this version or an earlier
    one): renamed fields under their current names (:func:`current_names`), lists as tuples, other keys left out."""
    renamed = current_names(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        key = renamed.get(key, key)
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
    return values


def range_problems(settings: Any) -> list[tuple[str, str]]:
    """(field, message) for every described field whose value is outside its interval or choices. ``None``
    is always allowed here (a value still to come, e.g. from a recipe); NaN is outside every interval."""
    problems = []
    for f, s, _ in described_fields(type(settings)):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if s.interval is not None:
            values = value if isinstance(value, tuple) else (value,)
            if not values and isinstance(value, tuple):
                problems.append((f.name, "must have at least one value"))
            elif not all(s.interval.admits(v) for v in values):
                problems.append((f.name, f"must be {s.interval.describe()} (got {_shown(value)})"))
        if s.choices and value not in s.choices:
            problems.append((f.name, f"must be one of {', '.join(s.choices)} (got {value!r})"))
    return problems


def _shown(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else repr(value)

"""Command-line options generated from a settings class whose fields describe themselves (:mod:`fastrcnn_cli.fields`).

:func:`settings_options` gives a command one option per described field, so a setting is declared once, in the
core, and the command line follows::

    @command("train")
    @settings_options(TrainSettings, exclude={"data"}, shared={"device": DeviceOption})
    def train(data: ..., *, options: dict[str, Any]) -> None:
        run_training(TrainSettings(data=str(data), **options))

Each option is named after its field (``warmup`` -> ``--warmup``; booleans ``--flip/--no-flip``), with the
field's default, help text and panel, extra names (``-s``) and environment variable, and a parser
(:class:`~fastrcnn_cli.cli.ranges.Range`) that enforces the field's interval, so a value out of range is a usage
error naming the flag; a tuple field is a repeatable option. ``shared`` puts an option several commands
share (:mod:`fastrcnn_cli.cli.options`, :mod:`fastrcnn_cli.cli.app`) in a field's place, for one flag name
and help text across commands. The command receives the values as ``options`` (field name -> value), converted
to the field's type: enum choices by value, paths as strings, repeated values as tuples.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fastrcnn_cli.cli.ranges import Range
from fastrcnn_cli.fields import Interval, Setting, described_fields


def flag(name: str) -> str:
    """The command-line flag of a field: ``--field-name``."""
    return "--" + name.replace("_", "-")


def field_help(cls: type, name: str) -> str:
    """The help text of one described field (for an argument or option written by hand)."""
    for f, s, _ in described_fields(cls):
        if f.name == name:
            return s.help
    raise KeyError(name)


def parser_for(interval: Interval) -> Range:
    """The command line's parser that enforces a field's interval."""
    return Range(interval.kind, interval.lo, interval.hi, interval.lo_open, interval.hi_open, interval.allow_inf)


def option_annotation(name: str, setting: Setting, hint: Any) -> Any:
    """``Annotated[type, typer.Option(...)]`` for a field of type ``hint`` described by ``setting``."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    repeated = typing.get_origin(base) is tuple
    if repeated:
        base = typing.get_args(base)[0]
    if setting.path:
        base = Path
    decls = [f"{flag(name)}/--no-{name.replace('_', '-')}" if base is bool and setting.negatable else flag(name)]
    decls += setting.aliases
    info = typer.Option(
        *decls,
        help=setting.help,
        rich_help_panel=setting.panel,
        parser=parser_for(setting.interval) if setting.interval is not None else None,
        envvar=setting.envvar,
    )
    kind: Any = list[base] if repeated else base
    return Annotated[Optional[kind] if optional or repeated else kind, info]  # noqa: UP045 (built at run time)


def to_field_value(value: Any) -> Any:
    """A parsed option value as the settings field holds it."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return tuple(to_field_value(v) for v in value) or None
    return value


def settings_options(
    cls: type,
    *,
    exclude: Collection[str] = (),
    shared: Mapping[str, Any] | None = None,
    into: str = "options",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command with one option per described field of ``cls`` (but ``exclude``); the command gets
    their values as the keyword argument ``into``. ``shared``: field name -> a ready-made ``Annotated`` option
    to use for it (its default is still the field's)."""
    shared = dict(shared or {})
    generated: list[inspect.Parameter] = []
    for f, setting, hint in described_fields(cls):
        if f.name in exclude:
            continue
        annotation = shared.pop(f.name, None) or option_annotation(f.name, setting, hint)
        default = None if f.default is dataclasses.MISSING else f.default
        if isinstance(default, tuple):
            default = list(default)
        generated.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    if shared:
        raise ValueError(f"shared options for fields {cls.__name__} does not describe: {', '.join(shared)}")
    names = [p.name for p in generated]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)
        # after the generated options, so that the fields' panels come first in --help, in the fields' order
        own = [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(func).parameters.values() if p.name != into]
        clash = set(names) & {p.name for p in own}
        if clash:
            raise ValueError(f"{func.__name__} has parameters of the same names as fields: {', '.join(sorted(clash))}")

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: to_field_value(kwargs.pop(name)) for name in names if name in kwargs}
            return func(*args, **kwargs, **{into: values})

        parameters = generated + own
        command.__signature__ = inspect.Signature(parameters, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate

"""Where output goes: results on stdout, everything else (logs, progress, warnings, tables) on stderr.

Rich honours ``NO_COLOR`` and switches off colour and live progress when the stream is not a terminal. When
stderr is not a terminal (a pipe, ``2> log``), what goes there is laid out for a file, not for 80 columns:
tables get :data:`PIPE_WIDTH` columns (or the terminal's, if wider; ``COLUMNS`` still wins when set) and text
lines are never wrapped (a path stays whole). Progress, and the messages of the core, go through
:mod:`fastrcnn_cli.progress`, which writes here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions

#: columns for tables on stderr when it is not a terminal: class names, paths and numbers fit, nothing is cut
PIPE_WIDTH = 240


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


def info(message: str) -> None:
    """A log line, through the active reporter (:func:`fastrcnn_cli.progress.info`)."""
    from fastrcnn_cli import progress

    progress.info(message)


def warn(message: str) -> None:
    """A warning, through the active reporter (:func:`fastrcnn_cli.progress.warn`)."""
    from fastrcnn_cli import progress

    progress.warn(message)


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

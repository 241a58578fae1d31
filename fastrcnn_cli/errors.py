"""Errors a user can cause, and the exit codes the command line maps them to.

The core raises these; the command line (``fastrcnn_cli.cli``) prints their message, without a traceback,
and exits with their code. Anything else that escapes is a bug and exits with code 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the validation module imports NumPy; this one stays light for the command line's start-up
    from fastrcnn_cli.data.validate import Problem


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  #: bad input file, missing weights, a bug
    USAGE = 2  #: bad command-line usage (Click's own code)
    DATASET_INVALID = 3  #: data set validation failed (``--strict``, or nothing usable left)
    DIVERGED = 4  #: training stopped on a NaN or infinite loss
    INTERRUPTED = 130  #: Ctrl-C (training saves a checkpoint first)


class FastRCNNError(Exception):
    """An error with a message meant for the user. ``path`` names the file at fault, when there is one."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(FastRCNNError):
    """A file the user gave cannot be used (missing, unreadable, wrong format)."""


class CheckpointError(InputError):
    """A weights file is not a fastrcnn checkpoint, or does not fit the task."""


class OutputError(InputError):
    """An output cannot be written where asked: it would overwrite an input, the folder is read-only or
    missing, the disk is full. ``path`` names the output; nothing is left half-written."""


class SettingsError(FastRCNNError):
    """Settings of the core with values outside their allowed ranges (a usage error).

    Each problem is (field, message) with the core's name of the field (``score_threshold``, ``iterations``);
    the command line renders them with its flags instead (:meth:`render`), so the user reads the option typed.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, field: str, message: str, *more: tuple[str, str]) -> None:
        self.problems: list[tuple[str, str]] = [(field, message), *more]
        super().__init__(self.render(str))

    def render(self, name: Callable[[str], str]) -> str:
        return "; ".join(f"{name(f)}: {m}" for f, m in self.problems)


class MissingInputError(SettingsError):
    """An input file that was not given and whose default is missing (the shipped model, the example image):
    exit code 1, named by field (``weights``, ``image``) like every :class:`SettingsError`."""

    exit_code = ExitCode.FAILURE


class DatasetError(FastRCNNError):
    """A data set failed validation; ``problems`` lists every problem found."""

    exit_code = ExitCode.DATASET_INVALID

    def __init__(self, message: str, problems: Sequence[Problem] | None = None, path: object | None = None) -> None:
        super().__init__(message, path)
        self.problems: list[Problem] = list(problems or [])


class DivergedError(FastRCNNError):
    """Training produced a NaN or infinite loss."""

    exit_code = ExitCode.DIVERGED


class DeviceError(FastRCNNError):
    """The requested device does not exist here."""


class BuildError(FastRCNNError):
    """A native extension could not be compiled."""

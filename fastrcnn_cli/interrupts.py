"""Ctrl-C and SIGTERM deferred to a safe point, so that what is saved is a consistent state.

A training iteration changes many things in turn: the data position, three random generators, the weights,
the optimiser's momentum. An interrupt that lands in the middle (Python raises ``KeyboardInterrupt`` wherever
the main thread is) leaves a mixture, and a checkpoint of that mixture does not resume exactly. Inside
:class:`DeferredStop`, SIGINT and SIGTERM (what job schedulers send before killing) only record that a stop
was asked for; the loop asks :meth:`DeferredStop.requested` at the end of every iteration and stops there.
A second Ctrl-C stops at once (``KeyboardInterrupt``), for a user who cannot wait for the iteration to end.

In a data-parallel run every process must stop after the same iteration (otherwise the others wait forever
in the next gradient all-reduce), so the flag is all-reduced (max) across processes at each check.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from fastrcnn_cli.errors import ExitCode, FastRCNNError

_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class Interrupted(FastRCNNError):
    """Work stopped by Ctrl-C or SIGTERM (exit code 130); the message says what was saved. ``resumable``: the
    run folder that can be resumed from there (the command line says how)."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str, resumable: object | None = None) -> None:
        super().__init__(message)
        self.resumable = resumable


class DeferredStop:
    """A context in which SIGINT / SIGTERM set :attr:`signal` instead of interrupting (main thread only;
    elsewhere signals cannot be handled and nothing changes)."""

    def __init__(self, what: str = "this iteration") -> None:
        self.signal: int | None = None
        self.what = what
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredStop:
        if threading.current_thread() is threading.main_thread():
            for sig in _NAMES:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                    pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT:  # the second Ctrl-C: at once
                raise KeyboardInterrupt
            return
        self.signal = signum
        # os.write, not the console: a signal handler may run while the console holds its lock
        message = f"\n{_NAMES.get(signum, signum)}: stopping at the end of {self.what} to save a consistent state"
        message += " (Ctrl-C again to stop at once, without saving)\n" if signum == signal.SIGINT else "\n"
        try:
            os.write(2, message.encode())
        except OSError:
            pass

    @property
    def name(self) -> str:
        return _NAMES.get(self.signal, str(self.signal)) if self.signal is not None else ""

    def requested(self, distributed: bool = False, device: Any = None) -> bool:
        """Whether to stop now; in a distributed run, whether any process was asked to."""
        asked = self.signal is not None
        if distributed:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([int(asked)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            asked = bool(flag.item())
            if asked and self.signal is None:
                self.signal = signal.SIGTERM  # another process was asked: stop with it
        return asked

"""Worker processes that die with their parent, even when the parent is killed with ``kill -9``.

A parent killed by SIGKILL runs no clean-up, so its pool workers would be left blocked on a pipe forever.
On Linux the kernel can send a signal to a process when its parent dies (``prctl(PR_SET_PDEATHSIG)``): each
worker asks for SIGKILL. The request is made after the worker started, so a parent that died in between is
caught by comparing ``getppid()`` with the pid the parent passed; on other systems (and as a second line on
Linux) a daemon thread polls ``getppid()`` once a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0


def _set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(POLL_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """Call in a child process: end it as soon as the process ``parent_pid`` (its parent) is gone."""
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request above was made
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()

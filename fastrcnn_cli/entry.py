"""The ``fastrcnn`` console script: ``--version`` is answered before anything heavy is imported (not even the
commands), everything else goes to the Typer application (:func:`fastrcnn_cli.cli.main`)."""

from __future__ import annotations

import os
import sys
import time

#: ``time.perf_counter()`` at the moment the process started (None when not run as the console script, e.g.
#: under a test runner), so that commands can report the interpreter's and the command line's start-up
process_started: float | None = None


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``, 10 ms resolution), or None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    global process_started
    age = process_age()
    if age is not None:
        process_started = time.perf_counter() - age
    if sys.argv[1:] in (["--version"], ["-V"]):
        from fastrcnn_cli.versions import version_text

        sys.stdout.write(version_text() + "\n")
        return
    from fastrcnn_cli.cli import main as cli_main

    cli_main()

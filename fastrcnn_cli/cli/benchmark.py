"""``fastrcnn benchmark``."""

from __future__ import annotations

from fastrcnn_cli.cli.app import command, examples, not_yet


@command("benchmark", epilog=examples('fastrcnn benchmark'))
def benchmark() -> None:
    """Measure where the time of a detection goes. (Not implemented in this version yet.)"""
    not_yet("benchmark")

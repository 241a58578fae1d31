"""``fastrcnn evaluate``."""

from __future__ import annotations

from fastrcnn_cli.cli.app import command, examples, not_yet


@command("evaluate", epilog=examples('fastrcnn evaluate VOC2007/ --split test'))
def evaluate() -> None:
    """Evaluate a detector on a data set split with the PASCAL VOC protocol. (Not implemented in this version yet.)"""
    not_yet("evaluate")

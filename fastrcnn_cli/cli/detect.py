"""``fastrcnn detect``."""

from __future__ import annotations

from fastrcnn_cli.cli.app import command, examples, not_yet


@command("detect", epilog=examples('fastrcnn detect img.jpg --out vis.png', 'fastrcnn detect photos/ --out out/ --save-json dets.json'))
def detect() -> None:
    """Detect objects in images. (Not implemented in this version yet.)"""
    not_yet("detect")

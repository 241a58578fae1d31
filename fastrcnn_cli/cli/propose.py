"""``fastrcnn propose``."""

from __future__ import annotations

from fastrcnn_cli.cli.app import command, examples, not_yet


@command("propose", epilog=examples('fastrcnn propose img.jpg --out props.png', 'fastrcnn propose VOC2007/ --split trainval'))
def propose() -> None:
    """Compute Selective Search proposals for an image or a data set split. (Not implemented in this version yet.)"""
    not_yet("propose")

"""``fastrcnn train``."""

from __future__ import annotations

from fastrcnn_cli.cli.app import command, examples, not_yet


@command("train", epilog=examples('fastrcnn train VOC2007/', 'fastrcnn train my_data/ --backbone efficientnet-lite0'))
def train() -> None:
    """Train a Fast R-CNN detector on a VOC-format data set. (Not implemented in this version yet.)"""
    not_yet("train")

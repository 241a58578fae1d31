"""``fastrcnn compress-svd``."""

from __future__ import annotations

from fastrcnn_cli.cli.app import command, examples, not_yet


@command("compress-svd", epilog=examples('fastrcnn compress-svd --rank 1024'))
def compress_svd() -> None:
    """Compress the fully connected head with truncated SVD. (Not implemented in this version yet.)"""
    not_yet("compress-svd")

"""Options several commands share, each written once: one flag name per idea across the command line.

The proposal settings are the same five on every command that makes or uses proposals (``propose``,
``train``, ``evaluate``, ``detect``, ``benchmark``), so a proposal cache made with any of them is usable
downstream. Their defaults are ``None``: "the base settings" -- the checkpoint's recorded settings for commands
that load a model, :class:`~fastrcnn_cli.proposals.ProposalSettings`'s defaults otherwise --
and :func:`proposal_settings` lays what the user gave over that base.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.proposals import ProposalSettings

PROPOSALS_PANEL = "Proposals"


class Mode(str, Enum):
    fast = "fast"
    quality = "quality"


class Proposer(str, Enum):
    opencv = "opencv"
    native = "native"


PROPOSER_HELP = (
    "Whose Selective Search: opencv (OpenCV's, the reference) or native (ours: the same algorithm in the C++ "
    "extension, several times faster, uses every core on one image)."
)
_BASE = " Default: the model's recorded setting, else {default}."

ProposalModeOption = Annotated[
    Mode | None,
    typer.Option(
        "--proposal-mode", "--mode", show_default=False, rich_help_panel=PROPOSALS_PANEL,
        help="Selective Search mode: fast (the paper's) or quality (about 3x slower, more boxes)."
        + _BASE.format(default="fast"),
    ),
]
ProposalMaxSideOption = Annotated[
    int | None,
    typer.Option(
        "--proposal-max-side", "--max-side", parser=ranges.count(16, 100_000), show_default=False,
        rich_help_panel=PROPOSALS_PANEL,
        help="Search a copy whose longer side is at most this; boxes are mapped back to original pixels."
        + _BASE.format(default=500),
    ),
]
ProposalTopOption = Annotated[
    int | None,
    typer.Option(
        "--proposal-top", "--top", parser=ranges.count(1, 100_000), show_default=False, rich_help_panel=PROPOSALS_PANEL,
        help="Keep at most this many boxes per image, in Selective Search's order." + _BASE.format(default=2000),
    ),
]
ProposalMinSizeOption = Annotated[
    int | None,
    typer.Option(
        "--proposal-min-size", "--min-size", parser=ranges.count(0, 100_000), show_default=False,
        rich_help_panel=PROPOSALS_PANEL,
        help="Drop boxes narrower or shorter than this (original pixels; never more than the image)."
        + _BASE.format(default=20),
    ),
]
ProposerOption = Annotated[
    Proposer | None,
    typer.Option("--proposer", show_default=False, rich_help_panel=PROPOSALS_PANEL,
                 help=PROPOSER_HELP + _BASE.format(default="opencv")),
]
ProposalCacheOption = Annotated[
    Path | None,
    typer.Option(
        "--proposal-cache", "--cache", show_default=False, rich_help_panel=PROPOSALS_PANEL,
        help="The proposal cache folder (default: per data set, under $FASTRCNN_CACHE_DIR or "
        "~/.cache/fastrcnn/proposals/).",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers", "-j", parser=ranges.WORKERS, envvar="FASTRCNN_WORKERS", show_default=False,
        help="Worker processes preparing data (proposals, images) (default: all cores).",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", parser=ranges.THREADS, show_default=False, help="CPU threads for torch (default: all cores)."),
]


def split_option(help: str) -> object:
    """``-s/--split`` with a command's own help text (every command names the split the same way)."""
    return typer.Option("--split", "-s", help=help)


def proposal_settings(
    base: ProposalSettings,
    mode: Mode | str | None = None,
    max_side: int | None = None,
    top: int | None = None,
    min_size: int | None = None,
    proposer: Proposer | str | None = None,
) -> ProposalSettings:
    """``base`` with the settings the user gave (not ``None``) laid over it."""
    given = {
        "mode": mode.value if isinstance(mode, Enum) else mode,
        "max_side": max_side,
        "top": top,
        "min_size": min_size,
        "proposer": proposer.value if isinstance(proposer, Enum) else proposer,
    }
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})

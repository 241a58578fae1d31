"""Options several commands share, each written once: one flag name per idea across the command line.

The proposal settings are the same five on every command that makes or uses proposals (``propose``,
``train``, ``evaluate``, ``detect``, ``benchmark``), so a proposal cache made with any of them is usable
downstream. Their defaults are ``None``: "the base settings" -- the checkpoint's recorded settings for commands
that load a model, :class:`~fastrcnn_cli.proposals.ProposalSettings`'s defaults otherwise --
and :func:`proposal_settings` lays what the user gave over that base. ``--data-format``
(:data:`DataFormatOption`, :func:`data_format`) is the data set's format on every command that reads one.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.proposal_settings import ProposalSettings  # light: no NumPy at start-up

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


class DataFormat(str, Enum):
    auto = "auto"
    voc = "voc"
    coco = "coco"
    yolo = "yolo"


DataFormatOption = Annotated[
    DataFormat,
    typer.Option(
        "--data-format",
        help="The data set's format: auto (detected from the folder: VOC, else COCO, else YOLO), voc, coco or yolo.",
    ),
]


def data_format(value: DataFormat | str | None) -> str | None:
    """``--data-format`` as the data layer takes it (:func:`fastrcnn_cli.data.formats.load_dataset`'s ``format``):
    None for auto (detected), else the format's name."""
    text = value.value if isinstance(value, Enum) else value
    return None if text in (None, DataFormat.auto.value) else str(text)


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

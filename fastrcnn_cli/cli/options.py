"""Options several commands share, each written once: one flag name per idea across the command line.

The proposal settings are the same five on every command that makes or uses proposals (``propose``,
``train``, ``evaluate``, ``detect``, ``benchmark``), so a proposal cache made with any of them is usable
downstream. Their defaults are ``None``: "the base settings" -- the checkpoint's recorded settings for commands
that load a model, :class:`~fastrcnn_cli.proposals.ProposalSettings`'s defaults otherwise --
and :func:`proposal_settings` lays what the user gave over that base. A command gets all six at once: from its
settings class (``settings_options(..., shared=PROPOSAL_OPTIONS)``), or with the :func:`proposal_options`
decorator, which hands them over as one :class:`ProposalChoices`. ``--data-format`` (:data:`DataFormatOption`,
:func:`data_format`) is the data set's format on every command that reads one; ``--scale`` and ``--max-size``
(:data:`ScaleOption`, :data:`MaxSizeOption`, :data:`NmsOption`) the test scale and NMS IoU on every command that
runs a model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.detect_settings import DEFAULT_NMS
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


def _proposal_count(flag: str, alias: str, lo: int, help: str) -> Any:
    """An integer proposal setting: ``--proposal-<name>`` and its short alias, ``lo`` to 100000, None by default."""
    return Annotated[
        int | None,
        typer.Option(flag, alias, parser=ranges.count(lo, 100_000), show_default=False, rich_help_panel=PROPOSALS_PANEL,
                     help=help),
    ]


ProposalMaxSideOption = _proposal_count(
    "--proposal-max-side", "--max-side", 16,
    "Search a copy whose longer side is at most this; boxes are mapped back to original pixels."
    + _BASE.format(default=500),
)
ProposalTopOption = _proposal_count(
    "--proposal-top", "--top", 1, "Keep at most this many boxes per image, in Selective Search's order."
    + _BASE.format(default=2000),
)
ProposalMinSizeOption = _proposal_count(
    "--proposal-min-size", "--min-size", 0,
    "Drop boxes narrower or shorter than this (original pixels; never more than the image)."
    + _BASE.format(default=20),
)
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

#: the six proposal options, by the parameter (and settings field) name every command gives them: the ``shared``
#: options of :func:`fastrcnn_cli.cli.fields.settings_options`, or :func:`proposal_options`
PROPOSAL_OPTIONS: dict[str, Any] = {
    "proposal_mode": ProposalModeOption,
    "proposal_max_side": ProposalMaxSideOption,
    "proposal_top": ProposalTopOption,
    "proposal_min_size": ProposalMinSizeOption,
    "proposer": ProposerOption,
    "proposal_cache": ProposalCacheOption,
}
#: the flag of each :class:`~fastrcnn_cli.proposal_settings.ProposalSettings` field (``command(flags=...)``), so
#: that its errors name the flag typed
PROPOSAL_FLAGS = {"mode": "--proposal-mode", "max_side": "--proposal-max-side", "top": "--proposal-top",
                  "min_size": "--proposal-min-size", "proposer": "--proposer", "proposal_cache": "--proposal-cache"}


@dataclass(frozen=True)
class ProposalChoices:
    """The proposal options a command was given (None: the base settings), as :func:`proposal_options` hands
    them over."""

    mode: str | None = None
    max_side: int | None = None
    top: int | None = None
    min_size: int | None = None
    proposer: str | None = None
    cache: Path | None = None  #: the proposal cache folder

    @property
    def overrides(self) -> dict[str, Any]:
        """The five Selective Search settings, by :class:`~fastrcnn_cli.pipeline.ProposalOverrides`' names."""
        return {"mode": self.mode, "max_side": self.max_side, "top": self.top, "min_size": self.min_size,
                "proposer": self.proposer}


def proposal_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the six proposal options (:data:`PROPOSAL_OPTIONS`, after its own parameters); it receives
    their values as its keyword argument ``proposals``, a :class:`ProposalChoices`."""
    hints = typing.get_type_hints(func, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(func).parameters.values() if p.name != "proposals"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
             for name, option in PROPOSAL_OPTIONS.items()]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name, None) for name in PROPOSAL_OPTIONS}
        choices = ProposalChoices(
            mode=_plain(given["proposal_mode"]), max_side=given["proposal_max_side"], top=given["proposal_top"],
            min_size=given["proposal_min_size"], proposer=_plain(given["proposer"]), cache=given["proposal_cache"],
        )
        return func(*args, **kwargs, proposals=choices)

    parameters = own + added
    signature = inspect.Signature(parameters, return_annotation=hints.get("return"))
    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def _plain(value: Enum | str | None) -> str | None:
    return value.value if isinstance(value, Enum) else value


#: the test scale and the longer-side cap of the commands that run a model (``detect``, ``evaluate``)
MODEL_PANEL = "Model"
ScaleOption = Annotated[
    list[int] | None,
    typer.Option(
        "--scale", parser=ranges.PIXELS, show_default=False, rich_help_panel=MODEL_PANEL,
        help="Test scale: the shorter side in pixels; repeat for multi-scale testing (default: the checkpoint's "
        "training scale).",
    ),
]
MaxSizeOption = Annotated[
    int | None,
    typer.Option("--max-size", parser=ranges.PIXELS, show_default=False, rich_help_panel=MODEL_PANEL,
                 help="Longer side cap in pixels (default: the checkpoint's)."),
]
NmsOption = Annotated[
    float | None,
    typer.Option("--nms", parser=ranges.POSITIVE_FRACTION, show_default=False, rich_help_panel=MODEL_PANEL,
                 help=f"Per-class NMS IoU threshold, 1 keeps all but exact duplicates (default: the model's, which "
                 f"its training recipe chose on validation data; {DEFAULT_NMS}, the paper's, for models that record "
                 "none)."),
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
    given = {"mode": _plain(mode), "max_side": max_side, "top": top, "min_size": min_size, "proposer": _plain(proposer)}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})

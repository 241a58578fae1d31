"""How proposals are made: :class:`ProposalSettings`, recorded in every proposal cache and checkpoint.

A module of its own, outside :mod:`fastrcnn_cli.proposals`, because the command line needs the settings (their
defaults, in every proposal command's help) before anything heavy is imported: this module imports only the
standard library and :mod:`fastrcnn_cli.errors`, while the proposals package brings NumPy (and, when used,
OpenCV). The steps these settings control are described in :mod:`fastrcnn_cli.proposals.selective_search`.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastrcnn_cli.errors import InputError, SettingsError

MODES = ("fast", "quality")
PROPOSERS = ("opencv", "native")


@dataclass(frozen=True)
class ProposalSettings:
    """How proposals are made. Recorded in every proposal cache (and checked on reuse) and in checkpoints.

    ``min_size`` defaults to 20 pixels, the ``minBoxWidth`` of the original R-CNN / Fast R-CNN Selective
    Search scripts (``selective_search_boxes.m``: boxes narrower or shorter than 20 pixels are dropped).
    A box of under 20 pixels covers about one cell of a stride-16 feature map at the original's 600-pixel
    scale, so its RoI-pooled features carry little; dropping them also leaves more of the ``top`` budget
    for useful boxes. On the raccoon data set it costs no recall (see the issue note); the cap of
    step 4 (never larger than the image) keeps tiny images usable.

    Values outside their ranges raise :class:`~fastrcnn_cli.errors.SettingsError` naming the field.
    """

    mode: str = "fast"  #: "fast" | "quality" (OpenCV's switchToSelectiveSearchFast / ...Quality)
    max_side: int = 500  #: Selective Search runs on a copy whose longer side is at most this
    top: int = 2000  #: keep at most this many boxes, in the proposer's order
    min_size: int = 20  #: minimum box width and height, in original pixels
    proposer: str = "opencv"  #: "opencv" | "native" (ours, :mod:`fastrcnn_cli.proposals.native`)

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if self.mode not in MODES:
            problems.append(("mode", f"unknown proposal mode {self.mode!r} (choose {' or '.join(MODES)})"))
        if self.proposer not in PROPOSERS:
            problems.append(("proposer", f"unknown proposer {self.proposer!r} (choose {' or '.join(PROPOSERS)})"))
        for name, low in (("max_side", 16), ("top", 1), ("min_size", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                problems.append((name, f"must be an integer >= {low}, got {value!r}"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in caches and checkpoints. ``proposer`` is left out when it is the default
        (``opencv``), so caches and checkpoints made before it existed keep matching their settings."""
        data = {k: (int(v) if not isinstance(v, str) else v) for k, v in asdict(self).items()}
        if data["proposer"] == "opencv":
            del data["proposer"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProposalSettings:
        """Settings recorded in a file (a cache's or a checkpoint's); anything unusable is an
        :class:`~fastrcnn_cli.errors.InputError`, since the file is at fault, not the user's settings."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown proposal settings {unknown} (known: {sorted(known)})")
        try:
            return cls(**data)
        except SettingsError as exc:
            raise InputError(f"recorded proposal settings {dict(data)} are not valid: {exc}") from None

    def describe(self) -> str:
        text = f"{self.mode} mode, max side {self.max_side}, top {self.top}, min size {self.min_size}"
        return text if self.proposer == "opencv" else f"{text}, {self.proposer} proposer"

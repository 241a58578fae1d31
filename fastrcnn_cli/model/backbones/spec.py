""":class:`BackboneSpec`: everything needed to rebuild the same backbone (stored in checkpoints).

The table :data:`VARIANTS` says, per backbone name, which cuts and how many frozen stages a spec may have and
what it gets when it names none; the backbones themselves are in :mod:`.vgg16` and :mod:`.efficientnet_lite0`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastrcnn_cli.errors import CheckpointError


@dataclass(frozen=True)
class Variants:
    """The specs one backbone accepts: its cuts (``(None,)``: a single one) and its frozen-stage range."""

    cuts: tuple[str | None, ...]
    default_frozen: int
    max_frozen: int

    @property
    def default_cut(self) -> str | None:
        return self.cuts[0]


VARIANTS: dict[str, Variants] = {
    # conv blocks conv1 .. conv5; the paper freezes conv1_1 .. conv2_2 ("learning starts at conv3_1")
    "vgg16": Variants(cuts=(None,), default_frozen=2, max_frozen=5),
    # the stem and stages 1 .. 7; 2 freezes everything up to stride 4, like conv1-conv2 of VGG16
    "efficientnet-lite0": Variants(cuts=("stage5", "dilated"), default_frozen=2, max_frozen=7),
}
BACKBONE_NAMES = tuple(VARIANTS)
EFFICIENTNET_CUTS = tuple(c for c in VARIANTS["efficientnet-lite0"].cuts if c is not None)


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to rebuild the same backbone (stored in checkpoints).

    ``cut`` (efficientnet-lite0 only): ``"stage5"`` (112 channels) or ``"dilated"`` (320 channels); see
    :mod:`.efficientnet_lite0`. ``frozen_stages``: how many leading stages are not trained. vgg16: conv blocks
    conv1 .. conv{k} (paper: 2, i.e. conv1_1 .. conv2_2). efficientnet-lite0: the stem and stages 1 .. k
    (the stem is always frozen; default 2, everything up to stride 4, like conv1-conv2 of VGG16).
    ``None`` picks the backbone's default, so a stored spec is always explicit.
    """

    name: str
    cut: str | None = None
    frozen_stages: int | None = None

    def __post_init__(self) -> None:
        variants = VARIANTS.get(self.name)
        if variants is None:
            raise ValueError(f"unknown backbone {self.name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        cut = self.cut if self.cut is not None else variants.default_cut
        if cut not in variants.cuts:
            if variants.cuts == (None,):
                raise ValueError(f"{self.name} has a single cut; 'cut' must be left out")
            raise ValueError(f"{self.name} cut must be one of {', '.join(map(str, variants.cuts))}, not {cut!r}")
        frozen = self.frozen_stages if self.frozen_stages is not None else variants.default_frozen
        if not 0 <= int(frozen) <= variants.max_frozen:
            raise ValueError(f"{self.name}: frozen_stages must be in 0 .. {variants.max_frozen}, not {frozen}")
        object.__setattr__(self, "cut", cut)
        object.__setattr__(self, "frozen_stages", int(frozen))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cut": self.cut, "frozen_stages": self.frozen_stages}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        try:
            return cls(str(data["name"]), data.get("cut"), data.get("frozen_stages"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed backbone entry {dict(data)!r}: {exc}") from exc

"""What ``fastrcnn benchmark`` times and how often: :class:`BenchmarkSettings`, the sections and their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastrcnn_cli.errors import SettingsError
from fastrcnn_cli.pipeline import ProposalOverrides

#: the sections, in the order they run and are printed
SECTIONS: tuple[str, ...] = ("stages", "proposals", "shared", "roipool", "head")
#: timed runs and warm-up runs per section when not given. Chosen so that the whole benchmark with no arguments
#: stays well under 3 minutes on a 2-core CPU: VGG16's fc6 on 2000 RoIs alone takes seconds there (a dense
#: product needs no warm-up), and the pure-PyTorch RoI pooling reference seconds a call, so it is timed once,
#: without warm-up (:data:`REFERENCE_RUNS`).
DEFAULT_RUNS = {"stages": 5, "proposals": 2, "shared": 3, "roipool": 3, "head": 3}
DEFAULT_WARMUP = {"stages": 1, "proposals": 1, "shared": 1, "roipool": 1, "head": 0}
REFERENCE_RUNS = 1
#: the features RoI pooling is timed on: VGG16's conv5 of a 600 x 1000 image, or the model's own feature map
ROIPOOL_CASES = ("model", "vgg16")


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to time and how often. ``runs`` / ``warmup`` None: :data:`DEFAULT_RUNS` / :data:`DEFAULT_WARMUP`.

    ``proposals``: Selective Search settings laid over the checkpoint's (as ``fastrcnn detect`` does); their
    ``top`` (None: the checkpoint's) is also the number of RoIs of the ``shared``, ``roipool`` and ``head``
    sections. ``proposal_cache``: a ``fastrcnn propose`` cache folder whose recorded settings are timed instead
    of the checkpoint's (``proposals`` still laid over them). ``ranks``: SVD ranks (fc6, fc7) to time on the
    loaded model's own head (fc7 None: the default of ``compress-svd``, min(fc6 rank, 256)); ``fc7_none``
    leaves fc7 uncompressed there. Values out of range raise :class:`SettingsError` naming the field.
    """

    runs: int | None = None
    warmup: int | None = None
    sections: tuple[str, ...] = SECTIONS
    proposals: ProposalOverrides = field(default_factory=ProposalOverrides)
    proposal_cache: Path | None = None
    ranks: tuple[int, int | None] | None = None
    fc7_none: bool = False
    rcnn_sample: int = 32  #: proposals the R-CNN side of ``shared`` is timed on (then scaled to all)
    rcnn_batch: int = 32  #: crops per backbone batch on the R-CNN side
    roipool_case: str = "vgg16"
    seed: int = 0

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            got = ", ".join(self.sections) or "none"
            problems.append(("sections", f"must be some of {', '.join(SECTIONS)} (got {got})"))
        if self.runs is not None and self.runs < 1:
            problems.append(("runs", f"must be at least 1 (got {self.runs})"))
        if self.warmup is not None and self.warmup < 0:
            problems.append(("warmup", f"must be at least 0 (got {self.warmup})"))
        for name in ("rcnn_sample", "rcnn_batch"):
            if getattr(self, name) < 1:
                problems.append((name, f"must be at least 1 (got {getattr(self, name)})"))
        if self.roipool_case not in ROIPOOL_CASES:
            problems.append(("roipool_case", f"must be one of {', '.join(ROIPOOL_CASES)} (got {self.roipool_case!r})"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])
        # keep the canonical order, drop repeats
        object.__setattr__(self, "sections", tuple(s for s in SECTIONS if s in self.sections))

    def runs_for(self, section: str) -> int:
        return int(self.runs) if self.runs is not None else DEFAULT_RUNS[section]

    def warmup_for(self, section: str) -> int:
        return int(self.warmup) if self.warmup is not None else DEFAULT_WARMUP[section]

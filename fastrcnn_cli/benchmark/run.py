"""The whole benchmark: load the model and the image once, run the chosen sections, return one typed result.

The stages section runs first, so that its first run is the process's first detection (its "cold" column);
the other sections reuse the Selective Search boxes of its runs, topped up to the requested count when the
image gives fewer (:func:`~fastrcnn_cli.benchmark.shared.top_up_proposals`). The native RoI pooling operator
is loaded (built, the first time ever) before anything is timed. Progress and the line that starts each section
go through :mod:`fastrcnn_cli.progress`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrcnn_cli import progress
from fastrcnn_cli.benchmark.environment import Environment
from fastrcnn_cli.benchmark.head import HeadResult, HeadShape, resolve_head_ranks, time_head
from fastrcnn_cli.benchmark.proposers import ProposersResult, time_proposals
from fastrcnn_cli.benchmark.roipool import VGG16_CONV5, VGG16_IMAGE, RoIPoolResult, time_roipool
from fastrcnn_cli.benchmark.settings import REFERENCE_RUNS, SECTIONS, BenchmarkSettings
from fastrcnn_cli.benchmark.shared import SharedResult, time_shared, top_up_proposals
from fastrcnn_cli.benchmark.stages import StagesResult, time_stages
from fastrcnn_cli.detect import DetectSettings, Detector, sanitise_proposals
from fastrcnn_cli.errors import InputError, MissingInputError
from fastrcnn_cli.io import read_image
from fastrcnn_cli.model.checkpoint import resolve_weights
from fastrcnn_cli.model.fast_rcnn import ModelConfig, scale_factor
from fastrcnn_cli.onnx_backend import RUNTIME_NAME, is_onnx_path
from fastrcnn_cli.ops import load_extension
from fastrcnn_cli.ops._extension import native_available
from fastrcnn_cli.pipeline import LoadedDetector, ProposalOverrides, load_detector
from fastrcnn_cli.proposals import ProposalSettings
from fastrcnn_cli.proposals.cache import SOURCE_IMPORTED, ProposalCache
from fastrcnn_cli.sampling import unique_rois
from fastrcnn_cli.shipped import example_path

#: the example image shipped with the package (a synthetic shapes picture)
DEFAULT_IMAGE = example_path()
#: the backbones' stride: the feature map of an ONNX model (channels unknown outside its graph) is estimated
STRIDE = 16


# ---------------------------------------------------------------------------------------------------------------
# what was timed


@dataclass(frozen=True)
class ModelInfo:
    config: ModelConfig
    feature_map: list[int]  #: (C, H, W) for this image's network input (C = 0: unknown, an ONNX graph)
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.config.to_dict(), "feature_map": list(self.feature_map), "stride": self.stride}


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    width: int
    height: int
    input_width: int  #: at the test scale
    input_height: int
    scale: int
    max_size: int
    factor: float  #: input / original

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class ProposalsInfo:
    """The image's Selective Search boxes and the RoIs the shared, roipool and head sections use."""

    settings: ProposalSettings
    requested: int  #: ``top``
    selective_search: int  #: boxes Selective Search gave (after sanitising)
    unique_rois: int  #: of those, distinct after rounding to feature cells (what ``detect`` pools)
    sections_use: int  #: RoIs of the other sections
    added_jittered: int  #: jittered copies added to reach ``requested``

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "settings": self.settings.to_dict()}


@dataclass(frozen=True)
class Setup:
    weights: Path
    model: ModelInfo
    image: ImageInfo
    detect_settings: DetectSettings
    proposals: ProposalsInfo
    roi_pool_native: bool  #: the native RoI pooling operator (else the pure-PyTorch fallback, or ONNX's)
    runtime: str  #: "PyTorch", or "ONNX Runtime <version> (<provider>)"
    sections: tuple[str, ...]
    runs: dict[str, int]
    warmup: dict[str, int]

    @property
    def onnx(self) -> bool:
        return self.runtime != "PyTorch"

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": str(self.weights),
            "model": self.model.to_dict(),
            "image": self.image.to_dict(),
            "detect_settings": self.detect_settings.to_dict(),
            "proposals": self.proposals.to_dict(),
            "roi_pool_native": self.roi_pool_native,
            "runtime": self.runtime,
            "sections": list(self.sections),
            "runs": dict(self.runs),
            "warmup": dict(self.warmup),
        }


@dataclass(frozen=True)
class Sections:
    """The results of the sections that ran (None: not chosen)."""

    stages: StagesResult | None = None
    proposals: ProposersResult | None = None
    shared: SharedResult | None = None
    roipool: RoIPoolResult | None = None
    head: HeadResult | None = None

    def names(self) -> list[str]:
        return [name for name in SECTIONS if getattr(self, name) is not None]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in self.names()}


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything ``fastrcnn benchmark`` measured, and where."""

    environment: Environment
    setup: Setup
    sections: Sections
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "fastrcnn benchmark",
            "environment": self.environment.to_dict(),
            "setup": self.setup.to_dict(),
            "sections": self.sections.to_dict(),
            "elapsed_s": self.elapsed_s,
        }


# ---------------------------------------------------------------------------------------------------------------
# inputs


def resolve_image(image: str | os.PathLike | None) -> Path:
    """The image given (an :class:`InputError` naming it when it is missing), or the example image (a
    :class:`MissingInputError` naming the ``image`` field when that one is missing)."""
    if image is not None:
        path = Path(image)
        if not path.exists():
            raise InputError("no such image", path)
        return path
    if not DEFAULT_IMAGE.exists():
        raise MissingInputError("image", f"none given and the example image is missing ({DEFAULT_IMAGE}); give one")
    return DEFAULT_IMAGE


def proposal_overrides(settings: BenchmarkSettings) -> ProposalOverrides:
    """The proposal settings to lay over the checkpoint's: ``settings.proposals``, over the recorded settings of
    ``settings.proposal_cache`` when one is given (so that the boxes are timed as that cache was made)."""
    if settings.proposal_cache is None:
        return settings.proposals
    path = Path(settings.proposal_cache)
    meta = ProposalCache.read_meta(path) if path.is_dir() else None
    if meta is None:
        raise InputError("no proposal cache here (no proposals.json)", path)
    if meta.get("source") == SOURCE_IMPORTED or not meta.get("settings"):
        raise InputError("holds imported proposals: it records no Selective Search settings to time", path)
    recorded = ProposalSettings.from_dict(meta["settings"])
    given = {k: v for k, v in dataclasses.asdict(settings.proposals).items() if v is not None}
    return ProposalOverrides(**{**recorded.to_dict(), **given})


class _RecordingDetector:
    """Wraps :meth:`Detector.propose` to keep the last proposals, so the stage runs' Selective Search boxes can be
    reused by the other sections without an extra (warming) call before the first, cold, run."""

    def __init__(self, detector: Detector) -> None:
        self.proposals: np.ndarray | None = None
        self._propose = detector.propose
        detector.propose = self._record  # type: ignore[method-assign]  # this detector only

    def _record(self, image: np.ndarray) -> np.ndarray:
        self.proposals = self._propose(image)
        return self.proposals


def _image_info(path: Path, picture: np.ndarray, detect: DetectSettings) -> ImageInfo:
    height, width = picture.shape[:2]
    scale, max_size = detect.scale[0], detect.max_size
    factor = scale_factor(height, width, scale, max_size)
    return ImageInfo(path, width, height, max(1, int(round(width * factor))), max(1, int(round(height * factor))),
                     scale, max_size, factor)


def _runtime(loaded: LoadedDetector) -> str:
    if loaded.runtime is None:
        return "PyTorch"
    import onnxruntime  # an ONNX model was loaded: it is installed

    return f"{RUNTIME_NAME} {onnxruntime.__version__} ({loaded.model.provider})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@contextmanager
def _rounds(section: str, total: int) -> Iterator[Callable[[], None]]:
    with progress.task(section, total=total) as bar:
        yield bar.advance


# ---------------------------------------------------------------------------------------------------------------
# the run


def run_benchmark(
    weights: str | os.PathLike | None = None,
    image: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    settings: BenchmarkSettings | None = None,
) -> BenchmarkResult:
    """Load the model (``weights`` None: the shipped one) and the image (None: the example image), run the
    chosen sections, and return every number (see :mod:`fastrcnn_cli.benchmark`)."""
    settings = settings or BenchmarkSettings()
    started = time.perf_counter()
    if is_onnx_path(resolve_weights(weights)) and settings.sections != ("stages",):
        raise InputError(
            "an ONNX model can be timed in the stages section only; the shared, roipool and head sections time "
            "PyTorch modules: give the checkpoint for those"
        )
    image_path = resolve_image(image)
    picture = read_image(image_path)
    loaded = load_detector(weights, device, proposals=proposal_overrides(settings))
    onnx = loaded.runtime is not None
    model, dev = loaded.model, loaded.device
    own_head = None
    if settings.ranks and "head" in settings.sections:
        own_head = resolve_head_ranks(model, settings.ranks, settings.fc7_none)  # a bad rank fails before timing
    info = _image_info(image_path, picture, loaded.detect_settings)
    recorder = _RecordingDetector(loaded.detector)
    if not onnx:  # loaded (or built) now, so that no timed run pays for it
        try:
            load_extension(with_cuda=dev.type == "cuda")
        except Exception:  # noqa: BLE001 - roi_pool falls back to the reference and warns; native_available says so
            pass
    runs = {s: settings.runs_for(s) for s in settings.sections}
    warmups = {s: settings.warmup_for(s) for s in settings.sections}
    progress.info(
        f"proposals: Selective Search ({loaded.proposal_settings.describe()}) on {image_path} ({info.width} x "
        f"{info.height}); network input {info.input_width} x {info.input_height}; device {dev}, "
        f"{torch.get_num_threads()} torch threads"
    )
    stages = None
    if "stages" in settings.sections:  # first: its first run is the process's first detection
        t0 = time.perf_counter()
        stages = _stages(loaded, picture, runs["stages"], warmups["stages"])
        stages = dataclasses.replace(stages, elapsed_s=time.perf_counter() - t0)
    rois, proposals_info = _section_rois(loaded, recorder, picture, info, settings.seed)
    feature_map = _feature_map(loaded, info)
    inputs = _Inputs(loaded, picture, rois, info, feature_map, settings, own_head)
    sections: dict[str, Any] = {"stages": stages}
    for name in settings.sections:
        if name != "stages":
            t0 = time.perf_counter()
            result = _SECTIONS[name](inputs, runs[name], warmups[name])
            sections[name] = dataclasses.replace(result, elapsed_s=time.perf_counter() - t0)
    setup = Setup(
        weights=loaded.weights_path,
        model=ModelInfo(loaded.meta.config, feature_map, int(round(1.0 / model.spatial_scale))),
        image=info,
        detect_settings=loaded.detect_settings,
        proposals=proposals_info,
        roi_pool_native=False if onnx else native_available(dev.type),
        runtime=_runtime(loaded),
        sections=settings.sections,
        runs=runs,
        warmup=warmups,
    )
    return BenchmarkResult(Environment.collect(dev), setup, Sections(**sections), time.perf_counter() - started)


def _stages(loaded: LoadedDetector, picture: np.ndarray, r: int, w: int) -> StagesResult:
    progress.info(f"[stages] detect() on the image: {_plural(r, 'run')} after {w} warm-up")
    with _rounds("stages", r + w) as tick:
        result = time_stages(loaded.detector, picture, r, w, tick)
    return dataclasses.replace(result, runtime=RUNTIME_NAME if loaded.runtime else "PyTorch")


def _section_rois(
    loaded: LoadedDetector, recorder: _RecordingDetector, picture: np.ndarray, info: ImageInfo, seed: int
) -> tuple[np.ndarray, ProposalsInfo]:
    """The RoIs of the sections after the stages: the stage runs' Selective Search boxes (searched now when the
    stages did not run), topped up to ``top``; and what they are."""
    if recorder.proposals is None:
        recorder.proposals = loaded.detector.propose(picture)
    found = sanitise_proposals(recorder.proposals, info.width, info.height)
    top = int(loaded.proposal_settings.top)
    rois, added = top_up_proposals(found, top, info.width, info.height, seed)
    return rois, ProposalsInfo(
        settings=loaded.proposal_settings,
        requested=top,
        selective_search=int(len(found)),
        unique_rois=len(unique_rois(found * info.factor, loaded.model.spatial_scale)[0]),
        sections_use=int(len(rois)),
        added_jittered=int(added),
    )


def _feature_map(loaded: LoadedDetector, info: ImageInfo) -> list[int]:
    """(C, H, W) of the model's features for this image's network input (an ONNX graph: C = 0, H and W from the
    stride)."""
    if loaded.runtime is not None:
        return [0, -(-info.input_height // STRIDE), -(-info.input_width // STRIDE)]
    with torch.inference_mode():
        probe = torch.zeros((1, 3, info.input_height, info.input_width), device=loaded.device)
        return list(loaded.model.features(probe).shape)[1:]


# ---------------------------------------------------------------------------------------------------------------
# the sections after the stages: each announces itself, then times


@dataclass(frozen=True)
class _Inputs:
    """What the sections after the stages share."""

    loaded: LoadedDetector
    picture: np.ndarray
    rois: np.ndarray  #: [P, 4], the requested count
    image: ImageInfo
    feature_map: list[int]
    settings: BenchmarkSettings
    own_head: HeadShape | None


def _proposers(inputs: _Inputs, r: int, w: int) -> ProposersResult:
    progress.info(f"[proposals] OpenCV's and the native Selective Search, fast and quality, 1 and "
                  f"{torch.get_num_threads()} threads: {_plural(r, 'round')} after {w} warm-up")
    with _rounds("proposals", r + w) as tick:
        return time_proposals(inputs.picture, inputs.loaded.proposal_settings, r, w, tick)


def _shared(inputs: _Inputs, r: int, w: int) -> SharedResult:
    s, info = inputs.settings, inputs.image
    progress.info(f"[shared] R-CNN's way against Fast R-CNN's on {len(inputs.rois)} proposals: "
                  f"{_plural(r, 'round')} after {w} warm-up")
    with _rounds("shared", r + w) as tick:
        return time_shared(
            inputs.loaded.model, inputs.picture, inputs.rois, scale=info.scale, max_size=info.max_size,
            device=inputs.loaded.device, runs=r, warmup=w, sample=s.rcnn_sample, batch_size=s.rcnn_batch,
            seed=s.seed, progress=tick,
        )


def _roipool(inputs: _Inputs, r: int, w: int) -> RoIPoolResult:
    info, model = inputs.image, inputs.loaded.model
    if inputs.settings.roipool_case == "vgg16":  # the paper's case: VGG16 conv5 of a 600 x 1000 image
        shape, image_size, size, scale = VGG16_CONV5, VGG16_IMAGE, 7, 1 / 16
        case = "VGG16's conv5 for a 600 x 1000 image (the paper's case)"
    else:
        shape, image_size = (1, *inputs.feature_map), (info.input_height, info.input_width)
        size, scale = model.config.head.roi_size, model.spatial_scale
        case = f"this model's feature map for this image ({info.input_width} x {info.input_height} network input)"
    progress.info(f"[roipool] {len(inputs.rois)} RoIs on {'x'.join(str(v) for v in shape)} features: "
                  f"{_plural(r, 'run')} after {w} warm-up (the reference: "
                  f"{_plural(min(REFERENCE_RUNS, r), 'run')} without warm-up)")
    return time_roipool(inputs.loaded.device, shape, len(inputs.rois), image_size, size, scale, r, w,
                        case=inputs.settings.roipool_case, case_description=case, seed=inputs.settings.seed)


def _head(inputs: _Inputs, r: int, w: int) -> HeadResult:
    progress.info(f"[head] fc6 + fc7 full against truncated SVD on {len(inputs.rois)} RoIs: {_plural(r, 'run')} "
                  f"after {w} warm-up")
    return time_head(len(inputs.rois), r, w, inputs.loaded.device, inputs.own_head, inputs.settings.seed)


_SECTIONS: dict[str, Callable[[_Inputs, int, int], Any]] = {
    "proposals": _proposers, "shared": _shared, "roipool": _roipool, "head": _head,
}

"""Selective Search proposals (Uijlings et al., IJCV 2013) with OpenCV's implementation.

Fast R-CNN scores class-agnostic region proposals; the paper uses Selective Search "fast" mode, about 2000
boxes per image, computed beforehand (about 2 s per image, not counted in its test times). Here the
proposals come from ``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()`` with
``switchToSelectiveSearchFast()`` (HSV and Lab images, graph segmentations with k = 150, 300, 450, two
merging strategies: 12 hierarchical groupings) or ``switchToSelectiveSearchQuality()`` (five colour
images, k = 150 .. 750, four strategies: 100 groupings; about 3 times the CPU time of fast mode).

Steps of :func:`selective_search`, for an image of W x H pixels and
:class:`~fastrcnn_cli.proposal_settings.ProposalSettings` ``s``:

1. **Resize.** When ``max(W, H) > s.max_side`` the image is resized (``INTER_AREA``) to
   ``Ws = round(W * f)`` x ``Hs = round(H * f)`` with ``f = s.max_side / max(W, H)``; smaller images are
   used as they are (never enlarged). Selective Search's cost grows faster than the pixel count (its
   colour-histogram step builds one full-image mask per initial segment), so this is what makes it fast.
2. **OpenCV's boxes.** ``process()`` returns ``(x, y, w, h)`` rectangles made by ``cv::boundingRect`` of
   each region's pixels, so ``w`` counts pixels: the region spans the columns ``x .. x + w - 1``
   (checked: a filled 40-pixel-wide square comes back with ``w = 40``; the whole image as ``(0, 0, Ws, Hs)``).
   In our convention (:mod:`fastrcnn_cli.boxes`) that is ``x1 = x, x2 = x + w - 1`` (rows likewise).
3. **Back to original pixels.** With the exact per-axis factors ``sx = Ws / W`` and ``sy = Hs / H``, an
   inclusive column range ``c1 .. c2`` of the resized image covers the continuous span
   ``[c1 / sx, (c2 + 1) / sx)`` of the original; its edges are rounded to the nearest pixel boundary
   (half up), ``e1 = round(c1 / sx)``, ``e2 = round((c2 + 1) / sx)``, and the box is ``x1 = e1,
   x2 = e2 - 1``. Because ``sx <= 1`` every box keeps at least one pixel, distinct boxes stay distinct,
   and the whole resized image maps exactly onto ``(0, 0, W - 1, H - 1)``. Boxes are then clipped to the
   image (a no-op for OpenCV's boxes, kept for safety).
4. **Minimum size.** Boxes narrower or shorter than ``s.min_size`` original pixels are dropped. The limit
   is capped at the image's own width/height, so the whole-image box always survives and every
   non-empty image (even 1 x 1) has at least one proposal.
5. **Exact duplicates** are removed (the first occurrence is kept) and the first ``s.top`` boxes are
   returned **in OpenCV's order** (OpenCV ranks regions by ``rand() * hierarchy level``, i.e. the paper's
   pseudo-random ordering that puts small, early-merged regions first).

**Determinism.** OpenCV draws those ranks from the C library's ``rand()``, whose state is global to the
process: the same image gives a different order depending on what ran before it in that process (seen
here: two calls on one image return the same set in different orders). Before every ``process()`` we
call the C library's ``srand(RAND_SEED)`` (via ctypes), so an image's proposals are the same whichever
worker, shard or run computes it; seed 1 is glibc's own default, i.e. what a fresh process gives. Where
OpenCV does not share that C library's ``rand()`` (e.g. some Windows builds) the order may vary between
runs, the set of boxes does not.

**Threads.** OpenCV's Selective Search is serial C++ (the graph segmentation, the per-region histograms
and the greedy grouping are plain loops); only the helper filters it calls (colour conversion, Gaussian
blur, Scharr, warpAffine, calcHist) use OpenCV's thread pool: threads shorten one image's wall time a
little and buy no throughput (``docs/measurements.md``). So data sets are processed by one worker *process* per core, each with
``cv2.setNumThreads(1)`` (set by :func:`init_worker`), which keeps every core busy without
oversubscribing them; a single image (the command line's image mode, or a caller in-process) keeps
OpenCV's default thread count, where the threads do shorten its wall time a little.

**Proposers.** ``ProposalSettings.proposer`` chooses whose Selective Search runs: ``opencv`` (the default,
the reference every result so far was measured with) or ``native``, ours
(:mod:`fastrcnn_cli.proposals.native`: the same algorithm and choices in the project's C++ extension, several
times faster, with every core on one image, and its own seeded ranking). Steps 1 and 3-5 are the same for
both.

This module does not import torch, so worker processes start quickly (the native proposer imports it when
first used).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fastrcnn_cli.errors import InputError
from fastrcnn_cli.imagefile import apply_orientation, exif_orientation
from fastrcnn_cli.io import read_image
from fastrcnn_cli.proposal_settings import ProposalSettings  # re-exported: the settings these steps follow

#: seed given to the C library's srand() before every Selective Search call (glibc's default seed)
RAND_SEED = 1
#: images with more pixels than this are refused (OpenCV's own decoder limit is 2**30)
MAX_IMAGE_PIXELS = 1 << 30


# ---------------------------------------------------------------------------------------------------------
# OpenCV plumbing


def opencv_version() -> str:
    return str(cv2.__version__)


def _check_opencv() -> None:
    if not hasattr(cv2, "ximgproc") or not hasattr(cv2.ximgproc, "segmentation"):
        raise InputError(
            "this OpenCV build has no cv2.ximgproc.segmentation (Selective Search); install "
            "opencv-contrib-python instead of opencv-python"
        )


_C_SRAND: Any = None
_IN_WORKER = False


def _c_srand(seed: int) -> None:
    """Seed the C library's rand(), which OpenCV's Selective Search uses to order its regions."""
    global _C_SRAND
    if _C_SRAND is None:
        fn: Any = False
        for name in (None, ctypes.util.find_library("c"), "msvcrt"):
            try:
                lib = ctypes.CDLL(name)
                fn = lib.srand
                fn.argtypes = [ctypes.c_uint]
                fn.restype = None
                break
            except (OSError, AttributeError, TypeError):
                continue
        _C_SRAND = fn
    if _C_SRAND:
        _C_SRAND(int(seed))


def init_worker() -> None:
    """Initialiser of data set worker processes: one OpenCV thread each (see the module docstring)."""
    cv2.setNumThreads(1)
    global _IN_WORKER
    _IN_WORKER = True  # the native proposer then runs on one thread (set when it is first used)
    # the parent handles Ctrl-C: it stops handing out images and waits for the ones in progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The (width, height) Selective Search runs at: the longer side at most ``max_side``, never enlarged."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    f = max_side / longest
    return max(1, int(round(width * f))), max(1, int(round(height * f)))


def _as_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"an image must be a non-empty [H, W] or [H, W, C] array, got shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.integer):
            image = (image.astype(np.float64) * (255.0 / float(np.iinfo(image.dtype).max))).astype(np.uint8)
        else:  # floats: assume [0, 1] when they look like it, else [0, 255]
            scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
            image = np.clip(np.nan_to_num(image) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise InputError(f"an image must have 1, 3 or 4 channels, got {image.shape[2]}")
    return np.ascontiguousarray(image)


def _opencv_rects(small_bgr: np.ndarray, mode: str) -> np.ndarray:
    """OpenCV's Selective Search on an 8-bit BGR image: [N, 4] int (x, y, w, h), in OpenCV's order."""
    _check_opencv()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(small_bgr)
    if mode == "quality":
        ss.switchToSelectiveSearchQuality()
    else:
        ss.switchToSelectiveSearchFast()
    _c_srand(RAND_SEED)
    rects = ss.process()
    return np.asarray(rects, dtype=np.int64).reshape(-1, 4)


def opencv_single_config_rects(image: np.ndarray, k: float, strategy: int, min_region: int = 100) -> np.ndarray:
    """OpenCV's ``process()`` for ONE (colour image, k, strategy) grouping: [N, 4] int64 (x, y, w, h).

    ``image`` is one of Selective Search's colour images (uint8 [H, W, C]); ``strategy`` uses the native
    operator's codes (0 colour+fill+texture+size, 1 fill+texture+size, 2 fill, 3 size). The side-by-side
    harness compares this with the native proposer's same grouping.
    """
    _check_opencv()
    seg = cv2.ximgproc.segmentation
    ss = seg.createSelectiveSearchSegmentation()
    ss.setBaseImage(image)
    ss.addImage(image)
    gs = seg.createGraphSegmentation()
    gs.setK(float(k))
    gs.setSigma(float(np.float32(0.8)))  # OpenCV's switchTo... pass the float 0.8 on as a double
    gs.setMinSize(int(min_region))
    ss.addGraphSegmentation(gs)
    colour = seg.createSelectiveSearchSegmentationStrategyColor()
    fill = seg.createSelectiveSearchSegmentationStrategyFill()
    texture = seg.createSelectiveSearchSegmentationStrategyTexture()
    size = seg.createSelectiveSearchSegmentationStrategySize()
    made = {
        0: lambda: seg.createSelectiveSearchSegmentationStrategyMultiple(colour, fill, texture, size),
        1: lambda: seg.createSelectiveSearchSegmentationStrategyMultiple(fill, texture, size),
        2: lambda: fill,
        3: lambda: size,
    }
    if strategy not in made:
        raise InputError(f"unknown strategy code {strategy!r} (0, 1, 2 or 3)")
    ss.addStrategy(made[strategy]())
    _c_srand(RAND_SEED)
    return np.asarray(ss.process(), dtype=np.int64).reshape(-1, 4)


def _rects(small_bgr: np.ndarray, settings: ProposalSettings) -> np.ndarray:
    """The chosen proposer's ``(x, y, w, h)`` rectangles of the resized image, in its order."""
    if settings.proposer == "native":
        from fastrcnn_cli.proposals import native  # here: it imports torch, which OpenCV's proposer never needs

        if _IN_WORKER:
            native.init_worker()
        return native.native_rects(small_bgr, settings.mode)
    return _opencv_rects(small_bgr, settings.mode)


def rects_to_boxes(rects: np.ndarray, small_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """OpenCV ``(x, y, w, h)`` of the resized image -> our inclusive corners in original pixels (steps 2-3)."""
    ws, hs = small_size
    w, h = size
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    sx, sy = ws / w, hs / h
    x1 = rects[:, 0]
    y1 = rects[:, 1]
    x2 = rects[:, 0] + rects[:, 2] - 1.0  # boundingRect's width counts pixels
    y2 = rects[:, 1] + rects[:, 3] - 1.0
    if (ws, hs) != (w, h):
        x1, x2 = np.floor(x1 / sx + 0.5), np.floor((x2 + 1.0) / sx + 0.5) - 1.0
        y1, y2 = np.floor(y1 / sy + 0.5), np.floor((y2 + 1.0) / sy + 0.5) - 1.0
    boxes = np.stack([x1, y1, x2, y2], axis=1)
    return clip_boxes(boxes, w, h)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip to (0, 0, W - 1, H - 1); same as :func:`fastrcnn_cli.boxes.clip` (which would import torch here)."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height - 1)
    return out


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """Drop exact duplicates, keeping the first occurrence and the order."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    if len(boxes) < 2:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def filter_small(boxes: np.ndarray, min_size: int, width: int, height: int) -> np.ndarray:
    """Keep boxes at least ``min_size`` pixels wide and tall (the limit capped at the image's size)."""
    if min_size <= 0 or len(boxes) == 0:
        return boxes
    bw = boxes[:, 2] - boxes[:, 0] + 1.0
    bh = boxes[:, 3] - boxes[:, 1] + 1.0
    keep = (bw >= min(min_size, width)) & (bh >= min(min_size, height))
    return boxes[keep]


def finish_boxes(boxes: np.ndarray, settings: ProposalSettings, width: int, height: int) -> np.ndarray:
    """Steps 4-5: minimum size, exact duplicates, top-N; float32 [N, 4]."""
    boxes = filter_small(np.asarray(boxes, np.float64).reshape(-1, 4), settings.min_size, width, height)
    boxes = unique_boxes(boxes)[: settings.top]
    return np.ascontiguousarray(boxes, dtype=np.float32)


@dataclass
class Timing:
    """Seconds spent in each stage for one image (wall clock)."""

    read: float = 0.0
    resize: float = 0.0
    search: float = 0.0

    @property
    def total(self) -> float:
        return self.read + self.resize + self.search


def _search_resized(
    small: np.ndarray, size: tuple[int, int], settings: ProposalSettings, timing: Timing | None = None
) -> np.ndarray:
    """Resize ``small`` (already at most the original size) to the Selective Search size and search."""
    w, h = size
    ws, hs = scaled_size(w, h, settings.max_side)
    t0 = time.perf_counter()
    if (small.shape[1], small.shape[0]) != (ws, hs):
        small = cv2.resize(small, (ws, hs), interpolation=cv2.INTER_AREA)
    t1 = time.perf_counter()
    rects = _rects(small, settings)
    boxes = finish_boxes(rects_to_boxes(rects, (ws, hs), (w, h)), settings, w, h)
    if timing is not None:
        timing.resize += t1 - t0
        timing.search += time.perf_counter() - t1
    return boxes


def selective_search(image_bgr: np.ndarray, settings: ProposalSettings | None = None) -> np.ndarray:
    """Selective Search proposals of one image: [N, 4] float32 ``(x1, y1, x2, y2)``, 0-based inclusive,
    in the image's own pixels, clipped, without exact duplicates, at most ``settings.top``, OpenCV's order.

    ``image_bgr`` is an 8-bit BGR array as from :func:`fastrcnn_cli.io.read_image`; grayscale [H, W],
    [H, W, 1], BGRA and other integer depths are converted.
    """
    settings = settings or ProposalSettings()
    image = _as_bgr(image_bgr)
    h, w = image.shape[:2]
    return _search_resized(image, (w, h), settings)


# ---------------------------------------------------------------------------------------------------------
# files


def _header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels; None if PIL cannot tell."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves; only the header is read here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data.tobytes())) as im:  # lazy: reads the header only
                return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - any failure: let OpenCV decide and report
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image_for_proposals(path: str | os.PathLike, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image for Selective Search: (8-bit BGR pixels, (W, H) of the file).

    Small images are read in full by :func:`fastrcnn_cli.io.read_image` (same conversions and errors).
    When the file is at least twice ``max_side`` on its longer side, OpenCV's reduced decoding
    (``IMREAD_REDUCED_COLOR_2/4/8``; for JPEG the DCT itself is scaled) returns a smaller copy that is still
    at least ``max_side`` pixels on its longer side, so a 20000 x 20000 photo costs a 2500 x 2500 decode
    instead of a 1.2 GB one. EXIF orientation is applied, as by ``read_image``: (W, H) is the upright image's.
    Raises :class:`InputError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a folder, not an image", path)
    if path.stat().st_size == 0:
        raise InputError("the file is empty", path)
    data = np.fromfile(str(path), dtype=np.uint8)
    size = _header_size(data)
    if size is not None:
        w, h = size
        if w <= 0 or h <= 0:
            raise InputError("the image has no pixels", path)
        if w * h > MAX_IMAGE_PIXELS:
            raise InputError(
                f"the image is {w} x {h} pixels ({w * h / 1e6:.0f} megapixels), more than the "
                f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels OpenCV can decode; downscale it first",
                path,
            )
        factor = 1
        for f in (8, 4, 2):
            if max(w, h) // f >= max_side:
                factor = f
                break
        if factor > 1:
            flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
            image = cv2.imdecode(data, flag | cv2.IMREAD_IGNORE_ORIENTATION)
            if image is None or image.size == 0:
                raise InputError("not a readable image (corrupt, or a format OpenCV cannot decode)", path)
            orientation = exif_orientation(data)
            if orientation >= 5:  # turned by 90 degrees
                w, h = h, w
            return np.ascontiguousarray(apply_orientation(_as_bgr(image), orientation)), (w, h)
    del data
    image = read_image(path)
    return image, (int(image.shape[1]), int(image.shape[0]))


def proposals_for_file(
    path: str | os.PathLike, settings: ProposalSettings, timing: Timing | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Selective Search proposals of an image file: (boxes [N, 4] float32, (W, H)). Errors name the file."""
    t0 = time.perf_counter()
    small, size = read_image_for_proposals(path, settings.max_side)
    if timing is not None:
        timing.read += time.perf_counter() - t0
    try:
        boxes = _search_resized(small, size, settings, timing)
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"OpenCV's Selective Search failed: {message}", path) from None
    except MemoryError:
        raise InputError("out of memory during Selective Search (try a smaller max_side)", path) from None
    return boxes, size

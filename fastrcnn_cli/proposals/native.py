"""Our Selective Search: OpenCV's algorithm and choices, native and parallel (``proposer="native"``).

The grouping work (graph segmentation, region statistics, hierarchical grouping, ranking) is the operator
``torch.ops.fastrcnn.selective_search`` of the project's C++ extension (``ops/csrc/selective_search.cpp``,
where the algorithm is written down); this module prepares its inputs with OpenCV's own image primitives, so
that the numbers the grouping sees are OpenCV's, bit for bit:

* **Colour spaces** (``cv2.cvtColor`` of the 8-bit BGR image), as ``switchToSelectiveSearchFast`` /
  ``...Quality``: fast = HSV, Lab; quality = HSV, Lab, grey, one channel alone (meant to be hue, in effect
  blue: see :data:`COLOUR_SPACES`), and (R, G, grey).
* **Smoothing** for the graph segmentation: ``cv2.GaussianBlur`` of the float image with
  ``sigma = float32(0.8)`` (OpenCV passes the float 0.8 on as a double), once per colour space.
* **Texture maps**, per channel, as OpenCV's texture strategy makes them: Scharr derivatives in x and y of the
  channel, and of the channel rotated by 45 degrees (``warpAffine`` into the rotated bounding box, derivatives,
  rotated back by -45 degrees and cropped), each split into its positive and negative part: 8 oriented maps
  per channel, each rescaled to 0..255 by its own minimum and maximum. The operator bins them (10 bins).

Parameters, from OpenCV's sources: graph segmentation k = 150, 300, 450 (fast) or 150 .. 750 in steps of 150
(quality) with sigma 0.8 and ``min_size`` 100: OpenCV's ``createGraphSegmentation()`` default, which its
Selective Search never changes (the paper and the original MATLAB code use min_size = k; we follow OpenCV,
the reference here). Strategies: fast = (colour, fill, texture, size) and (fill, texture, size); quality adds
fill alone and size alone. Ranking: hierarchy level times a uniform number from the operator's own seeded
generator (:data:`SEED`), so the same image always gives the same boxes in the same order.

The whole image's groupings run on torch's intra-op threads (``torch.set_num_threads``): one image uses every
core. Data set workers (one process per core) set one thread each (:func:`init_worker`). This module imports
torch; :mod:`.selective_search` imports it only when the native proposer is chosen.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch

from fastrcnn_cli.errors import BuildError, InputError
from fastrcnn_cli.ops import _extension

#: graph segmentation smoothing: OpenCV's default ``sigma = 0.8f``, a float widened to double
SIGMA = float(np.float32(0.8))
#: OpenCV's ``GraphSegmentation`` default minimum region size (not changed by its Selective Search)
MIN_REGION = 100
#: seed of the ranking's random numbers
SEED = 1
KS = {"fast": (150, 300, 450), "quality": (150, 300, 450, 600, 750)}
#: strategy codes of the operator: 0 colour+fill+texture+size, 1 fill+texture+size, 2 fill, 3 size
STRATEGIES = {"fast": (0, 1), "quality": (0, 1, 2, 3)}
#: quality mode's fourth image is meant to be the hue channel, but OpenCV's switchToSelectiveSearchQuality splits
#: the BGR image into the same Mat array right after, and split() reuses the hue plane's buffer (same size and
#: type): the image it searches is the blue channel. We search what OpenCV searches (checked: with "hue" the box
#: sets differ, with "blue" they agree).
COLOUR_SPACES = {"fast": ("hsv", "lab"), "quality": ("hsv", "lab", "gray", "blue", "rgi")}


def colour_space(bgr: np.ndarray, name: str) -> np.ndarray:
    """One of OpenCV's Selective Search colour images of an 8-bit BGR image: uint8 [H, W, C]."""
    if name == "hsv":
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    elif name == "lab":
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    elif name == "gray":
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif name == "hue":
        out = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[:, :, 0])
    elif name == "blue":
        out = np.ascontiguousarray(bgr[:, :, 0])
    elif name == "rgi":
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        out = np.dstack([bgr[:, :, 2], bgr[:, :, 1], gray])
    else:
        raise InputError(f"unknown colour space {name!r} (choose from hsv, lab, gray, hue, blue, rgi)")
    return np.ascontiguousarray(out.reshape(bgr.shape[0], bgr.shape[1], -1))


def smoothed(image: np.ndarray) -> np.ndarray:
    """The graph segmentation's input: float32 Gaussian blur (sigma 0.8, OpenCV's border), [H, W, C]."""
    h, w, c = image.shape
    src = image.astype(np.float32).reshape(h, w) if c == 1 else image.astype(np.float32)
    out = cv2.GaussianBlur(src, (0, 0), SIGMA, sigmaY=SIGMA)
    return np.ascontiguousarray(out.reshape(h, w, c))


def _rotated_box(centre: tuple[float, float], width: int, height: int, angle: float) -> tuple[int, int]:
    """Size of the bounding box of a width x height box turned by ``angle`` (``RotatedRect::boundingRect``)."""
    pts = cv2.boxPoints((centre, (float(width), float(height)), angle))
    x1, y1 = np.floor(pts.min(axis=0))
    x2, y2 = np.ceil(pts.max(axis=0))
    return int(x2 - x1 + 1), int(y2 - y1 + 1)


def _split_signs(gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive part, non-positive part): OpenCV's ``threshold`` at 0, TOZERO and TOZERO_INV."""
    positive = cv2.threshold(gradient, 0, 0, cv2.THRESH_TOZERO)[1]
    return positive, cv2.threshold(gradient, 0, 0, cv2.THRESH_TOZERO_INV)[1]


def _oriented_derivatives(plane: np.ndarray) -> list[np.ndarray]:
    """The 8 float maps of one channel, in OpenCV's order: x+, x-, y+, y-, x45+, x45-, y45+, y45-."""
    h, w = plane.shape
    maps: list[np.ndarray] = []
    for dx, dy in ((1, 0), (0, 1)):
        maps.extend(_split_signs(cv2.Scharr(plane, cv2.CV_32F, dx, dy)))
    centre = (w / 2.0, h / 2.0)
    rot = cv2.getRotationMatrix2D(centre, 45.0, 1.0)
    bw, bh = _rotated_box(centre, w, h, 45.0)
    rot[0, 2] += bw / 2.0 - centre[0]
    rot[1, 2] += bh / 2.0 - centre[1]
    rotated = cv2.warpAffine(plane, rot, (bw, bh))
    # back by -45 degrees, then the image's pixels are cut out at offset max(0, (bbox - size) / 2), as OpenCV
    # does. OpenCV warps into the rotated image's whole rotated box; a warped pixel depends only on the matrix
    # and its own position, so a canvas just large enough for the cut-out gives the same values for less work.
    centre2 = (float(int(rotated.shape[1] / 2.0)), float(int(rotated.shape[0] / 2.0)))
    back = cv2.getRotationMatrix2D(centre2, -45.0, 1.0)
    x0, y0 = max(0, (bw - w) // 2), max(0, (bh - h) // 2)
    canvas = (x0 + w, y0 + h)
    for dx, dy in ((1, 0), (0, 1)):
        g = cv2.warpAffine(cv2.Scharr(rotated, cv2.CV_32F, dx, dy), back, canvas)
        maps.extend(_split_signs(np.ascontiguousarray(g[y0 : y0 + h, x0 : x0 + w])))
    return maps


def texture_maps(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 8 C]: each oriented derivative map rescaled to 0..255 by its own min and max."""
    h, w, c = image.shape
    maps = [
        cv2.normalize(m, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
        for p in range(c)
        for m in _oriented_derivatives(np.ascontiguousarray(image[:, :, p]))
    ]
    return np.ascontiguousarray(cv2.merge(maps).reshape(h, w, 8 * c))


def _op() -> Any:
    """torch.ops.fastrcnn.selective_search, building the extension on first use; BuildError if it cannot."""
    try:
        _extension.load_extension(with_cuda=False)
    except BuildError as exc:
        raise BuildError(f"the native Selective Search (proposer 'native') needs the C++ extension: {exc}") from None
    op = getattr(torch.ops.fastrcnn, "selective_search", None)
    if op is None:  # pragma: no cover - a library built before the operator existed
        raise BuildError("the loaded C++ extension has no selective_search operator; delete its build folder")
    return op


def load() -> None:
    """Import torch and load (build, the first time) the operator now; :class:`BuildError` if it cannot."""
    _op()


def search_spaces(
    images: list[np.ndarray],
    ks: tuple[float, ...],
    strategies: tuple[int, ...],
    min_region: int = MIN_REGION,
    seed: int = SEED,
) -> np.ndarray:
    """Selective Search over the given colour images (uint8 [H, W, C] each), every (image, k, strategy)
    grouping: [N, 4] int64 ``(x, y, w, h)`` rectangles, ranked, without duplicates (OpenCV's ``process()``)."""
    op = _op()

    def features(im: np.ndarray) -> tuple[Any, Any, Any]:
        return torch.from_numpy(im), torch.from_numpy(smoothed(im)), torch.from_numpy(texture_maps(im))

    threads = min(len(images), torch.get_num_threads())
    if threads > 1:  # OpenCV's filters release the GIL: the colour spaces' inputs are made side by side too
        with ThreadPoolExecutor(threads) as pool:
            feats = list(pool.map(features, images))
    else:
        feats = [features(im) for im in images]
    rects = op([f[0] for f in feats], [f[1] for f in feats], [f[2] for f in feats], [float(k) for k in ks],
               [int(s) for s in strategies], int(min_region), int(seed))
    return rects.numpy().astype(np.int64)


def native_rects(small_bgr: np.ndarray, mode: str, seed: int = SEED) -> np.ndarray:
    """Our Selective Search in OpenCV's fast or quality mode on an 8-bit BGR image: [N, 4] int64 (x, y, w, h)."""
    if mode not in KS:
        raise InputError(f"unknown proposal mode {mode!r} (choose fast or quality)")
    images = [colour_space(small_bgr, name) for name in COLOUR_SPACES[mode]]
    return search_spaces(images, KS[mode], STRATEGIES[mode], MIN_REGION, seed)


def graph_segmentation(image: np.ndarray, k: float, min_region: int = MIN_REGION) -> np.ndarray:
    """Our graph segmentation of a uint8 [H, W, C] image (labels int32 [H, W]), for comparisons with OpenCV's."""
    _op()
    return torch.ops.fastrcnn.graph_segmentation(torch.from_numpy(smoothed(image)), float(k), int(min_region)).numpy()


def init_worker() -> None:
    """Data set worker processes (one per core): one thread for the native operator."""
    torch.set_num_threads(1)

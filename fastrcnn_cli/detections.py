"""Detections: the result type of one image, and the file that keeps a split's detections.

:class:`Detections` is what :class:`fastrcnn_cli.detect.Detector` returns for an image and what
:func:`fastrcnn_cli.evaluation.evaluate_voc` scores. :func:`save_detections` / :func:`load_detections` write and
read a split's raw detections (a versioned ``.npz``, described in :func:`save_detections`), so that
``fastrcnn evaluate --detections`` can score them again without the model.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastrcnn_cli.errors import InputError
from fastrcnn_cli.io import atomic_write

#: ``format`` tag and version of files written by :func:`save_detections`
DETECTIONS_FORMAT = "fastrcnn-detections"
DETECTIONS_VERSION = 1



def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass
class Detections:
    """The detections of one image, in the project's box convention (:mod:`fastrcnn_cli.boxes`).

    ``boxes`` [N, 4] float32 (x1, y1, x2, y2; 0-based inclusive, original image pixels), ``scores`` [N] float32,
    ``labels`` [N] int64 (0-based indices into the data set's classes; no background). Numpy arrays, lists and
    torch tensors are accepted and converted.
    """

    image_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.image_id = str(self.image_id)
        self.boxes = _as_numpy(self.boxes).astype(np.float32, copy=False).reshape(-1, 4)
        self.scores = _as_numpy(self.scores).astype(np.float32, copy=False).reshape(-1)
        self.labels = _as_numpy(self.labels).astype(np.int64, copy=False).reshape(-1)
        n = self.boxes.shape[0]
        if self.scores.shape[0] != n or self.labels.shape[0] != n:
            raise ValueError(
                f"detections of {self.image_id!r}: {n} boxes, {self.scores.shape[0]} scores and "
                f"{self.labels.shape[0]} labels (they must be equal)"
            )
        if np.isnan(self.scores).any():
            raise ValueError(f"detections of {self.image_id!r}: a score is NaN")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, image_id: str) -> Detections:
        return cls(image_id, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def concatenate(cls, image_id: str, parts: Sequence[Detections]) -> Detections:
        if len(parts) == 1:
            return cls(image_id, parts[0].boxes, parts[0].scores, parts[0].labels)
        if not parts:
            return cls.empty(image_id)
        return cls(
            image_id,
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )


DetectionsLike = Sequence[Detections] | Mapping[str, Detections]


def group_by_image(detections: DetectionsLike | Iterable[Detections]) -> dict[str, Detections]:
    """image id -> its detections; several entries for one image are concatenated, in the order given."""
    items: Iterable[Detections] = detections.values() if isinstance(detections, Mapping) else detections
    parts: dict[str, list[Detections]] = {}
    for det in items:
        if not isinstance(det, Detections):
            raise TypeError(f"expected Detections, got {type(det).__name__}")
        parts.setdefault(det.image_id, []).append(det)
    return {image_id: Detections.concatenate(image_id, p) for image_id, p in parts.items()}


# --------------------------------------------------------------------------------------------------
# raw detections on disk
# --------------------------------------------------------------------------------------------------


@dataclass
class SavedDetections:
    """What :func:`load_detections` returns."""

    detections: list[Detections]  #: one per image, in the saved order (images without detections included)
    classes: list[str]
    meta: dict[str, Any]


def save_detections(
    path: str | os.PathLike,
    detections: DetectionsLike,
    classes: Sequence[str],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write raw detections so that a score can be recomputed without the model (written atomically).

    The file is a numpy ``.npz`` archive (a zip of ``.npy`` files; ``boxes`` and ``scores`` stored, the
    rest deflated), readable with ``np.load(path)``, holding:

    ============  ==============  ===================================================================
    key           dtype, shape    contents
    ============  ==============  ===================================================================
    ``header``    str, []         JSON: ``{"format": "fastrcnn-detections", "version": 1,``
                                  ``"classes": [...], "box_convention": "...", "meta": {...}}``
    ``image_ids`` str, [M]        the images, in order (images with no detections included)
    ``counts``    int64, [M]      the number of detections of each image
    ``boxes``     float32, [N, 4] x1, y1, x2, y2: 0-based inclusive, original image pixels
    ``scores``    float32, [N]    scores
    ``labels``    int64, [N]      0-based indices into ``classes`` (no background)
    ============  ==============  ===================================================================

    Rows are grouped by image: the first ``counts[0]`` rows belong to ``image_ids[0]`` and so on. Nothing
    is pickled, so ``np.load(path)`` reads it in any language with a zip and ``.npy`` reader. ``meta`` is any
    JSON-serialisable description (weights, split, scale, ...).
    """
    from fastrcnn_cli.console import _json_default

    classes = [str(c) for c in classes]
    grouped = group_by_image(detections)
    dets = list(grouped.values())
    for det in dets:
        if len(det) and (det.labels.min() < 0 or det.labels.max() >= len(classes)):
            raise ValueError(f"detections of {det.image_id!r}: a label is outside the {len(classes)} classes")
    header = {
        "format": DETECTIONS_FORMAT,
        "version": DETECTIONS_VERSION,
        "classes": classes,
        "box_convention": "x1,y1,x2,y2; 0-based, inclusive; original image pixels",
        "meta": dict(meta or {}),
    }
    arrays = {
        "header": np.array(json.dumps(header, default=_json_default)),
        "image_ids": np.array([d.image_id for d in dets], dtype=str),
        "counts": np.array([len(d) for d in dets], dtype=np.int64),
        "boxes": np.concatenate([d.boxes for d in dets]) if dets else np.zeros((0, 4), np.float32),
        "scores": np.concatenate([d.scores for d in dets]) if dets else np.zeros(0, np.float32),
        "labels": np.concatenate([d.labels for d in dets]) if dets else np.zeros(0, np.int64),
    }
    atomic_write(path, lambda f: _write_npz(f, arrays, stored=("boxes", "scores")))


def _write_npz(f: Any, arrays: Mapping[str, np.ndarray], stored: Sequence[str] = ()) -> None:
    """An ``.npz`` (as ``np.savez`` writes it) with the arrays named in ``stored`` kept uncompressed: box
    coordinates and scores are float noise to deflate (a few % smaller for seconds of time on VOC07 test)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, array in arrays.items():
            compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compress_type
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)


def load_detections(path: str | os.PathLike) -> SavedDetections:
    """Read a file written by :func:`save_detections`; :class:`InputError` naming the file if it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"][()]))
            arrays = {k: data[k] for k in ("image_ids", "counts", "boxes", "scores", "labels")}
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as e:
        raise InputError(f"not a fastrcnn detections file ({type(e).__name__}: {e})", path) from None
    if not isinstance(header, dict) or header.get("format") != DETECTIONS_FORMAT:
        raise InputError("not a fastrcnn detections file (no 'fastrcnn-detections' header)", path)
    if int(header.get("version", 0)) > DETECTIONS_VERSION:
        raise InputError(
            f"detections file version {header['version']} is newer than this fastrcnn reads "
            f"({DETECTIONS_VERSION}); upgrade fastrcnn",
            path,
        )
    counts = arrays["counts"].astype(np.int64)
    n = int(counts.sum())
    if (
        counts.shape[0] != arrays["image_ids"].shape[0]
        or (counts < 0).any()
        or arrays["boxes"].shape != (n, 4)
        or arrays["scores"].shape != (n,)
        or arrays["labels"].shape != (n,)
    ):
        raise InputError("corrupt detections file (array sizes do not agree)", path)
    ends = np.cumsum(counts)
    starts = ends - counts
    detections = [
        Detections(
            str(image_id),
            arrays["boxes"][s:e],
            arrays["scores"][s:e],
            arrays["labels"][s:e],
        )
        for image_id, s, e in zip(arrays["image_ids"].tolist(), starts.tolist(), ends.tolist())
    ]
    return SavedDetections(detections=detections, classes=list(header["classes"]), meta=dict(header.get("meta", {})))

"""What ``fastrcnn detect`` reads and writes: input images from files, folders and globs, output paths, and
detections as JSON.

Sources (:func:`expand_sources`)
--------------------------------
Each SOURCE is an image file, a folder (its images, not recursive, sorted by name; hidden files and other files
such as ``LICENSE`` are skipped) or a glob pattern (``photos/*.jpg``, ``data/**/*.png``; expanded here too, so a
quoted pattern works the same as one the shell expanded). An image met twice is processed once. Every source
that names nothing (a missing path, a folder without images, a pattern that matches no image) is reported, all
in one error, before any work is done.

Output images (:func:`plan_outputs`)
------------------------------------
One image given as a file, and ``--out`` with an image suffix: the annotated image is written there. Otherwise
(several images, a folder or a glob, or ``--out`` without an image suffix) ``--out`` is a folder (created) and
each image is written under its own file name (``x.jpg``, then ``x_2.jpg`` for a second ``x.jpg`` from another
folder). An output that would overwrite an input image is refused.

The JSON document (``--json`` on stdout, ``--save-json FILE``)
--------------------------------------------------------------
Boxes are in the project's convention (:mod:`fastrcnn_cli.boxes`): ``[x1, y1, x2, y2]``, 0-based pixel indices
of the original image, both corners inclusive, so a box is ``x2 - x1 + 1`` pixels wide. Numbers are rounded to
2 decimals (boxes) and 5 decimals (scores)::

    {
      "format": "fastrcnn-detect", "version": 1,
      "weights": "weights/shapes-efficientnet-lite0.pt",
      "classes": ["circle", "square", ...],                 # class_index indexes this list
      "categories": [{"id": 1, "name": "circle"}, ...],    # category_id = class_index + 1 (0: background)
      "box_convention": "...",
      "settings": {"scales": [600], "max_size": 1000, "score_threshold": 0.5, "nms": 0.3,
                   "max_detections": 100, "classes": null, "proposals": {...}},
      "device": "cpu",
      "images": [
        {"file": "photos/000456.jpg", "image_id": 456, "width": 500, "height": 375,
         "output": "out/000456.jpg",                        # null when no image was written
         "num_proposals": 1843,
         "times": {"proposals": 1.21, "network": 0.31, "postprocess": 0.004, "total": 1.52},   # seconds
         "detections": [                                    # by decreasing score
           {"class": "dog", "class_index": 11, "category_id": 12, "score": 0.97321,
            "box": [48.12, 10.5, 351.9, 372.0]}
         ]}
      ],
      "failed": [{"file": "photos/broken.jpg", "error": "not a readable image (...)"}],
      "coco": [ ...the COCO-style results list below... ]
    }

COCO-style results list (inside the document as ``"coco"``, or alone with ``--save-coco FILE``), the format
``pycocotools``' ``COCO.loadRes`` reads, one entry per detection::

    [{"image_id": 456, "category_id": 12, "bbox": [48.12, 10.5, 304.78, 362.5], "score": 0.97321}, ...]

with ``bbox = [x, y, w, h] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]``. ``image_id`` is the file name's stem as an
integer when it is all digits (``000456.jpg`` -> 456, ``000000397133.jpg`` -> 397133, as COCO and VOC name their
files), otherwise the stem itself (a string); ``category_id`` is the model's class index (1 = the first class;
0, the background, never appears). Map them to a ground truth's ids if it numbers them differently.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastrcnn_cli.errors import InputError
from fastrcnn_cli.io import IMAGE_SUFFIXES

FORMAT = "fastrcnn-detect"
VERSION = 1
BOX_CONVENTION = (
    "[x1, y1, x2, y2]: 0-based pixel indices of the original image, both corners inclusive "
    "(width = x2 - x1 + 1); COCO bbox = [x1, y1, width, height]"
)
_GLOB_CHARS = ("*", "?", "[")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images_in_folder(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: p.name)


@dataclass
class Sources:
    """The images to process, and whether the user named a collection (a folder, a glob or several files)."""

    images: list[Path]
    collection: bool


def expand_sources(sources: Sequence[str | os.PathLike]) -> Sources:
    """Files, folders and globs -> the list of image files, in the given order (folders and glob matches sorted
    by name), each once. Raises one :class:`InputError` listing every source that names no image."""
    if not sources:
        raise InputError("give at least one image, folder or glob pattern")
    images: list[Path] = []
    problems: list[str] = []
    collection = len(sources) > 1
    suffixes = ", ".join(sorted({s.lower() for s in IMAGE_SUFFIXES}))
    for source in sources:
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            collection = True
            found = _images_in_folder(path)
            if not found:
                problems.append(f"{path}: the folder holds no image (looked for {suffixes})")
            images.extend(found)
        elif path.exists():
            images.append(path)
        elif any(c in text for c in _GLOB_CHARS):
            collection = True
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            found = [m for m in matches if m.is_file() and is_image_file(m)]
            if not found:
                what = f"{len(matches)} paths, none an image" if matches else "nothing"
                problems.append(f"{text}: the pattern matches {what}")
            images.extend(found)
        else:
            problems.append(f"{path}: no such file or folder")
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} sources name no image:\n  " + "\n  ".join(problems)
        raise InputError(head)
    unique: list[Path] = []
    seen: set[Path] = set()
    for image in images:
        key = image.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(image)
    return Sources(unique, collection)


def plan_outputs(sources: Sources, out: Path | None) -> list[Path | None]:
    """The annotated image's path for each input (None everywhere when ``out`` is None). See the module doc."""
    if out is None:
        return [None] * len(sources.images)
    out = Path(out).expanduser()
    single_file = (
        not sources.collection and len(sources.images) == 1 and not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES
    )
    if single_file:
        paths: list[Path] = [out]
    else:
        if out.exists() and not out.is_dir():
            raise InputError("--out must be a folder when several images (or a folder, or a pattern) are given", out)
        if out.suffix.lower() in IMAGE_SUFFIXES and not out.exists():
            raise InputError(
                f"--out looks like an image file name, but {len(sources.images)} image(s) from a folder, pattern or "
                "list were given: give a folder",
                out,
            )
        used: set[str] = set()
        paths = []
        for image in sources.images:
            name = image.name
            n = 1
            while name.lower() in used:
                n += 1
                name = f"{image.stem}_{n}{image.suffix}"
            used.add(name.lower())
            paths.append(out / name)
    inputs = {p.resolve() for p in sources.images}
    for path in paths:
        if path.resolve() in inputs:
            raise InputError("--out would overwrite an input image; choose another file or folder", path)
    return paths  # type: ignore[return-value]


def image_id_for(path: Path) -> int | str:
    """COCO-style image id: the stem as an integer when it is all digits, else the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isascii() and stem.isdigit() else stem


def _r(x: float, digits: int) -> float:
    return round(float(x), digits)


def detection_records(detections: Any, classes: Sequence[str]) -> list[dict[str, Any]]:
    """One image's :class:`fastrcnn_cli.evaluation.Detections` as JSON-ready dicts, by decreasing score."""
    order = np.argsort(-detections.scores, kind="stable")
    rows = []
    for i in order:
        label = int(detections.labels[i])
        rows.append(
            {
                "class": classes[label],
                "class_index": label,
                "category_id": label + 1,
                "score": _r(detections.scores[i], 5),
                "box": [_r(v, 2) for v in detections.boxes[i]],
            }
        )
    return rows


def coco_entries(image_id: int | str, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO results entries (``bbox`` = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]) for one image's detection records."""
    entries = []
    for rec in records:
        x1, y1, x2, y2 = rec["box"]
        entries.append(
            {
                "image_id": image_id,
                "category_id": rec["category_id"],
                "bbox": [x1, y1, _r(x2 - x1 + 1, 2), _r(y2 - y1 + 1, 2)],
                "score": rec["score"],
            }
        )
    return entries


@dataclass
class ImageOutcome:
    """One input image's result (``detections`` set) or failure (``error`` set)."""

    file: Path
    output: Path | None = None
    detections: Any = None  #: :class:`fastrcnn_cli.evaluation.Detections`
    image_size: tuple[int, int] = (0, 0)  #: (width, height)
    num_proposals: int = 0
    times: dict[str, float] | None = None
    error: str | None = None


def build_document(
    outcomes: Sequence[ImageOutcome],
    classes: Sequence[str],
    *,
    weights: str | os.PathLike | None,
    settings: dict[str, Any],
    device: str,
) -> dict[str, Any]:
    """The JSON document described in the module docstring."""
    images, failed, coco = [], [], []
    for o in outcomes:
        if o.error is not None:
            failed.append({"file": str(o.file), "error": o.error})
            continue
        image_id = image_id_for(o.file)
        records = detection_records(o.detections, classes)
        images.append(
            {
                "file": str(o.file),
                "image_id": image_id,
                "width": int(o.image_size[0]),
                "height": int(o.image_size[1]),
                "output": None if o.output is None else str(o.output),
                "num_proposals": int(o.num_proposals),
                "times": {k: _r(v, 4) for k, v in (o.times or {}).items()},
                "detections": records,
            }
        )
        coco.extend(coco_entries(image_id, records))
    return {
        "format": FORMAT,
        "version": VERSION,
        "weights": None if weights is None else str(weights),
        "classes": list(classes),
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
        "box_convention": BOX_CONVENTION,
        "settings": settings,
        "device": device,
        "images": images,
        "failed": failed,
        "coco": coco,
    }

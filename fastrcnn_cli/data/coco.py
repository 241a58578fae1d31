"""Reading COCO detection data sets: a JSON file per split (``images``, ``annotations``, ``categories``) and
the images it names.

Layouts found from the data set's folder (``root``)::

    annotations/instances_<split>.json   COCO's own (instances_train2017.json, ...); also annotations/<split>.json
    <split>/_annotations.coco.json       Roboflow's export: the images beside the file
    <split>.json                         (with ``format="coco"`` only: too loose a sign to detect the format by)

A split is the name of such a file (``train`` also finds ``instances_train2017.json`` when that is the only
``instances_train<digits>.json``) or the path of any COCO detection JSON. A ``file_name`` is looked up, in
this order, beside the JSON, in ``<split>/``, ``images/<split>/``, ``images/`` and the root (the folder that
holds most of the first images is tried first); the file's sub-folders in a ``file_name`` are kept.

What a split gives (:class:`fastrcnn_cli.data.records.Dataset`):

- an image's id is its ``file_name`` without the suffix (``000000397133``, ``train/cat_01``): file names are
  what the other formats, the proposal cache and the detect command's outputs know an image by; its COCO
  ``id`` is kept as ``ImageRecord.source_id``;
- classes are the categories sorted by category id, named as in the file (sparse ids such as COCO's 1..90
  become indices 0..79; ``Dataset.category_ids`` maps back). Roboflow's placeholder category -- the name of the
  data set, given as the ``supercategory`` of the real ones and used by no annotation -- is left out. Given
  classes (``--classes``) are matched to the categories by name instead, like VOC's;
- ``bbox = [x, y, w, h]`` becomes the project's corners by :func:`fastrcnn_cli.data.box_formats.from_coco`;
  a box may reach past the image by :data:`~fastrcnn_cli.data.validate.EDGE_TOLERANCE` (float rounding) and is
  then clipped;
- ``iscrowd: 1`` boxes are "difficult": neither counted nor penalised by evaluation, and trained on as VOC's
  difficult boxes are;
- ``area`` (a mask's area in COCO itself) is kept for the COCO metrics' small/medium/large
  (``ImageRecord.areas``);
- an image without annotations is a negative image, kept.

Validation (:mod:`fastrcnn_cli.data.validate`): a file that is not JSON or not a COCO detection file, an image
entry without ``id`` or ``file_name``, a duplicate id or file name, a missing or unreadable image, a
``width``/``height`` that differs from the image, a malformed ``bbox``, an unknown ``category_id``, a box with no
area or outside its image: each is a problem naming the file, and the image it touches is skipped. An
annotation of an image that is not in ``images`` is reported too.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fastrcnn_cli.data.box_formats import from_coco
from fastrcnn_cli.data.records import Dataset, ImageRecord, check_class_names
from fastrcnn_cli.data.validate import (
    EDGE_TOLERANCE,
    Problem,
    ValidationReport,
    box_problem,
    clip_to_image,
    image_size,
    shown_path,
)
from fastrcnn_cli.errors import InputError

ANNOTATIONS = "annotations"
ROBOFLOW_FILE = "_annotations.coco.json"
_INSTANCES = "instances_"
#: JSON files in annotations/ that are not detection ground truth
_NOT_DETECTION = ("captions_", "person_keypoints_", "panoptic_", "stuff_", "image_info_")
_SAMPLE = 20  #: images whose file decides the order in which image folders are searched


def split_files(root: Path, loose: bool = False) -> dict[str, Path]:
    """split name -> COCO file of the folder ``root`` (see the module docstring); ``loose`` adds ``<name>.json``
    at the root."""
    files: dict[str, Path] = {}
    if loose:
        for path in sorted(root.glob("*.json")):
            files[path.stem] = path
    for path in sorted((root / ANNOTATIONS).glob("*.json")) if (root / ANNOTATIONS).is_dir() else []:
        if not path.name.startswith(_NOT_DETECTION):
            files[path.stem.removeprefix(_INSTANCES)] = path
    if (root / ROBOFLOW_FILE).is_file():
        files[root.name] = root / ROBOFLOW_FILE
    for path in sorted(root.glob(f"*/{ROBOFLOW_FILE}")):
        files[path.parent.name] = path
    return files


def find_root(path: Path, loose: bool = False) -> Path | None:
    """``path`` resolved when it is the folder of a COCO data set, else None (``loose``: any JSON at its root
    counts)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    return path.resolve() if split_files(path, loose) else None


def split_file(root: Path, split: str, loose: bool = True) -> tuple[str, Path]:
    """(name, JSON file) of a split: a name (see :func:`split_files`) or a path to a JSON file."""
    files = split_files(root, loose)
    if split in files:
        return split, files[split]
    if split.lower().endswith(".json") or "/" in split or "\\" in split:
        for candidate in (Path(split).expanduser(), root / split):
            if candidate.is_file():
                return candidate.stem.removeprefix(_INSTANCES), candidate.resolve()
        raise InputError(f"no split named {split!r}: no such JSON file", split)
    dated = [name for name in files if name.startswith(split) and name[len(split):].isdigit()]
    if len(dated) == 1:
        return dated[0], files[dated[0]]
    where = root / ANNOTATIONS if (root / ANNOTATIONS).is_dir() else root
    available = ", ".join(sorted(files)) or "none"
    raise InputError(f"no split named {split!r} (available: {available}; or give the path of a JSON file)", where)


def available_splits(root: Path) -> list[str]:
    return sorted(split_files(root, loose=True))


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, what is wrong) when the file is not JSON."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", path) from None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"


def split_ids(root: Path, split: str) -> list[str]:
    """The image ids of a split in the file's order (without validating it)."""
    _, path = split_file(root, split)
    data, error = _read_json(path)
    if error or not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(error or "not a COCO detection file (no 'images' list)", path)
    return [_image_id(im["file_name"]) for im in data["images"] if isinstance(im, dict) and _is_name(im.get("file_name"))]


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _image_id(file_name: str) -> str:
    """The record id of a ``file_name``: the path as written, ``/``-separated, without the suffix."""
    posix = PurePosixPath(file_name.replace("\\", "/"))
    return str(posix.with_suffix("")) if posix.suffix else str(posix)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class _Categories:
    """The class list of a file: names, the category id of each, and category id -> class index."""

    names: tuple[str, ...]
    ids: tuple[int, ...] | None
    index: dict[int, int]  #: category id -> class index (categories whose name is not a class are absent)
    known: dict[int, str]  #: every category id of the file -> its name


def _categories(
    data: dict, annotations: list, classes: Sequence[str] | None, file: str
) -> tuple[_Categories | None, str | None]:
    """The class list, or (None, what is wrong with ``categories``)."""
    raw = data.get("categories", [])
    if not isinstance(raw, list):
        return None, "'categories' is not a list"
    known: dict[int, str] = {}
    supercategories: set[str] = set()
    for i, cat in enumerate(raw, start=1):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not _is_name(cat.get("name")):
            return None, f"category {i} has no integer 'id' and 'name'"
        if cat["id"] in known:
            return None, f"category id {cat['id']} is listed twice"
        known[cat["id"]] = cat["name"].strip()
        if _is_name(cat.get("supercategory")):
            supercategories.add(cat["supercategory"].strip())
    used = {a.get("category_id") for a in annotations if isinstance(a, dict)}
    placeholder = {cid for cid, name in known.items() if name in supercategories and cid not in used}
    real = {cid: name for cid, name in known.items() if cid not in placeholder}
    if classes:
        names = check_class_names(list(classes), "classes")
        position = {n: k for k, n in enumerate(names)}
        index = {cid: position[name] for cid, name in real.items() if name in position}
        by_name = {name: cid for cid, name in real.items()}
        ids = tuple(by_name[n] for n in names) if all(n in by_name for n in names) else None
        return _Categories(names, ids, index, known), None
    order = sorted(real)
    seen: dict[str, int] = {}
    for cid in order:
        if real[cid] in seen:
            return None, f"category name {real[cid]!r} is used by ids {seen[real[cid]]} and {cid}"
        seen[real[cid]] = cid
    try:
        names = check_class_names([real[cid] for cid in order], file)
    except InputError as exc:
        return None, str(exc).split(": ", 1)[-1]
    return _Categories(names, tuple(order), {cid: k for k, cid in enumerate(order)}, known), None


def _image_folders(root: Path, path: Path, name: str, images: list[dict]) -> list[Path]:
    """Folders in which to look for the split's ``file_name``s, the one holding most of the first images first."""
    candidates = [path.parent, root / name, root / "images" / name, root / "images", root]
    folders = list(dict.fromkeys(c for c in candidates if c.is_dir()))
    sample = [im["file_name"] for im in images[:_SAMPLE] if isinstance(im, dict) and _is_name(im.get("file_name"))]
    hits = {f: sum((f / s).is_file() for s in sample) for f in folders}
    return sorted(folders, key=lambda f: -hits[f])  # stable: ties keep the order above


def _find_image(folders: Sequence[Path], file_name: str) -> Path | None:
    for folder in folders:
        if (folder / file_name).is_file():
            return folder / file_name
    for folder in folders:  # a path written by a labelling tool: the bare name next to the others
        if (folder / Path(file_name).name).is_file():
            return folder / Path(file_name).name
    return None


def _file_problem(report: ValidationReport, file: str, message: str) -> Dataset:
    report.problems.append(Problem(file, "", "malformed-json", message))
    return Dataset(root=report.root, split=report.split, classes=(), records=[], report=report, format="coco")


def load_coco_split(
    root: Path, split: str, classes: Sequence[str] | None = None, *, check_images: bool = True
) -> Dataset:
    """One split of the COCO data set ``root``, validated: the usable images, and every problem in ``report``."""
    name, path = split_file(root, split)
    file = shown_path(root, path)
    report = ValidationReport(root=root, split=split)
    data, error = _read_json(path)
    if error:
        return _file_problem(report, file, error)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return _file_problem(report, file, "not a COCO detection file (no 'images' list)")
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        return _file_problem(report, file, "no 'annotations' list (a COCO detection file has one, empty or not)")
    cats, error = _categories(data, annotations, classes, file)
    if cats is None:
        return _file_problem(report, file, f"'categories': {error}")
    if not cats.names:
        return _file_problem(report, file, "no category: 'categories' is empty (give the class names)")

    images: list[dict] = data["images"]
    report.num_ids = len(images)
    if not images:
        report.problems.append(Problem(file, "", "empty-split", "the file lists no image"))
    problems: dict[str, list[Problem]] = {}
    entries: dict[Any, tuple[str, dict]] = {}  # COCO image id -> (record id, entry)
    id_counts = Counter(im.get("id") for im in images if isinstance(im, dict))
    seen_names: set[str] = set()
    order: list[str] = []
    for i, im in enumerate(images, start=1):
        if not isinstance(im, dict) or not _is_name(im.get("file_name")) or not isinstance(im.get("id"), (int, str)):
            report.problems.append(Problem(file, f"#{i}", "malformed-json", f"image {i} has no 'id' and 'file_name'"))
            continue
        record_id = _image_id(im["file_name"])
        if id_counts[im["id"]] > 1:
            problems.setdefault(record_id, []).append(
                Problem(file, record_id, "duplicate-id", f"image id {im['id']} is used by {id_counts[im['id']]} images"))
        if record_id in seen_names:
            report.problems.append(
                Problem(file, record_id, "duplicate-id", f"image {im['file_name']!r} is listed twice (id {im['id']})"))
            report.skipped_ids.append(record_id)
            continue
        seen_names.add(record_id)
        order.append(record_id)
        if id_counts[im["id"]] == 1:
            entries[im["id"]] = (record_id, im)

    objects: dict[str, list[dict]] = {}
    for j, ann in enumerate(annotations, start=1):
        if not isinstance(ann, dict) or "image_id" not in ann:
            report.problems.append(Problem(file, "", "malformed-json", f"annotation {j} has no 'image_id'"))
            continue
        if ann["image_id"] not in entries:
            if id_counts.get(ann["image_id"], 0) == 0:
                report.problems.append(
                    Problem(file, "", "orphan-annotation",
                            f"annotation {ann.get('id', j)} is of image id {ann['image_id']!r}, which 'images' lacks"))
            continue
        objects.setdefault(entries[ann["image_id"]][0], []).append(ann)

    by_record = {record_id: im for record_id, im in entries.values()}
    folders = _image_folders(root, path, name, images)
    records: list[ImageRecord] = []
    for record_id in order:
        im = by_record.get(record_id)
        found = problems.get(record_id, [])
        if im is None:  # a duplicate image id: its annotations cannot be told apart
            report.problems.extend(found)
            report.skipped_ids.append(record_id)
            continue
        record = _check_image(root, file, record_id, im, objects.get(record_id, []), cats, folders, check_images, found)
        report.problems.extend(found)
        if found:
            report.skipped_ids.append(record_id)
        elif record is not None:
            records.append(record)
    return Dataset(root=root, split=split, classes=cats.names, records=records, report=report, format="coco",
                   source=path, category_ids=cats.ids)


def _check_image(
    root: Path,
    file: str,
    record_id: str,
    im: dict,
    annotations: list[dict],
    cats: _Categories,
    folders: Sequence[Path],
    check_images: bool,
    problems: list[Problem],
) -> ImageRecord | None:
    """The record of one image entry, adding what is wrong with it to ``problems``."""
    image_path = _find_image(folders, im["file_name"])
    written = (im.get("width"), im.get("height"))
    has_size = all(_is_int(v) and v > 0 for v in written)
    width, height = written if has_size else (None, None)
    if image_path is None:
        looked = ", ".join(shown_path(root, f) + "/" for f in folders) or "no image folder found"
        problems.append(Problem(file, record_id, "missing-image", f"{im['file_name']!r} not found (looked in {looked})"))
    elif check_images or not has_size:
        try:
            width, height = image_size(image_path)
        except InputError as exc:
            problems.append(Problem(shown_path(root, image_path), record_id, "unreadable-image",
                                    str(exc).split(": ", 1)[-1]))
        else:
            if has_size and tuple(written) != (width, height):
                problems.append(Problem(file, record_id, "size-mismatch",
                                        f"{im['file_name']!r}: 'width' x 'height' say {written[0]}x{written[1]}, the "
                                        f"image is {width}x{height}"))
    boxes, labels, crowd, areas = [], [], [], []
    for ann in annotations:
        where = f"{im['file_name']!r}, annotation {ann.get('id', '?')}"
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            problems.append(Problem(file, record_id, "malformed-json", f"{where}: 'bbox' is not 4 numbers ({bbox!r})"))
            continue
        where += f" {bbox}"
        category = ann.get("category_id")
        if category not in cats.known or not _is_int(category):
            problems.append(Problem(file, record_id, "unknown-category",
                                    f"{where}: category_id {category!r} is not in 'categories'"))
            continue
        if category not in cats.index:
            problems.append(Problem(file, record_id, "unknown-class",
                                    f"{where}: category {cats.known[category]!r} is not in the class list"))
            continue
        box = from_coco(bbox)
        wrong = box_problem(box, width, height, EDGE_TOLERANCE)
        if wrong is not None:
            problems.append(Problem(file, record_id, wrong[0], f"{where}: {wrong[1]}"))
            continue
        boxes.append(clip_to_image(box, width, height) if width is not None else box)
        labels.append(cats.index[category])
        crowd.append(bool(ann.get("iscrowd", 0)))
        area = ann.get("area")
        areas.append(float(area) if _number(area) and area > 0 else float(bbox[2]) * float(bbox[3]))
    if problems or image_path is None or width is None or height is None:
        return None
    return ImageRecord(
        id=record_id,
        image_path=image_path,
        width=int(width),
        height=int(height),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        difficult=np.asarray(crowd, bool),
        areas=np.asarray(areas, np.float32),
        source_id=im["id"] if _is_int(im["id"]) else None,
    )

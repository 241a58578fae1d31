"""Reading YOLO (Ultralytics) data sets: images, a text label file per image, and the class names.

Layouts found from the data set's folder (``root``)::

    data.yaml                    names (and train/val/test: image folders or list files, as Ultralytics reads them)
    classes.txt                  or the names one per line (also labels/classes.txt, as labelImg writes it)
    images/<split>/...           a split per image folder; labels/<split>/... beside it
    <split>/images, <split>/labels   (Roboflow's export)
    <split>.txt                  or a split per list file: one image path per line (relative to the list's folder)
    images/*.jpg                 a flat folder, when nothing above names a split: the split named ``all``

A split is a name (a ``data.yaml`` key first, then the layouts above) or the path of a list file or an image
folder. The label file of ``.../images/.../x.jpg`` is ``.../labels/.../x.txt`` (the last ``images`` of the path
replaced, as Ultralytics does); one object per line, ``class cx cy w h``, the class a 0-based index into the
names and the box normalised to the image's width and height (0..1) -- converted once by
:func:`fastrcnn_cli.data.box_formats.from_yolo`. A line of a polygon (``class x1 y1 x2 y2 ...``, a segmentation
label) gives the polygon's bounding box. An image's id is its path relative to its split's image folder (to the
``images`` folder above it, for list files), without the suffix.

Negative images: an empty label file, or none at all (as in Ultralytics), is an image without objects, kept. A
split in which *no* image has a label file is refused (the labels are almost surely in the wrong place).

YOLO has no "difficult": every box counts. Names precedence: given classes (``--classes``; matched by name to
the data set's names when it has some, else the names of ids 0, 1, ...), ``data.yaml``'s ``names``,
``classes.txt``. ``data.yaml`` is read by :func:`read_simple_yaml` (the forms YOLO data sets use; no PyYAML).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastrcnn_cli.data.box_formats import from_yolo
from fastrcnn_cli.data.records import CLASSES_FILE, Dataset, ImageRecord, check_class_names, read_classes_file
from fastrcnn_cli.data.validate import (
    EDGE_TOLERANCE,
    Problem,
    ValidationReport,
    box_problem,
    clip_to_image,
    image_size,
    shown_path,
)
from fastrcnn_cli.errors import DatasetError, InputError
from fastrcnn_cli.io import IMAGE_SUFFIXES

YAML_FILES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
IMAGES, LABELS = "images", "labels"
FLAT_SPLIT = "all"  #: the split of a flat ``images/`` folder
_SPLIT_KEYS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------------
# data.yaml
# --------------------------------------------------------------------------------------------------


def _unquoted(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of each character of ``text`` outside single or double quotes (quotes excluded)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        else:
            yield i, ch


def _strip_comment(line: str) -> str:
    for i, ch in _unquoted(line):
        if ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _split_items(text: str) -> list[str]:
    """``a, 'b, c', d`` -> the three items (commas inside quotes kept)."""
    items, current, quote = [], "", None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
            current += ch
        elif ch in "'\"":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [i.strip() for i in items if i.strip()]


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)  # YAML's double-quoted escapes are JSON's (and more)
        except json.JSONDecodeError:
            return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if text in ("null", "~", ""):
        return None
    return text


def _pair(text: str) -> tuple[Any, Any] | None:
    """``key: value`` -> (key, value), None when the text is no pair (a colon inside quotes does not count)."""
    for i, ch in _unquoted(text):
        if ch == ":" and (i + 1 == len(text) or text[i + 1].isspace()):
            return _scalar(text[:i]), text[i + 1 :].strip()
    return None


def _inline(text: str) -> Any:
    """A flow value: ``[a, b]``, ``{0: a, 1: b}`` or a scalar."""
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(i) for i in _split_items(text[1:-1])]
    if text.startswith("{") and text.endswith("}"):
        out = {}
        for item in _split_items(text[1:-1]):
            pair = _pair(item)
            if pair is None:
                raise ValueError(f"{item!r} is not 'key: value'")
            out[pair[0]] = _scalar(pair[1])
        return out
    return _scalar(text)


def read_simple_yaml(path: Path) -> dict[str, Any]:
    """The top-level keys of a YOLO ``data.yaml``: scalars, flow lists and maps (``[a, b]``, ``{0: a}``, also
    over several lines), and indented block lists (``- a``) or maps (``0: a``). Anything else raises
    :class:`InputError` naming the file."""
    try:
        lines = [_strip_comment(line) for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the file ({exc})", path) from None
    out: dict[str, Any] = {}
    i = 0
    try:
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.strip() in ("---", "..."):
                continue
            if line[0].isspace():
                raise ValueError(f"line {i}: unexpected indentation")
            pair = _pair(line)
            if pair is None:
                raise ValueError(f"line {i}: not 'key: value'")
            key, rest = pair
            if rest[:1] in ("[", "{"):
                closing = "]" if rest[0] == "[" else "}"
                while not rest.endswith(closing) and i < len(lines):
                    rest += " " + lines[i].strip()
                    i += 1
                out[str(key)] = _inline(rest)
            elif rest:
                out[str(key)] = _scalar(rest)
            else:
                block = []
                while i < len(lines) and (not lines[i].strip() or lines[i][0].isspace()):
                    if lines[i].strip():
                        block.append(lines[i].strip())
                    i += 1
                if block and all(b.startswith("-") for b in block):
                    out[str(key)] = [_scalar(b[1:]) for b in block]
                elif block:
                    entries = [_pair(b) for b in block]
                    if any(e is None for e in entries):
                        raise ValueError(f"the block under {key!r} is neither '- item' lines nor 'key: value' lines")
                    out[str(key)] = {k: _scalar(v) for k, v in entries}  # type: ignore[misc]
                else:
                    out[str(key)] = None
    except ValueError as exc:
        raise InputError(f"cannot read this YAML (the simple forms of a YOLO data.yaml only): {exc}", path) from None
    return out


def yaml_names(data: dict[str, Any], path: Path) -> tuple[str, ...] | None:
    """``names`` of a data.yaml (a list, or a map from 0, 1, ... to names), checked against ``nc``."""
    names = data.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), k if isinstance(k, int) else 0))
        if keys != list(range(len(names))):
            raise InputError(f"'names' must map 0, 1, ..., {len(names) - 1} to class names (it has keys {keys})", path)
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or any(n is None for n in names):
        raise InputError("'names' is not a list of class names", path)
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise InputError(f"'nc' is {nc} but 'names' lists {len(names)} classes", path)
    return check_class_names([str(n) for n in names], str(path))


def _yaml_file(root: Path) -> Path | None:
    for name in YAML_FILES:
        if (root / name).is_file():
            return root / name
    return None


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def find_root(path: Path) -> Path | None:
    """``path`` resolved when it is the folder of a YOLO data set (see the module docstring), else None."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    if _yaml_file(path) is not None or ((path / IMAGES).is_dir() and (path / LABELS).is_dir()):
        return path.resolve()
    if any((d / IMAGES).is_dir() and (d / LABELS).is_dir() for d in path.iterdir() if d.is_dir()):
        return path.resolve()
    return None


def _is_list_file(path: Path) -> bool:
    """A ``<split>.txt`` whose first entry is an image path."""
    if path.name == CLASSES_FILE or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return Path(line.strip()).suffix.lower() in IMAGE_SUFFIXES
    except OSError:
        return False
    return False


def _yaml_sources(root: Path) -> dict[str, list[Path]]:
    """split -> its image folders / list files, as ``data.yaml`` names them (Ultralytics' rules: relative to
    ``path``, else to the file's folder; Roboflow's ``../train/images`` also tried without the ``../``)."""
    path = _yaml_file(root)
    if path is None:
        return {}
    data = read_simple_yaml(path)
    base = Path(str(data["path"])).expanduser() if data.get("path") else path.parent
    if not base.is_absolute():
        base = path.parent / base
    sources: dict[str, list[Path]] = {}
    for key in _SPLIT_KEYS:
        value = data.get(key)
        if value is None:
            continue
        entries = value if isinstance(value, list) else [value]
        found = []
        for entry in entries:
            text = str(entry)
            candidates = [base / text, path.parent / text, path.parent / re.sub(r"^(\.\./)+", "", text)]
            found.append(next((c for c in candidates if c.exists()), candidates[0]))
        sources[key] = found
    return sources


def split_sources(root: Path) -> dict[str, list[Path]]:
    """split name -> image folders and list files (``data.yaml`` first, then the folder's layout)."""
    sources: dict[str, list[Path]] = {}
    for folder in sorted((root / IMAGES).iterdir()) if (root / IMAGES).is_dir() else []:
        if folder.is_dir():
            sources[folder.name] = [folder]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / IMAGES).is_dir() and (folder / LABELS).is_dir():
            sources[folder.name] = [folder / IMAGES]
    for listing in sorted(root.glob("*.txt")):
        if _is_list_file(listing):
            sources[listing.stem] = [listing]
    sources.update(_yaml_sources(root))
    if not sources and _has_images(root / IMAGES):
        sources[FLAT_SPLIT] = [root / IMAGES]
    return sources


def available_splits(root: Path) -> list[str]:
    return sorted(split_sources(root))


def _sources_of(root: Path, split: str) -> list[Path]:
    sources = split_sources(root)
    if split in sources:
        return sources[split]
    for candidate in (Path(split).expanduser(), root / split):
        if candidate.is_dir() or (candidate.is_file() and candidate.suffix == ".txt"):
            return [candidate]
    raise InputError(
        f"no split named {split!r} (available: {', '.join(sorted(sources)) or 'none'}; or give an image folder or "
        "a list file)",
        root,
    )


def _listed(source: Path, root: Path) -> list[Path]:
    """The image paths of a list file (relative lines: to the list's folder, else to the root)."""
    out = []
    for line in source.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        if not path.is_absolute():
            path = source.parent / line if (source.parent / line).exists() or not (root / line).exists() else root / line
        out.append(Path(os.path.normpath(path)))
    return out


def _images_of(source: Path, root: Path) -> tuple[list[tuple[Path, Path]], str | None]:
    """((image, the folder its id is relative to), ...) of a source, and a problem with the source itself."""
    if source.is_dir():
        flat = source == root / IMAGES  # the split "all": not the split folders inside
        found = source.glob("*") if flat else source.rglob("*")
        files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return [(p, source) for p in files], None
    if source.is_file():
        out = []
        for path in _listed(source, root):
            base = next((a for a in path.parents if a.name == IMAGES), source.parent)
            out.append((path, base))
        return out, None
    return [], "no such image folder or list file"


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == IMAGES:
            parts[i] = LABELS
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _record_id(image: Path, base: Path) -> str:
    try:
        relative = image.relative_to(base)
    except ValueError:
        relative = Path(image.name)
    return relative.with_suffix("").as_posix()


def split_ids(root: Path, split: str) -> list[str]:
    """The image ids of a split, in order (without validating it)."""
    return [_record_id(image, base) for source in _sources_of(root, split) for image, base in _images_of(source, root)[0]]


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def dataset_names(root: Path) -> tuple[str, ...] | None:
    """The class names the data set itself gives (data.yaml, else classes.txt), None when none."""
    path = _yaml_file(root)
    if path is not None:
        names = yaml_names(read_simple_yaml(path), path)
        if names:
            return names
    for candidate in (root / CLASSES_FILE, root / LABELS / CLASSES_FILE):
        if candidate.is_file():
            return read_classes_file(candidate)
    return None


def _parse_line(tokens: list[str]) -> tuple[int, tuple[float, float, float, float]] | str:
    """(class id, normalised (cx, cy, w, h)) of a label line, or what is wrong with it."""
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return f"not numbers: {' '.join(tokens)!r}"
    if not all(math.isfinite(v) for v in values):
        return "a value is not a finite number"
    cls = values[0]
    if cls != int(cls):
        return f"class id {tokens[0]!r} is not a whole number"
    coords = values[1:]
    if len(coords) == 4:
        return int(cls), (coords[0], coords[1], coords[2], coords[3])
    if len(coords) >= 6 and len(coords) % 2 == 0:  # a polygon: its bounding box
        xs, ys = coords[0::2], coords[1::2]
        x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
        return int(cls), ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return f"{len(tokens)} values: expected 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...')"


def load_yolo_split(
    root: Path, split: str, classes: Sequence[str] | None = None, *, check_images: bool = True
) -> Dataset:
    """One split of the YOLO data set ``root``, validated: the usable images, and every problem in ``report``.

    ``check_images`` False still reads each image's header: YOLO labels are fractions of the image's size.
    """
    sources = _sources_of(root, split)
    own = dataset_names(root)
    if classes:
        names = check_class_names(list(classes), "classes")
        id_names = own or names
    elif own:
        names = id_names = own
    else:
        raise InputError(
            "no class names: give them in data.yaml ('names: [a, b]') or classes.txt (one per line), or as the classes",
            root,
        )
    position = {n: k for k, n in enumerate(names)}
    report = ValidationReport(root=root, split=split)
    items: list[tuple[Path, Path]] = []
    for source in sources:
        found, problem = _images_of(source, root)
        if problem:
            report.problems.append(Problem(shown_path(root, source), "", "missing-image", problem))
        items.extend(found)
    report.num_ids = len(items)
    if not items and not report.problems:
        report.problems.append(Problem(shown_path(root, sources[0]), "", "empty-split", "the split has no image"))
    records: list[ImageRecord] = []
    seen: set[str] = set()
    labelled = 0
    for image, base in items:
        record_id = _record_id(image, base)
        if record_id in seen:
            report.problems.append(Problem(shown_path(root, image), record_id, "duplicate-id", "listed twice"))
            continue
        seen.add(record_id)
        problems: list[Problem] = []
        record = None
        labels_file = label_path(image)
        if not image.is_file():
            problems.append(Problem(shown_path(root, image), record_id, "missing-image", "image file missing"))
        else:
            try:
                width, height = image_size(image)
            except InputError as exc:
                problems.append(
                    Problem(shown_path(root, image), record_id, "unreadable-image", str(exc).split(": ", 1)[-1]))
            else:
                labelled += labels_file.is_file()
                record = _read_labels(labels_file, root, record_id, image, width, height, id_names, position, problems)
        report.problems.extend(problems)
        if problems:
            report.skipped_ids.append(record_id)
        elif record is not None:
            records.append(record)
    if items and labelled == 0 and not any(p.kind == "unreadable-image" for p in report.problems):
        example = label_path(items[0][0])
        raise DatasetError(
            f"none of the {len(items)} images of split {split!r} has a label file (the first would be "
            f"{shown_path(root, example)}): YOLO labels go in a labels/ folder that mirrors images/",
            path=root,
        )
    return Dataset(root=root, split=split, classes=names, records=records, report=report, format="yolo",
                   source=sources[0] if len(sources) == 1 else root)


def _read_labels(
    path: Path,
    root: Path,
    record_id: str,
    image: Path,
    width: int,
    height: int,
    id_names: Sequence[str],
    position: dict[str, int],
    problems: list[Problem],
) -> ImageRecord | None:
    """The record of one image from its label file (none or empty: a negative image)."""
    boxes, labels = [], []
    file = shown_path(root, path)
    lines: list[str] = []
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            problems.append(Problem(file, record_id, "malformed-label", f"cannot read the file ({exc.strerror})"))
    for n, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        parsed = _parse_line(tokens)
        if isinstance(parsed, str):
            problems.append(Problem(file, record_id, "malformed-label", f"line {n}: {parsed}"))
            continue
        cls, (cx, cy, w, h) = parsed
        where = f"line {n} ({line.strip()})"
        if not 0 <= cls < len(id_names):
            problems.append(Problem(file, record_id, "unknown-category",
                                    f"{where}: class id {cls}, but the names are 0..{len(id_names) - 1}"))
            continue
        if id_names[cls] not in position:
            problems.append(Problem(file, record_id, "unknown-class",
                                    f"{where}: class {id_names[cls]!r} is not in the class list"))
            continue
        box = from_yolo(cx, cy, w, h, width, height)
        wrong = box_problem(box, width, height, EDGE_TOLERANCE)
        if wrong is not None:
            hint = " (YOLO boxes are fractions of the image size, 0..1)" if max(cx, cy, w, h) > 1 else ""
            problems.append(Problem(file, record_id, wrong[0], f"{where}: {wrong[1]}{hint}"))
            continue
        boxes.append(clip_to_image(box, width, height))
        labels.append(position[id_names[cls]])
    if problems:
        return None
    return ImageRecord(
        id=record_id,
        image_path=image,
        width=width,
        height=height,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        difficult=np.zeros(len(labels), bool),
    )

"""Reading PASCAL VOC-format data sets.

A data set is any folder laid out as::

    JPEGImages/<id>.jpg|.jpeg|.png
    Annotations/<id>.xml
    ImageSets/Main/<split>.txt     one image id per line

The path a user gives may be that folder itself (``VOC2007/``), a ``VOCdevkit/`` holding one such folder
(or several, then ``VOC2007`` is preferred), or ``VOCdevkit/VOC2007/``; :func:`resolve_root` finds it.

Boxes are converted once, here, from VOC's 1-based inclusive pixels to the project's convention
(:mod:`fastrcnn_cli.boxes`). The ``difficult`` flag is kept.

Classes, in order of precedence: given explicitly (``--classes a,b,c`` or a file with one name per line);
a ``classes.txt`` at the data set's root; the 20 PASCAL VOC classes in their standard order when the folder
is a VOC release (``VOC2007``, ``VOC2012``, ...); otherwise every class name found in ``Annotations/``,
sorted. Index 0 of a model's outputs is always the background; ``labels`` here are 0-based indices into
``classes`` (so a model's class ``k + 1`` is ``classes[k]``). An annotation without ``<object>`` is a negative
image (background only), kept.

The entry points every command uses, :func:`load_dataset`, :func:`resolve_root`, :func:`available_splits` and
:func:`read_split_ids`, read COCO and YOLO data sets too: they hand over to :mod:`fastrcnn_cli.data.formats`,
which detects the format of the folder. :class:`VOCDataset` is :class:`fastrcnn_cli.data.records.Dataset`
(the name predates the other formats).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from fastrcnn_cli.boxes import from_voc, to_voc
from fastrcnn_cli.data.records import (  # noqa: F401 - re-exported: the names every command imports from here
    CLASSES_FILE,
    Dataset,
    ImageRecord,
    check_class_names,
    parse_classes_option,
    read_classes_file,
)
from fastrcnn_cli.errors import DatasetError, InputError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_VOC_RELEASE = re.compile(r"^VOC\d{4}$")


@dataclass
class ObjectAnnotation:
    """One ``<object>`` of an annotation file, as written (class name, not yet an index)."""

    name: str
    box: tuple[float, float, float, float]  #: our convention (0-based inclusive)
    difficult: bool
    raw: tuple[str, str, str, str]  #: xmin, ymin, xmax, ymax as written, for error messages


@dataclass
class Annotation:
    """One parsed annotation file."""

    path: Path
    filename: str | None
    width: int | None  #: from ``<size>``; None when absent or 0
    height: int | None
    objects: list[ObjectAnnotation]


#: the data set of any format (the name predates COCO and YOLO)
VOCDataset = Dataset


def is_voc_folder(path: Path) -> bool:
    return (path / "JPEGImages").is_dir() and (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()


_is_voc_folder = is_voc_folder


def resolve_root(path: str | Path, format: str | None = None) -> Path:
    """The root folder of the data set a user gave, in any format (``format``: "voc", "coco", "yolo" or None
    to detect it; :func:`fastrcnn_cli.data.formats.locate`). Raises :class:`InputError` naming the path."""
    from fastrcnn_cli.data.formats import locate

    return locate(path, format)[1]


def resolve_voc_root(path: str | Path) -> Path:
    """The folder holding JPEGImages/, Annotations/ and ImageSets/Main/ for a path a user gave."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError("no such data set folder", path)
    if not path.is_dir():
        raise InputError("a data set must be a folder (with JPEGImages/, Annotations/, ImageSets/Main/)", path)
    if _is_voc_folder(path):
        return path.resolve()
    candidates = sorted(p for p in path.iterdir() if p.is_dir() and _is_voc_folder(p))
    if not candidates:
        nested = path / "VOCdevkit"
        if nested.is_dir():
            return resolve_voc_root(nested)
        missing = [d for d in ("JPEGImages", "Annotations", "ImageSets/Main") if not (path / d).is_dir()]
        raise InputError(
            "not a PASCAL VOC-format data set: missing " + ", ".join(f"{d}/" for d in missing)
            + " (give VOC2007/, VOCdevkit/ or any folder with JPEGImages/, Annotations/, ImageSets/Main/)",
            path,
        )
    if len(candidates) == 1:
        return candidates[0].resolve()
    for preferred in ("VOC2007", "VOC2012"):
        for c in candidates:
            if c.name == preferred:
                return c.resolve()
    names = ", ".join(c.name for c in candidates)
    raise InputError(f"holds several data sets ({names}); give one of them", path)


def available_splits(root: Path, format: str | None = None) -> list[str]:
    """The split names of a data set's root folder, in any format (:func:`fastrcnn_cli.data.formats.available_splits`)."""
    from fastrcnn_cli.data.formats import available_splits as splits

    return splits(root, format)


def read_split_ids(root: Path, split: str, format: str | None = None) -> list[str]:
    """Image ids of a split in file order, in any format (:func:`fastrcnn_cli.data.formats.read_split_ids`)."""
    from fastrcnn_cli.data.formats import read_split_ids as split_ids

    return split_ids(root, split, format)


def voc_available_splits(root: Path) -> list[str]:
    main = root / "ImageSets" / "Main"
    # class-specific lists (aeroplane_train.txt) are not splits
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem or p.stem.count("_") == 0)


def voc_split_ids(root: Path, split: str) -> list[str]:
    """Image ids of a VOC split, in file order (the first token of each non-empty line)."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        splits = ", ".join(voc_available_splits(root)) or "none"
        raise InputError(f"no split named {split!r} (available: {splits})", path)
    ids = []
    spaced = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        tokens = line.split()
        if tokens:
            ids.append(tokens[0])
            if len(tokens) > 1 and tokens[1] not in ("-1", "0", "1"):  # not VOC's "<id> <label>" per-class line
                spaced.append(line.strip())
    if spaced:
        from fastrcnn_cli.console import warn

        warn(
            f"{path}: {len(spaced)} line(s) hold a space inside the image id, e.g. {spaced[0]!r}, which is read "
            f"as id {spaced[0].split()[0]!r}: VOC ids end at the first space; rename those images and annotations "
            "(e.g. spaces to '_') and list the new names"
        )
    return ids


def find_image(root: Path, image_id: str, filename: str | None = None) -> Path | None:
    """The image file of an id: ``JPEGImages/<id>.{jpg,jpeg,png}``, else the annotation's ``<filename>``."""
    folder = root / "JPEGImages"
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    if filename:
        for candidate in (folder / filename, folder / Path(filename).name):
            if candidate.is_file():
                return candidate
    return None


def _text(node: ET.Element | None, tag: str) -> str | None:
    if node is None:
        return None
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def parse_annotation(path: Path) -> Annotation:
    """Parse one VOC annotation file. Raises :class:`InputError` (naming the file) when malformed."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise InputError("annotation file missing", path) from None
    except ET.ParseError as exc:
        raise InputError(f"malformed XML ({exc})", path) from None
    root = tree.getroot()
    size = root.find("size")
    width = height = None
    try:
        if size is not None:
            w, h = _text(size, "width"), _text(size, "height")
            width = int(float(w)) if w else None
            height = int(float(h)) if h else None
    except ValueError:
        raise InputError("malformed XML (<size> is not a number)", path) from None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        if not name:
            raise InputError(f"malformed XML (object {i + 1} has no <name>)", path)
        bndbox = obj.find("bndbox")
        raw = tuple(_text(bndbox, k) for k in ("xmin", "ymin", "xmax", "ymax"))
        if bndbox is None or any(v is None or v == "" for v in raw):
            raise InputError(f"malformed XML (object {i + 1} '{name}' has no complete <bndbox>)", path)
        try:
            coords = tuple(float(v) for v in raw)  # type: ignore[arg-type]
        except ValueError:
            raise InputError(f"malformed XML (object {i + 1} '{name}' has a non-numeric box {raw})", path) from None
        difficult_text = _text(obj, "difficult")
        try:
            difficult = bool(int(float(difficult_text))) if difficult_text else False
        except ValueError:
            difficult = False
        objects.append(ObjectAnnotation(name, from_voc(*coords), difficult, raw))  # type: ignore[arg-type]
    return Annotation(
        path=path,
        filename=_text(root, "filename"),
        width=width or None,
        height=height or None,
        objects=objects,
    )


def annotation_xml(
    filename: str, width: int, height: int, names: Sequence[str], boxes: np.ndarray, difficult: Sequence[bool]
) -> str:
    """A VOC annotation file: ``boxes`` in our convention, written as VOC's 1-based integers
    (:func:`fastrcnn_cli.boxes.to_voc`, which rounds). No ``<object>`` for a negative image."""
    lines = [
        "<annotation>",
        "\t<folder>JPEGImages</folder>",
        f"\t<filename>{escape(filename)}</filename>",
        f"\t<size><width>{int(width)}</width><height>{int(height)}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for name, box, hard in zip(names, boxes, difficult):
        xmin, ymin, xmax, ymax = to_voc(box)
        lines += [
            "\t<object>",
            f"\t\t<name>{escape(name)}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{int(bool(hard))}</difficult>",
            f"\t\t<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


_check_class_names = check_class_names


def resolve_classes(root: Path, classes: Sequence[str] | None = None) -> tuple[tuple[str, ...], str]:
    """The class list of a data set and where it came from (for messages)."""
    if classes:
        return check_class_names(list(classes), "classes"), "given"
    if (root / CLASSES_FILE).is_file():
        return read_classes_file(root / CLASSES_FILE), CLASSES_FILE
    if _VOC_RELEASE.match(root.name):
        return VOC_CLASSES, "PASCAL VOC"
    names: set[str] = set()
    for xml in sorted((root / "Annotations").glob("*.xml")):
        try:
            names.update(o.name for o in parse_annotation(xml).objects)
        except InputError:
            continue  # reported by validation
    if not names:
        raise DatasetError("no class names found in Annotations/ (give the classes)", path=root / "Annotations")
    return tuple(sorted(names)), "annotations"


def load_voc_split(
    root: Path, split: str, classes: Sequence[str] | None = None, *, check_images: bool = True
) -> Dataset:
    """One split of the VOC folder ``root``, validated (:func:`fastrcnn_cli.data.validate.validate_split`);
    bad images are left out and listed in its ``report``."""
    from fastrcnn_cli.data.validate import validate_split

    class_names, _ = resolve_classes(root, classes)
    records, report = validate_split(root, split, class_names, check_images=check_images)
    source = root / "ImageSets" / "Main" / f"{split}.txt"
    return Dataset(root=root, split=split, classes=class_names, records=records, report=report, source=source)


def load_dataset(
    path: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    *,
    strict: bool = False,
    check_images: bool = True,
    warn: bool = True,
    format: str | None = None,
) -> Dataset:
    """Resolve, read and validate one split of a VOC, COCO or YOLO data set (``format`` None: detected from the
    folder). See :func:`fastrcnn_cli.data.formats.load_dataset`.

    Bad items are skipped with a warning table on stderr (``warn``), or, with ``strict``, the whole
    report is raised as a :class:`DatasetError`. A split with nothing usable left always raises.
    """
    from fastrcnn_cli.data.formats import load_dataset as load

    return load(path, split, classes, strict=strict, check_images=check_images, warn=warn, format=format)

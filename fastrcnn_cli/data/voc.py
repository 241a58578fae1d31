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
``classes`` (so a model's class ``k + 1`` is ``classes[k]``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastrcnn_cli.boxes import from_voc
from fastrcnn_cli.errors import DatasetError, InputError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
CLASSES_FILE = "classes.txt"
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


@dataclass
class ImageRecord:
    """One image of a split with its ground truth, in the project's box convention."""

    id: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  #: [N, 4] float32
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  #: [N] into classes
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))  #: [N] bool

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class VOCDataset:
    """A validated split of a VOC-format data set: the usable images and the classes."""

    root: Path
    split: str
    classes: tuple[str, ...]
    records: list[ImageRecord]
    report: object | None = None  #: the :class:`fastrcnn_cli.data.validate.ValidationReport`

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def num_boxes(self) -> int:
        return sum(r.num_objects for r in self.records)

    @property
    def is_voc_release(self) -> bool:
        return bool(_VOC_RELEASE.match(self.root.name))


def _is_voc_folder(path: Path) -> bool:
    return (path / "JPEGImages").is_dir() and (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()


def resolve_root(path: str | Path) -> Path:
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
            return resolve_root(nested)
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


def available_splits(root: Path) -> list[str]:
    main = root / "ImageSets" / "Main"
    # class-specific lists (aeroplane_train.txt) are not splits
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem or p.stem.count("_") == 0)


def read_split_ids(root: Path, split: str) -> list[str]:
    """Image ids of a split, in file order (the first token of each non-empty line)."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        splits = ", ".join(available_splits(root)) or "none"
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
        candidate = folder / Path(filename).name
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


def read_classes_file(path: str | Path) -> tuple[str, ...]:
    path = Path(path)
    if not path.is_file():
        raise InputError("classes file not found", path)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise InputError("classes file lists no class", path)
    return _check_class_names(names, str(path))


def _check_class_names(names: Sequence[str], source: str) -> tuple[str, ...]:
    seen = set()
    for n in names:
        if n in seen:
            raise InputError(f"class {n!r} is listed twice", source)
        if n.lower() in ("__background__", "background"):
            raise InputError("do not list the background class; it is added automatically", source)
        seen.add(n)
    return tuple(names)


def parse_classes_option(value: str | None) -> tuple[str, ...] | None:
    """``--classes``: a comma-separated list, or the path of a file with one class per line."""
    if value is None or value == "":
        return None
    if Path(value).is_file():
        return read_classes_file(value)
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"--classes {value!r} names no class")
    return _check_class_names(names, "--classes")


def resolve_classes(root: Path, classes: Sequence[str] | None = None) -> tuple[tuple[str, ...], str]:
    """The class list of a data set and where it came from (for messages)."""
    if classes:
        return _check_class_names(list(classes), "--classes"), "given"
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
        raise DatasetError("no class names found in Annotations/ (give --classes)", path=root / "Annotations")
    return tuple(sorted(names)), "annotations"


def load_dataset(
    path: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    *,
    strict: bool = False,
    check_images: bool = True,
    warn: bool = True,
) -> VOCDataset:
    """Resolve, read and validate one split. See :func:`fastrcnn_cli.data.validate.validate_split`.

    Bad items are skipped with a warning table on stderr (``warn``), or, with ``strict``, the whole
    report is raised as a :class:`DatasetError`. A split with nothing usable left always raises.
    """
    from fastrcnn_cli.data.validate import validate_split

    root = resolve_root(path)
    class_names, _ = resolve_classes(root, classes)
    records, report = validate_split(root, split, class_names, check_images=check_images)
    if report.problems:
        if strict:
            raise DatasetError(report.summary(), report.problems, path=root)
        if warn:
            report.print_warning()
    if not records:
        raise DatasetError(
            f"split {split!r} has no usable image ({report.summary()})", report.problems, path=root
        )
    return VOCDataset(root=root, split=split, classes=class_names, records=records, report=report)

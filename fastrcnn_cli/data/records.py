"""What a loaded data set is, whatever its format: images with their ground truth, and the class list.

VOC, COCO and YOLO data sets (:mod:`fastrcnn_cli.data.voc`, :mod:`~fastrcnn_cli.data.coco`,
:mod:`~fastrcnn_cli.data.yolo`) all load to a :class:`Dataset` of :class:`ImageRecord`: boxes in the project's
convention (:mod:`fastrcnn_cli.boxes`), labels as 0-based indices into ``classes`` (a model's class ``k + 1`` is
``classes[k]``; index 0 of its outputs is the background), and a ``difficult`` flag per box (VOC's ``difficult``,
COCO's ``iscrowd``: neither counted nor penalised by evaluation). An image without objects (a *negative* image)
is a record with no boxes, kept like any other.

Class lists: names are unique and never the background (:func:`check_class_names`); ``--classes`` is a
comma-separated list or a file with one name per line (:func:`parse_classes_option`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastrcnn_cli.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from fastrcnn_cli.data.validate import ValidationReport

#: the file at a data set's root that fixes its class order, one name per line (VOC and YOLO)
CLASSES_FILE = "classes.txt"
_VOC_RELEASE = re.compile(r"^VOC\d{4}$")


@dataclass
class ImageRecord:
    """One image of a split with its ground truth, in the project's box convention."""

    id: str  #: unique in the data set: VOC's id, a COCO ``file_name`` or YOLO image path without its suffix
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  #: [N, 4] float32
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  #: [N] into classes
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))  #: [N] bool
    #: [N] float32: a COCO file's own ``area`` of each object (its mask's, for COCO itself), which the COCO
    #: metrics use for small/medium/large; None when the format has none (the box area is used)
    areas: np.ndarray | None = None
    source_id: int | None = None  #: the image's ``id`` in its COCO file (None for VOC and YOLO)

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Dataset:
    """A validated split of a data set: the usable images and the classes."""

    root: Path
    split: str
    classes: tuple[str, ...]
    records: list[ImageRecord]
    report: ValidationReport | None = None  #: what validation found (None for a data set made from records)
    format: str = "voc"  #: "voc", "coco" or "yolo"
    #: the file (or image folder) the split came from: ImageSets/Main/<split>.txt, the COCO JSON, a YOLO list
    source: Path | None = None
    #: COCO: the category id of each class (``classes[k]`` is category ``category_ids[k]``); None otherwise
    category_ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def num_boxes(self) -> int:
        return sum(r.num_objects for r in self.records)

    @property
    def num_negative(self) -> int:
        """Images without any object (background only)."""
        return sum(1 for r in self.records if r.num_objects == 0)

    @property
    def is_voc_release(self) -> bool:
        return self.format == "voc" and bool(_VOC_RELEASE.match(self.root.name))


def check_class_names(names: Sequence[str], source: str) -> tuple[str, ...]:
    """``names`` as a tuple; :class:`InputError` naming ``source`` for a repeated name or the background."""
    seen = set()
    for n in names:
        if n in seen:
            raise InputError(f"class {n!r} is listed twice", source)
        if n.lower() in ("__background__", "background"):
            raise InputError("do not list the background class; it is added automatically", source)
        seen.add(n)
    return tuple(names)


def read_classes_file(path: str | Path) -> tuple[str, ...]:
    """One class name per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError("classes file not found", path)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise InputError("classes file lists no class", path)
    return check_class_names(names, str(path))


def parse_classes_option(value: str | None) -> tuple[str, ...] | None:
    """``--classes``: a comma-separated list, or the path of a file with one class per line."""
    if value is None or value == "":
        return None
    if Path(value).is_file():
        return read_classes_file(value)
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"the classes {value!r} name no class")
    return check_class_names(names, "classes")

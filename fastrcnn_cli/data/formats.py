"""One interface to data sets in three formats: PASCAL VOC, COCO and YOLO, detected from the folder.

Every command reads ground truth through :func:`load_dataset` (also importable from
:mod:`fastrcnn_cli.data.voc`, where it always was), which gives the same :class:`~fastrcnn_cli.data.records.Dataset`
of :class:`~fastrcnn_cli.data.records.ImageRecord` whatever the format, so training, evaluation and proposals
work on all three unchanged:

=========  ===============================================  ==============================================
format     the folder holds                                 a split is
=========  ===============================================  ==============================================
``voc``    JPEGImages/, Annotations/, ImageSets/Main/       ImageSets/Main/<split>.txt
           (:mod:`fastrcnn_cli.data.voc`)
``coco``   annotations/instances_<split>.json, or           the JSON file (by name, or its path)
           <split>/_annotations.coco.json, and the images
           (:mod:`fastrcnn_cli.data.coco`)
``yolo``   images/ and labels/, data.yaml or classes.txt    an image folder, a list file or a data.yaml key
           (:mod:`fastrcnn_cli.data.yolo`)
=========  ===============================================  ==============================================

Detection tries VOC, then COCO, then YOLO (a folder is rarely two of them); ``format`` forces one (then a COCO
folder may also be any folder with ``<split>.json`` files). Each format validates its split into the same
:class:`~fastrcnn_cli.data.validate.ValidationReport`; bad images are skipped with a warning, or, with
``strict``, the whole report is raised (:class:`~fastrcnn_cli.errors.DatasetError`, exit code 3). Negative
images (no objects) are kept in every format. The validation split goes by several names (``val``, Roboflow's
``valid``, ``validation``, COCO's ``val2017``): :func:`validation_split_name` finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastrcnn_cli.data import coco, yolo
from fastrcnn_cli.data.records import Dataset
from fastrcnn_cli.data.voc import load_voc_split, resolve_voc_root, voc_available_splits, voc_split_ids
from fastrcnn_cli.errors import DatasetError, InputError, SettingsError

FORMATS: tuple[str, ...] = ("voc", "coco", "yolo")
#: the names of a validation split, in order of preference (:func:`validation_split_name`)
VALIDATION_SPLITS: tuple[str, ...] = ("val", "valid", "validation")

_NEEDS = {
    "voc": "VOC: JPEGImages/, Annotations/ and ImageSets/Main/",
    "coco": "COCO: annotations/instances_<split>.json (or <split>/_annotations.coco.json) beside the images",
    "yolo": "YOLO: images/ and labels/ (or data.yaml)",
}


def check_format(format: str | None) -> str | None:
    if format is not None and format not in FORMATS:
        raise SettingsError("format", f"choose one of {', '.join(FORMATS)}, not {format!r}")
    return format


def locate(path: str | Path, format: str | None = None) -> tuple[str, Path]:
    """(format, root folder) of the data set at ``path`` (``format`` None: detected). :class:`InputError`
    naming the path, and what each format needs, when it is none."""
    check_format(format)
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError("no such data set folder", path)
    if not path.is_dir():
        raise InputError(
            "a data set must be a folder (" + "; ".join(_NEEDS.values()) + "); a COCO JSON file is given as the split",
            path,
        )
    voc_error: InputError | None = None
    if format in (None, "voc"):
        try:
            return "voc", resolve_voc_root(path)
        except InputError as exc:
            if format == "voc" or "several" in str(exc):
                raise
            voc_error = exc
    if format in (None, "coco"):
        root = coco.find_root(path, loose=format == "coco")
        if root is not None:
            return "coco", root
        if format == "coco":
            raise InputError(f"not a COCO data set ({_NEEDS['coco']}, or <split>.json files)", path)
    root = yolo.find_root(path)
    if root is not None:
        return "yolo", root
    if format == "yolo":
        raise InputError(f"not a YOLO data set ({_NEEDS['yolo']})", path)
    missing = str(voc_error).split("missing ", 1)[-1].split(" (give", 1)[0] if voc_error else ""
    raise InputError(
        "not a data set in a format fastrcnn reads: " + "; ".join(_NEEDS.values())
        + (f" (as VOC it lacks {missing})" if missing else ""),
        path,
    )


def available_splits(root: str | Path, format: str | None = None) -> list[str]:
    """The split names of a data set."""
    fmt, root = locate(root, format)
    if fmt == "voc":
        return voc_available_splits(root)
    return coco.available_splits(root) if fmt == "coco" else yolo.available_splits(root)


def validation_split_name(root: str | Path, format: str | None = None, *, exclude: str | None = None) -> str | None:
    """The split that validates a training run on this data set, as :func:`available_splits` names it: the first
    of :data:`VALIDATION_SPLITS` it has -- exactly, or with a year (COCO's ``val2017``) when only one has it --
    and that lists at least one image; ``exclude`` (the training split) is never chosen. None when there is none.

    Roboflow's exports call the split ``valid`` (COCO: ``valid/_annotations.coco.json``; YOLO: ``valid/images``
    when no ``data.yaml`` maps it to ``val``), Hugging Face's ``validation``; VOC, COCO and Ultralytics ``val``."""
    fmt, root = locate(root, format)
    splits = available_splits(root, fmt)
    for name in VALIDATION_SPLITS:
        dated = [s for s in splits if s.startswith(name) and s[len(name):].isdigit()]
        found = name if name in splits else (dated[0] if len(dated) == 1 else None)
        if found is not None and found != exclude and read_split_ids(root, found, fmt):
            return found
    return None


def read_split_ids(root: str | Path, split: str, format: str | None = None) -> list[str]:
    """The image ids of a split in its file's order, before validation. :class:`InputError` whose message
    starts "no split named" when there is no such split."""
    fmt, root = locate(root, format)
    if fmt == "voc":
        return voc_split_ids(root, split)
    return coco.split_ids(root, split) if fmt == "coco" else yolo.split_ids(root, split)


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
    """Resolve, read and validate one split of a data set in any format.

    ``classes``: the class names to use, in order (None: the data set's own: VOC's classes.txt or names found,
    COCO's categories, YOLO's names). ``check_images``: open every image (its size, and that it decodes).
    Bad items are skipped with a warning table on stderr (``warn``), or, with ``strict``, the whole
    report is raised as a :class:`DatasetError`. A split with nothing usable left always raises.
    """
    fmt, root = locate(path, format)
    if fmt == "voc":
        dataset = load_voc_split(root, split, classes, check_images=check_images)
    elif fmt == "coco":
        dataset = coco.load_coco_split(root, split, classes, check_images=check_images)
    else:
        dataset = yolo.load_yolo_split(root, split, classes, check_images=check_images)
    report = dataset.report
    assert report is not None
    if report.problems:
        if strict:
            raise DatasetError(report.summary(), report.problems, path=root)
        if warn:
            report.print_warning()
    if not dataset.records:
        raise DatasetError(f"split {split!r} has no usable image ({report.summary()})", report.problems, path=root)
    return dataset

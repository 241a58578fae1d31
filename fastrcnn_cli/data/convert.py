"""Converting a data set between PASCAL VOC, COCO and YOLO (``fastrcnn convert``).

The source is read like every command reads it (:func:`fastrcnn_cli.data.formats.load_dataset`: validated, bad
images skipped with a warning, or refused with ``strict``), so the copy holds what training would see, and is
written to a new folder:

=========  ====================================================================================================
``voc``    JPEGImages/<id>.<ext>, Annotations/<id>.xml, ImageSets/Main/<split>.txt, classes.txt
``coco``   images/<id>.<ext>, annotations/instances_<split>.json (every split's file names the shared images/)
``yolo``   images/<id>.<ext>, labels/<id>.txt, <split>.txt (one ``./images/...`` line per image), data.yaml
=========  ====================================================================================================

Images are shared by the splits (VOC's ``trainval`` is ``train`` + ``val``), and copied, hard-linked or
symlinked (``images``: ``copy``, the default, gives an independent data set; ``link`` falls back to a copy where
the file system refuses a hard link; ``symlink`` writes absolute links). An input is never written to: the
destination must be new (or an empty folder) and outside the source, and is written under a temporary name,
renamed into place only when complete.

What survives, within each format's rounding:

- boxes: VOC holds integers (other formats' float boxes are rounded to whole pixels there); COCO's bbox is
  written with :data:`COCO_DECIMALS` decimals; YOLO's fractions with
  :data:`~fastrcnn_cli.data.box_formats.YOLO_DECIMALS` (every VOC box comes back exactly, through either);
- classes: names and order (COCO's category ids are kept from a COCO source, else 1, 2, ...; YOLO's ids are
  the class order); image ids (file names) are kept, but for white space, which VOC's split files cannot hold
  (replaced by ``_``), and for two different images of one id in two splits (the later renamed ``<split>_<id>``);
- difficult (VOC) and iscrowd (COCO) are one flag and carry over between the two; **YOLO has no such flag**:
  those boxes are written as ordinary boxes (a warning says how many), so a YOLO copy trains on them and counts
  them in evaluation;
- negative images: kept (VOC: an annotation without objects; COCO: an image without annotations; YOLO: an
  empty label file);
- COCO's own image ids and annotation ``area`` carry over COCO to COCO. Anything else (VOC's pose and
  truncated, COCO's masks, licences and info) is not carried.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastrcnn_cli.boxes import from_voc, to_voc
from fastrcnn_cli.data.box_formats import YOLO_DECIMALS, to_coco, to_yolo
from fastrcnn_cli.data.formats import FORMATS, VALIDATION_SPLITS, available_splits, load_dataset, locate
from fastrcnn_cli.data.records import CLASSES_FILE, Dataset, ImageRecord
from fastrcnn_cli.data.voc import annotation_xml
from fastrcnn_cli.errors import InputError, OutputError, SettingsError
from fastrcnn_cli.io import atomic_write_text

IMAGE_MODES: tuple[str, ...] = ("copy", "link", "symlink")
#: decimals of the COCO bbox numbers written (float32 boxes of a COCO source come back to their own decimals)
COCO_DECIMALS = 3


@dataclass(frozen=True)
class ConvertSettings:
    """What to convert, to what, and how to place the images."""

    to: str  #: "voc", "coco" or "yolo"
    splits: tuple[str, ...] = ()  #: () = every split of the source
    images: str = "copy"  #: "copy", "link" (hard link, else copy) or "symlink"
    source_format: str | None = None  #: None: detected
    classes: tuple[str, ...] | None = None  #: None: the source's own
    strict: bool = False  #: stop on any problem of the source instead of leaving the bad images out

    def validate(self) -> None:
        if self.to not in FORMATS:
            raise SettingsError("to", f"choose one of {', '.join(FORMATS)}, not {self.to!r}")
        if self.images not in IMAGE_MODES:
            raise SettingsError("images", f"choose one of {', '.join(IMAGE_MODES)}, not {self.images!r}")
        if self.source_format is not None and self.source_format not in FORMATS:
            raise SettingsError("source_format", f"choose one of {', '.join(FORMATS)}, not {self.source_format!r}")


@dataclass
class ConversionSummary:
    source: Path
    source_format: str
    destination: Path
    format: str
    classes: tuple[str, ...]
    splits: dict[str, int]  #: split -> images
    images: int  #: distinct images written
    boxes: int  #: boxes over the distinct images
    negative_images: int
    placed: dict[str, int]  #: how the images were placed: copy / link / symlink -> count
    notes: list[str] = field(default_factory=list)  #: what did not carry over exactly, and why

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "source_format": self.source_format,
            "destination": str(self.destination),
            "format": self.format,
            "classes": list(self.classes),
            "splits": dict(self.splits),
            "images": self.images,
            "boxes": self.boxes,
            "negative_images": self.negative_images,
            "placed": dict(self.placed),
            "notes": list(self.notes),
        }


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def check_destination(destination: Path, sources: Sequence[Path]) -> Path:
    """``destination`` when it can be written: new or an empty folder, outside (and not above) every source."""
    destination = Path(destination).expanduser()
    for source in sources:
        if _inside(destination, source):
            raise OutputError(f"is inside the source data set {source}; choose a folder outside it", destination)
        if _inside(source, destination):
            raise OutputError(f"holds the source data set {source}; choose a new folder", destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise OutputError("exists and is not an empty folder; choose a new folder", destination)
    return destination


# --------------------------------------------------------------------------------------------------
# the images of all splits, each once, under an id every format can hold
# --------------------------------------------------------------------------------------------------


@dataclass
class _Image:
    id: str
    record: ImageRecord

    @property
    def file_name(self) -> str:
        """The image's path inside the images folder: its id and its own suffix."""
        return self.id + self.record.image_path.suffix


def _same(a: ImageRecord, b: ImageRecord) -> bool:
    return (
        a.image_path.resolve() == b.image_path.resolve()
        and np.array_equal(a.boxes, b.boxes)
        and np.array_equal(a.labels, b.labels)
        and np.array_equal(a.difficult, b.difficult)
    )


def _gather(datasets: dict[str, Dataset], to: str, notes: list[str]) -> tuple[list[_Image], dict[str, list[_Image]]]:
    """The distinct images (first seen first) and each split's images in its order."""
    images: list[_Image] = []
    by_id: dict[str, _Image] = {}
    per_split: dict[str, list[_Image]] = {}
    renamed_space = renamed_clash = 0
    for split, dataset in datasets.items():
        chosen = []
        for record in dataset.records:
            new_id = record.id
            if to == "voc" and re.search(r"\s", new_id):
                new_id = re.sub(r"\s+", "_", new_id)
                renamed_space += 1
            existing = by_id.get(new_id)
            if existing is not None and not _same(existing.record, record):
                base, n = f"{split}_{new_id}", 1
                new_id = base
                while new_id in by_id and not _same(by_id[new_id].record, record):
                    n += 1
                    new_id = f"{base}_{n}"
                renamed_clash += 1
                existing = by_id.get(new_id)
            if existing is None:
                existing = by_id[new_id] = _Image(new_id, record)
                images.append(existing)
            chosen.append(existing)
        per_split[split] = chosen
    if renamed_space:
        notes.append(f"{renamed_space} image id(s) with white space renamed (spaces to '_'): VOC split files end an "
                     "id at the first space")
    if renamed_clash:
        notes.append(f"{renamed_clash} image(s) share an id with a different image of another split: renamed "
                     "'<split>_<id>'")
    return images, per_split


def _place(source: Path, target: Path, mode: str) -> str:
    """Put the image ``source`` at ``target`` (new) by ``mode``; the mode used (a hard link may become a copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(source.resolve(), target)
        return "symlink"
    if mode == "link":
        try:
            os.link(source.resolve(), target)
            return "link"
        except OSError:  # another file system, or links refused (protected_hardlinks): copy
            pass
    shutil.copy2(source, target)
    return "copy"


# --------------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------------


def _write_voc(out: Path, classes: Sequence[str], images: list[_Image], splits: dict[str, list[_Image]],
               notes: list[str]) -> None:
    rounded = 0
    for image in images:
        r = image.record
        back = np.asarray([from_voc(*to_voc(b)) for b in r.boxes], np.float32).reshape(-1, 4)
        rounded += int(np.sum(np.abs(back - r.boxes).max(axis=1) > 1e-3)) if len(back) else 0
        xml = annotation_xml(image.file_name, r.width, r.height, [classes[k] for k in r.labels], r.boxes, r.difficult)
        atomic_write_text(out / "Annotations" / f"{image.id}.xml", xml)
    main = out / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, chosen in splits.items():
        atomic_write_text(main / f"{split}.txt", "".join(f"{i.id}\n" for i in chosen))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in classes))
    if rounded:
        notes.append(f"{rounded} box(es) rounded to whole pixels: VOC annotations hold integers")


def _coco_image_ids(images: list[_Image]) -> dict[str, int]:
    """A COCO image id per image: the source's COCO ids when every image has a distinct one, else the id as a
    number when all are digits (``000123`` -> 123, as the detect command's COCO results name them), else 1, 2, ..."""
    for ids in (
        [i.record.source_id for i in images],
        [int(i.id) if i.id.isascii() and i.id.isdigit() else None for i in images],
    ):
        if all(v is not None for v in ids) and len(set(ids)) == len(ids):
            return {i.id: int(v) for i, v in zip(images, ids)}  # type: ignore[arg-type]
    return {i.id: n for n, i in enumerate(images, start=1)}


def _write_coco(out: Path, classes: Sequence[str], category_ids: Sequence[int], images: list[_Image],
                splits: dict[str, list[_Image]], source: str) -> None:
    image_ids = _coco_image_ids(images)
    categories = [{"id": int(c), "name": n} for c, n in zip(category_ids, classes)]
    for split, chosen in splits.items():
        entries, annotations = [], []
        for image in chosen:
            r = image.record
            entries.append({"id": image_ids[image.id], "file_name": image.file_name, "width": r.width, "height": r.height})
            for k in range(r.num_objects):
                bbox = [round(v, COCO_DECIMALS) for v in to_coco(r.boxes[k])]
                area = float(r.areas[k]) if r.areas is not None else bbox[2] * bbox[3]
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": image_ids[image.id],
                    "category_id": int(category_ids[int(r.labels[k])]),
                    "bbox": bbox,
                    "area": round(area, COCO_DECIMALS),
                    "iscrowd": int(bool(r.difficult[k])),
                })
        document = {
            "info": {"description": f"converted by fastrcnn from {source}"},
            "images": entries,
            "annotations": annotations,
            "categories": categories,
        }
        atomic_write_text(out / "annotations" / f"instances_{split}.json", json.dumps(document))


def _yaml_key_splits(splits: Sequence[str]) -> dict[str, str]:
    """data.yaml's train/val/test -> the split written for each (``train2017`` for train, ``valid`` for val)."""
    out = {}
    for key, names in (("train", ("train",)), ("val", VALIDATION_SPLITS), ("test", ("test",))):
        exact = [s for s in splits if s in names]
        dated = [s for s in splits if any(s.startswith(n) and s[len(n):].isdigit() for n in names)]
        if exact or len(dated) == 1:
            out[key] = (exact or dated)[0]
    return out


def _write_yolo(out: Path, classes: Sequence[str], images: list[_Image], splits: dict[str, list[_Image]],
                notes: list[str], source: str) -> None:
    fmt = f"{{:.{YOLO_DECIMALS}f}}"
    difficult = 0
    for image in images:
        r = image.record
        difficult += int(r.difficult.sum())
        lines = [
            " ".join([str(int(label)), *(fmt.format(v) for v in to_yolo(box, r.width, r.height))])
            for box, label in zip(r.boxes, r.labels)
        ]
        atomic_write_text(out / "labels" / f"{image.id}.txt", "".join(f"{line}\n" for line in lines))
    for split, chosen in splits.items():
        atomic_write_text(out / f"{split}.txt", "".join(f"./images/{i.file_name}\n" for i in chosen))
    yaml = [f"# converted by fastrcnn from {source}; paths relative to this file's folder"]
    yaml += [f"{key}: {split}.txt" for key, split in _yaml_key_splits(list(splits)).items()]
    yaml += [f"nc: {len(classes)}", "names:"] + [f"  - {json.dumps(c)}" for c in classes]
    atomic_write_text(out / "data.yaml", "\n".join(yaml) + "\n")
    if difficult:
        notes.append(f"{difficult} difficult/iscrowd box(es) written as ordinary boxes: YOLO labels have no such "
                     "flag, so the YOLO copy trains on them and counts them in evaluation")


# --------------------------------------------------------------------------------------------------
# the conversion
# --------------------------------------------------------------------------------------------------


def convert_dataset(
    source: str | os.PathLike, destination: str | os.PathLike, settings: ConvertSettings, *, warn: bool = True
) -> ConversionSummary:
    """Convert the splits of the data set at ``source`` to a new data set at ``destination``."""
    settings.validate()
    source_format, root = locate(source, settings.source_format)
    destination = check_destination(Path(destination), [Path(source).expanduser(), root])
    splits = list(settings.splits) or available_splits(root, source_format)
    if not splits:
        raise InputError("the data set has no split to convert", root)
    datasets: dict[str, Dataset] = {}
    classes = settings.classes
    for split in splits:
        dataset = load_dataset(root, split, classes, strict=settings.strict, warn=warn, format=source_format)
        classes = classes or dataset.classes
        datasets[split] = dataset
    assert classes is not None
    first = next(iter(datasets.values()))
    category_ids = first.category_ids if first.category_ids and len(first.category_ids) == len(classes) else None
    notes: list[str] = []
    images, per_split = _gather(datasets, settings.to, notes)
    folder = "JPEGImages" if settings.to == "voc" else "images"

    work = destination.parent / f".{destination.name}.converting-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    placed: dict[str, int] = {}
    described = f"{root} ({source_format})"
    try:
        work.mkdir(parents=True)
        for image in images:
            how = _place(image.record.image_path, work / folder / image.file_name, settings.images)
            placed[how] = placed.get(how, 0) + 1
        if settings.to == "voc":
            _write_voc(work, classes, images, per_split, notes)
        elif settings.to == "coco":
            _write_coco(work, classes, category_ids or range(1, len(classes) + 1), images, per_split, described)
        else:
            _write_yolo(work, classes, images, per_split, notes, described)
        if destination.exists():
            destination.rmdir()  # checked empty above
        os.replace(work, destination)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise OutputError(f"cannot write the converted data set ({exc.strerror or exc})", destination) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if settings.images == "link" and placed.get("copy"):
        notes.append(f"{placed['copy']} image(s) copied: the file system refused a hard link")
    if warn:
        from fastrcnn_cli.console import warn as say

        for note in notes:
            say(note)
    return ConversionSummary(
        source=root,
        source_format=source_format,
        destination=destination.resolve(),
        format=settings.to,
        classes=tuple(classes),
        splits={s: len(v) for s, v in per_split.items()},
        images=len(images),
        boxes=sum(i.record.num_objects for i in images),
        negative_images=sum(1 for i in images if i.record.num_objects == 0),
        placed=placed,
        notes=notes,
    )

"""Detections written back as data sets and crops, to close the loop "detect, correct, retrain".

Three outputs, each a new folder (or an empty one), each optional (:class:`LabelsOutSettings`):

=========  ====================================================================================================
``voc``    a PASCAL VOC data set: ``JPEGImages/<id>.<ext>``, ``Annotations/<id>.xml`` (one ``<object>`` per
           detection, none for an image without detections), ``ImageSets/Main/<split>.txt``, ``classes.txt``
``yolo``   a YOLO data set: ``images/<id>.<ext>``, ``labels/<id>.txt`` (``class cx cy w h``, normalised, the
           class a 0-based index into ``classes.txt``), ``<split>.txt`` (``./images/<id>.<ext>`` per line),
           ``classes.txt``; with ``scores`` each line ends with the detection's score, as Ultralytics'
           ``--save-conf`` writes it (such lines are for review: the YOLO reader takes four numbers per box)
``crops``  one image per detection: ``<class>/<id>_<n>.jpg``, ``n`` = 1, 2, ... by decreasing score in the image
=========  ====================================================================================================

The data sets are what :func:`fastrcnn_cli.data.formats.load_dataset` reads (``fastrcnn validate``, ``train``,
``evaluate``): ``classes.txt`` lists every class of the model in its order (so a model trained on the folder
has the same class indices), and the boxes are written by the data layer's own converters
(:func:`fastrcnn_cli.data.voc.annotation_xml`, :func:`fastrcnn_cli.data.box_formats.to_yolo`). A box that the
format would store without area (VOC rounds to whole pixels: a detection under 1.5 pixels wide can become
``xmax == xmin``) is left out and counted, since the data set validation would refuse it.

Images: a still image is hard-linked into the data set (copied where the file system refuses a link) when the
format reads its type (VOC: .jpg, .jpeg, .png; YOLO: any image type), else written as PNG; a video frame is
written as JPEG. Boxes are in the pixels of the upright image (EXIF orientation applied), which is also how
the data layer reads a linked photo. An image's id is its file name's stem (white space replaced by ``_``, as
VOC split files end an id at a space; ``x_2`` for a second ``x``), a video frame's ``<video stem>_<frame>``
(6 digits).

Each folder is built under a temporary name beside it and renamed into place by :meth:`LabelsOut.finish`: a
run that fails leaves nothing, one stopped by Ctrl-C keeps what was detected (the caller finishes).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastrcnn_cli.boxes import from_voc, to_voc
from fastrcnn_cli.data.box_formats import YOLO_DECIMALS, from_yolo, to_yolo
from fastrcnn_cli.data.records import CLASSES_FILE
from fastrcnn_cli.data.validate import EDGE_TOLERANCE, box_problem
from fastrcnn_cli.data.voc import IMAGE_SUFFIXES as VOC_IMAGE_SUFFIXES
from fastrcnn_cli.data.voc import annotation_xml
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.errors import OutputError, SettingsError
from fastrcnn_cli.io import IMAGE_SUFFIXES, atomic_write, atomic_write_text, os_reason, write_image

KINDS = ("voc", "yolo", "crops")
FRAME_SUFFIX = ".jpg"  #: video frames, and crops
STILL_SUFFIX = ".png"  #: a still image of a type the format does not read


@dataclass(frozen=True)
class LabelsOutSettings:
    """Where to write each output (None: not written), the split's name, and YOLO scores."""

    voc: Path | None = None
    yolo: Path | None = None
    crops: Path | None = None
    split: str = "detect"  #: the split file written: ImageSets/Main/<split>.txt (VOC), <split>.txt (YOLO)
    scores: bool = False  #: YOLO lines end with the score

    def __post_init__(self) -> None:
        problems = []
        if not self.split or re.search(r"[\s/\\]", self.split) or self.split in (".", ".."):
            problems.append(("split", f"{self.split!r} cannot name a split file (no spaces or slashes)"))
        if self.scores and self.yolo is None:
            problems.append(("scores", "adds each score to the YOLO labels, but no YOLO folder is asked for"))
        if problems:
            raise SettingsError(*problems[0], *problems[1:])

    def folders(self) -> dict[str, Path]:
        """kind -> folder, for the outputs asked for."""
        return {k: Path(v) for k, v in (("voc", self.voc), ("yolo", self.yolo), ("crops", self.crops)) if v is not None}


@dataclass(frozen=True)
class WrittenLabels:
    """What one output holds once written."""

    kind: str  #: "voc", "yolo" or "crops"
    path: Path
    images: int
    boxes: int  #: boxes (or crops) written
    left_out: int  #: detections the format would store without area

    def describe(self) -> str:
        what = {"voc": "VOC data set", "yolo": "YOLO data set", "crops": "crops"}[self.kind]
        counted = (
            f"{self.boxes} crop(s) of {self.images} image(s)"
            if self.kind == "crops"
            else (f"{self.images} image(s), {self.boxes} box(es)")
        )
        dropped = f"; {self.left_out} detection(s) under a pixel wide or high left out" if self.left_out else ""
        return f"{what} {self.path}: {counted}{dropped}"


def safe_name(text: str) -> str:
    """``text`` usable as one file or folder name on any system (``/``, ``\\``, ``:``, control characters and
    the like replaced by ``_``)."""
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", text).strip()
    return "_" if name in ("", ".", "..") else name


def _place(source: Path, target: Path) -> None:
    """``source`` at ``target`` (new): a hard link, else an atomic copy."""
    try:
        os.link(source, target)
        return
    except OSError:  # another file system, or links refused (protected_hardlinks)
        pass
    with open(source, "rb") as f:
        atomic_write(target, lambda out: shutil.copyfileobj(f, out))


@dataclass
class _Output:
    kind: str
    final: Path
    work: Path
    images: int = 0
    boxes: int = 0
    left_out: int = 0
    listed: list[str] = field(default_factory=list)  #: split file lines


class LabelsOut:
    """Writes each image's detections as it comes (:meth:`add`); :meth:`finish` writes the split and class
    files and moves the folders into place, :meth:`abort` removes what was written."""

    def __init__(self, settings: LabelsOutSettings, classes: Sequence[str]) -> None:
        self.settings = settings
        self.classes = tuple(classes)
        self._used: set[str] = set()
        self._outputs: list[_Output] = []
        try:
            for kind, folder in settings.folders().items():
                folder = folder.expanduser()
                work = folder.parent / f".{folder.name}.detecting-{os.getpid()}"
                if work.exists():
                    shutil.rmtree(work)
                work.mkdir(parents=True)
                self._outputs.append(_Output(kind, folder, work))
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write there ({os_reason(exc)})", folder) from None

    @property
    def active(self) -> bool:
        return bool(self._outputs)

    def image_id(self, name: str) -> str:
        """A new id for an image named ``name`` (see the module docstring)."""
        base = re.sub(r"\s+", "_", safe_name(name))
        candidate, n = base, 1
        while candidate.lower() in self._used:
            n += 1
            candidate = f"{base}_{n}"
        self._used.add(candidate.lower())
        return candidate

    def add(self, name: str, detections: Detections, image: np.ndarray, source: Path | None = None) -> str:
        """Write the detections of one image (BGR ``image``; ``source``: its file, None for a video frame)
        to every output; returns the id it got."""
        image_id = self.image_id(name)
        order = np.argsort(-np.asarray(detections.scores), kind="stable")
        boxes = np.asarray(detections.boxes, np.float64).reshape(-1, 4)[order]
        labels = np.asarray(detections.labels, np.int64).reshape(-1)[order]
        scores = np.asarray(detections.scores, np.float64).reshape(-1)[order]
        try:
            for out in self._outputs:
                if out.kind == "voc":
                    self._add_voc(out, image_id, image, source, boxes, labels)
                elif out.kind == "yolo":
                    self._add_yolo(out, image_id, image, source, boxes, labels, scores)
                else:
                    self._add_crops(out, image_id, image, boxes, labels)
                out.images += 1
        except OSError as exc:
            raise OutputError(f"cannot write ({os_reason(exc)})", out.final) from None
        return image_id

    # -- each format ---------------------------------------------------------------------------------

    def _image_file(
        self, folder: Path, image_id: str, image: np.ndarray, source: Path | None, readable: Sequence[str]
    ) -> str:
        """Put the image into ``folder``; its file name there."""
        folder.mkdir(parents=True, exist_ok=True)
        suffix = source.suffix.lower() if source is not None else ""
        if source is not None and suffix in readable:
            name = image_id + suffix
            _place(source, folder / name)
        else:
            name = image_id + (FRAME_SUFFIX if source is None else STILL_SUFFIX)
            write_image(folder / name, image)
        return name

    def _add_voc(
        self, out: _Output, image_id: str, image: np.ndarray, source: Path | None, boxes: np.ndarray, labels: np.ndarray
    ) -> None:
        height, width = image.shape[:2]
        file_name = self._image_file(
            out.work / "JPEGImages", image_id, image, source, [s for s in VOC_IMAGE_SUFFIXES if s == s.lower()]
        )
        keep = []
        for i, box in enumerate(boxes):
            stored = from_voc(*to_voc(box))  # as the annotation will hold it: whole pixels
            if box_problem(stored, width, height) is None:
                keep.append(i)
        out.left_out += len(boxes) - len(keep)
        out.boxes += len(keep)
        names = [self.classes[int(k)] for k in labels[keep]]
        xml = annotation_xml(file_name, width, height, names, boxes[keep], [False] * len(keep))
        atomic_write_text(out.work / "Annotations" / f"{image_id}.xml", xml)
        out.listed.append(image_id)

    def _add_yolo(
        self,
        out: _Output,
        image_id: str,
        image: np.ndarray,
        source: Path | None,
        boxes: np.ndarray,
        labels: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        height, width = image.shape[:2]
        file_name = self._image_file(out.work / "images", image_id, image, source, IMAGE_SUFFIXES)
        fmt = f"{{:.{YOLO_DECIMALS}f}}"
        lines = []
        for box, label, score in zip(boxes, labels, scores):
            numbers = [fmt.format(v) for v in to_yolo(box, width, height)]
            stored = from_yolo(*(float(v) for v in numbers), width, height)  # as the reader will see it
            if box_problem(stored, width, height, EDGE_TOLERANCE) is not None:
                out.left_out += 1
                continue
            lines.append(" ".join([str(int(label)), *numbers, *([f"{score:.5f}"] if self.settings.scores else [])]))
        out.boxes += len(lines)
        atomic_write_text(out.work / "labels" / f"{image_id}.txt", "".join(f"{line}\n" for line in lines))
        out.listed.append(f"./images/{file_name}")

    def _add_crops(self, out: _Output, image_id: str, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> None:
        height, width = image.shape[:2]
        for n, (box, label) in enumerate(zip(boxes, labels), start=1):
            x1, y1, x2, y2 = (round(float(v)) for v in box)  # inclusive corners
            x1, x2 = min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)
            y1, y2 = min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)
            crop = image[y1 : max(y1, y2) + 1, x1 : max(x1, x2) + 1]
            write_image(out.work / safe_name(self.classes[int(label)]) / f"{image_id}_{n}{FRAME_SUFFIX}", crop)
            out.boxes += 1

    # -- the end -------------------------------------------------------------------------------------

    def finish(self) -> list[WrittenLabels]:
        """Write the split and class files and move every folder into place; what each holds."""
        written = []
        for out in self._outputs:
            try:
                if out.kind == "voc":
                    main = out.work / "ImageSets" / "Main"
                    main.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(main / f"{self.settings.split}.txt", "".join(f"{i}\n" for i in out.listed))
                    for sub in ("JPEGImages", "Annotations"):
                        (out.work / sub).mkdir(exist_ok=True)
                elif out.kind == "yolo":
                    atomic_write_text(out.work / f"{self.settings.split}.txt", "".join(f"{i}\n" for i in out.listed))
                    for sub in ("images", "labels"):
                        (out.work / sub).mkdir(exist_ok=True)
                if out.kind in ("voc", "yolo"):
                    atomic_write_text(out.work / CLASSES_FILE, "".join(f"{c}\n" for c in self.classes))
                if out.final.exists():
                    out.final.rmdir()  # checked empty before the work began
                os.replace(out.work, out.final)
            except OSError as exc:
                self.abort()
                raise OutputError(f"cannot write ({os_reason(exc)})", out.final) from None
            written.append(WrittenLabels(out.kind, out.final, out.images, out.boxes, out.left_out))
        self._outputs = []
        return written

    def abort(self) -> None:
        for out in self._outputs:
            shutil.rmtree(out.work, ignore_errors=True)
        self._outputs = []

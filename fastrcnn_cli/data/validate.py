"""Validating a data set split before any long job, reporting every problem at once with its file.

One report (:class:`ValidationReport`, problem kinds in :data:`KINDS`) for every format. For a VOC split (this
module) each image id is checked for: duplicate ids, the annotation file (present, well-formed XML), the image
file (present, readable), the size written in the XML against the image's real size, every box (inside the
image, x2 > x1 and y2 > y1 in VOC's pixels) and every class name (known). COCO
(:mod:`fastrcnn_cli.data.coco`) and YOLO (:mod:`fastrcnn_cli.data.yolo`) splits get the same checks in their
terms (bad JSON or label lines, unknown category ids, boxes outside the image, empty boxes, missing and
unreadable images) through :func:`box_problem` and :func:`image_size`. An empty split is a problem too. An
item with any problem is skipped as a whole (its boxes cannot be trusted); ``strict`` loading raises instead
(:func:`fastrcnn_cli.data.formats.load_dataset`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastrcnn_cli.data.records import ImageRecord
from fastrcnn_cli.data.voc import Annotation, find_image, parse_annotation, voc_split_ids
from fastrcnn_cli.errors import InputError


@dataclass(frozen=True)
class Problem:
    """One defect of a data set: which file, which image id, what kind, and what exactly."""

    file: str
    image_id: str
    kind: str  #: short key, e.g. "missing-image", "box-outside-image"
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


KINDS = {
    "empty-split": "empty split",
    "duplicate-id": "duplicate image id",
    "missing-annotation": "missing annotation",
    "malformed-xml": "malformed XML",
    "malformed-json": "malformed JSON",
    "malformed-label": "malformed label line",
    "missing-image": "missing image",
    "unreadable-image": "unreadable image",
    "size-mismatch": "size in the annotations differs from the image",
    "box-outside-image": "box outside the image",
    "degenerate-box": "box with no area (x2 <= x1 or y2 <= y1)",
    "unknown-class": "unknown class",
    "unknown-category": "unknown category id",
    "orphan-annotation": "annotation of an image not in the file",
}

#: how far (pixels) a box of a float format (COCO, YOLO) may reach past the image's edge and still count as
#: inside it (then clipped): the rounding of the numbers written, never a real error
EDGE_TOLERANCE = 0.01


@dataclass
class ValidationReport:
    root: Path
    split: str
    num_ids: int = 0
    problems: list[Problem] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def summary(self) -> str:
        if not self.problems:
            return f"split {self.split!r}: {self.num_ids} images, no problems"
        kinds = ", ".join(f"{n} {KINDS.get(k, k)}" for k, n in sorted(self.counts().items()))
        images = {p.image_id for p in self.problems if p.image_id}  # "": a problem of the split's file itself
        where = f" in {len(images)} of {self.num_ids} image(s)" if images else ""
        return f"split {self.split!r}: {len(self.problems)} problem(s){where}: {kinds}"

    def table(self, limit: int | None = 50):
        from rich.table import Table

        table = Table(title=f"Data set problems ({self.root}, split {self.split})", title_justify="left")
        table.add_column("file", overflow="fold")
        table.add_column("problem")
        table.add_column("detail", overflow="fold")
        shown = self.problems if limit is None else self.problems[:limit]
        for p in shown:
            table.add_row(p.file, KINDS.get(p.kind, p.kind), p.message)
        if limit is not None and len(self.problems) > limit:
            table.caption = f"... and {len(self.problems) - limit} more (use --json to see all)"
        return table

    def print(self, limit: int | None = 50) -> None:
        """A table on a terminal; one plain, grep-friendly line per problem otherwise."""
        from fastrcnn_cli.console import err

        if err.is_terminal:
            err.print(self.table(limit))
            return
        for p in self.problems:
            err.print(f"{p.file}: {KINDS.get(p.kind, p.kind)}: {p.message}", markup=False, soft_wrap=True)

    def print_warning(self) -> None:
        from fastrcnn_cli.console import warn

        self.print()
        warn(f"{self.summary()}; skipping those images (use --strict to stop instead)")

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "split": self.split,
            "images": self.num_ids,
            "skipped": sorted(set(self.skipped_ids)),
            "problems": [p.__dict__ for p in self.problems],
        }


def shown_path(root: Path, path: Path) -> str:
    """``path`` as reports show it: relative to the data set's parent folder when inside it."""
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


_rel = shown_path


def box_problem(
    box: tuple[float, float, float, float], width: int | None, height: int | None, tolerance: float = 0.0
) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with a box in our convention, or None: not finite or no area
    (``degenerate-box``), or reaching past the ``width`` x ``height`` image by more than ``tolerance`` pixels
    (``box-outside-image``; sizes None: not checked)."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        return "degenerate-box", "a coordinate is not a finite number"
    if x2 <= x1 or y2 <= y1:
        return "degenerate-box", f"no area: x2 <= x1 or y2 <= y1 (width {x2 - x1 + 1:g}, height {y2 - y1 + 1:g} px)"
    if width is not None and height is not None and (
        x1 < -tolerance or y1 < -tolerance or x2 > width - 1 + tolerance or y2 > height - 1 + tolerance
    ):
        return "box-outside-image", f"outside the {width}x{height} image"
    return None


def clip_to_image(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, ...]:
    """A box that passed :func:`box_problem` with a tolerance, clipped to (0, 0, W - 1, H - 1)."""
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width - 1.0), min(max(y1, 0.0), height - 1.0),
            min(max(x2, 0.0), width - 1.0), min(max(y2, 0.0), height - 1.0))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image (EXIF orientation applied) from its header, after checking that
    the file decodes. Raises InputError naming the file."""
    return _image_size(path)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image (as :func:`fastrcnn_cli.io.read_image` gives it) from the file's
    header, and a check that it decodes. Raises InputError."""
    from PIL import Image, UnidentifiedImageError

    # only the header is read here (no pixels are decoded), so Pillow's decompression-bomb guard does not apply
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:  # verify() must come right after open (Pillow), before any other read
            size = im.size
            im.verify()
        with Image.open(path) as im:
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # read_image turns it upright: 90 degrees
                size = size[::-1]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"unreadable image ({exc.__class__.__name__}: {exc})", path) from None
    if size[0] <= 0 or size[1] <= 0:
        raise InputError("the image has no pixels", path)
    return int(size[0]), int(size[1])


def check_item(
    root: Path, image_id: str, class_index: dict[str, int], check_images: bool = True
) -> tuple[ImageRecord | None, list[Problem]]:
    """Validate one image id; return its record (None when it has any problem) and its problems."""
    problems: list[Problem] = []
    xml_path = root / "Annotations" / f"{image_id}.xml"
    annotation: Annotation | None = None
    if not xml_path.is_file():
        problems.append(Problem(_rel(root, xml_path), image_id, "missing-annotation", "annotation file missing"))
    else:
        try:
            annotation = parse_annotation(xml_path)
        except InputError as exc:
            problems.append(Problem(_rel(root, xml_path), image_id, "malformed-xml", str(exc).split(": ", 1)[-1]))

    image_path = find_image(root, image_id, annotation.filename if annotation else None)
    width = height = None
    if image_path is None:
        problems.append(
            Problem(_rel(root, root / "JPEGImages" / f"{image_id}.jpg"), image_id, "missing-image",
                    "image file missing (looked for .jpg, .jpeg, .png)")
        )
    elif check_images:
        try:
            width, height = _image_size(image_path)
        except InputError as exc:
            problems.append(Problem(_rel(root, image_path), image_id, "unreadable-image", str(exc).split(": ", 1)[-1]))

    if annotation is None:
        return None, problems
    if width is None and not problems:
        # images not checked: trust the XML
        width, height = annotation.width, annotation.height
        if width is None or height is None:
            problems.append(Problem(_rel(root, xml_path), image_id, "malformed-xml", "no <size> and images not checked"))
    xml_rel = _rel(root, xml_path)
    if (
        width is not None
        and annotation.width is not None
        and annotation.height is not None
        and (annotation.width, annotation.height) != (width, height)
    ):
        problems.append(
            Problem(xml_rel, image_id, "size-mismatch",
                    f"<size> says {annotation.width}x{annotation.height}, the image is {width}x{height}")
        )
    boxes, labels, difficult = [], [], []
    for i, obj in enumerate(annotation.objects, start=1):
        where = f"object {i} '{obj.name}' ({', '.join(obj.raw)})"
        if obj.name not in class_index:
            problems.append(Problem(xml_rel, image_id, "unknown-class", f"{where}: class not in the class list"))
        x1, y1, x2, y2 = obj.box
        if x2 <= x1 or y2 <= y1:
            problems.append(Problem(xml_rel, image_id, "degenerate-box", f"{where}: xmax <= xmin or ymax <= ymin"))
        elif width is not None and height is not None and (x1 < 0 or y1 < 0 or x2 > width - 1 or y2 > height - 1):
            problems.append(
                Problem(xml_rel, image_id, "box-outside-image", f"{where}: outside the {width}x{height} image")
            )
        boxes.append(obj.box)
        labels.append(class_index.get(obj.name, -1))
        difficult.append(obj.difficult)
    if problems or image_path is None or width is None or height is None:
        return None, problems
    record = ImageRecord(
        id=image_id,
        image_path=image_path,
        width=int(width),
        height=int(height),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        difficult=np.asarray(difficult, bool),
    )
    return record, problems


def validate_split(
    root: Path, split: str, classes: tuple[str, ...], check_images: bool = True
) -> tuple[list[ImageRecord], ValidationReport]:
    """Check every item of a split; return the good records (in split order) and the full report."""
    ids = voc_split_ids(root, split)
    report = ValidationReport(root=root, split=split, num_ids=len(ids))
    split_file = _rel(root, root / "ImageSets" / "Main" / f"{split}.txt")
    if not ids:
        report.problems.append(Problem(split_file, "", "empty-split", "the split lists no image"))
        return [], report
    class_index = {name: i for i, name in enumerate(classes)}
    records: list[ImageRecord] = []
    counts = Counter(ids)
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            continue
        seen.add(image_id)
        if counts[image_id] > 1:
            report.problems.append(
                Problem(split_file, image_id, "duplicate-id", f"id {image_id!r} listed {counts[image_id]} times")
            )
        record, problems = check_item(root, image_id, class_index, check_images)
        report.problems.extend(problems)
        if problems:
            report.skipped_ids.append(image_id)
        if record is not None:
            records.append(record)
    return records, report

"""``fastrcnn convert``: a data set from one of VOC, COCO and YOLO to another (:mod:`fastrcnn_cli.data.convert`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli.app import ClassesOption, JsonOption, StrictOption, command, examples
from fastrcnn_cli.cli.options import DataFormat, DataFormatOption, data_format as format_name, split_option


class TargetFormat(str, Enum):
    voc = "voc"
    coco = "coco"
    yolo = "yolo"


class ImageMode(str, Enum):
    copy = "copy"
    link = "link"
    symlink = "symlink"


@command(
    epilog=examples(
        "fastrcnn convert VOCdevkit/VOC2007 voc07-coco --to coco",
        "fastrcnn convert my_voc/ my_yolo --to yolo --split train,val --images link",
        "fastrcnn convert roboflow_export/ my_voc --to voc   [dim]# COCO or YOLO, detected from the folder[/dim]",
        "fastrcnn convert coco/ coco-val-voc --to voc --split annotations/instances_val2017.json",
    ),
    flags={"to": "--to", "images": "--images", "source_format": "--data-format"},
)
def convert(
    src: Annotated[Path, typer.Argument(help="The data set to convert: a VOC, COCO or YOLO folder (detected).")],
    dst: Annotated[Path, typer.Argument(help="A new folder (or an empty one) outside SRC for the converted data set.")],
    to: Annotated[TargetFormat, typer.Option("--to", help="The format to write.", show_default=False)],
    split: Annotated[
        str | None,
        split_option("Splits to convert, comma-separated (a COCO split may be a JSON file's path). Default: every split."),
    ] = None,
    source_format: DataFormatOption = DataFormat.auto,
    images: Annotated[
        ImageMode,
        typer.Option("--images", help="Put the images in DST as copies, hard links (copies where the file system "
                                      "refuses a link) or absolute symlinks."),
    ] = ImageMode.copy,
    classes: ClassesOption = None,
    strict: StrictOption = False,
    json_: JsonOption = False,
) -> None:
    """Convert a data set between PASCAL VOC, COCO and YOLO, for this tool or the others.

    Boxes, classes, splits, negative images and difficult/iscrowd carry over (VOC rounds boxes to whole
    pixels; YOLO has no difficult flag: such boxes become ordinary ones, with a warning). Images are
    validated as training reads them: bad ones are left out with a warning (--strict: stop, exit code 3).
    DST is written under a temporary name and appears only when complete; nothing in SRC is written.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.convert import ConvertSettings, convert_dataset
    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.outputs import check_output_folder

    check_output_folder(dst, "DST", [src])
    settings = ConvertSettings(
        to=to.value,
        splits=tuple(s.strip() for s in (split or "").split(",") if s.strip()),
        images=images.value,
        source_format=format_name(source_format),
        classes=parse_classes_option(classes),
        strict=strict,
    )
    summary = convert_dataset(src, dst, settings, warn=True)
    if json_:
        print_json(summary.to_dict())
        return
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    placed = ", ".join(f"{count} {how}" for how, count in summary.placed.items())
    err.print(
        f"wrote {summary.destination} ({summary.format}) from {summary.source} ({summary.source_format}): "
        f"{summary.images} images ({placed}), {summary.boxes} boxes, {summary.negative_images} negative images, "
        f"{len(summary.classes)} classes; splits: {splits}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

"""``fastrcnn validate`` and ``fastrcnn make-synthetic``: checking a data set, and generating one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import ClassesOption, JsonOption, StrictOption, command, examples
from fastrcnn_cli.cli.options import DataFormat, DataFormatOption, data_format as format_name, split_option
from fastrcnn_cli.errors import DatasetError, InputError


@command(
    epilog=examples(
        "fastrcnn validate VOCdevkit/VOC2007 --split trainval",
        "fastrcnn validate my_data/ --split test --classes cat,dog --strict",
        "fastrcnn validate my_data/ --json > report.json",
        "fastrcnn validate coco/ --split val2017   [dim]# annotations/instances_val2017.json[/dim]",
        "fastrcnn validate roboflow_export/ --split valid --data-format coco",
        "fastrcnn validate yolo_data/ --split val   [dim]# data.yaml's val, or images/val + labels/val[/dim]",
    )
)
def validate(
    data: Annotated[
        Path,
        typer.Argument(help="A data set folder: VOC (VOC2007/, VOCdevkit/ or JPEGImages/ + Annotations/ + "
                            "ImageSets/Main/), COCO (annotations/instances_<split>.json) or YOLO (images/ + labels/)."),
    ],
    split: Annotated[
        str,
        split_option("Split name: VOC's ImageSets/Main/<split>.txt, COCO's JSON file (name or path), YOLO's folder "
                     "or list."),
    ] = "trainval",
    classes: ClassesOption = None,
    strict: StrictOption = False,
    data_format: DataFormatOption = DataFormat.auto,
    json_: JsonOption = False,
) -> None:
    """Check a data set split (VOC, COCO or YOLO) and report every problem at once, with file names.

    Missing or unreadable images, malformed XML or JSON, label lines that are not numbers, sizes that
    disagree with the image, boxes outside the image or with no area, unknown classes or category ids, an
    empty split and duplicate ids are all listed. Images without objects (negative images) are valid and
    counted. Exit code 3 when there is any problem with --strict, or when nothing usable is left.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.validate import ValidationReport
    from fastrcnn_cli.data.voc import load_dataset, parse_classes_option

    dataset = load_dataset(data, split, parse_classes_option(classes), strict=strict, warn=not json_,
                           format=format_name(data_format))
    report = dataset.report
    assert isinstance(report, ValidationReport)  # load_dataset always validates
    if json_:
        payload = report.to_dict()
        payload.update(format=dataset.format, classes=list(dataset.classes), usable_images=len(dataset),
                       negative_images=dataset.num_negative, boxes=dataset.num_boxes)
        print_json(payload)
    else:
        negatives = f" ({dataset.num_negative} without objects)" if dataset.num_negative else ""
        err.print(
            f"{dataset.root} ({dataset.format.upper()}) split {split!r}: {len(dataset)} usable images{negatives}, "
            f"{dataset.num_boxes} boxes, {len(dataset.classes)} classes ({', '.join(dataset.classes)})"
        )
    if strict and not report.ok:  # pragma: no cover - load_dataset raised already
        raise DatasetError(report.summary(), report.problems)


@command(
    "make-synthetic",
    epilog=examples(
        "fastrcnn make-synthetic shapes/",
        "fastrcnn make-synthetic shapes/ --train 600 --val 100 --test 200 --seed 1",
        "fastrcnn make-synthetic shapes20/ --classes 20 --train 500 --val 100 --test 200   [dim]# shape x fill[/dim]",
    ),
)
def make_synthetic(
    out: Annotated[Path, typer.Argument(help="Folder to write the data set to (created).")],
    train: Annotated[int, typer.Option(parser=ranges.count(0, 1_000_000), help="Images in the train split.")] = 40,
    val: Annotated[int, typer.Option(parser=ranges.count(0, 1_000_000), help="Images in the val split.")] = 10,
    test: Annotated[int, typer.Option(parser=ranges.count(0, 1_000_000), help="Images in the test split.")] = 10,
    seed: Annotated[int, typer.Option(parser=ranges.SEED, help="Random seed; the same seed gives the same files.")] = 0,
    classes: Annotated[
        str,
        typer.Option(
            "--classes",
            help="The classes: how many (up to 5 are plain shapes; 6-20 are shape x fill: solid, striped, dotted, "
            "outline) or their names, comma-separated (e.g. circle,star-striped).",
        ),
    ] = "5",
    json_: JsonOption = False,
) -> None:
    """Generate a VOC-format data set of coloured shapes (circle, square, triangle, star, ring) with exact boxes.

    Deterministic: the same settings and seed give byte-identical files. Splits train, val, test and
    trainval (train + val); a classes.txt at the root fixes the class order.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.synthetic import SyntheticSettings, make_synthetic_voc
    from fastrcnn_cli.outputs import check_output_folder  # here: it imports tempfile, a cost at start-up

    check_output_folder(out, "OUT")
    if out.exists() and any(out.iterdir()):
        raise InputError("folder exists and is not empty; choose a new folder", out)
    settings = SyntheticSettings(
        splits={"train": train, "val": val, "test": test}, classes=_synthetic_classes(classes), seed=seed
    )
    root = make_synthetic_voc(out, settings)
    if json_:
        print_json({"root": str(root), "splits": settings.splits, "classes": list(settings.classes), "seed": seed})
    else:
        err.print(f"wrote {sum(settings.splits.values())} images to {root} (classes: {', '.join(settings.classes)})")


def _synthetic_classes(text: str) -> tuple[str, ...]:
    """make-synthetic's ``--classes``: a count (the first N of the shapes, then shape x fill) or names."""
    from fastrcnn_cli.data.synthetic import FILLS, SHAPES, class_names

    most = len(SHAPES) * len(FILLS)
    if text.strip().isdigit():
        count = int(text)
        if not 1 <= count <= most:
            raise typer.BadParameter(
                f"{count} is not allowed (a count, 1 <= x <= {most}, or class names)", param_hint="--classes"
            )
        return class_names(count)
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    known = set(SHAPES) | {f"{shape}-{fill}" for shape in SHAPES for fill in FILLS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise typer.BadParameter(
            f"{', '.join(unknown) or 'no name'}: not a synthetic class (shapes {', '.join(SHAPES)}, alone or as "
            f"shape-fill with fills {', '.join(FILLS)})",
            param_hint="--classes",
        )
    return names

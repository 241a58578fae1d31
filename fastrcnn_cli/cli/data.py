"""``fastrcnn validate`` and ``fastrcnn make-synthetic``: checking a data set, and generating one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import ClassesOption, JsonOption, StrictOption, command, examples


@command(
    epilog=examples(
        "fastrcnn validate VOCdevkit/VOC2007 --split trainval",
        "fastrcnn validate my_data/ --split test --classes cat,dog --strict",
        "fastrcnn validate my_data/ --json > report.json",
    )
)
def validate(
    data: Annotated[Path, typer.Argument(help="A VOC-format data set: VOC2007/, VOCdevkit/ or any folder with JPEGImages/, Annotations/, ImageSets/Main/.")],
    split: Annotated[str, typer.Option("--split", "-s", help="Split name (a file in ImageSets/Main/).")] = "trainval",
    classes: ClassesOption = None,
    strict: StrictOption = False,
    json_: JsonOption = False,
) -> None:
    """Check a data set split and report every problem at once, with file names.

    Missing or unreadable images, malformed XML, sizes that disagree with the image, boxes outside the
    image or with x2 <= x1, unknown classes, an empty split and duplicate ids are all listed. Exit code 3
    when there is any problem with --strict, or when nothing usable is left.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.voc import load_dataset, parse_classes_option
    from fastrcnn_cli.errors import DatasetError

    dataset = load_dataset(data, split, parse_classes_option(classes), strict=strict, warn=not json_)
    report = dataset.report
    if json_:
        payload = report.to_dict()  # type: ignore[union-attr]
        payload.update(classes=list(dataset.classes), usable_images=len(dataset), boxes=dataset.num_boxes)
        print_json(payload)
    else:
        err.print(
            f"{dataset.root} split {split!r}: {len(dataset)} usable images, {dataset.num_boxes} boxes, "
            f"{len(dataset.classes)} classes ({', '.join(dataset.classes)})"
        )
    if strict and report is not None and not report.ok:  # pragma: no cover - load_dataset raised already
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
    num_classes: Annotated[
        int,
        typer.Option(
            "--classes", parser=ranges.count(1, 20),
            help="How many classes: up to 5 are plain shapes; 6-20 are shape x fill (solid, striped, dotted, outline).",
        ),
    ] = 5,
    json_: JsonOption = False,
) -> None:
    """Generate a VOC-format data set of coloured shapes (circle, square, triangle, star, ring) with exact boxes.

    Deterministic: the same settings and seed give byte-identical files. Splits train, val, test and
    trainval (train + val); a classes.txt at the root fixes the class order.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.synthetic import SyntheticSettings, class_names, make_synthetic_voc

    from fastrcnn_cli.outputs import check_output_folder

    check_output_folder(out, "OUT")
    if out.exists() and any(out.iterdir()):
        from fastrcnn_cli.errors import InputError

        raise InputError("folder exists and is not empty; choose a new folder", out)
    settings = SyntheticSettings(
        splits={"train": train, "val": val, "test": test}, classes=class_names(num_classes), seed=seed
    )
    root = make_synthetic_voc(out, settings)
    if json_:
        print_json({"root": str(root), "splits": settings.splits, "classes": list(settings.classes), "seed": seed})
    else:
        err.print(f"wrote {sum(settings.splits.values())} images to {root} (classes: {', '.join(settings.classes)})")

"""The VOC data layer: path forms, splits, classes, the box convention, validation and the generator."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fastrcnn_cli.boxes import from_voc, to_voc
from fastrcnn_cli.data.synthetic import SyntheticSettings, make_synthetic_voc
from fastrcnn_cli.data.voc import VOC_CLASSES, load_dataset, parse_classes_option, resolve_root
from fastrcnn_cli.errors import DatasetError, InputError


def test_raccoon_reads_160_trainval_40_test_217_boxes_one_class(raccoon: Path) -> None:
    trainval = load_dataset(raccoon, "trainval")
    test = load_dataset(raccoon, "test")
    assert len(trainval) == 160 and len(test) == 40
    assert trainval.num_boxes + test.num_boxes == 217
    assert trainval.classes == test.classes == ("raccoon",)
    assert trainval.report.ok and test.report.ok


def test_voc_corners_become_zero_based_inclusive_and_back() -> None:
    assert from_voc(1, 1, 10, 20) == (0.0, 0.0, 9.0, 19.0)
    assert to_voc((0.0, 0.0, 9.0, 19.0)) == (1, 1, 10, 20)


def test_boxes_are_read_in_the_project_convention(synthetic_voc: Path) -> None:
    ds = load_dataset(synthetic_voc, "train")
    record = ds.records[0]
    xml = (synthetic_voc / "Annotations" / f"{record.id}.xml").read_text()
    xmin = int(xml.split("<xmin>")[1].split("<")[0])
    assert record.boxes[0, 0] == xmin - 1
    assert record.boxes.dtype == np.float32 and record.labels.dtype == np.int64 and record.difficult.dtype == bool


@pytest.mark.parametrize("layout", ["plain", "devkit", "devkit/VOC2007", "parent-of-devkit"])
def test_every_usual_path_form_finds_the_data_set(synthetic_voc: Path, tmp_path: Path, layout: str) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    shutil.copytree(synthetic_voc, voc)
    given = {
        "plain": voc,
        "devkit": tmp_path / "VOCdevkit",
        "devkit/VOC2007": tmp_path / "VOCdevkit" / "VOC2007",
        "parent-of-devkit": tmp_path,
    }[layout]
    assert resolve_root(given) == voc.resolve()


def test_voc_release_folder_gets_the_20_classes_in_standard_order(synthetic_voc: Path, tmp_path: Path) -> None:
    voc = tmp_path / "VOC2012"
    shutil.copytree(synthetic_voc, voc)
    (voc / "classes.txt").unlink()
    # shapes are not VOC classes: every object is an unknown class, so nothing is usable
    with pytest.raises(DatasetError):
        load_dataset(voc, "train", warn=False)
    from fastrcnn_cli.data.voc import resolve_classes

    assert resolve_classes(voc)[0] == VOC_CLASSES


def test_classes_come_sorted_from_annotations_without_a_classes_file(synthetic_voc: Path, tmp_path: Path) -> None:
    root = tmp_path / "mine"
    shutil.copytree(synthetic_voc, root)
    (root / "classes.txt").unlink()
    ds = load_dataset(root, "trainval")
    assert list(ds.classes) == sorted(ds.classes)


def test_classes_option_takes_a_list_or_a_file(tmp_path: Path) -> None:
    assert parse_classes_option("cat, dog") == ("cat", "dog")
    f = tmp_path / "names.txt"
    f.write_text("# mine\nzebra\nant\n")
    assert parse_classes_option(str(f)) == ("zebra", "ant")
    with pytest.raises(InputError):
        parse_classes_option("cat,cat")


def test_png_images_and_any_split_name_work(tmp_path: Path) -> None:
    root = make_synthetic_voc(
        tmp_path / "png", SyntheticSettings(splits={"my-split": 3}, image_format=".png", seed=5)
    )
    ds = load_dataset(root, "my-split")
    assert len(ds) == 3 and all(r.image_path.suffix == ".png" for r in ds.records)


def test_missing_split_names_the_file_and_lists_the_available_ones(synthetic_voc: Path) -> None:
    with pytest.raises(InputError, match="available: test, train, trainval, val"):
        load_dataset(synthetic_voc, "nope")


def test_generator_is_deterministic_and_its_boxes_are_valid(tmp_path: Path) -> None:
    settings = SyntheticSettings(splits={"train": 4}, seed=7)
    a = make_synthetic_voc(tmp_path / "a", settings)
    b = make_synthetic_voc(tmp_path / "b", settings)
    for f in sorted((a / "JPEGImages").iterdir()):
        assert f.read_bytes() == (b / "JPEGImages" / f.name).read_bytes()
        xml = f.name.rsplit(".", 1)[0] + ".xml"
        assert (a / "Annotations" / xml).read_bytes() == (b / "Annotations" / xml).read_bytes()
    ds = load_dataset(a, "train")
    assert ds.report.ok and ds.num_boxes >= 4


def test_generator_boxes_are_tight_around_the_painted_shape(tmp_path: Path) -> None:
    """Each box edge touches the shape: the row/column just outside the box looks like background."""
    from fastrcnn_cli.io import read_image

    root = make_synthetic_voc(tmp_path / "t", SyntheticSettings(splits={"train": 3}, image_format=".png", clutter=0, seed=3))
    ds = load_dataset(root, "train")
    for r in ds.records:
        image = read_image(r.image_path).astype(np.float32)
        for x1, y1, x2, y2 in r.boxes.astype(int):
            inside = image[y1 : y2 + 1, x1 : x2 + 1]
            # the box's own border rows/columns contain shape pixels: they differ from the box corners more
            # than the background noise does
            edge_rows = [inside[0], inside[-1], inside[:, 0], inside[:, -1]]
            for edge in edge_rows:
                spread = np.abs(edge - np.median(edge, axis=0)).sum(axis=1).max()
                assert spread > 40


# --- validation -------------------------------------------------------------------------------------


def _break(root: Path) -> dict[str, str]:
    """Introduce one of each defect into a copy of a data set; return id -> expected problem kind."""
    ids = (root / "ImageSets/Main/train.txt").read_text().split()
    expected = {}
    (root / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    expected[ids[0]] = "missing-image"
    (root / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"this is not a jpeg")
    expected[ids[1]] = "unreadable-image"
    (root / "Annotations" / f"{ids[2]}.xml").write_text("<annotation><object>")
    expected[ids[2]] = "malformed-xml"
    xml = root / "Annotations" / f"{ids[3]}.xml"
    xml.write_text(xml.read_text().replace("<width>", "<width>1", 1))
    expected[ids[3]] = "size-mismatch"
    xml = root / "Annotations" / f"{ids[4]}.xml"
    text = xml.read_text()
    xmax = text.split("<xmax>")[1].split("<")[0]
    xml.write_text(text.replace(f"<xmax>{xmax}<", "<xmax>99999<", 1))
    expected[ids[4]] = "box-outside-image"
    xml = root / "Annotations" / f"{ids[5]}.xml"
    text = xml.read_text()
    xmin = text.split("<xmin>")[1].split("<")[0]
    xml.write_text(text.replace("<xmax>", f"<xmax>{xmin}<!--", 1).replace("</xmax>", "--></xmax>", 1))
    expected[ids[5]] = "degenerate-box"
    xml = root / "Annotations" / f"{ids[6]}.xml"
    text = xml.read_text()
    name = text.split("<name>")[1].split("<")[0]
    xml.write_text(text.replace(f"<name>{name}<", "<name>unicorn<", 1))
    expected[ids[6]] = "unknown-class"
    (root / "Annotations" / f"{ids[7]}.xml").unlink()
    expected[ids[7]] = "missing-annotation"
    with open(root / "ImageSets/Main/train.txt", "a") as f:
        f.write(ids[8] + "\n")
    expected[ids[8]] = "duplicate-id"
    return expected


@pytest.fixture
def broken_voc(synthetic_voc: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "broken"
    shutil.copytree(synthetic_voc, root)
    return root, _break(root)


def test_every_defect_is_reported_at_once_with_its_file(broken_voc: tuple[Path, dict[str, str]]) -> None:
    root, expected = broken_voc
    ds = load_dataset(root, "train", warn=False)
    found = {(p.image_id, p.kind) for p in ds.report.problems}
    for image_id, kind in expected.items():
        assert (image_id, kind) in found, (image_id, kind, found)
    for p in ds.report.problems:
        assert p.image_id in p.file or p.kind == "duplicate-id"
    # everything with a problem is skipped, except the duplicate which is kept once
    usable = set(ds.ids)
    assert not usable & {i for i, k in expected.items() if k != "duplicate-id"}
    assert len(ds) == 12 - 8


def test_strict_mode_raises_the_whole_report(broken_voc: tuple[Path, dict[str, str]]) -> None:
    root, expected = broken_voc
    with pytest.raises(DatasetError) as info:
        load_dataset(root, "train", strict=True)
    assert {p.kind for p in info.value.problems} == set(expected.values())


def test_empty_split_is_a_validation_error(synthetic_voc: Path, tmp_path: Path) -> None:
    root = tmp_path / "empty"
    shutil.copytree(synthetic_voc, root)
    (root / "ImageSets/Main/none.txt").write_text("\n")
    with pytest.raises(DatasetError, match="no usable image"):
        load_dataset(root, "none", warn=False)

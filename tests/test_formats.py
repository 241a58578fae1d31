"""COCO and YOLO data sets behind the one loader, their validation, and `fastrcnn convert` between the formats."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.data.box_formats import from_coco, from_yolo, to_coco, to_yolo
from fastrcnn_cli.data.convert import ConvertSettings, convert_dataset
from fastrcnn_cli.data.formats import available_splits, locate, read_split_ids, validation_split_name
from fastrcnn_cli.data.synthetic import SyntheticSettings, make_synthetic_voc
from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.data.yolo import read_simple_yaml
from fastrcnn_cli.errors import DatasetError, InputError, OutputError
from fastrcnn_cli.io import write_image

runner = CliRunner()


def _image(path: Path, width: int = 64, height: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((height, width, 3), 128, np.uint8))


def _coco_set(root: Path, annotations: list[dict] | None = None, images: list[dict] | None = None) -> Path:
    """COCO 2017's layout: annotations/instances_val2017.json and val2017/, sparse category ids 3, 7, 12."""
    images = images if images is not None else [
        {"id": 11, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 12, "file_name": "b.png", "width": 64, "height": 48},
        {"id": 13, "file_name": "empty.png", "width": 64, "height": 48},
    ]
    for im in images:
        _image(root / "val2017" / im["file_name"], im.get("width", 64), im.get("height", 48))
    document = {
        "images": images,
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 11, "category_id": 12, "bbox": [10, 20, 30, 20], "iscrowd": 0, "area": 500.5},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0.5, 1.25, 4.5, 8], "iscrowd": 1},
            {"id": 3, "image_id": 12, "category_id": 7, "bbox": [0, 0, 64, 48], "iscrowd": 0},
        ],
        "categories": [{"id": 12, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    return root


def _yolo_set(root: Path, yaml: str = "names: [cat, dog]\n") -> Path:
    """images/train + labels/train, a data.yaml, one empty and one missing label file (negative images)."""
    for name in ("a", "b", "empty", "unlabelled"):
        _image(root / "images" / "train" / f"{name}.jpg", 100, 50)
    labels = root / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.25 0.5 0.5 1.0\n")
    (labels / "b.txt").write_text("0 0.1 0.1 0.2 0.2 0.3 0.1\n")  # a polygon: its bounding box
    (labels / "empty.txt").write_text("")
    (root / "data.yaml").write_text(yaml)
    return root


# --- the box conventions --------------------------------------------------------------------------------


def test_coco_and_yolo_boxes_become_zero_based_inclusive_corners_and_back() -> None:
    assert from_coco([10, 20, 30, 40]) == (10.0, 20.0, 39.0, 59.0)  # 30 pixels wide: columns 10 .. 39
    assert to_coco((10.0, 20.0, 39.0, 59.0)) == [10.0, 20.0, 30.0, 40.0]
    # the whole 100 x 50 image
    assert from_yolo(0.5, 0.5, 1.0, 1.0, 100, 50) == (0.0, 0.0, 99.0, 49.0)
    assert to_yolo((0.0, 0.0, 99.0, 49.0), 100, 50) == (0.5, 0.5, 1.0, 1.0)
    box = (3.0, 7.0, 41.0, 18.0)
    assert np.allclose(from_yolo(*to_yolo(box, 64, 48), 64, 48), box)


# --- COCO ----------------------------------------------------------------------------------------------


def test_coco_split_gives_records_in_the_project_convention(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "coco")
    ds = load_dataset(root, "val2017", warn=False)
    assert ds.format == "coco" and ds.report.ok
    assert ds.classes == ("cat", "dog", "zebra")  # sorted by category id 3, 7, 12; names from the file
    assert ds.category_ids == (3, 7, 12)
    by_id = {r.id: r for r in ds.records}
    assert list(by_id) == ["a", "b", "empty"]  # the file's order; the negative image is kept
    a = by_id["a"]
    assert a.source_id == 11 and a.image_path == root / "val2017" / "a.png"
    assert a.boxes.tolist() == [[10, 20, 39, 39], [0.5, 1.25, 4.0, 8.25]]
    assert a.labels.tolist() == [2, 0] and a.difficult.tolist() == [False, True]  # iscrowd is difficult
    assert a.areas.tolist() == pytest.approx([500.5, 36.0])
    assert by_id["b"].boxes.tolist() == [[0, 0, 63, 47]]  # the whole image is inside it
    assert by_id["empty"].num_objects == 0 and ds.num_negative == 1


def test_coco_split_is_a_name_a_dated_name_or_a_path(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "coco")
    assert available_splits(root) == ["val2017"]
    assert len(load_dataset(root, "val", warn=False)) == 3  # the only instances_val<year>.json
    assert len(load_dataset(root, str(root / "annotations" / "instances_val2017.json"), warn=False)) == 3
    assert read_split_ids(root, "val2017") == ["a", "b", "empty"]
    with pytest.raises(InputError, match=r"no split named 'train' \(available: val2017"):
        load_dataset(root, "train")


def test_coco_given_classes_are_matched_by_name(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "coco")
    ds = load_dataset(root, "val2017", ["zebra", "cat", "dog"], warn=False)
    assert ds.records[0].labels.tolist() == [0, 1] and ds.category_ids == (12, 3, 7)
    ds = load_dataset(root, "val2017", ["dog"], warn=False)  # images with other classes are skipped, named
    assert ds.ids == ["b", "empty"] and {p.kind for p in ds.report.problems} == {"unknown-class"}


def test_roboflow_export_drops_the_placeholder_category(tmp_path: Path) -> None:
    root = tmp_path / "export"
    _image(root / "train" / "x.jpg")
    (root / "train" / "_annotations.coco.json").write_text(json.dumps({
        "images": [{"id": 0, "file_name": "x.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
        "categories": [{"id": 0, "name": "pets", "supercategory": "none"},
                       {"id": 1, "name": "cat", "supercategory": "pets"}],
    }))
    ds = load_dataset(root, "train", warn=False)
    assert ds.format == "coco" and ds.classes == ("cat",) and ds.category_ids == (1,)


def test_every_coco_defect_is_reported_with_its_file_and_only_those_images_skipped(tmp_path: Path) -> None:
    images = [{"id": i, "file_name": f"{n}.png", "width": 64, "height": 48}
              for i, n in enumerate(["ok", "outside", "flat", "unknown", "badbox", "gone", "size"], start=1)]
    root = _coco_set(tmp_path / "coco", images=images, annotations=[
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [50, 1, 20, 10]},
        {"id": 3, "image_id": 3, "category_id": 3, "bbox": [5, 5, 0, 10]},
        {"id": 4, "image_id": 4, "category_id": 99, "bbox": [1, 1, 10, 10]},
        {"id": 5, "image_id": 5, "category_id": 3, "bbox": [1, 1, "ten"]},
        {"id": 6, "image_id": 42, "category_id": 3, "bbox": [1, 1, 10, 10]},
    ])
    (root / "val2017" / "gone.png").unlink()
    _image(root / "val2017" / "size.png", 65, 48)
    ds = load_dataset(root, "val2017", warn=False)
    found = {(p.image_id, p.kind) for p in ds.report.problems}
    assert found == {
        ("outside", "box-outside-image"), ("flat", "degenerate-box"), ("unknown", "unknown-category"),
        ("badbox", "malformed-json"), ("gone", "missing-image"), ("size", "size-mismatch"), ("", "orphan-annotation"),
    }
    assert all(p.file == "coco/annotations/instances_val2017.json" for p in ds.report.problems)
    assert ds.ids == ["ok"]
    with pytest.raises(DatasetError) as info:
        load_dataset(root, "val2017", strict=True)
    assert len(info.value.problems) == 7


def test_a_coco_file_that_is_not_json_is_one_clear_problem(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "coco")
    (root / "annotations" / "instances_val2017.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match="no usable image") as info:
        load_dataset(root, "val2017", warn=False)
    (problem,) = info.value.problems
    assert problem.kind == "malformed-json" and problem.file.endswith("instances_val2017.json")
    assert "not valid JSON" in problem.message
    result = runner.invoke(app, ["validate", str(root), "--split", "val2017"])
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "instances_val2017.json" in result.output and "not valid JSON" in result.output


# --- YOLO ----------------------------------------------------------------------------------------------


def test_yolo_split_gives_records_in_the_project_convention(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo")
    ds = load_dataset(root, "train", warn=False)
    assert ds.format == "yolo" and ds.classes == ("cat", "dog") and ds.report.ok
    by_id = {r.id: r for r in ds.records}
    assert sorted(by_id) == ["a", "b", "empty", "unlabelled"]  # negative images kept: empty or no label file
    a = by_id["a"]
    # dog: centre (50, 25) of a 100 x 50 image, 20 x 20 pixels -> columns 40 .. 59, rows 15 .. 34
    assert a.boxes.tolist() == [[40, 15, 59, 34], [0, 0, 49, 49]]
    assert a.labels.tolist() == [1, 0] and not a.difficult.any()
    assert by_id["b"].boxes.tolist() == [[10, 5, 29, 9]]  # the polygon's bounding box: x 0.1 .. 0.3, y 0.1 .. 0.2
    assert by_id["empty"].num_objects == by_id["unlabelled"].num_objects == 0


@pytest.mark.parametrize(
    "yaml",
    [
        "names: [cat, dog]\n",
        "nc: 2\nnames: ['cat', \"dog\"]  # two\n",
        "names:\n  - cat\n  - dog\n",
        "names:\n  0: cat\n  1: dog\n",
        "names: {0: cat, 1: dog}\n",
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n",
    ],
)
def test_data_yaml_names_in_every_usual_form(tmp_path: Path, yaml: str) -> None:
    root = _yolo_set(tmp_path / "yolo", yaml)
    assert load_dataset(root, "train", warn=False).classes == ("cat", "dog")


def test_simple_yaml_reader_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("names:\n  - cat\n  nested: [1]\n")
    with pytest.raises(InputError, match="data.yaml"):
        read_simple_yaml(path)
    path.write_text("names: {0: cat, 2: dog}\n")
    root = _yolo_set(tmp_path / "yolo", path.read_text())
    with pytest.raises(InputError, match="'names' must map 0, 1"):
        load_dataset(root, "train")


def test_yolo_classes_txt_and_list_file_splits(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo")
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "few.txt").write_text("./images/train/a.jpg\nimages/train/b.jpg\n")
    assert set(available_splits(root)) == {"train", "few"}
    ds = load_dataset(root, "few", warn=False)
    assert ds.ids == ["train/a", "train/b"] and ds.classes == ("cat", "dog")  # ids relative to images/


def test_every_yolo_defect_is_reported_with_its_label_file(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo")
    labels = root / "labels" / "train"
    (labels / "a.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    (labels / "b.txt").write_text("0 50 25 20 10\n")  # pixels, not fractions
    (labels / "empty.txt").write_text("0 0.5 0.5\n")
    _image(root / "images" / "train" / "flat.jpg", 100, 50)
    (labels / "flat.txt").write_text("1 0.5 0.5 0 0.1\n")
    ds = load_dataset(root, "train", warn=False)
    found = {(p.image_id, p.kind) for p in ds.report.problems}
    assert found == {("a", "unknown-category"), ("b", "box-outside-image"), ("empty", "malformed-label"),
                     ("flat", "degenerate-box")}
    assert all(p.file == f"yolo/labels/train/{p.image_id}.txt" for p in ds.report.problems)
    assert "fractions of the image size" in next(p.message for p in ds.report.problems if p.image_id == "b")
    assert ds.ids == ["unlabelled"]


def test_yolo_labels_in_the_wrong_place_are_refused_not_read_as_negatives(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "yolo")
    shutil.move(root / "labels", root / "my_labels")
    (root / "labels").mkdir()
    with pytest.raises(DatasetError, match="none of the 4 images of split 'train' has a label file"):
        load_dataset(root, "train")


# --- detection of the format -----------------------------------------------------------------------------


def test_format_is_detected_and_can_be_forced(synthetic_voc: Path, tmp_path: Path) -> None:
    assert locate(synthetic_voc) == ("voc", synthetic_voc.resolve())
    assert locate(_coco_set(tmp_path / "coco"))[0] == "coco"
    assert locate(_yolo_set(tmp_path / "yolo"))[0] == "yolo"
    with pytest.raises(InputError, match="not a COCO data set"):
        locate(synthetic_voc, "coco")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="VOC: .*COCO: .*YOLO: ") as info:
        load_dataset(tmp_path / "nothing", "train")
    assert "nothing" in str(info.value)
    # a plain folder of COCO files is COCO only when forced
    plain = tmp_path / "plain"
    _image(plain / "images" / "a.png")
    (plain / "mine.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [],
                                                 "categories": [{"id": 1, "name": "x"}]}))
    assert load_dataset(plain, "mine", format="coco", warn=False).ids == ["a"]


# --- the validation split's name ------------------------------------------------------------------------


def _roboflow_coco(root: Path, splits: tuple[str, ...]) -> Path:
    """Roboflow's COCO export: <split>/_annotations.coco.json beside the split's images."""
    for split in splits:
        _image(root / split / f"{split}.jpg")
        (root / split / "_annotations.coco.json").write_text(json.dumps({
            "images": [{"id": 0, "file_name": f"{split}.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "cat"}],
        }))
    return root


def test_the_validation_split_is_found_under_each_of_its_names(synthetic_voc: Path, tmp_path: Path) -> None:
    assert validation_split_name(synthetic_voc) == "val"
    assert validation_split_name(synthetic_voc, exclude="val") is None  # training on val: no other to take
    assert validation_split_name(_coco_set(tmp_path / "coco2017")) == "val2017"  # dated, and the only one
    roboflow = _roboflow_coco(tmp_path / "roboflow", ("train", "valid", "test"))
    assert validation_split_name(roboflow) == "valid" and len(load_dataset(roboflow, "valid", warn=False)) == 1
    assert validation_split_name(_roboflow_coco(tmp_path / "no_val", ("train", "test"))) is None
    # YOLO from Roboflow: <split>/images + <split>/labels; "valid" unless a data.yaml names it "val"
    yolo = tmp_path / "yolo"
    for split in ("train", "valid"):
        _image(yolo / split / "images" / "x.jpg")
        (yolo / split / "labels").mkdir(parents=True)
        (yolo / split / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (yolo / "classes.txt").write_text("cat\n")
    assert validation_split_name(yolo) == "valid"
    (yolo / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: [cat]\n")
    assert validation_split_name(yolo, "yolo") == "val"
    # a validation split that lists no image is not one
    empty = tmp_path / "empty_val"
    shutil.copytree(synthetic_voc, empty)
    (empty / "ImageSets" / "Main" / "val.txt").write_text("")
    assert validation_split_name(empty) is None


# --- negative images ------------------------------------------------------------------------------------


def test_negative_images_are_kept_in_every_format(synthetic_voc: Path, tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    shutil.copytree(synthetic_voc, voc)
    first = (voc / "ImageSets/Main/train.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{first}.xml"
    text = xml.read_text()
    xml.write_text(text[: text.index("\t<object>")] + "</annotation>\n")
    ds = load_dataset(voc, "train")
    assert ds.report.ok and len(ds) == 12 and ds.records[0].num_objects == 0
    for fmt in ("coco", "yolo"):
        convert_dataset(voc, tmp_path / fmt, ConvertSettings(to=fmt, splits=("train",)), warn=False)
        other = load_dataset(tmp_path / fmt, "train")
        assert len(other) == 12 and other.num_negative == 1 and other.records[0].id == first


# --- convert ------------------------------------------------------------------------------------------


def _same_records(a, b, difficult: bool = True, atol: float = 0.0) -> None:
    assert a.classes == b.classes and a.ids == b.ids
    for ra, rb in zip(a.records, b.records):
        assert (ra.width, ra.height) == (rb.width, rb.height)
        np.testing.assert_allclose(ra.boxes, rb.boxes, atol=atol, rtol=0)
        assert ra.labels.tolist() == rb.labels.tolist()
        if difficult:
            assert ra.difficult.tolist() == rb.difficult.tolist()


@pytest.fixture(scope="module")
def difficult_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic set with difficult boxes (tiny objects) in every split."""
    root = tmp_path_factory.mktemp("formats") / "voc"
    make_synthetic_voc(root, SyntheticSettings(splits={"train": 8, "val": 3, "test": 3}, tiny_fraction=0.3, seed=4))
    assert sum(r.difficult.sum() for r in load_dataset(root, "trainval").records) > 0
    return root


@pytest.mark.parametrize("via", ["coco", "yolo"])
def test_round_trip_through_coco_and_yolo_gives_the_same_records(difficult_voc: Path, tmp_path: Path, via: str) -> None:
    middle = convert_dataset(difficult_voc, tmp_path / via, ConvertSettings(to=via), warn=False)
    assert middle.splits == {"test": 3, "train": 8, "trainval": 11, "val": 3} and middle.images == 14
    back = convert_dataset(tmp_path / via, tmp_path / "back", ConvertSettings(to="voc"), warn=False)
    assert back.source_format == via
    for split in ("train", "val", "test", "trainval"):
        original = load_dataset(difficult_voc, split)
        _same_records(original, load_dataset(tmp_path / via, split), difficult=via == "coco", atol=1e-3)
        again = load_dataset(tmp_path / "back", split)
        _same_records(original, again, difficult=via == "coco")  # VOC's integers come back exactly
        if via == "yolo":  # YOLO cannot hold difficult: said, and those boxes become ordinary ones
            assert not any(r.difficult.any() for r in again.records)
    if via == "yolo":
        assert any("difficult/iscrowd box(es) written as ordinary boxes" in n for n in middle.notes)


def test_convert_keeps_coco_ids_and_areas(tmp_path: Path) -> None:
    root = _coco_set(tmp_path / "coco")
    convert_dataset(root, tmp_path / "copy", ConvertSettings(to="coco", images="symlink"), warn=False)
    written = json.loads((tmp_path / "copy" / "annotations" / "instances_val2017.json").read_text())
    assert [c["id"] for c in written["categories"]] == [3, 7, 12]
    assert [im["id"] for im in written["images"]] == [11, 12, 13]
    assert written["annotations"][0]["area"] == 500.5 and written["annotations"][1]["iscrowd"] == 1
    assert (tmp_path / "copy" / "images" / "a.png").is_symlink()
    _same_records(load_dataset(root, "val2017"), load_dataset(tmp_path / "copy", "val2017"))


def test_convert_never_writes_into_the_source(synthetic_voc: Path, tmp_path: Path) -> None:
    before = sorted((p.relative_to(synthetic_voc), p.stat().st_mtime_ns) for p in synthetic_voc.rglob("*"))
    with pytest.raises(OutputError, match="inside the source"):
        convert_dataset(synthetic_voc, synthetic_voc / "out", ConvertSettings(to="coco"), warn=False)
    with pytest.raises(OutputError, match="holds the source"):
        convert_dataset(synthetic_voc, synthetic_voc.parent, ConvertSettings(to="coco"), warn=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(OutputError, match="not an empty folder"):
        convert_dataset(synthetic_voc, tmp_path / "full", ConvertSettings(to="coco"), warn=False)
    assert (tmp_path / "full" / "x").read_text() == "keep"
    convert_dataset(synthetic_voc, tmp_path / "linked", ConvertSettings(to="yolo", images="link"), warn=False)
    assert sorted((p.relative_to(synthetic_voc), p.stat().st_mtime_ns) for p in synthetic_voc.rglob("*")) == before
    assert not list(tmp_path.glob(".*converting*"))


def test_convert_command(synthetic_voc: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(synthetic_voc), str(tmp_path / "c"), "--to", "coco", "-s", "test,val",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["splits"] == {"test": 4, "val": 4} and summary["format"] == "coco"
    result = runner.invoke(app, ["convert", str(synthetic_voc), str(synthetic_voc / "c"), "--to", "yolo"])
    assert result.exit_code == 1 and "inside the source" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["convert", str(synthetic_voc), str(tmp_path / "d"), "--to", "voc", "-s", "nope"])
    assert result.exit_code == 1 and "no split named 'nope'" in result.output


def test_raccoon_coco_and_yolo_exports_load_to_the_voc_boxes(raccoon: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    original = {s: load_dataset(raccoon, s) for s in ("trainval", "test")}
    for fmt in ("coco", "yolo"):
        convert_dataset(raccoon, tmp_path / fmt, ConvertSettings(to=fmt, splits=("trainval", "test"), images="symlink"),
                        warn=False)
        for split, ds in original.items():
            _same_records(ds, load_dataset(tmp_path / fmt, split), difficult=fmt == "coco", atol=1e-3)
    print(f"raccoon exports checked in {time.perf_counter() - start:.1f} s")

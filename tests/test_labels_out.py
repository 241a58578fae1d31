"""Labels out of `fastrcnn detect`: a VOC data set that `fastrcnn validate` reads back with the detected boxes,
a YOLO data set (round trip through the YOLO reader), crops, and COCO results whose ids match a COCO ground
truth (pycocotools gives AP 1 for perfect detections); outputs never overwrite anything.

Detections come from the oracle head of ``test_detect`` with the ground-truth boxes as proposals: the real
proposal-reading, box decoding, NMS and output code, with the right answer known (the ground truth itself).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from fastrcnn_cli.boxes import from_voc, to_voc
from fastrcnn_cli.data.synthetic import SHAPES
from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.errors import SettingsError
from fastrcnn_cli.labels_out import LabelsOut, LabelsOutSettings
from fastrcnn_cli.results import sequential_image_ids
from tests.test_detect import assert_clean_failure, install_oracle, make_checkpoint, oracle_proposals, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt")


@pytest.fixture
def photos(synthetic_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The 4 test images of the synthetic set, renamed as a user's photos are (one with a space), their
    ground-truth proposals in a folder, and the oracle installed: detections are the ground truth."""
    folder, props = tmp_path / "photos", tmp_path / "props"
    folder.mkdir()
    props.mkdir()
    truth, records = {}, {}
    for n, record in enumerate(load_dataset(synthetic_voc, "test", warn=False).records):
        name = f"holiday {n}.jpg" if n == 0 else f"img_{n}.jpg"
        (folder / name).write_bytes(record.image_path.read_bytes())
        stem = Path(name).stem
        truth[stem] = (record.boxes, [SHAPES[k] for k in record.labels])
        records[stem] = record
        np.save(props / f"{stem}.npy", oracle_proposals(record.boxes, record.width, record.height))
    install_oracle(monkeypatch, truth, key=lambda image_id: Path(image_id).stem)
    return {"folder": folder, "props": props, "records": records, "truth": truth}


def detect(photos: dict, checkpoint: Path, *args) -> object:
    return run("detect", photos["folder"], "--weights", checkpoint, "--proposals", photos["props"], *args)


def by_stem(dataset) -> dict:
    """VOC/YOLO record of each photo, by the photo's stem (the space of 'holiday 0' became '_')."""
    return {r.id.replace("_", " ") if r.id.startswith("holiday") else r.id: r for r in dataset.records}


def test_save_voc_is_a_data_set_validate_reads_with_the_detected_boxes(
    photos: dict, checkpoint: Path, tmp_path: Path
) -> None:
    voc, doc_path = tmp_path / "labelled", tmp_path / "d.json"
    result = detect(photos, checkpoint, "--save-voc", voc, "--save-json", doc_path)
    assert result.exit_code == 0, result.output
    total = sum(len(boxes) for boxes, _ in photos["truth"].values())
    assert f"wrote VOC data set {voc}: 4 image(s), {total} box(es)" in " ".join(result.stderr.split())
    # the real `fastrcnn validate`: a valid data set, every image usable, every detected box there
    checked = run("validate", voc, "--split", "detect", "--strict", "--json")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["usable_images"] == 4 and report["boxes"] == total and report["classes"] == list(SHAPES)
    assert (voc / "ImageSets" / "Main" / "detect.txt").read_text().split() == ["holiday_0", "img_1", "img_2", "img_3"]
    dataset = load_dataset(voc, "detect", warn=False)
    doc = json.loads(doc_path.read_text())
    detected = {Path(i["file"]).stem: i["detections"] for i in doc["images"]}
    for stem, record in by_stem(dataset).items():
        boxes, names = photos["truth"][stem]
        # VOC holds whole pixels: the stored boxes are the detections rounded, here exactly the ground truth
        got = sorted((dataset.classes[k], tuple(b)) for b, k in zip(record.boxes.tolist(), record.labels))
        assert got == sorted((n, tuple(b)) for n, b in zip(names, boxes.tolist()))
        assert got == sorted((d["class"], from_voc(*to_voc(d["box"]))) for d in detected[stem])
        assert record.image_path.read_bytes() == (photos["folder"] / f"{stem}.jpg").read_bytes()
        assert not record.difficult.any()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_save_txt_round_trips_through_the_yolo_reader(photos: dict, checkpoint: Path, tmp_path: Path) -> None:
    yolo, scored = tmp_path / "yolo", tmp_path / "scored"
    result = detect(photos, checkpoint, "--save-txt", yolo, "--split", "round1")
    assert result.exit_code == 0, result.output
    assert (yolo / "classes.txt").read_text().split() == list(SHAPES)
    dataset = load_dataset(yolo, "round1", format="yolo", warn=False)
    assert dataset.format == "yolo" and len(dataset) == 4 and dataset.classes == SHAPES
    for stem, record in by_stem(dataset).items():
        boxes, names = photos["truth"][stem]
        order = np.lexsort(boxes.T[::-1])
        got = record.boxes[np.lexsort(record.boxes.T[::-1])]
        np.testing.assert_allclose(got, boxes[order], atol=1e-3)  # 6 decimals of the image side
        assert sorted(SHAPES[k] for k in record.labels) == sorted(names)
    line = (yolo / "labels" / "img_1.txt").read_text().splitlines()[0].split()
    assert len(line) == 5 and line[0] in {"0", "1", "2", "3", "4"}
    # --save-conf: each line ends with the detection's score
    result = detect(photos, checkpoint, "--save-txt", scored, "--save-conf", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    scores = sorted(d["score"] for d in doc["images"][1]["detections"])
    lines = (scored / "labels" / "img_1.txt").read_text().splitlines()
    assert sorted(float(x.split()[5]) for x in lines) == pytest.approx(scores, abs=1e-5)


def test_save_crops_one_file_per_detection_by_class(photos: dict, checkpoint: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.io import read_image

    crops = tmp_path / "crops"
    result = detect(photos, checkpoint, "--save-crops", crops, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = set()
    for image in doc["images"]:
        stem = Path(image["file"]).stem.replace(" ", "_")
        for n, d in enumerate(image["detections"], start=1):
            path = crops / d["class"] / f"{stem}_{n}.jpg"
            expected.add(path)
            x1, y1, x2, y2 = d["box"]
            assert read_image(path).shape[:2] == (round(y2 - y1) + 1, round(x2 - x1) + 1)
    assert set(crops.rglob("*.jpg")) == expected
    assert len(expected) == sum(len(boxes) for boxes, _ in photos["truth"].values())


def test_coco_results_use_the_ground_truths_ids(photos: dict, checkpoint: Path, tmp_path: Path) -> None:
    """A COCO ground truth with its own image ids and sparse category ids: the results carry those ids, and
    pycocotools scores the (perfect) detections AP 1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from fastrcnn_cli.data.box_formats import to_coco

    category = {name: 10 * (k + 1) + 7 for k, name in enumerate(SHAPES)}
    gt = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in category.items()][::-1]}
    for n, (stem, record) in enumerate(sorted(photos["records"].items())):
        gt["images"].append(
            {"id": 900 + 3 * n, "file_name": f"{stem}.jpg", "width": record.width, "height": record.height}
        )
        for box, label in zip(record.boxes, record.labels):
            bbox = to_coco(box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": 900 + 3 * n,
                    "iscrowd": 0,
                    "category_id": category[SHAPES[label]],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                }
            )
    gt["images"].append({"id": 5, "file_name": "not_given.jpg", "width": 10, "height": 10})
    gt_path, results = tmp_path / "instances_test.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    result = detect(photos, checkpoint, "--save-coco", results, "--coco-gt", gt_path, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    ids = {Path(i["file"]).stem: i["image_id"] for i in doc["images"]}
    assert ids == {stem: 900 + 3 * n for n, stem in enumerate(sorted(photos["records"]))}
    entries = json.loads(results.read_text())
    assert len(entries) == len(gt["annotations"]) and {e["category_id"] for e in entries} <= set(category.values())
    assert doc["categories"] == [{"id": category[n], "name": n} for n in SHAPES]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        evaluation = COCOeval(coco, coco.loadRes(str(results)), "bbox")
        evaluation.params.imgIds = sorted(ids.values())
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    # an image the ground truth lacks, or a ground truth without a class of the model: refused before any work
    del gt["images"][0]
    gt_path.write_text(json.dumps(gt))
    assert_clean_failure(
        detect(photos, checkpoint, "--save-coco", results, "--coco-gt", gt_path),
        1,
        "instances_test.json",
        "1 image(s) have no entry",
        "holiday 0.jpg",
    )
    gt_path.write_text("{not json")
    assert_clean_failure(detect(photos, checkpoint, "--coco-gt", gt_path), 1, "instances_test.json", "not valid JSON")


def test_coco_ids_without_a_ground_truth_are_integers() -> None:
    assert sequential_image_ids([Path("a/000456.jpg"), Path("b/000012.png")]) == [456, 12]
    assert sequential_image_ids([Path("a/000456.jpg"), Path("cat.jpg")]) == [1, 2]
    assert sequential_image_ids([Path("a/7.jpg"), Path("b/007.jpg")]) == [1, 2]  # the same number twice


def test_labels_outputs_are_new_folders_never_overwriting(photos: dict, checkpoint: Path, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert_clean_failure(detect(photos, checkpoint, "--save-voc", used), 1, "used", "not an empty folder")
    assert (used / "keep.txt").read_text() == "mine"
    same = tmp_path / "same"
    assert_clean_failure(detect(photos, checkpoint, "--save-voc", same, "--save-txt", same), 1, "name the same folder")
    assert_clean_failure(detect(photos, checkpoint, "--save-voc", same, "--save-json", same / "d.json"), 1, "inside")
    assert_clean_failure(detect(photos, checkpoint, "--save-crops", photos["folder"]), 1, "not an empty folder")
    assert_clean_failure(detect(photos, checkpoint, "--save-conf"), 2, "--save-conf")
    assert_clean_failure(detect(photos, checkpoint, "--save-voc", same, "--split", "my split"), 2, "--split")
    assert not same.exists()


def test_boxes_a_format_cannot_hold_are_left_out_and_counted(tmp_path: Path) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = [[10, 10, 30, 20], [5.2, 5, 5.4, 30], [7, 5, 7, 30], [0, 0, 59, 39]]
    det = Detections("x", boxes, [0.9, 0.8, 0.75, 0.7], [0, 1, 1, 0])
    labels = LabelsOut(LabelsOutSettings(voc=tmp_path / "voc", yolo=tmp_path / "yolo"), ["a", "b"])
    assert labels.add("frame 1", det, image) == "frame_1"
    assert labels.add("frame 1", det, image) == "frame_1_2"
    written = {w.kind: w for w in labels.finish()}
    # VOC rounds x 5.2..5.4 and x 7..7 to one pixel column, xmax == xmin, which the data layer refuses as
    # "no area"; YOLO's fractions keep the first's width (x2 - x1 + 1 = 1.2 pixels), and read the second back
    # exactly as written, one pixel column (box_formats.from_yolo), which is refused as in VOC
    assert (written["voc"].boxes, written["voc"].left_out) == (4, 4)
    assert (written["yolo"].boxes, written["yolo"].left_out) == (6, 2)
    assert len(load_dataset(tmp_path / "yolo", "detect", strict=True, warn=False)) == 2
    assert sorted(p.name for p in (tmp_path / "voc" / "JPEGImages").iterdir()) == ["frame_1.jpg", "frame_1_2.jpg"]
    assert len(load_dataset(tmp_path / "voc", "detect", strict=True, warn=False)) == 2
    with pytest.raises(SettingsError) as info:
        LabelsOutSettings(crops=tmp_path / "c", scores=True)
    assert [f for f, _ in info.value.problems] == ["scores"]

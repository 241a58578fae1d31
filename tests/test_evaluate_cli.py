"""`fastrcnn evaluate`: end to end on the synthetic set, re-scoring saved detections, class matching by name,
output files, and bad inputs (clear message, exit code, no traceback).

An oracle head (see tests/test_detect.py) with ground-truth proposals must score AP 1.0 through the whole path
(proposals -> detection -> saved detections -> VOC evaluation), whatever the order of the model's classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastrcnn_cli.data.synthetic import SHAPES
from fastrcnn_cli.detections import Detections, load_detections
from fastrcnn_cli.pipeline import ClassMatchError, remap_detections, resolve_eval_classes, restrict_ground_truth
from tests.test_detect import assert_clean_failure, install_oracle, make_checkpoint, oracle_proposals, run, truth_of


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    return {
        "shapes": make_checkpoint(folder / "shapes.pt"),
        "reversed": make_checkpoint(folder / "reversed.pt", tuple(reversed(SHAPES))),
        "other": make_checkpoint(folder / "other.pt", ("circle", "square", "dog")),
    }


def _ground_truth_proposals(monkeypatch: pytest.MonkeyPatch, calls: list | None = None) -> None:
    def fake(dataset, settings, cache_dir=None, workers=None):
        if calls is not None:
            calls.append(settings)
        return {r.id: oracle_proposals(r.boxes, r.width, r.height) for r in dataset.records}

    import fastrcnn_cli.proposals as proposals_module

    monkeypatch.setattr(proposals_module, "load_or_compute_proposals", fake)


def _evaluate(*args: object):
    return run("evaluate", *args)


# ------------------------------------------------------------------------------------------------------------
# classes
# ------------------------------------------------------------------------------------------------------------


def test_classes_match_by_name_and_mismatches_name_both_sides() -> None:
    assert resolve_eval_classes(("b", "a"), ("a", "b"), None) == ("a", "b")
    assert resolve_eval_classes(("a", "b", "x"), ("a", "b", "y"), ("b",)) == ("b",)
    with pytest.raises(ClassMatchError) as info:
        resolve_eval_classes(("a", "b", "x"), ("a", "b", "y"), None)
    message = str(info.value)  # the core names the setting, the command line its flag
    assert "the model lacks y" in message and "the data set lacks x" in message and "give classes a,b" in message
    assert "give --classes a,b" in info.value.render(lambda field: "--" + field) and "--" not in message
    assert info.value.exit_code == 1
    with pytest.raises(ClassMatchError, match="share no class"):
        resolve_eval_classes(("x",), ("y",), None)
    with pytest.raises(ClassMatchError, match="^classes: the data set has no class x.*the model has no class y"):
        resolve_eval_classes(("a", "x"), ("a", "y"), ("x", "y"))
    with pytest.raises(ClassMatchError, match="the detections file"):
        resolve_eval_classes(("x",), ("y",), None, "the detections file d.npz")


def test_remapping_detections_and_ground_truth_by_name() -> None:
    det = Detections("i", [[0, 0, 9, 9], [5, 5, 20, 20], [1, 1, 2, 2]], [0.9, 0.8, 0.7], [0, 1, 2])
    (mapped,) = remap_detections([det], ("x", "a", "b"), ("b", "a"))
    assert mapped.labels.tolist() == [1, 0] and mapped.scores.tolist() == pytest.approx([0.8, 0.7])

    class Rec:
        id = "i"
        boxes = np.array([[0, 0, 9, 9], [1, 1, 5, 5]], np.float32)
        labels = np.array([0, 1])
        difficult = np.array([False, True])

    (gt,) = restrict_ground_truth([Rec()], ("a", "b"), ("b",))
    assert gt.labels.tolist() == [0] and gt.difficult.tolist() == [True] and gt.boxes.tolist() == [[1, 1, 5, 5]]


# ------------------------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------------------------


def test_evaluate_end_to_end_then_rescore_gives_the_same_map(
    synthetic_voc: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """A random model through the real proposal module: plumbing, output files, and re-scoring."""
    out = tmp_path / "eval"
    result = _evaluate(synthetic_voc, "--split", "test", "--weights", checkpoints["shapes"], "--out", out,
                       "--proposal-cache", tmp_path / "cache", "--workers", "1", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [c["name"] for c in payload["classes"]] == list(SHAPES)
    assert payload["headline"] == "area" and payload["num_images"] == 4
    assert {"proposals_s", "network_s", "postprocess_s", "evaluation_s", "total_s"} <= set(payload["times"])
    assert (out / "results.json").is_file() and (out / "pr.png").stat().st_size > 0
    saved = load_detections(out / "detections.npz")
    assert saved.classes == list(SHAPES) and len(saved.detections) == 4
    assert all(len(d) <= 100 for d in saved.detections) and saved.meta["split"] == "test"
    assert "mAP" in result.stderr and "network" in result.stderr and " %" in result.stderr

    again = _evaluate(synthetic_voc, "--split", "test", "--detections", out / "detections.npz",
                      "--out", tmp_path / "rescore", "--json")  # fmt: skip
    assert again.exit_code == 0, again.output
    rescored = json.loads(again.stdout)
    for key in ("map", "map_voc07", "map_area"):
        assert rescored[key] == payload[key]
    assert [c["ap_voc07"] for c in rescored["classes"]] == [c["ap_voc07"] for c in payload["classes"]]
    assert not (tmp_path / "rescore" / "detections.npz").exists()


def test_a_perfect_head_scores_ap_one_whatever_the_class_order(
    synthetic_voc: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_oracle(monkeypatch, truth_of(synthetic_voc, "test"), key=lambda image_id: image_id)
    calls: list = []
    _ground_truth_proposals(monkeypatch, calls)
    for name in ("shapes", "reversed"):
        out = tmp_path / name
        result = _evaluate(synthetic_voc, "--split", "test", "--weights", checkpoints[name], "--out", out, "--json",
                           "--metric", "voc07")  # fmt: skip
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["headline"] == "voc07"
        assert payload["map"] == pytest.approx(1.0) and payload["map_area"] == pytest.approx(1.0)
        for c in payload["classes"]:
            assert c["ap_voc07"] is None or c["ap_voc07"] == pytest.approx(1.0)
            assert c["fp"] == 0
        # re-scoring the saved detections (labels in the model's own class order) gives 1.0 too
        again = _evaluate(synthetic_voc, "--split", "test", "--detections", out / "detections.npz", "--out", out / "re", "--json")
        assert json.loads(again.stdout)["map_area"] == pytest.approx(1.0)
    assert calls and calls[0].top == 300  # the checkpoint's proposal settings


def test_class_mismatch_is_a_clear_failure_and_classes_maps(
    synthetic_voc: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ground_truth_proposals(monkeypatch)
    result = _evaluate(synthetic_voc, "--split", "test", "--weights", checkpoints["other"], "--out", tmp_path / "x")
    assert_clean_failure(result, 1, "the model lacks triangle, star, ring", "the data set lacks dog", "--classes circle,square")
    assert not (tmp_path / "x").exists()  # stopped before writing anything
    result = _evaluate(synthetic_voc, "--split", "test", "--weights", checkpoints["other"], "--out", tmp_path / "y",
                       "--classes", "square,circle", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads(result.stdout)["classes"]] == ["square", "circle"]
    result = _evaluate(synthetic_voc, "--split", "test", "--weights", checkpoints["other"], "--classes", "dog")
    assert_clean_failure(result, 1, "the data set has no class dog")


def test_default_output_folders_do_not_overwrite(
    synthetic_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli.data.voc import load_dataset
    from fastrcnn_cli.detections import save_detections

    ds = load_dataset(synthetic_voc, "test", warn=False)
    dets = [Detections(r.id, r.boxes, np.ones(len(r.boxes)), r.labels) for r in ds.records]
    save_detections(tmp_path / "d.npz", dets, ds.classes)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = _evaluate(synthetic_voc, "--split", "test", "--detections", tmp_path / "d.npz")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "eval" / "pr.png").is_file() and (tmp_path / "runs" / "eval2" / "results.json").is_file()
    plot = tmp_path / "elsewhere" / "curves.png"
    assert _evaluate(synthetic_voc, "--split", "test", "--detections", tmp_path / "d.npz", "--plot", plot).exit_code == 0
    assert plot.is_file()


# ------------------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_clear_failures(synthetic_voc: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_text("junk")
    assert_clean_failure(_evaluate(synthetic_voc, "--detections", junk), 1, "not a fastrcnn detections file")
    assert_clean_failure(_evaluate(synthetic_voc, "--weights", junk), 1, "not a fastrcnn checkpoint")
    assert_clean_failure(
        _evaluate(synthetic_voc, "--weights", checkpoints["shapes"], "--detections", junk), 1, "not both"
    )
    assert_clean_failure(_evaluate(tmp_path / "nowhere", "--weights", checkpoints["shapes"]), 1, "nowhere")
    assert_clean_failure(_evaluate(synthetic_voc, "--split", "nosuch", "--weights", checkpoints["shapes"]), 1, "nosuch")
    assert_clean_failure(_evaluate(synthetic_voc, "--metric", "coco2017"), 2, "voc07, area, coco")
    assert_clean_failure(_evaluate(synthetic_voc, "--data-format", "coco", "--weights", checkpoints["shapes"]), 1,
                         "not a COCO data set")


def test_detections_of_another_split_are_refused(synthetic_voc: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.data.voc import load_dataset
    from fastrcnn_cli.detections import save_detections

    ds = load_dataset(synthetic_voc, "train", warn=False)
    save_detections(tmp_path / "d.npz", [Detections(r.id, r.boxes, np.ones(len(r.boxes)), r.labels) for r in ds.records], ds.classes)
    result = _evaluate(synthetic_voc, "--split", "test", "--detections", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert_clean_failure(result, 1, "not in the evaluated split")


# ------------------------------------------------------------------------------------------------------------
# --metric coco
# ------------------------------------------------------------------------------------------------------------


def _pycocotools(folder: Path) -> dict[str, float | None]:
    """pycocotools run directly on the two files an evaluation wrote, as its users run it."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from fastrcnn_cli.coco_metrics import STATS

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(folder / "coco_gt.json"))
        evaluator = COCOeval(gt, gt.loadRes(str(folder / "coco_results.json")), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: None if v < 0 else float(v) for name, v in zip(STATS, evaluator.stats)}


@pytest.fixture(scope="module")
def shipped_coco_run(synthetic_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """The shipped model (a real detector of these shapes) on the synthetic test split, with --metric coco."""
    out = tmp_path_factory.mktemp("coco") / "eval"
    result = _evaluate(synthetic_voc, "--split", "test", "--metric", "coco", "--out", out,
                       "--proposal-cache", out.parent / "cache", "--workers", "1", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout), result.stderr


def test_metric_coco_equals_pycocotools_run_on_the_files_it_wrote(
    shipped_coco_run: tuple[Path, dict, str], synthetic_voc: Path
) -> None:
    from fastrcnn_cli.coco_metrics import STATS
    from fastrcnn_cli.data.voc import load_dataset

    out, payload, stderr = shipped_coco_run
    expected = _pycocotools(out)
    assert {name: payload["coco"][name] for name in STATS} == expected
    assert payload["headline"] == "coco" and payload["map"] == expected["ap"]
    assert 0.2 < expected["ap"] < expected["ap50"] <= 1.0  # a detector that finds shapes, not exactly
    assert json.loads((out / "results.json").read_text())["coco"] == payload["coco"]
    files = {"ground_truth": str(out / "coco_gt.json"), "results": str(out / "coco_results.json")}
    assert payload["coco_files"] == files
    # a class without ground truth is reported as such, and the mean is over the others only
    classes = payload["coco"]["classes"]
    for c in classes:
        assert (c["ap"] is None) == (c["num_positives"] == 0), c
    defined = [c["ap"] for c in classes if c["ap"] is not None]
    assert payload["map"] == pytest.approx(sum(defined) / len(defined), abs=1e-12)
    # the ground truth pycocotools read: every image with its size, every box with its area (w x h for VOC)
    records = {r.id: r for r in load_dataset(synthetic_voc, "test", warn=False).records}
    gt = json.loads((out / "coco_gt.json").read_text())
    assert {(im["file_name"], im["width"], im["height"]) for im in gt["images"]} == {
        (r.id, r.width, r.height) for r in records.values()
    }
    assert len(gt["annotations"]) == sum(r.num_objects for r in records.values())
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] for a in gt["annotations"])
    assert f"COCO mAP {100 * expected['ap']:.1f} %" in stderr and "AR@100" in stderr and "coco_results.json" in stderr


def test_metric_coco_on_a_coco_data_set_keeps_its_image_ids_category_ids_and_areas(tmp_path: Path) -> None:
    """Re-scoring on a COCO file: pycocotools sees the file's own image ids (11, 12, 13), its sparse category
    ids (3, 7, 12), its areas (500.5; 36 for the crowd box) and image sizes; the negative image counts."""
    from fastrcnn_cli.data.voc import load_dataset
    from fastrcnn_cli.detections import save_detections
    from tests.test_formats import _coco_set

    root = _coco_set(tmp_path / "coco")
    dataset = load_dataset(root, "val2017", warn=False)
    by_id = {r.id: r for r in dataset.records}
    zebra, dog = dataset.classes.index("zebra"), dataset.classes.index("dog")
    save_detections(tmp_path / "d.npz", [
        Detections("a", by_id["a"].boxes[:1], [0.9], [zebra]),
        Detections("b", by_id["b"].boxes + [[2, 2, -2, -2]], [0.8], [dog]),
        Detections("empty", [[5, 5, 30, 30]], [0.95], [dog]),  # a false positive on the negative image
    ], dataset.classes)  # fmt: skip
    out = tmp_path / "eval"
    result = _evaluate(root, "--split", "val2017", "--data-format", "coco", "--detections", tmp_path / "d.npz",
                       "--metric", "coco", "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    gt = json.loads((out / "coco_gt.json").read_text())
    results = json.loads((out / "coco_results.json").read_text())
    images = sorted((im["id"], im["width"], im["height"]) for im in gt["images"])
    assert images == [(11, 64, 48), (12, 64, 48), (13, 64, 48)]
    assert sorted((c["id"], c["name"]) for c in gt["categories"]) == [(3, "cat"), (7, "dog"), (12, "zebra")]
    areas = {(a["image_id"], a["category_id"]): (a["area"], a["iscrowd"]) for a in gt["annotations"]}
    assert areas[(11, 12)] == (500.5, 0) and areas[(11, 3)] == (pytest.approx(36.0), 1)
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [(11, 12), (12, 7), (13, 7)]
    assert {name: payload["coco"][name] for name in _pycocotools(out)} == _pycocotools(out)
    assert payload["data_format"] == "coco" and payload["negative_images"] == 1
    per_class = {c["name"]: c for c in payload["coco"]["classes"]}
    assert per_class["cat"]["ap"] is None and per_class["cat"]["num_crowd"] == 1  # only a crowd box
    assert per_class["zebra"]["ap"] == pytest.approx(1.0) and per_class["dog"]["ap"] < 1.0  # dog: the false positive

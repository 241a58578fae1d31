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

from fastrcnn_cli.cli.evaluate import remap_detections, resolve_eval_classes, restrict_ground_truth
from fastrcnn_cli.data.synthetic import SHAPES
from fastrcnn_cli.errors import CheckpointError, InputError
from fastrcnn_cli.evaluation import Detections, load_detections
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
    with pytest.raises(CheckpointError) as info:
        resolve_eval_classes(("a", "b", "x"), ("a", "b", "y"), None)
    message = str(info.value)
    assert "the model lacks y" in message and "the data set lacks x" in message and "--classes a,b" in message
    with pytest.raises(CheckpointError, match="share no class"):
        resolve_eval_classes(("x",), ("y",), None)
    with pytest.raises(CheckpointError, match="the data set has no class x.*the model has no class y"):
        resolve_eval_classes(("a", "x"), ("a", "y"), ("x", "y"))
    with pytest.raises(InputError, match="the detections file"):
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
    assert {"proposals", "network", "postprocess", "evaluation", "total"} <= set(payload["times"])
    assert (out / "results.json").is_file() and (out / "pr.png").stat().st_size > 0
    saved = load_detections(out / "detections.npz")
    assert saved.classes == list(SHAPES) and len(saved.detections) == 4
    assert all(len(d) <= 100 for d in saved.detections) and saved.meta["split"] == "test"
    assert "mAP" in result.stderr and "network" in result.stderr

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
    from fastrcnn_cli.evaluation import save_detections

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
    assert_clean_failure(_evaluate(synthetic_voc, "--metric", "coco"), 2)


def test_detections_of_another_split_are_refused(synthetic_voc: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.data.voc import load_dataset
    from fastrcnn_cli.evaluation import save_detections

    ds = load_dataset(synthetic_voc, "train", warn=False)
    save_detections(tmp_path / "d.npz", [Detections(r.id, r.boxes, np.ones(len(r.boxes)), r.labels) for r in ds.records], ds.classes)
    result = _evaluate(synthetic_voc, "--split", "test", "--detections", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert_clean_failure(result, 1, "not in the evaluated split")

"""One inference and evaluation pipeline (fastrcnn_cli.pipeline): every command that scores a model on a split
reports the same mAP, bit for bit, for the same model and data; the settings come from the checkpoint the same
way everywhere; errors name settings fields, the command line its flags.

Two models: one trained for a few iterations (training's final evaluation, ``fastrcnn evaluate`` and
``compress-svd --eval`` at full rank must agree exactly), and a small random-weight one whose class scores are
spread out (the quicker checks; detections, true and false positives and a mAP above 0 still come out of the
real network). Every path reads the same proposal cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.data.voc import read_classes_file
from fastrcnn_cli.detect import DetectSettings, proposal_settings_from_meta
from fastrcnn_cli.errors import CheckpointError, SettingsError
from fastrcnn_cli.evaluate import EvaluateSettings, run_evaluate
from fastrcnn_cli.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fastrcnn_cli.pipeline import (
    ProposalOverrides,
    detector_for_model,
    evaluate_split,
    load_detector,
    load_eval_data,
)

runner = CliRunner()
HIDDEN = 64  #: fc6 64 x 5488, fc7 64 x 64: rank 64 is full rank for both
SCALE, MAX_SIZE = 128, 256
PROPOSALS = {"mode": "fast", "max_side": 160, "top": 300, "min_size": 10}
SCORE_STD = 10.0


def _checkpoint(path: Path, classes: tuple[str, ...], proposals: dict | None = None) -> Path:
    from fastrcnn_cli.model.backbones import BackboneSpec
    from fastrcnn_cli.model.fast_rcnn import HeadSpec, ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(BackboneSpec("efficientnet-lite0"), classes=classes, head=HeadSpec(hidden=HIDDEN, dropout=0.0))
    model = build_model(config, pretrained=False).eval()
    with torch.no_grad():  # the paper's tiny init of the sibling heads makes every score alike: spread them out
        model.cls_score.weight.normal_(std=SCORE_STD)
        model.bbox_pred.weight.normal_(std=0.01)
    meta = Checkpoint(config=model.config, preprocessing=model.preprocessing, scales=(SCALE,), max_size=MAX_SIZE,
                      proposals=dict(PROPOSALS if proposals is None else proposals))  # fmt: skip
    save_checkpoint(path, model, meta, normalised_regressor=False)
    return path


@pytest.fixture(scope="module")
def classes(synthetic_voc: Path) -> tuple[str, ...]:
    return read_classes_file(synthetic_voc / "classes.txt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, classes: tuple[str, ...]) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("pipeline") / "model.pt", classes)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One proposal cache for every path (filled by the first)."""
    return tmp_path_factory.mktemp("pipeline-cache") / "proposals"


def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _maps(d: dict) -> tuple:
    """Every number of a VOC result that must agree: the three mAPs and each class's two APs."""
    return (d["map"], d["map_voc07"], d["map_area"], [(c["name"], c["ap_voc07"], c["ap_area"]) for c in d["classes"]])


def test_evaluate_compress_svd_and_evaluate_split_agree_bit_for_bit(
    synthetic_voc: Path, checkpoint: Path, cache: Path, tmp_path: Path
) -> None:
    # fastrcnn evaluate
    result = _cli("evaluate", synthetic_voc, "-s", "test", "-w", checkpoint, "--out", tmp_path / "eval",
                  "--proposal-cache", cache, "--workers", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["map"] > 0.0  # a real comparison: detections, true and false positives
    assert evaluated["settings"]["scale"] == [SCALE] and evaluated["proposals"]["top"] == PROPOSALS["top"]

    # fastrcnn compress-svd --eval at full rank (before: the input checkpoint itself)
    result = _cli("compress-svd", "-w", checkpoint, "--rank", HIDDEN, "--rank-fc7", HIDDEN, "--no-time",
                  "-o", tmp_path / "full.pt", "--eval", synthetic_voc, "-s", "test", "--proposal-cache", cache,
                  "--workers", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    svd = json.loads(result.stdout)["evaluation"]
    assert _maps(svd["before"]) == _maps(evaluated)
    # full rank reproduces the layers only to float32 rounding: scores move by ~1e-7, which can swap two
    # near-tied detections of this untrained model (a few 1e-4 of mAP here); what is kept is the same
    before, after = svd["before"], svd["after"]
    assert [(c["tp"], c["fp"], c["num_detections"]) for c in after["classes"]] == \
        [(c["tp"], c["fp"], c["num_detections"]) for c in before["classes"]]
    assert after["map"] == pytest.approx(before["map"], abs=2e-3) and abs(svd["delta_map"]) <= 2e-3

    # the pipeline on a model in memory (what training's evaluation calls)
    model, meta = load_checkpoint(checkpoint)
    proposal_settings = proposal_settings_from_meta(meta)
    detector = detector_for_model(model, meta.scales[0], meta.max_size, proposal_settings, "cpu")
    data = load_eval_data(synthetic_voc, "test", meta.classes, proposal_settings, cache_dir=cache, workers=1)
    evaluation = evaluate_split(detector, data)
    assert _maps(evaluation.voc.to_dict()) == _maps(evaluated)
    assert evaluation.to_dict()["map"] == evaluated["map"]

    # and the command's core called directly
    direct = run_evaluate(EvaluateSettings(synthetic_voc, "test", weights=checkpoint, device="cpu",
                                           out=tmp_path / "direct", proposal_cache=cache, workers=1))  # fmt: skip
    assert _maps(direct.to_dict()) == _maps(evaluated)


@pytest.fixture(scope="module")
def trained(synthetic_voc: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model trained for 24 iterations (tests/test_train.py's tiny settings), validated on the test split at
    the end: training's final evaluation is the live model through ``evaluate_split``."""
    from fastrcnn_cli.train import train
    from tests.test_train import tiny_settings

    runs = tmp_path_factory.mktemp("pipeline-train")
    return train(tiny_settings(synthetic_voc, runs, eval_split="test", iterations=24, eval_every=24, workers=0))


def test_training_evaluate_and_full_rank_compress_svd_agree_bit_for_bit(
    synthetic_voc: Path, trained, tmp_path: Path
) -> None:
    """The issue's check on a trained model: training's final evaluation (the live model, normalised offsets),
    ``fastrcnn evaluate`` of its last.pt and ``compress-svd --eval`` before and after a full-rank SVD."""
    final = json.loads((trained.run_dir / "eval_last.json").read_text())
    assert final["map"] == trained.best_map and final["map"] > 0.2
    cache = trained.run_dir.parent / "proposals"
    result = _cli("evaluate", synthetic_voc, "-s", "test", "-w", trained.last, "--out", tmp_path / "eval",
                  "--proposal-cache", cache, "--workers", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert _maps(evaluated) == _maps(final)
    from fastrcnn_cli.svd import head_shapes

    shapes = head_shapes(load_checkpoint(trained.last)[0])
    fc6, fc7 = (min(shapes[name][:2]) for name in ("fc6", "fc7"))  # full rank: min(u, v)
    result = _cli("compress-svd", "-w", trained.last, "--rank", fc6, "--rank-fc7", fc7, "--no-time",
                  "-o", tmp_path / "full.pt", "--eval", synthetic_voc, "-s", "test", "--proposal-cache", cache,
                  "--workers", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    svd = json.loads(result.stdout)["evaluation"]
    assert _maps(svd["before"]) == _maps(final) and _maps(svd["after"]) == _maps(final) and svd["delta_map"] == 0.0


def test_training_style_evaluation_gives_the_same_map(
    synthetic_voc: Path, checkpoint: Path, cache: Path, classes: tuple[str, ...]
) -> None:
    """Training reads its validation split with its own class list and evaluates the live model, whose
    regressor predicts normalised offsets: unfolding them in the detector gives the saved model's mAP."""
    from fastrcnn_cli import box_coding

    model, meta = load_checkpoint(checkpoint)
    settings = proposal_settings_from_meta(meta)
    data = load_eval_data(synthetic_voc, "test", classes, settings, data_classes=classes, cache_dir=cache, workers=1)
    saved = evaluate_split(detector_for_model(model, SCALE, MAX_SIZE, settings), data)

    live, _ = load_checkpoint(checkpoint)
    with torch.no_grad():  # the inverse of fold_normalisation: a regressor that predicts normalised offsets
        k = live.config.num_classes
        std = torch.tensor(box_coding.BBOX_STDS).repeat(k)
        mean = torch.tensor(box_coding.BBOX_MEANS).repeat(k)
        live.bbox_pred.weight.div_(std[:, None])
        live.bbox_pred.bias.sub_(mean).div_(std)
    live.train()
    evaluation = evaluate_split(detector_for_model(live, SCALE, MAX_SIZE, settings, normalised_deltas=True), data)
    assert live.training  # given back in the mode it had
    assert evaluation.voc.map == pytest.approx(saved.voc.map, abs=1e-6)
    assert saved.voc.map > 0.0


def test_load_detector_derives_every_setting_from_the_checkpoint(checkpoint: Path) -> None:
    loaded = load_detector(checkpoint, "cpu")
    assert loaded.detect_settings.scale == (SCALE,) and loaded.detect_settings.max_size == MAX_SIZE
    assert loaded.proposal_settings.to_dict() == PROPOSALS
    assert loaded.detector.proposal_settings == loaded.proposal_settings and loaded.weights_path == checkpoint
    given = load_detector(
        checkpoint, "cpu", scale=(96, 160), score_threshold=0.8,
        proposals=ProposalOverrides(mode="quality", max_side=200, top=50, min_size=4, proposer="native"),
    )  # fmt: skip
    assert given.detect_settings.scale == (96, 160) and given.detect_settings.score_threshold == 0.8
    assert given.proposal_settings.to_dict() == {"mode": "quality", "max_side": 200, "top": 50, "min_size": 4,
                                                 "proposer": "native"}  # fmt: skip


def test_the_nms_iou_comes_from_the_checkpoint_unless_given(
    checkpoint: Path, synthetic_voc: Path, cache: Path, classes: tuple[str, ...], tmp_path: Path
) -> None:
    """A checkpoint records the NMS IoU its recipe tests with; detect and evaluate use it unless told otherwise,
    and one that records none (older files, the shipped model) gets the paper's 0.3."""
    assert load_detector(checkpoint, "cpu").detect_settings.nms == 0.3  # records none
    model, meta = load_checkpoint(checkpoint)
    meta.nms = 0.6
    recorded = tmp_path / "nms.pt"
    save_checkpoint(recorded, model, meta, normalised_regressor=False)
    assert load_checkpoint(recorded)[1].nms == 0.6
    assert load_detector(recorded, "cpu").detect_settings.nms == 0.6
    assert load_detector(recorded, "cpu", nms=0.45).detect_settings.nms == 0.45
    # evaluation keeps the detector's NMS IoU: a looser one keeps more overlapping boxes
    data = load_eval_data(synthetic_voc, "test", classes, proposal_settings_from_meta(meta), cache_dir=cache,
                          workers=1)  # fmt: skip
    counts = {nms: sum(len(d.boxes) for d in evaluate_split(load_detector(recorded, "cpu", nms=nms).detector,
                                                            data).detections) for nms in (0.1, 0.9)}  # fmt: skip
    assert counts[0.1] < counts[0.9]
    meta.nms = 1.5
    save_checkpoint(tmp_path / "bad.pt", model, meta, normalised_regressor=False)
    with pytest.raises(CheckpointError, match="nms") as info:
        load_checkpoint(tmp_path / "bad.pt")
    assert str(tmp_path / "bad.pt") in str(info.value)
    result = _cli("evaluate", synthetic_voc, "-s", "test", "-w", recorded, "--nms", 0.45, "--out", tmp_path / "ev",
                  "--proposal-cache", cache, "--workers", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["nms"] == 0.45


def test_unusable_recorded_proposal_settings_name_the_checkpoint(
    synthetic_voc: Path, tmp_path: Path, classes: tuple[str, ...]
) -> None:
    bad = _checkpoint(tmp_path / "bad.pt", classes, proposals={"mode": "fast", "colour": "blue"})
    with pytest.raises(CheckpointError, match="proposal settings .* are not usable") as info:
        load_detector(bad, "cpu")
    assert info.value.path == str(bad)
    # compress-svd --eval goes through the same reading (it used to build the settings itself)
    result = _cli("compress-svd", "-w", bad, "--rank", 8, "--no-time", "-o", tmp_path / "o.pt",
                  "--eval", synthetic_voc, "-s", "test")  # fmt: skip
    assert result.exit_code == 1 and "are not usable" in result.output and "Traceback" not in result.output


def test_compress_svd_eval_matches_classes_by_name_as_evaluate_does(
    synthetic_voc: Path, tmp_path: Path, classes: tuple[str, ...], cache: Path
) -> None:
    other = _checkpoint(tmp_path / "other.pt", (*classes[:2], "dog"))
    for command in (["evaluate", synthetic_voc, "-w", other, "--out", tmp_path / "e"],
                    ["compress-svd", "-w", other, "--rank", 8, "--no-time", "-o", tmp_path / "o.pt", "--eval",
                     synthetic_voc]):  # fmt: skip
        result = _cli(*command, "-s", "test", "--proposal-cache", cache)
        flat = "".join(result.output.split())
        assert result.exit_code == 1, result.output
        assert "thedatasetlacksdog" in flat and f"--classes{classes[0]},{classes[1]}" in flat
    result = _cli("compress-svd", "-w", other, "--rank", 8, "--no-time", "-o", tmp_path / "o2.pt", "--eval",
                  synthetic_voc, "-s", "test", "--proposal-cache", cache, "--workers", 1,
                  "--classes", f"{classes[1]},{classes[0]}", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)["evaluation"]
    assert evaluation["evaluated_classes"] == [classes[1], classes[0]]
    assert [c["name"] for c in evaluation["before"]["classes"]] == [classes[1], classes[0]]


def test_proposal_options_reach_the_proposal_stage(
    synthetic_voc: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastrcnn_cli.proposals as proposals_module

    seen = []

    def fake(dataset, settings, cache_dir=None, workers=None):
        seen.append((settings, cache_dir, workers))
        return {}  # no proposals: every image counts without detections

    monkeypatch.setattr(proposals_module, "load_or_compute_proposals", fake)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(("threads", n)))  # keep the session's
    flags = ["--proposal-mode", "quality", "--proposal-max-side", 200, "--proposal-top", 50, "--proposal-min-size", 4,
             "--proposer", "native", "--proposal-cache", tmp_path / "c", "--workers", 1, "--threads", 1]  # fmt: skip
    result = _cli("evaluate", synthetic_voc, "-s", "test", "-w", checkpoint, "--out", tmp_path / "e", "--json", *flags)
    assert result.exit_code == 0, result.output
    result = _cli("compress-svd", "-w", checkpoint, "--rank", 8, "--no-time", "-o", tmp_path / "o.pt",
                  "--eval", synthetic_voc, "-s", "test", *flags)  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = {"mode": "quality", "max_side": 200, "top": 50, "min_size": 4, "proposer": "native"}
    assert seen[0] == seen[2] == ("threads", 1)
    assert [(s.to_dict(), c, w) for s, c, w in (seen[1], seen[3])] == [(expected, tmp_path / "c", 1)] * 2


def test_core_errors_name_fields_and_the_command_line_its_flags(checkpoint: Path, synthetic_voc: Path) -> None:
    with pytest.raises(SettingsError) as info:
        DetectSettings(score_threshold=2)
    assert "score_threshold" in str(info.value) and "--" not in str(info.value)
    with pytest.raises(SettingsError, match="^classes: names zebra") as info:
        load_detector(checkpoint, "cpu", classes=("zebra",))
    with pytest.raises(SettingsError, match="^metric: ") as info:
        EvaluateSettings(synthetic_voc, metric="map50")  # type: ignore[arg-type]
    image = synthetic_voc / "JPEGImages" / sorted(p.name for p in (synthetic_voc / "JPEGImages").iterdir())[0]
    result = _cli("detect", image, "-w", checkpoint, "--classes", "zebra")
    assert result.exit_code == 1 and "--classes: names zebra" in " ".join(result.output.split())

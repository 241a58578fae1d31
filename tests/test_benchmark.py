"""`fastrcnn benchmark`: every section in --json with sane numbers, the plot and the CSV, bad inputs (clear
message, exit code 1 or 2, no traceback), and the pieces of the core (statistics, the R-CNN inputs, topping up
proposals, the stage aggregation).

The model is a random-init efficientnet-lite0 checkpoint at a small test scale (no download); the image is a
synthetic one. Timings are tiny (--runs 1 --warmup 0 --proposals 50), so only their sanity is checked here, not
their values.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastrcnn_cli import benchmark as bench
from fastrcnn_cli.cli import app
from fastrcnn_cli.cli import render_benchmark as render
from fastrcnn_cli.data.synthetic import SHAPES, SyntheticSettings, make_synthetic_voc
from fastrcnn_cli.detect import DetectionResult, StageTimes
from fastrcnn_cli.evaluation import Detections

runner = CliRunner()
PROPOSALS = {"mode": "fast", "max_side": 160, "top": 300, "min_size": 10}
TINY = ["--runs", "1", "--warmup", "0", "--proposal-top", "50", "--rcnn-sample", "4", "--rcnn-batch", "2"]


def build_random_model(seed: int = 0):
    from fastrcnn_cli.model.backbones import BackboneSpec
    from fastrcnn_cli.model.fast_rcnn import DEFAULT_HEADS, ModelConfig, build_model

    torch.manual_seed(seed)
    head = DEFAULT_HEADS["efficientnet-lite0"]
    config = ModelConfig(BackboneSpec("efficientnet-lite0"), classes=tuple(SHAPES), head=head)
    return build_model(config, pretrained=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small random-init checkpoint (test scale 128, max size 256) and one synthetic image."""
    from fastrcnn_cli.model.checkpoint import Checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("bench")
    model = build_random_model()
    meta = Checkpoint(config=model.config, preprocessing=model.preprocessing, scales=(128,), max_size=256,
                      proposals=dict(PROPOSALS))
    weights = root / "model.pt"
    save_checkpoint(weights, model, meta, normalised_regressor=False)
    data = make_synthetic_voc(root / "shapes", SyntheticSettings(splits={"train": 0, "val": 0, "test": 1}, seed=7))
    image = next((data / "JPEGImages").glob("*.jpg"))
    return {"weights": weights, "image": image, "root": root}


@pytest.fixture(scope="module")
def full_run(files: dict[str, Path]) -> dict:
    """One CLI run of all four sections with tiny settings: the JSON, the plot and the CSV it wrote."""
    plot, table = files["root"] / "where.png", files["root"] / "bench.csv"
    result = runner.invoke(
        app,
        ["benchmark", "--weights", str(files["weights"]), "--image", str(files["image"]), *TINY, "--rank", "64",
         "--plot", str(plot), "--csv", str(table), "--json", "--threads", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return {"json": json.loads(result.stdout), "plot": plot, "csv": table}


def assert_stats(stats: dict, runs: int | None = None) -> None:
    assert stats["median_ms"] > 0
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["min_ms"] <= stats["p25_ms"] <= stats["p75_ms"] <= stats["max_ms"]
    assert all(v > 0 for v in stats["runs_ms"])
    if runs is not None:
        assert len(stats["runs_ms"]) == runs


# ------------------------------------------------------------------------------------------------------------
# the command


def test_json_has_every_section_with_sane_numbers(full_run: dict) -> None:
    doc = full_run["json"]
    assert list(doc["sections"]) == list(bench.SECTIONS)
    env, setup = doc["environment"], doc["setup"]
    for key in ("device", "device_name", "torch", "cuda", "torch_threads", "date"):
        assert key in env
    assert env["torch_threads"] == 2  # --threads
    assert setup["image"]["input_height"] == 128 or setup["image"]["input_width"] == 256  # the checkpoint's scale
    assert setup["proposals"]["requested"] == 50 and setup["proposals"]["sections_use"] == 50

    stages = doc["sections"]["stages"]
    for name in bench.STAGES:
        assert_stats(stages["stages"][name], runs=1)
    assert_stats(stages["total"], runs=1)
    assert 0 < stages["num_proposals"] <= 50
    total = sum(stages["stages"][name]["median_ms"] for name in bench.STAGES)
    assert stages["total"]["median_ms"] == pytest.approx(total, rel=1e-6)  # one run: the total is the sum

    shared = doc["sections"]["shared"]
    for side in ("fast_rcnn", "rcnn"):
        for step in ("prepare", "backbone", "head", "total"):
            assert_stats(shared[side][step], runs=1)
    assert shared["rcnn"]["sampled"] == 4 and shared["rcnn"]["batch_size"] == 2
    assert shared["rcnn"]["scale_factor"] == pytest.approx(50 / 4)
    assert shared["rcnn"]["total"]["median_ms"] == pytest.approx(shared["rcnn"]["sample_total"]["median_ms"] * 50 / 4)
    assert shared["speedup"] > 0 and "scaled" in shared["method"]

    roipool = doc["sections"]["roipool"]
    assert set(roipool["timings"]) == {"fastrcnn", "fastrcnn-no-argmax", "torchvision", "reference"}
    for name, phases in roipool["timings"].items():
        for phase in ("forward",) if name == "fastrcnn-no-argmax" else ("forward", "forward_backward"):
            t = phases[phase]
            assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
    assert roipool["matches_torchvision"] is True
    assert roipool["no_argmax_identical"] is True

    proposals = doc["sections"]["proposals"]
    assert set(proposals["rows"]) == {"opencv-fast", "native-fast", "opencv-quality", "native-quality"}
    for row in proposals["rows"].values():
        assert row["boxes"] > 0
        assert_stats(row["cpu_1_thread"], runs=1)
        assert_stats(row["latency_all_threads"], runs=1)
    assert proposals["rows"]["opencv-fast"]["cpu_vs_opencv_fast"] == pytest.approx(1.0)
    assert roipool["case"] == "vgg16" and roipool["feature_shape"] == [1, 512, 38, 63]  # the paper's case by default
    assert roipool["output_size"] in (7, [7, 7]) and roipool["spatial_scale"] == pytest.approx(1 / 16)

    head = doc["sections"]["head"]
    for key in ("vgg16", "model"):
        for which in ("before", "after"):
            assert_stats(head[key][which]["total"], runs=1)
        assert head[key]["speedup"] > 0
    assert head["vgg16"]["ranks"] == {"fc6": 1024, "fc7": 256}
    assert head["model"]["ranks"] == {"fc6": 64, "fc7": 64}  # fc7: min(64, 256)
    assert head["model"]["in_features"] == 112 * 7 * 7


def test_plot_is_a_png(full_run: dict) -> None:
    data = full_run["plot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_csv_parses_and_carries_every_run(full_run: dict) -> None:
    with open(full_run["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"section", "item", "statistic", "value", "unit"}
    assert {r["section"] for r in rows} >= {"environment", "setup", *bench.SECTIONS}
    for row in rows:
        if row["unit"] == "ms":
            assert float(row["value"]) >= 0
    doc = full_run["json"]
    lookup = {(r["section"], r["item"], r["statistic"]): r["value"] for r in rows}
    backbone = doc["sections"]["stages"]["stages"]["backbone"]
    assert float(lookup[("stages", "stages.backbone", "median")]) == pytest.approx(backbone["median_ms"])
    assert float(lookup[("stages", "stages.backbone", "run_1")]) == pytest.approx(backbone["runs_ms"][0])
    assert float(lookup[("shared", "", "speedup")]) == pytest.approx(doc["sections"]["shared"]["speedup"])


def test_tables_print_every_section(files: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["benchmark", "-w", str(files["weights"]), "-i", str(files["image"]), *TINY, "--sections", "stages,shared",
         "--plot", str(tmp_path / "p.png")],
    )
    assert result.exit_code == 0, result.output
    for text in ("device", "proposals", "Where the time went", "Share the features", "speedup", "scaled", "date"):
        assert text in result.output
    assert "RoI max pooling" not in result.output  # not chosen
    assert (tmp_path / "p.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "{root}/missing.pt"], "missing.pt: no such weights file"),
        (["--weights", "{weights}", "--image", "{root}/missing.jpg"], "missing.jpg: no such image"),
        (["--weights", "{root}", "--image", "{image}"], "is a folder, not a weights file"),
        (["--weights", "{image}", "--image", "{image}"], "not a fastrcnn checkpoint"),
        (["--weights", "{weights}", "--image", "{weights}"], "not a readable image"),
    ],
)
def test_bad_files_give_a_clear_error_and_exit_code_1(files: dict[str, Path], args: list[str], message: str) -> None:
    args = [a.format(root=files["root"], weights=files["weights"], image=files["image"]) for a in args]
    result = runner.invoke(app, ["benchmark", *args, *TINY])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_no_arguments_without_shipped_files_is_a_clear_error(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli.model import checkpoint

    monkeypatch.delenv(checkpoint.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(checkpoint, "DEFAULT_WEIGHTS", tmp_path / "weights" / "shapes-efficientnet-lite0.pt")
    result = runner.invoke(app, ["benchmark"])
    assert result.exit_code == 1 and "shipped model is missing" in result.output and "--weights" in result.output
    assert "Traceback" not in result.output

    monkeypatch.setattr(bench.run, "DEFAULT_IMAGE", tmp_path / "examples" / "shapes-1.jpg")
    result = runner.invoke(app, ["benchmark", "--weights", str(files["weights"])])
    assert result.exit_code == 1 and "example image is missing" in result.output and "--image" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sections", "stages,bogus"], "bogus"),
        (["--rank", "abc"], "--rank"),
        (["--rank", "5000"], "too large"),  # fc6 of this model is 1024 x 5488: at most 1024
        (["--sections", "head", "--plot", "x.png"], "--plot"),
        (["--roipool-case", "alexnet"], "--roipool-case"),
    ],
)
def test_bad_options_are_usage_errors(files: dict[str, Path], args: list[str], message: str) -> None:
    result = runner.invoke(app, ["benchmark", "-w", str(files["weights"]), "-i", str(files["image"]), *TINY, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------------------
# the core


def test_timings_give_median_spread_and_every_run() -> None:
    from fastrcnn_cli.timing import TimingStats

    stats = TimingStats.from_samples([0.004, 0.001, 0.003, 0.002]).to_dict()
    assert stats["median_ms"] == pytest.approx(2.5)
    assert (stats["min_ms"], stats["max_ms"]) == pytest.approx((1.0, 4.0))
    assert stats["p25_ms"] == pytest.approx(1.75) and stats["p75_ms"] == pytest.approx(3.25)
    assert stats["runs_ms"] == pytest.approx([4.0, 1.0, 3.0, 2.0])  # in the order they ran
    one = TimingStats.from_samples([0.5]).to_dict()
    assert one["median_ms"] == one["min_ms"] == one["max_ms"] == one["p25_ms"] == 500.0 and one["iqr_ms"] == 0.0


def test_stage_times_are_the_detectors_own() -> None:
    """time_stages reports the StageTimes that Detector.detect returns, run by run, after the warm-up."""

    class FakeDetector:
        def __init__(self) -> None:
            self.calls = 0

        def detect(self, image: np.ndarray) -> DetectionResult:
            self.calls += 1
            k = self.calls
            times = StageTimes(proposals=1.0 * k, preprocess=0.1 * k, backbone=0.5 * k, head=0.2 * k,
                               postprocess=0.01 * k)
            empty = Detections("", np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
            return DetectionResult(empty, times, 7, (10, 10))

    fake = FakeDetector()
    result = bench.time_stages(fake, np.zeros((10, 10, 3), np.uint8), runs=3, warmup=2)
    assert fake.calls == 5
    assert result.stages["backbone"].samples == pytest.approx((1.5, 2.0, 2.5))
    data = result.to_dict()
    assert data["stages"]["backbone"]["runs_ms"] == pytest.approx([1500.0, 2000.0, 2500.0])
    assert data["stages"]["backbone"]["median_ms"] == pytest.approx(2000.0)
    assert data["network"]["median_ms"] == pytest.approx(4 * (100 + 500 + 200))
    assert data["cold_ms"]["proposals"] == pytest.approx(1000.0)  # the first (warm-up) run
    assert data["cold_ms"]["network"] == pytest.approx(100 + 500 + 200)
    assert data["num_proposals"] == 7


def test_rcnn_inputs_match_the_models_preprocessing() -> None:
    """The R-CNN side's batched crop preparation equals warping each box and preprocessing it on its own."""
    model = build_random_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 119, 89], [10, 5, 40, 60], [30.4, 20.6, 30.4, 20.6]], np.float32)
    x = bench.rcnn_inputs(image, boxes, model.preprocessing, torch.device("cpu"))
    assert x.shape == (3, 3, bench.RCNN_INPUT_SIZE, bench.RCNN_INPUT_SIZE)
    for i, box in enumerate(boxes):
        expected = model.preprocessing.image_to_tensor(bench.warp_proposal(image, box))
        torch.testing.assert_close(x[i], expected)
    crop = bench.warp_proposal(image, boxes[1])
    assert crop.shape == (224, 224, 3)


def test_top_up_proposals_reaches_the_count_inside_the_image() -> None:
    boxes = np.array([[10, 10, 49, 29], [0, 0, 99, 59]], np.float32)
    out, added = bench.top_up_proposals(boxes, 500, width=100, height=60, seed=3)
    assert out.shape == (500, 4) and added == 498
    np.testing.assert_array_equal(out[:2], boxes)  # the real ones first
    assert (out[:, 0] >= 0).all() and (out[:, 2] <= 99).all() and (out[:, 1] >= 0).all() and (out[:, 3] <= 59).all()
    assert (out[:, 2] >= out[:, 0]).all() and (out[:, 3] >= out[:, 1]).all()
    again, _ = bench.top_up_proposals(boxes, 500, width=100, height=60, seed=3)
    np.testing.assert_array_equal(out, again)  # seeded
    few, none_added = bench.top_up_proposals(out, 20, width=100, height=60)
    assert none_added == 0 and len(few) == 20


def test_durations_read_well() -> None:
    assert render.fmt_ms(0.0421) == "0.042 ms"
    assert render.fmt_ms(42.1) == "42.1 ms"
    assert render.fmt_ms(1804) == "1.80 s"
    assert render.fmt_range(209, 215.4) == "209–215 ms"
    assert render.fmt_range(980, 1020) == "980 ms–1.02 s"


def test_roipool_case_model_pools_this_models_own_feature_map(files: dict[str, Path]) -> None:
    result = runner.invoke(
        app,
        ["benchmark", "--weights", str(files["weights"]), "--image", str(files["image"]), *TINY,
         "--sections", "roipool", "--roipool-case", "model", "--json", "--threads", "2"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    roipool = doc["sections"]["roipool"]
    assert roipool["case"] == "model" and roipool["matches_torchvision"] is True
    assert roipool["feature_shape"][1] == doc["setup"]["model"]["feature_map"][0]  # the model's own channels
    assert roipool["image_size"] is not None


# ------------------------------------------------------------------------------------------------------------
# the shared options, typed results, progress through the reporter


def test_rank_fc7_none_leaves_this_models_fc7_dense(files: dict[str, Path]) -> None:
    result = runner.invoke(
        app,
        ["benchmark", "-w", str(files["weights"]), "-i", str(files["image"]), *TINY, "-S", "head", "--rank", "64",
         "--rank-fc7", "none", "--json"],
    )
    assert result.exit_code == 0, result.output
    head = json.loads(result.stdout)["sections"]["head"]
    assert head["model"]["ranks"] == {"fc6": 64, "fc7": None}
    fc6_svd = 112 * 7 * 7 * 64 + 64 * 1024 + 1024  # V^T (no bias) and U (with fc6's bias)
    assert head["model"]["params_after"] == fc6_svd + 1024 * 1024 + 1024  # fc7 kept whole
    bad = runner.invoke(app, ["benchmark", "-w", str(files["weights"]), *TINY, "-S", "head", "--rank-fc7", "8"])
    assert bad.exit_code == 2 and "--rank-fc7" in bad.output


def test_a_proposal_cache_sets_the_proposals_timed(files: dict[str, Path], tmp_path: Path) -> None:
    """--proposal-cache: Selective Search is timed as that cache was made; the other proposal options still win."""
    from fastrcnn_cli.proposals import ProposalSettings
    from fastrcnn_cli.proposals.cache import SOURCE_IMPORTED, SOURCE_SS, ProposalCache, make_meta

    made = ProposalSettings(mode="fast", max_side=96, top=40, min_size=4)
    ProposalCache.open(tmp_path / "cache", make_meta(SOURCE_SS, made))
    args = ["benchmark", "-w", str(files["weights"]), "-i", str(files["image"]), "--runs", "1", "--warmup", "0",
            "-S", "stages", "--proposal-cache", str(tmp_path / "cache"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["setup"]["proposals"]["settings"] == made.to_dict()
    result = runner.invoke(app, [*args, "--proposal-top", "30", "--min-size", "6"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["setup"]["proposals"]["settings"] == {**made.to_dict(), "top": 30, "min_size": 6}

    ProposalCache.open(tmp_path / "imported", make_meta(SOURCE_IMPORTED, None, imported_sha256="x"))
    result = runner.invoke(app, [*args[:-2], str(tmp_path / "imported")])
    assert result.exit_code == 1 and "imported proposals" in result.output and "Traceback" not in result.output


def test_the_core_reports_through_the_progress_interface(files: dict[str, Path]) -> None:
    """run_benchmark prints nothing itself: each section's announcement and its rounds go to the reporter, and the
    result is typed, with the timings in seconds."""
    from fastrcnn_cli import progress
    from fastrcnn_cli.pipeline import ProposalOverrides

    recorder = progress.Recorder()
    settings = bench.BenchmarkSettings(runs=2, warmup=1, sections=("stages",), proposals=ProposalOverrides(top=20))
    with progress.reporting_to(recorder):
        result = bench.run_benchmark(files["weights"], files["image"], "cpu", settings)
    assert isinstance(result.sections.stages, bench.StagesResult) and result.sections.shared is None
    assert result.sections.stages.total.n == 2 and result.setup.proposals.requested == 20
    assert any(text.startswith("[stages] detect() on the image: 2 runs after 1 warm-up")
               for text in recorder.messages())
    assert ("start", "stages", 3) in recorder.events and ("end", "stages", 3) in recorder.events
    assert result.to_dict()["sections"]["stages"]["total"]["n"] == 2


def test_settings_errors_name_fields() -> None:
    from fastrcnn_cli.errors import SettingsError

    with pytest.raises(SettingsError) as info:
        bench.BenchmarkSettings(runs=0, warmup=-1, sections=("bogus",), roipool_case="alexnet", rcnn_batch=0)
    assert {f for f, _ in info.value.problems} == {"runs", "warmup", "sections", "roipool_case", "rcnn_batch"}
    assert "--" not in str(info.value)

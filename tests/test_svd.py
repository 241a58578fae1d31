"""Truncated SVD of the head (fastrcnn_cli.svd) and ``fastrcnn compress-svd``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.errors import CheckpointError
from fastrcnn_cli.svd import (
    LayerError,
    RankError,
    compress_layer,
    compress_model,
    default_fc7_rank,
    energy_share,
)
from fastrcnn_cli.svd_checkpoint import compress_checkpoint
from fastrcnn_cli.svd_timing import benchmark_head

runner = CliRunner()
HIDDEN = 64  #: fc6 is 64 x 5488 (efficientnet-lite0 stage5: 112 channels x 7 x 7), fc7 64 x 64


def _linear(u: int, v: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(v, u)
    nn.init.normal_(layer.bias)
    return layer


def _small_model(classes=("a", "b"), seed: int = 0):
    from fastrcnn_cli.model.backbones import BackboneSpec
    from fastrcnn_cli.model.fast_rcnn import HeadSpec, ModelConfig, build_model

    torch.manual_seed(seed)
    config = ModelConfig(BackboneSpec("efficientnet-lite0"), classes=tuple(classes), head=HeadSpec(hidden=HIDDEN, dropout=0.0))
    model = build_model(config, pretrained=False).eval()
    with torch.no_grad():  # the paper's tiny init of the sibling heads makes every score alike; spread them out
        model.cls_score.weight.normal_(std=0.05)
        model.bbox_pred.weight.normal_(std=0.01)
    return model


def _save(model, path: Path, half: bool = False) -> Path:
    from fastrcnn_cli.model.checkpoint import Checkpoint, save_checkpoint

    meta = Checkpoint(config=model.config, preprocessing=model.preprocessing, scales=(224,), max_size=320)
    save_checkpoint(path, model, meta, normalised_regressor=False, half=half)
    return path


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float32 checkpoint of a small Fast R-CNN (random weights). Do not modify it."""
    return _save(_small_model(), tmp_path_factory.mktemp("svd") / "small.pt")


def run(*args: str):
    return runner.invoke(app, ["compress-svd", *args])


def text(result) -> str:
    """The output with Rich's line wrapping (and any box drawing) folded into single spaces."""
    return " ".join(result.output.replace("│", " ").split())


# ---------------------------------------------------------------------------------------------------------
# one layer


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_full_rank_factorisation_gives_the_same_outputs(shape: tuple[int, int]) -> None:
    u, v = shape
    layer = _linear(u, v)
    compressed, report = compress_layer(layer, min(u, v), "fc")
    x = torch.randn(50, v)
    with torch.no_grad():
        torch.testing.assert_close(compressed(x), layer(x), rtol=1e-5, atol=1e-5)
    assert report.energy_kept == pytest.approx(1.0)
    assert report.rank == min(u, v)


def test_factorisation_is_s_v_without_bias_then_u_with_the_original_bias() -> None:
    layer = _linear(24, 40)
    compressed, _ = compress_layer(layer, 6, "fc")
    first, second = compressed
    assert isinstance(first, nn.Linear) and first.bias is None
    assert (first.in_features, first.out_features) == (40, 6)
    assert (second.in_features, second.out_features) == (6, 24)
    torch.testing.assert_close(second.bias, layer.bias)
    U, S, Vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
    torch.testing.assert_close(second.weight.double() @ first.weight.double(), (U[:, :6] * S[:6]) @ Vh[:6], rtol=1e-5, atol=1e-6)
    # U_t has orthonormal columns: all the scale sits in the first layer
    torch.testing.assert_close(second.weight.double().T @ second.weight.double(), torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0)


def test_lower_rank_changes_outputs_and_has_exactly_t_u_plus_v_plus_u_parameters() -> None:
    u, v, t = 24, 40, 5
    layer = _linear(u, v)
    compressed, report = compress_layer(layer, t, "fc")
    x = torch.randn(50, v)
    with torch.no_grad():
        assert not torch.allclose(compressed(x), layer(x), atol=1e-3)
    params = sum(p.numel() for p in compressed.parameters())
    assert params == t * (u + v) + u == report.params_after
    assert report.params_before == u * v + u
    assert report.reduces


def test_energy_share_of_a_matrix_with_known_singular_values() -> None:
    torch.manual_seed(0)
    s = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    q1, _ = torch.linalg.qr(torch.randn(8, 5, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(12, 5, dtype=torch.float64))
    layer = nn.Linear(12, 8).double()
    with torch.no_grad():
        layer.weight.copy_(q1 @ torch.diag(s) @ q2.T)
    for t in range(1, 6):
        _, report = compress_layer(layer, t, "fc")
        assert report.energy_kept == pytest.approx(float((s[:t] ** 2).sum() / (s**2).sum()), abs=1e-12)
    assert energy_share(s, 2) == pytest.approx(41 / 55)
    assert energy_share(torch.zeros(3), 1) == 1.0


def test_truncation_error_is_the_discarded_energy() -> None:
    """Eckart-Young: ||W - W_t||_F^2 = sum of the discarded s_i^2, i.e. (1 - energy kept) ||W||_F^2."""
    layer = _linear(30, 20).double()
    compressed, report = compress_layer(layer, 7, "fc")
    w = layer.weight.detach()
    w_t = compressed[1].weight.detach() @ compressed[0].weight.detach()
    error = float(((w - w_t) ** 2).sum() / (w**2).sum())
    assert error == pytest.approx(1.0 - report.energy_kept, rel=1e-9)


@pytest.mark.parametrize("rank", [0, -3, 25, 1000])
def test_a_rank_the_layer_cannot_take_is_refused(rank: int) -> None:
    with pytest.raises(RankError, match="rank"):
        compress_layer(_linear(24, 40), rank, "fc6")


def test_an_already_compressed_layer_can_only_go_lower() -> None:
    layer = _linear(24, 40)
    once, _ = compress_layer(layer, 10, "fc")
    twice, report = compress_layer(once, 4, "fc")
    assert report.previous_rank == 10 and report.rank == 4
    assert report.params_before == 10 * (24 + 40) + 24
    # re-compressing equals compressing the original directly (the rank-10 truncation keeps the top 4 directions)
    direct, _ = compress_layer(layer, 4, "fc")
    x = torch.randn(20, 40)
    with torch.no_grad():
        torch.testing.assert_close(twice(x), direct(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(RankError, match="already compressed to rank 10"):
        compress_layer(once, 11, "fc")


def test_something_that_is_not_a_linear_layer_is_refused() -> None:
    with pytest.raises(LayerError, match="neither a linear layer"):
        compress_layer(nn.Conv2d(3, 4, 3), 2, "fc6")


# ---------------------------------------------------------------------------------------------------------
# a model and a checkpoint


def test_compress_model_checks_every_rank_before_changing_anything() -> None:
    model = nn.Module()
    model.fc6 = _linear(16, 32)
    model.fc7 = _linear(16, 16)
    with pytest.raises(RankError):
        compress_model(model, {"fc6": 8, "fc7": 17})
    assert isinstance(model.fc6, nn.Linear) and isinstance(model.fc7, nn.Linear)
    with pytest.raises(LayerError, match="no layer 'fc8'"):
        compress_model(model, {"fc8": 2})


def test_default_fc7_rank_is_the_papers_256_unless_smaller_is_asked_or_allowed() -> None:
    assert default_fc7_rank(1024, 4096) == 256
    assert default_fc7_rank(128, 4096) == 128
    assert default_fc7_rank(1024, 64) == 64


def test_full_rank_compressed_checkpoint_loads_and_detects_the_same(small_checkpoint: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.detect import DetectSettings, Detector, StageTimes
    from fastrcnn_cli.model.checkpoint import load_checkpoint

    out = tmp_path / "full.pt"
    report = compress_checkpoint(small_checkpoint, out, HIDDEN, HIDDEN)
    assert [r.name for r in report.layers] == ["fc6", "fc7"]
    original, _ = load_checkpoint(small_checkpoint)
    compressed, meta = load_checkpoint(out)
    assert meta.config.head.ranks == (HIDDEN, HIDDEN)
    assert meta.compression["method"] == "truncated-svd"
    assert meta.compression["layers"]["fc6"]["rank"] == HIDDEN
    assert isinstance(compressed.fc6, nn.Sequential) and compressed.fc6[0].bias is None

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    proposals = np.array([[0, 0, 159, 119], [10, 20, 80, 100], [40, 30, 150, 110], [5, 5, 60, 50]], np.float32)
    settings = DetectSettings(scale=(224,), max_size=320, score_threshold=0.0)
    results = []
    for model in (original, compressed):
        detector = Detector(model, settings)
        probs, boxes = detector.scores_and_boxes(image, proposals, StageTimes())
        results.append((probs, boxes))
        result = detector.detect(image, proposals, "img")
        assert result.num_proposals == 4 and len(result.detections.boxes) > 0
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-3)


def test_low_rank_checkpoint_is_smaller_and_records_what_was_done(small_checkpoint: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.model.checkpoint import load_checkpoint

    out = tmp_path / "low.pt"
    report = compress_checkpoint(small_checkpoint, out, 8, 4)
    fc6, fc7 = report.layers
    assert fc6.params_after == 8 * (HIDDEN + 5488) + HIDDEN
    assert fc7.params_after == 4 * (HIDDEN + HIDDEN) + HIDDEN
    assert report.size_after < report.size_before and report.weights_after < report.weights_before
    assert 0.0 < fc6.energy_kept < 1.0 and 0.0 < fc7.energy_kept < 1.0
    model, meta = load_checkpoint(out)
    assert meta.config.head.ranks == (8, 4)
    assert sum(p.numel() for p in model.fc6.parameters()) == fc6.params_after
    assert meta.compression["source"] == str(small_checkpoint)
    # again, to a lower rank: the earlier compression is kept in the record
    again = compress_checkpoint(out, tmp_path / "lower.pt", 4, 2)
    assert again.layers[0].previous_rank == 8
    _, meta2 = load_checkpoint(tmp_path / "lower.pt")
    assert meta2.compression["previous"]["layers"]["fc6"]["rank"] == 8


def test_float16_checkpoint_stays_float16(tmp_path: Path) -> None:
    from fastrcnn_cli.model.checkpoint import load_checkpoint, read_checkpoint_file

    half = _save(_small_model(), tmp_path / "half.pt", half=True)
    report = compress_checkpoint(half, tmp_path / "half-svd.pt", 16, "default")
    assert report.dtype == "float16" and any("float16" in n for n in report.notes)
    payload = read_checkpoint_file(tmp_path / "half-svd.pt")
    assert payload["dtype"] == "float16"
    assert payload["state_dict"]["fc6.0.weight"].dtype == torch.float16
    assert payload["state_dict"]["fc6.1.bias"].dtype == torch.float16
    load_checkpoint(tmp_path / "half-svd.pt")


def test_a_checkpoint_without_fc_layers_is_a_clear_error(small_checkpoint: Path, tmp_path: Path) -> None:
    payload = torch.load(small_checkpoint, weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("fc6")}
    torch.save(payload, tmp_path / "nofc.pt")
    with pytest.raises(CheckpointError, match="no fully connected layer fc6"):
        compress_checkpoint(tmp_path / "nofc.pt", tmp_path / "out.pt", 4)


# ---------------------------------------------------------------------------------------------------------
# timing


def test_benchmark_head_returns_plain_data() -> None:
    result = benchmark_head(in_features=64, hidden=32, ranks=(8, 4), num_rois=10, runs=2, warmup=0)
    json.dumps(result)
    assert result["params_before"] == (64 * 32 + 32) + (32 * 32 + 32)
    assert result["params_after"] == (8 * (32 + 64) + 32) + (4 * (32 + 32) + 32)
    for side in ("before", "after"):
        for part in ("total", "fc6", "fc7"):
            stats = result[side][part]
            assert len(stats["runs_ms"]) == 2 and stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert result["speedup"] > 0 and result["num_rois"] == 10 and "random" in result["weights"]


def test_benchmark_head_refuses_a_rank_the_shape_cannot_take() -> None:
    with pytest.raises(RankError):
        benchmark_head(in_features=64, hidden=32, ranks=(40, 4), num_rois=2, runs=1, warmup=0)


# ---------------------------------------------------------------------------------------------------------
# the command line


def test_cli_json_reports_layers_sizes_and_timing(small_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.pt"
    result = run("-w", str(small_checkpoint), "--rank", "16", "-o", str(out), "--rois", "20", "--runs", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["output"] == str(out) and out.exists()
    assert [layer["name"] for layer in data["layers"]] == ["fc6", "fc7"]
    assert [layer["rank"] for layer in data["layers"]] == [16, 16]  # fc7: min(16, 256)
    assert data["file_bytes_after"] < data["file_bytes_before"]
    assert data["timing"]["num_rois"] == 20 and data["timing"]["speedup"] > 0
    assert data["evaluation"] is None


def test_cli_default_output_name_and_table(small_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "model.pt"
    shutil.copy(small_checkpoint, src)
    result = run("-w", str(src), "--rank", "8", "--no-time")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model-svd8.pt").exists()
    assert "energy kept" in result.output and "fc6" in result.output
    result = run("-w", str(src), "--rank", "8", "--rank-fc7", "none", "--no-time")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model-svd8-fc7-none.pt").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--rank", "5000"], 2, "too large for fc6"),
        (["--rank", "8", "--rank-fc7", "65"], 2, "too large for fc7"),
        (["--rank", "0"], 2, "--rank"),
        (["--rank", "-4"], 2, "--rank"),
        (["--rank", "8", "--rank-fc7", "0"], 2, "--rank-fc7"),
        (["--rank", "8", "--rank-fc7", "abc"], 2, "--rank-fc7"),
    ],
)
def test_cli_bad_ranks_are_usage_errors_without_traceback(
    small_checkpoint: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = run("-w", str(small_checkpoint), "-o", str(tmp_path / "o.pt"), "--no-time", *args)
    assert result.exit_code == code, result.output
    assert message in text(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.pt").exists()


def test_cli_not_a_checkpoint_is_exit_1_without_traceback(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    for path in (bogus, tmp_path / "missing.pt"):
        result = run("-w", str(path), "--rank", "8", "--no-time")
        assert result.exit_code == 1, result.output
        assert str(path) in result.output.replace("\n", "")
        assert "checkpoint" in text(result) or "no such weights file" in text(result)
        assert "Traceback" not in result.output


def test_cli_refuses_to_overwrite_its_input(small_checkpoint: Path) -> None:
    result = run("-w", str(small_checkpoint), "--rank", "8", "-o", str(small_checkpoint), "--no-time")
    assert result.exit_code == 1 and "overwrite the input" in text(result)


def test_cli_eval_reports_map_before_and_after(synthetic_voc: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.data.voc import read_classes_file

    classes = read_classes_file(synthetic_voc / "classes.txt")
    ckpt = _save(_small_model(classes), tmp_path / "shapes.pt")
    result = run(
        "-w", str(ckpt), "--rank", str(HIDDEN), "--rank-fc7", str(HIDDEN), "--no-time",
        "--eval", str(synthetic_voc), "--split", "test", "--proposal-cache", str(tmp_path / "cache"), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)["evaluation"]
    assert evaluation["split"] == "test" and evaluation["num_images"] == 4
    assert "PASCAL VOC" in evaluation["protocol"]
    before, after = evaluation["before"], evaluation["after"]
    assert 0.0 <= before["map"] <= 1.0 and 0.0 <= after["map"] <= 1.0
    assert evaluation["delta_map"] == pytest.approx(after["map"] - before["map"])
    # (full rank gives the same scores to ~1e-7, see the detection test; the mAP of a random model is not
    # compared, as near-tied scores of an untrained head can swap places and move it)

"""fastrcnn export: ONNX and TorchScript files that give the PyTorch path's answers, and clear refusals.

The shipped model is exported once per session; the example images' Selective Search proposals are computed once.
The PyTorch reference runs with ``dedup=False``: the graph pools every proposal, and the detector's
de-duplication merges proposals by NumPy's half-to-even rounding while RoI pooling rounds half away from zero,
so on shapes-1.jpg it pools two boxes differently from how the graph (and the un-deduplicated model) does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.export import ExportUsageError, resolve_format
from fastrcnn_cli.model.checkpoint import DEFAULT_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("shapes-*.jpg"))
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _needs_onnx() -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model exported to ONNX with the command line."""
    _needs_onnx()
    path = tmp_path_factory.mktemp("export") / "shapes.onnx"
    result = run("export", DEFAULT_WEIGHTS, path, "--json")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def torch_detector():
    from fastrcnn_cli.detect import DetectSettings, Detector, proposal_settings_from_meta
    from fastrcnn_cli.model.checkpoint import load_checkpoint

    model, meta = load_checkpoint(DEFAULT_WEIGHTS)
    settings = dataclasses.replace(DetectSettings.for_checkpoint(meta), dedup=False)
    return Detector(model, settings, "cpu", proposal_settings_from_meta(meta))


@pytest.fixture(scope="module")
def examples(torch_detector) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, Selective Search proposals) of each example image."""
    from fastrcnn_cli.detect import sanitise_proposals
    from fastrcnn_cli.io import read_image

    out = []
    for path in EXAMPLES:
        image = read_image(path)
        props = sanitise_proposals(torch_detector.propose(image), image.shape[1], image.shape[0])
        out.append((path.name, image, props))
    return out


def _onnx_detector(path: Path, like):
    from fastrcnn_cli.detect import Detector
    from fastrcnn_cli.onnx_backend import load_onnx

    network, _ = load_onnx(path)
    return Detector(network, like.settings, "cpu", like.proposal_settings)


def _assert_same_answers(reference, other, examples, score_tol: float = 1e-4) -> None:
    from fastrcnn_cli.detect import StageTimes

    for name, image, props in examples:
        p_ref, b_ref = reference.scores_and_boxes(image, props, StageTimes())
        p, b = other.scores_and_boxes(image, props, StageTimes())
        assert p.shape == p_ref.shape and b.shape == b_ref.shape
        assert float((p - p_ref).abs().max()) < score_tol, name
        assert float((b - b_ref).abs().max()) < 1e-2, name  # pixels
        for threshold in (0.5, 0.001):
            d_ref = reference.postprocess(name, p_ref, b_ref, threshold)
            d = other.postprocess(name, p, b, threshold)
            assert len(d) == len(d_ref) > 0, name
            np.testing.assert_array_equal(d.labels, d_ref.labels)
            np.testing.assert_allclose(d.scores, d_ref.scores, atol=score_tol)
            np.testing.assert_allclose(d.boxes, d_ref.boxes, atol=1e-2)


# ---------------------------------------------------------------------------------------------------------------
# formats and refusals (no onnx needed)


def test_format_comes_from_the_extension_and_must_agree_with_format_option() -> None:
    assert resolve_format("m.onnx", None) == "onnx"
    assert resolve_format("m.torchscript", None) == "torchscript"
    assert resolve_format("m.PT", None) == "checkpoint"
    assert resolve_format("m.pth", "checkpoint") == "checkpoint"
    for name, fmt in (("m.onnx", "torchscript"), ("m.pt", "onnx"), ("m.txt", None), ("model", "onnx"), ("m.onnx", "tf")):
        with pytest.raises(ExportUsageError) as info:
            resolve_format(name, fmt)
        assert str(info.value).startswith("format: ") and "--" not in str(info.value)  # the field, not the flag


def test_wrong_extension_is_a_usage_error_without_traceback(tmp_path: Path) -> None:
    result = run("export", DEFAULT_WEIGHTS, tmp_path / "model.pt", "--format", "onnx")
    assert result.exit_code == 2, result.output
    assert "--format: onnx writes a .onnx file" in result.output and "Traceback" not in result.output
    result = run("export", DEFAULT_WEIGHTS, tmp_path / "model.bin")
    assert result.exit_code == 2 and "cannot tell the format" in result.output
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_that_is_not_a_detector_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "classifier.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    for out in ("m.onnx", "m.torchscript", "m.pt"):
        result = run("export", other, tmp_path / out)
        assert result.exit_code == 1, result.output
        assert "not a fastrcnn checkpoint" in result.output and "Traceback" not in result.output


def test_checkpoint_format_is_the_slim_float16_checkpoint(tmp_path: Path) -> None:
    from fastrcnn_cli.model.checkpoint import read_checkpoint_file

    out = tmp_path / "slim.pt"
    result = run("export", DEFAULT_WEIGHTS, out, "--format", "checkpoint", "--json")
    assert result.exit_code == 0, result.output
    payload = read_checkpoint_file(out)
    assert payload["dtype"] == "float16" and "train_state" not in payload


# ---------------------------------------------------------------------------------------------------------------
# ONNX


def test_onnx_file_is_valid_standard_and_self_describing(exported: Path) -> None:
    import onnx

    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "MaxRoiPool" in ops and "Softmax" in ops
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # no custom domain
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == ["circle", "square", "triangle", "star", "ring"]
    assert json.loads(props["scales"]) == [352] and props["max_size"] == "576"
    assert json.loads(props["proposals"])["mode"] == "fast" and "stds" in json.loads(props["box_coding"])
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {"image": ["height", "width", 3], "rois": ["num_rois", 4], "im_info": [3]}


def test_onnx_runtime_max_roi_pool_matches_our_operator(tmp_path: Path) -> None:
    """Coordinates that scale to .5 (rounding), boxes past the border, tiny boxes and all-negative features."""
    _needs_onnx()
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from fastrcnn_cli.ops import roi_pool

    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], pooled_shape=[7, 7], spatial_scale=1 / 16)
    graph = helper.make_graph(
        [node], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 20, 30]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["r", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["r", 3, 7, 7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 20, 30, generator=g)
    x[1] = -x[1].abs() - 1.0  # every value of image 1 negative
    xy = torch.rand(300, 2, generator=g) * 500 - 20
    wh = torch.rand(300, 2, generator=g) * 300
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=g).float(), xy, xy + wh], dim=1)
    rois[:20, 1:] = torch.arange(20 * 4).view(20, 4).float() * 8 + 8  # k * 16 + 8: scaled .5 exactly
    ours = roi_pool(x, rois, 7, 1 / 16)
    theirs = session.run(None, {"x": x.numpy(), "rois": rois.numpy()})[0]
    np.testing.assert_array_equal(theirs, ours.numpy())


def test_onnx_runtime_matches_pytorch_on_the_examples(exported: Path, torch_detector, examples) -> None:
    _assert_same_answers(torch_detector, _onnx_detector(exported, torch_detector), examples)


def test_svd_compressed_checkpoint_exports_and_matches(tmp_path: Path, examples) -> None:
    _needs_onnx()
    from fastrcnn_cli.detect import DetectSettings, Detector, proposal_settings_from_meta
    from fastrcnn_cli.model.checkpoint import load_checkpoint
    from fastrcnn_cli.svd_checkpoint import compress_checkpoint

    svd = tmp_path / "svd.pt"
    compress_checkpoint(DEFAULT_WEIGHTS, svd, 64, 32)
    result = run("export", svd, tmp_path / "svd.onnx")
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(svd)
    assert meta.config.head.ranks == (64, 32)
    settings = dataclasses.replace(DetectSettings.for_checkpoint(meta), dedup=False)
    reference = Detector(model, settings, "cpu", proposal_settings_from_meta(meta))
    _assert_same_answers(reference, _onnx_detector(tmp_path / "svd.onnx", reference), examples[:1])


def test_torchscript_export_loads_with_torch_jit_and_matches(tmp_path: Path, torch_detector, examples) -> None:
    import warnings

    import torchvision  # noqa: F401 - registers torchvision::roi_pool, which the file calls

    from fastrcnn_cli.model.fast_rcnn import resize_image, scale_factor

    out = tmp_path / "shapes.torchscript"
    result = run("export", DEFAULT_WEIGHTS, out)
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(out))

    class Network:  # the TorchScript module behind the Detector's backend interface
        config = torch_detector.model.config
        runtime = "TorchScript"

        def scores_and_boxes(self, image, proposals, settings, times):
            h, w = image.shape[:2]
            factor = scale_factor(h, w, settings.scale[0], settings.max_size)
            info = torch.tensor([h, w, factor], dtype=torch.float32)
            with torch.no_grad():
                return module(torch.from_numpy(resize_image(image, factor)), torch.from_numpy(proposals), info)

    from fastrcnn_cli.detect import Detector

    other = Detector(Network(), torch_detector.settings, "cpu", torch_detector.proposal_settings)
    _assert_same_answers(torch_detector, other, examples)


def test_onnx_file_from_another_tool_is_refused(tmp_path: Path) -> None:
    _needs_onnx()
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "other", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, producer_name="sometool"), str(other))
    result = run("detect", EXAMPLES[0], "--weights", other, "--json")
    assert result.exit_code == 1, result.output
    assert "not a fastrcnn ONNX model (made by sometool)" in result.output and "Traceback" not in result.output
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    result = run("detect", EXAMPLES[0], "--weights", garbage)
    assert result.exit_code == 1 and "ONNX Runtime cannot load this file" in result.output
    assert "Traceback" not in result.output


def test_detect_with_onnx_never_builds_the_operator(exported: Path, tmp_path: Path) -> None:
    """`fastrcnn detect --weights model.onnx` in a process whose operator build folder is empty."""
    build = tmp_path / "extensions"
    build.mkdir()
    env = {**os.environ, "FASTRCNN_EXTENSIONS_DIR": str(build), "TORCH_EXTENSIONS_DIR": str(build)}
    vis = tmp_path / "vis.png"
    proc = subprocess.run(
        [sys.executable, "-m", "fastrcnn_cli", "detect", str(EXAMPLES[0]), "--weights", str(exported),
         "--out", str(vis), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "with ONNX Runtime" in proc.stderr and "compiling" not in proc.stderr
    assert vis.is_file() and not list(build.iterdir())
    document = json.loads(proc.stdout)
    assert len(document["images"][0]["detections"]) == 4


def test_readme_example_runs_with_onnxruntime_numpy_and_opencv_only(exported: Path, tmp_path: Path) -> None:
    example = REPO / "examples" / "onnx_detect.py"
    code = example.read_text()
    assert code.strip() in (REPO / "README.md").read_text(), "README's Deploy example must be examples/onnx_detect.py"
    assert "fastrcnn_cli" not in code and "import torch" not in code
    # fastrcnn and torch made unimportable: the example must not need them
    blocker = tmp_path / "blocker"
    for name in ("fastrcnn_cli", "torch"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    proc = subprocess.run([sys.executable, str(example), str(exported), str(EXAMPLES[0])],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert sorted(line[0] for line in lines) == ["circle", "square", "star", "star"]
    assert all(float(line[1]) > 0.9 and len(line) == 6 for line in lines)


def test_evaluate_with_onnx_gives_the_pytorch_map(exported: Path, synthetic_voc: Path, tmp_path: Path) -> None:
    maps = {}
    for name, weights in (("onnx", exported), ("torch", DEFAULT_WEIGHTS)):
        result = run("evaluate", synthetic_voc, "--split", "test", "--weights", weights, "--out", tmp_path / name,
                     "--proposal-cache", tmp_path / "cache", "--workers", "1", "--json")
        assert result.exit_code == 0, result.output
        maps[name] = json.loads(result.stdout)["map"]
    assert maps["onnx"] > 0.5 and abs(maps["onnx"] - maps["torch"]) < 0.01, maps


def test_benchmark_times_the_onnx_model_in_the_stages_section(exported: Path) -> None:
    result = run("benchmark", "--weights", exported, "--runs", "1", "--warmup", "0", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload["sections"]) == ["stages"] and payload["setup"]["runtime"].startswith("ONNX Runtime")
    stages = payload["sections"]["stages"]
    assert stages["runtime"] == "ONNX Runtime" and stages["stages"]["backbone"]["median_ms"] > 0
    refused = run("benchmark", "--weights", exported, "--sections", "shared")
    assert refused.exit_code == 2 and "'--sections'" in refused.output and "Traceback" not in refused.output

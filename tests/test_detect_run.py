"""``run_detect`` used from Python, without the command line: the shipped model on the shipped example images,
the typed result, the files it writes, progress only through :mod:`fastrcnn_cli.progress`, errors that name
settings fields (the command line renders them as flags), Ctrl-C and unreadable images, and the test scale's one
name (``scale``, with the old ``scales`` still read)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastrcnn_cli import pipeline, progress
from fastrcnn_cli.boxes import iou
from fastrcnn_cli.cli.app import flag_for
from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.detect import Detector
from fastrcnn_cli.detect_run import DetectRun, FieldInputError, plan_detect, run_detect
from fastrcnn_cli.detect_settings import DetectRunSettings, DetectSettings
from fastrcnn_cli.errors import InputError, SettingsError
from fastrcnn_cli.io import read_image
from fastrcnn_cli.model.checkpoint import checkpoint_meta, read_checkpoint_file
from fastrcnn_cli.shipped import example_path, model_path

EXPECTED = json.loads(example_path("expected/shapes-1.json").read_text())


def test_run_detect_on_the_shipped_model_returns_the_run_and_writes_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vis, doc_path, coco_path, voc = tmp_path / "vis.png", tmp_path / "d.json", tmp_path / "c.json", tmp_path / "voc"
    settings = DetectRunSettings(example=True, out=str(vis), save_json=doc_path, save_coco=coco_path, save_voc=voc)
    with progress.reporting_to(progress.Recorder()) as recorder:
        run = run_detect(settings)

    # the typed result
    assert isinstance(run, DetectRun) and not run.stopped and run.failed == []
    meta = checkpoint_meta(read_checkpoint_file(model_path()))
    assert run.weights.resolve() == model_path().resolve() and run.classes == tuple(meta.classes)
    assert run.detect_settings.scale == (meta.scales[0],) and run.detect_settings.max_size == meta.max_size
    assert run.proposal_settings is not None and run.proposal_source is None and run.device == "cpu"
    (image,) = run.images
    assert image.file == example_path() and image.output == vis and image.error is None
    expected = EXPECTED["images"][0]["detections"]
    names = [run.classes[int(k)] for k in image.detections.labels]
    assert sorted(names) == sorted(d["class"] for d in expected)
    for want in expected:  # the same objects, found at the same places
        mine = image.detections.boxes[[n == want["class"] for n in names]]
        assert iou(np.asarray([want["box"]], np.float32), mine).max() > 0.8, (want, mine)
    assert run.num_detections == len(expected) and run.frames == [] and run.videos == []
    assert set(run.stage_seconds()) == {"proposals_s", "network_s", "postprocess_s"}
    assert run.stage_seconds()["proposals_s"] > 0 and run.load_s > 0

    # the files: the drawing, the document (what to_dict gives), the COCO list, the VOC data set
    drawn, original = read_image(vis), read_image(example_path())
    assert drawn.shape == original.shape and (drawn != original).any()
    document = run.to_dict()
    assert json.loads(doc_path.read_text()) == json.loads(json.dumps(document))
    assert json.loads(coco_path.read_text()) == document["coco"] and len(document["coco"]) == len(expected)
    assert document["settings"]["scale"] == [meta.scales[0]] and "scales" not in document["settings"]
    assert run.files == [doc_path, coco_path]
    (labels,) = run.labels
    assert (labels.kind, labels.path, labels.images, labels.boxes) == ("voc", voc, 1, len(expected))
    (record,) = load_dataset(voc, "detect", warn=False).records
    assert len(record.boxes) == len(expected)

    # progress and messages only through the progress interface: nothing printed by the core
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    lines = recorder.messages()
    assert lines[0].startswith(f"model {run.weights} (") and "proposals: Selective Search" in lines[0]
    assert f"[1/1] {example_path()} " in lines[1] and f"{len(expected)} detections" in lines[1]
    assert lines[2:] == [f"wrote {doc_path}", f"wrote {coco_path}", f"wrote {labels.describe()}"]


def test_an_unreadable_image_is_skipped_and_ctrl_c_keeps_what_was_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(example_path("shapes-2.jpg").read_bytes()[:300])
    calls = []
    original = Detector.detect

    def detect(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the third image
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", detect)
    sources = (str(broken), str(example_path("shapes-2.jpg")), str(example_path("shapes-3.jpg")))
    doc_path = tmp_path / "d.json"
    with progress.reporting_to(progress.Recorder()) as recorder:
        run = run_detect(DetectRunSettings(sources=sources, save_json=doc_path, score_threshold=0.9))
    assert run.stopped
    assert [o.file.name for o in run.images] == ["broken.jpg", "shapes-2.jpg"]  # shapes-3 never started
    (failed,) = run.failed
    assert failed.file == broken and "not a readable image" in failed.error
    document = json.loads(doc_path.read_text())  # written although stopped
    assert [Path(i["file"]).name for i in document["images"]] == ["shapes-2.jpg"]
    assert document["failed"] == [{"file": str(broken), "error": failed.error}]
    assert any(m.startswith(f"[1/3] {broken}: skipped: ") for m in recorder.messages())
    assert "stopped (Ctrl-C): writing what was done" in recorder.messages()


def test_errors_before_the_work_name_fields_and_the_command_line_renders_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: pytest.fail("the model was loaded"))
    flags = {"score_threshold": "--conf"}
    same = tmp_path / "same.json"
    with pytest.raises(FieldInputError) as info:
        run_detect(DetectRunSettings(example=True, save_json=same, save_coco=same))
    assert str(info.value) == f"{same}: save_coco and save_json name the same file"
    assert [f for f, _ in info.value.problems] == ["save_coco", "save_json"]
    assert info.value.render(lambda f: flag_for(f, flags)) == f"{same}: --save-coco and --save-json name the same file"
    assert isinstance(info.value, InputError) and info.value.exit_code == 1

    (tmp_path / "voc").mkdir()
    with pytest.raises(FieldInputError, match="save_json .* is inside save_voc"):
        plan_detect(DetectRunSettings(example=True, save_voc=tmp_path / "voc", save_json=tmp_path / "voc" / "d.json"))
    with pytest.raises(FieldInputError, match="save_json would overwrite the input") as info:
        plan_detect(DetectRunSettings(example=True, save_json=example_path()))
    assert "--save-json would overwrite" in info.value.render(flag_for)
    with pytest.raises(FieldInputError) as info:
        plan_detect(DetectRunSettings(example=True, proposals=tmp_path, proposal_cache=tmp_path))
    assert [f for f, _ in info.value.problems] == ["proposals", "proposal_cache"]
    assert info.value.render(flag_for).startswith("--proposals and --proposal-cache both say")

    # settings out of range, or that do not fit together: a SettingsError naming the run's fields
    for kwargs, field in (
        ({}, "sources"),
        ({"example": True, "score_threshold": 2.0}, "score_threshold"),
        ({"example": True, "nms": 0.0}, "nms"),
        ({"example": True, "vid_stride": 0}, "vid_stride"),
        ({"example": True, "scale": [16]}, "scale"),
        ({"example": True, "proposal_mode": "slow"}, "proposal_mode"),
    ):
        with pytest.raises(SettingsError) as info:
            DetectRunSettings(**kwargs)
        assert [f for f, _ in info.value.problems] == [field] and "--" not in str(info.value)
    with pytest.raises(SettingsError) as info:
        plan_detect(DetectRunSettings(example=True, save_conf=True))  # the scores are for YOLO labels
    assert [f for f, _ in info.value.problems] == ["save_conf"]
    with pytest.raises(SettingsError) as info:
        plan_detect(DetectRunSettings(example=True, save_voc=tmp_path / "new", split="my split"))
    assert [f for f, _ in info.value.problems] == ["split"]


def test_the_settings_take_strings_paths_and_lists() -> None:
    settings = DetectRunSettings(sources="photos/", out="out", scale=[480, 600], classes=["dog"])
    assert settings.sources == ("photos/",) and settings.out == Path("out")
    assert settings.scale == (480, 600) and settings.classes == ("dog",)


def test_the_test_scale_is_scale_and_documents_that_say_scales_still_read() -> None:
    settings = DetectSettings(scale=(480, 600), max_size=800, score_threshold=0.8)
    assert DetectSettings.from_dict(settings.to_dict()) == settings
    old = {"scales": [480, 600], "max_size": 800, "score_threshold": 0.8, "nms": 0.3, "max_detections": 100,
           "classes": None, "proposals": {"mode": "fast"}, "proposal_source": None}  # a version-2 document's
    assert DetectSettings.from_dict(old) == settings
    with pytest.raises(SettingsError) as info:
        DetectSettings(scale=(16,))
    assert info.value.problems[0][0] == "scale"

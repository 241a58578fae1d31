"""`fastrcnn detect` on videos and cameras: frames read with a stride, the annotated video written atomically
with the right frame count and rate, per-frame JSON, and the sources refused up front (a corrupt video before
the model loads, a camera that does not open, a URL), each with one clear message and no traceback.

The videos are made here with OpenCV's ``VideoWriter`` from a synthetic shapes image; the model is the random
checkpoint of ``test_detect`` (detections exist at ``--conf 0``; their quality is not the point).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastrcnn_cli.data.voc import load_dataset
from fastrcnn_cli.errors import InputError, OutputError
from fastrcnn_cli.results import expand_sources, plan_outputs, plan_video_outputs
from fastrcnn_cli.video import AnnotatedVideoWriter, VideoReader, probe_video
from tests.test_detect import assert_clean_failure, make_checkpoint, run

FPS, FRAMES, SIZE = 10.0, 12, (160, 128)  # SIZE: (width, height), even for the MPEG-4 encoder


def count_frames(path: Path) -> tuple[int, float]:
    capture = cv2.VideoCapture(str(path))
    n = 0
    while capture.read()[0]:
        n += 1
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return n, fps


def write_video(path: Path, frames: int = FRAMES, fps: float = FPS, base: np.ndarray | None = None) -> Path:
    """A short video: a shapes image sliding right by 3 pixels a frame, and a frame counter in the corner."""
    base = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8) if base is None else cv2.resize(base, SIZE)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.roll(base, 3 * i, axis=1).copy()
        cv2.putText(frame, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt")


@pytest.fixture(scope="module")
def clip(synthetic_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    record = load_dataset(synthetic_voc, "test", warn=False).records[0]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", base=cv2.imread(str(record.image_path)))


# ------------------------------------------------------------------------------------------------------------
# reading and writing
# ------------------------------------------------------------------------------------------------------------


def test_reader_gives_every_stride_th_frame_with_its_time(clip: Path) -> None:
    with VideoReader.open_file(clip) as reader:
        assert (reader.info.width, reader.info.height, reader.info.fps, reader.info.frame_count) == (*SIZE, FPS, FRAMES)
        assert reader.info.frames_at(5) == 3
        frames = list(reader.frames(stride=5))
    assert [f.index for f in frames] == [0, 5, 10]
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0]
    assert all(f.image.shape == (SIZE[1], SIZE[0], 3) and f.image.dtype == np.uint8 for f in frames)
    with VideoReader.open_file(clip) as reader:
        every = list(reader.frames())
    assert len(every) == FRAMES
    # the frames are the ones the stride names: frame 5 of the strided read is frame 5 of the full read
    assert np.array_equal(frames[1].image, every[5].image)


@pytest.mark.parametrize("content", [b"", b"not a video at all", "truncated"])
def test_unreadable_videos_are_input_errors_naming_the_file(clip: Path, tmp_path: Path, content) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(clip.read_bytes()[:300] if content == "truncated" else content)
    with pytest.raises(InputError, match="bad.mp4") as info:
        probe_video(bad)
    assert "empty" in str(info.value) or "not a readable video" in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov"])
def test_writer_publishes_only_a_complete_file(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    with AnnotatedVideoWriter(target, 5.0, SIZE) as writer:
        for i in range(4):
            writer.write(np.full((SIZE[1], SIZE[0], 3), 40 * i, np.uint8))
            assert not target.exists()  # written under a temporary name until closed
    assert count_frames(target) == (4, 5.0)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    failed = tmp_path / f"failed{suffix}"
    with pytest.raises(RuntimeError), AnnotatedVideoWriter(failed, 5.0, SIZE) as writer:
        writer.write(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
        raise RuntimeError("a failure half-way")
    assert not failed.exists() and [p.name for p in tmp_path.iterdir()] == [target.name]  # nothing left behind
    with pytest.raises(OutputError, match="must be one of"):
        AnnotatedVideoWriter(tmp_path / "out.gif", 5.0, SIZE)


def test_sources_sort_videos_cameras_and_urls_up_front(clip: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    srcs = expand_sources([clip, image])
    assert (srcs.images, srcs.videos, srcs.camera) == ([image], [clip], None)
    assert expand_sources(["0"]).camera == 0
    assert expand_sources([clip.parent]).videos == [clip]  # a folder's videos
    with pytest.raises(InputError, match="given alone"):
        expand_sources(["0", str(image)])
    with pytest.raises(InputError, match="never reaches the network") as info:
        expand_sources(["https://example.com/videos/a.mp4"])
    assert "https://example.com/videos/a.mp4" in str(info.value)  # not mangled to https:/example.com
    # output paths: a file for one video, else a folder with the videos' names (clear of the images')
    assert plan_video_outputs(expand_sources([clip]), tmp_path / "o.mp4") == [tmp_path / "o.mp4"]
    srcs = expand_sources([clip, image])
    assert plan_video_outputs(srcs, tmp_path / "out", plan_outputs(srcs, tmp_path / "out")) == [
        tmp_path / "out" / "clip.mp4"
    ]
    assert plan_video_outputs(expand_sources(["3"]), tmp_path / "out") == [tmp_path / "out" / "camera3.mp4"]
    with pytest.raises(InputError, match="image file name, but the source is a video"):
        plan_video_outputs(expand_sources([clip]), tmp_path / "o.png")
    with pytest.raises(InputError, match="overwrite an input"):
        plan_video_outputs(expand_sources([clip]), clip)


# ------------------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------------------


def test_cli_video_writes_every_frame_annotated_and_per_frame_json(
    clip: Path, checkpoint: Path, tmp_path: Path
) -> None:
    out, doc_path = tmp_path / "out.mp4", tmp_path / "frames.json"
    result = run("detect", clip, "--out", out, "--save-json", doc_path, "--weights", checkpoint, "--conf", "0",
                 "--max-det", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert count_frames(out) == (FRAMES, FPS)
    doc = json.loads(doc_path.read_text())
    assert doc["version"] == 3 and doc["images"] == [] and doc["coco"] == []
    (video,) = doc["videos"]
    assert (video["file"], video["output"], video["fps"], video["frame_count"]) == (str(clip), str(out), FPS, FRAMES)
    assert (video["vid_stride"], video["frames_processed"], video["complete"]) == (1, FRAMES, True)
    assert [f["frame"] for f in video["frames"]] == list(range(FRAMES))
    assert [f["time_s"] for f in video["frames"]] == [round(i / FPS, 4) for i in range(FRAMES)]
    assert all(len(f["detections"]) == 2 for f in video["frames"])
    first = video["frames"][0]["detections"][0]
    assert set(first) == {"class", "class_index", "category_id", "score", "box"}
    # a progress line per frame, then the totals
    for i in range(FRAMES):
        assert f"[{i + 1:>2}/{FRAMES}] {clip} frame {i} " in result.stderr
    assert f"{FRAMES} frame(s) of 1 video(s)" in result.stderr
    # the annotated frames differ from the source frames (boxes drawn)
    with VideoReader.open_file(clip) as source, VideoReader.open_file(out) as drawn:
        a, b = next(source.frames()).image, next(drawn.frames()).image
    assert np.abs(a.astype(int) - b.astype(int)).max() > 100


def test_cli_vid_stride_keeps_the_duration(clip: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated"
    result = run("detect", clip, "--out", out, "--vid-stride", "5", "--weights", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    (video,) = json.loads(result.stdout)["videos"]
    assert [f["frame"] for f in video["frames"]] == [0, 5, 10]
    assert (video["vid_stride"], video["output_fps"]) == (5, FPS / 5)
    assert count_frames(out / "clip.mp4") == (3, FPS / 5)  # 3 frames at 2 fps: as long as the source
    assert [f"[{n}/3] {clip} frame {i} " in result.stderr for n, i in ((1, 0), (2, 5), (3, 10))] == [True] * 3


def test_cli_images_and_videos_together_one_model_load(
    clip: Path, checkpoint: Path, synthetic_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli import pipeline

    loads = []
    original = pipeline.load_detector
    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: loads.append(1) or original(*a, **k))
    image = load_dataset(synthetic_voc, "test", warn=False).records[0].image_path
    out = tmp_path / "out"
    result = run("detect", image, clip, "--out", out, "--vid-stride", "6", "--weights", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    assert loads == [1]
    assert sorted(p.name for p in out.iterdir()) == sorted([image.name, "clip.mp4"])
    doc = json.loads(result.stdout)
    assert len(doc["images"]) == 1 and [f["frame"] for f in doc["videos"][0]["frames"]] == [0, 6]


def test_cli_corrupt_video_is_named_before_the_model_loads(
    clip: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli import pipeline

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "load_detector", no_load)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 2])  # no moov index: undecodable
    result = run("detect", broken, "--weights", checkpoint, "--out", tmp_path / "o.mp4")
    assert_clean_failure(result, 1, "broken.mp4", "not a readable video")
    assert not (tmp_path / "o.mp4").exists()
    (tmp_path / "empty.webm").write_bytes(b"")
    result = run("detect", broken, tmp_path / "empty.webm", clip, "--weights", checkpoint)
    assert_clean_failure(result, 1, "2 videos cannot be read", "broken.mp4", "empty.webm: the file is empty")
    assert str(clip) not in result.output


def test_cli_camera_that_does_not_open_and_urls_are_clear_failures(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli import pipeline

    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: pytest.fail("the model was loaded"))
    real = cv2.VideoCapture  # camera 0 as on a machine without one, whatever this machine has
    monkeypatch.setattr(cv2, "VideoCapture", lambda source, *a: real() if isinstance(source, int) else real(source, *a))
    assert_clean_failure(run("detect", "0", "--weights", checkpoint), 1, "no camera 0 could be opened")
    for url in ("https://example.com/clip.mp4", "rtsp://192.168.1.2:554/stream"):
        result = run("detect", url, "--weights", checkpoint)
        assert_clean_failure(result, 1, url, "never reaches the network", "download the file first")
    assert_clean_failure(run("detect", "0", "--example", "--weights", checkpoint), 1, "given alone")


def test_the_real_camera_probe_fails_cleanly_without_a_camera() -> None:
    """OpenCV's VideoCapture(index) on an index no machine has: our error, no OpenCV exception."""
    with pytest.raises(InputError, match="no camera 63 could be opened"):
        VideoReader.open_camera(63)


def test_cli_camera_stream_until_it_ends(
    clip: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A camera (here OpenCV reading the test clip in its place) is processed like a live video: times from the
    clock, no frame count, and `camera0.mp4` in an output folder."""
    real = cv2.VideoCapture
    monkeypatch.setattr(
        cv2, "VideoCapture", lambda source, *a: real(str(clip)) if isinstance(source, int) else real(source, *a)
    )
    out = tmp_path / "out"
    result = run("detect", "0", "--out", out, "--vid-stride", "4", "--weights", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    (video,) = json.loads(result.stdout)["videos"]
    assert video["file"] == "camera 0" and video["frame_count"] is None
    assert [f["frame"] for f in video["frames"]] == [0, 4, 8]
    assert count_frames(out / "camera0.mp4")[0] == 3
    assert "[1/?] camera 0 frame 0" in result.stderr


def test_cli_ctrl_c_keeps_the_frames_done(
    clip: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli.detect import Detector

    calls = []
    original = Detector.detect

    def detect(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", detect)
    out, doc_path, voc = tmp_path / "out.mp4", tmp_path / "d.json", tmp_path / "voc"
    result = run("detect", clip, "--out", out, "--save-json", doc_path, "--save-voc", voc, "--weights", checkpoint,
                 "--conf", "0", "--max-det", "1")  # fmt: skip
    assert_clean_failure(result, 130, "stopped by Ctrl-C")
    assert count_frames(out)[0] == 3
    (video,) = json.loads(doc_path.read_text())["videos"]
    assert video["complete"] is False and [f["frame"] for f in video["frames"]] == [0, 1, 2]
    assert len(load_dataset(voc, "detect", warn=False)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "out.mp4", "voc"]  # no temporary left


def test_cli_video_refuses_proposal_files_and_image_outputs(clip: Path, checkpoint: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", np.zeros((1, 4), np.float32))
    assert_clean_failure(
        run("detect", clip, "--weights", checkpoint, "--proposals", tmp_path / "p.npy"), 1, "per image"
    )
    assert_clean_failure(
        run("detect", clip, "--weights", checkpoint, "--out", tmp_path / "v.png"), 1, "video file name"
    )

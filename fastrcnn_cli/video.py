"""Video files and cameras, read frame by frame and written back annotated (OpenCV's ``VideoCapture`` and
``VideoWriter``, with the FFmpeg that ``opencv-contrib-python`` ships).

Reading (:class:`VideoReader`)
------------------------------
A video file (:data:`VIDEO_SUFFIXES`) is opened with OpenCV's FFmpeg backend and its first frame decoded at
once, so that a missing, empty, corrupt or truncated file (an MP4 without its ``moov`` index, say) is an
:class:`~fastrcnn_cli.errors.InputError` naming the file before any other work. A camera is opened by its index
(``VideoCapture(0)``); when none opens, the error says so. Frames come out as 8-bit BGR ``[H, W, 3]`` arrays, the
same as :func:`fastrcnn_cli.io.read_image` gives, so a frame is detected exactly like an image.

``stride`` N processes frames 0, N, 2N, ...: the frames between are *grabbed* (demuxed, not decoded), which
costs little. A frame's time is ``index / fps`` for a file (the container's frame rate; 30 when it states none)
and the seconds since the camera opened for a camera. A file that ends before the frame count in its header
(a truncated download) gives the frames it has, with a warning.

Writing (:class:`AnnotatedVideoWriter`)
---------------------------------------
The annotated video holds the processed frames at ``fps / stride``, so it lasts as long as the source. The
codec follows the suffix (:data:`FOURCC`: MPEG-4 Part 2 in ``.mp4 .m4v .mov .mkv``, Motion JPEG in ``.avi``,
VP8 in ``.webm``; these are the encoders the OpenCV wheels carry, H.264 is not among them). It is written under
a temporary name beside the target (with the same suffix, which chooses the container) and renamed over it
when complete, so an interrupted run never leaves half a video under the final name.

FFmpeg's own messages (``moov atom not found``, ...) are silenced (``OPENCV_FFMPEG_LOGLEVEL``, unless set
already) and OpenCV's warnings held back while a source is opened: the errors raised here say what happened.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fastrcnn_cli import progress
from fastrcnn_cli.errors import InputError, OutputError
from fastrcnn_cli.io import NEW_FILE_MODE, os_reason

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: the codec written for each suffix (all available in the opencv-python / opencv-contrib-python wheels)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG", ".webm": "VP80"}
#: frames per second assumed when a file or camera states none
DEFAULT_FPS = 30.0


def is_video_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True)
class VideoInfo:
    """What a source is: its frame size, frame rate and (for a file, when the header says) length."""

    width: int
    height: int
    fps: float
    frame_count: int | None  #: None for a camera, or a file whose header does not say

    def frames_at(self, stride: int) -> int | None:
        """How many frames ``stride`` processes (frames 0, stride, 2 stride, ...)."""
        return None if self.frame_count is None else math.ceil(self.frame_count / stride)


@dataclass(frozen=True)
class Frame:
    index: int  #: 0-based, in the source
    time_s: float  #: seconds from the start
    image: np.ndarray  #: BGR uint8 [H, W, 3]


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's log (a camera index that is not there: warnings and errors of each backend tried) held back,
    FFmpeg's silenced: the errors raised here say what went wrong."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first set up
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _fps(capture: cv2.VideoCapture) -> float:
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if math.isfinite(fps) and 0.0 < fps <= 1000.0 else DEFAULT_FPS


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


class VideoReader:
    """An open video file or camera; :meth:`frames` yields the frames to process. A context manager."""

    def __init__(self, capture: cv2.VideoCapture, first: np.ndarray, name: str, *, live: bool, frame_count: int | None):
        self._capture = capture
        self._first: np.ndarray | None = first
        self.name = name  #: the file's path, or "camera N"
        self.live = live  #: a camera: no end but the user's
        height, width = first.shape[:2]
        self.info = VideoInfo(int(width), int(height), _fps(capture), frame_count)
        self.frames_read = 0  #: frames taken from the source so far (processed or skipped)

    @classmethod
    def open_file(cls, path: str | os.PathLike) -> VideoReader:
        """Open a video file and decode its first frame; :class:`InputError` naming it when that fails."""
        path = Path(path)
        if not path.exists():
            raise InputError("no such file", path)
        if path.is_dir():
            raise InputError("is a folder, not a video", path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(f"cannot be read ({os_reason(exc)})", path) from None
        if size == 0:
            raise InputError("the file is empty", path)
        with _quiet_opencv():
            capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
            if not capture.isOpened():
                capture.release()
                raise InputError(
                    "not a readable video (corrupt, truncated, or a format OpenCV's FFmpeg cannot decode)", path
                )
            ok, first = capture.read()
        if not ok or first is None or first.size == 0:
            capture.release()
            raise InputError("the video holds no readable frame (corrupt or truncated)", path)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return cls(capture, _as_bgr(first), str(path), live=False, frame_count=count if count > 0 else None)

    @classmethod
    def open_camera(cls, index: int) -> VideoReader:
        """Open camera ``index`` and take a first frame; :class:`InputError` when no such camera opens."""
        with _quiet_opencv():
            capture = cv2.VideoCapture(int(index))
            opened = capture.isOpened()
            ok, first = capture.read() if opened else (False, None)
        if not opened:
            capture.release()
            raise InputError(f"no camera {index} could be opened (none is connected, or it is in use or not allowed)")
        if not ok or first is None or first.size == 0:
            capture.release()
            raise InputError(f"camera {index} opened but gives no picture")
        return cls(capture, _as_bgr(first), f"camera {index}", live=True, frame_count=None)

    def frames(self, stride: int = 1) -> Iterator[Frame]:
        """Frames 0, ``stride``, 2 ``stride``, ... until the source ends (a camera: until the caller stops)."""
        if stride < 1:
            raise ValueError(f"stride must be at least 1 (got {stride})")
        start = time.monotonic()
        index = 0
        while True:
            if self._first is not None:
                image, self._first = self._first, None
            else:
                ok, image = self._capture.read()
                if not ok or image is None:
                    break
                image = _as_bgr(image)
            self.frames_read = index + 1
            when = time.monotonic() - start if self.live else index / self.info.fps
            yield Frame(index, when, image)
            for _ in range(stride - 1):  # skipped: demuxed, not decoded
                index += 1
                if not self._capture.grab():
                    self._warn_if_short()
                    return
                self.frames_read = index + 1
            index += 1
        self._warn_if_short()

    def _warn_if_short(self) -> None:
        expected = self.info.frame_count
        if not self.live and expected is not None and self.frames_read < expected:
            progress.warn(
                f"{self.name}: the video ended after {self.frames_read} of the {expected} frames its header "
                "announces (truncated or partly corrupt); the frames read were processed"
            )

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """The :class:`VideoInfo` of a video file, after checking that its first frame decodes."""
    with VideoReader.open_file(path) as reader:
        return reader.info


class AnnotatedVideoWriter:
    """Frames written to a temporary file beside ``path``; :meth:`close` renames it over ``path``,
    :meth:`abort` removes it. Frames of another size than the first are resized to it."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise OutputError(f"an annotated video must be one of {', '.join(VIDEO_SUFFIXES)}", self.path)
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.stem[:100]}.", suffix=f".partial{suffix}", dir=self.path.parent
            )
        except OSError as exc:
            raise OutputError(f"cannot write here ({os_reason(exc)})", self.path) from None
        os.fchmod(fd, NEW_FILE_MODE)  # mkstemp makes 0600 files
        os.close(fd)
        self._tmp = Path(tmp)
        with _quiet_opencv():
            self._writer = cv2.VideoWriter(
                str(self._tmp), cv2.VideoWriter_fourcc(*FOURCC[suffix]), float(fps), self.size
            )
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise OutputError(f"OpenCV cannot write {suffix} video here ({FOURCC[suffix]} codec)", self.path)

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(image))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place (atomically); :class:`OutputError` when that fails."""
        self._writer.release()
        try:
            if self._tmp.stat().st_size == 0:
                raise OSError(0, "the encoder wrote nothing (disk full?)")
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write the annotated video ({os_reason(exc)})", self.path) from None

    def abort(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AnnotatedVideoWriter:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """Closed (published) when the block ends normally or by Ctrl-C, which keeps the frames written so
        far; removed on any other error."""
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()

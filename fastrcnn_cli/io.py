"""Files: reading images with clear errors, and writing anything atomically (never a half-written file)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from fastrcnn_cli.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as an 8-bit BGR array [H, W, 3] (grayscale and RGBA are converted).

    Raises :class:`InputError` naming the file when it is missing, unreadable or empty.
    """
    import cv2

    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a folder, not an image", path)
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise InputError("the file is empty", path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError("not a readable image (corrupt, or a format OpenCV cannot decode)", path)
    if image.dtype != np.uint8:
        # 16-bit PNG/TIFF: scale to 8 bits
        image = (image.astype(np.float64) * (255.0 / max(float(np.iinfo(image.dtype).max), 1.0))).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("the image has no pixels", path)
    return np.ascontiguousarray(image)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file."""
    image = read_image(path)
    return int(image.shape[1]), int(image.shape[0])


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a BGR image atomically; the format follows the suffix (default PNG)."""
    import cv2

    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(suffix, image)
    if not ok:
        raise InputError(f"cannot encode an image as {suffix}", path)
    atomic_write_bytes(path, buf.tobytes())


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    A crash or Ctrl-C at any moment leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: read once at import (os.umask can only be read by setting it, which is not thread-safe)
_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    from fastrcnn_cli.console import _json_default

    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))

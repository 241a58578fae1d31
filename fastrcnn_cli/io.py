"""Files: reading images with clear errors, and writing anything atomically (never a half-written file)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from fastrcnn_cli.errors import InputError, OutputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as a person sees it: upright (EXIF orientation applied), 8-bit BGR [H, W, 3], whatever its
    bit depth, channels or colour model (:mod:`fastrcnn_cli.imagefile` has the rules).

    Raises :class:`InputError` naming the file when it is missing, unreadable, empty or cannot be shown.
    """
    from fastrcnn_cli.imagefile import read_image as read_upright

    return read_upright(path)


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

    A crash or Ctrl-C at any moment leaves either the old file or the new one, never a partial file. A write
    that fails for the file system (disk full, read-only folder, permissions) removes the temporary file,
    leaves any previous ``path`` untouched and raises :class:`OutputError` naming ``path`` and the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name stays within NAME_MAX whatever the length of path.name
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write here ({os_reason(exc)})", path) from None
    try:
        os.fchmod(fd, NEW_FILE_MODE)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = _os_error_in(exc) if isinstance(exc, Exception) else None
        if cause is None:
            raise
        kept = "; the previous file is unchanged" if path.exists() else "; nothing was written"
        raise OutputError(f"cannot write ({os_reason(cause)}){kept}", path) from None
    _fsync_folder(path.parent)


def os_reason(exc: OSError) -> str:
    """'No space left on device', 'Read-only file system', ...: the system's words for a failed write."""
    return exc.strerror or str(exc) or type(exc).__name__


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, or what it was raised from: torch.save wraps a failed write in a
    RuntimeError), or None when the failure was not the file system's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse fsync on a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: read once at import (os.umask can only be read by setting it, which is not thread-safe)
_UMASK = _read_umask()
#: the permissions of a file made by :func:`atomic_write` (and other writers that go through a temporary file):
#: those of a file created the usual way, under the process's umask
NEW_FILE_MODE = 0o666 & ~_UMASK


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

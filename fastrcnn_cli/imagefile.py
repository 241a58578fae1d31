"""Reading an image file as a person sees it: upright, in colour, 8 bits per channel (BGR, OpenCV's order).

Decoding is OpenCV's (``cv2.imdecode`` with ``IMREAD_UNCHANGED``, so that bit depth and alpha are seen), with
Pillow for what OpenCV cannot decode; then, per image:

* **orientation**: the EXIF ``Orientation`` tag (JPEG, PNG, TIFF, WebP; read with Pillow) is applied, as photo
  viewers do: a portrait photo from a phone, stored sideways with tag 6, becomes upright. Every box, size and
  drawing of fastrcnn is in the pixels of this upright image;
* **bit depth**: 16-bit samples are scaled to 8 bits (``round(v * 255 / 65535)``); floating-point samples must be
  intensities in [0, 1] (scaled by 255) and 32-bit integer samples must fit in 16 bits; anything else is refused;
* **channels**: grayscale (and 1-bit) becomes three equal channels, the alpha channel of grayscale+alpha and
  RGBA images is dropped (the colours under it are kept), palette and CMYK images are converted to colour by the
  decoder; more than 4 channels are refused;
* **pages**: a multi-page TIFF or an animated GIF gives its first page.

Whatever cannot be read raises :class:`~fastrcnn_cli.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fastrcnn_cli.errors import InputError

ORIENTATION_TAG = 0x0112


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as an upright 8-bit BGR array [H, W, 3] (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a folder, not an image", path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path) from None
    if data.size == 0:
        raise InputError("the file is empty", path)
    image = _decode(data, path)
    if image.ndim < 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("the image has no pixels", path)
    image = _to_bgr8(_to_8_bits(image, path), path)
    return np.ascontiguousarray(apply_orientation(image, exif_orientation(data)))


def _decode(data: np.ndarray, path: Path) -> np.ndarray:
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is not None:
        return image
    return _decode_with_pillow(data, path)


def _decode_with_pillow(data: np.ndarray, path: Path) -> np.ndarray:
    """What OpenCV cannot decode: an array in OpenCV's conventions (BGR or BGRA order, or one channel)."""
    try:
        with Image.open(io.BytesIO(data.tobytes())) as picture:
            picture.seek(0)
            if picture.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "L"):
                return np.asarray(picture)
            rgb = np.asarray(picture.convert("RGBA" if "A" in picture.getbands() else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        why = "corrupt, or a format neither OpenCV nor Pillow can decode"
        raise InputError(f"not a readable image ({why}: {type(exc).__name__})", path) from None
    return rgb[..., [2, 1, 0, 3]] if rgb.shape[-1] == 4 else rgb[..., ::-1]


def _to_8_bits(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype.kind in "iu":
        low, high = int(image.min()), int(image.max())
        if image.dtype != np.uint16 and (low < 0 or high > 65535):
            raise InputError(
                f"{image.dtype} samples from {low} to {high}: only 8- and 16-bit intensities can be shown", path
            )
        wide = image.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise InputError("floating-point samples that are not finite (NaN or infinity)", path)
        lowest, highest = float(image.min()), float(image.max())
        if lowest < 0.0 or highest > 1.0:
            raise InputError(
                f"floating-point samples from {lowest:g} to {highest:g}: intensities in [0, 1] were expected", path
            )
        return np.rint(image.astype(np.float64) * 255.0).astype(np.uint8)
    raise InputError(f"samples of type {image.dtype} cannot be shown as an image", path)


def _to_bgr8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # grayscale + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return image
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise InputError(f"{channels} channels per pixel: only grayscale, colour and colour with alpha are read", path)


def exif_orientation(data: np.ndarray | bytes) -> int:
    """The EXIF Orientation (1..8) of an encoded image, 1 when it has none (or it cannot be read)."""
    try:
        with Image.open(io.BytesIO(data.tobytes() if isinstance(data, np.ndarray) else data)) as picture:
            value = picture.getexif().get(ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError):
        return 1
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """The upright view of pixels stored with EXIF ``orientation`` (1: as stored; 6: stored rotated 90 degrees
    counter-clockwise, shown turned 90 degrees clockwise; ...)."""
    if orientation == 2:  # mirrored left-right
        return image[:, ::-1]
    if orientation == 3:  # upside down
        return image[::-1, ::-1]
    if orientation == 4:  # mirrored top-bottom
        return image[::-1]
    if orientation == 5:  # mirrored along the main diagonal
        return image.swapaxes(0, 1)
    if orientation == 6:  # turn 90 degrees clockwise
        return image.swapaxes(0, 1)[:, ::-1]
    if orientation == 7:  # mirrored along the other diagonal
        return image[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:  # turn 90 degrees counter-clockwise
        return image.swapaxes(0, 1)[::-1]
    return image

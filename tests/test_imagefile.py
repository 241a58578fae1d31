"""Images are read as a person sees them: upright (EXIF orientation), 8-bit BGR, whatever the file's depth,
channels or colour model; what cannot be shown is refused with an InputError naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from fastrcnn_cli.errors import InputError
from fastrcnn_cli.io import read_image
from fastrcnn_cli.shipped import example_path

ORIENTATION = 0x0112


def pattern(height: int = 40, width: int = 64) -> np.ndarray:
    """An RGB picture with no symmetry: every orientation of it is different."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=2).astype(np.uint8)
    rgb[:8, :16] = (255, 0, 0)  # a red block at the top left
    return rgb


def save_with_orientation(picture: Image.Image, path: Path, orientation: int, **kw: object) -> None:
    exif = picture.getexif()
    exif[ORIENTATION] = orientation
    picture.save(path, exif=exif, **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_does(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.png"
    save_with_orientation(Image.fromarray(pattern()), path, orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(read_image(path), upright[..., ::-1])


def test_a_phone_portrait_jpeg_stored_sideways_is_read_upright(tmp_path: Path) -> None:
    upright = pattern(80, 48)  # portrait, as the photographer saw it
    upright[8:, :, 2] = 100  # smooth (JPEG blurs fine texture)
    stored = np.rot90(upright, 1)  # the sensor's landscape pixels: the camera says "turn 90 degrees clockwise"
    path = tmp_path / "portrait.jpg"
    save_with_orientation(Image.fromarray(np.ascontiguousarray(stored)), path, 6, quality=95)
    image = read_image(path)
    assert image.shape == (80, 48, 3)
    assert np.abs(image[..., ::-1].astype(int) - upright).mean() < 4  # JPEG noise only
    assert tuple(int(v) for v in image[2, 2]) == pytest.approx((0, 0, 255), abs=40)  # the red block is at the top left


def test_detection_on_a_sideways_stored_photo_gives_boxes_on_the_upright_image(tmp_path: Path) -> None:
    from fastrcnn_cli.cli import app

    upright = Image.open(example_path("shapes-1.jpg"))
    path = tmp_path / "sideways.jpg"
    save_with_orientation(upright.transpose(Image.Transpose.ROTATE_90), path, 6, quality=95)
    result = CliRunner().invoke(app, ["detect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    image = json.loads(result.stdout)["images"][0]
    assert (image["width"], image["height"]) == upright.size
    expected = json.loads(example_path("expected/shapes-1.json").read_text())["images"][0]["detections"]
    got = image["detections"]
    assert sorted(d["class"] for d in got) == sorted(d["class"] for d in expected)
    for want in expected:
        best = max(_iou(want["box"], d["box"]) for d in got if d["class"] == want["class"])
        assert best > 0.8, (want, got)


def _iou(a: list[float], b: list[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0.0, iw) * max(0.0, ih)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    import cv2

    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    gray, colour = tmp_path / "g16.png", tmp_path / "c16.png"
    Image.fromarray(values).save(gray)
    cv2.imwrite(str(colour), np.dstack([values, values // 2, np.full_like(values, 65535)]))
    assert read_image(gray)[0, :, 0].tolist() == [0, 1, 128, 255]
    image = read_image(colour)
    assert image.dtype == np.uint8 and image[0, :, 0].tolist() == [0, 1, 128, 255]
    assert image[0, :, 2].tolist() == [255] * 4


def test_float32_tiff_in_0_1_is_scaled_and_out_of_range_is_refused(tmp_path: Path) -> None:
    good, bad = tmp_path / "f.tif", tmp_path / "depth.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(good)
    Image.fromarray(np.array([[0.0, 12.5, 900.0]], dtype=np.float32), mode="F").save(bad)
    assert read_image(good)[0, :, 1].tolist() == [0, 128, 255]
    with pytest.raises(InputError, match=r"depth\.tif.*floating-point samples from 0 to 900"):
        read_image(bad)


def test_cmyk_jpeg_is_converted_to_colour(tmp_path: Path) -> None:
    rgb = pattern()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    expected = np.asarray(Image.open(path).convert("RGB"))
    image = read_image(path)
    assert image.shape == rgb.shape
    assert np.abs(image[..., ::-1].astype(int) - expected).mean() < 3


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA", "1", "I;16"])
def test_palette_grayscale_and_alpha_images_become_bgr(tmp_path: Path, mode: str) -> None:
    picture = Image.fromarray(pattern()).convert(mode)
    path = tmp_path / "image.png"
    picture.save(path)
    image = read_image(path)
    assert image.shape == (40, 64, 3) and image.dtype == np.uint8
    if mode in ("P", "RGBA"):
        assert np.abs(image[..., ::-1].astype(int) - np.asarray(picture.convert("RGB"))).max() <= 1
    if mode in ("L", "LA", "1"):
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_multi_page_tiff_gives_its_first_page(tmp_path: Path) -> None:
    first, second = Image.fromarray(pattern()), Image.fromarray(255 - pattern())
    path = tmp_path / "pages.tif"
    first.save(path, save_all=True, append_images=[second])
    assert np.array_equal(read_image(path)[..., ::-1], pattern())


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_unreadable_bytes_are_an_input_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"broken\.png.*not a readable image"):
        read_image(path)


def test_header_sizes_and_reduced_reads_are_of_the_upright_image(tmp_path: Path) -> None:
    """Data set validation (header size) and the proposals' reduced decoding see the same upright image."""
    from fastrcnn_cli.data.validate import _image_size
    from fastrcnn_cli.proposals.selective_search import read_image_for_proposals

    path = tmp_path / "big.jpg"
    save_with_orientation(Image.fromarray(np.ascontiguousarray(np.rot90(pattern(400, 240), 1))), path, 6, quality=90)
    upright = read_image(path)
    assert upright.shape[:2] == (400, 240) and _image_size(path) == (240, 400)
    small, size = read_image_for_proposals(path, 100)  # at least twice 100: a reduced decode
    assert size == (240, 400) and small.shape[0] > small.shape[1]

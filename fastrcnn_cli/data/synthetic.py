"""A deterministic generator of small PASCAL VOC-format data sets: coloured shapes on textured backgrounds.

Every object's box is exact: the shape is rasterised into its own mask and the box is the mask's extent,
so ground truth has no annotation noise. Objects do not overlap (each keeps a margin from the others), so
no object is hidden. Objects whose longer side is under ``difficult_below`` pixels are flagged ``difficult``.
Clutter (lines, arcs, blotches that belong to no class) makes background proposals non-trivial.

The same ``seed`` and settings give byte-identical files. Used by the tests and to train the shipped demo
model (``weights/README.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastrcnn_cli.boxes import to_voc
from fastrcnn_cli.data.voc import CLASSES_FILE
from fastrcnn_cli.io import atomic_write_text, write_image

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
#: fills that tell apart classes of one shape: ``shape-fill`` class names (a plain shape name is ``solid``)
FILLS: tuple[str, ...] = ("solid", "striped", "dotted", "outline")


def class_names(count: int) -> tuple[str, ...]:
    """``count`` distinguishable class names: the five shapes, then ``shape-fill`` pairs (up to 20).

    Five classes are the plain shapes (the demo set); more make a fine-grained, many-class set in which a
    class is a shape and a fill pattern (``circle-striped``, ``star-outline``, ...): a detector must look
    at the inside of an object, not only its outline, to tell them apart.
    """
    if not 1 <= count <= len(SHAPES) * len(FILLS):
        raise ValueError(f"count must be in 1 .. {len(SHAPES) * len(FILLS)}, not {count}")
    if count <= len(SHAPES):
        return SHAPES[:count]
    return tuple(f"{shape}-{fill}" for fill in FILLS for shape in SHAPES)[:count]


@dataclass(frozen=True)
class SyntheticSettings:
    """What to generate. ``splits`` maps split name to image count; ``trainval`` is train + val when both exist."""

    splits: dict[str, int] = field(default_factory=lambda: {"train": 40, "val": 10, "test": 10})
    classes: tuple[str, ...] = SHAPES
    min_size: tuple[int, int] = (320, 240)  #: smallest (width, height)
    max_size: tuple[int, int] = (480, 400)
    objects: tuple[int, int] = (1, 4)  #: objects per image, inclusive range
    object_size: tuple[int, int] = (28, 150)  #: longer side of an object, pixels
    difficult_below: int = 20
    tiny_fraction: float = 0.05  #: share of objects drawn tiny (and so difficult)
    clutter: int = 6  #: clutter strokes per image (maximum)
    image_format: str = ".jpg"
    seed: int = 0


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth multi-scale noise background with a colour gradient and faint stripes."""
    import cv2

    base = rng.uniform(60, 200, size=3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    grad = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    img += grad * rng.uniform(-60, 60, size=3)
    for cells in (4, 12, 40):
        noise = rng.normal(0, 1, size=(cells, max(2, cells * w // h), 3)).astype(np.float32)
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(4, 18)
    if rng.random() < 0.5:
        period = rng.uniform(6, 30)
        theta = rng.uniform(0, math.pi)
        stripes = np.sin((np.cos(theta) * xx + np.sin(theta) * yy) * 2 * math.pi / period)
        img += stripes[..., None] * rng.uniform(3, 12)
    img += rng.normal(0, 4, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """A binary mask (uint8 0/1) of one shape whose longer side is about ``size`` pixels."""
    import cv2

    pad = 2
    canvas = size + 2 * pad
    mask = np.zeros((canvas, canvas), np.uint8)
    c = canvas / 2.0
    r = size / 2.0
    aspect = rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, 2 * math.pi)

    def poly(points: np.ndarray) -> None:
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)

    def rotated(points: np.ndarray) -> np.ndarray:
        cr, sr = math.cos(rot), math.sin(rot)
        x, y = points[:, 0], points[:, 1]
        return np.stack([c + cr * x - sr * y, c + sr * x + cr * y], axis=1)

    if shape == "circle":
        cv2.ellipse(mask, (int(c), int(c)), (int(r), int(r * aspect)), math.degrees(rot), 0, 360, 1, -1, cv2.LINE_8)
    elif shape == "ring":
        thickness = max(2, int(r * rng.uniform(0.25, 0.4)))
        cv2.ellipse(mask, (int(c), int(c)), (int(r), int(r * aspect)), math.degrees(rot), 0, 360, 1, -1, cv2.LINE_8)
        inner = (max(1, int(r) - thickness), max(1, int(r * aspect) - thickness))
        cv2.ellipse(mask, (int(c), int(c)), inner, math.degrees(rot), 0, 360, 0, -1, cv2.LINE_8)
    elif shape == "square":
        pts = np.array([[-r, -r * aspect], [r, -r * aspect], [r, r * aspect], [-r, r * aspect]]) * 0.72
        poly(rotated(pts))
    elif shape == "triangle":
        angles = np.array([-90.0, 30.0, 150.0]) * math.pi / 180
        pts = np.stack([np.cos(angles) * r, np.sin(angles) * r * aspect], axis=1)
        poly(rotated(pts))
    elif shape == "star":
        k = np.arange(10)
        radius = np.where(k % 2 == 0, r, r * rng.uniform(0.38, 0.5))
        angles = k * math.pi / 5 - math.pi / 2
        poly(rotated(np.stack([np.cos(angles) * radius, np.sin(angles) * radius], axis=1)))
    else:  # a regular polygon for any other class name, sides from its name
        sides = 5 + (sum(map(ord, shape)) % 4)
        angles = np.arange(sides) * 2 * math.pi / sides
        poly(rotated(np.stack([np.cos(angles) * r, np.sin(angles) * r * aspect], axis=1)))
    return mask


def _fill_mask(mask: np.ndarray, fill: str) -> np.ndarray:
    """The painted part of a shape's mask for a fill pattern (:data:`FILLS`; anything else is solid)."""
    import cv2

    if fill == "outline":
        size = max(mask.shape)
        kernel = np.ones((2 * max(1, size // 10) + 1,) * 2, np.uint8)
        inner = cv2.erode(mask, kernel)
        return mask & (1 - inner) if inner.any() else mask
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    period = max(4, max(mask.shape) // 6)
    if fill == "striped":
        return mask & (((yy // max(2, period // 2)) % 2) == 0).astype(np.uint8)
    if fill == "dotted":
        cy, cx = (yy % period) - period / 2, (xx % period) - period / 2
        return mask & ((cy * cy + cx * cx) <= (period * 0.3) ** 2).astype(np.uint8)
    return mask


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """Blend a shape with a solid or two-tone fill and shading into ``image`` at (x0, y0)."""
    h, w = mask.shape
    region = image[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    under = region[mask.astype(bool)].mean(axis=0) if mask.any() else np.zeros(3)
    # a colour far enough from what is under it to be visible
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - under).sum() > 150:
            break
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 + 0.25 * ((xx / max(w, 1)) - (yy / max(h, 1))) * rng.uniform(-1, 1)
    fill = colour[None, None, :] * shade[..., None]
    if rng.random() < 0.3:
        fill = fill * (1 + 0.15 * np.sin(xx / rng.uniform(2, 6)))[..., None]
    m = mask.astype(bool)
    region[m] = np.clip(fill[m] + rng.normal(0, 5, size=(int(m.sum()), 3)), 0, 255)
    image[y0 : y0 + h, x0 : x0 + w] = region.astype(np.uint8)


def _clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    import cv2

    h, w = image.shape[:2]
    for _ in range(int(rng.integers(0, count + 1))):
        colour = tuple(int(v) for v in rng.uniform(0, 255, size=3))
        kind = rng.integers(0, 3)
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(image, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            axes = (int(rng.integers(10, 80)), int(rng.integers(10, 80)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(image, p1, axes, 0, start, start + float(rng.uniform(40, 160)), colour, 2, cv2.LINE_AA)
        else:
            blot = np.zeros((h, w), np.uint8)
            cv2.circle(blot, p1, int(rng.integers(8, 40)), 1, -1)
            blur = cv2.GaussianBlur(blot.astype(np.float32), (0, 0), 8)[..., None]
            image[:] = np.clip(image * (1 - 0.35 * blur) + np.array(colour) * 0.35 * blur, 0, 255).astype(np.uint8)


def _annotation_xml(image_id: str, filename: str, width: int, height: int, objects: list[dict]) -> str:
    lines = [
        "<annotation>",
        "\t<folder>JPEGImages</folder>",
        f"\t<filename>{filename}</filename>",
        "\t<source><database>fastrcnn synthetic shapes</database></source>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        xmin, ymin, xmax, ymax = to_voc(obj["box"])
        lines += [
            "\t<object>",
            f"\t\t<name>{obj['name']}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{int(obj['difficult'])}</difficult>",
            f"\t\t<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def generate_image(rng: np.random.Generator, settings: SyntheticSettings) -> tuple[np.ndarray, list[dict]]:
    """One image and its objects (``name``, ``box`` in our convention, ``difficult``)."""
    w = int(rng.integers(settings.min_size[0], settings.max_size[0] + 1))
    h = int(rng.integers(settings.min_size[1], settings.max_size[1] + 1))
    image = _texture(rng, w, h)
    _clutter(rng, image, settings.clutter)
    wanted = int(rng.integers(settings.objects[0], settings.objects[1] + 1))
    placed: list[tuple[int, int, int, int]] = []
    objects: list[dict] = []
    lo, hi = settings.object_size
    hi = min(hi, min(w, h) - 8)
    for _ in range(wanted * 30):
        if len(objects) == wanted:
            break
        name = settings.classes[int(rng.integers(0, len(settings.classes)))]
        if rng.random() < settings.tiny_fraction:
            size = int(rng.integers(10, max(11, settings.difficult_below)))
        else:
            size = int(rng.integers(lo, max(lo + 1, hi)))
        shape, _, fill = name.partition("-")
        mask = _shape_mask(rng, shape, size)
        ys, xs = np.nonzero(mask)
        if xs.size == 0:
            continue
        mh, mw = mask.shape
        if mw >= w or mh >= h:
            continue
        x0 = int(rng.integers(0, w - mw))
        y0 = int(rng.integers(0, h - mh))
        box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max(), y0 + ys.max())
        margin = 6
        if any(
            box[0] - margin <= p[2] and p[0] - margin <= box[2] and box[1] - margin <= p[3] and p[1] - margin <= box[3]
            for p in placed
        ):
            continue
        _paint(rng, image, _fill_mask(mask, fill) if fill else mask, x0, y0)
        placed.append(box)
        longer = max(box[2] - box[0] + 1, box[3] - box[1] + 1)
        objects.append(
            {"name": name, "box": tuple(float(v) for v in box), "difficult": longer < settings.difficult_below}
        )
    return image, objects


def make_synthetic_voc(root: str | Path, settings: SyntheticSettings | None = None) -> Path:
    """Write a VOC-format data set to ``root`` (JPEGImages/, Annotations/, ImageSets/Main/, classes.txt)."""
    settings = settings or SyntheticSettings()
    root = Path(root)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / CLASSES_FILE, "\n".join(settings.classes) + "\n")
    ids_by_split: dict[str, list[str]] = {}
    counter = 0
    for split_index, (split, count) in enumerate(settings.splits.items()):
        rng = np.random.default_rng([settings.seed, split_index])
        ids = []
        for _ in range(count):
            counter += 1
            image_id = f"{counter:06d}"
            image, objects = generate_image(rng, settings)
            filename = f"{image_id}{settings.image_format}"
            write_image(root / "JPEGImages" / filename, image)
            xml = _annotation_xml(image_id, filename, image.shape[1], image.shape[0], objects)
            atomic_write_text(root / "Annotations" / f"{image_id}.xml", xml)
            ids.append(image_id)
        ids_by_split[split] = ids
    if "train" in ids_by_split and "val" in ids_by_split and "trainval" not in ids_by_split:
        ids_by_split["trainval"] = ids_by_split["train"] + ids_by_split["val"]
    for split, ids in ids_by_split.items():
        atomic_write_text(root / "ImageSets" / "Main" / f"{split}.txt", "\n".join(ids) + ("\n" if ids else ""))
    return root

"""COCO's and YOLO's boxes to and from the project's convention, written once.

The project's convention (:mod:`fastrcnn_cli.boxes`): ``(x1, y1, x2, y2)``, 0-based pixel indices, both corners
**inclusive**, so a box is ``x2 - x1 + 1`` pixels wide. PASCAL VOC's 1-based inclusive integers are converted
by :func:`fastrcnn_cli.boxes.from_voc` / :func:`~fastrcnn_cli.boxes.to_voc`.

COCO and YOLO measure boxes in *continuous* image coordinates instead: the image spans ``[0, W] x [0, H]`` and
pixel ``i`` covers ``[i, i + 1)``. A box from ``xa`` to ``xb`` there covers the pixel indices ``xa .. xb - 1``,
so, for both formats,

    x1 = xa,    x2 = xb - 1          (and back: xa = x1,  xb = x2 + 1)

- **COCO** ``bbox = [x, y, w, h]``, float pixels: ``xa = x``, ``xb = x + w``, hence

      (x1, y1, x2, y2) = (x, y, x + w - 1, y + h - 1),     [x, y, w, h] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]

  (the COCO results written by :mod:`fastrcnn_cli.results` use the same ``w = x2 - x1 + 1``). The IoU that
  pycocotools computes on such boxes (no +1) equals the project's +1 IoU on the corners.
- **YOLO** ``cx cy w h``, normalised by the image's width ``W`` and height ``H`` (all in 0..1):
  ``xa = (cx - w / 2) W``, ``xb = (cx + w / 2) W``, hence

      (x1, y1, x2, y2) = ((cx - w/2) W, (cy - h/2) H, (cx + w/2) W - 1, (cy + h/2) H - 1)
      cx = (x1 + x2 + 1) / (2 W),  cy = (y1 + y2 + 1) / (2 H),  w = (x2 - x1 + 1) / W,  h = (y2 - y1 + 1) / H

A VOC box ``xmin .. xmax`` (1-based) is therefore COCO's ``x = xmin - 1, w = xmax - xmin + 1`` and YOLO's
``cx = (xmin + xmax - 1) / 2W``: every VOC box is exact in COCO and survives YOLO's decimals
(:data:`YOLO_DECIMALS`) to the same integers, because :func:`from_yolo` puts an edge that lies within the
rounding of those decimals of a whole pixel boundary onto it (without that, a box read back is off by up to
``0.75e-6 W``, e.g. ``x2 = 98.99994`` for 99).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastrcnn_cli.boxes import PIXEL

Box = tuple[float, float, float, float]

#: decimals of the normalised numbers in the YOLO labels written here (an error of at most 5e-7 of the image
#: side: under 0.01 pixel for images up to 20,000 pixels, so VOC's integer boxes come back exactly)
YOLO_DECIMALS = 6


def from_coco(bbox: Sequence[float]) -> Box:
    """COCO ``[x, y, w, h]`` (float pixels, continuous) to our 0-based inclusive corners."""
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w - PIXEL, y + h - PIXEL)


def to_coco(box: Sequence[float]) -> list[float]:
    """Our corners to COCO ``[x, y, w, h]``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1 + PIXEL, y2 - y1 + PIXEL]


#: how far (a fraction of the image side) a YOLO edge may be from a whole pixel boundary and still be read as on
#: it: the most that ``cx -+ w / 2`` can be off when ``cx`` and ``w`` are rounded to :data:`YOLO_DECIMALS`
#: decimals (half a unit of the last decimal each: 0.5 + 0.25), plus room for float64 arithmetic
YOLO_SNAP = 0.75 * 10.0**-YOLO_DECIMALS + 1e-12


def _snap(edge: float, side: int) -> float:
    """``edge`` (continuous pixels) on the nearest whole pixel boundary when within :data:`YOLO_SNAP` of it."""
    nearest = float(round(edge))
    return nearest if abs(edge - nearest) <= YOLO_SNAP * side else edge


def from_yolo(cx: float, cy: float, w: float, h: float, width: int, height: int) -> Box:
    """YOLO's normalised ``cx cy w h`` in an image of ``width`` x ``height`` pixels to our corners.

    YOLO's text cannot hold whole pixels exactly (``cx = 100 / 650`` is written ``0.153846``), so an edge within
    the rounding of :data:`YOLO_DECIMALS` decimals of a whole pixel boundary (:data:`YOLO_SNAP` of the image
    side: 0.0005 pixel for 650) is read as on it: integer boxes (VOC's, and what labelling tools write as
    whole pixels) come back exactly; an edge farther from a boundary is kept as it is. The move is never more
    than the text's own rounding, so no information is lost: a file written with more decimals is read to
    within the same precision, one with fewer is not snapped at all.
    """
    xa = (cx - w / 2) * width
    ya = (cy - h / 2) * height
    xb, yb = _snap(xa + w * width, width), _snap(ya + h * height, height)
    xa, ya = _snap(xa, width), _snap(ya, height)
    return (xa, ya, xb - PIXEL, yb - PIXEL)


def to_yolo(box: Sequence[float], width: int, height: int) -> Box:
    """Our corners to YOLO's normalised ``(cx, cy, w, h)`` for an image of ``width`` x ``height`` pixels."""
    x, y, w, h = to_coco(box)
    return ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)

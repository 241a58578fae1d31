"""Drawing detections on an image: a box in a colour of its class, and a label (class and score) that stays
readable on any background.

- **Colours.** Class ``k`` gets hue ``k * 0.618...`` (the golden-ratio sequence, so neighbouring classes are far
  apart on the colour wheel, for any number of classes), saturation 0.85, and alternately a bright or a darker
  value; the same class always has the same colour.
- **Labels.** The text ``"<class> <score>"`` sits on a box filled with the class colour, in black or white,
  whichever contrasts more with that colour (WCAG relative luminance), so it reads on any photo. The label goes
  above the box, or inside its top edge when there is no room above, and is kept within the image.
- **Sizes** scale with the image: line width 1 + 0.3 % of the mean side (2 pixels for a 500 x 375 image, 11 for
  4000 x 3000), text scaled to match.
- Lower scores are drawn first, so the most confident detection is on top where boxes overlap.

Boxes are in the project's convention (:mod:`fastrcnn_cli.boxes`): the rectangle covers pixels x1..x2, y1..y2
inclusive (OpenCV's ``rectangle`` with corners (x1, y1) and (x2, y2) draws exactly that outline).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

_GOLDEN = 0.6180339887498949


def class_colour(index: int) -> tuple[int, int, int]:
    """A BGR colour for class ``index`` (0-based), distinct from its neighbours'."""
    hue = (0.02 + index * _GOLDEN) % 1.0
    value = 0.95 if index % 2 == 0 else 0.72
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


def _luminance(bgr: tuple[int, int, int]) -> float:
    def lin(c: float) -> float:
        c = c / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    b, g, r = bgr
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever has the higher contrast ratio against ``background`` (BGR)."""
    lum = _luminance(background)
    contrast_black = (lum + 0.05) / 0.05
    contrast_white = 1.05 / (lum + 0.05)
    return (0, 0, 0) if contrast_black >= contrast_white else (255, 255, 255)


def line_width(width: int, height: int) -> int:
    """Box outline thickness for an image of this size: 1 + 0.3 % of the mean side (rounded)."""
    return max(1, int(round((width + height) / 2 * 0.003)) + 1)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of the BGR ``image`` with each detection drawn. ``boxes`` [N, 4] (our convention), ``scores`` [N],
    ``labels`` [N] 0-based indices into ``classes``."""
    import cv2

    canvas = np.ascontiguousarray(image.copy())
    height, width = canvas.shape[:2]
    lw = thickness or line_width(width, height)
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = max(0.35, lw / 4.0)
    font_thickness = max(1, lw // 2)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    for i in np.argsort(scores, kind="stable"):  # ascending: the best is drawn last, on top
        label = int(labels[i])
        colour = class_colour(label)
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2, width - 1))
        y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2, height - 1))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, lw, lineType=cv2.LINE_AA)

        name = classes[label] if 0 <= label < len(classes) else str(label)
        text = f"{name} {scores[i]:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, font, font_scale, font_thickness)
        pad = max(1, lw // 2 + 1)
        box_w, box_h = tw + 2 * pad, th + baseline + 2 * pad
        lx = min(max(0, x1 - lw // 2), max(0, width - box_w))
        if y1 - lw // 2 - box_h >= 0:  # room above the box
            ly = y1 - lw // 2 - box_h
        else:  # inside, under the top edge
            ly = min(y1 + lw // 2 + 1, max(0, height - box_h))
        cv2.rectangle(canvas, (lx, ly), (lx + box_w - 1, ly + box_h - 1), colour, thickness=-1)
        cv2.putText(
            canvas,
            text,
            (lx + pad, ly + pad + th),
            font,
            font_scale,
            text_colour(colour),
            font_thickness,
            lineType=cv2.LINE_AA,
        )
    return canvas

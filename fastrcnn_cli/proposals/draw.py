"""Drawing proposals on an image, to look at them."""

from __future__ import annotations

import cv2
import numpy as np

#: BGR colours, cycled over the boxes (distinct on most photos)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0), (0, 0, 255), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0),
    (0, 128, 255), (255, 128, 0), (128, 0, 255), (0, 255, 128),
)  # fmt: skip


def draw_proposals(image_bgr: np.ndarray, boxes: np.ndarray, count: int | None = 100) -> np.ndarray:
    """A copy of ``image_bgr`` with the first ``count`` boxes drawn (all when None).

    Boxes are our inclusive corners; ``cv2.rectangle`` draws its two corner pixels inclusively too, so the
    outline lies on the box's outermost pixels.
    """
    canvas = np.ascontiguousarray(image_bgr.copy())
    h, w = canvas.shape[:2]
    thickness = max(1, int(round(max(h, w) / 800)))
    boxes = np.asarray(boxes).reshape(-1, 4)
    if count is not None:
        boxes = boxes[: max(0, count)]
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(np.int64)):
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), PALETTE[i % len(PALETTE)], thickness)
    return canvas

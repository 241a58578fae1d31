"""What usually goes wrong when training on a small data set, found before the first iteration.

``fastrcnn train`` prints these as warnings (they do not stop a run):

- *too few images of a class*: under :data:`FEW_IMAGES` training images contain it;
- *classes with very few boxes*: under :data:`FEW_BOXES`;
- *boxes Selective Search cannot reach*: a class whose recall at IoU 0.5 over its proposals is under
  :data:`LOW_RECALL` (Fast R-CNN only rescores and refines proposals: a box no proposal overlaps is never
  found, whatever the training; small or thin objects are the usual cause);
- *images much larger than the training scale*: the median image is downscaled by more than
  :data:`LARGE_FACTOR` to the training scale (small objects shrink below the stride-16 feature grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fastrcnn_cli.boxes import iou
from fastrcnn_cli.data.voc import ImageRecord

FEW_IMAGES = 10
FEW_BOXES = 15
LOW_RECALL = 0.8
LARGE_FACTOR = 3.0


def per_class_recall(
    records: Sequence[ImageRecord], proposals: Mapping[str, np.ndarray], num_classes: int, threshold: float = 0.5
) -> np.ndarray:
    """The share of each class's non-difficult boxes that some proposal overlaps with IoU >= ``threshold``
    (NaN for a class without boxes)."""
    found = np.zeros(num_classes)
    total = np.zeros(num_classes)
    for r in records:
        keep = ~r.difficult if len(r.difficult) else np.ones(r.num_objects, bool)
        gt, labels = r.boxes[keep], r.labels[keep]
        if not len(gt):
            continue
        props = np.asarray(proposals.get(r.id, np.zeros((0, 4))), np.float32).reshape(-1, 4)
        best = iou(gt.astype(np.float32), props).max(axis=1) if len(props) else np.zeros(len(gt))
        np.add.at(total, labels, 1)
        np.add.at(found, labels, best >= threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return found / total


def training_advice(
    records: Sequence[ImageRecord],
    classes: Sequence[str],
    proposals: Mapping[str, np.ndarray],
    scale: int,
) -> list[str]:
    """Warnings about the training images (empty when nothing looks wrong)."""
    k = len(classes)
    images = np.zeros(k, int)
    boxes = np.zeros(k, int)
    for r in records:
        np.add.at(boxes, r.labels, 1)
        images[np.unique(r.labels)] += 1
    notes = []
    few = [f"{classes[c]} ({images[c]})" for c in range(k) if images[c] < FEW_IMAGES]
    if few:
        notes.append(f"few training images for class(es) {', '.join(few)}: expect a weak, noisy AP for them; "
                     f"{FEW_IMAGES}+ images per class is a bare minimum")
    rare = [f"{classes[c]} ({boxes[c]})" for c in range(k) if boxes[c] < FEW_BOXES and images[c] >= FEW_IMAGES]
    if rare:
        notes.append(f"few boxes for class(es) {', '.join(rare)}")
    recall = per_class_recall(records, proposals, k)
    low = [f"{classes[c]} {recall[c]:.0%}" for c in range(k) if np.isfinite(recall[c]) and recall[c] < LOW_RECALL]
    if low:
        notes.append(f"Selective Search proposals reach few boxes of class(es) {', '.join(low)} (recall at IoU 0.5): "
                     "boxes no proposal overlaps cannot be detected; try --proposal-mode quality or a larger "
                     "--proposal-max-side")
    if records:
        factor = float(np.median([min(r.width, r.height) / scale for r in records]))
        if factor > LARGE_FACTOR:
            notes.append(f"the images are large for the training scale (median shorter side {factor:.1f}x the "
                         f"scale {scale}): small objects may vanish; consider a larger --scale")
    return notes

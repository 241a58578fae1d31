"""The validation images of a training run: never the test split unless the user names it.

Model selection (``best.pt``) and periodic evaluation need images the network does not train on, and
choosing anything by a test split inflates its result. So ``fastrcnn train`` validates on, in order:

1. the split the user names with ``--eval-split`` (a warning if it is called ``test``);
2. the data set's ``val`` split, when it has one;
3. a held-out part of the training split (:func:`hold_out`), when it has none.

Images of the validation split that are also in the training split (``val`` inside ``trainval``) are taken
out of training, so nothing is validated on images it was trained on.

:func:`hold_out` is deterministic and independent of the listing order: images are ranked by a hash of
their id, so the same data set always gives the same held-out part, and adding images to it moves few of
the old ones. It makes sure each class that has enough images is represented (``min_per_class``) without
ever taking more than a third of a class's images away from training.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from fastrcnn_cli.data.voc import ImageRecord

#: share of the training images held out when a data set has no validation split
HOLDOUT_FRACTION = 0.12
#: images per class the held-out part should have (when the class has at least 3x as many)
MIN_PER_CLASS = 3
#: never hold out fewer images than this (when there are at least 4x as many)
MIN_HOLDOUT = 8


def _rank(image_id: str) -> str:
    return hashlib.sha1(image_id.encode("utf-8")).hexdigest()


def hold_out(
    records: Sequence[ImageRecord],
    num_classes: int,
    fraction: float = HOLDOUT_FRACTION,
    min_per_class: int = MIN_PER_CLASS,
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split ``records`` into (train, held out): about ``fraction`` of the images, deterministically.

    First, for each class from the rarest up, images are taken in hash order until the held-out part has
    ``min_per_class`` images with that class (only while the class keeps at least 2/3 of its images for
    training); then images in hash order fill it up to ``fraction`` (at least :data:`MIN_HOLDOUT`).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    ordered = sorted(records, key=lambda r: _rank(r.id))
    target = max(round(fraction * len(ordered)), min(MIN_HOLDOUT, len(ordered) // 4))
    if target == 0:
        return list(records), []
    images_with: list[list[ImageRecord]] = [[] for _ in range(num_classes)]
    for r in ordered:
        for c in {int(label) for label in r.labels}:
            images_with[c].append(r)
    chosen: dict[str, ImageRecord] = {}
    for c in sorted(range(num_classes), key=lambda c: len(images_with[c])):
        allowed = math.floor(len(images_with[c]) / 3)
        wanted = min(min_per_class, allowed)
        have = sum(1 for r in images_with[c] if r.id in chosen)
        for r in images_with[c]:
            if have >= wanted:
                break
            if r.id not in chosen:
                chosen[r.id] = r
                have += 1
    for r in ordered:
        if len(chosen) >= target:
            break
        chosen.setdefault(r.id, r)
    train = [r for r in records if r.id not in chosen]
    held = [r for r in records if r.id in chosen]
    return train, held

"""Which images validate a run (periodic evaluation, ``best.pt``), never the test split unless it is named.

``eval_split`` "auto": the data set's validation split when it has one (``val``; Roboflow's ``valid``, ...:
:func:`fastrcnn_cli.data.formats.validation_split_name`) (its images left out of training if the
training split holds them), else a fixed held-out part of the training split (:mod:`fastrcnn_cli.data.holdout`:
the same images in every run); a split name; or "none".
"""

from __future__ import annotations

from dataclasses import dataclass

from fastrcnn_cli import progress
from fastrcnn_cli.data.holdout import hold_out
from fastrcnn_cli.data.formats import validation_split_name
from fastrcnn_cli.data.voc import ImageRecord, VOCDataset, load_dataset
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.training.settings import EVAL_AUTO, EVAL_NONE, TrainSettings


@dataclass(frozen=True)
class Validation:
    eval_set: VOCDataset | None  #: None: no validation
    train_records: list[ImageRecord]  #: the training split less the validation images
    how: str  #: how the validation set was chosen, in words (``validation.txt``'s first line)


def choose_validation(train: VOCDataset, s: TrainSettings, main: bool = True) -> Validation:
    """The validation set for training on ``train`` with settings ``s`` (``main``: this process reports)."""
    name = s.eval_split
    if name.lower() == EVAL_NONE:
        return Validation(None, list(train.records), "none")
    if name == EVAL_AUTO:
        found = validation_split_name(train.root, train.format, exclude=s.split)
        if found is not None:
            name = found
        else:
            kept, held = hold_out(train.records, len(train.classes), s.holdout)
            if not held:
                if main:
                    progress.warn(f"{len(train.records)} training images are too few to hold any out: no validation")
                return Validation(None, kept, "none")
            how = (f"{len(held)} images held out of {s.split!r} ({s.holdout:.0%}, the same ones in every run); "
                   f"training on the other {len(kept)}")
            if main:
                progress.info(f"validation: {how} (the data set has no validation split: val, valid, validation)")
            return Validation(VOCDataset(train.root, f"{s.split}-holdout", train.classes, held, format=train.format), kept, how)
    elif name.lower() == "test" and main:
        progress.warn("validating on the test split: picking best.pt (and any setting) by test results inflates "
                      "them; leave eval_split unset to validate on 'val' or a held-out part of the training split")
    try:
        eval_set = load_dataset(train.root, name, train.classes, strict=s.strict, warn=main, format=train.format)
    except InputError as exc:
        if "no split named" not in str(exc):
            raise
        if main:
            progress.warn(f"no evaluation: {exc}")
        return Validation(None, list(train.records), "none")
    held_ids = set(eval_set.ids)
    kept = [r for r in train.records if r.id not in held_ids]
    how = f"split {name!r} ({len(eval_set)} images)"
    if len(kept) < len(train.records):
        how += f"; its {len(train.records) - len(kept)} images in {s.split!r} are left out of training"
    if main:
        progress.info(f"validation: {how}")
    return Validation(eval_set, kept, how)

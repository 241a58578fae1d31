"""Training recipes: the solver, schedule, scales and augmentation that ``fastrcnn train`` uses by default.

A recipe fills every training setting the user leaves unset (``None`` in :class:`~fastrcnn_cli.train.TrainSettings`);
a value given on the command line always wins. The recipes' values are written here once; the options' help texts
quote them from here (:func:`recipe_values`). Two recipes:

``paper``
    The original's VGG16 / VOC 2007 procedure, unchanged: SGD lr 0.001, momentum 0.9, weight decay 0.0005,
    40,000 iterations with one x0.1 step after 30,000, no warm-up, no clipping, one scale 600 / 1000, NMS at
    IoU 0.3 at test time. The default for ``vgg16``.

``small-data``
    For fine-tuning the light backbone (``efficientnet-lite0``) on a few hundred images on a CPU; the default
    for it. Fixed from the diagnosis of multi-class training (``docs/training.md``: training losses and
    validation splits, never a test split), then measured on several data sets (README's "Results").
    What differs from the paper, and why:

    - *Every layer learns at lr 0.01, ten times the paper's rate, except the backbone's depthwise
      convolutions, at 1/10 of it* (``backbone_lr_factor`` 1, ``depthwise_lr_factor`` 0.1). At the paper's
      rate the new fc layers learn too slowly for a short schedule. At 10x it EfficientNet's pretrained
      depthwise convolutions (3x3 / 5x5 per-channel filters, fan-in 9 or 25, frozen batch norm after them)
      take steps far larger than their weights, the shared features drift, and multi-class training stalls
      at the "always background" loss (issue 20's diagnosis); the rest of the backbone (pointwise
      convolutions, fan-in 16-1152) adapts better at the full rate to data unlike ImageNet: held at 1/10
      with the depthwise ones, it scored lower on three of the four validation sets measured (mean area AP
      81.0 against 82.2; ``docs/training.md``, 2026-12-08).
    - *Gradient clipping* of the global norm at 10: a few batches with large box-regression or
      misclassification gradients cannot throw the network out of its basin; at a healthy rate it almost
      never triggers (the run's ``metrics.csv`` logs the norm).
    - *Warm-up* over the first 200 iterations, from lr / 10.
    - *A schedule in epochs* scaled to the data set (``epochs`` passes over the training images and their
      mirror images, at least ``min_iterations``), with one x0.1 step at 3/4 of it: a data set of 300
      images gets about 1,500 iterations, 10-20 minutes on a 2-core CPU.
    - *Scale jitter*: the shorter side drawn from 416-544 for each training image, tested at 480 (longer side
      capped at 800), and mild *photometric jitter* (brightness, contrast, saturation): cheap regularisers
      for small data sets. One scale with neither jitter (and the paper's weight decay) did as well on
      average over the four validation sets measured, better on two and worse on two, 5 points worse on the
      one-class set (``docs/training.md``, 2026-12-08): the jitter stays.
    - *NMS at IoU 0.4* at test time, not 0.3: chosen on the validation splits of raccoon, playing_cards and
      bccd with the models trained there (``docs/training.md``); 0.3 suppresses one of two overlapping objects
      of a class too often. The saved model records it, so ``detect`` and ``evaluate`` use it by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

#: one x gamma step of the learning rate at this fraction of the schedule
PAPER_STEP_FRACTION = 30000 / 40000
#: the test scale of a run trained at several scales that span it (the paper's single scale)
MULTI_SCALE_TEST_SCALE = 600


@dataclass(frozen=True)
class Recipe:
    """The values a recipe gives the :class:`~fastrcnn_cli.train.TrainSettings` fields of the same names.

    The schedule is either a fixed number of ``iterations`` or ``epochs`` over the training set (at least
    ``min_iterations``); ``step_fractions`` place the learning-rate steps as fractions of it.
    """

    name: str
    lr: float
    weight_decay: float
    warmup: int  #: linear warm-up iterations
    backbone_lr_factor: float
    depthwise_lr_factor: float  #: the backbone's depthwise convolutions, instead of ``backbone_lr_factor``
    clip_grad_norm: float  #: math.inf: no clipping
    scale: tuple[int, ...]  #: shorter sides of the training images, one drawn per image
    max_size: int
    test_scale: int | None
    test_nms: float  #: the per-class NMS IoU the saved model detects and is evaluated with
    photometric: float  #: strength of the brightness / contrast / saturation jitter (0: none)
    step_fractions: tuple[float, ...]
    iterations: int | None = None
    epochs: float | None = None
    min_iterations: int = 0
    evaluations: int = 4  #: periodic evaluations over the run, when ``eval_every`` is not given

    def schedule(self, entries_per_epoch: int, images_per_iteration: int) -> int:
        """Iterations of the run: fixed, or ``epochs`` epochs of ``entries_per_epoch`` images."""
        if self.iterations is not None:
            return self.iterations
        assert self.epochs is not None
        return max(self.min_iterations, math.ceil(self.epochs * entries_per_epoch / images_per_iteration))

    def overrides(self) -> dict[str, Any]:
        """The recipe's values for the settings fields of the same name."""
        skip = {"name", "step_fractions", "iterations", "epochs", "min_iterations", "evaluations"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def show(self, name: str) -> str | None:
        """The recipe's value of the setting ``name`` in words (None: the recipe leaves it unset)."""
        if name == "iterations":
            if self.iterations is not None:
                return str(self.iterations)
            return f"{self.epochs:g} epochs and at least {self.min_iterations}"
        if name == "lr_step":
            fractions = ", ".join(str(Fraction(f).limit_denominator(100)) for f in self.step_fractions)
            return f"at {fractions} of the run"
        value = getattr(self, name)
        if value is None:
            return None
        if isinstance(value, tuple):
            return str(value[0]) if len(value) == 1 else f"{min(value)}-{max(value)}"
        if isinstance(value, float):
            return "off" if math.isinf(value) else f"{value:g}"
        return str(value)


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        lr=0.001,
        weight_decay=0.0005,
        warmup=0,
        backbone_lr_factor=1.0,
        depthwise_lr_factor=1.0,
        clip_grad_norm=math.inf,
        scale=(600,),
        max_size=1000,
        test_scale=None,
        test_nms=0.3,
        photometric=0.0,
        step_fractions=(PAPER_STEP_FRACTION,),
        iterations=40000,
    ),
    "small-data": Recipe(
        name="small-data",
        lr=0.01,
        weight_decay=0.0001,
        warmup=200,
        backbone_lr_factor=1.0,
        depthwise_lr_factor=0.1,
        clip_grad_norm=10.0,
        scale=(416, 448, 480, 512, 544),
        max_size=800,
        test_scale=480,
        test_nms=0.4,
        photometric=0.2,
        step_fractions=(0.75,),
        epochs=5.0,
        min_iterations=1200,
    ),
}

#: the recipe each backbone gets when ``--recipe`` is not given
DEFAULT_RECIPE: dict[str, str] = {"vgg16": "paper", "efficientnet-lite0": "small-data"}


def recipe_for(name: str | None, backbone: str) -> Recipe:
    """The named recipe, or the backbone's default one."""
    key = name or DEFAULT_RECIPE.get(backbone, "paper")
    if key not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {key!r}")
    return RECIPES[key]


def recipe_values(name: str) -> str:
    """What the recipes give the setting ``name``, for a help text: ``recipe: 0.001 or 0.01``."""
    shown: list[str] = []
    for recipe in RECIPES.values():
        text = recipe.show(name)
        if text is not None and text not in shown:
            shown.append(text)
    return "recipe: " + " or ".join(shown)


"""Watching a training run's health: is it learning the classes, are its head units alive, is it diverging?

The reference level is the *prior loss*: the cross-entropy of a classifier that knows only how often each
class is sampled, ``H = -sum_c p_c log p_c`` over the labels of the mini-batches (with 25 % foreground
spread evenly over K classes, ``H`` = 0.56 + 0.25 ln K: 1.31 for K = 20). A network that has learnt nothing about
the images sits at ``H`` whatever it does; one that learns goes below it within a few hundred iterations.
Multi-class training that stalls there (the classification loss flat near ``H`` while the rate is high)
is what issue 20 diagnosed: too large steps for the pretrained backbone's layers wreck the shared features
and leave the head's ReLU units dead (``fc6_active`` / ``fc7_active``: the share of units that any RoI of a
batch activates), from which a lower rate no longer recovers.

:class:`RunMonitor` reads the rows ``fastrcnn train`` logs and returns a short code for ``metrics.csv`` and a
message naming the likely fix, once per kind of problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

#: a run whose classification loss stays above this share of the prior loss is not learning
NOT_LEARNING_RATIO = 0.9
#: ... for this many consecutive log rows after warm-up and a grace period
NOT_LEARNING_ROWS = 3
GRACE_ITERATIONS = 150
#: fewer head units than this share active on a batch: most of the head is dead
DEAD_UNITS_ACTIVE = 0.5
#: a gradient norm this many times the run's median so far, or a classification loss that climbs back above
#: the prior loss after being well below it: diverging
SPIKE_FACTOR = 50.0

FIXES = (
    "lower the learning rate (--lr, e.g. 10x smaller), keep gradient clipping on (--clip-grad-norm), "
    "train the backbone slower (--backbone-lr-factor 0.1, --depthwise-lr-factor 0.1) or warm up longer (--warmup)"
)


def prior_loss(labels: torch.Tensor, num_classes: int) -> float:
    """The cross-entropy of predicting the label frequencies of ``labels`` (the "knows nothing" level)."""
    if labels.numel() == 0:
        return 0.0
    p = torch.bincount(labels.detach().cpu(), minlength=num_classes).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


@dataclass
class RunMonitor:
    """Feed :meth:`check` every logged row; it answers (code, message) for a new problem, else None."""

    warmup: int
    _stalled_rows: int = 0
    _best_ratio: float = math.inf
    _grad_norms: list[float] = field(default_factory=list)
    _reported: set[str] = field(default_factory=set)

    def check(self, row: dict[str, float]) -> tuple[str, str] | None:
        iteration = int(row["iteration"])
        prior = float(row.get("prior_loss") or 0.0)
        cls = float(row["loss_cls"])
        ratio = cls / prior if prior > 0 else 0.0
        grad = float(row.get("grad_norm") or 0.0)
        past_warmup = iteration > self.warmup
        problem = None
        if past_warmup and self._grad_norms and grad > SPIKE_FACTOR * sorted(self._grad_norms)[len(self._grad_norms) // 2]:
            problem = ("diverging", f"the gradient norm jumped to {grad:.3g} at iteration {iteration}, over "
                       f"{SPIKE_FACTOR:g}x its median so far: the run is diverging. Likely fix: {FIXES}.")
        elif past_warmup and self._best_ratio < 0.7 and ratio > 1.0:
            problem = ("diverging", f"the classification loss climbed back to {cls:.3f} at iteration {iteration}, "
                       f"above the {prior:.3f} of knowing nothing: the run is diverging. Likely fix: {FIXES}.")
        elif min(float(row.get("fc6_active", 1.0)), float(row.get("fc7_active", 1.0))) < DEAD_UNITS_ACTIVE and past_warmup:
            problem = ("dead-units", f"over half of the head's units are dead at iteration {iteration} (fc6 "
                       f"{row.get('fc6_active', 1.0):.0%}, fc7 {row.get('fc7_active', 1.0):.0%} active): the steps "
                       f"are too large for the head. Likely fix: {FIXES}.")
        if iteration >= self.warmup + GRACE_ITERATIONS and ratio >= NOT_LEARNING_RATIO:
            self._stalled_rows += 1
            if problem is None and self._stalled_rows >= NOT_LEARNING_ROWS:
                problem = ("not-learning", f"after {iteration} iterations the classification loss {cls:.3f} is "
                           f"still {ratio:.0%} of the {prior:.3f} a network that knows nothing scores (always "
                           f"answering the class frequencies): the run is not learning the classes. Likely fix: {FIXES}.")
        else:
            self._stalled_rows = 0
        if past_warmup:
            self._best_ratio = min(self._best_ratio, ratio)
        if grad > 0:
            self._grad_norms.append(grad)
        if problem is None or problem[0] in self._reported:
            return None
        self._reported.add(problem[0])
        return problem

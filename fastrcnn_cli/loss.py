"""The multi-task loss (the paper's equation 1)::

    L(p, u, t^u, v) = L_cls(p, u) + lambda * [u >= 1] * L_loc(t^u, v)

``L_cls`` is the softmax cross-entropy over K + 1 classes; ``L_loc`` is the smooth L1 loss summed over the
4 offsets of the true class ``u`` only, for foreground RoIs only (``[u >= 1]``)::

    smooth_L1(x) = 0.5 x^2       if |x| < 1
                   |x| - 0.5     otherwise

Both terms are averaged over all R RoIs of the mini-batch (the box term too, as in the original, so
background RoIs dilute it); lambda = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossTerms:
    total: torch.Tensor
    classification: torch.Tensor
    localisation: torch.Tensor


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    absx = x.abs()
    return torch.where(absx < 1.0, 0.5 * x * x, absx - 0.5)


def fast_rcnn_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    labels: torch.Tensor,
    box_targets: torch.Tensor,
    box_weight: float = 1.0,
) -> LossTerms:
    """``class_logits`` [R, K+1], ``box_deltas`` [R, 4(K+1)], ``labels`` [R] (0 = background),
    ``box_targets`` [R, 4] (normalised offsets to the matched ground truth)."""
    num_rois = max(int(labels.shape[0]), 1)
    cls = F.cross_entropy(class_logits.float(), labels, reduction="sum") / num_rois
    fg = torch.nonzero(labels > 0).flatten()
    if fg.numel():
        deltas = box_deltas.float().view(box_deltas.shape[0], -1, 4)[fg, labels[fg]]
        loc = smooth_l1(deltas - box_targets[fg].float()).sum() / num_rois
    else:
        loc = box_deltas.float().sum() * 0.0
    return LossTerms(total=cls + box_weight * loc, classification=cls, localisation=loc)

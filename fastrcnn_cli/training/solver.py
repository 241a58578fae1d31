"""The solver: SGD with momentum over four parameter groups, the step schedule with its warm-up, gradient norms.

One SGD iteration multiplies the learning rate by ``gamma`` at each of ``lr_step``; during an optional linear
warm-up of ``warmup`` iterations it rises from lr / 10. Biases get twice the rate and no weight decay, as in the
original's Caffe solver (``bias_lr_factor``); the backbone's trained layers get ``backbone_lr_factor`` times
the rate on top.
"""

from __future__ import annotations

import torch

from fastrcnn_cli.model.fast_rcnn import FastRCNN
from fastrcnn_cli.training.settings import TrainSettings


def make_optimizer(model: FastRCNN, s: TrainSettings) -> torch.optim.SGD:
    """SGD with four parameter groups: (backbone, head) x (weights, biases); each group's ``lr_factor`` scales
    the rate :func:`learning_rate` gives."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("backbone."), name.endswith(".bias")), []).append(p)
    param_groups = []
    for (in_backbone, is_bias), params in sorted(groups.items()):
        factor = (s.bias_lr_factor if is_bias else 1.0) * (s.backbone_lr_factor if in_backbone else 1.0)
        param_groups.append(
            {"params": params, "lr_factor": factor, "weight_decay": 0.0 if is_bias else s.weight_decay}
        )
    return torch.optim.SGD(param_groups, lr=s.lr, momentum=s.momentum)


def learning_rate(s: TrainSettings, iteration: int) -> float:
    """The step schedule (and optional linear warm-up) at a 0-based iteration."""
    lr = s.lr * s.gamma ** sum(iteration >= step for step in s.lr_step)
    if s.warmup and iteration < s.warmup:
        alpha = iteration / s.warmup
        lr *= 0.1 * (1 - alpha) + alpha
    return lr


def gradient_norms(model: FastRCNN) -> tuple[float, float]:
    """The L2 norms of the gradient of the backbone's and of the head's trained parameters."""
    backbone, head = [], []
    for name, p in model.named_parameters():
        if p.grad is not None:
            (backbone if name.startswith("backbone.") else head).append(p.grad.detach())

    def norm(grads: list[torch.Tensor]) -> float:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0

    return norm(backbone), norm(head)

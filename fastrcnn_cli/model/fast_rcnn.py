"""The Fast R-CNN network: one convolutional pass over the image, then RoI pooling and two sibling heads.

::

    image --backbone--> feature map (stride 16) --RoI pool 7x7--> fc6 --> fc7 --+--> cls_score  (K + 1)
                                                                               +--> bbox_pred  4 (K + 1)

``forward(images, rois)`` takes a batch of preprocessed images and RoIs ``[R, 5]`` (batch index, then
x1, y1, x2, y2 in the network input's pixels, :mod:`fastrcnn_cli.boxes` convention) and returns class
logits and class-specific box offsets. fc6 and fc7 are plain linear layers, or, after truncated SVD
(:mod:`fastrcnn_cli.svd`), two linear layers each (``S V^T`` without bias, then ``U`` with the bias);
``HeadSpec.ranks`` records which, so a checkpoint rebuilds the right shape.

Input images are scaled so their shorter side is ``scale`` (600) unless the longer side would then exceed
``max_size`` (1000), as in the original (:func:`scale_factor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from fastrcnn_cli.model.backbones import Backbone, BackboneSpec, Preprocessing, build_backbone
from fastrcnn_cli.ops import RoIPool


@dataclass(frozen=True)
class HeadSpec:
    """The fully connected head: ``hidden`` units in fc6 and fc7, RoI pooling to ``roi_size`` squared.

    ``ranks``: truncated-SVD ranks of fc6 and fc7 (None: not compressed).
    """

    hidden: int = 4096
    roi_size: int = 7
    dropout: float = 0.5
    ranks: tuple[int | None, int | None] = (None, None)

    def to_dict(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "roi_size": self.roi_size, "dropout": self.dropout, "ranks": list(self.ranks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        rank6, rank7 = data.get("ranks") or (None, None)
        ranks = (None if rank6 is None else int(rank6), None if rank7 is None else int(rank7))
        return cls(int(data["hidden"]), int(data.get("roi_size", 7)), float(data.get("dropout", 0.0)), ranks)


#: head defaults per backbone: VGG16's fc6/fc7 are 4096 wide (initialised from ImageNet); EfficientNet's are new
DEFAULT_HEADS: dict[str, HeadSpec] = {
    "vgg16": HeadSpec(hidden=4096, dropout=0.5),
    "efficientnet-lite0": HeadSpec(hidden=1024, dropout=0.0),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shape. ``classes`` excludes the background (index 0 of outputs)."""

    backbone: BackboneSpec
    classes: tuple[str, ...]
    head: HeadSpec = field(default_factory=HeadSpec)

    @property
    def num_classes(self) -> int:
        """K + 1: the object classes and the background."""
        return len(self.classes) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone.to_dict(), "classes": list(self.classes), "head": self.head.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return cls(
            backbone=BackboneSpec.from_dict(data["backbone"]),
            classes=tuple(data["classes"]),
            head=HeadSpec.from_dict(data["head"]),
        )


def make_fc(in_features: int, out_features: int, rank: int | None) -> nn.Module:
    """A linear layer, or its truncated-SVD factorisation ``Linear(in, rank, bias=False) -> Linear(rank, out)``."""
    if rank is None:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features))


class FastRCNN(nn.Module):
    def __init__(self, config: ModelConfig, backbone: Backbone) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        head = config.head
        self.roi_pool = RoIPool((head.roi_size, head.roi_size), 1.0 / backbone.stride)
        pooled = backbone.out_channels * head.roi_size * head.roi_size
        self.fc6 = make_fc(pooled, head.hidden, head.ranks[0])
        self.fc7 = make_fc(head.hidden, head.hidden, head.ranks[1])
        self.dropout = nn.Dropout(head.dropout) if head.dropout > 0 else nn.Identity()
        self.cls_score = nn.Linear(head.hidden, config.num_classes)
        self.bbox_pred = nn.Linear(head.hidden, 4 * config.num_classes)
        # the paper's initialisation of the new layers: zero-mean Gaussians, std 0.01 and 0.001
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        #: (fc6, fc7) share of units active on the last training batch (see :func:`_active_fraction`)
        self.head_activity: tuple[float, float] = (1.0, 1.0)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    @property
    def spatial_scale(self) -> float:
        return 1.0 / self.backbone.stride

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The shared convolutional feature map of a batch of images [N, 3, H, W]."""
        return self.backbone(images)

    def pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """RoI max pooling of each RoI [R, 5] (input pixels) out of the feature map: [R, C, roi_size, roi_size]."""
        return self.roi_pool(features, rois)

    def classify(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fc6, fc7 and the sibling heads: class logits [R, K+1] and box offsets [R, 4(K+1)]."""
        x6 = torch.relu(self.fc6(pooled.flatten(1)))
        x7 = torch.relu(self.fc7(self.dropout(x6)))
        if self.training:
            self.head_activity = _active_fraction(x6), _active_fraction(x7)
        x7 = self.dropout(x7)
        return self.cls_score(x7), self.bbox_pred(x7)

    def head(self, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoI pooling and the fully connected head for RoIs [R, 5] on one feature map."""
        return self.classify(self.pool(features, rois))

    def forward(self, images: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(images), rois)


def _active_fraction(activations: torch.Tensor) -> float:
    """The share of units that are positive for at least one RoI of the batch (1 - the share of dead ReLUs).

    A unit that no RoI activates gets no gradient and stays dead: the training monitor watches this.
    """
    with torch.no_grad():
        return float((activations > 0).any(dim=0).float().mean()) if len(activations) else 1.0


def build_model(
    config: ModelConfig,
    *,
    pretrained: bool = True,
    backbone_weights: str | None = None,
    allow_download: bool | None = None,
) -> FastRCNN:
    """A new model; with ``pretrained``, ImageNet weights in the backbone (and in fc6/fc7 for VGG16, as in the paper)."""
    backbone, fc_init = build_backbone(
        config.backbone, pretrained=pretrained, weights_path=backbone_weights, allow_download=allow_download
    )
    model = FastRCNN(config, backbone)
    fc6, fc7 = model.fc6, model.fc7  # nn.Linear unless compressed (then no ImageNet fc6/fc7 fits)
    if (fc_init is not None and isinstance(fc6, nn.Linear) and isinstance(fc7, nn.Linear)
            and fc6.weight.shape == fc_init["fc6.weight"].shape):
        with torch.no_grad():
            fc6.weight.copy_(fc_init["fc6.weight"])
            fc6.bias.copy_(fc_init["fc6.bias"])
            fc7.weight.copy_(fc_init["fc7.weight"])
            fc7.bias.copy_(fc_init["fc7.bias"])
    return model


# --- image scaling ----------------------------------------------------------------------------------------------


def scale_factor(height: int, width: int, scale: int, max_size: int) -> float:
    """The resize factor that makes the shorter side ``scale``, unless the longer side would exceed ``max_size``."""
    factor = scale / min(height, width)
    if round(factor * max(height, width)) > max_size:
        factor = max_size / max(height, width)
    return float(factor)


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-9:
        return image
    h, w = image.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def prepare_image(model: FastRCNN, image: np.ndarray, scale: int, max_size: int) -> tuple[torch.Tensor, float]:
    """A BGR uint8 image -> the network input [3, H', W'] at the test scale, and the factor applied."""
    factor = scale_factor(image.shape[0], image.shape[1], scale, max_size)
    return model.preprocessing.image_to_tensor(resize_image(image, factor)), factor


#: On CUDA the network input is padded to a multiple of this many pixels: cuDNN plans its convolutions per input
#: shape (over a second for EfficientNet's depthwise layers), so every new padded size costs a slow first pass.
#: With scale jitter and photos of many sizes, a multiple of 32 still left 130 batch shapes in a 1,200-iteration
#: raccoon run (61 of them first seen after iteration 200) and training on an H200 ran at about 1 image/s;
#: 128 leaves 16, all met early, for about 18 % more pixels (``docs/measurements.md``). Padding adds zeros (the
#: mean) at the bottom and right only, so boxes and the spatial scale are unchanged. The CPU plans nothing per
#: shape and is not padded.
CUDA_SIZE_MULTIPLE = 128


def size_multiple(device: torch.device | str) -> int:
    """The multiple :func:`batch_images` pads to on ``device``: :data:`CUDA_SIZE_MULTIPLE` on CUDA, else 1."""
    return CUDA_SIZE_MULTIPLE if torch.device(device).type == "cuda" else 1


def batch_images(images: Sequence[torch.Tensor], multiple: int = 1) -> torch.Tensor:
    """Stack [3, H, W] tensors into [N, 3, Hmax, Wmax], zero-padded at the bottom and right (zero = the mean),
    with Hmax and Wmax rounded up to a multiple of ``multiple``."""
    h = max(int(im.shape[1]) for im in images)
    w = max(int(im.shape[2]) for im in images)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    batch = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch

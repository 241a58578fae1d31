"""How a uint8 BGR image (as OpenCV reads it) becomes a backbone's input: :class:`Preprocessing`.

Stored in checkpoints with the backbone, so a model is always fed the way its weights were trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastrcnn_cli.errors import CheckpointError


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 BGR image (as OpenCV reads it) becomes the network input: ``(pixel - mean) / std``.

    ``mean`` and ``std`` are in 0..255 units and in ``channel_order``.
    """

    channel_order: str  #: "RGB" or "BGR"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 values, one per channel")
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive, not {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        return {"channel_order": self.channel_order, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        try:
            return cls(str(data["channel_order"]), tuple(data["mean"]), tuple(data["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed preprocessing entry {dict(data)!r}: {exc}") from exc

    def image_to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """A uint8 BGR image [H, W, 3] -> the normalised float32 network input [3, H, W]."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image of shape [H, W, 3], got {tuple(image.shape)}")
        if self.channel_order == "RGB":
            image = image[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a float tensor [..., 3, H, W] already in ``channel_order`` with 0..255 values."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std

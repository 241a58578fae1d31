"""Choosing the device: ``--device auto|cpu|cuda|cuda:N`` (or ``FASTRCNN_DEVICE``); auto picks CUDA when present."""

from __future__ import annotations

import os

import torch

from fastrcnn_cli import progress
from fastrcnn_cli.errors import DeviceError

DEVICE_ENV = "FASTRCNN_DEVICE"


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def resolve_device(name: str | None = None) -> torch.device:
    """The torch device for a user's choice; a clear error listing what exists when it is not available."""
    name = (name or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; available here: {', '.join(available_devices())}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but no CUDA GPU is available here; available: cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} does not exist; available here: {', '.join(available_devices())}")
        return device
    raise DeviceError(f"device type {device.type!r} is not supported; available here: {', '.join(available_devices())}")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast type for mixed precision on ``device``: ``bfloat16`` where the GPU has it (compute
    capability 8.0 and later), else ``float16`` with a warning (the trainer then scales the loss)."""
    if name == "float16":
        return torch.float16
    if name != "bfloat16":
        raise ValueError(f"amp_dtype must be bfloat16 or float16, not {name!r}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        progress.warn(f"{describe_device(device)} has no bfloat16: mixed precision uses float16 with loss scaling")
        return torch.float16
    return torch.bfloat16

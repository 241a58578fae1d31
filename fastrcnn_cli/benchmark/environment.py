"""Where the timings were taken: device, library versions, threads, date (every benchmark reports it)."""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cv2
import torch
import torchvision

from fastrcnn_cli import __version__


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class Environment:
    """The machine and software of a benchmark run."""

    device: str
    device_name: str
    cpu: str
    cpu_count: int | None
    torch_threads: int
    torch_interop_threads: int
    opencv_threads: int
    torch: str
    torchvision: str
    cuda: str | None
    cudnn: int | None
    opencv: str
    python: str
    platform: str
    fastrcnn: str
    date: str  #: ISO 8601, local time with its offset

    @classmethod
    def collect(cls, device: torch.device | str) -> Environment:
        """The environment now, for timings on ``device``."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        return cls(
            device=str(device),
            device_name=torch.cuda.get_device_name(device) if cuda else cpu_name(),
            cpu=cpu_name(),
            cpu_count=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
            torch_interop_threads=torch.get_num_interop_threads(),
            opencv_threads=cv2.getNumThreads(),
            torch=torch.__version__,
            torchvision=torchvision.__version__,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if cuda else None,
            opencv=cv2.__version__,
            python=platform.python_version(),
            platform=platform.platform(terse=True),
            fastrcnn=__version__,
            date=datetime.now().astimezone().isoformat(timespec="seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

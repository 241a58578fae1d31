"""What ``fastrcnn --version`` reports, read from package metadata without importing torch (2 s and 650 MB).

torch's CUDA version comes from its ``torch/version.py`` read as text, and whether a GPU is there from the NVIDIA
driver's ``/proc`` entries (and ``CUDA_VISIBLE_DEVICES``), so the answer costs milliseconds. The device line says
what ``--device auto`` picks: CUDA when torch is a CUDA build and an NVIDIA GPU is visible.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

from fastrcnn_cli import __version__

PACKAGES = ("torch", "torchvision", "opencv-contrib-python-headless", "opencv-contrib-python", "numpy")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_cuda_version() -> str | None:
    """torch's ``torch.version.cuda`` (None for a CPU-only build), read from its file without importing torch."""
    try:
        file = metadata.distribution("torch").locate_file("torch/version.py")
        text = Path(str(file)).read_text()
    except (metadata.PackageNotFoundError, OSError):
        return None
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def visible_nvidia_gpus() -> int:
    """How many NVIDIA GPUs the driver lists and CUDA_VISIBLE_DEVICES lets through (0 without a driver)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        count = sum(1 for _ in gpus.iterdir())
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return count
    ids = [v for v in visible.split(",") if v.strip()]
    usable = []
    for v in ids:
        if v.strip().lstrip("-").isdigit() and int(v) < 0:
            break  # CUDA stops at the first invalid index
        usable.append(v)
    return min(count, len(usable))


def version_text() -> str:
    torch_version = package_version("torch") or "not installed"
    cuda = torch_cuda_version()
    gpus = visible_nvidia_gpus()
    build = f"CUDA {cuda} build" if cuda else "CPU-only build"
    opencv = next((v for v in map(package_version, PACKAGES[2:4]) if v), None)
    device = os.environ.get("FASTRCNN_DEVICE", "auto").strip().lower() or "auto"
    if device == "auto":
        if cuda and gpus:
            device = f"cuda ({gpus} NVIDIA GPU{'s' if gpus != 1 else ''} visible)"
        else:
            why = "no NVIDIA GPU visible" if cuda else "torch has no CUDA"
            device = f"cpu ({os.cpu_count()} cores; {why})"
    else:
        device += " (from FASTRCNN_DEVICE)"
    return (
        f"fastrcnn {__version__}\n"
        f"python {platform.python_version()}, torch {torch_version} ({build}), "
        f"torchvision {package_version('torchvision') or 'not installed'}, opencv {opencv or 'not installed'}\n"
        f"device: {device}"
    )

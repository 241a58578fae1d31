"""Packaging beyond what pyproject.toml can say (all metadata lives there).

1. The repository keeps the shipped model and the example images in the top-level folders ``weights/`` and
   ``examples/``; here they become the packages ``fastrcnn_cli.weights`` and ``fastrcnn_cli.examples``, so wheels,
   sdists and editable installs carry them and :mod:`fastrcnn_cli.shipped` finds them with importlib.resources.
2. ``FASTRCNN_BUILD_OPS=1 pip install --no-build-isolation .`` also compiles the RoI pooling operator ahead of time
   (with torch.utils.cpp_extension's BuildExtension) into the wheel; without it the operator is compiled on first
   use, once per machine, into the per-user cache (see fastrcnn_cli/ops/_extension.py).
"""

from __future__ import annotations

import os

from setuptools import find_packages, setup

RESOURCE_PACKAGES = {"fastrcnn_cli.weights": "weights", "fastrcnn_cli.examples": "examples"}


def _ahead_of_time_extension() -> dict:
    if os.environ.get("FASTRCNN_BUILD_OPS", "").strip().lower() not in ("1", "yes", "true", "on"):
        return {}
    # needs the torch the package will run with: pip install --no-build-isolation
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fastrcnn_cli.ops import _sources

    return _sources.setup_extension_kwargs()


setup(
    packages=find_packages(include=["fastrcnn_cli", "fastrcnn_cli.*"]) + list(RESOURCE_PACKAGES),
    package_dir=RESOURCE_PACKAGES,
    package_data={
        "fastrcnn_cli": ["ops/csrc/*.cpp", "ops/csrc/*.cu", "ops/csrc/*.h"],
        "fastrcnn_cli.weights": ["*.pt", "README.md"],
        "fastrcnn_cli.examples": ["*.jpg", "*.png", "*.xml", "expected/*"],
    },
    **_ahead_of_time_extension(),
)

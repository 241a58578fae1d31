"""Packaging beyond what pyproject.toml can say (all metadata lives there).

The repository keeps the shipped model and the example images in the top-level folders ``weights/`` and
``examples/``; here they become the packages ``fastrcnn_cli.weights`` and ``fastrcnn_cli.examples``, so wheels,
sdists and editable installs all carry them and :mod:`fastrcnn_cli.shipped` finds them with importlib.resources.
The native operators are not compiled here: they compile once per machine on first use, or with
``fastrcnn build-ops`` (see fastrcnn_cli/ops/_extension.py).
"""

from __future__ import annotations

from setuptools import find_packages, setup

RESOURCE_PACKAGES = {"fastrcnn_cli.weights": "weights", "fastrcnn_cli.examples": "examples"}

setup(
    packages=find_packages(include=["fastrcnn_cli", "fastrcnn_cli.*"]) + list(RESOURCE_PACKAGES),
    package_dir=RESOURCE_PACKAGES,
    package_data={
        "fastrcnn_cli": ["ops/csrc/*.cpp", "ops/csrc/*.cu", "ops/csrc/*.h", "ops/csrc/*.cuh", "ops/csrc/*.hpp"],
        "fastrcnn_cli.weights": ["*.pt", "README.md"],
        "fastrcnn_cli.examples": ["*.jpg", "*.png", "*.xml", "expected/*"],
    },
)

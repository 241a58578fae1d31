"""Shared fixtures: small synthetic data sets made by the tests, and ../shared when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastrcnn_cli.data.synthetic import SyntheticSettings, make_synthetic_voc

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test cleanly when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VOC-format data set of shapes (train 12, val 4, test 4, trainval 16). Do not modify it."""
    root = tmp_path_factory.mktemp("synthetic") / "shapes"
    make_synthetic_voc(root, SyntheticSettings(splits={"train": 12, "val": 4, "test": 4}, seed=123))
    return root


@pytest.fixture
def raccoon() -> Path:
    return shared_path("datasets", "raccoon")

"""The native Selective Search (``--proposer native``) against OpenCV's, side by side, and its determinism."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")

from fastrcnn_cli.errors import BuildError, InputError, SettingsError  # noqa: E402
from fastrcnn_cli.proposals import native  # noqa: E402
from fastrcnn_cli.proposals.selective_search import (  # noqa: E402
    ProposalSettings,
    opencv_single_config_rects,
    selective_search,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _extension() -> None:
    try:
        native._op()
    except BuildError as exc:  # pragma: no cover - no compiler here
        pytest.skip(f"the C++ extension cannot be built: {exc}")


def synthetic_image(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """Random filled rectangles and ellipses of random colours on a smooth background, with pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 255 / width), (yy * 255 / height), np.full_like(xx, 128.0)], axis=2)
    for _ in range(6):
        colour = rng.integers(0, 256, 3).tolist()
        x1, y1 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x2, y2 = x1 + int(rng.integers(10, width // 2)), y1 + int(rng.integers(10, height // 2))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, -1)
        else:
            box = (((x1 + x2) / 2, (y1 + y2) / 2), (float(x2 - x1), float(y2 - y1)), float(rng.integers(0, 180)))
            cv2.ellipse(image, box, colour, -1)
    image = image + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def as_set(rects: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in r) for r in rects}


# ---------------------------------------------------------------------------------------------------------
# side by side with OpenCV


@pytest.mark.parametrize("space", ["hsv", "lab", "gray", "rgi"])
def test_graph_segmentation_matches_opencv(space: str) -> None:
    image = native.colour_space(synthetic_image(1), space)
    for k in (150, 450):
        ours = native.graph_segmentation(image, k)
        segmentation = cv2.ximgproc.segmentation.createGraphSegmentation(native.SIGMA, float(k), native.MIN_REGION)
        theirs = segmentation.processImage(image)
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "space,k,strategy", [("hsv", 150, 0), ("lab", 300, 1), ("hue", 150, 2), ("rgi", 450, 3), ("gray", 150, 0)]
)
def test_single_configuration_gives_opencvs_boxes(seed: int, space: str, k: int, strategy: int) -> None:
    image = native.colour_space(synthetic_image(seed), space)
    theirs = opencv_single_config_rects(image, k, strategy, native.MIN_REGION)
    ours = native.search_spaces([image], (k,), (strategy,))
    assert len(ours) == len(as_set(ours))  # no duplicates
    assert as_set(ours) == as_set(theirs)


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_whole_modes_give_opencvs_box_set(mode: str) -> None:
    from fastrcnn_cli.proposals.selective_search import _opencv_rects

    bgr = synthetic_image(4, 64, 80)
    assert as_set(native.native_rects(bgr, mode)) == as_set(_opencv_rects(bgr, mode))


# ---------------------------------------------------------------------------------------------------------
# determinism


def test_same_boxes_and_order_with_one_and_two_threads() -> None:
    bgr = synthetic_image(5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.native_rects(bgr, "quality")
        torch.set_num_threads(2)
        two = native.native_rects(bgr, "quality")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)


def test_same_boxes_and_order_after_other_images() -> None:
    a, b = synthetic_image(6), synthetic_image(7)
    first = native.native_rects(a, "fast")
    native.native_rects(b, "fast")
    native.native_rects(b, "quality")
    np.testing.assert_array_equal(native.native_rects(a, "fast"), first)


def test_same_boxes_and_order_in_another_process(tmp_path: Path) -> None:
    bgr = synthetic_image(8)
    np.save(tmp_path / "image.npy", bgr)
    code = (
        "import sys, numpy as np; from fastrcnn_cli.proposals import native;"
        f"r = native.native_rects(np.load({str(tmp_path / 'image.npy')!r}), 'fast');"
        f"np.save({str(tmp_path / 'rects.npy')!r}, r)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=600)
    np.testing.assert_array_equal(np.load(tmp_path / "rects.npy"), native.native_rects(bgr, "fast"))


def test_ranking_depends_on_the_seed_only() -> None:
    bgr = synthetic_image(9)
    assert not np.array_equal(native.native_rects(bgr, "fast", seed=1), native.native_rects(bgr, "fast", seed=2))
    assert as_set(native.native_rects(bgr, "fast", seed=1)) == as_set(native.native_rects(bgr, "fast", seed=2))


# ---------------------------------------------------------------------------------------------------------
# through ProposalSettings, and bad inputs as with OpenCV


def test_proposer_is_recorded_only_when_not_the_default() -> None:
    assert "proposer" not in ProposalSettings().to_dict()  # caches made before the option keep matching
    settings = ProposalSettings(proposer="native")
    assert settings.to_dict()["proposer"] == "native"
    assert ProposalSettings.from_dict(settings.to_dict()) == settings
    assert "native" in settings.describe()
    with pytest.raises(SettingsError, match="proposer: unknown proposer") as info:
        ProposalSettings(proposer="matlab")
    assert info.value.problems[0][0] == "proposer"  # the field, for the command line to name its flag
    with pytest.raises(InputError, match="unknown proposer"):  # a file's recorded settings: the file is at fault
        ProposalSettings.from_dict({"proposer": "matlab"})


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((1, 40, 3), 200, np.uint8),
        synthetic_image(10)[:, :, 0],  # grayscale [H, W]
        np.dstack([synthetic_image(11), np.full((96, 128), 255, np.uint8)]),  # BGRA
        np.zeros((2400, 1800, 3), np.uint8),  # large: searched at max_side
    ],
    ids=["1x1", "one-row", "gray", "rgba", "large"],
)
def test_bad_inputs_behave_as_with_opencv(image: np.ndarray) -> None:
    ours = selective_search(image, ProposalSettings(proposer="native"))
    theirs = selective_search(image, ProposalSettings())
    assert ours.dtype == theirs.dtype == np.float32
    assert as_set(ours) == as_set(theirs)


def test_a_missing_extension_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastrcnn_cli.ops import _extension

    def broken(with_cuda: bool | None = None) -> None:
        raise BuildError("no C++ compiler found")

    monkeypatch.setattr(_extension, "load_extension", broken)
    with pytest.raises(BuildError, match="proposer 'native'.*no C\\+\\+ compiler"):
        selective_search(synthetic_image(12), dataclasses.replace(ProposalSettings(), proposer="native"))


def test_propose_a_data_set_with_the_native_proposer_records_it(synthetic_voc: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from fastrcnn_cli.cli import app

    def propose(proposer: str, folder: str):  # noqa: ANN202
        args = ["propose", str(synthetic_voc), "--split", "test", "--max-side", "64", "--workers", "2",
                "--proposer", proposer, "--cache", str(tmp_path / folder), "--recall", "--json"]
        return CliRunner().invoke(app, args)

    ours, theirs = propose("native", "native"), propose("opencv", "opencv")
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.output + theirs.output
    meta = json.loads((tmp_path / "native" / "proposals.json").read_text())
    assert meta["settings"]["proposer"] == "native"
    assert "proposer" not in json.loads((tmp_path / "opencv" / "proposals.json").read_text())["settings"]
    a, b = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert a["computed"] == b["computed"] == 4
    assert a["recall"] == b["recall"]  # the same box sets (the synthetic images give OpenCV's exactly)
    reuse = propose("opencv", "native")  # a cache made by the other proposer is refused
    assert reuse.exit_code != 0

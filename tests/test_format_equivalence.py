"""A data set and its COCO and YOLO copies (``fastrcnn convert``) are one data set: the same records, and, trained
with the same seed and settings, the same losses, weights and AP (issue 17's check on ../shared raccoon)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.data.box_formats import YOLO_DECIMALS, YOLO_SNAP, from_yolo, to_yolo
from fastrcnn_cli.data.formats import available_splits, load_dataset
from fastrcnn_cli.data.records import Dataset
from fastrcnn_cli.proposal_settings import ProposalSettings
from fastrcnn_cli.proposals.cache import default_cache_dir

runner = CliRunner()
COPIES = ("coco", "yolo")


def convert(source: Path, out: Path, to: str) -> Path:
    result = runner.invoke(app, ["convert", str(source), str(out), "--to", to, "--images", "symlink"])
    assert result.exit_code == 0, result.output
    return out


def assert_same_records(original: Dataset, copy: Dataset, *, difficult: bool = True) -> None:
    """The same images in the same order, with exactly the same boxes, labels, difficult flags and sizes."""
    assert copy.classes == original.classes
    assert copy.ids == original.ids
    for a, b in zip(original.records, copy.records):
        assert (b.width, b.height) == (a.width, a.height), a.id
        assert b.boxes.dtype == a.boxes.dtype == np.float32
        assert np.array_equal(b.boxes, a.boxes), (a.id, a.boxes, b.boxes)
        assert np.array_equal(b.labels, a.labels), a.id
        if difficult:
            assert np.array_equal(b.difficult, a.difficult), a.id
        else:  # YOLO has no difficult flag: those boxes become ordinary ones
            assert not b.difficult.any()


def test_yolo_text_gives_whole_pixel_boxes_back_exactly() -> None:
    rng = np.random.default_rng(0)
    fmt = f"{{:.{YOLO_DECIMALS}f}}"
    for width, height in ((1, 1), (60, 40), (650, 433), (4032, 3024), (20_000, 15_000)):
        x = np.sort(rng.integers(0, width, (500, 2)), axis=1)
        y = np.sort(rng.integers(0, height, (500, 2)), axis=1)
        for box in np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).astype(np.float32):
            text = [fmt.format(v) for v in to_yolo(box, width, height)]
            back = np.float32(from_yolo(*(float(t) for t in text), width, height))
            assert np.array_equal(back, box), (width, height, box, text, back)
    # an edge that is not on a pixel boundary stays where the text puts it (within the text's rounding)
    box = (5.2, 5.0, 5.4, 30.0)
    back = from_yolo(*(float(fmt.format(v)) for v in to_yolo(box, 60, 40)), 60, 40)
    assert abs(back[0] - 5.2) <= YOLO_SNAP * 60 and back[0] != 5.0 and back[1:] == (5.0, back[2], 30.0)


def test_coco_and_yolo_copies_load_to_the_same_records(synthetic_voc: Path, tmp_path: Path) -> None:
    splits = available_splits(synthetic_voc)
    assert {"train", "val", "test", "trainval"} <= set(splits)
    for to in COPIES:
        copy = convert(synthetic_voc, tmp_path / to, to)
        for split in splits:
            original = load_dataset(synthetic_voc, split, warn=False)
            assert_same_records(original, load_dataset(copy, split, warn=False), difficult=to != "yolo")


# ---------------------------------------------------------------------------------------------------------
# the raccoon data set (../shared)


@pytest.mark.slow
def test_raccoon_copies_load_to_the_same_records(raccoon: Path, tmp_path: Path) -> None:
    for to in COPIES:
        copy = convert(raccoon, tmp_path / to, to)
        for split in ("train", "val", "trainval", "test"):
            original = load_dataset(raccoon, split, warn=False)
            assert not original.records[0].difficult.any() or to != "yolo"  # raccoon marks no box difficult
            assert_same_records(original, load_dataset(copy, split, warn=False))


#: one short run per copy: the same seed, settings and proposals (the VOC original's cache: the ids and image
#: sizes are the same, and a cache is only keyed by them)
TRAIN = ("--backbone", "efficientnet-lite0", "--iterations", "30", "--eval-every", "0", "--workers", "0",
         "--seed", "0", "--log-every", "1", "--threads", "2", "--device", "cpu")
LOSSES = ("iteration", "epoch", "loss", "loss_cls", "loss_loc", "lr", "fg_fraction", "grad_norm", "map_area",
          "map_voc07")


def _fastrcnn(*args: object) -> dict:
    result = subprocess.run([sys.executable, "-m", "fastrcnn_cli", *map(str, args), "--json"],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_raccoon_copies_train_and_evaluate_to_the_same_ap(raccoon: Path, tmp_path: Path) -> None:
    import torch

    cache = default_cache_dir(raccoon, ProposalSettings())
    if len(list((cache / "boxes").glob("*.npz"))) < 200:
        pytest.skip(f"the raccoon proposal cache {cache} is not complete (fastrcnn propose {raccoon} "
                    "--split trainval,test makes it)")
    folders = {"voc": raccoon, **{to: convert(raccoon, tmp_path / to, to) for to in COPIES}}
    runs, tests = {}, {}
    for name, folder in folders.items():
        summary = _fastrcnn("train", folder, *TRAIN, "--proposal-cache", cache, "--runs-dir", tmp_path / "runs",
                            "--name", name)
        runs[name] = summary
        tests[name] = _fastrcnn("evaluate", folder, "--split", "test", "--weights", summary["last"], "--metric",
                                "area", "--proposal-cache", cache, "--workers", "1", "--threads", "2",
                                "--device", "cpu", "--out", tmp_path / "eval" / name)
    rows = {}
    for name, summary in runs.items():
        with open(Path(summary["run_dir"]) / "metrics.csv", newline="") as f:
            rows[name] = [{k: r[k] for k in LOSSES} for r in csv.DictReader(f)]
    weights = {name: torch.load(summary["last"], map_location="cpu", weights_only=False)["state_dict"]
               for name, summary in runs.items()}
    report = {name: (runs[name]["best_map"], tests[name]["map"], rows[name][-1]["loss"]) for name in folders}
    print("\nformat: (validation mAP, test mAP, last loss)", report)
    for name in COPIES:
        assert rows[name] == rows["voc"], name  # every logged loss, learning rate and gradient norm
        assert runs[name]["best_map"] == runs["voc"]["best_map"], name
        assert tests[name]["map"] == tests["voc"]["map"], name
        assert weights[name].keys() == weights["voc"].keys()
        assert all(torch.equal(weights[name][k], weights["voc"][k]) for k in weights["voc"]), name

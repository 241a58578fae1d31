"""stderr in a pipe or a log file: tables are not cut, lines are not wrapped, progress shows as plain lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastrcnn_cli import console

LONG = {
    "circle": "circle_with_a_really_long_descriptive_class_name_from_a_real_taxonomy",
    "square": "square_with_an_even_longer_descriptive_class_name_from_the_same_taxonomy",
    "triangle": "triangle_positively_identified_by_the_annotation_team_in_the_second_round",
    "star": "star", "ring": "ring",
}


def long_named_copy(source: Path, root: Path) -> Path:
    """The synthetic data set with long class names (annotations and classes.txt rewritten)."""
    import shutil

    shutil.copytree(source, root)
    for xml in (root / "Annotations").glob("*.xml"):
        text = xml.read_text()
        for short, long in LONG.items():
            text = text.replace(f"<name>{short}</name>", f"<name>{long}</name>")
        xml.write_text(text)
    classes = (root / "classes.txt").read_text().split()
    (root / "classes.txt").write_text("\n".join(LONG[c] for c in classes) + "\n")
    return root


def test_evaluate_with_stderr_in_a_file_keeps_whole_class_names_and_paths(synthetic_voc: Path, tmp_path: Path) -> None:
    from fastrcnn_cli.data.voc import load_dataset
    from fastrcnn_cli.detections import Detections, save_detections

    data = long_named_copy(synthetic_voc, tmp_path / "a_data_set_folder_with_a_rather_long_name_too" / "VOC")
    ds = load_dataset(data, "test", warn=False)
    dets = [Detections(r.id, r.boxes, np.ones(len(r.boxes)), r.labels) for r in ds.records]
    save_detections(tmp_path / "d.npz", dets, ds.classes)
    out = tmp_path / "an_output_folder_whose_path_is_long_enough_to_be_wrapped_at_eighty_columns"
    log = tmp_path / "log.txt"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "fastrcnn_cli", "evaluate", str(data), "--split", "test",
             "--detections", str(tmp_path / "d.npz"), "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=600,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    for name in ds.classes:
        assert any(name in line for line in lines), f"{name} cut or wrapped in:\n{text}"
    assert "…" not in text and "..." not in text.replace(str(out), "")
    assert any(str(out) in line for line in lines), "the output path is broken over lines"


def test_a_table_to_a_non_terminal_is_wide(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.table import Table

    table = Table("class", "AP", "recall")
    for name in LONG.values():
        table.add_row(name * 2, "91.0", "0.95")
    console.err.print(table)
    text = capsys.readouterr().err
    assert all(name * 2 in text for name in LONG.values()) and "…" not in text


def test_progress_on_a_non_terminal_is_occasional_plain_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastrcnn_cli import progress

    monkeypatch.setattr(progress, "_reporter", None)  # the default: stderr, here captured (not a terminal)
    assert list(progress.track(range(3), "quick")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # a loop of a few milliseconds prints nothing

    monkeypatch.setattr(progress, "PLAIN_FIRST", 0.0)
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    assert list(progress.track(range(4), "detecting")) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("detecting: 1/4 (25 %)") and lines[-1].startswith("detecting: 4/4 (100 %)")
    assert all("\x1b" not in line for line in lines)  # plain text, no control codes

    with progress.task("training", total=10, completed=2) as bar:  # the status (training's loss, lr) shows too
        bar.update(completed=5, status="loss 0.412 lr 0.001")
    text = capsys.readouterr().err
    assert "training: 5/10 (50 %)" in text and "loss 0.412 lr 0.001" in text

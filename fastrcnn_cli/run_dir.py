"""Run folders: ``runs/eval``, then ``runs/eval2``, ``runs/eval3``, ...: each run writes into a folder of its own."""

from __future__ import annotations

from pathlib import Path


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """``runs_dir/name``, else ``name2``, ``name3``, ...: the first that does not exist, created (never an
    existing folder, even when two runs start at once: ``mkdir`` either creates it or fails)."""
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = runs / (name if n == 1 else f"{name}{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1

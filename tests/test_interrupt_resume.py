"""Ctrl-C (SIGINT) and SIGTERM during training stop at the end of the current iteration, save last.pt at that
step boundary and exit with 130; ``--resume`` then ends with the very weights and losses of a run that was
never interrupted (bit for bit, on one CPU thread)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastrcnn_cli.model.checkpoint import read_checkpoint_file

ITERATIONS = 10


def train_cmd(data: Path, runs: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fastrcnn_cli", "train", str(data), "--split", "train", "--eval-split", "none",
        "--backbone", "efficientnet-lite0", "--scale", "160", "--max-size", "240", "--rois-per-image", "16",
        "--iterations", str(ITERATIONS), "--log-every", "1", "--checkpoint-every", "3", "--lr", "0.01",
        "--lr-step", "1000", "--seed", "5", "--threads", "1", "--runs-dir", str(runs), "--proposal-cache", str(cache),
        "--proposal-top", "200", "--workers", "1", *extra,
    ]  # fmt: skip


ENV = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")


def losses(run_dir: Path) -> dict[int, tuple[str, str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {int(r["iteration"]): (r["loss"], r["loss_cls"], r["loss_loc"]) for r in csv.DictReader(f) if r["loss"]}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    payload = read_checkpoint_file(run_dir / "last.pt")
    state = dict(payload["state_dict"])
    state.update({f"momentum.{k}": v["momentum_buffer"] for k, v in payload["train_state"]["optimizer"]["state"].items()
                  if isinstance(v, dict) and "momentum_buffer" in v})
    return state


@pytest.fixture(scope="module")
def reference(synthetic_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted run (it also fills the proposal cache the interrupted runs share)."""
    tmp = tmp_path_factory.mktemp("reference")
    cache = tmp / "proposals"
    proc = subprocess.run(train_cmd(synthetic_voc, tmp / "runs", cache), env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "runs" / "train", cache


@pytest.mark.parametrize(
    "sig,group",
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["SIGINT", "SIGTERM", "SIGTERM-to-the-group"],
)
def test_interrupt_then_resume_is_bit_identical(
    reference, synthetic_voc: Path, tmp_path: Path, sig: int, group: bool
) -> None:
    """``group``: the signal goes to the whole process group, as a job scheduler's SIGTERM (or a terminal's
    Ctrl-C) does; the data workers must not die of it before the training process has saved (two workers
    here, one in the reference: the losses must not depend on it)."""
    ref_dir, cache = reference
    run_dir = tmp_path / "runs" / "train"
    log = tmp_path / "stderr.txt"
    extra = ("--workers", "2") if group else ()
    with open(log, "w") as stderr:
        proc = subprocess.Popen(train_cmd(synthetic_voc, tmp_path / "runs", cache, *extra), env=ENV, stderr=stderr,
                                stdout=subprocess.DEVNULL, start_new_session=group)
    deadline = time.monotonic() + 600
    while not (run_dir / "last.pt").is_file():  # the first checkpoint (iteration 3); the signal lands later
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    assert proc.wait(timeout=300) == 130, log.read_text()[-3000:]
    rest = log.read_text()
    assert "Resume with" in rest and "Traceback" not in rest, rest
    run_dir = tmp_path / "runs" / "train"
    stopped = read_checkpoint_file(run_dir / "last.pt")["train_state"]["iteration"]
    assert 3 <= stopped < ITERATIONS, stopped  # saved at the end of the iteration the signal arrived in
    resumed = subprocess.run([sys.executable, "-m", "fastrcnn_cli", "train", "--resume", str(run_dir), "--threads", "1"],
                             env=ENV, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(run_dir) == losses(ref_dir)
    expected, got = weights(ref_dir), weights(run_dir)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ, e.g. {different[:3]}"

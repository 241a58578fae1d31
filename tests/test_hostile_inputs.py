"""Hostile and damaged files: nothing user-supplied is unpickled, damaged files are named as such, one bad
item never loses a batch, outputs never overwrite inputs, and failed writes leave nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.errors import CheckpointError, InputError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "shapes-efficientnet-lite0.pt"
EXAMPLE = REPO / "examples" / "shapes-1.jpg"
runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


class _CreatesAFile:
    """Unpickling this calls ``open(marker, "w")``: the file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil_file(tmp_path: Path, name: str = "evil.pt") -> tuple[Path, Path]:
    """A torch file whose loading (with weights_only=False) would create ``marker``."""
    marker = tmp_path / "PWNED"
    path = tmp_path / name
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _CreatesAFile(marker)}, path)
    assert not marker.exists()
    return path, marker


def assert_refused(result, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the pickle was loaded: it ran code"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{path}: " in result.output and "holds pickled Python objects" in result.output
    assert "weights_only=False" in result.output  # the one-line conversion command for a trusted file


# -- 1. nothing user-supplied is unpickled -----------------------------------------------------------------------


def test_backbone_weights_pickle_is_refused_not_run(synthetic_voc: Path, tmp_path: Path) -> None:
    evil, marker = evil_file(tmp_path)
    for backbone in ("vgg16", "efficientnet-lite0"):
        result = run("train", synthetic_voc, "--split", "train", "--eval-split", "none", "--backbone", backbone,
                     "--backbone-weights", evil, "--iterations", 1, "--runs-dir", tmp_path / "runs",
                     "--proposal-cache", tmp_path / "props", "--proposal-top", 50, "--workers", 1)
        assert_refused(result, evil, marker)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


def test_detect_weights_pickle_is_refused_not_run(tmp_path: Path) -> None:
    evil, marker = evil_file(tmp_path)
    result = run("detect", EXAMPLE, "--weights", evil)
    assert_refused(result, evil, marker)


def test_resume_never_unpickles_the_run_folder(synthetic_voc: Path, tmp_path: Path) -> None:
    """Someone else's run folder: last.pt and args.json's backbone_weights are both hostile."""
    run_dir = tmp_path / "theirs"
    run_dir.mkdir()
    evil_ckpt, marker = evil_file(run_dir, "last.pt")
    evil_backbone, _ = evil_file(run_dir, "backbone.pt")
    args = {"data": str(synthetic_voc), "split": "train", "eval_split": None, "backbone": "vgg16",
            "backbone_weights": str(evil_backbone), "iterations": 2}
    (run_dir / "args.json").write_text(json.dumps(args))
    result = run("train", "--resume", run_dir)
    assert not marker.exists()
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "holds pickled Python objects" in result.output


def test_weights_file_errors_say_what_is_wrong(tmp_path: Path) -> None:
    from fastrcnn_cli.model.checkpoint import read_checkpoint_file

    truncated = tmp_path / "truncated.pt"
    data = SHIPPED.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: is truncated or corrupt"):
        read_checkpoint_file(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: .*is not a PyTorch weights file"):
        read_checkpoint_file(text)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(CheckpointError, match="empty.pt: .*is empty"):
        read_checkpoint_file(empty)
    result = run("detect", EXAMPLE, "--weights", truncated)
    assert result.exit_code == 1 and "truncated or corrupt" in result.output and "Traceback" not in result.output


def test_state_dict_files_still_load(tmp_path: Path) -> None:
    """Plain tensors and dicts (what every real weights file holds) load as before."""
    from fastrcnn_cli.model.safe_load import load_weights_file

    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"a": torch.arange(3)}, "note": "x", "n": [1, 2.5]}, path)
    loaded = load_weights_file(path)
    assert torch.equal(loaded["state_dict"]["a"], torch.arange(3)) and loaded["n"] == [1, 2.5]
    with pytest.raises(InputError, match="no such file"):
        load_weights_file(tmp_path / "missing.pt")


# -- file systems that refuse writes -------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str, *options: str) -> bool:
    import os
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    opts = ",".join([f"size={size}", *options])
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    return result.returncode == 0


def _umount(where: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A real 256 KiB file system (tmpfs; needs root), for genuine "No space left on device" errors."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, "256k"):
        pytest.skip("cannot mount a small tmpfs here (not root, or no mount permission)")
    yield mnt
    _umount(mnt)


@pytest.fixture
def read_only_fs(tmp_path: Path):
    """A real read-only file system (root ignores file permissions, not a read-only mount)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, "64k", "ro"):
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no mount permission)")
    yield mnt
    _umount(mnt)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill ``folder``'s file system, leaving about ``leave`` bytes free."""
    free = shutil.disk_usage(folder).free - leave
    if free > 0:
        with open(folder / "filler", "wb") as f:
            try:
                f.write(b"\0" * free)
            except OSError:
                pass


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tiny_fs: Path) -> None:
    from fastrcnn_cli.errors import OutputError
    from fastrcnn_cli.io import atomic_torch_save, atomic_write_bytes

    target = tiny_fs / "last.pt"
    atomic_write_bytes(target, b"the previous checkpoint")
    fill(tiny_fs, leave=4096)
    with pytest.raises(OutputError, match=r"last.pt: cannot write \(No space left on device\); the previous file is unchanged"):
        atomic_torch_save(target, {"w": torch.zeros(200_000)})  # torch wraps the OSError in a RuntimeError
    assert target.read_bytes() == b"the previous checkpoint" and leftovers(tiny_fs) == []
    with pytest.raises(OutputError, match="new.bin: cannot write .*No space left on device.*nothing was written"):
        atomic_write_bytes(tiny_fs / "new.bin", b"x" * 1_000_000)
    assert not (tiny_fs / "new.bin").exists() and leftovers(tiny_fs) == []


def test_atomic_write_failure_is_simulated_where_no_file_system_can_be_mounted(monkeypatch, tmp_path: Path) -> None:
    """The same contract without a real full disk: a write that raises ENOSPC."""
    import errno
    import os

    from fastrcnn_cli import io
    from fastrcnn_cli.errors import OutputError

    target = tmp_path / "results.json"
    io.atomic_write_text(target, "old")

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_fdopen = os.fdopen
    monkeypatch.setattr(io.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OutputError, match="results.json: cannot write .No space left on device."):
        io.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_outputs_in_a_read_only_folder_fail_before_any_work(read_only_fs: Path, tmp_path: Path, synthetic_voc: Path) -> None:
    image = tmp_path / "a.jpg"
    shutil.copy(EXAMPLE, image)
    cases = [
        ("train", synthetic_voc, "--backbone", "efficientnet-lite0", "--runs-dir", read_only_fs / "runs"),
        ("detect", image, "--save-json", read_only_fs / "d.json"),
        ("detect", image, "--out", read_only_fs / "vis.png"),
        ("detect", image, "--save-coco", read_only_fs / "sub" / "c.json"),
        ("propose", image, "--out", read_only_fs / "p.png"),
        ("export", SHIPPED, read_only_fs / "m.pt"),
        ("compress-svd", "--rank", 8, "--out", read_only_fs / "svd.pt"),
        ("make-synthetic", read_only_fs / "shapes"),
        ("benchmark", "--csv", read_only_fs / "b.csv"),
    ]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Read-only file system" in result.output and "Traceback" not in result.output, (args, result.output)
        assert str(read_only_fs) in result.output
        assert "proposals" not in result.output.split("error:")[0], "the work started before the check"


def test_evaluate_default_output_folder_read_only(read_only_fs: Path, synthetic_voc: Path, monkeypatch) -> None:
    monkeypatch.chdir(read_only_fs)
    result = run("evaluate", synthetic_voc, "--split", "test")
    assert result.exit_code == 1 and "runs: cannot write there (Read-only file system" in result.output, result.output


def test_proposal_cache_on_a_full_disk_stops_with_one_message(synthetic_voc: Path, tiny_fs: Path) -> None:
    fill(tiny_fs, leave=24 * 1024)
    cache = tiny_fs / "cache"
    result = run("propose", synthetic_voc, "--split", "train", "--max-side", "64", "--workers", "1",
                 "--cache", cache)
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "run the same command again" in result.output
    assert "Traceback" not in result.output and leftovers(tiny_fs) == []
    kept = list((cache / "boxes").glob("*.npz"))
    from fastrcnn_cli.proposals.cache import read_entry

    assert all(read_entry(p) is not None for p in kept)  # every file that is there is complete


# -- outputs never overwrite inputs --------------------------------------------------------------------------------


def test_no_output_flag_overwrites_an_input(tmp_path: Path) -> None:
    import os

    image = tmp_path / "img.jpg"
    shutil.copy(EXAMPLE, image)
    weights = tmp_path / "w.pt"
    shutil.copy(SHIPPED, weights)
    (tmp_path / "link.json").symlink_to(image)
    os.link(weights, tmp_path / "hard.pt")
    before = {p: p.read_bytes() for p in (image, weights)}
    cases = [
        ("detect", image, "--save-json", image),
        ("detect", image, "--save-coco", tmp_path / "link.json"),
        ("detect", image, "--weights", weights, "--save-json", tmp_path / "hard.pt"),
        ("detect", image, "--out", tmp_path / "link.json"),
        ("propose", image, "--out", image),
        ("export", weights, tmp_path / "hard.pt"),
        ("compress-svd", "--rank", 8, "-w", weights, "--out", tmp_path / "hard.pt"),
        ("benchmark", "--image", image, "--csv", tmp_path / "link.json"),
    ]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "overwrite" in result.output and "Traceback" not in result.output, (args, result.output)
    assert {p: p.read_bytes() for p in (image, weights)} == before


# -- one bad item never loses the batch ----------------------------------------------------------------------------


def test_detect_skips_and_names_bad_images_and_writes_the_rest(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    small = cv2.resize(cv2.imread(str(EXAMPLE)), (120, 90), interpolation=cv2.INTER_AREA)  # a quick search
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(photos / name), small)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    (photos / "cut.png").write_bytes((REPO / "examples" / "shapes-2.jpg").read_bytes()[:0])
    cv2.imwrite(str(photos / "float.tiff"), np.random.default_rng(0).random((64, 80, 3), dtype=np.float32))
    out, doc = tmp_path / "out", tmp_path / "dets.json"
    result = run("detect", photos, "--out", out, "--save-json", doc, "--proposal-top", 30, "--scale", 90)
    assert result.exit_code == 1, result.output  # some items failed
    assert "Traceback" not in result.output
    assert "broken.jpg" in result.output and "cut.png" in result.output
    written = json.loads(doc.read_text())
    done = {Path(i["file"]).name for i in written["images"]}
    failed = {Path(i["file"]).name for i in written["failed"]}
    assert {"a.jpg", "b.jpg"} <= done and {"broken.jpg", "cut.png"} <= failed
    assert done | failed == {"a.jpg", "b.jpg", "broken.jpg", "cut.png", "float.tiff"}  # the float image: either
    assert (out / "a.jpg").is_file() and (out / "b.jpg").is_file()


# -- propose: workers die with their parent; concurrent runs share the work ------------------------------------------


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _propose_cmd(data: Path, cache: Path, workers: int, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "fastrcnn_cli", "propose", str(data), "--split", "trainval", "--workers",
            str(workers), "--cache", str(cache), "--json", *extra]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_propose_workers_die_when_the_parent_is_killed(synthetic_voc: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(_propose_cmd(synthetic_voc, tmp_path / "c", 2), stdout=subprocess.DEVNULL, stderr=stderr)
    workers: set[int] = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
        for pid in _children(proc.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    workers.add(pid)
            except OSError:
                pass
        time.sleep(0.2)
    assert len(workers) >= 2 and proc.poll() is None, f"the workers did not start: {log.read_text()[-2000:]}"
    helpers = _children(proc.pid)  # the workers and multiprocessing's resource tracker
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.2)
    assert not [p for p in helpers if _alive(p)], "processes outlived their parent"


def test_two_propose_runs_on_one_cache_share_the_work(synthetic_voc: Path, tmp_path: Path) -> None:
    import subprocess

    from fastrcnn_cli.data.voc import load_dataset

    total = len(load_dataset(synthetic_voc, "trainval"))
    cache = tmp_path / "shared"
    runs = [subprocess.Popen(_propose_cmd(synthetic_voc, cache, 1, "--max-side", "200"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=600) for r in runs]
    for run_, (out, err) in zip(runs, outputs):
        assert run_.returncode == 0, err[-2000:]
    reports = [json.loads(out[out.index("{"):]) for out, _ in outputs]
    computed = [r["computed"] for r in reports]
    assert sum(computed) == total, computed  # each image computed once, by one run or the other
    assert all(r["cached"] + r["computed"] + r["computed_by_another_run"] == total for r in reports), reports
    assert not list((cache / "boxes").glob(".*.claim"))

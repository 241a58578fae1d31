"""The native operators' build cache: one build per build key, shared by checkouts and environments, waited for
by concurrent first uses, never reused when interrupted or damaged, announced exactly when it compiles.

These tests compile a one-function library through the same code path as the RoI pooling operator
(``_extension._build_and_load``) into a cache folder of their own, in fresh processes.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastrcnn_cli.ops import _extension

SOURCE = """#include <torch/library.h>

namespace {
int64_t answer() { return 42; }
}  // namespace

TORCH_LIBRARY(fastrcnn_cache_test, m) { m.def("answer() -> int", &answer); }
"""
NAME = "fastrcnn_cache_test"
LOAD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "import torch\n"
    "from fastrcnn_cli.ops import _extension as e\n"
    "e.CSRC = Path(sys.argv[1])\n"
    f"e._build_and_load({NAME!r}, ('answer.cpp',), False)\n"
    "print(json.dumps({'answer': torch.ops.fastrcnn_cache_test.answer(), 'compiled': e._state.build_seconds,\n"
    "                  'path': e._state.paths}))\n"
)


def checkout(root: Path) -> Path:
    """A folder standing for one checkout's csrc/."""
    csrc = root / "csrc"
    csrc.mkdir(parents=True)
    (csrc / "answer.cpp").write_text(SOURCE)
    (csrc / "answer.h").write_text("// a header: part of the build key\n")
    return csrc


def start(csrc: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "FASTRCNN_EXTENSIONS_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-c", LOAD, str(csrc)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def compiles(stderr: str) -> bool:
    """The compile notice: a line that starts with 'compiling'."""
    return re.search(r"^compiling ", stderr, re.MULTILINE) is not None


def builds(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def shared_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two checkouts started at the same moment on an empty cache."""
    root = tmp_path_factory.mktemp("ops-cache")
    cache = root / "cache"
    a, b = checkout(root / "a"), checkout(root / "b")
    first, second = start(a, cache), start(b, cache)
    results = [finish(first), finish(second)]
    return {"root": root, "cache": cache, "a": a, "b": b, "results": results}


def test_two_checkouts_starting_together_share_one_build(shared_build: dict) -> None:
    (one, err_one), (two, err_two) = shared_build["results"]
    assert one["answer"] == two["answer"] == 42
    assert len(builds(shared_build["cache"])) == 1
    assert one["path"] == two["path"]
    compiled = [r for r in (one, two) if r["compiled"]]
    assert len(compiled) == 1, "exactly one process compiles; the other waits for it and loads its build"
    notices = [e for e in (err_one, err_two) if compiles(e)]
    assert len(notices) == 1 and f"in {compiled[0]['compiled'][NAME]:.1f} s" in notices[0]
    assert "waiting for another process" in (err_two if notices[0] is err_one else err_one)
    record = json.loads((builds(shared_build["cache"])[0] / "build.json").read_text())
    key = record["key"]
    assert key["torch"] and key["python"] and key["flags"]["extra_include_paths"] == ["<csrc>"]


def test_a_cached_build_loads_silently(shared_build: dict) -> None:
    result, err = finish(start(shared_build["a"], shared_build["cache"]))
    assert result["answer"] == 42 and not result["compiled"]
    assert err.strip() == ""


def test_another_header_is_another_build_key(shared_build: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTRCNN_EXTENSIONS_DIR", str(shared_build["cache"]))
    monkeypatch.setattr(_extension, "CSRC", shared_build["a"])
    key = _extension.build_key(NAME, ("answer.cpp",), False)
    monkeypatch.setattr(_extension, "CSRC", shared_build["b"])
    assert _extension.build_key(NAME, ("answer.cpp",), False) == key  # another checkout, same key
    (shared_build["b"] / "answer.h").write_text("// changed\n")
    try:
        changed = _extension.build_key(NAME, ("answer.cpp",), False)
    finally:
        (shared_build["b"] / "answer.h").write_text("// a header: part of the build key\n")
    assert changed != key and _extension.build_folder(NAME, changed) != _extension.build_folder(NAME, key)
    monkeypatch.setenv("CXX", "clang++")
    assert _extension.build_key(NAME, ("answer.cpp",), False)["compiler"][0] == "clang++"


def test_incomplete_or_damaged_builds_are_never_used(shared_build: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    good = builds(shared_build["cache"])[0]
    monkeypatch.setattr(_extension, "CSRC", shared_build["a"])
    key = _extension.build_key(NAME, ("answer.cpp",), False)
    assert _extension._is_complete(good, NAME, key)
    scratch = shared_build["root"] / "scratch"
    for damage in ("no record", "short library", "other key"):
        copy = scratch / damage
        shutil.copytree(good, copy)
        if damage == "no record":  # interrupted before its record was written
            (copy / "build.json").unlink()
        elif damage == "short library":
            (copy / f"{NAME}.so").write_bytes((copy / f"{NAME}.so").read_bytes()[:1000])
        else:
            record = json.loads((copy / "build.json").read_text())
            record["key"]["torch"] = "0.0"
            (copy / "build.json").write_text(json.dumps(record))
        assert not _extension._is_complete(copy, NAME, key), damage


@pytest.mark.slow  # three compiles (about a minute of CPU); the decision itself is checked above
def test_an_interrupted_then_a_damaged_build_are_compiled_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    csrc = checkout(tmp_path / "a")
    proc = start(csrc, cache)
    deadline = time.monotonic() + 600
    while not (cache.is_dir() and any(cache.glob(".tmp-*"))):  # compiling now
        assert proc.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the process and its compiler
    proc.wait()
    assert builds(cache) == [] and list(cache.glob(".tmp-*"))

    result, err = finish(start(csrc, cache))
    assert result["answer"] == 42 and result["compiled"] and compiles(err)
    assert len(builds(cache)) == 1 and not list(cache.glob(".tmp-*")), "the interrupted build's folder is removed"

    library = builds(cache)[0] / f"{NAME}.so"
    library.write_bytes(b"\0" * library.stat().st_size)  # same size, not a library
    result, err = finish(start(csrc, cache))
    assert result["answer"] == 42 and result["compiled"] and "cannot be loaded" in err and compiles(err)
    assert len(builds(cache)) == 1


def test_assume_constant_result_is_still_the_attribute_torch_sets() -> None:
    import torch._dynamo

    marked = torch._dynamo.assume_constant_result(lambda: 0)
    ours = _extension._assume_constant_result(lambda: 0)
    assert {k for k in vars(marked)} == {k for k in vars(ours)} == {"_dynamo_marked_constant"}
    assert _extension.native_available._dynamo_marked_constant is True


def test_importing_the_command_line_and_the_operators_does_not_import_the_compiler() -> None:
    code = (
        "import sys\n"
        "import fastrcnn_cli.cli, fastrcnn_cli.ops, fastrcnn_cli.detect, fastrcnn_cli.model.checkpoint\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]

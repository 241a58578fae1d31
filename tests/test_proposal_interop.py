"""Proposals in and out of Detectron2 and MMDetection (``propose --import-proposals / --export-proposals``)."""

from __future__ import annotations

import enum
import io
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrcnn_cli.cli import app
from fastrcnn_cli.data.box_formats import to_coco
from fastrcnn_cli.data.formats import load_dataset, read_split_ids
from fastrcnn_cli.data.records import Dataset
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.proposal_settings import ProposalSettings
from fastrcnn_cli.proposals import load_or_compute_proposals
from fastrcnn_cli.proposals.cache import SOURCE_SS, ProposalCache, make_meta
from fastrcnn_cli.proposals.interop import (
    DETECTRON2,
    MMDET,
    export_proposals,
    from_continuous,
    import_proposals,
    load_pickle,
    rank_scores,
    read_proposal_file,
    to_continuous,
)
from fastrcnn_cli.proposals.matlab import import_mat

runner = CliRunner()
SMALL = ProposalSettings(max_side=64)


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def fake_cache(dataset: Dataset, folder: Path, *, skip: int | None = None) -> dict[str, np.ndarray]:
    """A Selective Search cache of made-up whole-pixel boxes (the image ``skip`` gets none)."""
    cache = ProposalCache.open(folder, make_meta(SOURCE_SS, SMALL, dataset.root))
    rng = np.random.default_rng(7)
    made = {}
    for k, r in enumerate(dataset.records):
        if k == skip:
            continue
        x1 = rng.integers(0, r.width // 2, 30)
        y1 = rng.integers(0, r.height // 2, 30)
        x2 = np.minimum(x1 + rng.integers(0, r.width // 2, 30), r.width - 1)
        y2 = np.minimum(y1 + rng.integers(0, r.height // 2, 30), r.height - 1)
        whole = [[0, 0, r.width - 1, r.height - 1]]  # a box at the image's edges
        boxes = np.unique(np.concatenate([np.stack([x1, y1, x2, y2], 1), whole]), axis=0).astype(np.float32)
        boxes = boxes[rng.permutation(len(boxes))]  # Selective Search's order is no sorted one
        cache.save(r.id, boxes, (r.width, r.height))
        made[r.id] = boxes
    return made


def globals_of(data: bytes) -> set[str]:
    """The globals a pickle names (recorded while our own test file is loaded)."""
    names: set[str] = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            names.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recording(io.BytesIO(data)).load()
    return names


# ---------------------------------------------------------------------------------------------------------
# boxes and pickles


def test_continuous_corners_are_cocos_and_round_trip_exactly() -> None:
    ours = np.array([[0, 0, 9, 19], [3.5, 4.25, 100.75, 7], [0, 0, 0, 0]], np.float32)
    cont = to_continuous(ours)
    for box, c in zip(ours, cont):
        x, y, w, h = to_coco(box)  # the project's one COCO conversion: the same corners
        assert c.tolist() == [x, y, x + w, y + h]
    assert np.array_equal(from_continuous(cont).astype(np.float32), ours)
    assert rank_scores(4).tolist() == [1.0, 0.75, 0.5, 0.25]
    assert np.all(np.diff(rank_scores(100_000)) < 0)  # strictly decreasing in float32


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


class _EvalEvil:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_pickle_that_asks_for_code_is_refused_and_nothing_runs(
    synthetic_voc: Path, tmp_path: Path, protocol: int
) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ids": ["a"], "boxes": [_Evil(marker)], "objectness_logits": [[0.0]]},
                                  protocol=protocol))
    with pytest.raises(InputError, match=r"refused to load: the pickle asks for (posix|nt|os)\.system") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    path.write_bytes(pickle.dumps([_EvalEvil()], protocol=protocol))
    with pytest.raises(InputError, match=r"builtins\.eval"):
        read_proposal_file(path)
    # through the command line: one message, exit code 1, no traceback, nothing run
    path.write_bytes(pickle.dumps([_Evil(marker)], protocol=protocol))
    result = cli("propose", synthetic_voc, "--split", "test", "--import-proposals", path,
                 "--proposal-cache", tmp_path / "cache")
    assert result.exit_code == 1 and "refused to load" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_arrays_of_numpy_1_and_2_and_every_protocol_load(tmp_path: Path) -> None:
    data = {"ids": [np.int64(3), "x"], "boxes": [np.arange(8, dtype=np.float32).reshape(2, 4)], "s": {1, 2}}
    for protocol in range(6):
        raw = pickle.dumps(data, protocol=protocol)
        # NumPy 2's module names, and NumPy 1's (in the text GLOBAL opcodes of protocols 0-3)
        for variant in (raw, raw.replace(b"numpy._core", b"numpy.core")) if protocol < 4 else (raw,):
            (tmp_path / "a.pkl").write_bytes(variant)
            loaded = load_pickle(tmp_path / "a.pkl")
            assert loaded["ids"] == [3, "x"] and loaded["s"] == {1, 2}
            assert np.array_equal(loaded["boxes"][0], data["boxes"][0])


def test_detectron2_box_mode_enum_is_read_as_its_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("detectron2.structures.boxes")

    class BoxMode(enum.IntEnum):
        XYXY_ABS = 0
        XYWH_ABS = 1

    BoxMode.__module__, BoxMode.__qualname__ = module.__name__, "BoxMode"  # as Detectron2's own enum pickles
    module.BoxMode = BoxMode  # type: ignore[attr-defined]
    for name in ("detectron2", "detectron2.structures"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    raw = pickle.dumps({"ids": ["a"], "boxes": [np.array([[1, 2, 10, 20]], np.float32)],
                        "objectness_logits": [np.array([0.5], np.float32)], "bbox_mode": BoxMode.XYWH_ABS})
    for name in ("detectron2", "detectron2.structures", module.__name__):
        monkeypatch.delitem(sys.modules, name)
    (tmp_path / "d2.pkl").write_bytes(raw)
    read = read_proposal_file(tmp_path / "d2.pkl")
    assert read.bbox_mode == 1 and "detectron2" not in sys.modules
    assert read.boxes[0].tolist() == [[1, 2, 10, 21]]  # x y w h -> X2 = 11, Y2 = 22 -> ours 10, 21


# ---------------------------------------------------------------------------------------------------------
# round trips


def test_detectron2_export_then_import_gives_the_same_boxes_ids_and_scores(synthetic_voc: Path, tmp_path: Path) -> None:
    ds = load_dataset(synthetic_voc, "trainval", warn=False)
    made = fake_cache(ds, tmp_path / "ss", skip=3)
    out = tmp_path / "d2.pkl"
    done = export_proposals(out, DETECTRON2, ds.records, tmp_path / "ss")
    assert done.images == len(ds) and done.empty == (ds.ids[3],) and done.ranked == len(ds) - 1
    raw = out.read_bytes()
    assert globals_of(raw) <= {"numpy.reshape", "numpy.frombuffer", "numpy.zeros", "builtins.bytearray"}
    assert raw[:2] == b"\x80\x04"  # protocol 4
    plain = pickle.loads(raw)  # (our own file) as Detectron2 reads it
    assert plain["ids"] == ds.ids and plain["bbox_mode"] == 0 and set(plain) == {
        "ids", "boxes", "objectness_logits", "bbox_mode"}
    first = ds.ids[0]
    assert plain["boxes"][0].dtype == np.float32 and plain["boxes"][0].flags.writeable
    assert np.array_equal(plain["boxes"][0], made[first] + np.float32([0, 0, 1, 1]))  # continuous corners
    assert np.array_equal(plain["objectness_logits"][0], rank_scores(len(made[first])))
    assert plain["boxes"][3].shape == (0, 4)

    imported, cache = import_proposals(out, ds.records, tmp_path / "back", dataset_root=ds.root)
    assert imported.matched_by == "ids" and imported.extra_entries == 0
    assert imported.problems == [f"{ds.ids[3]}: no boxes in the file"]
    assert list(imported.boxes) == [i for i in ds.ids if i in made]
    for image_id, boxes in made.items():
        assert imported.boxes[image_id].dtype == np.float32
        assert np.array_equal(imported.boxes[image_id], boxes)
        assert np.array_equal(imported.scores[image_id], rank_scores(len(boxes)))
    # what train and evaluate read
    assert all(np.array_equal(v, made[k]) for k, v in load_or_compute_proposals(ds, SMALL, cache).items())
    # and out again: the very same file (the scores came back from the cache)
    export_proposals(tmp_path / "again.pkl", DETECTRON2, ds.records, cache)
    assert (tmp_path / "again.pkl").read_bytes() == raw


def test_mmdet_export_is_in_split_order_and_imports_back(synthetic_voc: Path, tmp_path: Path) -> None:
    ds = load_dataset(synthetic_voc, "test", warn=False)
    made = fake_cache(ds, tmp_path / "ss", skip=1)
    order = read_split_ids(synthetic_voc, "test")
    out = tmp_path / "mm.pkl"
    export_proposals(out, MMDET, ds.records, tmp_path / "ss", split_ids=order)
    plain = pickle.loads(out.read_bytes())
    assert isinstance(plain, list) and len(plain) == len(order)
    for image_id, entry in zip(order, plain):
        if image_id in made:
            assert entry.shape == (len(made[image_id]), 5) and entry.dtype == np.float32
            assert np.array_equal(entry[:, :4], made[image_id] + np.float32([0, 0, 1, 1]))
            assert np.array_equal(entry[:, 4], rank_scores(len(made[image_id])))
        else:
            assert entry.shape == (0, 5)
    imported, cache = import_proposals(out, ds.records, tmp_path / "back", split_ids=order)
    assert imported.matched_by == "split order" and imported.format == MMDET
    assert set(imported.boxes) == set(made)
    for image_id, boxes in made.items():
        assert np.array_equal(imported.boxes[image_id], boxes)
    export_proposals(tmp_path / "again.pkl", MMDET, ds.records, cache, split_ids=order)
    assert (tmp_path / "again.pkl").read_bytes() == out.read_bytes()
    # MMDetection's order is the file's, not a sorted one: reversed entries give other images' boxes (refused
    # here because they do not fit those images, or simply wrong), never the same result
    (tmp_path / "reversed.pkl").write_bytes(pickle.dumps(plain[::-1]))
    try:
        other = import_proposals(tmp_path / "reversed.pkl", ds.records, tmp_path / "rev", split_ids=order)[0]
    except InputError as exc:
        assert "reach outside" in str(exc)
    else:
        assert any(not np.array_equal(other.boxes.get(i, np.zeros(0)), b) for i, b in made.items())


def test_mat_export_imports_back_with_the_original_reader(synthetic_voc: Path, tmp_path: Path) -> None:
    ds = load_dataset(synthetic_voc, "test", warn=False)
    made = fake_cache(ds, tmp_path / "ss", skip=0)
    done = export_proposals(tmp_path / "test.mat", "mat", ds.records, tmp_path / "ss")
    assert done.images == len(ds) - 1 and done.empty == (ds.ids[0],)
    imported, _ = import_mat(tmp_path / "test.mat", ds.records, tmp_path / "back")
    assert imported.matched_by == "images variable" and imported.layout == "yxyx1"
    assert imported.problems == [f"{ds.ids[0]}: no entry in the file"]
    for image_id, boxes in made.items():
        assert np.array_equal(imported.boxes[image_id], boxes)


def test_float_boxes_of_an_rpn_survive_import_and_export_bit_for_bit(synthetic_voc: Path, tmp_path: Path) -> None:
    """Detectron2's own dump: float32 boxes anywhere in [0, W] x [0, H], logits unsorted, protocol 5."""
    ds = load_dataset(synthetic_voc, "test", warn=False)
    rng = np.random.default_rng(3)
    ids, boxes, logits = [], [], []
    for r in reversed(ds.records):  # another order than the split's: matched by id
        a = rng.uniform(0, [r.width, r.height], (50, 2))
        b = rng.uniform(0, [r.width, r.height], (50, 2))
        boxes.append(np.concatenate([np.minimum(a, b), np.maximum(a, b) + 1.0], 1).clip(0, [r.width, r.height] * 2)
                     .astype(np.float32))
        logits.append(rng.normal(size=50).astype(np.float32))
        ids.append(r.id)
    ids.append("not-in-this-split")
    boxes.append(np.zeros((0, 4), np.float32))
    logits.append(np.zeros(0, np.float32))
    path = tmp_path / "box_proposals.pkl"
    path.write_bytes(pickle.dumps({"ids": ids, "boxes": boxes, "objectness_logits": logits, "bbox_mode": 0},
                                  protocol=5))
    imported, cache = import_proposals(path, ds.records, tmp_path / "c")
    assert imported.extra_entries == 1 and imported.problems == []
    for image_id, b, s in zip(ids, boxes, logits):
        if image_id not in imported.boxes:
            continue
        order = np.argsort(-s, kind="stable")  # Detectron2 sorts by decreasing logit
        assert np.array_equal(imported.scores[image_id], s[order])
        assert np.array_equal(imported.boxes[image_id] + np.float32([0, 0, 1, 1]), b[order])
    export_proposals(tmp_path / "out.pkl", DETECTRON2, ds.records, cache)
    again = pickle.loads((tmp_path / "out.pkl").read_bytes())
    for image_id, b, s in zip(ids, boxes, logits):
        if image_id in again["ids"]:
            k = again["ids"].index(image_id)
            order = np.argsort(-s, kind="stable")
            assert again["boxes"][k].dtype == np.float32 and np.array_equal(again["boxes"][k], b[order])
            assert np.array_equal(again["objectness_logits"][k], s[order])


def test_coco_data_sets_use_coco_image_ids(synthetic_voc: Path, tmp_path: Path) -> None:
    result = cli("convert", synthetic_voc, tmp_path / "coco", "--to", "coco", "--split", "test")
    assert result.exit_code == 0, result.output
    ds = load_dataset(tmp_path / "coco", "test", warn=False)
    assert all(r.source_id is not None for r in ds.records)
    made = fake_cache(ds, tmp_path / "ss")
    export_proposals(tmp_path / "d2.pkl", DETECTRON2, ds.records, tmp_path / "ss")
    plain = pickle.loads((tmp_path / "d2.pkl").read_bytes())
    assert plain["ids"] == [r.source_id for r in ds.records] and all(type(i) is int for i in plain["ids"])
    imported, _ = import_proposals(tmp_path / "d2.pkl", ds.records, tmp_path / "back")
    assert all(np.array_equal(imported.boxes[i], b) for i, b in made.items())


# ---------------------------------------------------------------------------------------------------------
# the command line


def test_command_line_exports_imports_and_converts_between_tools(synthetic_voc: Path, tmp_path: Path) -> None:
    ds = load_dataset(synthetic_voc, "test", warn=False)
    made = fake_cache(ds, tmp_path / "ss")
    result = cli("propose", synthetic_voc, "--split", "test", "--proposal-cache", tmp_path / "ss", "--max-side", 64,
                 "--export-proposals", tmp_path / "d2.pkl", "--proposal-format", "detectron2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["export"]["images"] == len(ds)
    result = cli("propose", synthetic_voc, "--split", "test", "--import-proposals", tmp_path / "d2.pkl",
                 "--proposal-cache", tmp_path / "imported", "--recall", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["format"] == "detectron2" and payload["imported"] == len(ds) and "recall" in payload
    # an imported cache is read (not recomputed) and converted to MMDetection's file
    result = cli("propose", synthetic_voc, "--split", "test", "--proposal-cache", tmp_path / "imported",
                 "--export-proposals", tmp_path / "mm.pkl", "--proposal-format", "mmdet")
    assert result.exit_code == 0, result.output
    entries = pickle.loads((tmp_path / "mm.pkl").read_bytes())
    for image_id, entry in zip(read_split_ids(synthetic_voc, "test"), entries):
        assert np.array_equal(entry[:, :4] - np.float32([0, 0, 1, 1]), made[image_id])
    # .mat: the format follows the suffix
    result = cli("propose", synthetic_voc, "--split", "test", "--import-proposals", tmp_path / "mm.pkl",
                 "--proposal-cache", tmp_path / "from-mm", "--export-proposals", tmp_path / "test.mat")
    assert result.exit_code == 0, result.output
    result = cli("propose", synthetic_voc, "--split", "test", "--import-proposals", tmp_path / "test.mat",
                 "--proposal-cache", tmp_path / "from-mat")
    assert result.exit_code == 0, result.output
    proposals = load_or_compute_proposals(ds, SMALL, tmp_path / "from-mat")
    assert all(np.array_equal(proposals[i], b) for i, b in made.items())


def test_command_line_usage_errors(synthetic_voc: Path, tmp_path: Path) -> None:
    def run(*args: object) -> tuple[int, str]:
        result = cli(*args)
        return result.exit_code, " ".join(result.output.replace("│", " ").split())

    base = ("propose", synthetic_voc, "--split", "test")
    code, text = run(*base, "--export-proposals", tmp_path / "x.pkl")
    assert code == 2 and "--proposal-format detectron2 or mmdet" in text, text
    code, text = run(*base, "--export-proposals", tmp_path / "x.pkl", "--proposal-format", "mmdet", "--shard", "1/2")
    assert code == 2 and "not a shard" in text, text
    code, text = run(*base, "--import-proposals", tmp_path / "x.pkl", "--proposal-format", "mmdet")
    assert code == 2 and "format of --export-proposals" in text, text
    image = load_dataset(synthetic_voc, "test", warn=False).records[0].image_path
    code, text = run("propose", image, "--import-proposals", tmp_path / "x.pkl")
    assert code == 2 and "needs a data set folder" in text, text
    code, text = run(*base, "--import-proposals", tmp_path / "missing.pkl")
    assert code == 1 and "no such proposal file" in text and "Traceback" not in text, text


def _d2(ds: Dataset, **change: object) -> dict[str, object]:
    data: dict[str, object] = {
        "ids": list(ds.ids),
        "boxes": [np.array([[0, 0, 10, 10], [2, 3, 20, 30]], np.float32) for _ in ds.ids],
        "objectness_logits": [np.array([1.0, 0.5], np.float32) for _ in ds.ids],
    }
    data.update(change)
    return {k: v for k, v in data.items() if v is not None}


def _bad_files(ds: Dataset) -> list[tuple[str, object, str]]:
    n = len(ds)
    two = np.array([[0, 0, 10, 10], [2, 3, 20, 30]], np.float32)
    return [
        ("an int", 42, "the pickle holds an int, not proposals"),
        ("no boxes", _d2(ds, boxes=None), "no 'boxes' key"),
        ("no scores", _d2(ds, objectness_logits=None), "no 'objectness_logits' (or 'scores') key"),
        ("ragged lists", _d2(ds, boxes=[two] * (n - 1)), f"have {n}, {n - 1} and {n}"),
        ("wrong width", _d2(ds, boxes=[np.zeros((2, 5), np.float32)] * n), "has shape (2, 5), expected [K, 4]"),
        ("scores not matching", _d2(ds, objectness_logits=[np.zeros(3, np.float32)] * n), "2 boxes but 3"),
        ("relative mode", _d2(ds, bbox_mode=2), "'bbox_mode' is 2 (XYXY_REL)"),
        ("strings as boxes", _d2(ds, boxes=[np.array([["a"] * 4])] * n), "not an array of numbers"),
        ("NaN", _d2(ds, boxes=[np.full((2, 4), np.nan, np.float32)] * n), "NaN or infinite"),
        ("other ids", _d2(ds, ids=[f"other-{i}" for i in range(n)]), "none of its"),
        ("repeated ids", _d2(ds, ids=[ds.ids[0]] * n), "appears twice"),
        ("outside", _d2(ds, boxes=[two * 100] * n), "reach outside"),
        ("xywh as xyxy", _d2(ds, boxes=[np.array([[5, 5, 3, 3], [9, 9, 2, 2]], np.float32)] * n), "x y w h"),
        ("mmdet too short", [np.zeros((2, 5), np.float32)] * (n - 1), "belongs to another split"),
        ("mmdet width 6", [np.zeros((2, 6), np.float32)] * n, "expected [K, 4] or [K, 5]"),
        ("detector results", [[np.zeros((2, 5), np.float32)]] * n, "per-class results"),
    ]


def test_bad_files_are_one_clear_error_naming_the_file(synthetic_voc: Path, tmp_path: Path) -> None:
    ds = load_dataset(synthetic_voc, "test", warn=False)
    for name, data, message in _bad_files(ds):
        path = tmp_path / f"{name.replace(' ', '_')}.pkl"
        path.write_bytes(pickle.dumps(data))
        result = cli("propose", synthetic_voc, "--split", "test", "--import-proposals", path,
                     "--proposal-cache", tmp_path / f"cache-{name}")
        assert result.exit_code == 1, (name, result.output)
        flat = " ".join(result.output.split())
        assert str(path) in flat and message in flat, (name, result.output)
        assert "Traceback" not in result.output
    (tmp_path / "text.pkl").write_text("ids,boxes\n")
    result = cli("propose", synthetic_voc, "--split", "test", "--import-proposals", tmp_path / "text.pkl")
    assert result.exit_code == 1 and "not a readable pickle" in result.output and "Traceback" not in result.output

"""The one header check of fastrcnn's versioned files (checkpoints, proposal caches, detections files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastrcnn_cli.errors import CheckpointError, InputError
from fastrcnn_cli.versioned import FileFormat

FMT = FileFormat("fastrcnn-thing", 2, "fastrcnn thing file", hint="make one with `fastrcnn thing`",
                 newer_hint="or use another folder")


def test_its_own_format_up_to_the_newest_version_is_read() -> None:
    assert FMT.check({"format": "fastrcnn-thing", "format_version": 2}) == 2
    assert FMT.check({"format": "fastrcnn-thing", "format_version": 1, "extra": 0}) == 1
    assert FMT.check({"format": "fastrcnn-thing"}) == 0  # written before versions were recorded
    assert FMT.check(FMT.header()) == 2


@pytest.mark.parametrize(
    "header, message",
    [
        ({"format": "something-else", "format_version": 1}, "not a fastrcnn thing file (its format is 'something-else'"),
        ({"format_version": 1}, "not a fastrcnn thing file (no 'format: fastrcnn-thing' entry; make one with"),
        (["not", "a", "dict"], "no 'format: fastrcnn-thing' entry"),
        ({"format": "fastrcnn-thing", "format_version": "two"}, "format_version 'two' is not a whole number"),
        ({"format": "fastrcnn-thing", "format_version": True}, "is not a whole number"),
        ({"format": "fastrcnn-thing", "format_version": 3},
         "written by a newer fastrcnn (fastrcnn thing file format 3; this one reads up to 2); upgrade fastrcnn or use"),
    ],
)
def test_anything_else_is_refused_naming_the_file(header: object, message: str) -> None:
    with pytest.raises(InputError) as caught:
        FMT.check(header, Path("dir/thing.json"))
    assert str(caught.value).startswith("dir/thing.json: ") and message in str(caught.value)


def test_the_version_key_and_the_error_are_the_formats() -> None:
    fmt = FileFormat("fastrcnn-x", 1, "fastrcnn x", version_key="version", error=CheckpointError)
    assert fmt.header() == {"format": "fastrcnn-x", "version": 1}
    with pytest.raises(CheckpointError, match="newer"):
        fmt.check({"format": "fastrcnn-x", "version": 5})


def test_checkpoints_and_proposal_caches_use_it(tmp_path: Path) -> None:
    import torch

    from fastrcnn_cli.model.checkpoint import CHECKPOINT_FORMAT, read_checkpoint_file
    from fastrcnn_cli.proposals.cache import CACHE_FORMAT, META_FILE, ProposalCache

    newer = tmp_path / "newer.pt"
    torch.save({**CHECKPOINT_FORMAT.header(), "format_version": CHECKPOINT_FORMAT.version + 1}, newer)
    with pytest.raises(CheckpointError, match="written by a newer fastrcnn"):
        read_checkpoint_file(newer)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / META_FILE).write_text(json.dumps({**CACHE_FORMAT.header(), "format_version": 99}))
    with pytest.raises(InputError, match="proposal cache description format 99.*another proposal cache folder"):
        ProposalCache.read_meta(tmp_path / "cache")

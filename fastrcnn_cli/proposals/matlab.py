"""Importing the original Fast R-CNN's precomputed Selective Search boxes (MATLAB ``.mat`` files).

Two layouts exist, and they differ in coordinate order *and* origin:

* **per data set** (``data/selective_search_data/voc_2007_trainval.mat`` and friends, made with R-CNN's
  ``selective_search_boxes.m``): a cell array ``boxes`` with one entry per image, in the split's order
  (optionally a cell array ``images`` of ids), each entry ``[N, 4]`` as ``y1 x1 y2 x2``, **1-based**
  (MATLAB) inclusive pixels. The original converts them with ``boxes[:, (1, 0, 3, 2)] - 1``
  (``datasets/pascal_voc.py``), and so does :func:`convert`.
* **per image** (the demo's ``data/demo/000004_boxes.mat``): a numeric ``[N, 4]`` array ``boxes`` as
  ``x1 y1 x2 y2``, **0-based** inclusive: already our convention.

``layout="auto"`` tells them apart by structure (a cell array is a per-data-set file, a numeric array a
per-image file); ``"yxyx1"`` or ``"xyxy0"`` force a layout. After conversion every file is checked
against the image size: boxes that reach outside the image by more than a pixel mean the layout is wrong,
and the error says so instead of silently clipping garbage. Imported boxes are clipped, exact
duplicates dropped (order kept) and empty boxes (x2 < x1) dropped; nothing else is filtered.

MATLAB v7.3 files (HDF5) are not readable by scipy; re-save them in MATLAB with ``save(..., '-v7')``.
scipy is only needed for this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastrcnn_cli.errors import InputError
from fastrcnn_cli.proposals.cache import save_imported
from fastrcnn_cli.proposals.selective_search import clip_boxes, unique_boxes

if TYPE_CHECKING:
    from fastrcnn_cli.data.voc import ImageRecord

LAYOUTS = ("auto", "xyxy0", "yxyx1")
#: share of boxes allowed to reach (more than a pixel) outside the image before the layout is called wrong
_OUTSIDE_TOLERANCE = 0.0


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy is a dependency
        raise InputError("importing .mat files needs scipy (pip install scipy)", path) from None
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise InputError(
            "a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB with save(..., '-v7')", path
        ) from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many kinds for a bad file
        raise InputError(f"not a readable MATLAB .mat file ({exc.__class__.__name__}: {exc})", path) from None


def _variable(mat: dict[str, Any], name: str, path: Path) -> Any:
    if name not in mat:
        names = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise InputError(f"no variable {name!r} in this .mat file (it has: {names})", path)
    return mat[name]


def convert(raw: np.ndarray, layout: str) -> np.ndarray:
    """Raw ``[N, 4]`` numbers in ``layout`` -> our (x1, y1, x2, y2) 0-based inclusive, float64."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        return np.zeros((0, 4))
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise ValueError(f"expected an [N, 4] array of boxes, got shape {raw.shape}")
    if layout == "yxyx1":
        return raw[:, (1, 0, 3, 2)] - 1.0
    if layout == "xyxy0":
        return raw.copy()
    raise ValueError(f"unknown layout {layout!r} (choose from {LAYOUTS})")


def _other(layout: str) -> str:
    return "xyxy0" if layout == "yxyx1" else "yxyx1"


def check_and_clean(
    boxes: np.ndarray, size: tuple[int, int] | None, layout: str | None, where: str, path: Path | None = None
) -> np.ndarray:
    """Check converted boxes against the image size (wrong layout -> clear error); clip, drop duplicates.

    The same rules for every proposal file (.mat and .npy): NaN or infinite coordinates are refused, naming
    the file; boxes reaching outside the image are clipped when they are few and refused when they are many
    (a wrong layout). ``layout`` None: a file without a layout choice (.npy), so no layout hint."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    broken = ~np.isfinite(boxes).all(axis=1)
    if broken.any():
        raise InputError(
            f"{where}: {int(broken.sum())} of {len(boxes)} boxes have NaN or infinite coordinates "
            f"(e.g. x1 y1 x2 y2 = {boxes[broken][0].tolist()})",
            path,
        )
    if size is not None and len(boxes):
        w, h = size
        outside = (
            (boxes[:, 0] < -1) | (boxes[:, 1] < -1) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
        )
        if outside.mean() > _OUTSIDE_TOLERANCE:
            worst = boxes[outside][0]
            hint = (
                f" after reading the file as {layout}); the coordinate layout is probably wrong: try the layout "
                f"{_other(layout)}"
                if layout is not None
                else "); boxes must be x1 y1 x2 y2, 0-based pixels of this image"
            )
            raise InputError(
                f"{where}: {int(outside.sum())} of {len(boxes)} boxes reach outside the {w} x {h} image "
                f"(e.g. x1 y1 x2 y2 = {worst.round(1).tolist()}{hint}",
                path,
            )
        boxes = clip_boxes(boxes, w, h)
    keep = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    return np.ascontiguousarray(unique_boxes(boxes[keep]), dtype=np.float32)


def load_proposal_file(
    path: str | Path, layout: str = "auto", image_size: tuple[int, int] | None = None, variable: str = "boxes"
) -> np.ndarray:
    """Import one per-image ``.mat`` file (the original's demo files): [N, 4] float32 in our convention.

    ``layout`` ``"auto"`` reads a numeric ``boxes`` array as ``x1 y1 x2 y2`` 0-based (the demo's layout).
    With ``image_size`` (width, height) the boxes are checked against the image and clipped.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise InputError(f"unknown .mat layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    value = _variable(_loadmat(path), variable, path)
    if isinstance(value, np.ndarray) and value.dtype == object:
        if value.size != 1:
            raise InputError(
                f"{variable!r} is a cell array of {value.size} entries: a per-data-set file; import it for the "
                "whole split of its data set (into a proposal cache), not for one image",
                path,
            )
        value = value.ravel()[0]
        layout = "yxyx1" if layout == "auto" else layout
    layout = "xyxy0" if layout == "auto" else layout
    try:
        boxes = convert(value, layout)
    except ValueError as exc:
        raise InputError(f"variable {variable!r}: {exc}", path) from None
    return check_and_clean(boxes, image_size, layout, "the boxes", path)


def _cell_list(value: Any) -> list[Any]:
    arr = np.asarray(value, dtype=object)
    return list(arr.ravel()) if arr.ndim else [arr.item()]


def _image_ids(mat: dict[str, Any]) -> list[str] | None:
    if "images" not in mat:
        return None
    ids = []
    for entry in _cell_list(mat["images"]):
        entry = np.asarray(entry)
        ids.append(str(entry.ravel()[0]) if entry.size else "")
    return ids


@dataclass
class MatImport:
    """Boxes read from a per-data-set file, matched to the split's images."""

    path: Path
    layout: str
    boxes: dict[str, np.ndarray]
    matched_by: str  #: "images variable" or "split order"
    extra_entries: int = 0  #: entries in the file for images not in the split (matched by id)
    problems: list[str] = field(default_factory=list)


def read_dataset_mat(
    path: str | Path,
    records: Sequence[ImageRecord],
    split_ids: Sequence[str] | None = None,
    layout: str = "auto",
    variable: str = "boxes",
) -> MatImport:
    """Read a per-data-set ``.mat`` file (cell array ``boxes``, one entry per image of the split).

    Entries are matched to images by the file's ``images`` variable when it has one, else by position in
    ``split_ids`` (the split file's order, which the original used; default: the records' ids). A count
    that does not match the split is an error (the file belongs to another split).
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise InputError(f"unknown .mat layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    mat = _loadmat(path)
    value = _variable(mat, variable, path)
    if isinstance(value, np.ndarray) and value.dtype != object:
        raise InputError(
            f"{variable!r} is one numeric array, not a cell array: a per-image file "
            "(import it for its one image, or put one <id>.mat per image in a "
            "folder and give the folder)",
            path,
        )
    entries = _cell_list(value)
    layout_used = "yxyx1" if layout == "auto" else layout
    file_ids = _image_ids(mat)
    split_ids = list(split_ids) if split_ids is not None else [r.id for r in records]
    if file_ids is not None:
        if len(file_ids) != len(entries):
            raise InputError(
                f"'images' lists {len(file_ids)} ids but {variable!r} has {len(entries)} entries", path
            )
        by_id = dict(zip(file_ids, entries))
        matched_by = "images variable"
    else:
        if len(entries) != len(split_ids):
            raise InputError(
                f"{variable!r} has {len(entries)} entries but the split lists {len(split_ids)} images; the "
                "per-data-set files have one entry per image in split order, so this file belongs to "
                "another split (e.g. voc_2007_test.mat goes with the split test)",
                path,
            )
        by_id = dict(zip(split_ids, entries))
        matched_by = "split order"
    result = MatImport(path=path, layout=layout_used, boxes={}, matched_by=matched_by)
    wanted = {r.id for r in records}
    result.extra_entries = len([i for i in by_id if i not in wanted])
    for record in records:
        if record.id not in by_id:
            result.problems.append(f"{record.id}: no entry in the file")
            continue
        try:
            boxes = convert(by_id[record.id], layout_used)
        except ValueError as exc:
            result.problems.append(f"{record.id}: {exc}")
            continue
        result.boxes[record.id] = check_and_clean(
            boxes, (record.width, record.height), layout_used, f"entry for image {record.id}", path
        )
    return result


def read_image_mats(folder: str | Path, records: Sequence[ImageRecord], layout: str = "auto") -> MatImport:
    """Read a folder of per-image files, ``<id>_boxes.mat`` (the demo's naming) or ``<id>.mat``."""
    folder = Path(folder)
    result = MatImport(path=folder, layout=layout, boxes={}, matched_by="file names")
    for record in records:
        candidates = [folder / f"{record.id}_boxes.mat", folder / f"{record.id}.mat"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            result.problems.append(f"{record.id}: no {candidates[0].name} or {candidates[1].name}")
            continue
        result.boxes[record.id] = load_proposal_file(found, layout, (record.width, record.height))
    return result




def import_mat(
    source: str | Path,
    records: Sequence[ImageRecord],
    cache_dir: Path,
    *,
    split_ids: Sequence[str] | None = None,
    layout: str = "auto",
    dataset_root: Path | None = None,
) -> tuple[MatImport, Path]:
    """Import a per-data-set ``.mat`` file, or a folder of per-image ones, into a proposal cache folder.

    The cache records the source file and its SHA-256; importing the same file again into it is
    idempotent, a different file is refused (:class:`~fastrcnn_cli.proposals.cache.CacheMismatchError`).
    Returns what was read and the cache folder.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        imported = read_image_mats(source, records, layout)
    else:
        imported = read_dataset_mat(source, records, split_ids, layout)
    folder = save_imported(cache_dir, dataset_root, source, records, imported.boxes,
                           imported_layout=imported.layout, imported_matched_by=imported.matched_by)
    return imported, folder

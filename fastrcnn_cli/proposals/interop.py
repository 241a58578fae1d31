"""Proposal files of other detectors, in and out: Detectron2's and MMDetection's precomputed proposals.

Formats
-------
**Detectron2** (``DATASETS.PROPOSAL_FILES_TRAIN/TEST``, read by ``load_proposals_into_dataset``; its COCO
evaluator writes one as ``box_proposals.pkl``): a pickled dict

    ``ids``                list of image ids: int (a COCO file's image ``id``) or str (VOC's ids);
                           Detectron1's ``indexes`` is read as ``ids``
    ``boxes``              list of [K, 4] float arrays, one per id, in ``bbox_mode``
    ``objectness_logits``  list of [K] arrays (Detectron1's ``scores`` is read as ``objectness_logits``)
    ``bbox_mode``          optional: 0 XYXY_ABS (the default) or 1 XYWH_ABS (``x y w h``); the relative and
                           rotated modes are refused

Detectron2 sorts an image's proposals by decreasing logit when it loads them (then keeps the first
``proposal_topk``); so does the import here, with a stable sort (ties keep the file's order). Ids are matched
as Detectron2 matches them, by ``str(id)``: an int id to the COCO image ``id`` of a COCO data set (the record's
``source_id``), anything else to the image id (VOC's id, a COCO or YOLO file name without its suffix).

**MMDetection 2.x** (a data set's ``proposal_file``, read by ``CustomDataset.load_proposals`` and used in file
order by ``LoadProposals``; ``tools/test.py --out`` of an RPN model writes one): a pickled list with one
[K, 5] (``x1 y1 x2 y2 score``) or [K, 4] array per image, in the data set's order, which is the order of its
annotation file (VOC: the split file; COCO: the JSON's ``images``) before MMDetection drops images that are
too small or have no objects. There are no ids: entry ``i`` is image ``i`` of the split's file
(:func:`fastrcnn_cli.data.formats.read_split_ids`), so the file must have exactly one entry per image of one
split. The import keeps each image's boxes in the file's order. (MMDetection 3.x keeps proposals as mmengine
objects, which are code, not data: refused.)

**.mat** (the original Fast R-CNN's per-data-set file, :mod:`.matlab`): the export writes ``boxes`` (a cell
array, ``y1 x1 y2 x2``, 1-based) and ``images`` (the ids, by which the importer matches them); importing a
``.mat`` file hands over to :func:`fastrcnn_cli.proposals.matlab.import_mat`.

The format of a file to import is read from its content (:func:`is_mat_file`, :func:`read_proposal_file`): a MATLAB header is a
``.mat`` file; a pickled dict is Detectron2's, a pickled list MMDetection's.

Boxes
-----
Both tools measure boxes in continuous pixel coordinates, as COCO does (:mod:`fastrcnn_cli.data.box_formats`):
the image spans ``[0, W] x [0, H]`` and pixel ``i`` covers ``[i, i + 1)``. Our boxes are 0-based *inclusive*
pixel indices (:mod:`fastrcnn_cli.boxes`), so, in :func:`to_continuous` and :func:`from_continuous` and
nowhere else,

    (X1, Y1, X2, Y2) = (x1, y1, x2 + 1, y2 + 1)          (x1, y1, x2, y2) = (X1, Y1, X2 - 1, Y2 - 1)

(Detectron2's XYWH_ABS ``x y w h`` is ``X1 = x, X2 = x + w``.) Both are computed in float64. A float32 value
``X`` of a file comes back as ``x = X - 1``, which is exactly a float32 whenever ``X >= 0`` (subtracting 1
never needs more bits); the export writes float32 boxes when ``x + 1`` holds ``x`` exactly (every Selective
Search box is whole pixels; every box imported from float32 is) and float64 for an image where it would
not, so an export read back by the import gives the very same float32 boxes.

Scores
------
The proposal cache keeps an imported file's scores (``scores`` in each cache entry,
:func:`fastrcnn_cli.proposals.cache.write_entry`) and the export writes them back. Selective Search has no
scores, only an order (``top`` keeps the first boxes): the export writes the rank as the score,
``(K - i) / K`` for the ``i``-th of ``K`` boxes (1 for the first, strictly decreasing in float32 for any
``K`` below 10^6), so both tools, which sort by score (Detectron2 when it loads, MMDetection's recall
evaluation), keep the order.

Import checks
-------------
A file that is not what it claims is one :class:`~fastrcnn_cli.errors.InputError` naming it and the problem:
a pickle that asks for code (:func:`load_pickle`), the wrong type, a missing key, lists of different lengths,
an entry that is not an [K, 4] / [K, 5] array of numbers, scores that do not match the boxes, NaN or infinite
numbers, repeated ids, ids of which none is an image of the split, an MMDetection list whose length is not the
split's. Images of the split missing from the file, and entries for images not in the split, are listed
(as for ``.mat`` files). Each image's boxes are then checked against its size as ``.mat`` boxes are: boxes
reaching more than a pixel outside the image mean another image's (or the resized image's) pixels, more than
half the boxes empty (``X2 < X1``) mean ``x y w h`` read as corners; both are refused. Finally boxes are
clipped to the image, empty and repeated boxes dropped, the order kept; an image left without boxes gets
none in the cache (and is listed).

Loading pickles
---------------
Proposal files are data, and a pickle can run any code while it loads. :func:`load_pickle` therefore
resolves only the globals that lists, dicts, numbers, strings and NumPy arrays need (:data:`ALLOWED_GLOBALS`:
NumPy's array, dtype and scalar reconstructors, ``_codecs.encode`` of protocol 0-2 bytes, ``set``,
``frozenset``, ``bytearray``, and ``numpy.frombuffer`` / ``reshape`` / ``zeros``, which the export uses), plus
Detectron2's ``BoxMode`` read as its integer value; any other global is refused before it is looked up.

The export pickles with protocol 4, and writes arrays through public NumPy functions
(``numpy.reshape(numpy.frombuffer(bytearray(...), dtype), shape)``; ``numpy.zeros`` for empty ones), so
NumPy 1.x reads the files, which it cannot when NumPy 2 pickles an array the usual way (its
``numpy._core`` module does not exist in 1.x). Files are written atomically (:func:`fastrcnn_cli.io.atomic_write`).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastrcnn_cli.errors import FastRCNNError, InputError
from fastrcnn_cli.io import atomic_write, os_reason
from fastrcnn_cli.proposals.cache import ProposalCache, save_imported
from fastrcnn_cli.proposals.selective_search import clip_boxes

if TYPE_CHECKING:
    from fastrcnn_cli.data.records import ImageRecord

DETECTRON2 = "detectron2"
MMDET = "mmdet"
MAT = "mat"
#: the formats :func:`export_proposals` writes and :func:`import_proposals` reads
FORMATS: tuple[str, ...] = (DETECTRON2, MMDET, MAT)
#: pickle protocol of the files written: read by every Python 3 (Detectron2 and MMDetection 2.x included)
PICKLE_PROTOCOL = 4
#: Detectron2's ``BoxMode`` values (``detectron2.structures.BoxMode``); only the first two are read
BOX_MODES = {0: "XYXY_ABS", 1: "XYWH_ABS", 2: "XYXY_REL", 3: "XYWH_REL", 4: "XYWHA_ABS"}
XYXY_ABS = 0
XYWH_ABS = 1

#: every global a proposal pickle may name (module, name): what lists, dicts, numbers, strings and NumPy arrays
#: need, in NumPy 1.x's and 2.x's module names, and the public NumPy functions the export writes
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy", "frombuffer"), ("numpy", "reshape"), ("numpy", "zeros"),
    ("_codecs", "encode"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
})
_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
#: Python 2 module names of the allowed globals (Detectron1's files): as Python 3 names them
_PY2_MODULES = {"__builtin__": "builtins"}


def _box_mode_value(value: Any) -> int:
    """Detectron2's ``BoxMode(value)`` while loading a pickle: just the integer (the enum itself is code)."""
    return int(value)


#: globals read as something else: a pickled Detectron2 ``BoxMode`` member is its integer value
_STAND_INS = {("detectron2.structures.boxes", "BoxMode"): _box_mode_value}


# ---------------------------------------------------------------------------------------------------------
# boxes: the one conversion


def to_continuous(boxes: np.ndarray) -> np.ndarray:
    """Our 0-based inclusive ``x1 y1 x2 y2`` -> continuous ``X1 Y1 X2 Y2`` (Detectron2's XYXY_ABS,
    MMDetection's): ``(x1, y1, x2 + 1, y2 + 1)``, float64 [N, 4]."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    out[:, 2:] += 1.0
    return out


def from_continuous(boxes: np.ndarray) -> np.ndarray:
    """Continuous ``X1 Y1 X2 Y2`` -> our 0-based inclusive corners: ``(X1, Y1, X2 - 1, Y2 - 1)``, float64 [N, 4]."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    out[:, 2:] -= 1.0
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Detectron2's XYWH_ABS ``x y w h`` -> continuous ``X1 Y1 X2 Y2`` = ``(x, y, x + w, y + h)``."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    out[:, 2:] += out[:, :2]
    return out


def rank_scores(count: int) -> np.ndarray:
    """The score written for boxes that have none (Selective Search's): ``(K - i) / K``, float32, strictly
    decreasing, so a tool that sorts by score keeps the boxes' order."""
    return ((count - np.arange(count, dtype=np.float64)) / max(count, 1)).astype(np.float32)


def _file_boxes(ours: np.ndarray) -> np.ndarray:
    """Our float32 boxes as a file's continuous boxes: float32 when that loses nothing, else float64."""
    continuous = to_continuous(ours)
    narrow = continuous.astype(np.float32)
    if np.array_equal(from_continuous(narrow).astype(np.float32), np.asarray(ours, np.float32)):
        return narrow
    return continuous


# ---------------------------------------------------------------------------------------------------------
# reading pickles safely


class _DataUnpickler(pickle.Unpickler):
    """An unpickler that builds data only: any global outside :data:`ALLOWED_GLOBALS` is refused."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles (Detectron1's), as Detectron2 reads them
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _STAND_INS:
            return _STAND_INS[(module, name)]
        if (module, name) not in ALLOWED_GLOBALS:
            hint = ""
            if module.split(".")[0] in ("mmengine", "mmdet", "mmcv", "torch"):
                hint = (" (MMDetection 3.x keeps proposals as mmengine objects and torch tensors: save them as a "
                        "list of NumPy [K, 5] arrays, the MMDetection 2.x proposal file)")
            raise InputError(
                f"refused to load: the pickle asks for {module}.{name}, which is code; a proposal file may hold "
                f"only lists, dicts, numbers, strings and NumPy arrays{hint}",
                self._path,
            )
        if module.startswith("numpy.core.") and _NUMPY_2:
            module = "numpy._core." + module[len("numpy.core."):]
        elif module.startswith("numpy._core.") and not _NUMPY_2:
            module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise InputError("refused to load: the pickle refers to outside objects (a persistent id)", self._path)


def load_pickle(path: str | Path) -> Any:
    """Load a user's pickle as data only (see the module's notes): :class:`InputError` naming the file when it
    is missing, not a pickle, or asks for anything but containers, numbers, strings and NumPy arrays."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a file", path)
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, path).load()
    except FastRCNNError:
        raise
    except OSError as exc:
        raise InputError(f"cannot be read ({os_reason(exc)})", path) from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails in many ways; all mean "not ours"
        raise InputError(f"not a readable pickle ({type(exc).__name__}: {exc})", path) from None


# ---------------------------------------------------------------------------------------------------------
# reading and checking a file


@dataclass
class ProposalFile:
    """A Detectron2 or MMDetection proposal file, read and checked: per entry, the boxes in our convention
    (float64 [K, 4], in the order the tool uses them) and their scores."""

    path: Path
    format: str  #: :data:`DETECTRON2` or :data:`MMDET`
    boxes: list[np.ndarray]
    scores: list[np.ndarray | None]
    ids: list[int | str] | None = None  #: Detectron2's ids; None for MMDetection (matched by position)
    bbox_mode: int | None = None  #: Detectron2's, as read (the boxes are converted already)

    def __len__(self) -> int:
        return len(self.boxes)


def is_mat_file(path: str | Path) -> bool:
    """Whether ``path`` is a MATLAB file (its header says so); the other formats are told apart by
    :func:`read_proposal_file` (a pickled dict: Detectron2, a list: MMDetection)."""
    try:
        with open(path, "rb") as f:
            return f.read(6) == b"MATLAB"
    except OSError:
        return False


def read_proposal_file(path: str | Path) -> ProposalFile:
    """Read a Detectron2 (a pickled dict) or MMDetection (a pickled list) proposal file, checked.

    Raises :class:`InputError` naming the file and the problem (see the module's notes)."""
    path = Path(path)
    data = load_pickle(path)
    if isinstance(data, dict):
        return _read_detectron2(data, path)
    if isinstance(data, (list, tuple)):
        return _read_mmdet(list(data), path)
    kind = type(data).__name__
    raise InputError(
        f"the pickle holds {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not proposals: Detectron2's file is a dict "
        "with 'ids', 'boxes' and "
        "'objectness_logits', MMDetection's a list with one [K, 5] array per image",
        path,
    )


def _entries(value: Any, key: str, path: Path) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return list(value)
    raise InputError(f"{key!r} is a {type(value).__name__}, not a list (one entry per image)", path)


def _numbers(value: Any, what: str, path: Path) -> np.ndarray:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], np.ndarray):
        raise InputError(
            f"{what} is a list of {len(value)} arrays, not one array: a detector's per-class results "
            "(what MMDetection's test script saves for a detector), not an RPN's proposals?",
            path,
        )
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - ragged nested lists and the like
        raise InputError(f"{what} is not an array of numbers", path) from None
    if array.dtype == bool or array.dtype.kind not in "iuf":
        raise InputError(f"{what} is not an array of numbers (it holds {array.dtype})", path)
    return array.astype(np.float64)


def _box_array(value: Any, widths: tuple[int, ...], what: str, path: Path) -> np.ndarray:
    array = _numbers(value, what, path)
    if array.size == 0:
        return np.zeros((0, widths[-1]))
    if array.ndim != 2 or array.shape[1] not in widths:
        expected = " or ".join(f"[K, {w}]" for w in widths)
        raise InputError(f"{what} has shape {tuple(array.shape)}, expected {expected}", path)
    if not np.isfinite(array).all():
        raise InputError(f"{what} holds NaN or infinite numbers", path)
    return array


def _image_id(value: Any, index: int, path: Path) -> int | str:
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"'ids' entry {index} is {value!r}, not an image id (an int or a str)", path)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise InputError(f"'ids' entry {index} is a {type(value).__name__}, not an image id (an int or a str)", path)


def _key(data: dict[Any, Any], names: tuple[str, ...], path: Path) -> Any:
    for name in names:
        if name in data:
            return data[name]
    keys = ", ".join(repr(k) for k in data) or "none"
    aliases = " (or " + ", ".join(repr(n) for n in names[1:]) + ")" if len(names) > 1 else ""
    raise InputError(
        f"no {names[0]!r}{aliases} key: not a Detectron2 proposal file, whose dict has 'ids', 'boxes' and "
        f"'objectness_logits' (this one has: {keys})",
        path,
    )


def _read_detectron2(data: dict[Any, Any], path: Path) -> ProposalFile:
    raw_ids = _entries(_key(data, ("ids", "indexes"), path), "ids", path)
    raw_boxes = _entries(_key(data, ("boxes",), path), "boxes", path)
    logits_key = "objectness_logits" if "objectness_logits" in data else "scores"
    raw_scores = _entries(_key(data, ("objectness_logits", "scores"), path), logits_key, path)
    if not len(raw_ids) == len(raw_boxes) == len(raw_scores):
        raise InputError(
            f"'ids', 'boxes' and {logits_key!r} must have one entry per image, but have {len(raw_ids)}, "
            f"{len(raw_boxes)} and {len(raw_scores)}",
            path,
        )
    mode = data.get("bbox_mode", XYXY_ABS)
    if isinstance(mode, (bool, np.bool_)) or not isinstance(mode, (int, np.integer)):
        raise InputError(f"'bbox_mode' is {mode!r}, not a Detectron2 BoxMode number (0 XYXY_ABS or 1 XYWH_ABS)", path)
    mode = int(mode)
    if mode not in (XYXY_ABS, XYWH_ABS):
        name = BOX_MODES.get(mode, "unknown")
        raise InputError(
            f"'bbox_mode' is {mode} ({name}): only 0 (XYXY_ABS) and 1 (XYWH_ABS), absolute pixels, are read", path
        )
    ids = [_image_id(v, i, path) for i, v in enumerate(raw_ids)]
    seen: dict[str, int] = {}
    for i, image_id in enumerate(ids):
        if str(image_id) in seen:
            raise InputError(f"image id {image_id!r} appears twice in 'ids' (entries {seen[str(image_id)]} and {i})",
                             path)
        seen[str(image_id)] = i
    boxes, scores = [], []
    for i, (image_id, b, s) in enumerate(zip(ids, raw_boxes, raw_scores)):
        what = f"entry {i} (image id {image_id!r})"
        array = _box_array(b, (4,), f"{what}: 'boxes'", path)
        logits = _numbers(s, f"{what}: {logits_key!r}", path).reshape(-1) if np.size(s) else np.zeros(0)
        if len(logits) != len(array):
            raise InputError(f"{what}: {len(array)} boxes but {len(logits)} {logits_key}", path)
        if not np.isfinite(logits).all():
            raise InputError(f"{what}: {logits_key!r} holds NaN or infinite numbers", path)
        order = np.argsort(-logits, kind="stable")  # as Detectron2 sorts them on loading; ties keep the file order
        continuous = xywh_to_xyxy(array) if mode == XYWH_ABS else array
        boxes.append(from_continuous(continuous)[order])
        scores.append(logits[order].astype(np.float32))
    return ProposalFile(path=path, format=DETECTRON2, boxes=boxes, scores=scores, ids=ids, bbox_mode=mode)


def _read_mmdet(data: list[Any], path: Path) -> ProposalFile:
    boxes, scores = [], []
    for i, entry in enumerate(data):
        array = _box_array(entry, (4, 5), f"entry {i}", path)
        boxes.append(from_continuous(array[:, :4]))
        scores.append(array[:, 4].astype(np.float32) if array.shape[1] == 5 else None)
    return ProposalFile(path=path, format=MMDET, boxes=boxes, scores=scores)


# ---------------------------------------------------------------------------------------------------------
# matching a file to a data set's images


@dataclass
class ProposalImport:
    """Boxes of a proposal file matched to a split's images, checked and cleaned (float32, our convention)."""

    path: Path
    format: str
    boxes: dict[str, np.ndarray]
    scores: dict[str, np.ndarray | None]
    matched_by: str  #: "ids" or "split order"
    extra_entries: int = 0  #: entries for images that are not in the split
    problems: list[str] = field(default_factory=list)  #: images without boxes, one line each


def match_to_records(
    proposals: ProposalFile, records: Sequence[ImageRecord], split_ids: Sequence[str] | None = None
) -> ProposalImport:
    """Match a file's entries to the images of a split and clean each image's boxes (see the module's notes).

    Detectron2's entries are matched by id; MMDetection's by position in ``split_ids`` (the split file's
    order, default: the records' ids), whose length the file must have."""
    path = proposals.path
    by_position: list[tuple[int, ImageRecord | None]] = []
    if proposals.format == MMDET:
        order = list(split_ids) if split_ids is not None else [r.id for r in records]
        if len(proposals) != len(order):
            raise InputError(
                f"an MMDetection proposal file with {len(proposals)} entries, but the split lists {len(order)} "
                "images: it has one entry per image in the data set's order, so it belongs to another split or "
                "data set",
                path,
            )
        by_id = {r.id: r for r in records}
        by_position = [(i, by_id.get(image_id)) for i, image_id in enumerate(order)]
        matched_by = "split order"
    else:
        assert proposals.ids is not None
        by_name = {r.id: r for r in records}
        by_coco_id = {r.source_id: r for r in records if r.source_id is not None}
        for i, image_id in enumerate(proposals.ids):
            if isinstance(image_id, int) and by_coco_id:
                by_position.append((i, by_coco_id.get(image_id)))
            else:
                by_position.append((i, by_name.get(str(image_id))))
        matched_by = "ids"
        if records and not any(r is not None for _, r in by_position):
            shown = ", ".join(repr(v) for v in proposals.ids[:3]) or "none"
            ours = ", ".join(repr(r.source_id if by_coco_id else r.id) for r in list(records)[:3])
            raise InputError(
                f"none of its {len(proposals)} image ids is an image of this split (the file has {shown}, ...; "
                f"the split has {ours}, ...): the file belongs to another data set",
                path,
            )
    result = ProposalImport(path=path, format=proposals.format, boxes={}, scores={}, matched_by=matched_by)
    found: set[str] = set()
    for i, record in by_position:
        if record is None:
            result.extra_entries += 1
            continue
        found.add(record.id)
        shown_id = proposals.ids[i] if proposals.ids is not None else record.id
        where = f"entry {i} (image {shown_id!r}, {record.width} x {record.height})"
        boxes, scores = clean_boxes(proposals.boxes[i], proposals.scores[i], (record.width, record.height), where,
                                    path, proposals.format)
        if len(boxes) == 0:
            result.problems.append(f"{record.id}: no boxes in the file")
            continue
        result.boxes[record.id] = boxes
        result.scores[record.id] = scores
    for record in records:
        if record.id not in found:
            result.problems.append(f"{record.id}: no entry in the file")
    return result


def clean_boxes(
    boxes: np.ndarray, scores: np.ndarray | None, size: tuple[int, int], where: str, path: Path, fmt: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image's boxes (ours, float64) checked against its ``size`` (width, height), clipped, empty and
    repeated boxes dropped (the first kept, order kept): float32 boxes and their scores."""
    w, h = size
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), None if scores is None else np.zeros(0, np.float32)
    outside = (boxes[:, 0] < -1) | (boxes[:, 1] < -1) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
    if outside.any():
        shown = to_continuous(boxes[outside][:1])[0].round(1).tolist()
        raise InputError(
            f"{where}: {int(outside.sum())} of {len(boxes)} boxes reach outside the image (e.g. x1 y1 x2 y2 = "
            f"{shown}); proposals must be in pixels of the original image (not of the resized image a network "
            "saw), and the entries must belong to this data set's images",
            path,
        )
    empty = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if len(boxes) > 1 and empty.mean() > 0.5:
        hint = ("x1 y1 x2 y2 read as x y w h? Detectron2's 'bbox_mode' says which (0 XYXY_ABS, 1 XYWH_ABS)"
                if fmt == DETECTRON2 else "MMDetection's boxes are x1 y1 x2 y2, not x y w h")
        raise InputError(f"{where}: {int(empty.sum())} of {len(boxes)} boxes have x2 < x1 or y2 < y1 ({hint})",
                         path)
    boxes = clip_boxes(boxes, w, h)
    keep = np.flatnonzero((boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))
    if len(keep) > 1:
        _, first = np.unique(boxes[keep], axis=0, return_index=True)
        keep = keep[np.sort(first)]
    kept = np.ascontiguousarray(boxes[keep], dtype=np.float32)
    return kept, None if scores is None else np.ascontiguousarray(np.asarray(scores)[keep], dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# import into a proposal cache


def import_proposals(
    source: str | Path,
    records: Sequence[ImageRecord],
    cache_dir: Path,
    *,
    split_ids: Sequence[str] | None = None,
    dataset_root: Path | None = None,
) -> tuple[ProposalImport, Path]:
    """Import a Detectron2 or MMDetection proposal file into a proposal cache folder, which ``train``,
    ``evaluate`` and ``detect`` then read like any other (its boxes, and their scores for a later export).

    The cache records the file and its SHA-256: importing the same file again is idempotent, another file
    is refused (:class:`~fastrcnn_cli.proposals.cache.CacheMismatchError`). (A ``.mat`` file goes to
    :func:`fastrcnn_cli.proposals.matlab.import_mat`.) Returns what was imported and the cache folder.
    """
    source = Path(source).expanduser()
    proposals = read_proposal_file(source)
    imported = match_to_records(proposals, records, split_ids)
    bbox_mode = {"imported_bbox_mode": BOX_MODES[proposals.bbox_mode]} if proposals.bbox_mode is not None else {}
    folder = save_imported(cache_dir, dataset_root, source, records, imported.boxes, imported.scores,
                           imported_format=proposals.format, imported_matched_by=imported.matched_by, **bbox_mode)
    return imported, folder


# ---------------------------------------------------------------------------------------------------------
# export from a proposal cache


@dataclass(frozen=True)
class ProposalExport:
    """What :func:`export_proposals` wrote."""

    path: Path
    format: str
    images: int  #: entries written
    boxes: int
    empty: tuple[str, ...]  #: images written without boxes (none in the cache) or, for .mat, left out
    ranked: int  #: images whose scores are their rank (boxes without scores: Selective Search's)

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "format": self.format, "images": self.images, "boxes": self.boxes,
                "without_proposals": list(self.empty), "rank_scores": self.ranked}


class _Buffer:
    """Pickles as ``numpy.frombuffer(bytearray(data), dtype)``: a writable 1-D array, in any NumPy."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, ...]:
        return np.frombuffer, (bytearray(self.array.tobytes()), self.array.dtype.str)


class _PortablePickler(pickle.Pickler):
    """Pickles NumPy arrays with public NumPy functions only (see the module's notes)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            array = np.ascontiguousarray(obj)
            if array.size == 0:
                return np.zeros, (array.shape, array.dtype.str)
            return np.reshape, (_Buffer(array.reshape(-1)), array.shape)
        return NotImplemented


def portable_pickle(obj: Any) -> bytes:
    """``obj`` pickled with protocol :data:`PICKLE_PROTOCOL`, arrays readable by NumPy 1.x and 2.x."""
    buffer = io.BytesIO()
    _PortablePickler(buffer, protocol=PICKLE_PROTOCOL).dump(obj)
    return buffer.getvalue()


def export_proposals(
    path: str | Path,
    fmt: str,
    records: Sequence[ImageRecord],
    cache_dir: Path,
    *,
    split_ids: Sequence[str] | None = None,
) -> ProposalExport:
    """Write the proposals of ``records`` held in the cache ``cache_dir`` as a ``fmt`` file (atomically).

    - :data:`DETECTRON2`: one entry per record, in order; ids are COCO image ids (int) for a COCO data set,
      else the image ids; an image without proposals gets empty arrays (Detectron2 needs every image).
    - :data:`MMDET`: one entry per id of ``split_ids`` (the split file's order; default the records'), [K, 5]
      with the score; images without proposals (or left out by validation) get an empty [0, 5] array.
    - :data:`MAT`: the original's per-data-set layout with an ``images`` variable; images without proposals
      are left out.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown proposal format {fmt!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    cache_dir = Path(cache_dir)
    meta = ProposalCache.read_meta(cache_dir)
    if meta is None:
        raise InputError("no proposal cache here (nothing to export)", cache_dir)
    cache = ProposalCache(cache_dir, meta)
    entries: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for record in records:
        boxes = cache.load(record.id, (record.width, record.height))
        if boxes is not None and len(boxes):
            scores = cache.load_scores(record.id)
            entries[record.id] = (boxes, scores if scores is not None and len(scores) == len(boxes) else None)
    ranked = sum(1 for _, s in entries.values() if s is None)

    def scored(image_id: str) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = entries[image_id]
        return _file_boxes(boxes), scores if scores is not None else rank_scores(len(boxes))

    if fmt == DETECTRON2:
        ids: list[int | str] = []
        file_boxes, logits = [], []
        for record in records:
            ids.append(int(record.source_id) if record.source_id is not None else record.id)
            b, s = scored(record.id) if record.id in entries else (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
            file_boxes.append(b)
            logits.append(s)
        data = portable_pickle({"ids": ids, "boxes": file_boxes, "objectness_logits": logits, "bbox_mode": XYXY_ABS})
        written = [r.id for r in records]
    elif fmt == MMDET:
        written = list(split_ids) if split_ids is not None else [r.id for r in records]
        arrays = []
        for image_id in written:
            if image_id in entries:
                b, s = scored(image_id)
                arrays.append(np.concatenate([b, s[:, None].astype(b.dtype)], axis=1))
            else:
                arrays.append(np.zeros((0, 5), np.float32))
        data = portable_pickle(arrays)
    else:
        written = [r.id for r in records if r.id in entries]
        data = _mat_bytes(written, [entries[i][0] for i in written])
    atomic_write(path, lambda f: f.write(data))
    return ProposalExport(
        path=path,
        format=fmt,
        images=len(written),
        boxes=sum(len(entries[i][0]) for i in written if i in entries),
        empty=tuple(i for i in ([r.id for r in records] if fmt == MAT else written) if i not in entries),
        ranked=ranked,
    )


def _mat_bytes(ids: Sequence[str], boxes: Sequence[np.ndarray]) -> bytes:
    """The original's per-data-set .mat: ``boxes`` a 1 x N cell of ``y1 x1 y2 x2`` 1-based (float64, exact),
    ``images`` the N ids (:func:`fastrcnn_cli.proposals.matlab.read_dataset_mat` matches by them)."""
    import scipy.io

    cell = np.empty((1, len(boxes)), dtype=object)
    names = np.empty((len(ids), 1), dtype=object)
    for k, (image_id, b) in enumerate(zip(ids, boxes)):
        cell[0, k] = np.asarray(b, np.float64)[:, (1, 0, 3, 2)] + 1.0
        names[k, 0] = np.array([image_id])
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"boxes": cell, "images": names}, do_compression=True)
    return buffer.getvalue()

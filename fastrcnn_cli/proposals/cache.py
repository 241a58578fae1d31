"""The proposal cache: compute once, in parallel, resume after any interruption, reuse everywhere.

Layout of a cache folder (one per data set and settings; shared by all its splits)::

    proposals.json          how the boxes were made: source ("selective-search" or "imported"), the
                            ProposalSettings, OpenCV and fastrcnn versions, rand() seed, box convention
    boxes/<image id>.npz    one file per image: ``boxes`` float32 [N, 4] (x1, y1, x2, y2, 0-based inclusive
                            pixels of the original image, as in :mod:`fastrcnn_cli.boxes`), ``size``
                            int64 [2] (width, height of the image the boxes belong to), ``id`` (the image id),
                            and for boxes imported from a file with scores, ``scores`` float32 [N]

Every file is written atomically (:func:`fastrcnn_cli.io.atomic_write`: a temporary file in the same
folder, fsync, rename), by the worker process that computed it, as soon as it is done. A run killed at any
moment (Ctrl-C, ``kill -9``, power loss) therefore leaves only complete per-image files plus, at worst, a
stray ``.<name>.*.tmp`` file that later runs ignore and clean up; the next run computes only the images
without a file. No separate manifest is needed: the presence of a valid ``boxes/<id>.npz`` *is* the
record that an image is done, so there is nothing that can disagree with the files. Several runs may
share a folder at once: each file is complete or absent, and a per-image claim
(:mod:`fastrcnn_cli.proposals.claims`) makes them share the work instead of each computing every image.
A cache file that cannot be written (disk full, read-only folder) stops the run with one message naming
it; the images already written are kept. Worker processes die with their parent, ``kill -9`` included
(:mod:`fastrcnn_cli.proposals.lifetime`).

Checks on reuse: a folder whose ``proposals.json`` records other settings (mode, max side, top, min
size) or another source is refused with a message naming both and the way out (another cache folder or
deleting the folder); a different OpenCV or fastrcnn version is only a warning (the boxes stay valid; new
ones may differ slightly). A per-image file that cannot be read, or whose recorded image size differs
from the data set's (the image was replaced), is recomputed.

The default folder is **outside the data set** (which may be read-only, like ``../shared``):
``$FASTRCNN_CACHE_DIR/proposals/<data set>-<mode><max side>-<hash>/``, with ``$FASTRCNN_CACHE_DIR``
defaulting to ``$XDG_CACHE_HOME/fastrcnn`` or ``~/.cache/fastrcnn``; the hash covers the data set's
resolved path and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastrcnn_cli import progress
from fastrcnn_cli.errors import InputError, OutputError, SettingsError
from fastrcnn_cli.io import atomic_write, atomic_write_bytes, atomic_write_json
from fastrcnn_cli.proposals.selective_search import (
    RAND_SEED,
    ProposalSettings,
    Timing,
    opencv_version,
    proposals_for_file,
)
from fastrcnn_cli.versioned import FileFormat

if TYPE_CHECKING:
    from fastrcnn_cli.data.voc import ImageRecord, VOCDataset

FORMAT = "fastrcnn-proposals"
FORMAT_VERSION = 1
#: the header of ``proposals.json``, and its check
CACHE_FORMAT = FileFormat(FORMAT, FORMAT_VERSION, "fastrcnn proposal cache description",
                          newer_hint="or use another proposal cache folder")
META_FILE = "proposals.json"
BOXES_DIR = "boxes"
SOURCE_SS = "selective-search"
SOURCE_IMPORTED = "imported"
BOX_CONVENTION = "x1, y1, x2, y2: float32, 0-based, inclusive pixels of the original image"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")
_STALE_TMP_SECONDS = 600


def _is_temporary(name: str) -> bool:
    """A file :func:`fastrcnn_cli.io.atomic_write` is writing (or a killed run left)."""
    return name.startswith(".") and name.endswith(".tmp")


class CacheMismatchError(InputError):
    """A cache folder was made differently from what this run asks for."""


def _fastrcnn_version() -> str:
    from fastrcnn_cli import __version__

    return __version__


def cache_base_dir() -> Path:
    """``$FASTRCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastrcnn``, else ``~/.cache/fastrcnn``."""
    env = os.environ.get("FASTRCNN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fastrcnn"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_cache_dir(dataset_root: Path, settings: ProposalSettings) -> Path:
    """Where proposals of a data set are cached by default: never inside the data set folder."""
    root = Path(dataset_root).expanduser().resolve()
    name = f"{_slug(root.name)}-{settings.mode}{settings.max_side}-{_digest(str(root), settings.to_dict())}"
    return cache_base_dir() / "proposals" / name


def imported_cache_dir(dataset_root: Path, source_file: Path) -> Path:
    """Default folder for proposals imported from ``source_file`` (changes when that file changes)."""
    root = Path(dataset_root).expanduser().resolve()
    src = Path(source_file).expanduser().resolve()
    stat = src.stat() if src.exists() else None
    key = (str(root), str(src), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0)
    return cache_base_dir() / "proposals" / f"{_slug(root.name)}-imported-{_digest(*key)}"


def source_sha256(path: Path) -> str:
    """The SHA-256 of an imported proposal source: a file's bytes, or a folder's ``*.mat`` files (names and
    bytes, in name order)."""
    digest = hashlib.sha256()
    files = sorted(path.glob("*.mat")) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def save_imported(
    cache_dir: Path,
    dataset_root: Path | None,
    source: Path,
    records: Sequence[ImageRecord],
    boxes: dict[str, np.ndarray],
    scores: dict[str, np.ndarray] | None = None,
    **details: Any,
) -> Path:
    """Write proposals imported from ``source`` (a .mat, Detectron2 or MMDetection file) into a cache folder
    whose description records the file and its SHA-256 (:func:`source_sha256`) with ``details``: importing the
    same file again is idempotent, another one is refused (:class:`CacheMismatchError`). Returns the folder."""
    meta = make_meta(SOURCE_IMPORTED, None, dataset_root, imported_from=str(source.resolve()),
                     imported_sha256=source_sha256(source), **details)
    cache = ProposalCache.open(cache_dir, meta)
    sizes = {r.id: (r.width, r.height) for r in records}
    for image_id, image_boxes in boxes.items():
        cache.save(image_id, image_boxes, sizes[image_id], (scores or {}).get(image_id))
    return cache.path


def file_name(image_id: str) -> str:
    """The cache file name of an image id (ids that are not plain names get a hashed name)."""
    if _SAFE_ID.match(image_id):
        return f"{image_id}.npz"
    return f"~{_slug(image_id)[:60]}-{hashlib.sha256(image_id.encode()).hexdigest()[:16]}.npz"


def make_meta(
    source: str, settings: ProposalSettings | None, dataset_root: Path | None = None, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        **CACHE_FORMAT.header(),
        "source": source,
        "settings": settings.to_dict() if settings is not None else None,
        "box_convention": BOX_CONVENTION,
        "opencv": opencv_version(),
        "fastrcnn": _fastrcnn_version(),
        "rand_seed": RAND_SEED if source == SOURCE_SS else None,
        "dataset": str(dataset_root) if dataset_root is not None else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    return meta


def _describe_meta(meta: dict[str, Any]) -> str:
    if meta.get("source") == SOURCE_IMPORTED:
        return f"proposals imported from {meta.get('imported_from', 'a file')}"
    settings = meta.get("settings") or {}
    try:
        return "Selective Search, " + ProposalSettings.from_dict(settings).describe()
    except InputError:
        return f"Selective Search with settings {settings}"


def _same_origin(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("source") != b.get("source"):
        return False
    if a.get("source") == SOURCE_IMPORTED:
        return a.get("imported_sha256") == b.get("imported_sha256")
    return a.get("settings") == b.get("settings")


class ProposalCache:
    """One cache folder: ``proposals.json`` plus ``boxes/<id>.npz`` files."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta

    # -- opening -------------------------------------------------------------------------------------

    @staticmethod
    def read_meta(path: Path) -> dict[str, Any] | None:
        """The folder's ``proposals.json``, None if the folder has none. Raises on a foreign folder."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            # (another run creating the cache at this moment may have a temporary file here)
            if path.is_dir() and any(p for p in path.iterdir() if p.name != BOXES_DIR and not _is_temporary(p.name)):
                raise InputError(
                    f"not a fastrcnn proposal cache (no {META_FILE}) and not empty; choose another proposal cache "
                    "folder",
                    path,
                )
            return None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable proposal cache description ({exc}); delete the folder", meta_file) from None
        CACHE_FORMAT.check(meta, meta_file)
        return meta

    @classmethod
    def open(cls, path: Path, wanted: dict[str, Any], *, create: bool = True) -> ProposalCache:
        """Open (or create) a cache folder for proposals made as ``wanted`` (a :func:`make_meta` dict).

        Raises :class:`CacheMismatchError` when the folder holds proposals made differently.
        """
        path = Path(path).expanduser()
        meta = cls.read_meta(path)
        if meta is None:
            if not create:
                raise InputError("no proposal cache here", path)
            try:
                (path / BOXES_DIR).mkdir(parents=True, exist_ok=True)
                atomic_write_json(path / META_FILE, wanted)
            except OSError as exc:
                raise InputError(f"cannot create the proposal cache here ({exc.strerror or exc})", path) from None
            return cls(path, wanted)
        if not _same_origin(meta, wanted):
            raise CacheMismatchError(
                f"this proposal cache holds {_describe_meta(meta)}, but this run asks for "
                f"{_describe_meta(wanted)}. Use another proposal cache folder, or delete this one to recompute",
                path,
            )
        (path / BOXES_DIR).mkdir(parents=True, exist_ok=True)
        return cls(path, meta)

    def version_warning(self) -> str | None:
        """A warning when the cache was made by other OpenCV / fastrcnn versions than the running ones."""
        diffs = []
        if self.meta.get("source") == SOURCE_SS and self.meta.get("opencv") != opencv_version():
            diffs.append(f"OpenCV {self.meta.get('opencv')} (now {opencv_version()})")
        if self.meta.get("fastrcnn") != _fastrcnn_version():
            diffs.append(f"fastrcnn {self.meta.get('fastrcnn')} (now {_fastrcnn_version()})")
        if not diffs:
            return None
        return f"{self.path}: made with {', '.join(diffs)}; images computed now may differ slightly"

    @property
    def settings(self) -> ProposalSettings | None:
        s = self.meta.get("settings")
        return ProposalSettings.from_dict(s) if s else None

    @property
    def is_imported(self) -> bool:
        return self.meta.get("source") == SOURCE_IMPORTED

    # -- per-image files -----------------------------------------------------------------------------

    @property
    def boxes_dir(self) -> Path:
        return self.path / BOXES_DIR

    def file_for(self, image_id: str) -> Path:
        return self.boxes_dir / file_name(image_id)

    def file_names(self) -> set[str]:
        try:
            entries = os.scandir(self.boxes_dir)
            return {e.name for e in entries if e.name.endswith(".npz") and not e.name.startswith(".")}
        except FileNotFoundError:
            return set()

    def load(self, image_id: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """The boxes of one image, or None when absent, unreadable, or made for another image size."""
        return read_entry(self.file_for(image_id), size)

    def save(self, image_id: str, boxes: np.ndarray, size: tuple[int, int], scores: np.ndarray | None = None) -> None:
        write_entry(self.file_for(image_id), image_id, boxes, size, scores)

    def load_scores(self, image_id: str) -> np.ndarray | None:
        """The scores stored with an image's imported boxes (:func:`read_scores`), None when there are none."""
        return read_scores(self.file_for(image_id))

    def clean_stale_temporaries(self, older_than: float = _STALE_TMP_SECONDS) -> int:
        """Delete temporary files left by killed runs (only old ones: another process may be writing)."""
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self.boxes_dir))
        except FileNotFoundError:
            return 0
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                try:
                    if now - e.stat().st_mtime > older_than:
                        os.unlink(e.path)
                        removed += 1
                except OSError:
                    pass
        return removed


def write_entry(
    path: Path, image_id: str, boxes: np.ndarray, size: tuple[int, int], scores: np.ndarray | None = None
) -> None:
    """Write one per-image file atomically. ``scores``: [N] float32, one per box, for proposals imported from a
    file that has them (:mod:`fastrcnn_cli.proposals.interop`), stored as ``scores`` so that an export gives
    them back; Selective Search boxes have none."""
    arrays = {"boxes": np.ascontiguousarray(np.asarray(boxes, np.float32).reshape(-1, 4)),
              "size": np.asarray(size, np.int64), "id": np.asarray(image_id)}
    if scores is not None:
        arrays["scores"] = np.ascontiguousarray(np.asarray(scores, np.float32).reshape(-1))
        if len(arrays["scores"]) != len(arrays["boxes"]):
            raise ValueError(f"{len(arrays['scores'])} scores for {len(arrays['boxes'])} boxes")
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_scores(path: Path) -> np.ndarray | None:
    """The [N] float32 ``scores`` of a per-image file, or None when it has none (or is unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "scores" not in data.files:
                return None
            scores, boxes = data["scores"], data["boxes"]
    except Exception:  # noqa: BLE001 - a damaged file has no usable scores
        return None
    if scores.dtype != np.float32 or scores.shape != (len(boxes),):
        return None
    return scores


def read_entry(path: Path, size: tuple[int, int] | None = None) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            boxes = data["boxes"]
            stored = tuple(int(v) for v in data["size"])
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged file is recomputed, whatever the damage
        return None
    if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != 4:
        return None
    if size is not None and stored != tuple(int(v) for v in size):
        return None
    return boxes


# ---------------------------------------------------------------------------------------------------------
# computing

#: (image id, image path, cache file, settings dict[, (width, height) the cache file must record])
Task = tuple[Any, ...]


def _work(task: Task) -> dict[str, Any]:
    """Worker: Selective Search on one image, written to the cache. Never raises (errors are returned).

    ``task`` is (image id, image path, cache file, settings dict[, (width, height)]). The image is claimed
    first (:mod:`fastrcnn_cli.proposals.claims`): when another run is computing it, ``{"claimed": True}``
    comes back at once; when another run finished it meanwhile, its boxes come back. A cache file that
    cannot be written (disk full, read-only folder) is ``"fatal"``: every later image would fail the same way.
    """
    from fastrcnn_cli.errors import OutputError
    from fastrcnn_cli.proposals.claims import try_claim

    image_id, image_path, out_file, settings_dict = task[:4]
    size_wanted = tuple(task[4]) if len(task) > 4 and task[4] is not None else None
    timing = Timing()
    t0 = time.perf_counter()
    c0 = time.process_time()
    claim = try_claim(out_file) if out_file else None
    if out_file and claim is None:
        return {"id": image_id, "claimed": True}
    try:
        if size_wanted is not None:
            done = read_entry(Path(out_file), size_wanted)  # finished by another run since this one looked
            if done is not None:
                return {"id": image_id, "boxes": done, "size": size_wanted, "shared": True}
        settings = ProposalSettings.from_dict(settings_dict)
        boxes, size = proposals_for_file(image_path, settings, timing)
        write_entry(Path(out_file), image_id, boxes, size)
    except OutputError as exc:
        return {"id": image_id, "error": str(exc), "fatal": True}
    except InputError as exc:
        return {"id": image_id, "error": str(exc)}
    except MemoryError:
        return {"id": image_id, "error": f"{image_path}: out of memory"}
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
        return {"id": image_id, "error": f"{image_path}: {exc.__class__.__name__}: {exc}"}
    finally:
        if claim is not None:
            claim.release()
    return {
        "id": image_id,
        "boxes": boxes,
        "size": size,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "search_seconds": timing.search,
    }


@dataclass
class Failure:
    image_id: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.image_id, "error": self.message}


@dataclass
class ProposalRun:
    """What :func:`run_proposals` did."""

    cache_dir: Path
    settings: ProposalSettings | None
    proposals: dict[str, np.ndarray]
    total: int  #: images asked for
    cached: int  #: found in the cache
    computed: int  #: computed by this run
    failed: list[Failure] = field(default_factory=list)
    stale: int = 0  #: cache files recomputed (unreadable, or for another image size)
    workers: int = 1
    wall_seconds: float = 0.0  #: wall clock of the computing part
    image_seconds: list[float] = field(default_factory=list)  #: per computed image, inside its worker
    image_cpu_seconds: list[float] = field(default_factory=list)  #: the same in CPU time (load-independent)
    interrupted: bool = False
    shared: int = 0  #: computed meanwhile by another run on the same cache

    @property
    def seconds_per_image_per_worker(self) -> float | None:
        """Mean wall time one worker spent on one image (read, resize, search, write)."""
        return float(np.mean(self.image_seconds)) if self.image_seconds else None

    @property
    def cpu_seconds_per_image(self) -> float | None:
        """Mean CPU time per image in the workers: what a quiet machine's wall time would be, about."""
        return float(np.mean(self.image_cpu_seconds)) if self.image_cpu_seconds else None

    @property
    def images_per_second(self) -> float | None:
        return self.computed / self.wall_seconds if self.computed and self.wall_seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        spi = self.seconds_per_image_per_worker
        cpu = self.cpu_seconds_per_image
        ips = self.images_per_second
        return {
            "cache": str(self.cache_dir),
            "settings": self.settings.to_dict() if self.settings else None,
            "images": self.total,
            "cached": self.cached,
            "computed": self.computed,
            "failed": [f.to_dict() for f in self.failed],
            "recomputed_stale": self.stale,
            "computed_by_another_run": self.shared,
            "workers": self.workers,
            "seconds": round(self.wall_seconds, 3),
            "seconds_per_image_per_worker": None if spi is None else round(spi, 4),
            "cpu_seconds_per_image": None if cpu is None else round(cpu, 4),
            "images_per_second": None if ips is None else round(ips, 3),
            "mean_proposals_per_image": round(float(np.mean([len(b) for b in self.proposals.values()])), 1)
            if self.proposals
            else 0.0,
        }


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_proposals(
    records: Sequence[ImageRecord],
    settings: ProposalSettings,
    cache_dir: Path,
    workers: int | None = None,
    *,
    dataset_root: Path | None = None,
    show_progress: bool = True,
    log: bool = True,
) -> ProposalRun:
    """Selective Search proposals of ``records`` through the cache at ``cache_dir``.

    Images with a valid cache file are loaded; the others are computed by ``workers`` processes (default:
    all cores; 1 runs in this process) and written to the cache one by one as they finish. Images that
    cannot be processed are reported in ``failed`` and left out of ``proposals``; the rest of the run goes
    on. Ctrl-C stops the workers at once (every file is atomic, so that is safe) and re-raises; a later
    run resumes with the images that have no file yet. ``show_progress`` False: no progress bar; ``log``
    False: no messages either (:mod:`fastrcnn_cli.progress` carries both).
    """
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise SettingsError("workers", f"must be at least 1 (got {workers})")
    say = progress.info if log else _quiet
    cache = ProposalCache.open(cache_dir, make_meta(SOURCE_SS, settings, dataset_root))
    cache.clean_stale_temporaries()
    existing = cache.file_names()
    proposals: dict[str, np.ndarray] = {}
    todo: list[ImageRecord] = []
    stale = 0
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            continue
        seen.add(record.id)
        boxes = None
        if file_name(record.id) in existing:
            boxes = cache.load(record.id, (record.width, record.height))
            if boxes is None:
                stale += 1
        if boxes is None:
            todo.append(record)
        else:
            proposals[record.id] = boxes
    run = ProposalRun(
        cache_dir=cache.path, settings=settings, proposals=proposals, total=len(seen),
        cached=len(proposals), computed=0, stale=stale, workers=min(workers, max(1, len(todo))),
    )
    if not todo:
        say(f"all {run.total} images cached in {cache.path}")
        return run
    version = cache.version_warning()
    if log and version:
        progress.warn(version)
    say(f"Selective Search ({settings.describe()}) on {len(todo)} of {run.total} images "
            f"({run.cached} cached{f', {stale} stale' if stale else ''}) with {run.workers} "
            f"worker{'s' if run.workers > 1 else ''} -> {cache.path}")
    # largest images first, so that no worker is left with a big one while the others are idle at the end
    todo.sort(key=lambda r: -_search_area(r.width, r.height, settings.max_side))
    by_id = {r.id: r for r in todo}
    start = time.perf_counter()
    try:
        with progress.task("proposals", len(todo), unit="img", show=show_progress) as bar:
            waiting = _compute(run, cache, [_task(cache, r, settings) for r in todo], bar)
            announced = 0
            while waiting:  # images another run is computing: wait for its files, or take them over
                if len(waiting) != announced:
                    say(f"waiting for {len(waiting)} images that another run is computing in {cache.path}")
                    announced = len(waiting)
                time.sleep(CLAIM_POLL_SECONDS)
                waiting = _compute(run, cache, [_task(cache, by_id[i], settings) for i in waiting], bar,
                                   shared_only=True)
    except KeyboardInterrupt:
        run.interrupted = True
        run.wall_seconds = time.perf_counter() - start
        say(f"interrupted: {_done(records, cache)} of {run.total} images are in {cache.path}; "
            "run the same command again to resume")
        raise
    except OutputError as exc:
        raise OutputError(
            f"{exc}. The proposal run stopped: {_done(records, cache)} of {run.total} images are in the cache; "
            "make room (or fix the folder) and run the same command again to resume"
        ) from None
    run.wall_seconds = time.perf_counter() - start
    run.proposals = {r.id: run.proposals[r.id] for r in records if r.id in run.proposals}  # split order
    return run


#: how often a run looks for the files of images that another run claimed
CLAIM_POLL_SECONDS = 0.5


def _quiet(_text: str) -> None:
    """A message of a run asked not to log."""


def _task(cache: ProposalCache, record: ImageRecord, settings: ProposalSettings) -> Task:
    return (record.id, str(record.image_path), str(cache.file_for(record.id)), settings.to_dict(),
            (int(record.width), int(record.height)))


def _done(records: Sequence[ImageRecord], cache: ProposalCache) -> int:
    return len({file_name(r.id) for r in records} & cache.file_names())


def _compute(
    run: ProposalRun, cache: ProposalCache, tasks: list[Task], bar: progress.Task, *, shared_only: bool = False
) -> list[str]:
    """Run ``tasks`` (with ``shared_only``: only those whose claim is gone, the rest are looked up); record
    the results in ``run``; return the ids still claimed by another run. Raises :class:`OutputError` when a
    cache file cannot be written."""
    from fastrcnn_cli.proposals.claims import claim_path, is_active

    waiting: list[str] = []
    if shared_only:
        todo = []
        for task in tasks:
            image_id, size = task[0], task[4]
            boxes = cache.load(image_id, size)
            if boxes is not None:
                run.proposals[image_id] = boxes
                run.shared += 1
                bar.advance()
            elif is_active(claim_path(task[2])):
                waiting.append(image_id)
            else:  # the other run failed on it, or died: compute it here
                todo.append(task)
        tasks = todo
    if not tasks:
        return waiting
    for result in _execute(tasks, run.workers):
        if result.get("claimed"):
            waiting.append(result["id"])
            continue
        if result.get("fatal"):
            raise OutputError(result["error"])
        _collect(run, result)
        bar.advance()
    return waiting


def _search_area(width: int, height: int, max_side: int) -> int:
    from fastrcnn_cli.proposals.selective_search import scaled_size

    ws, hs = scaled_size(max(1, int(width)), max(1, int(height)), max_side)
    return ws * hs


def _collect(run: ProposalRun, result: dict[str, Any]) -> None:
    if "error" in result:
        run.failed.append(Failure(result["id"], result["error"]))
        return
    run.proposals[result["id"]] = result["boxes"]
    if result.get("shared"):  # finished by another run sharing the cache
        run.shared += 1
        return
    run.computed += 1
    run.image_seconds.append(float(result["seconds"]))
    run.image_cpu_seconds.append(float(result["cpu_seconds"]))


def _execute(tasks: list[Task], workers: int, work: Any = None) -> Iterable[dict[str, Any]]:
    """Yield the results of ``work`` (default :func:`_work`) as they finish: in this process, or in worker
    processes.

    Worker processes are *spawned* (not forked): the parent may hold threads (the progress bar, OpenCV's
    and torch's pools) that a fork would copy in a locked state, and spawn behaves the same on every OS.

    A worker that dies (say, killed by the out-of-memory killer on a giant image) breaks its pool and
    every image not finished in it. Those images are retried once in a fresh pool; images caught in a
    second break are then run one per process, so the image that kills its worker is reported as failed
    and no other image is lost.
    """
    work = work or _work
    if workers <= 1:
        for task in tasks:
            yield work(task)
        return
    remaining = list(tasks)
    for _ in range(2):
        broken: list[Task] = []
        for task, result in _pool_results(remaining, workers, work):
            if result is None:
                broken.append(task)
            else:
                yield result
        if not broken:
            return
        remaining = broken
    for task in remaining:
        for _, result in _pool_results([task], 1, work):
            yield result if result is not None else {
                "id": task[0], "error": f"{task[1]}: the worker process died on this image (out of memory?)"
            }


def _pool_results(tasks: list[Task], workers: int, work: Any) -> Iterable[tuple[Task, dict[str, Any] | None]]:
    """(task, result) as they finish in a pool of ``workers`` processes; result None when the pool broke."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(os.getpid(),),
    )
    try:
        futures = {executor.submit(work, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool:
                yield futures[future], None
    except BaseException:
        # Ctrl-C (or any error): stop at once. Killing a worker mid-image is safe, since every cache file
        # is written atomically; at worst a hidden temporary file is left, which later runs remove.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
        raise
    executor.shutdown(wait=True)


def _init_worker(parent_pid: int) -> None:
    """Initialiser of the worker processes: one OpenCV thread each, Ctrl-C left to the parent, and death
    with the parent (even by ``kill -9``), so that no worker is left behind."""
    from fastrcnn_cli.proposals.lifetime import die_with_parent
    from fastrcnn_cli.proposals.selective_search import init_worker

    die_with_parent(parent_pid)
    init_worker()


def print_failures(run_failed: Sequence[Failure]) -> None:
    """The images without proposals, one line each, on stderr."""
    if not run_failed:
        return
    from rich.table import Table

    from fastrcnn_cli.console import err

    table = Table(title=f"{len(run_failed)} images skipped (no proposals)", title_justify="left")
    table.add_column("image id")
    table.add_column("problem", overflow="fold")
    for f in run_failed:
        table.add_row(f.image_id, f.message)
    err.print(table)


def load_imported(cache: ProposalCache, records: Sequence[ImageRecord]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Proposals of ``records`` from an imported cache (nothing can be computed): (found, missing ids)."""
    found: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for record in records:
        boxes = cache.load(record.id, (record.width, record.height))
        if boxes is None:
            missing.append(record.id)
        else:
            found[record.id] = boxes
    return found, missing


def load_or_compute_proposals(
    dataset: VOCDataset,
    settings: ProposalSettings,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Proposals of every image of ``dataset`` (id -> [N, 4] float32 boxes in our convention).

    Reuses the cache (default :func:`default_cache_dir`), computes only the missing images, in parallel
    worker processes with a progress bar, and adds them to the cache. ``cache_dir`` may also be a cache
    of imported proposals (``fastrcnn propose DATA --import-mat FILE``): then ``settings`` do not apply,
    nothing is computed, and images without imported proposals are left out with a warning. Images that
    cannot be processed are left out of the result (a table on stderr names them). Raises
    :class:`CacheMismatchError` for a cache made with other settings.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(dataset.root, settings)
    meta = ProposalCache.read_meta(cache_dir) if cache_dir.exists() else None
    if meta is not None and meta.get("source") == SOURCE_IMPORTED:
        cache = ProposalCache(cache_dir, meta)
        found, missing = load_imported(cache, dataset.records)
        progress.info(f"using {len(found)} images of {_describe_meta(meta)} ({cache_dir}); proposal settings ignored")
        if missing:
            progress.warn(f"{len(missing)} images have no imported proposals and are left out: "
                          f"{', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
        return found
    run = run_proposals(dataset.records, settings, cache_dir, workers, dataset_root=dataset.root)
    if run.computed:
        progress.info(f"computed {run.computed} images in {run.wall_seconds:.1f} s "
                      f"({run.seconds_per_image_per_worker:.2f} s per image per worker)")
    if run.failed:
        shown = "; ".join(f"{f.image_id}: {f.message}" for f in run.failed[:10])
        progress.warn(f"{len(run.failed)} images skipped (no proposals): {shown}"
                      + (" ..." if len(run.failed) > 10 else ""))
    return run.proposals


# ---------------------------------------------------------------------------------------------------------
# sharding and merging


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1-based: ``1/4`` .. ``4/4``) -> (i, n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise InputError(f"shard {text!r}: expected i/n, e.g. 1/4 (shards are numbered 1 to n)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise InputError(f"shard {text!r}: i must be between 1 and n (shards are numbered 1 to n)")
    return i, n


def shard_records(records: Sequence[Any], index: int, count: int) -> list[Any]:
    """Shard ``index`` of ``count`` (1-based): every ``count``-th image of the split, starting at the
    ``index``-th. Deterministic (split order only), disjoint, and together the shards cover the split;
    interleaving spreads large and small images evenly over the shards."""
    return list(records[index - 1 :: count])


@dataclass
class MergeSummary:
    out: Path
    sources: list[Path]
    copied: int
    identical: int  #: already in the output with the same boxes
    total: int  #: per-image files in the output afterwards

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache": str(self.out),
            "sources": [str(s) for s in self.sources],
            "copied": self.copied,
            "already_present": self.identical,
            "images": self.total,
        }


def merge_caches(sources: Sequence[Path], out: Path) -> MergeSummary:
    """Merge the caches of several shards (or runs) into ``out``.

    All sources (and ``out``, when it exists) must have been made the same way (same settings, or the same
    imported file). An image present in several with *different* boxes is a conflict: nothing is written
    and the conflicts are listed. Files are copied atomically; merging again is a no-op.
    """
    if not sources:
        raise InputError("nothing to merge: give at least one cache folder")
    out = Path(out).expanduser()
    metas: list[dict[str, Any]] = []
    for src in sources:
        src = Path(src)
        if not src.is_dir():
            raise InputError("no such proposal cache folder", src)
        meta = ProposalCache.read_meta(src)
        if meta is None:
            raise InputError(f"not a fastrcnn proposal cache (no {META_FILE})", src)
        if metas and not _same_origin(metas[0], meta):
            raise CacheMismatchError(
                f"holds {_describe_meta(meta)} but {sources[0]} holds {_describe_meta(metas[0])}; "
                "only caches made the same way can be merged",
                src,
            )
        metas.append(meta)
    versions = {(m.get("opencv"), m.get("fastrcnn")) for m in metas}
    if len(versions) > 1:
        progress.warn("the caches were made with different OpenCV/fastrcnn versions: " + ", ".join(
            f"OpenCV {o} / fastrcnn {f}" for o, f in sorted(versions, key=str)))
    base = dict(metas[0])
    base["merged_from"] = [str(Path(s).resolve()) for s in sources]
    target = ProposalCache.open(out, base)
    # plan first, so that a conflict leaves the output untouched
    plan: dict[str, Path] = {}
    conflicts: list[str] = []
    identical = 0
    present = target.file_names()
    for src in sources:
        src_cache = ProposalCache(Path(src), {})
        for name in sorted(src_cache.file_names()):
            path = src_cache.boxes_dir / name
            boxes = read_entry(path)
            if boxes is None:
                progress.warn(f"{path}: unreadable, not merged")
                continue
            other = plan.get(name) or (target.boxes_dir / name if name in present else None)
            if other is not None and other.resolve() != path.resolve():
                other_boxes = read_entry(other)
                if other_boxes is not None and other_boxes.shape == boxes.shape and np.array_equal(other_boxes, boxes):
                    if other.parent == target.boxes_dir:
                        identical += 1
                    continue
                conflicts.append(f"{name[:-4]} ({other} and {path})")
                continue
            if other is None:
                plan[name] = path
    if conflicts:
        raise CacheMismatchError(
            f"{len(conflicts)} images have different boxes in different caches; nothing merged: "
            + "; ".join(conflicts[:10]) + (" ..." if len(conflicts) > 10 else ""),
        )
    for name, path in plan.items():
        atomic_write_bytes(target.boxes_dir / name, path.read_bytes())
    return MergeSummary(out=target.path, sources=[Path(s) for s in sources], copied=len(plan),
                        identical=identical, total=len(target.file_names()))

"""What ``fastrcnn detect`` reads and writes: images and videos from files, folders and globs, a camera, output
paths, and detections as JSON.

Sources (:func:`expand_sources`)
--------------------------------
Each SOURCE is an image file, a video file (:data:`fastrcnn_cli.video.VIDEO_SUFFIXES`), a folder (its images
and videos, not recursive, sorted by name; hidden files and other files such as ``LICENSE`` are skipped) or a
glob pattern (``photos/*.jpg``, ``data/**/*.png``; expanded here too, so a quoted pattern works the same as one
the shell expanded). A file is a video by its suffix, anything else is read as an image. An image met twice is
processed once. A number that names no file (``0``) is a camera index, given alone. A URL (``https://...``,
``rtsp://...``) is refused: fastrcnn never reaches the network. Every source that names nothing (a missing path,
a folder without images, a pattern that matches no image, a URL) is reported, all in one error, before any work
is done.

Output images and videos (:func:`plan_outputs`, :func:`plan_video_outputs`)
----------------------------------------------------------------------------
One image given as a file, and ``--out`` with an image suffix: the annotated image is written there; one video
(or a camera), and ``--out`` with a video suffix: the annotated video is written there. Otherwise (several
sources, a folder or a glob, or ``--out`` without such a suffix) ``--out`` is a folder (created) and each image
or video is written under its own file name (``x.jpg``, then ``x_2.jpg`` for a second ``x.jpg`` from another
folder; ``camera0.mp4`` for camera 0). An output that would overwrite an input is refused.

The JSON document (``--json`` on stdout, ``--save-json FILE``)
--------------------------------------------------------------
Boxes are in the project's convention (:mod:`fastrcnn_cli.boxes`): ``[x1, y1, x2, y2]``, 0-based pixel indices
of the original image, both corners inclusive, so a box is ``x2 - x1 + 1`` pixels wide. Numbers are rounded to
2 decimals (boxes) and 5 decimals (scores)::

    {
      "format": "fastrcnn-detect", "version": 3,
      "weights": "weights/shapes-efficientnet-lite0.pt",
      "classes": ["circle", "square", ...],                 # class_index indexes this list
      "categories": [{"id": 1, "name": "circle"}, ...],    # category_id of each class (below)
      "box_convention": "...",
      "settings": {"scale": [600], "max_size": 1000, "score_threshold": 0.5, "nms": 0.3,
                   "max_detections": 100, "classes": null, "proposals": {...}},
      "device": "cpu",
      "images": [
        {"file": "photos/000456.jpg", "image_id": 456, "width": 500, "height": 375,
         "output": "out/000456.jpg",                        # null when no image was written
         "num_proposals": 1843,
         "times": {"proposals_s": 1.21, "network_s": 0.31, "postprocess_s": 0.004, "total_s": 1.52},
         "detections": [                                    # by decreasing score
           {"class": "dog", "class_index": 11, "category_id": 12, "score": 0.97321,
            "box": [48.12, 10.5, 351.9, 372.0]}
         ]}
      ],
      "videos": [
        {"file": "clip.mp4", "output": "out/clip.mp4", "width": 640, "height": 360,
         "fps": 30.0, "frame_count": 300,                   # the source's (frame_count null: unknown, a camera)
         "vid_stride": 2, "output_fps": 15.0, "frames_processed": 150, "complete": true,
         "frames": [                                        # one per processed frame
           {"frame": 0, "time_s": 0.0, "num_proposals": 1210, "times": {...}, "detections": [...]},
           {"frame": 2, "time_s": 0.0667, ...}
         ]}
      ],
      "failed": [{"file": "photos/broken.jpg", "error": "not a readable image (...)"}],
      "coco": [ ...the COCO-style results list below... ]
    }

``complete`` is false when the video was stopped early (Ctrl-C). Version 2 added ``videos`` and made every
``image_id`` an integer (version 1 gave a file stem that is not all digits as a string); version 3 names the
test scale ``settings.scale`` (``scales`` before).

COCO-style results list (inside the document as ``"coco"``, or alone with ``--save-coco FILE``), the format
``pycocotools``' ``COCO.loadRes`` reads, one entry per detection on a still image (video frames are under
``videos``)::

    [{"image_id": 456, "category_id": 12, "bbox": [48.12, 10.5, 304.78, 362.5], "score": 0.97321}, ...]

with ``bbox = [x, y, w, h] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]``. Ids (:func:`coco_ids`):

- with a COCO ground-truth file (``--coco-gt``): each image's ``id`` in that file, found by file name, and
  each class's category id, found by name, so the list evaluates against the file as it is; an image or a class
  the file does not have is refused before any work;
- otherwise ``image_id`` is the file name's stem as an integer when every image's stem is all digits and they
  differ (``000456.jpg`` -> 456, ``000000397133.jpg`` -> 397133, as COCO and VOC name their files, and as
  ``fastrcnn convert`` numbers a COCO copy of such a data set), else 1, 2, ... in the order of the images; and
  ``category_id`` is the model's class index (1 = the first class; 0, the background, never appears).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fastrcnn_cli.detections import Detections
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.io import IMAGE_SUFFIXES
from fastrcnn_cli.video import VIDEO_SUFFIXES, VideoInfo, is_video_file

FORMAT = "fastrcnn-detect"
VERSION = 3
BOX_CONVENTION = (
    "[x1, y1, x2, y2]: 0-based pixel indices of the original image, both corners inclusive "
    "(width = x2 - x1 + 1); COCO bbox = [x1, y1, width, height]"
)
_GLOB_CHARS = ("*", "?", "[")
#: ``scheme://``: http(s), rtsp, rtmp, ftp, ... (a Windows drive letter has no ``//``)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _media_in_folder(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and (is_image_file(p) or is_video_file(p))), key=lambda p: p.name
    )


@dataclass
class Sources:
    """The images and videos to process (or a camera), and whether the user named a collection (a folder, a
    glob or several files)."""

    images: list[Path]
    collection: bool
    videos: list[Path] = field(default_factory=list)
    camera: int | None = None  #: a camera index, given alone


def expand_sources(sources: Sequence[str | os.PathLike]) -> Sources:
    """Files, folders, globs and a camera index -> the image and video files, in the given order (folders and
    glob matches sorted by name), each once. Raises one :class:`InputError` listing every source that names
    nothing usable (see the module docstring)."""
    if not sources:
        raise InputError("give at least one image, video, folder or glob pattern")
    media: list[Path] = []
    problems: list[str] = []
    cameras: list[int] = []
    collection = len(sources) > 1
    suffixes = ", ".join(sorted({s.lower() for s in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)}))
    for source in sources:
        text = os.fspath(source)
        path = Path(text).expanduser()
        if _URL.match(text):
            problems.append(
                f"{text}: a URL; fastrcnn reads local files and cameras only and never reaches the network: download "
                "the file first (a stream: record it to a file) and give its path"
            )
        elif path.is_dir():
            collection = True
            found = _media_in_folder(path)
            if not found:
                problems.append(f"{path}: the folder holds no image or video (looked for {suffixes})")
            media.extend(found)
        elif path.exists():
            media.append(path)
        elif text.isascii() and text.isdigit():
            cameras.append(int(text))
        elif any(c in text for c in _GLOB_CHARS):
            collection = True
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            found = [m for m in matches if m.is_file() and (is_image_file(m) or is_video_file(m))]
            if not found:
                what = f"{len(matches)} paths, none an image or video" if matches else "nothing"
                problems.append(f"{text}: the pattern matches {what}")
            media.extend(found)
        else:
            problems.append(f"{path}: no such file or folder")
    if cameras and not problems and len(sources) > 1:
        problems.append(
            f"camera {cameras[0]}: a camera is read until Ctrl-C, so it is given alone (no other camera, file or folder)"
        )
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} sources name no image or video:\n  " + "\n  ".join(problems)
        raise InputError(head)
    unique: list[Path] = []
    seen: set[Path] = set()
    for item in media:
        key = item.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return Sources(
        images=[p for p in unique if not is_video_file(p)],
        collection=collection,
        videos=[p for p in unique if is_video_file(p)],
        camera=cameras[0] if cameras else None,
    )


def _unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``<stem>_2<suffix>``, ``<stem>_3<suffix>``, ... when taken (case-insensitively); taken now."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 1
    while candidate.lower() in used:
        n += 1
        candidate = f"{stem}_{n}{suffix}"
    used.add(candidate.lower())
    return candidate


def _refuse_overwriting(paths: Sequence[Path | None], sources: Sources) -> None:
    inputs = {p.resolve() for p in (*sources.images, *sources.videos)}
    for path in paths:
        if path is not None and path.resolve() in inputs:
            raise InputError("the output would overwrite an input; choose another file or folder", path)


def plan_outputs(sources: Sources, out: Path | None) -> list[Path | None]:
    """The annotated image's path for each input image (None everywhere when ``out`` is None). See the module
    doc; :func:`plan_video_outputs` gives the videos'."""
    if out is None or not sources.images:
        return [None] * len(sources.images)
    out = Path(out).expanduser()
    single_file = (
        not sources.collection and len(sources.images) == 1 and not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES
    )
    if single_file:
        paths: list[Path] = [out]
    else:
        if out.exists() and not out.is_dir():
            raise InputError("the output must be a folder when several images (or a folder, or a pattern) are given", out)
        if out.suffix.lower() in IMAGE_SUFFIXES and not out.exists():
            raise InputError(
                f"the output looks like an image file name, but {len(sources.images)} image(s) from a folder, pattern or "
                "list were given: give a folder",
                out,
            )
        if out.suffix.lower() in VIDEO_SUFFIXES and not out.exists():
            raise InputError(
                "the output looks like a video file name, but images are given: give an image file name for one image "
                "(.png, .jpg), or a folder",
                out,
            )
        used: set[str] = set()
        paths = [out / _unique_name(image.name, used) for image in sources.images]
    _refuse_overwriting(paths, sources)
    return paths  # type: ignore[return-value]


def camera_file_name(index: int) -> str:
    """The annotated video of camera ``index`` in an output folder."""
    return f"camera{index}.mp4"


def plan_video_outputs(sources: Sources, out: Path | None, image_outputs: Sequence[Path | None] = ()) -> list[Path | None]:
    """The annotated video's path for each input video, then the camera's (None everywhere when ``out`` is None);
    names in a folder stay clear of ``image_outputs``. See the module doc."""
    count = len(sources.videos) + (sources.camera is not None)
    if out is None or count == 0:
        return [None] * count
    out = Path(out).expanduser()
    alone = not sources.collection and not sources.images and count == 1
    if alone and not out.is_dir() and out.suffix.lower() in VIDEO_SUFFIXES:
        paths: list[Path] = [out]
    elif alone and not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(
            f"the output looks like an image file name, but the source is a video: give a video file name "
            f"({', '.join(VIDEO_SUFFIXES)}) or a folder",
            out,
        )
    else:
        if out.exists() and not out.is_dir():
            raise InputError("the output must be a folder when several sources (or a folder, or a pattern) are given", out)
        if out.suffix.lower() in VIDEO_SUFFIXES and not out.exists():
            raise InputError(
                f"the output looks like a video file name, but {count + len(sources.images)} images and videos "
                "from a folder, pattern or list were given: give a folder",
                out,
            )
        used = {Path(p).name.lower() for p in image_outputs if p is not None}
        names = [v.name for v in sources.videos] + ([] if sources.camera is None else [camera_file_name(sources.camera)])
        paths = [out / _unique_name(name, used) for name in names]
    _refuse_overwriting(paths, sources)
    return paths  # type: ignore[return-value]


def image_id_for(path: Path) -> int | str:
    """The file's stem as an integer when it is all digits, else the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isascii() and stem.isdigit() else stem


def sequential_image_ids(files: Sequence[Path]) -> list[int]:
    """Integer COCO image ids for ``files``: their stems when all are digits and distinct, else 1, 2, ..."""
    stems = [image_id_for(f) for f in files]
    if all(isinstance(s, int) for s in stems) and len(set(stems)) == len(stems):
        return stems  # type: ignore[return-value]
    return list(range(1, len(files) + 1))


@dataclass(frozen=True)
class CocoIds:
    """The ids of a COCO ground-truth file for the images and classes of a detect run."""

    images: dict[Path, int]  #: input image -> the ground truth's image id
    category_ids: tuple[int, ...]  #: the category id of each class of the model, in its order


def _read_coco_ground_truth(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError("no such COCO ground-truth file", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})", path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError("not a COCO detection file (no 'images' list)", path)
    return data


def coco_ground_truth_images(path: str | os.PathLike, images: Sequence[Path]) -> dict[Path, int]:
    """Each of ``images`` -> its ``id`` in the COCO file at ``path``, matched by file name: the entry whose
    ``file_name`` is the end of the image's path (``train/cat_01.jpg``), else the only entry of that base name
    (or of that stem, for a ``file_name`` without suffix).
    One :class:`InputError` naming the file lists the images it does not have."""
    path = Path(path).expanduser()
    data = _read_coco_ground_truth(path)
    by_name: dict[str, list[tuple[PurePosixPath, int]]] = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            continue
        if not isinstance(entry.get("id"), int) or isinstance(entry.get("id"), bool):
            continue
        name = PurePosixPath(entry["file_name"].replace("\\", "/"))
        by_name.setdefault(name.name, []).append((name, int(entry["id"])))
    found: dict[Path, int] = {}
    missing: list[str] = []
    for image in images:
        # "x.jpg", or "x" as `fastrcnn evaluate --metric coco` names its images (the record id)
        candidates = by_name.get(image.name, []) or by_name.get(image.stem, [])
        parts = Path(image).resolve().with_name(candidates[0][0].name if candidates else image.name).parts
        exact = [i for name, i in candidates if parts[-len(name.parts):] == name.parts]
        ids = exact or [i for _, i in candidates]
        if len(set(ids)) == 1:
            found[image] = ids[0]
        else:
            missing.append(f"{image}" + (" (several entries of that name)" if ids else ""))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(
            f"{len(missing)} image(s) have no entry of their file name in this ground truth (image ids with an integer "
            f"'id' and a 'file_name'): {shown}",
            path,
        )
    return found


def coco_category_ids(path: str | os.PathLike, classes: Sequence[str]) -> tuple[int, ...]:
    """The category id of each of ``classes`` in the COCO file at ``path``, matched by name; an
    :class:`InputError` names the classes it lacks."""
    path = Path(path).expanduser()
    data = _read_coco_ground_truth(path)
    ids: dict[str, int] = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and isinstance(cat.get("name"), str) and isinstance(cat.get("id"), int):
            ids.setdefault(cat["name"], int(cat["id"]))
    lacking = [c for c in classes if c not in ids]
    if lacking:
        raise InputError(
            f"the model's classes {', '.join(lacking)} are not categories of this ground truth (it has: "
            f"{', '.join(ids) or 'none'}); keep only the classes it has",
            path,
        )
    return tuple(ids[c] for c in classes)


def _r(x: float, digits: int) -> float:
    return round(float(x), digits)


def detection_records(
    detections: Detections, classes: Sequence[str], category_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One image's :class:`~fastrcnn_cli.detections.Detections` as JSON-ready dicts, by decreasing score;
    ``category_ids[k]`` is class ``k``'s category id (default ``k + 1``)."""
    order = np.argsort(-detections.scores, kind="stable")
    rows = []
    for i in order:
        label = int(detections.labels[i])
        rows.append(
            {
                "class": classes[label],
                "class_index": label,
                "category_id": label + 1 if category_ids is None else int(category_ids[label]),
                "score": _r(detections.scores[i], 5),
                "box": [_r(v, 2) for v in detections.boxes[i]],
            }
        )
    return rows


def coco_entries(image_id: int | str, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO results entries (``bbox`` = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]) for one image's detection records."""
    entries = []
    for rec in records:
        x1, y1, x2, y2 = rec["box"]
        entries.append(
            {
                "image_id": image_id,
                "category_id": rec["category_id"],
                "bbox": [x1, y1, _r(x2 - x1 + 1, 2), _r(y2 - y1 + 1, 2)],
                "score": rec["score"],
            }
        )
    return entries


@dataclass
class FrameOutcome:
    """One processed frame of a video."""

    index: int
    time_s: float
    detections: Detections
    num_proposals: int = 0
    times: dict[str, float] | None = None


@dataclass
class VideoOutcome:
    """One video (or camera) and its processed frames."""

    file: str  #: the path, or "camera N"
    output: Path | None
    info: VideoInfo
    stride: int
    frames: list[FrameOutcome] = field(default_factory=list)
    complete: bool = True  #: False: stopped before the end (Ctrl-C)

    def to_dict(self, classes: Sequence[str], category_ids: Sequence[int] | None = None) -> dict[str, Any]:
        return {
            "file": self.file,
            "output": None if self.output is None else str(self.output),
            "width": self.info.width,
            "height": self.info.height,
            "fps": _r(self.info.fps, 3),
            "frame_count": self.info.frame_count,
            "vid_stride": self.stride,
            "output_fps": _r(self.info.fps / self.stride, 3),
            "frames_processed": len(self.frames),
            "complete": self.complete,
            "frames": [
                {
                    "frame": f.index,
                    "time_s": _r(f.time_s, 4),
                    "num_proposals": int(f.num_proposals),
                    "times": {k: _r(v, 4) for k, v in (f.times or {}).items()},
                    "detections": detection_records(f.detections, classes, category_ids),
                }
                for f in self.frames
            ],
        }


@dataclass
class ImageOutcome:
    """One input image's result (``detections`` set) or failure (``error`` set)."""

    file: Path
    output: Path | None = None
    detections: Detections | None = None
    image_size: tuple[int, int] = (0, 0)  #: (width, height)
    num_proposals: int = 0
    times: dict[str, float] | None = None
    error: str | None = None


def build_document(
    outcomes: Sequence[ImageOutcome],
    classes: Sequence[str],
    *,
    weights: str | os.PathLike | None,
    settings: dict[str, Any],
    device: str,
    videos: Sequence[VideoOutcome] = (),
    image_ids: Mapping[Path, int] | None = None,
    category_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The JSON document described in the module docstring. ``image_ids`` and ``category_ids``: a COCO ground
    truth's (:func:`coco_ground_truth_images`, :func:`coco_category_ids`); default :func:`sequential_image_ids`
    over every image (failed ones too, so that one failure does not renumber the others) and ``k + 1``."""
    ids = dict(image_ids) if image_ids is not None else dict(
        zip([o.file for o in outcomes], sequential_image_ids([o.file for o in outcomes]))
    )
    images, failed, coco = [], [], []
    for o in outcomes:
        if o.error is not None:
            failed.append({"file": str(o.file), "error": o.error})
            continue
        image_id = ids[o.file]
        assert o.detections is not None
        records = detection_records(o.detections, classes, category_ids)
        images.append(
            {
                "file": str(o.file),
                "image_id": image_id,
                "width": int(o.image_size[0]),
                "height": int(o.image_size[1]),
                "output": None if o.output is None else str(o.output),
                "num_proposals": int(o.num_proposals),
                "times": {k: _r(v, 4) for k, v in (o.times or {}).items()},
                "detections": records,
            }
        )
        coco.extend(coco_entries(image_id, records))
    return {
        "format": FORMAT,
        "version": VERSION,
        "weights": None if weights is None else str(weights),
        "classes": list(classes),
        "categories": [
            {"id": i + 1 if category_ids is None else int(category_ids[i]), "name": c} for i, c in enumerate(classes)
        ],
        "box_convention": BOX_CONVENTION,
        "settings": settings,
        "device": device,
        "images": images,
        "videos": [v.to_dict(classes, category_ids) for v in videos],
        "failed": failed,
        "coco": coco,
    }

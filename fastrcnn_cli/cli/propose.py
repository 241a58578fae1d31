"""``fastrcnn propose``: Selective Search proposals for images or a data set split (cached, parallel)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import ClassesOption, JsonOption, StrictOption, command, examples
from fastrcnn_cli.cli.options import (
    DataFormat,
    DataFormatOption,
    ProposalCacheOption,
    ProposalMaxSideOption,
    ProposalMinSizeOption,
    ProposalModeOption,
    ProposalTopOption,
    ProposerOption,
    ThreadsOption,
    WorkersOption,
    data_format as format_name,
    proposal_settings,
    split_option,
)
from fastrcnn_cli.errors import DatasetError, FastRCNNError, InputError
from fastrcnn_cli.proposal_settings import ProposalSettings

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

    from fastrcnn_cli.data.records import ImageRecord
    from fastrcnn_cli.proposals.recall import RecallReport


class MatLayout(str, Enum):
    auto = "auto"
    xyxy0 = "xyxy0"
    yxyx1 = "yxyx1"


class ProposalFormat(str, Enum):
    auto = "auto"
    detectron2 = "detectron2"
    mmdet = "mmdet"
    mat = "mat"


Inputs = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="IMAGE... | DATA | CACHE...",
        help="Image files; or one data set folder (VOC, COCO or YOLO); or, with --merge, the cache folders to merge.",
        show_default=False,
    ),
]
Split = Annotated[
    str, split_option("Data set split (VOC: a file in ImageSets/Main/; COCO: a JSON file; YOLO: a folder or list); "
                      "several, comma-separated: their union.")
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Images: draw the first --draw boxes into this file (a folder for several images)."
    ),
]
Draw = Annotated[int, typer.Option("--draw", parser=ranges.count(0, 100_000), help="How many boxes --out draws.")]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard", metavar="I/N",
        help="Data set: process only shard I of N (1-based, every N-th image); merge the shards' caches with --merge.",
    ),
]
Merge = Annotated[
    bool, typer.Option("--merge", help="Merge the cache folders given as arguments into --proposal-cache.")
]
Recall = Annotated[
    bool,
    typer.Option("--recall", help="Data set: recall at IoU 0.5 / 0.7 and MABO against the ground truth, per class."),
]
ImportMat = Annotated[
    Path | None,
    typer.Option(
        "--import-mat", show_default=False,
        help="Use the original Fast R-CNN's boxes instead of computing them: a per-data-set .mat (cell array, "
        "y1 x1 y2 x2 1-based, split order), a folder of per-image <id>_boxes.mat, or with one image its .mat "
        "(x1 y1 x2 y2 0-based).",
    ),
]
MatLayoutOption = Annotated[
    MatLayout,
    typer.Option(
        "--mat-layout",
        help="Coordinates in --import-mat: auto (cell array: yxyx1; numeric array: xyxy0), xyxy0 (x1 y1 x2 y2, "
        "0-based) or yxyx1 (y1 x1 y2 x2, 1-based).",
    ),
]


ImportProposals = Annotated[
    Path | None,
    typer.Option(
        "--import-proposals", show_default=False,
        help="Data set: use another tool's boxes instead of computing them: a Detectron2 proposal pickle (ids, "
        "boxes, objectness_logits), an MMDetection 2.x proposal file (a list of [K, 5] arrays in the split's "
        "order) or a .mat of the original (told apart by their content). The file is read as data only.",
    ),
]
ExportProposals = Annotated[
    Path | None,
    typer.Option(
        "--export-proposals", show_default=False,
        help="Data set: also write the split's proposals (computed, cached or imported) as a file for another "
        "tool, in --proposal-format.",
    ),
]
ProposalFormatOption = Annotated[
    ProposalFormat,
    typer.Option(
        "--proposal-format",
        help="The format --export-proposals writes: detectron2 (a pickled dict, XYXY_ABS), mmdet (a pickled "
        "list of [K, 5] x1 y1 x2 y2 score, split order) or mat (the original's); auto: mat for a .mat file, "
        "else name one.",
    ),
]


@command(
    "propose",
    epilog=examples(
        "fastrcnn propose img.jpg --out props.png --draw 200",
        "fastrcnn propose img.jpg --json > boxes.json",
        "fastrcnn propose VOCdevkit/VOC2007 --split trainval",
        "fastrcnn propose ../shared/datasets/raccoon --split test --recall",
        "fastrcnn propose ../shared/datasets/raccoon --split trainval,test --workers 2",
        "fastrcnn propose ../shared/datasets/raccoon --split test --proposer native --recall",
        "fastrcnn propose VOC2007/ --split trainval --shard 1/4 --proposal-cache props-1/",
        "fastrcnn propose --merge props-1/ props-2/ props-3/ props-4/ --proposal-cache props/",
        "fastrcnn propose VOC2007/ --split test --import-mat selective_search_data/voc_2007_test.mat --recall",
        "fastrcnn propose 000004.jpg --import-mat 000004_boxes.mat --out imported.png",
        "fastrcnn propose ../shared/datasets/raccoon --split test --export-proposals test.pkl --proposal-format detectron2",
        "fastrcnn propose coco/ --split val --import-proposals box_proposals.pkl --recall",
        "fastrcnn propose VOC2007/ --split test --import-proposals rpn_test.pkl --export-proposals test.mat",
    ),
)
def propose(
    inputs: Inputs = None,
    split: Split = "trainval",
    mode: ProposalModeOption = None,
    max_side: ProposalMaxSideOption = None,
    top: ProposalTopOption = None,
    min_size: ProposalMinSizeOption = None,
    proposer: ProposerOption = None,
    out: Out = None,
    draw: Draw = 100,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    cache: ProposalCacheOption = None,
    shard: Shard = None,
    merge: Merge = False,
    recall: Recall = False,
    import_mat: ImportMat = None,
    mat_layout: MatLayoutOption = MatLayout.auto,
    import_proposals: ImportProposals = None,
    export_proposals: ExportProposals = None,
    proposal_format: ProposalFormatOption = ProposalFormat.auto,
    classes: ClassesOption = None,
    strict: StrictOption = False,
    data_format: DataFormatOption = DataFormat.auto,
    json_: JsonOption = False,
) -> None:
    """Compute Selective Search proposals for images or a data set split.

    [bold]Images[/bold]: prints the timing on stderr; --out draws the first --draw boxes; --json prints every box. --threads: the threads one image's Selective Search uses.

    [bold]Data set[/bold]: computes the proposals of every image of --split in --workers parallel processes (one thread each) and stores them in a proposal cache that train, evaluate and detect reuse. The cache records how it was made and refuses other settings; an interrupted run resumes where it stopped; a second run does no work. Images that cannot be read are listed at the end and skipped (with --strict: exit code 3). With --merge, --proposal-cache is the merged cache written.

    [bold]Other tools[/bold]: --import-proposals reads Detectron2's or MMDetection's proposal files (or the original's .mat) into a proposal cache for train and evaluate (--proposal-cache, printed); --export-proposals writes the split's proposals for them (Detectron2 and MMDetection use continuous x1 y1 x2 y2: our x2 + 1). Boxes without scores (Selective Search's) are written with their rank as the score.

    Boxes are x1 y1 x2 y2, 0-based inclusive pixels of the original image.
    """
    if merge:
        _merge(inputs or [], cache, json_)
        return
    if not inputs:
        raise typer.BadParameter("give image files or a data set folder (see --help)", param_hint="IMAGE... | DATA")
    settings = proposal_settings(ProposalSettings(), mode, max_side, top, min_size, proposer)
    if len(inputs) == 1 and inputs[0].is_dir():
        interop = _Interop(import_proposals, export_proposals, _export_format(export_proposals, proposal_format))
        _dataset(inputs[0], split, settings, workers, cache, shard, recall, import_mat, mat_layout.value,
                 classes, strict, json_, format_name(data_format), interop)
        return
    folders = [str(p) for p in inputs if p.is_dir()]
    if folders:
        raise typer.BadParameter(
            f"{', '.join(folders)}: give either image files or one data set folder", param_hint="IMAGE... | DATA"
        )
    for name, value in (("--recall", recall), ("--shard", shard), ("--proposal-cache", cache),
                        ("--import-proposals", import_proposals), ("--export-proposals", export_proposals)):
        if value:
            raise typer.BadParameter(f"{name} needs a data set folder, not image files", param_hint=name)
    if threads is not None:
        _set_threads(threads, settings)
    _images(inputs, settings, out, draw, import_mat, mat_layout.value, json_)


class _Interop(NamedTuple):
    """--import-proposals, --export-proposals and the export's format (None: no export)."""

    source: Path | None
    target: Path | None
    format: str | None


def _export_format(target: Path | None, chosen: ProposalFormat) -> str | None:
    """The format --export-proposals writes: the one chosen, or mat for a .mat file; a pickle names its tool."""
    if target is None:
        if chosen != ProposalFormat.auto:
            raise typer.BadParameter("it is the format of --export-proposals; give that file too (an imported file's "
                                     "format is read from its content)", param_hint="--proposal-format")
        return None
    if chosen != ProposalFormat.auto:
        return chosen.value
    if target.suffix.lower() == ".mat":
        return ProposalFormat.mat.value
    raise typer.BadParameter(
        "say which tool the file is for: --proposal-format detectron2 or mmdet (or mat)", param_hint="--proposal-format"
    )


def _set_threads(threads: int, settings: ProposalSettings) -> None:
    """One image's Selective Search on ``threads`` threads: OpenCV's helper filters, and the native proposer's
    groupings (torch's intra-op threads)."""
    import cv2

    cv2.setNumThreads(threads)
    if settings.proposer == "native":
        import torch

        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------


def _images(
    paths: list[Path], settings: ProposalSettings, out: Path | None, draw: int, import_mat: Path | None, layout: str,
    json_: bool,
) -> None:
    import cv2
    from rich.markup import escape

    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.io import image_size, write_image
    from fastrcnn_cli.outputs import check_output_file, check_output_folder
    from fastrcnn_cli.proposals.cache import BOX_CONVENTION
    from fastrcnn_cli.proposals.matlab import load_proposal_file
    from fastrcnn_cli.proposals.selective_search import Timing, opencv_version, proposals_for_file, scaled_size

    if import_mat is not None and len(paths) > 1 and not import_mat.is_dir():
        raise InputError("with several images, --import-mat must be a folder of <id>_boxes.mat files", import_mat)
    if out is not None and len(paths) > 1:
        if out.exists() and not out.is_dir():
            raise InputError("with several images, --out must be a folder", out)
        check_output_folder(out, "--out", [*paths, import_mat])
        for path in paths:
            check_output_file(out / f"{path.stem}_proposals.png", "--out", [*paths, import_mat])
    elif out is not None:
        check_output_file(_drawing_target(out, paths[0], 1), "--out", [*paths, import_mat])
    if import_mat is None and settings.proposer == "native":
        from fastrcnn_cli.proposals import native

        native.load()  # torch and the operator are loaded (built, the first time) before any image is timed
    results: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for path in paths:
        try:
            timing = Timing()
            t0 = time.perf_counter()
            if import_mat is not None:
                size = image_size(path)
                mat = import_mat
                if import_mat.is_dir():
                    mat = next((c for c in (import_mat / f"{path.stem}_boxes.mat", import_mat / f"{path.stem}.mat")
                                if c.is_file()), import_mat / f"{path.stem}_boxes.mat")
                boxes = load_proposal_file(mat, layout, size)
                source = f"imported from {mat}"
            else:
                boxes, size = proposals_for_file(path, settings, timing)
                source = "Selective Search"
            seconds = time.perf_counter() - t0
            entry: dict[str, Any] = {
                "image": str(path), "width": size[0], "height": size[1], "proposals": int(len(boxes)),
                "seconds": round(seconds, 4), "source": source,
            }
            if import_mat is None:
                ws, hs = scaled_size(size[0], size[1], settings.max_side)
                entry["searched_at"] = [ws, hs]
                entry["timing"] = {"read": round(timing.read, 4), "resize": round(timing.resize, 4),
                                   "selective_search": round(timing.search, 4)}
                err.print(
                    f"{path}: {len(boxes)} proposals in {seconds:.2f} s (read {timing.read:.2f} s, Selective Search "
                    f"{timing.search:.2f} s at {ws} x {hs}; {settings.describe()})",
                    highlight=False,
                )
            else:
                err.print(f"{path}: {len(boxes)} proposals {source}", highlight=False)
            if out is not None:
                target = _drawing_target(out, path, len(paths))
                write_image(target, _drawing(path, boxes, draw))
                entry["drawn"] = str(target)
                err.print(f"drew the first {min(draw, len(boxes))} boxes on {target}", highlight=False)
            entry["boxes"] = boxes.round(2).tolist()
            results.append(entry)
        except (cv2.error, ValueError, TypeError, OverflowError, OSError) as exc:  # an odd file: skip it, named
            error = InputError(f"cannot be read or converted ({type(exc).__name__}: {exc})", path)
            if len(paths) == 1:
                raise error from None
            failed.append({"image": str(path), "error": str(error)})
            err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        except FastRCNNError as exc:
            if len(paths) == 1:
                raise
            failed.append({"image": str(path), "error": str(exc)})
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
    if json_:
        print_json({
            "settings": settings.to_dict() if import_mat is None else None,
            "opencv": opencv_version(),
            "box_convention": BOX_CONVENTION,
            "images": results,
            "failed": failed,
        })
    if failed:
        raise InputError(f"{len(failed)} of {len(paths)} images failed (listed above)")


def _drawing_target(out: Path, image: Path, count: int) -> Path:
    """Where --out draws ``image``'s boxes: OUT itself for one image (PNG when it has no suffix), else
    OUT/<stem>_proposals.png."""
    target = out / f"{image.stem}_proposals.png" if count > 1 else out
    return target if target.suffix else target.with_suffix(".png")


def _dataset(
    data: Path, split: str, settings: ProposalSettings, workers: int | None, cache: Path | None, shard: str | None,
    recall: bool, import_mat: Path | None, layout: str, classes: str | None, strict: bool, json_: bool,
    fmt: str | None = None, interop: _Interop = _Interop(None, None, None),
) -> None:
    from fastrcnn_cli.console import err, print_json, warn
    from fastrcnn_cli.data.voc import load_dataset, parse_classes_option, read_split_ids
    from fastrcnn_cli.proposals.cache import (
        default_cache_dir,
        imported_cache_dir,
        parse_shard,
        print_failures,
        run_proposals,
        shard_records,
    )

    try:
        shard_spec = parse_shard(shard) if shard else None
    except InputError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None
    splits = list(dict.fromkeys(s.strip() for s in split.split(",") if s.strip()))
    if not splits:
        raise typer.BadParameter("name a split", param_hint="--split")
    if import_mat is not None and len(splits) > 1 and not import_mat.is_dir():
        raise typer.BadParameter(
            "a per-data-set .mat file belongs to one split; give one --split", param_hint="--split"
        )
    if import_mat is not None and interop.source is not None:
        raise typer.BadParameter("give --import-mat or --import-proposals, not both", param_hint="--import-proposals")
    for name, value in (("--import-proposals", interop.source), ("--export-proposals", interop.target)):
        if value is not None and shard_spec is not None:
            raise typer.BadParameter(f"{name} works on the whole split, not a shard", param_hint=name)
    if interop.source is not None and not interop.source.is_file():
        raise InputError("no such proposal file", interop.source)
    if interop.target is not None:
        from fastrcnn_cli.outputs import check_output_file

        check_output_file(interop.target, "--export-proposals", [interop.source, import_mat])
    class_names = parse_classes_option(classes)
    datasets = [load_dataset(data, s, class_names, strict=strict, format=fmt) for s in splits]
    dataset = datasets[0]
    records: list[ImageRecord] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for ds in datasets:  # several splits: their union, in order, each image once
        for record in ds.records:
            if record.id not in seen:
                seen.add(record.id)
                records.append(record)
        skipped += [i for i in (getattr(ds.report, "skipped_ids", None) or []) if i not in skipped]
    total = len(records)
    if shard_spec is not None:
        records = shard_records(records, *shard_spec)
        err.print(f"shard {shard_spec[0]}/{shard_spec[1]}: {len(records)} of {total} images")
    payload: dict[str, Any] = {"dataset": str(dataset.root), "split": split,
                               "shard": list(shard_spec) if shard_spec else None}
    failures: list[Any] = []
    # the split file's order (MMDetection's and the .mat files' entries follow it); several splits: the records'
    files_in_order = import_mat is not None or interop.source is not None or interop.target is not None
    one_split_ids = read_split_ids(dataset.root, split, fmt) if len(splits) == 1 and files_in_order else None
    if interop.source is not None and not _is_mat(interop.source):
        proposals, cache_dir = _import_proposals(interop.source, records, cache, dataset.root, one_split_ids, payload)
    elif (import_mat or interop.source) is not None:
        from fastrcnn_cli.proposals.matlab import import_mat as do_import

        import_mat = import_mat or interop.source
        assert import_mat is not None
        cache_dir = cache or imported_cache_dir(dataset.root, import_mat)
        imported, cache_dir = do_import(
            import_mat, records, cache_dir, split_ids=one_split_ids, layout=layout,
            dataset_root=dataset.root,
        )
        proposals = imported.boxes
        for problem in imported.problems:
            warn(problem)
        n = [len(b) for b in proposals.values()]
        err.print(
            f"imported {len(proposals)} of {len(records)} images from {import_mat} (read as {imported.layout}, "
            f"matched by {imported.matched_by}; {sum(n) / max(len(n), 1):.0f} boxes/image) -> {cache_dir}",
            highlight=False,
        )
        payload.update(cache=str(cache_dir), source=str(import_mat), layout=imported.layout,
                       matched_by=imported.matched_by, images=len(records), imported=len(proposals),
                       extra_entries=imported.extra_entries, problems=imported.problems)
    elif cache is not None and _holds_imported(cache):
        proposals = _read_imported(cache, records, payload)
        cache_dir = cache
    else:
        cache_dir = cache or default_cache_dir(dataset.root, settings)
        run = run_proposals(records, settings, cache_dir, workers, dataset_root=dataset.root)
        proposals = run.proposals
        failures = run.failed
        payload.update(run.to_dict())
        if run.computed:
            spi = run.seconds_per_image_per_worker or 0.0
            err.print(
                f"computed {run.computed} images in {run.wall_seconds:.1f} s with {run.workers} "
                f"worker{'s' if run.workers > 1 else ''}: {run.images_per_second or 0:.2f} images/s, "
                f"{spi:.3f} s per image per worker ({run.cpu_seconds_per_image or 0:.3f} s CPU); "
                f"{run.cached} were cached; "
                f"{payload['mean_proposals_per_image']:.0f} proposals/image -> {run.cache_dir}",
                highlight=False,
            )
        print_failures(failures)
    payload["skipped_by_validation"] = skipped
    if skipped:
        warn(f"{len(skipped)} images of {split!r} failed validation and have no proposals "
             f"(listed above): {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
    if recall:
        from fastrcnn_cli.proposals.recall import proposal_recall

        report = proposal_recall(records, proposals, dataset.classes)
        err.print(_recall_table(report))
        err.print(report.summary(), highlight=False)
        payload["recall"] = report.to_dict()
    if interop.target is not None and interop.format is not None:
        payload["export"] = _export(interop.target, interop.format, records, cache_dir, one_split_ids)
    if json_:
        print_json(payload)
    if failures:
        message = f"{len(failures)} of {len(records)} images have no proposals (listed above); the others are cached"
        if strict:
            raise DatasetError(message, path=dataset.root)
        raise FastRCNNError(message)


def _is_mat(path: Path) -> bool:
    from fastrcnn_cli.proposals.interop import is_mat_file

    return is_mat_file(path)


def _import_proposals(
    source: Path, records: list[ImageRecord], cache: Path | None, root: Path, split_ids: list[str] | None,
    payload: dict[str, Any],
) -> tuple[dict[str, np.ndarray], Path]:
    """--import-proposals of a Detectron2 or MMDetection file: into the cache, said on stderr and in ``payload``."""
    from fastrcnn_cli.console import err, warn
    from fastrcnn_cli.proposals.cache import imported_cache_dir
    from fastrcnn_cli.proposals.interop import import_proposals

    cache_dir = cache or imported_cache_dir(root, source)
    imported, cache_dir = import_proposals(source, records, cache_dir, split_ids=split_ids, dataset_root=root)
    for problem in imported.problems:
        warn(problem)
    n = [len(b) for b in imported.boxes.values()]
    n_extra = imported.extra_entries
    extra = f"; {n_extra} {'entry' if n_extra == 1 else 'entries'} for images not in the split" if n_extra else ""
    err.print(
        f"imported {len(imported.boxes)} of {len(records)} images from {source} ({imported.format}, matched by "
        f"{imported.matched_by}{extra}; {sum(n) / max(len(n), 1):.0f} boxes/image) -> {cache_dir}",
        highlight=False,
    )
    payload.update(cache=str(cache_dir), source=str(source), format=imported.format, matched_by=imported.matched_by,
                   images=len(records), imported=len(imported.boxes), extra_entries=imported.extra_entries,
                   problems=imported.problems)
    return imported.boxes, cache_dir


def _holds_imported(cache: Path) -> bool:
    from fastrcnn_cli.proposals.cache import SOURCE_IMPORTED, ProposalCache

    meta = ProposalCache.read_meta(cache) if cache.is_dir() else None
    return meta is not None and meta.get("source") == SOURCE_IMPORTED


def _read_imported(cache: Path, records: list[ImageRecord], payload: dict[str, Any]) -> dict[str, np.ndarray]:
    """The boxes of a --proposal-cache of imported proposals (nothing is computed into it)."""
    from fastrcnn_cli.console import err, warn
    from fastrcnn_cli.proposals.cache import ProposalCache, load_imported

    meta = ProposalCache.read_meta(cache) or {}
    proposals, missing = load_imported(ProposalCache(cache, meta), records)
    if missing:
        warn(f"{len(missing)} images have no imported proposals in {cache}: {', '.join(missing[:10])}"
             + (" ..." if len(missing) > 10 else ""))
    err.print(f"read {len(proposals)} of {len(records)} images from {cache} (imported from "
              f"{meta.get('imported_from', 'a file')}; nothing computed)", highlight=False)
    payload.update(cache=str(cache), source=meta.get("imported_from"), images=len(records), imported=len(proposals),
                   missing=missing)
    return proposals


def _export(
    target: Path, fmt: str, records: list[ImageRecord], cache_dir: Path, split_ids: list[str] | None
) -> dict[str, Any]:
    """--export-proposals: the split's proposals, from the cache, as a ``fmt`` file."""
    from fastrcnn_cli.console import err, warn
    from fastrcnn_cli.proposals.interop import export_proposals

    done = export_proposals(target, fmt, records, cache_dir, split_ids=split_ids)
    if done.empty:
        warn(f"{len(done.empty)} images have no proposals and are {'left out' if fmt == 'mat' else 'written empty'}: "
             f"{', '.join(done.empty[:10])}{' ...' if len(done.empty) > 10 else ''}")
    scores = f"; {done.ranked} images scored by rank (no scores of their own)" if done.ranked else ""
    err.print(f"wrote {done.images} images, {done.boxes} boxes, as {fmt} proposals to {target}{scores}",
              highlight=False)
    return done.to_dict()


def _merge(sources: list[Path], out: Path | None, json_: bool) -> None:
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.proposals.cache import merge_caches

    if out is None:
        raise typer.BadParameter(
            "--merge writes into --proposal-cache OUT; give --proposal-cache", param_hint="--proposal-cache"
        )
    summary = merge_caches(sources, out)
    err.print(
        f"merged {len(sources)} caches into {summary.out}: {summary.copied} images copied, "
        f"{summary.identical} already there; {summary.total} images in all",
        highlight=False,
    )
    if json_:
        print_json(summary.to_dict())


#: drawings of larger images are made on a copy downscaled to this longer side
MAX_DRAWING_SIDE = 4096


def _drawing(path: Path, boxes: np.ndarray, count: int) -> np.ndarray:
    """The image with the first ``count`` boxes; huge images are drawn on a downscaled copy (said on stderr)."""
    import cv2

    from fastrcnn_cli.console import err
    from fastrcnn_cli.proposals.draw import draw_proposals
    from fastrcnn_cli.proposals.selective_search import read_image_for_proposals, scaled_size

    image, (w, h) = read_image_for_proposals(path, MAX_DRAWING_SIDE)
    ws, hs = scaled_size(w, h, MAX_DRAWING_SIDE)
    if (image.shape[1], image.shape[0]) != (ws, hs):
        image = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
    if (ws, hs) != (w, h):
        err.print(f"the image is {w} x {h}: drawing on a copy downscaled to {ws} x {hs}", highlight=False)
        f = ws / w
        boxes = (boxes + 0.5) * f - 0.5  # pixel centres, for display only
    return draw_proposals(image, boxes, count)


def _recall_table(report: RecallReport) -> Table:
    """``--recall``'s table: recall at each IoU threshold and ABO per class, then all classes and MABO."""
    from rich.table import Table

    from fastrcnn_cli.proposals.recall import fmt

    table = Table(
        title=f"Proposal recall: {report.num_images} images, {report.mean_proposals:.0f} proposals/image",
        caption=(
            f"difficult boxes excluded ({report.difficult_excluded}); "
            "ABO = average best overlap, MABO = mean of the classes' ABO"
            + (f"; {len(report.missing_images)} images had no proposals" if report.missing_images else "")
        ),
    )
    table.add_column("class")
    table.add_column("boxes", justify="right")
    for t in report.thresholds:
        table.add_column(f"recall@{t:g}", justify="right")
    table.add_column("ABO", justify="right")
    for c in report.per_class:
        table.add_row(c.name, str(c.num_boxes), *(fmt(c.recall[t]) for t in report.thresholds), fmt(c.abo))
    o = report.overall
    table.add_section()
    table.add_row(
        "[bold]all[/bold]", str(o.num_boxes), *(f"[bold]{fmt(o.recall[t])}[/bold]" for t in report.thresholds),
        f"[bold]{fmt(o.abo)}[/bold]",
    )
    table.add_row("MABO", "", *("" for _ in report.thresholds), f"[bold]{fmt(report.mabo)}[/bold]")
    return table

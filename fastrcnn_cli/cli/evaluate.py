"""``fastrcnn evaluate``: PASCAL VOC AP of a model (or of saved detections) on a data set split.

Classes. The model's classes (or those of a ``--detections`` file) are matched to the data set's **by name**, so
their order does not matter. Without ``--classes`` the two sets must be equal; otherwise the command stops with
exit code 1 and names the classes the model lacks and the ones the data set lacks. ``--classes a,b`` evaluates
just those classes, which both must know: the model's other classes are dropped from its detections and the data
set's other classes are not scored (per-class AP depends on that class's boxes and detections only, so every
image of the split still counts).

Output folder (``--out``, default a new ``runs/eval``, ``runs/eval2``, ...): ``results.json`` (what ``--json``
prints), ``pr.png`` (precision-recall per class, ``--plot`` to put it elsewhere) and ``detections.npz`` (the raw
detections, ``--save-detections`` to put them elsewhere; format: :func:`fastrcnn_cli.evaluation.save_detections`).
``fastrcnn evaluate DATA --split test --detections runs/eval/detections.npz`` re-scores them without the model.

``results.json`` / ``--json``: :meth:`fastrcnn_cli.evaluation.VOCResult.to_dict` (protocol, headline, map,
map_voc07, map_area, iou_threshold, num_images, notes, and per class name, ap_voc07, ap_area, positives,
difficult, detections, tp, fp, ignored, recall, precision; undefined values are null) plus ``data``, ``split``,
``images``, ``evaluated_classes``, ``weights`` and ``settings`` (or ``detections`` and ``detections_meta`` when
re-scoring), ``saved_detections``, ``plot`` and ``times`` (seconds: load_data, proposals, detection, network,
postprocess, evaluation, total).

Detection follows the evaluation protocol of training's periodic evaluation (the same
:func:`fastrcnn_cli.detect.detect_dataset` and :func:`fastrcnn_cli.evaluation.evaluate_voc`): score floor
:data:`fastrcnn_cli.detect.EVAL_SCORE_THRESHOLD`, NMS 0.3, 100 detections per image, the checkpoint's test scale
and proposal settings, proposals from the ``fastrcnn propose`` cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, StrictOption, WeightsOption, command, examples
from fastrcnn_cli.cli.propose import PROPOSER_HELP, Proposer

if TYPE_CHECKING:  # numpy is imported where it is used: `fastrcnn --help` does not need it
    import numpy as np

_DATA, _MODEL, _OUT, _PROPOSALS = "Data", "Model", "Output", "Proposals"
METRICS = ("voc07", "area")


@dataclass
class _GroundTruth:
    """An image's ground truth restricted to the evaluated classes (what :func:`evaluate_voc` reads)."""

    id: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def resolve_eval_classes(
    source: Sequence[str], data: Sequence[str], requested: Sequence[str] | None, source_name: str = "the model"
) -> tuple[str, ...]:
    """The classes to evaluate, by name: ``requested`` (each known to both), or the data set's when the two
    sets are equal. Raises a :class:`CheckpointError` (or :class:`InputError` for a detections file) that names
    the missing and extra classes."""
    from fastrcnn_cli.errors import CheckpointError, InputError

    error = CheckpointError if source_name == "the model" else InputError
    src, dat = list(source), list(data)
    if requested:
        not_in_data = [c for c in requested if c not in dat]
        not_in_source = [c for c in requested if c not in src]
        problems = []
        if not_in_data:
            problems.append(f"the data set has no class {', '.join(not_in_data)} (it has: {', '.join(dat)})")
        if not_in_source:
            problems.append(f"{source_name} has no class {', '.join(not_in_source)} (it has: {', '.join(src)})")
        if problems:
            raise error("--classes: " + "; ".join(problems))
        return tuple(requested)
    if set(src) == set(dat):
        return tuple(dat)
    lacking = [c for c in dat if c not in src]
    extra = [c for c in src if c not in dat]
    shared = [c for c in dat if c in src]
    parts = [f"the classes of {source_name} do not match the data set's"]
    if lacking:
        parts.append(f"{source_name} lacks {', '.join(lacking)}")
    if extra:
        parts.append(f"the data set lacks {', '.join(extra)}")
    hint = (
        f"; to score the {len(shared)} shared class(es) only, add --classes {','.join(shared)}"
        if shared
        else "; they share no class: is this the right model for this data set?"
    )
    raise error(": ".join(parts[:1]) + ": " + "; ".join(parts[1:]) + hint)


def _index_map(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """source label -> target label, -1 where the source class is not evaluated."""
    import numpy as np

    return np.array([list(target).index(c) if c in target else -1 for c in source], dtype=np.int64)


def remap_detections(detections: Sequence[Any], source: Sequence[str], target: Sequence[str]) -> list[Any]:
    """Detections with labels into ``source`` -> labels into ``target`` (classes not in ``target`` dropped)."""
    from fastrcnn_cli.evaluation import Detections

    mapping = _index_map(source, target)
    out = []
    for det in detections:
        labels = mapping[det.labels] if len(det) else det.labels
        keep = labels >= 0
        out.append(Detections(det.image_id, det.boxes[keep], det.scores[keep], labels[keep]))
    return out


def restrict_ground_truth(records: Sequence[Any], source: Sequence[str], target: Sequence[str]) -> list[_GroundTruth]:
    """Ground truth with labels into the data set's classes -> into ``target`` (other classes' boxes left out)."""
    mapping = _index_map(source, target)
    out = []
    for r in records:
        labels = mapping[r.labels] if len(r.labels) else mapping[:0]
        keep = labels >= 0
        out.append(_GroundTruth(r.id, r.boxes[keep], labels[keep], r.difficult[keep]))
    return out


@command(
    "evaluate",
    flags={"scales": "--scale"},
    epilog=examples(
        "fastrcnn evaluate VOCdevkit/VOC2007 --split test --weights runs/train/best.pt",
        "fastrcnn evaluate shapes/ --split test   [dim]# the shipped model on a synthetic test split[/dim]",
        "fastrcnn evaluate VOC2007/ --split test --detections runs/eval/detections.npz   [dim]# re-score, no model[/dim]",
        "fastrcnn evaluate my_data/ --split test -w best.pt --classes dog,cat --metric area --json > ap.json",
    ),
)
def evaluate(
    data: Annotated[
        Path, typer.Argument(help="A VOC-format data set (VOC2007/, VOCdevkit/ or any JPEGImages/ + Annotations/ + ImageSets/Main/).")
    ],
    split: Annotated[str, typer.Option("--split", "-s", help="Split to evaluate on.", rich_help_panel=_DATA)] = "test",
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Evaluate only these classes (comma-separated or a file), matched by name; needed when the model's "
            "classes and the data set's differ.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    strict: StrictOption = False,
    weights: WeightsOption = None,
    detections: Annotated[
        Path | None,
        typer.Option("--detections", help="Re-score detections saved by an earlier evaluate (no model is run).", rich_help_panel=_MODEL),
    ] = None,
    scale: Annotated[
        list[int] | None,
        typer.Option("--scale", parser=ranges.PIXELS, help="Test scale; repeat for multi-scale (default: the checkpoint's training scale).", rich_help_panel=_MODEL),
    ] = None,
    max_size: Annotated[int | None, typer.Option("--max-size", parser=ranges.PIXELS, help="Longer side cap (default: the checkpoint's).", rich_help_panel=_MODEL)] = None,
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(parser=ranges.THREADS, help="CPU threads for torch (default: all cores).", rich_help_panel=_MODEL)] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Headline AP: voc07 (11-point) or area (default: voc07 for VOC2007 data, else area).", rich_help_panel=_OUT),
    ] = None,
    iou: Annotated[float, typer.Option("--iou", parser=ranges.POSITIVE_FRACTION, help="IoU for a true positive (>=).", rich_help_panel=_OUT)] = 0.5,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: a new runs/eval, runs/eval2, ...).", rich_help_panel=_OUT)
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Precision-recall PNG (default: OUT/pr.png).", rich_help_panel=_OUT)] = None,
    save_detections: Annotated[
        Path | None, typer.Option("--save-detections", help="Raw detections file (default: OUT/detections.npz).", rich_help_panel=_OUT)
    ] = None,
    json_: JsonOption = False,
    proposal_cache: Annotated[
        Path | None, typer.Option(help="Proposal cache folder (default: per data set, in the user cache).", rich_help_panel=_PROPOSALS)
    ] = None,
    workers: Annotated[
        int | None, typer.Option(parser=ranges.WORKERS, help="Processes computing missing proposals (default: all cores).", rich_help_panel=_PROPOSALS)
    ] = None,
    proposer: Annotated[
        Proposer | None,
        typer.Option("--proposer", help=PROPOSER_HELP + " Default: as in training.", show_default=False, rich_help_panel=_PROPOSALS),
    ] = None,
) -> None:
    """Average precision per class and mAP on a data set split, with the PASCAL VOC protocol.

    IoU >= 0.5 with +1-pixel areas; difficult boxes neither counted nor penalised; a second detection of a box
    is a false positive. Both the VOC07 11-point AP and the area AP are reported; the headline is VOC07 for
    VOC 2007 data, area otherwise. Detection as in training's evaluation: proposals from the `fastrcnn propose`
    cache (computed when missing), score floor 0.001, NMS 0.3, 100 detections per image.

    Writes results.json, pr.png and detections.npz to a new runs/eval folder (--out to choose); --detections
    re-scores a saved detections.npz without the model. Classes are matched by name; when the model's and the
    data set's differ, exit code 1 names them (use --classes to score the shared ones).
    """
    import time

    import torch

    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.voc import load_dataset, parse_classes_option, resolve_root
    from fastrcnn_cli.errors import InputError
    from fastrcnn_cli.evaluation import evaluate_voc, headline_for, load_detections, plot_precision_recall, render_table

    t_start = time.perf_counter()
    if metric is not None and metric not in METRICS:
        raise typer.BadParameter(f"choose voc07 or area, not {metric!r}", param_hint="--metric")
    if detections is not None and weights is not None:
        raise InputError("give --weights (run the model) or --detections (re-score saved detections), not both")
    if detections is not None and (scale or max_size or save_detections):
        raise InputError(
            "--scale, --max-size and --save-detections apply when the model runs; --detections re-scores saved detections"
        )
    requested = parse_classes_option(classes)
    resolve_root(data)  # a wrong folder fails before anything slow
    _check_outputs(out, plot, save_detections, [weights, detections])
    if threads:
        torch.set_num_threads(threads)

    saved = None
    if detections is not None:
        saved = load_detections(detections)  # before the data set: a wrong file fails fast
        source_classes: tuple[str, ...] = tuple(saved.classes)
        source_name = f"the detections file {detections}"
    else:
        from fastrcnn_cli.devices import resolve_device
        from fastrcnn_cli.model.checkpoint import resolve_weights
        from fastrcnn_cli.onnx_backend import load_network

        dev = resolve_device(device)
        weights = resolve_weights(weights)
        model, meta = load_network(weights, dev)  # a checkpoint (PyTorch) or an exported .onnx (ONNX Runtime)
        source_classes = tuple(meta.classes)
        source_name = "the model"

    t_data = time.perf_counter()
    dataset = load_dataset(data, split, None, strict=strict)
    eval_classes = resolve_eval_classes(source_classes, dataset.classes, requested, source_name)
    times: dict[str, float] = {"load_data": time.perf_counter() - t_data}
    headline = metric or headline_for(dataset.root)

    run_dir = out
    try:
        if run_dir is None:
            from fastrcnn_cli.train import new_run_dir

            run_dir = new_run_dir(DEFAULT_RUNS, "eval")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror or exc})", run_dir or DEFAULT_RUNS) from None
    plot_path = plot or run_dir / "pr.png"

    info: dict[str, Any] = {"data": str(dataset.root), "split": split, "images": len(dataset), "evaluated_classes": list(eval_classes)}
    if saved is not None:
        dets = saved.detections
        info["detections"] = str(detections)
        info["detections_meta"] = saved.meta
        made_on = saved.meta.get("split"), saved.meta.get("data")
        err.print(
            f"re-scoring {sum(len(d) for d in dets)} saved detections of {len(dets)} images"
            + (f" (made on split {made_on[0]!r} of {made_on[1]})" if made_on[0] else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        have = {d.image_id for d in dets}
        missing = [r.id for r in dataset.records if r.id not in have]
        if missing:
            from fastrcnn_cli.console import warn

            warn(f"{len(missing)} of {len(dataset)} images of split {split!r} have no entry in {detections}: "
                 "they count as images without detections")
    else:
        from fastrcnn_cli.detect import EVAL_SCORE_THRESHOLD, DetectSettings, Detector, detect_dataset, proposal_settings_from_meta
        from fastrcnn_cli.devices import describe_device
        from fastrcnn_cli.evaluation import save_detections as write_detections
        from fastrcnn_cli.proposals import load_or_compute_proposals

        settings = DetectSettings.for_checkpoint(meta, scale, max_size, score_threshold=EVAL_SCORE_THRESHOLD, classes=eval_classes)
        proposal_settings = proposal_settings_from_meta(meta, proposer=proposer.value if proposer else None)
        err.print(
            f"evaluating {weights} on {dataset.root} split {split!r} ({len(dataset)} images, {len(eval_classes)} classes) "
            f"on {describe_device(dev)}" + (f" with {model.runtime}" if not isinstance(model, torch.nn.Module) else "")
            + f"; scale {'/'.join(str(s) for s in settings.scales)}, max size {settings.max_size}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        t = time.perf_counter()
        proposals = load_or_compute_proposals(dataset, proposal_settings, proposal_cache, workers)
        times["proposals"] = time.perf_counter() - t
        detector = Detector(model, settings, dev, proposal_settings)
        t = time.perf_counter()
        dets, stage = detect_dataset(detector, dataset.records, proposals, EVAL_SCORE_THRESHOLD, "detecting")
        times["detection"] = time.perf_counter() - t
        times["network"] = stage.network
        times["postprocess"] = stage.postprocess
        if stage.proposals:  # images missing from the proposal cache were searched on the fly
            times["proposals"] += stage.proposals
        det_path = save_detections or run_dir / "detections.npz"
        write_detections(
            det_path,
            dets,
            source_classes,
            meta={
                "weights": str(weights),
                "data": str(dataset.root),
                "split": split,
                "settings": settings.to_dict(),
                "proposals": proposal_settings.to_dict(),  # type: ignore[attr-defined]
            },
        )
        info["weights"] = str(weights)
        info["settings"] = settings.to_dict()
        info["saved_detections"] = str(det_path)

    t = time.perf_counter()
    result = evaluate_voc(
        remap_detections(dets, source_classes, eval_classes),
        restrict_ground_truth(dataset.records, dataset.classes, eval_classes),
        eval_classes,
        iou,
        headline=headline,  # type: ignore[arg-type]
    )
    times["evaluation"] = time.perf_counter() - t
    plot_precision_recall(result, plot_path)
    times["total"] = time.perf_counter() - t_start

    from fastrcnn_cli.io import atomic_write_json

    payload = {**result.to_dict(), **info, "plot": str(plot_path), "times": {k: round(v, 3) for k, v in times.items()}}
    atomic_write_json(run_dir / "results.json", payload)
    err.print(render_table(result))
    n = max(len(dataset), 1)
    if saved is None:
        timing = (
            f"proposals {times['proposals']:.1f} s, network {times['network']:.1f} s "
            f"({1000 * times['network'] / n:.0f} ms/image), post-processing {times['postprocess']:.2f} s, "
        )
    else:
        timing = ""
    err.print(
        f"mAP {_pct(result.map)} ({headline}) on {len(dataset)} images in {times['total']:.1f} s: {timing}"
        f"AP computation {times['evaluation']:.2f} s; wrote {run_dir}/results.json, {plot_path}"
        + (f", {info['saved_detections']}" if saved is None else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if json_:
        print_json(payload)


DEFAULT_RUNS = Path("runs")


def _check_outputs(out: Path | None, plot: Path | None, save_detections: Path | None, inputs: list) -> None:
    """Before the model runs: every output can be written and none is an input (weights, detections)."""
    from fastrcnn_cli.outputs import check_output_file, check_output_folder

    check_output_folder(out if out is not None else DEFAULT_RUNS, "--out", inputs)
    if plot is not None:
        check_output_file(plot, "--plot", [*inputs, save_detections])
    if save_detections is not None:
        check_output_file(save_detections, "--save-detections", inputs)


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100.0 * x:.2f}"

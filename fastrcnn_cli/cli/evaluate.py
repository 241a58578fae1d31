"""``fastrcnn evaluate``: PASCAL VOC AP (or the COCO metrics) of a model (or of saved detections) on a data set split.

Parse the options into :class:`fastrcnn_cli.evaluate.EvaluateSettings`, call
:func:`fastrcnn_cli.evaluate.run_evaluate`, render: the table (:mod:`fastrcnn_cli.cli.render_eval`), ``pr.png``,
``results.json`` and a summary line.

Classes. The model's classes (or those of a ``--detections`` file) are matched to the data set's **by name**, so
their order does not matter. Without ``--classes`` the two sets must be equal; otherwise the command stops with
exit code 1 and names the classes the model lacks and the ones the data set lacks. ``--classes a,b`` evaluates
just those classes, which both must know: the model's other classes are dropped from its detections and the data
set's other classes are not scored (per-class AP depends on that class's boxes and detections only, so every
image of the split still counts).

Output folder (``--out``, default a new ``runs/eval``, ``runs/eval2``, ...): ``results.json`` (what ``--json``
prints), ``pr.png`` (precision-recall per class, ``--plot`` to put it elsewhere) and ``detections.npz`` (the raw
detections, ``--save-detections`` to put them elsewhere; format: :func:`fastrcnn_cli.detections.save_detections`).
``fastrcnn evaluate DATA --split test --detections runs/eval/detections.npz`` re-scores them without the model.
With ``--metric coco`` also ``coco_gt.json`` and ``coco_results.json``, the two files pycocotools reads.

The data set is VOC, COCO or YOLO, detected from the folder (``--data-format`` to say which); its negative
images (no objects) count the false positives on them.

``results.json`` / ``--json``: :meth:`fastrcnn_cli.evaluate.EvaluateResult.to_dict` (protocol, headline, map,
map_voc07, map_area as fractions in [0, 1], iou_threshold, num_images, notes, and per class name, ap_voc07,
ap_area, positives, difficult, detections, tp, fp, ignored, recall, precision; undefined values are null) plus
``data``, ``split``, ``images``, ``evaluated_classes``, ``weights``, ``settings`` and ``proposals`` (or
``detections`` and ``detections_meta`` when re-scoring), ``saved_detections``, ``plot`` and ``times`` (seconds:
load_data_s, proposals_s, detection_s, network_s, postprocess_s, evaluation_s, total_s). With ``--metric coco``:
``headline`` "coco", ``map`` the COCO AP @[.5:.95], ``coco`` (ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1,
ar10, ar100, ar_small, ar_medium, ar_large as fractions, per class ap and ap50; undefined values null) and
``coco_files``.

Detection follows the evaluation protocol of training's periodic evaluation (the same
:func:`fastrcnn_cli.pipeline.evaluate_split`): score floor :data:`fastrcnn_cli.detect.EVAL_SCORE_THRESHOLD`, 100
detections per image, the checkpoint's test scale, NMS IoU and proposal settings (the options override them),
proposals from the ``fastrcnn propose`` cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import DeviceOption, JsonOption, StrictOption, WeightsOption, command, examples
from fastrcnn_cli.cli.options import (
    MODEL_PANEL,
    PROPOSAL_FLAGS,
    DataFormat,
    DataFormatOption,
    MaxSizeOption,
    NmsOption,
    ProposalChoices,
    ScaleOption,
    ThreadsOption,
    WorkersOption,
    data_format as format_name,
    proposal_options,
    split_option,
)
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.outputs import check_output_file, check_output_folder

_DATA, _OUT = "Data", "Output"
DEFAULT_RUNS = Path("runs")


@command(
    "evaluate",
    flags={**PROPOSAL_FLAGS, "iou_threshold": "--iou"},
    epilog=examples(
        "fastrcnn evaluate VOCdevkit/VOC2007 --split test --weights runs/train/best.pt",
        "fastrcnn evaluate shapes/ --split test   [dim]# the shipped model on a synthetic test split[/dim]",
        "fastrcnn evaluate VOC2007/ --split test --detections runs/eval/detections.npz   [dim]# re-score, no model[/dim]",
        "fastrcnn evaluate my_data/ --split test -w best.pt --classes dog,cat --metric area --json > ap.json",
        "fastrcnn evaluate coco/ --split val2017 -w best.pt --metric coco   [dim]# pycocotools: AP @[.5:.95], AP50, ...[/dim]",
        "fastrcnn evaluate roboflow_yolo/ --split valid -w best.pt --data-format yolo",
    ),
)
@proposal_options
def evaluate(
    data: Annotated[
        Path,
        typer.Argument(help="A data set folder: VOC (JPEGImages/ + Annotations/ + ImageSets/Main/), COCO "
                            "(annotations/instances_<split>.json) or YOLO (images/ + labels/, data.yaml)."),
    ],
    split: Annotated[str, split_option("Split to evaluate on.")] = "test",
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
    data_format: DataFormatOption = DataFormat.auto,
    weights: WeightsOption = None,
    detections: Annotated[
        Path | None,
        typer.Option("--detections", help="Re-score detections saved by an earlier evaluate (no model is run).",
                     rich_help_panel=MODEL_PANEL),
    ] = None,
    scale: ScaleOption = None,
    max_size: MaxSizeOption = None,
    nms: NmsOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="Headline AP: voc07 (11-point), area (both at --iou; default: voc07 for VOC2007 data, else area) or "
            "coco (pycocotools: AP @[.5:.95], AP50, AP75, by object size, AR; writes OUT/coco_gt.json and "
            "OUT/coco_results.json).",
            rich_help_panel=_OUT,
        ),
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
    workers: WorkersOption = None,
    *,
    proposals: ProposalChoices,
) -> None:
    """Average precision per class and mAP on a data set split, with the PASCAL VOC protocol (or COCO's).

    IoU >= 0.5 with +1-pixel areas; difficult boxes neither counted nor penalised; a second detection of a box
    is a false positive. Both the VOC07 11-point AP and the area AP are reported; the headline is VOC07 for
    VOC 2007 data, area otherwise. Detection as in training's evaluation: proposals from the `fastrcnn propose`
    cache (computed when missing) with the checkpoint's settings, score floor 0.001, the model's NMS IoU, 100
    detections per image.

    --metric coco scores the same detections with pycocotools (COCO's AP @[.5:.95] as the headline, AP50,
    AP75, AP and AR by object size) and writes the coco_gt.json and coco_results.json it read. Data sets in
    VOC, COCO or YOLO format; detections on negative images (no objects) are false positives. A class with no
    ground truth has no AP (n/a, left out of the mean).

    Writes results.json, pr.png and detections.npz to a new runs/eval folder (--out to choose); --detections
    re-scores a saved detections.npz without the model. Classes are matched by name; when the model's and the
    data set's differ, exit code 1 names them (use --classes to score the shared ones).
    """
    from fastrcnn_cli.console import err, print_json  # Rich: kept out of `fastrcnn --help`'s start-up

    import torch

    from fastrcnn_cli.cli.render_eval import map_text, pct, plot_precision_recall, render_coco_table, render_table
    from fastrcnn_cli.data.voc import parse_classes_option, resolve_root
    from fastrcnn_cli.evaluate import METRICS, EvaluateSettings, run_evaluate
    from fastrcnn_cli.io import atomic_write_json
    from fastrcnn_cli.pipeline import ProposalOverrides

    if metric is not None and metric not in METRICS:
        raise typer.BadParameter(f"choose {', '.join(METRICS)}, not {metric!r}", param_hint="--metric")
    if detections is not None and weights is not None:
        raise InputError("give --weights (run the model) or --detections (re-score saved detections), not both")
    if detections is not None and (scale or max_size or nms is not None or save_detections):
        raise InputError(
            "--scale, --max-size, --nms and --save-detections apply when the model runs; --detections re-scores saved "
            "detections"
        )
    settings = EvaluateSettings(
        data=data,
        split=split,
        classes=parse_classes_option(classes),
        strict=strict,
        weights=weights,
        detections=detections,
        scale=tuple(scale) if scale else None,
        max_size=max_size,
        nms=nms,
        device=device,
        metric=metric,  # type: ignore[arg-type]  # checked above
        iou_threshold=iou,
        out=out,
        save_detections=save_detections,
        proposal_cache=proposals.cache,
        workers=workers,
        proposals=ProposalOverrides(**proposals.overrides),
        runs_dir=DEFAULT_RUNS,
        data_format=format_name(data_format),
    )
    resolve_root(data, settings.data_format)  # a wrong folder fails before anything slow
    _check_outputs(out, plot, save_detections, [weights, detections])
    if threads:
        torch.set_num_threads(threads)

    result = run_evaluate(settings)

    plot_path = plot or result.run_dir / "pr.png"
    plot_precision_recall(result.voc, plot_path)
    payload = {**result.to_dict(), "plot": str(plot_path)}
    atomic_write_json(result.run_dir / "results.json", payload)
    err.print(render_table(result.voc) if result.coco is None else render_coco_table(result.coco))
    t = result.seconds
    timing = ""
    if result.split_evaluation is not None:
        n = max(result.num_images, 1)
        timing = (
            f"proposals {t['proposals_s']:.1f} s, network {t['network_s']:.1f} s "
            f"({1000 * t['network_s'] / n:.0f} ms/image), post-processing {t['postprocess_s']:.2f} s, "
        )
    headline = f"{map_text(result.voc.map)} ({result.voc.headline})"
    written = [f"{result.run_dir}/results.json", str(plot_path)]
    if result.coco is not None and result.coco_files is not None:
        headline = (f"COCO {map_text(result.coco.map)} (AP @[.5:.95]; AP50 {pct(result.coco.stats['ap50'])} %; "
                    f"VOC {result.voc.headline} {pct(result.voc.map)} %)")
        written += [str(f) for f in result.coco_files]
    if result.detections_path is not None:
        written.append(str(result.detections_path))
    err.print(
        f"{headline} on {result.num_images} images in {t['total_s']:.1f} s: "
        f"{timing}AP computation {t['evaluation_s']:.2f} s; wrote {', '.join(written)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if json_:
        print_json(payload)


def _check_outputs(out: Path | None, plot: Path | None, save_detections: Path | None, inputs: list) -> None:
    """Before the model runs: every output can be written and none is an input (weights, detections)."""
    check_output_folder(out if out is not None else DEFAULT_RUNS, "--out", inputs)
    if plot is not None:
        check_output_file(plot, "--plot", [*inputs, save_detections])
    if save_detections is not None:
        check_output_file(save_detections, "--save-detections", inputs)

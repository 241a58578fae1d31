"""How an evaluation looks to people: the per-class AP tables (VOC's, COCO's) and the precision-recall plot.

Every mAP and AP shown here is a percentage with one decimal ("mAP 89.8 %"); the JSON documents keep the
fractions (:meth:`fastrcnn_cli.evaluation.VOCResult.to_dict`, :meth:`fastrcnn_cli.coco_metrics.COCOResult.to_dict`).
A class without positives has no AP: its row says so ("no ground truth", or "only difficult" / "only crowd"
boxes) and shows n/a, and it is left out of the mean (the caption names it).
"""

from __future__ import annotations

import io
import math
import os
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from fastrcnn_cli.evaluation import HEADLINE_NAMES, VOCResult
from fastrcnn_cli.io import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from fastrcnn_cli.coco_metrics import COCOResult


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal ("89.8"), "n/a" when undefined (NaN or None)."""
    return "n/a" if x is None or math.isnan(x) else f"{100.0 * x:.1f}"


def map_text(x: float | None) -> str:
    """The mAP as every human-facing output shows it: "mAP 89.8 %"."""
    return f"mAP {pct(x)} %" if x is not None and not math.isnan(x) else "mAP n/a"


def class_cell(name: str, num_positives: int, num_ignored: int, ignored: str = "difficult") -> Text:
    """A class's name (never read as markup), with why its AP is undefined when it has no positives: no
    ground truth at all, or only ``ignored`` boxes (difficult, crowd)."""
    text = Text(name)
    if num_positives == 0:
        text.append(f" (only {ignored})" if num_ignored else " (no ground truth)", style="dim")
    return text


def render_table(result: VOCResult) -> Table:
    """A Rich table: per class AP (VOC07 11-point and area, in %), positives, detections, TP/FP and recall,
    then the mAP row; the headline column is bold, the protocol (and any notes) is the caption."""
    bold07 = "bold" if result.headline == "voc07" else ""
    bold_area = "bold" if result.headline == "area" else ""
    table = Table(
        title=f"{map_text(result.map)} ({HEADLINE_NAMES[result.headline]}, {result.num_images} images)",
        caption="\n".join([result.protocol, *result.notes]),
        caption_justify="left",
    )
    table.add_column("class")
    table.add_column("AP07 %", justify="right", style=bold07, header_style=bold07 or None)
    table.add_column("AP area %", justify="right", style=bold_area, header_style=bold_area or None)
    table.add_column("positives", justify="right")
    table.add_column("difficult", justify="right")
    table.add_column("detections", justify="right")
    table.add_column("TP / FP", justify="right")
    table.add_column("recall %", justify="right")
    for i, c in enumerate(result.classes):
        table.add_row(
            class_cell(c.name, c.num_positives, c.num_difficult),
            pct(c.ap_voc07),
            pct(c.ap_area),
            str(c.num_positives),
            str(c.num_difficult),
            str(c.num_detections),
            f"{c.tp} / {c.fp}",
            pct(c.recall),
            end_section=i == len(result.classes) - 1,
        )
    table.add_row(
        "mAP",
        pct(result.map_voc07),
        pct(result.map_area),
        str(sum(c.num_positives for c in result.classes)),
        str(sum(c.num_difficult for c in result.classes)),
        str(sum(c.num_detections for c in result.classes)),
        f"{sum(c.tp for c in result.classes)} / {sum(c.fp for c in result.classes)}",
        "",
        style="bold",
    )
    return table


def render_coco_table(result: COCOResult) -> Group:
    """The COCO metrics: the twelve numbers of ``COCOeval.summarize``, then AP and AP50 per class (percent, one
    decimal); the protocol (and any notes) is the caption."""
    from fastrcnn_cli.coco_metrics import STAT_LABELS, STATS

    title = Text(f"COCO {map_text(result.map)} (AP @[.5:.95], {result.num_images} images)", style="bold")
    summary = Table()
    summary.add_column("metric")
    summary.add_column("%", justify="right")
    for name in STATS:
        summary.add_row(STAT_LABELS[name], pct(result.stats[name]), style="bold" if name == "ap" else "",
                        end_section=name == "ap_large")
    per_class = Table(caption="\n".join([result.protocol, *result.notes]), caption_justify="left")
    per_class.add_column("class")
    per_class.add_column("AP %", justify="right")
    per_class.add_column("AP50 %", justify="right")
    per_class.add_column("positives", justify="right")
    per_class.add_column("crowd", justify="right")
    per_class.add_column("detections", justify="right")
    for c in result.classes:
        per_class.add_row(class_cell(c.name, c.num_positives, c.num_crowd, "crowd"), pct(c.ap), pct(c.ap50),
                          str(c.num_positives), str(c.num_crowd), str(c.num_detections))
    return Group(title, summary, per_class)


def _thin(n: int, limit: int = 4000) -> np.ndarray:
    """At most ``limit`` indices spread over 0 .. n-1, always keeping the last point."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def plot_precision_recall(result: VOCResult, path: str | os.PathLike) -> None:
    """Write a PNG with one precision-recall panel per class (the raw curve and its monotone envelope, the
    area of which is the area AP), AP in each title, mAP and protocol on top. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(result.classes), 1)
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.0 * cols, 2.7 * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(result.classes) :]:
        ax.set_axis_off()
    for ax, c in zip(axes.flat, result.classes):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if not c.defined:
            ax.set_title(f"{c.name}: no positives", fontsize=9)
            continue
        ax.set_title(f"{c.name}  AP07 {pct(c.ap_voc07)} %  area {pct(c.ap_area)} %", fontsize=9)
        if c.recall_curve.size:
            keep = _thin(c.recall_curve.size)
            rec = c.recall_curve[keep]
            envelope = np.maximum.accumulate(c.precision_curve[::-1])[::-1][keep]
            ax.plot(rec, c.precision_curve[keep], lw=0.8, color="tab:blue", label="precision")
            # the envelope's value at point k holds on (r(k-1), r(k)]: the area under this step is the area AP
            ax.step(np.r_[0.0, rec], np.r_[envelope[:1], envelope], where="pre", lw=1.0, ls="--",
                    color="tab:orange", label="envelope")
    if any(c.defined and c.recall_curve.size for c in result.classes):
        fig.legend(*next(ax for ax in axes.flat if ax.lines).get_legend_handles_labels(), loc="outside lower center",
                   ncols=2, fontsize=8, frameon=False)
    for ax in axes.flat[: len(result.classes)]:
        ax.set_xlabel("recall", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    other = ("area AP", result.map_area) if result.headline == "voc07" else ("VOC07 11-point AP", result.map_voc07)
    fig.suptitle(
        f"{map_text(result.map)} ({HEADLINE_NAMES[result.headline]}; {other[0]} {pct(other[1])} %), "
        f"{result.num_images} images\n{result.protocol}",
        fontsize=9,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())

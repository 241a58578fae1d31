"""A run's plots from its metrics rows: ``loss.png`` (the multi-task loss and the "knows nothing" level),
``health.png`` (gradient norms, live head units) and ``map.png`` (held-out mAP, in percent)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastrcnn_cli.io import atomic_write_bytes


def plot_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """loss.png, health.png and map.png from the metrics rows (``metrics.csv``'s, fractions for mAP)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(name: str, factor: float = 1.0) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            v = r.get(name)
            if v not in (None, ""):
                xs.append(float(r["iteration"]))
                ys.append(float(v) * factor)
        return xs, ys

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("loss", "total"), ("loss_cls", "classification"), ("loss_loc", "box regression")):
        ax.plot(*col(name), label=label)
    ax.plot(*col("prior_loss"), linestyle="--", color="grey", label="knows nothing (prior loss)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title("Fast R-CNN multi-task loss")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, run_dir / "loss.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("grad_norm", "gradient norm"), ("grad_norm_backbone", "backbone"), ("grad_norm_head", "head")):
        ax.plot(*col(name), label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("gradient norm (before clipping)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    for name, label, style in (("fc6_active", "fc6 units alive", ":"), ("fc7_active", "fc7 units alive", "-.")):
        right.plot(*col(name), linestyle=style, color="black", label=label)
    right.set_ylim(0, 1.05)
    right.set_ylabel("share of head units alive")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower left")
    ax.set_title("training health")
    _save(fig, run_dir / "health.png")

    xs, _ = col("map_voc07")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*col("map_voc07", 100.0), marker="o", label="mAP (VOC07 11-point)")
    ax.plot(*col("map_area", 100.0), marker="s", label="mAP (area)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mAP @ IoU 0.5 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("held-out mAP" if xs else "held-out mAP (no evaluation yet)")
    _save(fig, run_dir / "map.png")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

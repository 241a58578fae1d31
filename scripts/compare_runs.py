"""Plot the training health of several runs side by side, from their ``metrics.csv``.

    python scripts/compare_runs.py runs/train runs/train2 --out compare.png [--labels old new]

Three panels against the iteration: the classification loss divided by the prior loss (1.0 is what a
network that knows nothing scores), the gradient norm before clipping (log scale), and the share of fc7 units
that any RoI of a batch activates. This is how issue 20's diagnosis (docs/training.md) was drawn.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("loss_cls")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with metrics.csv)")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: the folder names)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="training health")
    args = parser.parse_args()
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error("give one label per run")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run, label in zip(args.runs, labels):
        rows = read(run)
        it = [float(r["iteration"]) for r in rows]
        axes[0].plot(it, [float(r["loss_cls"]) / float(r["prior_loss"]) for r in rows], label=label)
        axes[1].plot(it, [float(r["grad_norm"]) for r in rows], label=label)
        axes[2].plot(it, [float(r["fc7_active"]) for r in rows], label=label)
    axes[0].axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes[0].set_ylabel("classification loss / prior loss")
    axes[1].set_ylabel("gradient norm (before clipping)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("fc7 units alive")
    axes[2].set_ylim(0, 1.05)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()

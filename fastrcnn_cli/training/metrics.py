"""A run's ``metrics.csv``: one row per log interval (losses, learning rate, gradient norms, live head units,
speed), with the mAP columns filled on evaluation rows.

mAP columns hold fractions in [0, 1] (as every file of the project); people see percentages (the log lines and
``map.png``). The columns stay as they are, so older runs still plot and resume.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fastrcnn_cli.io import atomic_write_text

METRIC_FIELDS = [
    "iteration", "epoch", "loss", "loss_cls", "loss_loc", "prior_loss", "lr", "fg_fraction", "grad_norm", "grad_norm_backbone",
    "grad_norm_head", "fc6_active", "fc7_active", "images_per_s", "elapsed_s", "map_voc07", "map_area", "warning",
]  # fmt: skip


def read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Every row, atomically (a reader never sees half a file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())

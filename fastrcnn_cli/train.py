"""Start or resume a training run: :func:`train`, the one entry point of :mod:`fastrcnn_cli.training`.

A run writes to a fresh folder (``runs/train``, ``runs/train2``, ...): ``args.json`` (the resolved settings),
``validation.txt``, ``metrics.csv`` (a row per log interval; mAP columns on evaluation rows), ``loss.png``,
``health.png`` and ``map.png``, and the checkpoints ``last.pt`` (every ``checkpoint_every`` iterations, at the
end and on Ctrl-C) and ``best.pt`` (best evaluation mAP), all written atomically. ``resume`` continues exactly.
The names scripts and tests use are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from fastrcnn_cli import progress
from fastrcnn_cli.errors import InputError, OutputError
from fastrcnn_cli.interrupts import Interrupted
from fastrcnn_cli.model.safe_load import check_weights_file
from fastrcnn_cli.outputs import check_output_folder, probe_writable
from fastrcnn_cli.run_dir import new_run_dir
from fastrcnn_cli.training.data import epoch_order
from fastrcnn_cli.training.hooks import HookBase
from fastrcnn_cli.training.settings import EVAL_AUTO, EVAL_NONE, TrainSettings, read_run_settings
from fastrcnn_cli.training.solver import learning_rate
from fastrcnn_cli.training.trainer import Trainer, TrainResult

__all__ = [
    "EVAL_AUTO", "EVAL_NONE", "HookBase", "Interrupted", "TrainResult", "TrainSettings", "Trainer",
    "epoch_order", "find_resume_checkpoint", "learning_rate", "new_run_dir", "read_run_settings", "train",
]  # fmt: skip


def find_resume_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run folder, last.pt) for ``resume`` given a run folder or a checkpoint inside one."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "last.pt"
        if not ckpt.is_file():
            raise InputError("no last.pt in this run folder (nothing to resume)", path)
        return path, ckpt
    if path.is_file():
        return path.parent, path
    raise InputError("no such run folder or checkpoint", path)


def train(
    settings: TrainSettings | None = None,
    resume: str | Path | None = None,
    iterations: int | None = None,
    hooks: Sequence[HookBase] = (),
) -> TrainResult:
    """Train from scratch (``settings``) or resume a run (``resume``: its folder or ``last.pt``).

    When resuming, the run's own ``args.json`` gives the settings; ``iterations`` may extend the run.
    ``hooks``: more hooks around the loop (:class:`~fastrcnn_cli.training.trainer.Trainer`).
    """
    if resume is not None:
        run_dir, ckpt = find_resume_checkpoint(resume)
        args = run_dir / "args.json"
        if not args.is_file():
            raise InputError("no args.json next to the checkpoint (not a fastrcnn run folder)", run_dir)
        saved = read_run_settings(args)
        if iterations is not None:
            saved = dataclasses.replace(saved, iterations=iterations)
        probe_writable(run_dir)  # last.pt and metrics.csv go back there
        trainer = Trainer(saved, run_dir=run_dir, resume=ckpt, hooks=hooks)
        progress.info(f"resuming {run_dir} at iteration {trainer.iteration} of {trainer.settings.iterations}")
        return trainer.run()
    if settings is None:
        raise ValueError("give settings, or a run to resume")
    if iterations is not None:
        settings = dataclasses.replace(settings, iterations=iterations)
    # absolute paths in args.json, so a run can be resumed from any folder
    settings = dataclasses.replace(
        settings,
        data=str(Path(settings.data).expanduser().resolve()),
        proposal_cache=str(Path(settings.proposal_cache).resolve()) if settings.proposal_cache else None,
        backbone_weights=str(Path(settings.backbone_weights).resolve()) if settings.backbone_weights else None,
    )
    settings.validate()
    # what can fail cheaply fails first: the runs folder must accept files, and a backbone weights file must be
    # readable without unpickling anything (a file that holds pickled code is refused, never run)
    check_output_folder(settings.runs_dir, "the runs folder")
    if settings.pretrained and settings.backbone_weights:
        check_weights_file(settings.backbone_weights)
    trainer = Trainer(settings, hooks=hooks)  # validates data and builds everything before a run folder exists
    if trainer.dist.is_main:
        try:
            trainer.run_dir = new_run_dir(settings.runs_dir, settings.name)
        except OSError as exc:
            raise OutputError(f"cannot create a run folder here ({exc.strerror or exc})", settings.runs_dir) from None
    return trainer.run()

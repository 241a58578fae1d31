"""``fastrcnn train``: every number of the paper's training procedure is an option with the paper's default.

The options are generated from :class:`~fastrcnn_cli.training.settings.TrainSettings` (:mod:`fastrcnn_cli.cli.fields`):
a new setting there is a new option here, with the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fastrcnn_cli.cli.app import ClassesOption, DeviceOption, JsonOption, StrictOption, command, examples
from fastrcnn_cli.cli.fields import field_help, settings_options
from fastrcnn_cli.cli.options import PROPOSAL_OPTIONS, DataFormatOption, ThreadsOption
from fastrcnn_cli.training.settings import RUN, TrainSettings

if TYPE_CHECKING:
    from fastrcnn_cli.training.hooks import HookBase


def show_evaluations() -> HookBase:
    """A hook that prints each periodic evaluation's per-class table (made here, so that the command line
    imports the training modules, and torch, only when it trains)."""
    from fastrcnn_cli.cli.render_eval import render_table
    from fastrcnn_cli.console import err
    from fastrcnn_cli.training.hooks import HookBase

    class ShowEvaluations(HookBase):
        def before_train(self) -> None:
            self.shown: object = self.trainer.last_evaluation

        def after_step(self) -> None:
            evaluation = self.trainer.last_evaluation
            if evaluation is not None and evaluation is not self.shown:
                self.shown = evaluation
                err.print(render_table(evaluation.voc))

    return ShowEvaluations()


@command(
    "train",
    epilog=examples(
        "fastrcnn train my-data/ --backbone efficientnet-lite0   [dim]# recommended: the small-data recipe, CPU-friendly[/dim]",
        "fastrcnn train my-data/ --backbone efficientnet-lite0 --time-budget 15   [dim]# fit the schedule to 15 minutes[/dim]",
        "fastrcnn train VOCdevkit/VOC2007   [dim]# the paper's VGG16 recipe (needs the VGG16 ImageNet weights)[/dim]",
        "fastrcnn make-synthetic shapes/ && fastrcnn train shapes/ --backbone efficientnet-lite0 --epochs 3",
        "fastrcnn train --resume runs/train3   [dim]# continue exactly where it stopped[/dim]",
        "torchrun --nproc-per-node 2 -m fastrcnn_cli train VOC2007/ --device cuda   [dim]# data-parallel[/dim]",
    ),
)
@settings_options(
    TrainSettings,
    exclude={"data", "classes"},
    shared={
        "strict": StrictOption,
        "device": DeviceOption,
        "data_format": DataFormatOption,
        **PROPOSAL_OPTIONS,
    },
)
def train(
    data: Annotated[Path | None, typer.Argument(help=field_help(TrainSettings, "data"), show_default=False)] = None,
    classes: ClassesOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue a run: its folder or its last.pt (its own settings are used; --iterations may "
                     "extend it).", rich_help_panel=RUN),
    ] = None,
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    *,
    options: dict[str, Any],
) -> None:
    """Train a Fast R-CNN detector on a VOC-format data set: one network, one multi-task loss, end to end.

    Hierarchical sampling (2 images, 64 RoIs each, 25% foreground), horizontal flips, softmax + smooth L1,
    SGD with momentum and a step schedule. What is left unset comes from a recipe: the paper's for vgg16,
    'small-data' for efficientnet-lite0 (a schedule in epochs, warm-up, clipping, scale and colour jitter).
    Validation (best.pt) uses the 'val' split or a fixed held-out part of the training split, never the
    test split unless named. Writes a new run folder (runs/train, runs/train2, ...) with args.json,
    validation.txt, metrics.csv (losses, gradient norms, warnings), loss.png, map.png, last.pt and best.pt.
    Ctrl-C saves last.pt; --resume continues exactly. A NaN/inf loss stops with exit code 4; data set
    problems with --strict exit with code 3. Then: fastrcnn evaluate DATA --split test --weights RUN/best.pt.
    """
    import torch

    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.errors import InputError
    from fastrcnn_cli.interrupts import Interrupted
    from fastrcnn_cli.train import train as run_training

    if threads is not None:
        torch.set_num_threads(threads)
    hooks = (show_evaluations(),)
    try:
        if resume is not None:
            result = run_training(resume=resume, iterations=options["iterations"], hooks=hooks)
        else:
            if data is None:
                raise InputError("give a data set folder (or --resume RUN)")
            settings = TrainSettings(data=str(data), classes=parse_classes_option(classes), **options)
            result = run_training(settings, hooks=hooks)
    except Interrupted as exc:
        if exc.resumable is None:
            raise
        raise Interrupted(f"{exc} Resume with: fastrcnn train --resume {exc.resumable}") from None
    if result.run_dir is None:  # a non-zero rank of a distributed run: process 0 reports
        return
    if json_:
        print_json(result.to_dict())
        return
    best = f", best mAP {100 * result.best_map:.1f} %" if result.best_map is not None else ""
    err.print(
        f"done: {result.iterations} iterations in {result.seconds / 60:.1f} min "
        f"({result.images_per_s:.2f} images/s){best}; checkpoints in {result.run_dir}"
    )
    final = result.best or result.last
    err.print(f"report the test split once, at the end: fastrcnn evaluate DATA --split test --weights {final}")

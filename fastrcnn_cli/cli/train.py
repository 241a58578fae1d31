"""``fastrcnn train``: every number of the paper's training procedure is an option with the paper's default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli import ranges
from fastrcnn_cli.cli.app import ClassesOption, DeviceOption, JsonOption, StrictOption, command, examples
from fastrcnn_cli.cli.propose import PROPOSER_HELP, Proposer

_DATA, _MODEL, _SAMPLING, _SOLVER, _RUN, _PROPOSALS = "Data", "Model", "Sampling", "Solver", "Run", "Proposals"


@command(
    "train",
    flags={"warmup_iterations": "--warmup", "lr_steps": "--lr-step", "scales": "--scale", "holdout_fraction": "--holdout",
           "proposal_proposer": "--proposer"},
    epilog=examples(
        "fastrcnn train my-data/ --backbone efficientnet-lite0   [dim]# recommended: the small-data recipe, CPU-friendly[/dim]",
        "fastrcnn train my-data/ --backbone efficientnet-lite0 --time-budget 15   [dim]# fit the schedule to 15 minutes[/dim]",
        "fastrcnn train VOCdevkit/VOC2007   [dim]# the paper's VGG16 recipe (needs the VGG16 ImageNet weights)[/dim]",
        "fastrcnn make-synthetic shapes/ && fastrcnn train shapes/ --backbone efficientnet-lite0 --epochs 3",
        "fastrcnn train --resume runs/train3   [dim]# continue exactly where it stopped[/dim]",
        "torchrun --nproc-per-node 2 -m fastrcnn_cli train VOC2007/ --device cuda   [dim]# data-parallel[/dim]",
    ),
)
def train(
    data: Annotated[
        Path | None,
        typer.Argument(help="A VOC-format data set (VOC2007/, VOCdevkit/ or any JPEGImages/ + Annotations/ + ImageSets/Main/)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", "-s", help="Training split.", rich_help_panel=_DATA)] = "trainval",
    eval_split: Annotated[
        str,
        typer.Option(
            help="Validation for periodic evaluation and best.pt: 'auto' (the 'val' split, else a fixed held-out "
            "part of the training split), a split name ('test' warns: selecting on test inflates it), or 'none'.",
            rich_help_panel=_DATA,
        ),
    ] = "auto",
    holdout: Annotated[
        float, typer.Option(parser=ranges.number(0.0, 1.0, lo_open=True, hi_open=True), help="Share of the training split held out for validation when there is no 'val' split.", rich_help_panel=_DATA)
    ] = 0.12,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Defaults for everything below left unset: 'paper' (VGG16 / VOC 2007: lr 0.001, 40k iterations, "
            "scale 600) or 'small-data' (efficientnet-lite0 on a few hundred images). Default: vgg16 -> paper, "
            "efficientnet-lite0 -> small-data.",
            rich_help_panel=_SOLVER,
        ),
    ] = None,
    classes: ClassesOption = None,
    strict: StrictOption = False,
    backbone: Annotated[
        str, typer.Option(help="vgg16 (the paper's) or efficientnet-lite0 (fast on a CPU, weights ship offline).", rich_help_panel=_MODEL)
    ] = "vgg16",
    backbone_weights: Annotated[
        Path | None, typer.Option(help="ImageNet weights file for the backbone (default: torch hub cache / packaged).", rich_help_panel=_MODEL)
    ] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained/--no-pretrained", help="Start from ImageNet weights (--no-pretrained: random init).", rich_help_panel=_MODEL)
    ] = True,
    backbone_cut: Annotated[
        str | None, typer.Option(help="efficientnet-lite0 only: stage5 (112 ch) or dilated (320 ch).", rich_help_panel=_MODEL)
    ] = None,
    frozen_stages: Annotated[
        int | None, typer.Option(parser=ranges.count(0, 10), help="Leading stages not trained (vgg16: 2 = conv1..conv2, as in the paper).", rich_help_panel=_MODEL)
    ] = None,
    hidden: Annotated[
        int | None, typer.Option(parser=ranges.count(1, 65536), help="fc6/fc7 width (default 4096 for vgg16, 1024 for efficientnet-lite0).", rich_help_panel=_MODEL)
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(parser=ranges.number(0.0, 1.0, hi_open=True), help="Dropout after fc6 and fc7 (default 0.5 for vgg16, 0 otherwise).", rich_help_panel=_MODEL)
    ] = None,
    images_per_batch: Annotated[int, typer.Option(parser=ranges.count(1, 1024), help="N: images per mini-batch (per process).", rich_help_panel=_SAMPLING)] = 2,
    rois_per_image: Annotated[int, typer.Option(parser=ranges.count(1, 100_000), help="R / N: RoIs sampled per image.", rich_help_panel=_SAMPLING)] = 64,
    fg_fraction: Annotated[float, typer.Option(parser=ranges.POSITIVE_FRACTION, help="Share of foreground RoIs.", rich_help_panel=_SAMPLING)] = 0.25,
    fg_iou: Annotated[float, typer.Option(parser=ranges.FRACTION, help="Foreground: IoU with a ground truth >= this.", rich_help_panel=_SAMPLING)] = 0.5,
    bg_iou_low: Annotated[float, typer.Option(parser=ranges.FRACTION, help="Background: IoU in [this, --bg-iou-high).", rich_help_panel=_SAMPLING)] = 0.1,
    bg_iou_high: Annotated[float, typer.Option(parser=ranges.FRACTION, help="Upper bound of background IoU.", rich_help_panel=_SAMPLING)] = 0.5,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Add horizontally flipped images.", rich_help_panel=_SAMPLING)] = True,
    scale: Annotated[
        list[int] | None, typer.Option("--scale", parser=ranges.PIXELS, help="Shorter side in pixels; repeat for multi-scale training (recipe: 600, or 416-544).", rich_help_panel=_SAMPLING)
    ] = None,
    max_size: Annotated[int | None, typer.Option(parser=ranges.PIXELS, help="Longer side cap in pixels (recipe: 1000 or 800).", rich_help_panel=_SAMPLING)] = None,
    photometric: Annotated[
        float | None, typer.Option(parser=ranges.number(0.0, 1.0, hi_open=True), help="Brightness/contrast/saturation jitter strength, 0 = off (recipe: 0 or 0.2).", rich_help_panel=_SAMPLING)
    ] = None,
    test_scale: Annotated[
        int | None, typer.Option(parser=ranges.PIXELS, help="Scale for evaluation and the saved model's detect default (default: the training scale, or 600 with several).", rich_help_panel=_SAMPLING)
    ] = None,
    lr: Annotated[float | None, typer.Option(parser=ranges.number(0.0, 100.0, lo_open=True), help="Base learning rate (recipe: 0.001 or 0.01).", rich_help_panel=_SOLVER)] = None,
    momentum: Annotated[float, typer.Option(parser=ranges.number(0.0, 1.0, hi_open=True), rich_help_panel=_SOLVER)] = 0.9,
    weight_decay: Annotated[float | None, typer.Option(parser=ranges.number(0.0, 1.0), help="Recipe: 0.0005 or 0.0001.", rich_help_panel=_SOLVER)] = None,
    backbone_lr_factor: Annotated[
        float | None, typer.Option(parser=ranges.number(0.0, 1000.0), help="Learning-rate multiplier of the backbone (recipe: 1 or 0.1).", rich_help_panel=_SOLVER)
    ] = None,
    clip_grad_norm: Annotated[
        float | None, typer.Option(parser=ranges.number(0.0, lo_open=True, allow_inf=True), help="Clip the gradient's global norm to this; inf = off (recipe: off or 10).", rich_help_panel=_SOLVER)
    ] = None,
    bias_lr_factor: Annotated[float, typer.Option(parser=ranges.number(0.0, 1000.0), help="Learning-rate multiplier of biases (no weight decay on them).", rich_help_panel=_SOLVER)] = 2.0,
    lr_step: Annotated[
        list[int] | None, typer.Option("--lr-step", parser=ranges.count(0, ranges.MAX_INT), help="Iteration where the lr is multiplied by --gamma; repeatable (recipe: at 3/4 of the run).", rich_help_panel=_SOLVER)
    ] = None,
    gamma: Annotated[float, typer.Option(parser=ranges.number(0.0, 1000.0, lo_open=True), rich_help_panel=_SOLVER)] = 0.1,
    iterations: Annotated[int | None, typer.Option(parser=ranges.count(1, ranges.MAX_INT), help="Total SGD iterations (recipe: 40000, or 5 epochs and at least 1200).", rich_help_panel=_SOLVER)] = None,
    epochs: Annotated[
        float | None, typer.Option(parser=ranges.number(0.0, 1_000_000.0, lo_open=True), help="Schedule length in epochs (an epoch: each training image and its mirror once).", rich_help_panel=_SOLVER)
    ] = None,
    time_budget: Annotated[
        float | None, typer.Option(parser=ranges.number(0.0, 10_000_000.0, lo_open=True), help="Minutes: fit the schedule to this from the measured speed (evaluations included).", rich_help_panel=_SOLVER)
    ] = None,
    warmup: Annotated[int | None, typer.Option(parser=ranges.count(0, ranges.MAX_INT), help="Linear warm-up iterations from lr/10 (recipe: 0 or 200).", rich_help_panel=_SOLVER)] = None,
    eval_every: Annotated[int | None, typer.Option(parser=ranges.count(0, ranges.MAX_INT), help="Evaluate every this many iterations (0: at the end only; default: 4 per run).", rich_help_panel=_RUN)] = None,
    checkpoint_every: Annotated[int, typer.Option(parser=ranges.count(1, ranges.MAX_INT), help="Write last.pt every this many iterations.", rich_help_panel=_RUN)] = 1000,
    log_every: Annotated[int, typer.Option(parser=ranges.count(1, ranges.MAX_INT), help="Iterations per metrics row / log line.", rich_help_panel=_RUN)] = 20,
    seed: Annotated[int, typer.Option(parser=ranges.SEED, rich_help_panel=_RUN)] = 0,
    device: DeviceOption = "auto",
    amp: Annotated[
        bool,
        typer.Option(
            "--amp/--no-amp",
            help="Mixed precision (float16) on CUDA. Off by default: on an H100 it diverged at lr 0.01 where "
            "float32 trained.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.", rich_help_panel=_RUN)] = Path("runs"),
    name: Annotated[str, typer.Option(help="Run folder name (train, train2, ...).", rich_help_panel=_RUN)] = "train",
    resume: Annotated[
        Path | None, typer.Option(help="Continue a run: its folder or its last.pt (its own settings are used).", rich_help_panel=_RUN)
    ] = None,
    threads: Annotated[int | None, typer.Option(parser=ranges.THREADS, help="CPU threads for torch (default: all cores).", rich_help_panel=_RUN)] = None,
    proposal_mode: Annotated[str, typer.Option(help="Selective Search mode: fast or quality.", rich_help_panel=_PROPOSALS)] = "fast",
    proposal_max_side: Annotated[int, typer.Option(parser=ranges.count(16, 100_000), help="Selective Search works on images resized to this longer side.", rich_help_panel=_PROPOSALS)] = 500,
    proposal_top: Annotated[int, typer.Option(parser=ranges.count(1, 100_000), help="Proposals kept per image.", rich_help_panel=_PROPOSALS)] = 2000,
    proposal_cache: Annotated[Path | None, typer.Option(help="Proposal cache folder (default: per data set, in the user cache).", rich_help_panel=_PROPOSALS)] = None,
    workers: Annotated[int | None, typer.Option(parser=ranges.WORKERS, help="Processes computing missing proposals (default: all cores).", rich_help_panel=_PROPOSALS)] = None,
    proposer: Annotated[Proposer, typer.Option("--proposer", help=PROPOSER_HELP, rich_help_panel=_PROPOSALS)] = Proposer.opencv,
    json_: JsonOption = False,
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
    from fastrcnn_cli.train import TrainSettings
    from fastrcnn_cli.train import train as run_training

    if threads is not None:
        torch.set_num_threads(threads)
    if resume is not None:
        result = run_training(resume=resume, iterations=iterations)
    else:
        if data is None:
            raise InputError("give a data set folder (or --resume RUN)")
        settings = TrainSettings(
            data=str(data),
            split=split,
            eval_split=eval_split,
            holdout_fraction=holdout,
            recipe=recipe,
            classes=parse_classes_option(classes),
            strict=strict,
            backbone=backbone,
            pretrained=pretrained,
            backbone_cut=backbone_cut,
            frozen_stages=frozen_stages,
            backbone_weights=str(backbone_weights) if backbone_weights else None,
            hidden=hidden,
            dropout=dropout,
            images_per_batch=images_per_batch,
            rois_per_image=rois_per_image,
            fg_fraction=fg_fraction,
            fg_iou=fg_iou,
            bg_iou_low=bg_iou_low,
            bg_iou_high=bg_iou_high,
            flip=flip,
            scales=tuple(scale) if scale else None,
            max_size=max_size,
            photometric=photometric,
            test_scale=test_scale,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            bias_lr_factor=bias_lr_factor,
            backbone_lr_factor=backbone_lr_factor,
            clip_grad_norm=clip_grad_norm,
            lr_steps=tuple(lr_step) if lr_step else None,
            gamma=gamma,
            iterations=iterations,
            epochs=epochs,
            time_budget=time_budget,
            warmup_iterations=warmup,
            eval_every=eval_every,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            seed=seed,
            device=device,
            amp=amp,
            runs_dir=str(runs_dir),
            name=name,
            proposal_mode=proposal_mode,
            proposal_max_side=proposal_max_side,
            proposal_top=proposal_top,
            proposal_cache=str(proposal_cache) if proposal_cache else None,
            workers=workers,
            proposal_proposer=proposer.value,
        )
        result = run_training(settings)
    if result.run_dir is None:  # a non-zero rank of a distributed run: process 0 reports
        return
    summary = {
        "run_dir": str(result.run_dir),
        "iterations": result.iterations,
        "seconds": round(result.seconds, 1),
        "images_per_s": round(result.images_per_s, 3),
        "best_map": result.best_map,
        "last": str(result.last),
        "best": str(result.best) if result.best else None,
    }
    if json_:
        print_json(summary)
    else:
        best = f", best mAP {result.best_map:.4f}" if result.best_map is not None else ""
        err.print(
            f"done: {result.iterations} iterations in {result.seconds / 60:.1f} min "
            f"({result.images_per_s:.2f} images/s){best}; checkpoints in {result.run_dir}"
        )
        final = result.best or result.last
        err.print(f"report the test split once, at the end: fastrcnn evaluate DATA --split test --weights {final}")

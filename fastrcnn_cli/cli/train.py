"""``fastrcnn train``: every number of the paper's training procedure is an option with the paper's default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastrcnn_cli.cli.app import ClassesOption, DeviceOption, JsonOption, StrictOption, command, examples

_DATA, _MODEL, _SAMPLING, _SOLVER, _RUN, _PROPOSALS = "Data", "Model", "Sampling", "Solver", "Run", "Proposals"


@command(
    "train",
    epilog=examples(
        "fastrcnn train VOCdevkit/VOC2007   [dim]# the paper's VGG16 settings (needs the VGG16 ImageNet weights)[/dim]",
        "fastrcnn train ../shared/datasets/raccoon --backbone efficientnet-lite0 --iterations 1500 --lr 0.01 "
        "--lr-step 1100 --scale 480 --max-size 800 --eval-every 500",
        "fastrcnn make-synthetic shapes/ && fastrcnn train shapes/ --backbone efficientnet-lite0 --eval-split val",
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
        str, typer.Option(help="Held-out split for evaluation ('none' to skip).", rich_help_panel=_DATA)
    ] = "test",
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
        int | None, typer.Option(help="Leading stages not trained (vgg16: 2 = conv1..conv2, as in the paper).", rich_help_panel=_MODEL)
    ] = None,
    hidden: Annotated[
        int | None, typer.Option(help="fc6/fc7 width (default 4096 for vgg16, 1024 for efficientnet-lite0).", rich_help_panel=_MODEL)
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(help="Dropout after fc6 and fc7 (default 0.5 for vgg16, 0 otherwise).", rich_help_panel=_MODEL)
    ] = None,
    images_per_batch: Annotated[int, typer.Option(help="N: images per mini-batch (per process).", rich_help_panel=_SAMPLING)] = 2,
    rois_per_image: Annotated[int, typer.Option(help="R / N: RoIs sampled per image.", rich_help_panel=_SAMPLING)] = 64,
    fg_fraction: Annotated[float, typer.Option(help="Share of foreground RoIs.", rich_help_panel=_SAMPLING)] = 0.25,
    fg_iou: Annotated[float, typer.Option(help="Foreground: IoU with a ground truth >= this.", rich_help_panel=_SAMPLING)] = 0.5,
    bg_iou_low: Annotated[float, typer.Option(help="Background: IoU in [this, --bg-iou-high).", rich_help_panel=_SAMPLING)] = 0.1,
    bg_iou_high: Annotated[float, typer.Option(help="Upper bound of background IoU.", rich_help_panel=_SAMPLING)] = 0.5,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Add horizontally flipped images.", rich_help_panel=_SAMPLING)] = True,
    scale: Annotated[
        list[int] | None, typer.Option("--scale", help="Shorter side in pixels; repeat for multi-scale training (default 600).", rich_help_panel=_SAMPLING)
    ] = None,
    max_size: Annotated[int, typer.Option(help="Longer side cap in pixels.", rich_help_panel=_SAMPLING)] = 1000,
    test_scale: Annotated[
        int | None, typer.Option(help="Scale for evaluation and the saved model's detect default (default: the training scale, or 600 with several).", rich_help_panel=_SAMPLING)
    ] = None,
    lr: Annotated[float, typer.Option(help="Base learning rate.", rich_help_panel=_SOLVER)] = 0.001,
    momentum: Annotated[float, typer.Option(rich_help_panel=_SOLVER)] = 0.9,
    weight_decay: Annotated[float, typer.Option(rich_help_panel=_SOLVER)] = 0.0005,
    bias_lr_factor: Annotated[float, typer.Option(help="Learning-rate multiplier of biases (no weight decay on them).", rich_help_panel=_SOLVER)] = 2.0,
    lr_step: Annotated[
        list[int] | None, typer.Option("--lr-step", help="Iteration where the lr is multiplied by --gamma; repeatable (default 30000).", rich_help_panel=_SOLVER)
    ] = None,
    gamma: Annotated[float, typer.Option(rich_help_panel=_SOLVER)] = 0.1,
    iterations: Annotated[int | None, typer.Option(help="Total SGD iterations (default 40000).", rich_help_panel=_SOLVER)] = None,
    warmup: Annotated[int, typer.Option(help="Linear warm-up iterations from lr/10 (0: none, as in the paper).", rich_help_panel=_SOLVER)] = 0,
    eval_every: Annotated[int, typer.Option(help="Evaluate every this many iterations (0: at the end only).", rich_help_panel=_RUN)] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Write last.pt every this many iterations.", rich_help_panel=_RUN)] = 1000,
    log_every: Annotated[int, typer.Option(help="Iterations per metrics row / log line.", rich_help_panel=_RUN)] = 20,
    seed: Annotated[int, typer.Option(rich_help_panel=_RUN)] = 0,
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
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).", rich_help_panel=_RUN)] = None,
    proposal_mode: Annotated[str, typer.Option(help="Selective Search mode: fast or quality.", rich_help_panel=_PROPOSALS)] = "fast",
    proposal_max_side: Annotated[int, typer.Option(help="Selective Search works on images resized to this longer side.", rich_help_panel=_PROPOSALS)] = 500,
    proposal_top: Annotated[int, typer.Option(help="Proposals kept per image.", rich_help_panel=_PROPOSALS)] = 2000,
    proposal_cache: Annotated[Path | None, typer.Option(help="Proposal cache folder (default: per data set, in the user cache).", rich_help_panel=_PROPOSALS)] = None,
    workers: Annotated[int | None, typer.Option(help="Processes computing missing proposals (default: all cores).", rich_help_panel=_PROPOSALS)] = None,
    json_: JsonOption = False,
) -> None:
    """Train a Fast R-CNN detector on a VOC-format data set: one network, one multi-task loss, end to end.

    Hierarchical sampling (2 images, 64 RoIs each, 25% foreground), horizontal flips, scale 600 / 1000,
    softmax + smooth L1, SGD with momentum and a step schedule: the paper's settings unless changed.
    Writes a new run folder (runs/train, runs/train2, ...) with args.json, metrics.csv, loss.png, map.png,
    last.pt and best.pt. Ctrl-C saves last.pt; --resume continues exactly. A NaN/inf loss stops with exit
    code 4; data set problems with --strict exit with code 3.
    """
    import torch

    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.data.voc import parse_classes_option
    from fastrcnn_cli.errors import InputError
    from fastrcnn_cli.train import TrainSettings
    from fastrcnn_cli.train import train as run_training

    if threads:
        torch.set_num_threads(threads)
    if resume is not None:
        result = run_training(resume=resume, iterations=iterations)
    else:
        if data is None:
            raise InputError("give a data set folder (or --resume RUN)")
        settings = TrainSettings(
            data=str(data),
            split=split,
            eval_split=None if eval_split.lower() in ("", "none") else eval_split,
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
            scales=tuple(scale) if scale else (600,),
            max_size=max_size,
            test_scale=test_scale,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            bias_lr_factor=bias_lr_factor,
            lr_steps=tuple(lr_step) if lr_step else (30000,),
            gamma=gamma,
            iterations=iterations or 40000,
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

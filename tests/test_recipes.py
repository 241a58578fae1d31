"""Honest validation and robust defaults: held-out images, recipes, the schedule in epochs, the run monitor."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fastrcnn_cli.data.holdout import hold_out
from fastrcnn_cli.data.synthetic import SyntheticSettings, class_names, make_synthetic_voc
from fastrcnn_cli.data.voc import ImageRecord, load_dataset
from fastrcnn_cli.errors import SettingsError
from fastrcnn_cli.model.checkpoint import read_checkpoint_file
from fastrcnn_cli.model.fast_rcnn import build_model
from fastrcnn_cli.monitor import RunMonitor, prior_loss
from fastrcnn_cli.recipes import RECIPES
from fastrcnn_cli.train import TrainSettings, train
from fastrcnn_cli.training.solver import depthwise_parameters, make_optimizer


def records(n: int, num_classes: int, seed: int = 0) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        labels = rng.integers(0, num_classes, size=int(rng.integers(1, 3)))
        out.append(ImageRecord(f"img{i:04d}", Path("x.jpg"), 100, 100, np.zeros((len(labels), 4), np.float32), labels))
    return out


def test_holdout_is_deterministic_disjoint_and_order_independent() -> None:
    recs = records(200, 6)
    train_a, held_a = hold_out(recs, 6)
    train_b, held_b = hold_out(list(reversed(recs)), 6)
    assert {r.id for r in held_a} == {r.id for r in held_b}
    assert not {r.id for r in held_a} & {r.id for r in train_a}
    assert len(held_a) + len(train_a) == 200
    assert 20 <= len(held_a) <= 28  # about 12 %


def test_holdout_covers_rare_classes_without_emptying_them() -> None:
    recs = records(120, 3, seed=1)
    # a rare class: 9 images with label 3, of which at most 3 may be held out
    for i in range(9):
        recs[i * 13] = ImageRecord(f"rare{i}", Path("x.jpg"), 100, 100, np.zeros((1, 4), np.float32), np.array([3]))
    train, held = hold_out(recs, 4)
    rare_held = sum(3 in r.labels for r in held)
    assert 1 <= rare_held <= 3
    assert sum(3 in r.labels for r in train) >= 6


def test_holdout_of_a_tiny_split_is_empty_or_small() -> None:
    assert hold_out(records(3, 2), 2)[1] == []
    assert len(hold_out(records(40, 2), 2)[1]) >= 5


def test_recipes_fill_only_what_is_unset_and_scale_the_schedule() -> None:
    small = TrainSettings(data="x", backbone="efficientnet-lite0").resolved(300)
    recipe = RECIPES["small-data"]
    assert small.recipe == "small-data"
    assert small.iterations == max(recipe.min_iterations, math.ceil(recipe.epochs * 600 / 2))
    assert small.lr_step == (round(0.75 * small.iterations),)
    assert small.scale == recipe.scale and small.test_scale == recipe.test_scale
    big = TrainSettings(data="x", backbone="efficientnet-lite0").resolved(3000)
    assert big.iterations == math.ceil(recipe.epochs * 6000 / 2)  # epochs, past the minimum
    mine = TrainSettings(data="x", backbone="efficientnet-lite0", lr=0.003, iterations=100, scale=(600,)).resolved(300)
    assert (mine.lr, mine.iterations, mine.lr_step) == (0.003, 100, (75,))
    assert mine.scale == (600,) and mine.test_scale is None and mine.resolved_test_scale == 600
    assert mine.max_size >= 600
    paper = TrainSettings(data="x", backbone="efficientnet-lite0", recipe="paper").resolved(300)
    assert (paper.lr, paper.iterations, paper.clip_grad_norm) == (0.001, 40000, math.inf)
    # the test-time NMS IoU: the paper's 0.3, the small-data recipe's 0.4 (chosen on validation), or the user's
    assert (paper.resolved_test_nms, small.resolved_test_nms) == (0.3, recipe.test_nms) and recipe.test_nms == 0.4
    assert TrainSettings(data="x", backbone="efficientnet-lite0", test_nms=0.5).resolved(300).resolved_test_nms == 0.5


def test_settings_errors_name_fields_not_flags() -> None:
    with pytest.raises(SettingsError, match="holdout") as info:
        TrainSettings(data="x", holdout=1.5).validate()
    assert "--" not in str(info.value)
    with pytest.raises(SettingsError, match="recipe"):
        TrainSettings(data="x", recipe="magic").validate()
    with pytest.raises(SettingsError, match="test_nms"):
        TrainSettings(data="x", test_nms=0.0).validate()


def test_old_run_folders_resume_without_the_new_defaults() -> None:
    old = {"data": "x", "backbone": "efficientnet-lite0", "eval_split": None, "lr": 0.01, "scales": [480],
           "max_size": 800, "iterations": 100, "lr_steps": [80], "warmup_iterations": 10, "weight_decay": 0.0005}
    s = TrainSettings.from_dict(old).resolved(100)
    assert (s.backbone_lr_factor, s.clip_grad_norm, s.photometric, s.eval_split) == (1.0, math.inf, 0.0, "none")
    assert s.resolved_test_nms == 0.3  # evaluated at the paper's NMS IoU before it was a setting
    assert s.depthwise_lr_factor == s.backbone_lr_factor  # the depthwise convolutions learnt at the backbone's rate
    recipe_run = TrainSettings.from_dict({"data": "x", "recipe": "small-data", "backbone_lr_factor": 0.1})
    assert recipe_run.resolved(100).depthwise_lr_factor == 0.1
    # fields renamed to their flags read under the new names
    assert (s.scale, s.lr_step, s.warmup, s.iterations) == ((480,), (80,), 10, 100)
    assert TrainSettings.from_dict({"data": "x", "holdout_fraction": 0.3, "proposal_proposer": "native"}).holdout == 0.3
    assert TrainSettings.from_dict({"data": "x", "proposal_proposer": "native"}).proposer == "native"


def test_depthwise_convolutions_learn_at_their_own_rate() -> None:
    s = TrainSettings(data="x", backbone="efficientnet-lite0").resolved(300)
    recipe = RECIPES["small-data"]
    assert (s.backbone_lr_factor, s.depthwise_lr_factor) == (recipe.backbone_lr_factor, recipe.depthwise_lr_factor)
    model = build_model(s.model_config(["a", "b"]), pretrained=False)
    depthwise = {f"backbone.{n}" for n in depthwise_parameters(model.backbone)}
    assert depthwise and all(model.get_parameter(n).shape[1] == 1 for n in depthwise)
    factor = {id(p): (g["lr_factor"], g["weight_decay"]) for g in make_optimizer(model, s).param_groups
              for p in g["params"]}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {id(p) for _, p in trained} == set(factor)
    for name, p in trained:
        layer = (s.depthwise_lr_factor if name in depthwise else s.backbone_lr_factor if name.startswith("backbone.")
                 else 1.0)
        bias = name.endswith(".bias")
        assert factor[id(p)] == (layer * (s.bias_lr_factor if bias else 1.0), 0.0 if bias else s.weight_decay), name
    # one factor for the whole backbone: the groups of a run from before depthwise_lr_factor (its last.pt resumes)
    same = dataclasses.replace(s, depthwise_lr_factor=s.backbone_lr_factor)
    pairs = {(n.startswith("backbone."), n.endswith(".bias")) for n, _ in trained}
    assert len(make_optimizer(model, same).param_groups) == len(pairs) < len(make_optimizer(model, s).param_groups)


def test_prior_loss_is_the_entropy_of_the_labels() -> None:
    labels = torch.tensor([0] * 75 + list(range(1, 21)) * 1 + [1] * 5)  # 75 % background
    p = torch.bincount(labels).double() / len(labels)
    assert prior_loss(labels, 21) == pytest.approx(float(-(p[p > 0] * p[p > 0].log()).sum()))


def test_monitor_warns_once_when_a_run_does_not_learn() -> None:
    monitor = RunMonitor(warmup=100)
    codes = []
    for it in range(20, 1001, 20):
        row = {"iteration": it, "loss_cls": 1.2, "prior_loss": 1.31, "grad_norm": 1.0, "fc6_active": 0.9,
               "fc7_active": 0.9}
        found = monitor.check(row)
        if found:
            codes.append((it, found[0]))
            assert "--lr" in found[1]
    assert codes == [(300, "not-learning")]


def test_monitor_stays_quiet_on_a_healthy_run_and_flags_dead_units_and_spikes() -> None:
    monitor = RunMonitor(warmup=100)
    for it in range(20, 1001, 20):
        cls = max(0.3, 1.3 - it / 500)
        assert monitor.check({"iteration": it, "loss_cls": cls, "prior_loss": 1.31, "grad_norm": 2.0,
                              "fc6_active": 0.95, "fc7_active": 0.9}) is None
    dead = monitor.check({"iteration": 1020, "loss_cls": 0.3, "prior_loss": 1.31, "grad_norm": 2.0,
                          "fc6_active": 0.95, "fc7_active": 0.2})
    assert dead is not None and dead[0] == "dead-units"
    spike = monitor.check({"iteration": 1040, "loss_cls": 0.3, "prior_loss": 1.31, "grad_norm": 500.0,
                           "fc6_active": 0.95, "fc7_active": 0.9})
    assert spike is not None and spike[0] == "diverging"


def test_many_class_synthetic_names() -> None:
    assert class_names(5) == ("circle", "square", "triangle", "star", "ring")
    names = class_names(20)
    assert len(set(names)) == 20 and "star-outline" in names
    with pytest.raises(ValueError):
        class_names(21)


@pytest.fixture(scope="module")
def no_val_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train 30, test 6 and no val split: validation must come out of train."""
    root = tmp_path_factory.mktemp("noval") / "shapes"
    make_synthetic_voc(root, SyntheticSettings(splits={"train": 30, "test": 6}, seed=11))
    return root


def test_no_val_split_validates_on_a_held_out_part_and_picks_best_on_it(no_val_set: Path, tmp_path: Path) -> None:
    settings = TrainSettings(
        data=str(no_val_set), split="train", backbone="efficientnet-lite0", scale=(160,), max_size=240,
        rois_per_image=32, iterations=8, eval_every=4, log_every=2, checkpoint_every=8, runs_dir=str(tmp_path),
        proposal_cache=str(tmp_path / "proposals"), proposal_top=200, workers=1, seed=5,
    )  # fmt: skip
    result = train(settings)
    lines = (result.run_dir / "validation.txt").read_text().splitlines()
    assert lines[0].startswith("# ") and "held out of 'train'" in lines[0]
    held = set(lines[1:])
    train_ids = set(load_dataset(no_val_set, "train").ids)
    test_ids = set(load_dataset(no_val_set, "test").ids)
    assert held and held <= train_ids and not held & test_ids
    again = train(settings)
    assert set((again.run_dir / "validation.txt").read_text().splitlines()[1:]) == held
    with open(result.run_dir / "metrics.csv", newline="") as f:
        maps = [float(r["map_area"]) for r in csv.DictReader(f) if r["map_area"]]
    assert len(maps) == 2
    best = read_checkpoint_file(result.run_dir / "best.pt")
    assert best["training"]["best_map"] == pytest.approx(max(maps), abs=1e-6)
    assert json.loads((result.run_dir / "eval_last.json").read_text())["num_images"] == len(held)
    args = json.loads((result.run_dir / "args.json").read_text())
    assert args["recipe"] == "small-data" and args["lr"] == RECIPES["small-data"].lr


def test_val_inside_the_training_split_is_left_out_of_training(synthetic_voc: Path, tmp_path: Path) -> None:
    settings = TrainSettings(
        data=str(synthetic_voc), split="trainval", backbone="efficientnet-lite0", scale=(160,), max_size=240,
        rois_per_image=16, iterations=2, log_every=1, runs_dir=str(tmp_path), proposal_cache=str(tmp_path / "p"),
        proposal_top=100, workers=1,
    )  # fmt: skip
    from fastrcnn_cli.train import Trainer

    trainer = Trainer(settings)
    val = set(load_dataset(synthetic_voc, "val").ids)
    assert trainer.eval_set is not None and set(trainer.eval_set.ids) == val
    assert not val & {r.id for r in trainer.records}
    assert "left out of training" in trainer.validation


def test_training_advice_names_unreachable_and_rare_classes() -> None:
    from fastrcnn_cli.data.advice import training_advice

    box = np.array([[10, 10, 59, 59]], np.float32)
    recs = [ImageRecord(f"a{i}", Path("x.jpg"), 100, 100, box.copy(), np.array([0])) for i in range(20)]
    recs += [ImageRecord(f"b{i}", Path("x.jpg"), 100, 100, box.copy(), np.array([1])) for i in range(3)]
    proposals = {r.id: (box + 2 if r.id.startswith("a") else np.array([[70, 70, 90, 90]], np.float32)) for r in recs}
    notes = training_advice(recs, ("cat", "dog"), proposals, scale=100)
    text = "\n".join(notes)
    assert "dog (3)" in text and "cat (" not in text.split("recall")[0]
    assert "dog 0%" in text and "cat 0%" not in text
    assert training_advice(recs[:20], ("cat", "dog"), proposals, scale=20) and "large" in training_advice(
        recs[:20], ("cat", "dog"), proposals, scale=20)[-1]


def test_duplicate_rois_round_half_away_from_zero_like_the_operator() -> None:
    from fastrcnn_cli.sampling import unique_rois

    # at 1/16, x1 = 8 maps to 0.5 -> cell 1 (C round), x1 = 24 to 1.5 -> 2; np.round would give 0 and 2
    boxes = np.array([[0, 0, 40, 40], [8, 0, 40, 40], [24, 0, 40, 40], [16, 0, 40, 40]], np.float32)
    keep, _ = unique_rois(boxes, 1 / 16)
    assert keep.tolist() == [0, 1, 2]  # 16 -> 1.0 -> cell 1 duplicates 8 -> 0.5 -> cell 1

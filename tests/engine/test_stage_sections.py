"""A later stage's optimizer, scheduler and loss: the keys it names over the stage before's
(pipeline/engine/stage_sections.py)."""

from __future__ import annotations

from typing import Any

from pipeline.config import build_config
from pipeline.engine.recipe import TrainConfig
from pipeline.train_hash import train_hashes

SGD = {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4,
       "params": {"momentum": 0.9, "nesterov": True}}


def _stages(**train: Any) -> list[Any]:
    return list(TrainConfig.model_validate(train).resolved_stages)


def test_a_stage_keeps_the_keys_it_leaves_out() -> None:
    """`optimizer: {lr: 0.01}` after an SGD recipe trained with AdamW at the schema's weight
    decay, and `scheduler: {warmup_epochs: 0}` dropped the recipe's min_lr_ratio."""
    first, second = _stages(
        optimizer=SGD, scheduler={"min_lr_ratio": 0.0, "warmup_epochs": 1},
        loss={"name": "cross_entropy", "params": {"smoothing": 0.1}},
        stages=[{"epochs": 2, "optimizer": {"lr": 0.01, "params": {"nesterov": False}},
                 "scheduler": {"warmup_epochs": 0}}])
    assert first.optimizer.lr == 0.1
    opt = second.optimizer
    assert (opt.name, opt.lr, opt.weight_decay) == ("sgd", 0.01, 5e-4)
    assert opt.params == {"momentum": 0.9, "nesterov": False}  # a mapping key by key too
    assert (second.scheduler.warmup_epochs, second.scheduler.min_lr_ratio) == (0.0, 0.0)
    assert second.loss.params == {"smoothing": 0.1}  # not named: the stage before's


def test_a_stage_naming_another_optimizer_starts_from_its_defaults() -> None:
    *_, adamw, later = _stages(optimizer=SGD, stages=[
        {"epochs": 1, "optimizer": {"name": "adamw", "lr": 1e-4}},
        {"epochs": 1, "optimizer": {"lr": 1e-5}}])
    assert (adamw.optimizer.name, adamw.optimizer.weight_decay) == ("adamw", 0.01)
    assert adamw.optimizer.params == {}
    # and the stage after it carries the AdamW stage's keys, not the recipe's
    assert (later.optimizer.name, later.optimizer.lr) == ("adamw", 1e-5)


def test_a_recipe_whose_stages_now_carry_keys_is_another_run(competition_factory) -> None:
    """Its old runs trained those stages with the section replaced whole: they are not
    reused. A recipe whose stages name another optimizer (or none) keeps its old runs."""
    cfg = competition_factory("tabular", "binary")
    cfg["train"]["optimizer"]["weight_decay"] = 0.05
    carried = build_config({**cfg, "train": {**cfg["train"], "stages": [
        {"epochs": 1, "optimizer": {"lr": 1e-4}}]}})
    assert carried.train.resolved_stages[1].optimizer.weight_decay == 0.05  # was 0.01
    assert train_hashes(carried) == {carried.train_hash()}
    assert carried.train_hash() != carried.legacy_train_hash()
    for stage in ({"epochs": 1}, {"epochs": 1, "optimizer": {"name": "radam", "lr": 1e-4}}):
        whole = build_config({**cfg, "train": {**cfg["train"], "stages": [stage]}})
        assert train_hashes(whole) == {whole.train_hash(), whole.legacy_train_hash()}

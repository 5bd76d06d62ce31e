"""``train.consistency.epoch_over: unlabelled`` (issue 18): an epoch is one pass over the
unlabelled rows, ceil(rows / (batch x ratio)) steps, the labelled loader cycled with its own
order and draws each pass; the default keeps an epoch over the labelled rows; a killed run
resumes exactly."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import train
from pipeline.artifacts import read_json
from pipeline.config import build_config
from pipeline.engine.callbacks.consistency import over_unlabelled
from pipeline.engine.callbacks.consistency_epochs import CycledLoader, unlabelled_steps
from pipeline.engine.callbacks.consistency_methods import ConsistencyConfig
from pipeline.engine.plan import StagePlan
from pipeline.engine.recipe import TrainConfig
from pipeline.engine.recipe_warnings import recipe_warnings
from pipeline.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class Rows(torch.utils.data.Dataset):
    """Rows 0..n-1 that remember the augmentation seed they were drawn under."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch_seed = n, 0

    def set_epoch(self, seed: int) -> None:
        self.epoch_seed = seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"row": torch.tensor(i), "seed": torch.tensor(self.epoch_seed)}


def _epoch(loader: CycledLoader, seed: int) -> list[list[int]]:
    loader.generator.manual_seed(seed)  # as the trainer seeds each epoch
    loader.dataset.set_epoch(seed)
    return [b["row"].tolist() for b in loader]


def test_the_cycled_loader_fills_its_steps_with_fresh_passes_over_the_rows():
    rows = Rows(5)
    inner = torch.utils.data.DataLoader(rows, batch_size=2, shuffle=True,
                                        generator=torch.Generator())
    loader = CycledLoader(inner, steps=7)
    assert len(loader) == 7 and loader.batch_size == 2 and loader.dataset is rows
    batches = _epoch(loader, 11)
    assert len(batches) == 7  # 3 batches a pass: two whole passes and the first of a third
    first, second = batches[:3], batches[3:6]
    assert sorted(r for b in first for r in b) == [0, 1, 2, 3, 4]
    assert sorted(r for b in second for r in b) == [0, 1, 2, 3, 4]
    assert first != second  # each pass its own order
    assert rows.epoch_seed == 11  # the epoch's draw seed is back once the epoch is done
    assert _epoch(loader, 11) == batches  # the same epoch (a resumed run): the same batches
    assert _epoch(loader, 12) != batches
    # the passes after the first draw their augmentations from their own seeds
    loader.generator.manual_seed(3)
    rows.set_epoch(3)
    seeds = [int(b["seed"][0]) for b in loader]
    assert seeds[:3] == [3, 3, 3] and len(set(seeds[3:6])) == 1 and seeds[3] != 3


def test_steps_per_epoch_are_one_pass_over_the_unlabelled_rows_at_the_ratio():
    assert unlabelled_steps(4000, 32, 3) == 42  # issue 18's fold: 9 labelled steps otherwise
    assert unlabelled_steps(4000, 32, 1) == 125
    assert unlabelled_steps(10, 32, 3) == 1
    inner = torch.utils.data.DataLoader(range(12), batch_size=4)
    plans = [StagePlan(epochs=2, loader=inner, make_optimizer=None, make_schedule=None,
                       loss_fn=None)]
    fixmatch = ConsistencyConfig(method="fixmatch")
    assert over_unlabelled(plans, fixmatch, 100) is plans  # the default: over labelled rows
    assert over_unlabelled(plans, None, 100) is plans
    cycled = over_unlabelled(plans, ConsistencyConfig(method="fixmatch",
                                                      epoch_over="unlabelled"), 100)
    assert [len(p.loader) for p in cycled] == [9]  # ceil(100 / (4 x fixmatch's ratio 3))
    cycled = over_unlabelled(plans, ConsistencyConfig(method="uda", epoch_over="unlabelled",
                                                      ratio=2), 100)
    assert [len(p.loader) for p in cycled] == [13] and cycled[0].epochs == 2


def test_a_supervised_stage_before_the_method_keeps_its_epochs_over_the_labelled_rows():
    inner = torch.utils.data.DataLoader(range(12), batch_size=4)
    plans = [StagePlan(epochs=n, loader=inner, make_optimizer=None, make_schedule=None,
                       loss_fn=None) for n in (2, 3)]
    over = ConsistencyConfig(method="fixmatch", epoch_over="unlabelled")
    # the method starts at stage 2 (epoch 3): stage 1 is 3 labelled steps an epoch
    staged = over_unlabelled(plans, over, 100, first_epoch=3)
    assert staged[0].loader is inner and len(staged[1].loader) == 9
    # a start inside stage 1 (its warm-up epochs) makes both stages' epochs unlabelled passes
    assert [len(p.loader) for p in over_unlabelled(plans, over, 100, first_epoch=2)] == [9, 9]


# -- the default shape: the recipe, then an appended stage of passes ----------------------

def test_the_method_alone_appends_a_stage_of_passes_at_the_recipes_lr():
    recipe = {"epochs": 30, "optimizer": {"lr": 3e-3}, "scheduler": {"warmup_epochs": 1}}
    train_cfg = TrainConfig(**recipe, consistency={"method": "fixmatch"})
    first, stage = train_cfg.resolved_stages
    assert first.epochs == 30 and stage.epochs == 5 and train_cfg.total_epochs == 35
    assert stage.optimizer.lr == pytest.approx(3e-3) and first.optimizer.lr == 3e-3
    assert stage.optimizer == first.optimizer  # the recipe's lr and every other key
    slower = TrainConfig(**recipe, consistency={"method": "fixmatch", "stage": {"lr": 0.33}})
    assert slower.resolved_stages[1].optimizer.lr == pytest.approx(0.99e-3)
    assert stage.scheduler == first.scheduler and stage.loss == first.loss
    assert train_cfg.appends_consistency_stage and train_cfg.unlabelled_from == 31
    assert train_cfg.stage_key(1) == "train.consistency.stage"
    # a start of its own, or the recipe's own stages: no stage is appended
    for cons, stages in (({"method": "fixmatch", "warmup": 0.3}, []),
                         ({"method": "uda", "start_epoch": 4}, []),
                         ({"method": "mixmatch"}, [{"epochs": 2}])):
        other = TrainConfig(**recipe, consistency=cons, stages=stages)
        assert not other.appends_consistency_stage
        assert len(other.resolved_stages) == 1 + len(stages)
    assert TrainConfig(**recipe, consistency={"method": "fixmatch", "warmup": 0.3}
                       ).unlabelled_from == 10
    assert len(TrainConfig(**recipe).resolved_stages) == 1  # no consistency, nothing appended


def test_the_appended_stage_passes_over_the_unlabelled_rows_within_its_budget():
    inner = torch.utils.data.DataLoader(range(320), batch_size=32)  # 10 labelled steps
    plans = [StagePlan(epochs=n, loader=inner, make_optimizer=None, make_schedule=None,
                       loss_fn=None) for n in (30, 5)]
    fixmatch = ConsistencyConfig(method="fixmatch")  # epoch_over: labelled, budget 0.7
    # issue 18's fold: 4,000 unlabelled rows are 42 steps a pass; 5 x 42 = 210 = 0.7 x 300
    staged = over_unlabelled(plans, fixmatch, 4000, first_epoch=31, appended=True)
    assert staged[0].loader is inner and len(staged[1].loader) == 42
    # 40,000 rows would be 417 steps a pass: the stage stops at 0.7 x the 300 supervised
    assert len(over_unlabelled(plans, fixmatch, 40_000, 31, appended=True)[1].loader) == 42
    tight = fixmatch.model_copy(update={"stage": fixmatch.stage.model_copy(
        update={"budget": 0.1})})
    assert len(over_unlabelled(plans, tight, 4000, 31, appended=True)[1].loader) == 6
    assert len(over_unlabelled(plans, fixmatch, 100, 31, appended=True)[1].loader) == 2


def test_a_stage_setting_with_a_start_or_the_recipe_s_stages_is_refused(competition_factory):
    with pytest.raises(ValueError, match="drop it"):
        ConsistencyConfig(method="fixmatch", warmup=0.3, stage={"passes": 3})
    data = competition_factory("tabular", "multiclass", n_train=24, n_test=20)
    data["train"].update(stages=[{"epochs": 1}],
                         consistency={"method": "fixmatch", "stage": {"passes": 3}})
    with pytest.raises(ConfigError, match=r"'train\.consistency\.stage' is appended to a "
                                          r"recipe without 'train\.stages'"):
        build_config(data)
    data["train"].update(stages=[], consistency={"method": "fixmatch", "stage": {"passes": 0}})
    with pytest.raises(ConfigError, match="passes"):
        build_config(data)


def test_a_warning_about_the_appended_stage_names_its_key():
    train_cfg = TrainConfig(epochs=10, scheduler={"warmup_epochs": 2},
                            consistency={"method": "uda", "stage": {"passes": 2}})
    notes = recipe_warnings(train_cfg, 100)
    assert notes == ["'train.consistency.stage.scheduler.warmup_epochs' 2.0 covers the whole "
                     "stage (2 epochs): the lr never peaks"]


def test_the_default_trains_the_recipe_then_its_passes_and_predicts_from_the_last(
        competition_factory):
    data = competition_factory("tabular", "multiclass", n_train=24, n_test=60)
    data["folds"]["n_splits"] = 2
    data["train"].update(epochs=3, batch_size=4, resume_every=0,
                         consistency={"method": "fixmatch", "ratio": 1, "stage": {"passes": 2}})
    cfg = build_config(data)
    train.run(cfg)
    for fold in (0, 1):
        out = cfg.run_dir / "seed0" / f"fold{fold}"
        history = read_json(out / "metrics.json")
        epochs = history["epochs"]
        # 3 epochs of 3 labelled steps; then 2 passes over 60 rows at 4 a step (15 steps)
        # cut to 0.7 x the 9 supervised steps / 2 passes = 3 steps each
        assert [e["updates"] for e in epochs] == [3, 6, 9, 3, 6]
        assert [e.get("unlabelled_loss", 0.0) > 0 for e in epochs] == [False] * 3 + [True] * 2
        assert history["best_epoch"] in (4, 5)
        # checkpoint 'auto': the stage's last pass predicts, whichever scored best
        assert history["checkpoint"] == "last"
        assert torch.load(out / "best.pt", map_location="cpu", weights_only=False)["epoch"] == 5
        oof, last = pd.read_parquet(out / "oof.parquet"), pd.read_parquet(
            out / "oof_last_epoch.parquet")
        cols = [c for c in last.columns if c != "id"]
        np.testing.assert_allclose(oof[cols].to_numpy(), last[cols].to_numpy(), atol=1e-6)


def test_checkpoint_auto_is_the_last_epoch_in_a_consistency_run_only():
    plain = TrainConfig()
    method = TrainConfig(consistency={"method": "uda"})
    assert (plain.checkpoint, method.checkpoint) == ("auto", "auto")
    assert (plain.predicting_epoch, method.predicting_epoch) == ("best", "last")
    # a choice written out holds either way
    assert TrainConfig(checkpoint="best", consistency={"method": "uda"}).predicting_epoch == "best"
    assert TrainConfig(checkpoint="last").predicting_epoch == "last"


def test_an_unknown_epoch_over_is_refused(competition_factory):
    data = competition_factory("tabular", "multiclass", n_train=24, n_test=20)
    data["train"]["consistency"] = {"method": "fixmatch", "epoch_over": "test"}
    with pytest.raises((ConfigError, ValueError), match="epoch_over"):
        build_config(data)


def _run(competition_factory, name: str, epoch_over: str | None,
         kill=None, crash_in_epoch: int | None = None,
         stages: list | None = None) -> tuple[np.ndarray, list]:
    data = competition_factory("tabular", "multiclass", n_train=24, n_test=60)
    data["name"] = name
    data["folds"]["n_splits"] = 2
    cons = {"method": "fixmatch", "ratio": 1, **({"epoch_over": epoch_over} if epoch_over else {}),
            # the method within the recipe's epochs (from the first: int(0.3 x 3) = 0)
            **({} if stages else {"warmup": 0.3})}
    data["train"].update(epochs=3, batch_size=4, resume_every=0, consistency=cons,
                         stages=stages or [])
    cfg = build_config(data)
    if crash_in_epoch is not None:
        kill(cfg, crash_in_epoch)
    train.run(cfg)
    epochs = read_json(cfg.run_dir / "seed0" / "fold0" / "metrics.json")["epochs"]
    values = [(e["train_loss"], e.get("unlabelled_loss", 0.0), e["score"]) for e in epochs]
    return np.array(values), epochs


def test_an_epoch_over_the_unlabelled_rows_takes_their_steps_and_sees_each_once(
        competition_factory, caplog):
    _, labelled = _run(competition_factory, "labelled", None)
    # 12 training rows of a fold at batch 4: 3 updates an epoch
    assert [e["updates"] for e in labelled] == [3, 6, 9]
    with caplog.at_level(logging.INFO, logger="pipeline.engine.callbacks.consistency"):
        _, unlabelled = _run(competition_factory, "unlabelled", "unlabelled")
    # 60 unlabelled rows at 4 a step: 15 updates an epoch, the 12 labelled rows cycled
    assert [e["updates"] for e in unlabelled] == [15, 30, 45]
    seen = [int(m.group(1)) for r in caplog.records
            if (m := re.search(r"of (\d+) unlabelled rows", r.getMessage()))]
    assert seen and set(seen) == {60}  # every active epoch: each unlabelled row once


def test_after_a_supervised_stage_only_the_method_s_stage_passes_over_the_unlabelled_rows(
        competition_factory):
    # 3 supervised epochs (the method's default start is stage 2), then 2 epochs of 15 steps
    _, epochs = _run(competition_factory, "staged", "unlabelled", stages=[{"epochs": 2}])
    # (a stage counts its own updates)
    assert [e["updates"] for e in epochs] == [3, 6, 9, 15, 30]
    assert [e.get("unlabelled_loss", 0.0) > 0 for e in epochs] == [False] * 3 + [True] * 2


def test_a_consistency_run_predicts_with_weights_trained_on_the_unlabelled_rows(
        competition_factory):
    # 'best' on a fold's 12 validation rows: the supervised stage's epochs may score higher,
    # but the run predicts with a weight the unlabelled loss trained
    data = competition_factory("tabular", "multiclass", n_train=24, n_test=60)
    data["folds"]["n_splits"] = 2
    # early stopping (patience 1) waits for those epochs too: stopped in the warm-up, the
    # fold would have no checkpoint to predict with
    data["train"].update(epochs=4, batch_size=4, resume_every=0, stages=[{"epochs": 2}],
                         consistency={"method": "fixmatch", "epoch_over": "unlabelled"},
                         early_stopping={"patience": 1}, checkpoint="best")
    cfg = build_config(data)
    train.run(cfg)
    for fold in (0, 1):
        history = read_json(cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json")
        assert history["best_epoch"] in (5, 6) and len(history["epochs"]) == 6
        scores = [e["score"] for e in history["epochs"]]
        assert history["best_score"] == max(scores[4:])
        assert history["checkpoint"] == "best"


def test_a_killed_run_over_unlabelled_epochs_resumes_exactly(competition_factory,
                                                             train_killed_in_epoch):
    whole, _ = _run(competition_factory, "whole", "unlabelled")
    resumed, _ = _run(competition_factory, "resumed", "unlabelled", train_killed_in_epoch, 3)
    np.testing.assert_array_equal(whole, resumed)

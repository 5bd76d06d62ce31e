"""pipeline.engine.recipe: stages resolved once from the stage before, the callbacks a recipe
switches on, a multi-stage run that switches batch size, optimizer and loss, the checks
that need the output count, and the warnings about recipes that would do nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pipeline.cli import main
from pipeline.engine import Stage, TrainConfig
from pipeline.engine.callbacks.averaging import EMA, SWA, EarlyStopping, Snapshots
from pipeline.engine.recipe import build_callbacks
from pipeline.engine.recipe_warnings import recipe_warnings


def test_resolved_stages_are_computed_once_and_fill_every_key_from_the_stage_before():
    cfg = TrainConfig(
        epochs=2, batch_size=8, grad_accum_steps=2, freeze=["encoders.0"],
        optimizer={"name": "adamw", "lr": 1e-3}, loss={"name": "focal"},
        stages=[
            {"epochs": 3, "batch_size": 16, "freeze": []},
            {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1},
             "scheduler": {"name": "constant"}},
            {"epochs": 4, "grad_accum_steps": 1, "loss": {"name": "cross_entropy"}},
        ],
    )
    stages = cfg.resolved_stages
    assert cfg.resolved_stages is stages  # cached on the frozen config, not rebuilt
    assert len(stages) == 4 and all(isinstance(s, Stage) for s in stages)
    assert stages[0] == Stage(epochs=2, batch_size=8, grad_accum_steps=2,
                              optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                              loss=cfg.loss, freeze=("encoders.0",))
    for i, override in enumerate(cfg.stages, start=1):
        for field in dataclasses.fields(Stage):
            set_here = getattr(override, field.name)
            got = getattr(stages[i], field.name)
            if set_here is None:
                assert got is getattr(stages[i - 1], field.name), (i, field.name)
            else:
                assert got == (tuple(set_here) if field.name == "freeze" else set_here)
    # spot checks of the carried values, written out
    assert [s.batch_size for s in stages] == [8, 16, 16, 16]
    assert [s.grad_accum_steps for s in stages] == [2, 2, 2, 1]
    assert [s.optimizer.name for s in stages] == ["adamw", "adamw", "sgd", "sgd"]
    assert [s.scheduler.name for s in stages] == ["cosine", "cosine", "constant", "constant"]
    assert [s.loss.name for s in stages] == ["focal", "focal", "focal", "cross_entropy"]
    assert [s.freeze for s in stages] == [("encoders.0",), (), (), ()]
    assert cfg.total_epochs == 10
    assert cfg.first_epoch(None, 3) == 6  # stage 3 (1-based) starts after 2 + 3 epochs


def test_build_callbacks_switches_on_the_configured_tricks_in_order():
    assert build_callbacks(TrainConfig(), ["mlp"], True) == []
    cfg = TrainConfig(epochs=4, ema={"decay": 0.9}, early_stopping={"patience": 2},
                      scheduler={"name": "restarts", "cycle_epochs": 2}, snapshots=True)
    callbacks = build_callbacks(cfg, ["mlp"], False)
    assert [type(c) for c in callbacks] == [EMA, Snapshots, EarlyStopping]
    assert callbacks[0].decay == 0.9
    assert callbacks[1].cycle_end_epochs == [2, 4]
    assert callbacks[2].patience == 2 and callbacks[2].sign == -1.0
    swa = build_callbacks(TrainConfig(epochs=4, swa={"start_epoch": 3}), ["mlp"], True)
    assert [type(c) for c in swa] == [SWA] and swa[0].start_epoch == 3


def test_two_stage_run_switches_batch_size_and_optimizer(tabular_run, fold_history):
    cfg = tabular_run(epochs=2, batch_size=8, stages=[{
        "epochs": 2, "batch_size": 24,
        "optimizer": {"name": "lookahead_sgd", "lr": 0.01, "params": {"momentum": 0.9}},
        "loss": {"name": "focal", "params": {"gamma": 2.0}},
    }])
    epochs = fold_history(cfg)["epochs"]
    assert [e["stage"] for e in epochs] == [0, 0, 1, 1]
    assert [e["batch_size"] for e in epochs] == [8, 8, 24, 24]
    assert [e["updates"] for e in epochs] == [6, 12, 2, 4]  # 48 training rows per fold
    assert [e["optimizer"] for e in epochs] == ["AdamW", "AdamW", "Lookahead", "Lookahead"]


def test_snapshots_refuse_restart_cycles_that_end_mid_epoch():
    """issue 12 (small): a snapshot is saved at an epoch's end, so a cycle of 1.5 epochs
    would be caught partway into the next cycle; whole-epoch cycles are accepted."""
    with pytest.raises(ValidationError, match=r"cycle_epochs.*whole numbers.*1\.5"):
        TrainConfig(epochs=6, snapshots=True,
                    scheduler={"name": "restarts", "cycle_epochs": 1.5})
    with pytest.raises(ValidationError, match="cycle_mul"):
        TrainConfig(epochs=6, snapshots=True,
                    scheduler={"name": "restarts", "cycle_epochs": 1, "cycle_mul": 1.5})
    cfg = TrainConfig(epochs=6, snapshots=True,
                      scheduler={"name": "restarts", "cycle_epochs": 2, "cycle_mul": 2})
    assert build_callbacks(cfg, ["mlp"], True)[0].cycle_end_epochs == [2, 6]
    # without snapshots a fractional cycle is only a schedule, and fine
    TrainConfig(epochs=6, scheduler={"name": "restarts", "cycle_epochs": 1.5})


@pytest.mark.parametrize(("train", "key"), [
    ({"loss": {"name": "focal", "params": {"alpha": [0.2, 0.8]}}},
     "'train.loss.params.alpha' of loss 'focal' lists 2 values"),
    ({"loss": {"name": "cross_entropy", "params": {"class_weights": [1, 1, 1, 1]}}},
     "'train.loss.params.class_weights' of loss 'cross_entropy' lists 4 values"),
    ({"loss": {"name": "sum", "terms": [
        {"name": "cross_entropy"},
        {"name": "focal", "params": {"alpha": [1.0]}}]}},
     "'train.loss.terms.1.params.alpha' of loss 'focal' lists 1 values"),
    ({"stages": [{"epochs": 1, "loss": {"name": "bce", "params": {"pos_weight": [2.0]}}}]},
     "'train.stages.0.loss.params.pos_weight' of loss 'bce' lists 1 values"),
])
def test_a_per_column_loss_list_of_the_wrong_length_is_named(train, key):
    """issue 12 item 18: an alpha / class_weights / pos_weight list must hold one value per
    output column; the mismatch names the key and both counts."""
    cfg = TrainConfig(**train)
    assert cfg.outputs_mismatch(3) == f"{key}; the model has 3 output column(s)"
    # the same config fits a model with as many columns as the list has values
    n = len(next(v for s in cfg.resolved_stages for t in (s.loss.terms or [s.loss])
                 for v in t.params.values() if isinstance(v, list)))
    assert cfg.outputs_mismatch(n) is None


def test_a_right_sized_or_scalar_loss_parameter_fits():
    """issue 12 item 18: lists of the right length and scalars are no mismatch."""
    assert TrainConfig().outputs_mismatch(3) is None
    assert TrainConfig(loss={"name": "focal", "params": {"alpha": 0.25}}).outputs_mismatch(
        3) is None
    assert TrainConfig(loss={"name": "focal", "params": {"alpha": [1, 2, 3]}}).outputs_mismatch(
        3) is None


def test_pipeline_train_refuses_a_wrong_alpha_list_before_writing_the_run(
        competition_factory, tmp_path, capsys):
    """issue 12 item 18: `pipeline train` with a 2-value alpha on a 3-class competition
    exits 2 naming the key, and writes nothing of a run (nor the folds)."""
    data = competition_factory("tabular", "multiclass")
    data["train"]["loss"] = {"name": "focal", "params": {"alpha": [0.5, 0.5]}}
    config = tmp_path / "wrong_alpha.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'train.loss.params.alpha' of loss 'focal' lists 2 values" in err
    assert "3 output column(s)" in err
    # the log the CLI opened for the run goes with the refusal: nothing is written
    assert not (Path(data["output_dir"]) / data["name"]).exists()
    assert not Path(data["folds_dir"]).exists()


def _notes(n_rows: int = 48, **train: Any) -> list[str]:
    return recipe_warnings(TrainConfig(**train), n_rows)


@pytest.mark.parametrize(("train", "says"), [
    # 2 epochs x 3 updates: an average over ~1000 updates never leaves the initial weights
    ({"epochs": 2, "batch_size": 16, "ema": {"decay": 0.999}},
     "'train.ema.decay' 0.999 averages over ~1000 updates but a fold makes ~6"),
    ({"optimizer": {"name": "lamb", "lr": 1e-4}},
     "'train.optimizer' lamb takes lr as a step relative to each weight's norm"),
    ({"optimizer": {"name": "lookahead_lars", "lr": 5e-4}},
     "'train.optimizer' lookahead_lars takes lr"),
    ({"epochs": 2, "scheduler": {"warmup_epochs": 2}},
     "'train.scheduler.warmup_epochs' 2.0 covers the whole stage (2 epochs)"),
    ({"epochs": 2, "stages": [{"epochs": 1, "scheduler": {"name": "cosine",
                                                          "warmup_epochs": 3}}]},
     "'train.stages.0.scheduler.warmup_epochs' 3.0 covers the whole stage (1 epochs)"),
    ({"epochs": 3, "snapshots": True, "scheduler": {"name": "restarts", "cycle_epochs": 3}},
     "'train.snapshots' with a single warm-restart cycle saves one snapshot"),
    ({"epochs": 3, "swa": {"start_epoch": 3}},
     "'train.swa.start_epoch' is the last epoch"),
    ({"epochs": 3, "early_stopping": {"patience": 3}},
     "'train.early_stopping.patience' 3 is not below the 3 epochs"),
])
def test_recipe_warnings_name_what_would_do_nothing(train, says):
    """issue 12 item 13: each recipe likely to do nothing or harm gets one note naming the
    key; the notes are warnings (the config is valid)."""
    notes = _notes(**train)
    assert len(notes) == 1, notes
    assert notes[0].startswith(says), notes


def test_a_sound_recipe_gets_no_warning():
    """issue 12 item 13: a plain recipe, and the same tricks set sensibly, say nothing."""
    assert _notes(1000) == []
    assert _notes(
        1000, epochs=10, batch_size=32, optimizer={"name": "lamb", "lr": 5e-3},
        scheduler={"name": "restarts", "cycle_epochs": 5, "warmup_epochs": 1},
        snapshots=True, ema={"decay": 0.99}, early_stopping={"patience": 3}) == []
    assert _notes(1000, epochs=10, swa={"start_epoch": 7}) == []
    # the EMA horizon counts the fold's updates: 0.999 is right for a large fold
    assert _notes(100_000, epochs=5, batch_size=32, ema={"decay": 0.999}) == []

"""``train.batch_size: auto``: the tabular MLP's batch grown with the rows a fold trains on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.engine.auto_batch import (
    AUTO_BATCH_MAX,
    AUTO_BATCH_MIN,
    AUTO_BATCH_UPDATES,
    auto_batch_note,
    auto_batch_size,
    auto_lr,
    epoch_updates,
    eval_batch_size,
    stage_batch,
    stage_optimizer,
)
from pipeline.engine.optim import OptimizerConfig
from pipeline.engine.recipe import TrainConfig
from pipeline.engine.recipe_warnings import recipe_warnings
from tests.conftest import make_competition


@pytest.mark.parametrize(("rows", "accum", "batch"), [
    (0, 1, 32), (178, 1, 32), (1_150, 1, 32), (3_121, 1, 32),  # wine .. Benefits: the schema's
    # 64 leaves 100 updates from 99 x 64 + 1 rows on, but a lone last row sits out: + 2
    (6_337, 1, 32), (6_338, 1, 64), (12_800, 1, 128), (25_345, 1, 128), (25_346, 1, 256),
    (34_521, 1, 256),  # diamonds' folds
    (50_689, 1, 256), (50_690, 1, 512), (128_000, 1, 512), (10**7, 1, 512),
    # updates, not batches: accumulating 2 batches an update halves the batch
    (12_800, 2, 64), (12_800, 4, 32), (12_800, 8, 32), (10**7, 4, 512),
])
def test_the_rules_batch_at_row_counts(rows: int, accum: int, batch: int) -> None:
    assert auto_batch_size(rows, accum) == batch
    assert stage_batch("auto", rows, accum) == batch


def test_the_batch_is_the_largest_power_of_two_that_leaves_enough_updates() -> None:
    assert (AUTO_BATCH_MIN, AUTO_BATCH_MAX, AUTO_BATCH_UPDATES) == (32, 512, 100)
    assert (epoch_updates(6_400, 64), epoch_updates(6_337, 64), epoch_updates(6_400, 64, 3)
            ) == (100, 99, 34)
    for rows in [*range(0, 60_000, 997), 200_000]:
        for accum in (1, 3):
            size = auto_batch_size(rows, accum)
            assert size & (size - 1) == 0 and AUTO_BATCH_MIN <= size <= AUTO_BATCH_MAX
            if size > AUTO_BATCH_MIN:  # the minimum is kept even when it leaves fewer
                assert epoch_updates(rows, size, accum) >= AUTO_BATCH_UPDATES, (rows, accum)
            assert size == AUTO_BATCH_MAX or \
                epoch_updates(rows, 2 * size, accum) < AUTO_BATCH_UPDATES, (rows, accum)


def test_a_number_is_kept_and_prediction_batches_are_fixed() -> None:
    assert stage_batch(48, 10**6, 1) == 48 and stage_batch(7, 10, 4) == 7
    # validation and prediction: twice the batch; for 'auto' whatever the rows, so a fold
    # predicted after a restart batches as its first run did
    assert (eval_batch_size(48), eval_batch_size("auto")) == (96, 1024)


def test_adamws_lr_grows_with_the_square_root_of_the_auto_batch() -> None:
    assert [round(auto_lr(3e-3, b), 6) for b in (32, 64, 128, 256, 512)] == [
        0.003, 0.004243, 0.006, 0.008485, 0.01]  # 512: 0.012, held to AUTO_LR_MAX
    assert auto_lr(1e-3, 512) == pytest.approx(4e-3) and auto_lr(2e-2, 512) == 2e-2
    adamw, sgd = OptimizerConfig(lr=3e-3), OptimizerConfig(name="sgd", lr=3e-3)
    assert stage_optimizer(adamw, "auto", 128).lr == pytest.approx(6e-3)
    assert stage_optimizer(adamw, 128, 128) is adamw  # a given batch keeps the given lr
    assert stage_optimizer(sgd, "auto", 128) is sgd  # measured with AdamW only
    assert adamw.lr == 3e-3  # a copy


def test_the_note_says_the_batch_and_why() -> None:
    adamw = OptimizerConfig(lr=3e-3)
    assert auto_batch_note(34_521, 1, adamw) == (
        "batch 256 ('train.batch_size' auto: the largest power of two in [32, 512] that "
        "leaves at least 100 updates an epoch of 34,521 training rows, adamw's lr 0.003 -> "
        "0.00848528 (times the square root of 256/32, at most 0.01))")
    assert "at least 100 updates of 2 batches an epoch" in auto_batch_note(34_521, 2, adamw)
    assert auto_batch_note(1_000, 1, adamw).endswith("of 1,000 training rows)")


def test_recipe_warnings_count_the_updates_of_the_auto_batch() -> None:
    # 12,800 rows at 128 a batch: 100 updates an epoch, 200 in 2 epochs
    notes = recipe_warnings(TrainConfig(epochs=2, batch_size="auto", ema={"decay": 0.999}),
                            12_800)
    assert notes[0].startswith("'train.ema.decay' 0.999 averages over ~1000 updates but a "
                               "fold makes ~200"), notes


@pytest.mark.timeout(120)
def test_a_run_sizes_each_stages_batch_from_the_folds_rows(tmp_path: Path, one_thread,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    """13,000 rows in 2 folds: 6,500 training rows a fold. The first stage gets 64 (101
    updates), the second, which accumulates 2 batches an update, 32 (the minimum), the third
    its own 200; AdamW's lr grows with the first's batch; the log says the batch and why, the
    resolved config keeps 'auto'."""
    data = make_competition(tmp_path, "tabular", "regression", n_train=13_000, n_test=20)
    data["model"] = {"encoders": [{"name": "mlp", "params": {"hidden": [4]}}]}
    data["folds"] = {"scheme": "kfold", "n_splits": 2, "seed": 0}
    data["train"] = {"epochs": 1, "precise_bn": 0, "mixed_precision": "no",
                     "optimizer": {"name": "adamw", "lr": 3e-3},
                     "stages": [{"epochs": 1, "grad_accum_steps": 2},
                                {"epochs": 1, "batch_size": 200}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    caplog.set_level(logging.INFO)  # as the CLI's own root logger is (pytest's has a handler)
    assert main(["--quiet", "train", str(path)]) == 0
    run_dir = tmp_path / "runs" / data["name"]
    for fold in (0, 1):
        history = json.loads((run_dir / "seed0" / f"fold{fold}" / "metrics.json").read_text())
        assert [(e["batch_size"], e["updates"]) for e in history["epochs"]] == [
            (64, 102), (32, 102), (200, 17)]  # the third keeps the second's accumulation
        # AdamW's 3e-3 times sqrt(64 / 32) where the batch is auto; the given 200 keeps it
        assert [e["label"] for e in history["epochs"]] == [
            "adamw lr=0.00424264 bs=64", "adamw lr=0.003 bs=32", "adamw lr=0.003 bs=200"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["batch_size"] == "auto"
    log = (run_dir / "log.txt").read_text()
    assert log.count("batch 64 ('train.batch_size' auto: the largest power of two in [32, 512] "
                     "that leaves at least 100 updates an epoch of 6,500 training rows, adamw's "
                     "lr 0.003 -> 0.00424264 (times the square root of 64/32, at most 0.01))"
                     ) == 2

"""A bounded regression (``train.loss: bce`` under ``task: regression``): the target scaled
into [0, 1] by the fold's training range, sigmoid outputs, as some Pawpularity winners trained
BCE on target / 100. No prediction leaves the training range."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import train
from pipeline.artifacts import read_json
from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric


def test_bce_regression_predicts_inside_each_folds_training_range(competition_factory):
    data = competition_factory("tabular", "regression", n_train=120)
    data["train"].update(epochs=8, loss={"name": "bce"})
    cfg = build_config(data)
    train.run(cfg)
    target = data["competition"]["target_columns"][0]
    frame = pd.read_csv(f"{data['competition']['dir']}/train.csv")
    folds = pd.read_csv(cfg.folds_file)
    for fold in range(cfg.folds.n_splits):
        folder = cfg.run_dir / "seed0" / f"fold{fold}"
        prep = read_json(folder / "preprocess.json")
        rows = frame[target][(folds["fold"] != fold).to_numpy()]
        assert prep["bounded"] is True
        assert prep["target_mean"][0] == pytest.approx(rows.min())
        assert prep["target_std"][0] == pytest.approx(rows.max() - rows.min())
        for part in ("oof", "test"):
            values = pd.read_parquet(folder / f"{part}.parquet")[target].to_numpy()
            assert rows.min() <= values.min() and values.max() <= rows.max()
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet").set_index("id").loc[frame["id"]]
    rmse = get_metric("rmse")
    y = frame[[target]].to_numpy()
    assert rmse(y, oof[[target]].to_numpy()) < 0.8 * rmse(y, np.full_like(y, y.mean()))


@pytest.mark.parametrize("change", [
    {"stages": [{"epochs": 1, "loss": {"name": "mse"}}]},  # logits in one stage, values in one
    {"loss": {"name": "sum", "terms": [{"name": "bce"}, {"name": "mse"}]}},
])
def test_a_bounded_regression_mixed_with_another_loss_is_refused(competition_factory, change):
    data = competition_factory("tabular", "regression")
    data["train"].update({"loss": {"name": "bce"}, **change})
    with pytest.raises(ConfigError, match="must be the whole loss of every stage"):
        build_config(data)

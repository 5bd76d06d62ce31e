"""Pseudo-labels: selection, weights, leak-free per-fold construction, training with them."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline import blend, pseudo, train
from pipeline.config import PseudoConfig, build_config
from pipeline.errors import ConfigError


def test_threshold_top_fraction_and_balance_select_the_right_rows():
    p = np.array([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7], [0.99, 0.01]])
    rows, labels = pseudo.select(p, "multiclass", PseudoConfig(source="x", threshold=0.9))
    assert rows.tolist() == [4, 0, 2]
    np.testing.assert_array_equal(labels, [[1, 0], [1, 0], [0, 1]])
    rows, _ = pseudo.select(p, "multiclass", PseudoConfig(source="x", top_fraction=0.4))
    assert rows.tolist() == [4, 0]
    extra = np.vstack([p, [[0.9, 0.1]]])  # a third confident class-0 row (0.9)
    rows, labels = pseudo.select(extra, "multiclass",
                                 PseudoConfig(source="x", threshold=0.65, balance=True))
    # class 1 has two confident rows (2, 3): class 0 keeps its two most confident (4, 0)
    assert sorted(rows.tolist()) == [0, 2, 3, 4]
    assert (labels.argmax(axis=1) == 0).sum() == (labels.argmax(axis=1) == 1).sum() == 2
    _, soft = pseudo.select(p, "multiclass", PseudoConfig(source="x", labels="soft",
                                                          threshold=0.9))
    np.testing.assert_allclose(soft, p[[4, 0, 2]])
    pb = np.array([[0.97], [0.5], [0.02], [0.8]])
    rows, labels = pseudo.select(pb, "binary", PseudoConfig(source="x", threshold=0.9))
    assert rows.tolist() == [2, 0] and labels.ravel().tolist() == [0.0, 1.0]


def _source_run(competition_factory, **train_overrides):
    data = competition_factory("tabular", "multiclass", n_train=60, n_test=30)
    data["name"] = "round0"
    data["train"].update(train_overrides)
    cfg = build_config(data)
    train.run(cfg)
    return data, cfg


def test_fold_k_pseudo_labels_come_only_from_the_source_fold_k_models(competition_factory):
    data, source = _source_run(competition_factory)
    data = {**data, "name": "round1",
            "pseudo": {"source": str(source.run_dir), "labels": "soft", "weight": 0.5}}
    cfg = build_config(data)
    pseudo.run(cfg)
    per_fold = pd.read_parquet(source.run_dir / "test_folds.parquet")
    cols = ["0", "1", "2"]
    for fold in (0, 1):
        labels = pd.read_parquet(pseudo.pseudo_path(cfg, fold)).set_index("id")
        assert (labels["source_fold"] == fold).all()
        assert (labels["weight"] == 0.5).all()
        made_by = per_fold[per_fold["fold"] == fold].set_index("id").loc[labels.index, cols]
        np.testing.assert_allclose(labels[cols].to_numpy(), made_by.to_numpy())
        other = per_fold[per_fold["fold"] != fold].set_index("id").loc[labels.index, cols]
        assert not np.allclose(labels[cols].to_numpy(), other.to_numpy())


def test_training_with_pseudo_rows_adds_them_and_chains_rounds(competition_factory):
    data, source = _source_run(competition_factory, batch_size=10)
    round1 = build_config({**data, "name": "round1",
                           "pseudo": {"source": str(source.run_dir), "top_fraction": 0.5}})
    score = train.run(round1)
    assert np.isfinite(score)
    epochs = json.loads((round1.run_dir / "seed0" / "fold0" / "metrics.json").read_text())
    # 30 training rows + 15 pseudo rows at batch 10 -> 5 updates per epoch (3 without)
    assert epochs["epochs"][0]["updates"] == 5
    round2 = build_config({**data, "name": "round2",
                           "pseudo": {"source": str(round1.run_dir), "labels": "soft"}})
    assert np.isfinite(train.run(round2))
    assert (pd.read_parquet(pseudo.pseudo_path(round2, 1))["source_fold"] == 1).all()


def test_a_blend_source_is_refused_unless_the_leak_is_accepted(competition_factory, caplog):
    data, source = _source_run(competition_factory)
    other = build_config({**data, "name": "round0b", "train": {**data["train"], "seeds": [1]}})
    train.run(other)
    folder = blend.run([source.run_dir, other.run_dir], method="mean", name="b",
                       blends_dir=source.run_dir.parent.parent / "blends")
    naive = build_config({**data, "name": "naive", "pseudo": {"source": str(folder)}})
    with pytest.raises(ConfigError, match="CV would be inflated"):
        pseudo.run(naive)
    leaky = build_config({**data, "name": "leaky",
                          "pseudo": {"source": str(folder), "allow_leak": True}})
    with caplog.at_level(logging.WARNING):
        pseudo.run(leaky)
    assert "LEAKY" in caplog.text
    assert (pd.read_parquet(pseudo.pseudo_path(leaky, 0))["source_fold"] == -1).all()


def test_pseudo_config_rules(competition_factory):
    data = competition_factory("tabular", "regression")
    with pytest.raises(ConfigError, match="regression"):
        build_config({**data, "pseudo": {"source": "runs/x", "threshold": 0.9}})
    with pytest.raises(ConfigError, match="not both"):
        build_config({**data, "pseudo": {"source": "x", "threshold": 0.9, "top_fraction": 0.5}})

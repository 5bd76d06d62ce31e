"""End to end on tiny data: every modality and task through folds, train, predict, submit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import predict, submit, train
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric

CASES = [(m, t) for m in ("tabular", "image", "text")
         for t in ("binary", "multiclass", "multilabel", "regression")]


def _check_artifacts(cfg: Any, score: float) -> None:
    comp = load_competition(cfg.competition)
    cols = comp.pred_columns
    run_dir = cfg.run_dir
    oof = pd.read_parquet(run_dir / "oof.parquet")
    test = pd.read_parquet(run_dir / "test.parquet")
    test_folds = pd.read_parquet(run_dir / "test_folds.parquet")
    assert oof["id"].tolist() == comp.train["id"].tolist()
    assert test["id"].tolist() == comp.test["id"].tolist()
    assert list(oof.columns) == ["id", "fold", *cols]
    assert len(test_folds) == len(comp.test) * cfg.folds.n_splits * len(cfg.train.seeds)
    p = oof[cols].to_numpy()
    assert np.isfinite(p).all()
    if cfg.competition.task != "regression":
        assert ((p >= 0) & (p <= 1)).all()
    if cfg.competition.task == "multiclass":
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    # the run's score is the metric of its OOF, and test.parquet is the mean of the folds
    assert score == pytest.approx(get_metric(cfg.competition.metric)(comp.targets, p))
    mean = test_folds.groupby("id")[cols].mean().loc[test["id"]].to_numpy()
    np.testing.assert_allclose(test[cols].to_numpy(), mean)
    path = submit.run(run_dir, cfg.name, cfg.submissions_dir)
    written = pd.read_csv(path)
    sample = comp.sample_submission
    assert list(written.columns) == list(sample.columns)
    assert written["id"].tolist() == sample["id"].tolist()


@pytest.mark.parametrize(("modality", "task"), CASES)
def test_every_modality_and_task_runs_end_to_end(competition_factory, modality, task):
    cfg = build_config(competition_factory(modality, task))
    score = train.run(cfg)
    _check_artifacts(cfg, score)
    metrics = (cfg.run_dir / "seed0" / "fold0" / "metrics.json").read_text()
    assert '"best_epoch"' in metrics


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression"])
def test_sklearn_model_runs_end_to_end(competition_factory, task):
    data = competition_factory("tabular", task, n_train=80)
    est = "Regressor" if task == "regression" else "Classifier"
    data["model"] = {"encoders": [{
        "name": f"sklearn:sklearn.ensemble.HistGradientBoosting{est}",
        "params": {"max_iter": 30, "min_samples_leaf": 5},
    }]}
    cfg = build_config(data)
    score = train.run(cfg)
    _check_artifacts(cfg, score)
    assert (cfg.run_dir / "seed0" / "fold1" / "model.joblib").is_file()


def test_models_learn_the_signal(competition_factory):
    data = competition_factory("tabular", "binary", n_train=200)
    data["train"]["epochs"] = 8
    assert train.run(build_config(data)) > 0.9
    data = competition_factory("tabular", "binary", n_train=200)
    data["name"] = "gbdt"
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    assert train.run(build_config(data)) > 0.9


def test_rerun_skips_complete_folds_and_refuses_another_config(competition_factory):
    data = competition_factory("tabular", "multiclass")
    cfg = build_config(data)
    first = train.run(cfg)
    best = cfg.run_dir / "seed0" / "fold0" / "best.pt"
    stamp = best.stat().st_mtime_ns
    assert train.run(cfg) == first
    assert best.stat().st_mtime_ns == stamp
    data["train"]["optimizer"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="another config"):
        train.run(build_config(data))


def test_seeds_average_into_the_oof(competition_factory):
    data = competition_factory("tabular", "regression")
    data["train"]["seeds"] = [0, 1]
    cfg = build_config(data)
    train.run(cfg)
    comp = load_competition(cfg.competition)
    per_seed = []
    for seed in (0, 1):
        parts = [pd.read_parquet(cfg.run_dir / f"seed{seed}" / f"fold{k}" / "oof.parquet")
                 for k in range(2)]
        per_seed.append(pd.concat(parts).set_index("id").loc[comp.train["id"], "y"].to_numpy())
    assert not np.allclose(per_seed[0], per_seed[1])
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")["y"].to_numpy()
    np.testing.assert_allclose(oof, (per_seed[0] + per_seed[1]) / 2)


def test_predict_stage_applies_tta_to_oof_and_test(competition_factory):
    data = competition_factory("image", "multiclass")
    cfg = build_config(data)
    train.run(cfg)
    plain = pd.read_parquet(cfg.run_dir / "oof.parquet")
    data["predict"] = {"tta": ["hflip", "vflip"]}
    cfg_tta = build_config(data)
    assert cfg_tta.train_hash() == cfg.train_hash()
    predict.run(cfg_tta)
    fold_dir = cfg.run_dir / "seed0" / "fold0"
    per_tta = pd.read_parquet(fold_dir / "tta_oof.parquet")
    assert sorted(per_tta["tta"].unique()) == ["hflip", "none", "vflip"]
    cols = ["0", "1", "2"]
    mean = per_tta.groupby("id", sort=False)[cols].mean()
    fold_oof = pd.read_parquet(fold_dir / "oof.parquet").set_index("id")
    np.testing.assert_allclose(fold_oof[cols].to_numpy(), mean.loc[fold_oof.index].to_numpy())
    with_tta = pd.read_parquet(cfg.run_dir / "oof.parquet")
    assert not np.allclose(plain[cols].to_numpy(), with_tta[cols].to_numpy())
    none = per_tta[per_tta["tta"] == "none"].set_index("id")[cols]
    plain_fold = plain.set_index("id").loc[none.index, cols]
    np.testing.assert_allclose(none.to_numpy(), plain_fold.to_numpy(), atol=1e-6)

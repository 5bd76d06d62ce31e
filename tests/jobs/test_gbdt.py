"""Gradient-boosted members trained by the train stage (pipeline/jobs/gbdt.py): every library
and task, early stopping and the trees kept, categories, one model per label or target,
pseudo-labelled rows, feature importance, resume and errors at fit time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from pipeline import predict, pseudo, train
from pipeline.competition import load_competition
from pipeline.config import ExperimentConfig, build_config
from pipeline.errors import ConfigError
from pipeline.jobs import gbdt as job
from pipeline.metrics import get_metric
from pipeline.models.gbdt import LIBRARIES, LIBRARY, GBDTModel
from pipeline.runs import load_folds

TREES = 400  # a cap early stopping always ends before on these small, quickly-fitted sets


def _data(factory, library: str, task: str, **params: Any) -> dict[str, Any]:
    data = factory("tabular", task, n_train=120, n_test=20)
    params = {"n_estimators" if library != "catboost" else "iterations": TREES,
              "learning_rate": 0.3, "early_stopping_rounds": 5, **params}
    if library == "lightgbm":
        params.setdefault("min_child_samples", 5)
    data["model"] = {"encoders": [{"name": library, "params": params}]}
    return data


def _metrics(cfg: ExperimentConfig, fold: int = 0) -> dict[str, Any]:
    return json.loads((cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json").read_text())


def _model(cfg: ExperimentConfig, fold: int = 0) -> GBDTModel:
    return joblib.load(cfg.run_dir / "seed0" / f"fold{fold}" / "model.joblib")


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_library_trains_every_task_early_stopped(competition_factory, library: str,
                                                       task: str) -> None:
    cfg = build_config(_data(competition_factory, library, task))
    score = train.run(cfg)
    comp = load_competition(cfg.competition)
    # the signal is learnt: x1 carries it, and is the most important feature
    bound = {"binary": 0.85, "multiclass": 0.6, "regression": 0.6}[task]  # auc, acc, rmse
    assert score > bound if task != "regression" else score < bound
    oof, test = pd.read_parquet(cfg.run_dir / "oof.parquet"), pd.read_parquet(
        cfg.run_dir / "test.parquet")
    assert list(oof.columns) == ["id", "fold", *comp.pred_columns]
    assert list(test.columns) == ["id", *comp.pred_columns] and len(test) == 20
    values = test[comp.pred_columns].to_numpy()
    assert np.isfinite(values).all()
    if task == "multiclass":
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
    if task != "regression":
        assert ((values >= 0) & (values <= 1)).all()
    for fold in (0, 1):
        metrics = _metrics(cfg, fold)
        assert 1 <= metrics["best_iteration"] < TREES  # early stopping ended training
        group = "binary" if task == "binary" else task
        assert metrics["eval_metric"] == LIBRARY[library].metrics[comp.cfg.metric].get(
            group, "default")
        assert {"model.joblib", "oof.parquet", "test.parquet"} <= set(metrics["files"])
        importance = pd.read_csv(cfg.run_dir / "seed0" / f"fold{fold}" / job.IMPORTANCE_FILE)
        assert sorted(importance["feature"]) == ["color", "x1", "x2"]
        assert importance["feature"].iloc[0] in ("x1", "color")  # both carry the signal
        assert (importance["importance"] >= 0).all()
        # the fold's predictions come from the trees kept, not from every tree fitted
        model = _model(cfg, fold)
        assert model.trees == [metrics["best_iteration"]]
        fold_test = pd.read_parquet(cfg.run_dir / "seed0" / f"fold{fold}" / "test.parquet")
        np.testing.assert_allclose(fold_test[comp.pred_columns].to_numpy(),
                                   model.predict(comp.test), rtol=1e-6)


def test_predictions_use_the_best_iteration_not_the_last(competition_factory) -> None:
    """XGBoost keeps the patience rounds' trees after the best one (LightGBM and CatBoost
    drop them); the predictions come from the best trees only."""
    cfg = build_config(_data(competition_factory, "xgboost", "regression"))
    train.run(cfg)
    model = _model(cfg)
    est, kept = model.estimators[0], model.trees[0]
    total = est.get_booster().num_boosted_rounds()
    assert total == kept + 5  # the 5 patience rounds after the best
    comp = load_competition(cfg.competition)
    x = model.features.transform(comp.test, "xgboost")
    written = pd.read_parquet(cfg.run_dir / "seed0" / "fold0" / "test.parquet")["y"]
    np.testing.assert_allclose(written, est.predict(x, iteration_range=(0, kept)), rtol=1e-6)
    assert not np.allclose(written, est.predict(x, iteration_range=(0, total)))


@pytest.mark.parametrize("library", ["xgboost", "catboost"])
def test_one_model_per_label_and_per_target(competition_factory, library: str) -> None:
    cfg = build_config(_data(competition_factory, library, "multilabel"))
    train.run(cfg)
    model = _model(cfg)
    assert len(model.estimators) == 2 and len(_metrics(cfg)["best_iteration"]) == 2
    assert list(pd.read_parquet(cfg.run_dir / "test.parquet").columns) == ["id", "a", "b"]
    data = _data(competition_factory, library, "regression")
    path = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    frame["y2"] = -2 * frame["y"] + 1  # a second target the same features predict
    frame.to_csv(path, index=False)
    sample = path.parent / "sample_submission.csv"
    pd.read_csv(sample).assign(y2=0.0).to_csv(sample, index=False)
    data["competition"]["target_columns"] = ["y", "y2"]
    data["name"] = "two-targets"
    cfg = build_config(data)
    train.run(cfg)
    assert len(_model(cfg).estimators) == 2
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert list(test.columns) == ["id", "y", "y2"]
    assert np.corrcoef(test["y"], test["y2"])[0, 1] < -0.8


def _one_class_labels(data: dict[str, Any]) -> dict[str, Any]:
    """Multilabel with label 'b' all 1 and a third label 'c' all 0 in train: every fold's
    training rows hold one class of each (a rare label's fold without positives)."""
    path = Path(data["competition"]["dir"]) / "train.csv"
    pd.read_csv(path).assign(b=1, c=0).to_csv(path, index=False)
    sample = path.parent / "sample_submission.csv"
    pd.read_csv(sample).assign(c=0).to_csv(sample, index=False)
    data["competition"]["target_columns"] = ["a", "b", "c"]
    return data


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_label_with_one_class_in_the_folds_training_rows_is_predicted_as_it(
    competition_factory, library: str
) -> None:
    """LightGBM and XGBoost fitted a one-class label as two classes and the predictions
    crashed on the shape; CatBoost refused it ('Target contains only one unique value')."""
    cfg = build_config(_one_class_labels(_data(competition_factory, library, "multilabel")))
    score = train.run(cfg)
    folds = pd.read_csv(cfg.folds_file)["fold"].to_numpy()
    for name in ("oof.parquet", "test.parquet"):
        frame = pd.read_parquet(cfg.run_dir / name)
        # the value a fold's training rows lack gets Laplace's floor, 1 / (rows + 2), not a
        # certain 0 or 1 (log loss clipped a row of the other value: ~34.5)
        rows = len(folds) - np.bincount(folds)  # each fold's training rows
        floors = (1.0 / (rows + 2)) if name == "oof.parquet" else None
        if floors is not None:  # OOF rows: their own fold's floor
            ordered = pd.read_csv(cfg.folds_file).set_index(cfg.competition.id_column)
            floor = floors[ordered.loc[frame[cfg.competition.id_column], "fold"].to_numpy()]
        else:  # the test rows: the folds' mean
            floor = np.full(len(frame), floors_mean := np.mean(1.0 / (rows + 2)))
            assert 0 < floors_mean < 0.05
        np.testing.assert_allclose(frame["b"], 1.0 - floor, rtol=1e-6)
        np.testing.assert_allclose(frame["c"], floor, rtol=1e-6)
        assert frame["a"].between(0, 1).all() and frame["a"].nunique() > 2
    assert score > 0.75  # label 'a' learnt; 'b' and 'c' have one class, so no AUC
    model = _model(cfg)
    assert model.estimators[1] is None and model.trees[1:] == [0, 0]
    assert _metrics(cfg)["best_iteration"][1:] == [0, 0]


@pytest.mark.parametrize("library", LIBRARIES)
def test_unseen_and_missing_test_categories_are_predicted(competition_factory,
                                                          library: str) -> None:
    data = _data(competition_factory, library, "regression")  # red and blue rows
    path = Path(data["competition"]["dir"]) / "test.csv"
    frame = pd.read_csv(path)
    frame.loc[:4, "color"] = "green"  # never in train
    frame.loc[5:7, "color"] = np.nan
    frame.to_csv(path, index=False)
    cfg = build_config(data)
    train.run(cfg)
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert np.isfinite(test["y"]).all() and len(test) == 20
    assert _model(cfg).features.categories == {"color": ["blue", "red"]}


def test_pseudo_rows_are_fitted_with_their_weights(competition_factory, monkeypatch) -> None:
    data = _data(competition_factory, "lightgbm", "binary")
    source = build_config(data)
    train.run(source)
    cfg = build_config({**data, "name": "with-pseudo", "pseudo": {
        "source": str(source.run_dir), "labels": "soft", "weight": 0.5}})
    fitted: list[tuple[int, float]] = []
    fit = job.fit_estimator

    def spy(model, settings, x, y, weight, x_valid, y_valid):
        fitted.append((len(x), float(weight.sum())))
        return fit(model, settings, x, y, weight, x_valid, y_valid)

    monkeypatch.setattr(job, "fit_estimator", spy)
    train.run(cfg)
    for fold, (rows, weight) in enumerate(fitted):
        labels = pd.read_parquet(pseudo.pseudo_path(cfg, fold))["target"].to_numpy()
        n_train = 60  # two folds of 120 rows
        # a soft label is two rows (one per class) whose weights sum to the row's weight
        assert rows == n_train + (labels > 0).sum() + (labels < 1).sum()
        assert weight == pytest.approx(n_train + 0.5 * len(labels))


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_multiclass_fold_left_two_classes_fits_a_binary_model(competition_factory,
                                                                library: str) -> None:
    """Three classes, one of them a single train row (stratified folds allow it, with a
    warning): the fold that validates on it trains on two classes, which every library fits
    with a binary objective. Its multiclass eval metric made each one refuse the fold."""
    data = _data(competition_factory, library, "multiclass")
    data["competition"]["metric"] = "log_loss"
    path = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["target"] == 2, "target"] = 1
    frame.loc[0, "target"] = 2
    frame.to_csv(path, index=False)
    cfg = build_config(data)
    train.run(cfg)  # was: "fit failed: Multiclass objective and metrics don't match"
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    lone = int(folds[0])  # the fold that validates on the class's one row
    model = _model(cfg, lone)
    assert model.classes[0].tolist() == [0, 1]
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    held = oof[oof["fold"] == lone][comp.pred_columns].to_numpy()
    np.testing.assert_allclose(held.sum(axis=1), 1.0, atol=1e-6)
    y = comp.targets[folds == lone]
    # the class its training rows lacked: Laplace's floor, not 0 (whose log loss is the
    # clip constant, ~34.5 for the row, in the CV and every blend tuned on it)
    rows = int((folds != lone).sum())
    np.testing.assert_allclose(held[:, 2], 1.0 / (rows + 3), rtol=1e-5)
    assert np.isfinite(get_metric("log_loss")(y, held)) and get_metric("log_loss")(y, held) < 5
    seen = y < 2
    assert (held[seen].argmax(axis=1) == y[seen]).mean() > 0.7  # the columns of their class


def test_the_absent_class_floor_joins_the_train_hash_of_multiclass_members(
        competition_factory, monkeypatch) -> None:
    """Multiclass and multilabel folds trained when an absent class (a label's absent value)
    got 0 are retrained (their OOF holds the 0); binary members keep their hash (a binary
    fold lacks a class only where the class has one train row)."""
    from pipeline import train_hash

    hashes = {}
    for task in ("multiclass", "multilabel", "binary"):
        cfg = build_config(_data(competition_factory, "lightgbm", task))
        new = train_hash.compute_train_hash(cfg)
        with monkeypatch.context() as patch:
            patch.setattr(train_hash, "GBDT_LIBRARIES", ())  # as before: no floor key
            hashes[task] = (new, train_hash.compute_train_hash(cfg))
    assert hashes["multiclass"][0] != hashes["multiclass"][1]
    assert hashes["multilabel"][0] != hashes["multilabel"][1]  # a label of one value too
    assert hashes["binary"][0] == hashes["binary"][1]


def test_soft_multiclass_pseudo_labels_become_weighted_rows() -> None:
    labels = np.array([[0.0, 1.0, 0.0], [0.2, 0.0, 0.8]])
    rows, classes, weights = job._pseudo_rows("multiclass", labels, np.array([0.5, 1.0]))
    assert rows.tolist() == [0, 1, 1] and classes.tolist() == [1, 0, 2]
    np.testing.assert_allclose(weights, [0.5, 0.2, 0.8])
    rows, values, weights = job._pseudo_rows("regression", np.array([1.5, -2.0]),
                                             np.array([0.3, 0.3]))
    assert values.tolist() == [1.5, -2.0] and weights.tolist() == [0.3, 0.3]


def test_finished_folds_are_skipped_and_predict_gathers_them(competition_factory,
                                                            monkeypatch) -> None:
    cfg = build_config(_data(competition_factory, "xgboost", "binary"))
    score = train.run(cfg)
    before = (cfg.run_dir / "seed0" / "fold0" / "model.joblib").read_bytes()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a complete fold was trained again")

    monkeypatch.setattr(job, "train_gbdt_fold", refuse)
    monkeypatch.setattr(train, "train_gbdt_fold", refuse)
    assert train.run(cfg) == pytest.approx(score)
    assert predict.run(cfg) == pytest.approx(score)  # no TTA: predictions come from training
    assert (cfg.run_dir / "seed0" / "fold0" / "model.joblib").read_bytes() == before


def test_the_same_seed_and_fold_fit_the_same_trees(competition_factory) -> None:
    data = _data(competition_factory, "lightgbm", "binary", subsample=0.7, subsample_freq=1,
                 colsample_bytree=0.7)
    data["train"]["seeds"] = [0, 1]
    cfg = build_config(data)
    train.run(cfg)
    again = build_config({**data, "name": "again"})
    train.run(again)
    for seed in (0, 1):
        a = pd.read_parquet(cfg.run_dir / f"seed{seed}" / "fold0" / "test.parquet")
        b = pd.read_parquet(again.run_dir / f"seed{seed}" / "fold0" / "test.parquet")
        pd.testing.assert_frame_equal(a, b)
    seeds = [pd.read_parquet(cfg.run_dir / f"seed{s}" / "fold0" / "test.parquet")["target"]
             for s in (0, 1)]
    assert not np.allclose(seeds[0], seeds[1])  # another seed draws other rows and columns


def test_a_value_the_library_refuses_is_a_one_line_error_at_fit(competition_factory) -> None:
    cfg = build_config(_data(competition_factory, "lightgbm", "binary", num_leaves=-3))
    with pytest.raises(ConfigError, match="encoder 'lightgbm': fit failed: ") as info:
        train.run(cfg)
    assert "num_leaves" in str(info.value) and "\n" not in str(info.value)


# --- issue 13 items 2-3: category encodings and target transforms around a GBDT member ----------


@pytest.mark.parametrize("library", LIBRARIES)
def test_encodings_and_target_transform_around_every_library(competition_factory,
                                                             library: str) -> None:
    """Target/count encodings add numeric columns beside the native categories; the
    Yeo-Johnson transform is fitted on the training targets, the trees fit (and early-stop)
    in its space and the predictions come back in the targets' units."""
    threads = {"thread_count": 1} if library == "catboost" else {"n_jobs": 1}
    data = _data(competition_factory, library, "multiclass" if library == "catboost"
                 else "regression", **threads)
    data["model"]["tabular"] = {"encodings": ["target", "count"]}
    if library != "catboost":  # regression: shift and scale the targets far from N(0, 1)
        data["model"]["target_transform"] = "yeo-johnson"
        root = Path(data["competition"]["dir"])
        frame = pd.read_csv(root / "train.csv")
        frame["y"] = 1000 + 50 * frame["y"]
        frame.to_csv(root / "train.csv", index=False)
    cfg = build_config(data)
    score = train.run(cfg)
    model = _model(cfg)
    encoded = (["color:target_0", "color:target_1", "color:target_2"] if library == "catboost"
               else ["color:target"])
    assert model.features.columns == ["x1", "x2", "color", *encoded, "color:count"]
    if library == "catboost":
        assert model.target is None and score > 0.6
        return
    assert model.target is not None and model.target.kind == "yeo-johnson"
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    assert 900 < oof["y"].mean() < 1100 and score < 0.6 * 50  # rmse in the targets' units


@pytest.mark.parametrize(("library", "metric"), [("xgboost", "rmsle"), ("catboost", "rmsle"),
                                               ("lightgbm", "mape")])
def test_a_transformed_target_early_stops_on_rmse_in_its_space(competition_factory,
                                                               library: str,
                                                               metric: str) -> None:
    """Standardised targets fall below -1, where RMSLE is NaN: XGBoost early-stopped on it
    after 1 tree of 400 (CV RMSLE 0.33 where log1p gave 0.21) and CatBoost's fit failed on
    the NaN; MAPE divides by targets near 0. Those fits now stop on RMSE in the transform's
    space (the trees' own loss)."""
    threads = {"thread_count": 1} if library == "catboost" else {"n_jobs": 1}
    data = _data(competition_factory, library, "regression", **threads)
    data["competition"]["metric"] = metric
    data["model"]["target_transform"] = "standardize"
    root = Path(data["competition"]["dir"])
    frame = pd.read_csv(root / "train.csv")
    frame["y"] = 1000 + 200 * frame["y"]
    frame.to_csv(root / "train.csv", index=False)
    cfg = build_config(data)
    score = train.run(cfg)
    for fold in (0, 1):
        metrics = _metrics(cfg, fold)
        assert metrics["eval_metric"] == LIBRARY[library].metrics["rmse"]["regression"]
        assert metrics["best_iteration"] > 3
    comp = load_competition(cfg.competition)
    spread = get_metric(metric)(comp.targets, np.full_like(comp.targets, comp.targets.mean()))
    assert score < 0.8 * spread  # well below the constant prediction's score


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_fold_of_one_class_is_early_stopped_on_log_loss(competition_factory, caplog,
                                                         library: str) -> None:
    """A fold whose validation rows hold one class has no ROC AUC: the library's AUC was
    constant, so early stopping kept the first tree (1 of 400) and the fold predicted
    nearly a constant. Its trees are now early-stopped on log loss."""
    import logging

    data = _data(competition_factory, library, "binary")
    path = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    negatives = np.flatnonzero(frame["target"] == "no")
    # group "a": a third of the negatives, nothing else; its fold validates on one class
    # (and every fold trains on both: "b" and "c" hold the rest, in alternation)
    frame["g"] = np.where(np.isin(np.arange(len(frame)), negatives[: len(negatives) // 3]),
                          "a", np.where(np.arange(len(frame)) % 2 == 0, "b", "c"))
    frame.to_csv(path, index=False)
    data["competition"]["group_column"] = "g"
    data["folds"] = {"scheme": "group", "n_splits": 3, "seed": 0}
    cfg = build_config(data)
    with caplog.at_level(logging.WARNING):
        train.run(cfg)
    folds = pd.read_parquet(cfg.run_dir / "oof.parquet").set_index("id")["fold"]
    one_class = int(folds[frame.loc[frame["g"] == "a", "id"]].iloc[0])
    stopped = _metrics(cfg, one_class)
    assert stopped["eval_metric"] == LIBRARY[library].metrics["log_loss"]["binary"]
    assert stopped["best_iteration"] > 1
    for fold in {0, 1, 2} - {one_class}:
        assert _metrics(cfg, fold)["eval_metric"] == LIBRARY[library].metrics["roc_auc"][
            "binary"]
    assert "roc_auc is undefined on this fold's validation rows of 'target'" in caplog.text


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_label_absent_from_a_folds_training_rows_is_predicted_absent(
        competition_factory, library: str) -> None:
    """A multilabel label with one positive row: the fold that validates on it trains on
    negatives alone, and its model's two probability columns were written into one (a
    shape-mismatch traceback). That fold now predicts the label at Laplace's floor,
    1 / (training rows + 2): not a certain 0, which log loss clipped (~34.5 on its row)."""
    data = _data(competition_factory, library, "multilabel")
    data["competition"]["metric"] = "log_loss"
    path = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    frame["b"] = 0
    frame.loc[7, "b"] = 1
    frame.to_csv(path, index=False)
    cfg = build_config(data)
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet").set_index("id")
    fold = oof.loc[frame.loc[7, "id"], "fold"]
    rows = int((oof["fold"] != fold).sum())
    np.testing.assert_allclose(oof.loc[oof["fold"] == fold, "b"], 1.0 / (rows + 2), rtol=1e-6)
    assert np.isfinite(oof[["a", "b"]].to_numpy()).all()


@pytest.mark.parametrize("separable", [False, True])
def test_a_fold_that_keeps_its_first_tree_alone_is_said(competition_factory, caplog,
                                                        monkeypatch, separable: bool) -> None:
    """LightGBM on rare positives under log loss kept 1 tree in 3 of 5 folds (held-out ROC
    AUC 0.64): the fold predicts near a constant, and only the log's info line said so. A
    first tree that already ranks the fold perfectly (a separable toy table) is no overfit."""
    import logging

    fitted, fold_dir = job.fit_estimator, job.fold_dir
    kept, fold_now = {0: 1, 1: 3}, [0]  # fold -> the trees the library keeps

    def tracking_fold_dir(cfg: Any, seed: int, fold: int) -> Path:
        fold_now[0] = fold  # the job asks for its folder before it fits
        return fold_dir(cfg, seed, fold)

    def first_tree_best(*args: Any) -> int:
        fitted(*args)
        return kept[fold_now[0]]

    monkeypatch.setattr(job, "fold_dir", tracking_fold_dir)
    monkeypatch.setattr(job, "fit_estimator", first_tree_best)
    data = _data(competition_factory, "lightgbm", "binary")
    if separable:  # x1 is the label: one split ranks every row right
        path = Path(data["competition"]["dir"]) / "train.csv"
        frame = pd.read_csv(path)
        frame["x1"] = (frame["target"] == "yes").astype(float)
        frame.to_csv(path, index=False)
    cfg = build_config(data)
    with caplog.at_level(logging.WARNING, logger="pipeline.jobs.gbdt"):
        train.run(cfg)
    said = [r.getMessage() for r in caplog.records if "kept 1 tree" in r.getMessage()]
    assert said == ([] if separable else [
        f"{cfg.name} seed0/fold0 (of 2): lightgbm kept 1 tree of 'target': {job.ONE_TREE}"])
    assert _metrics(cfg, 0)["best_iteration"] == 1 and _metrics(cfg, 1)["best_iteration"] == 3
    assert (_metrics(cfg, 0)["best_score"] == 1.0) == separable


def test_a_ray_jobs_cpus_cap_a_gbdt_members_threads(monkeypatch, tmp_path) -> None:
    """A Ray worker records its job's CPUs (executor._call); LightGBM, XGBoost and CatBoost
    then run on that many threads unless the params name a count (two jobs on one machine
    each started every core's threads); the local executor leaves the libraries' defaults."""
    import os

    from pipeline.executor import _call
    from pipeline.models.gbdt import GBDTSettings, build_estimator
    from pipeline.models.gbdt_libraries import JOB_THREADS_ENV

    def estimator(library: str, **params: Any) -> Any:
        return build_estimator(GBDTSettings(library, dict(params), 0, "cpu"), "binary",
                               "roc_auc", "cpu", 0, [])

    monkeypatch.delenv(JOB_THREADS_ENV, raising=False)
    assert estimator("lightgbm").get_params()["n_jobs"] is None  # the library's default
    import torch

    before = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)  # first: the test's own directory is restored after it
    try:
        assert _call(lambda: os.environ[JOB_THREADS_ENV], str(tmp_path), 1) == "1"
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv(JOB_THREADS_ENV, "1")
    assert estimator("lightgbm").get_params()["n_jobs"] == 1
    assert estimator("xgboost").get_params()["n_jobs"] == 1
    assert estimator("catboost").get_params()["thread_count"] == 1
    # a count the params give is kept, by any of its names
    assert estimator("lightgbm", num_threads=2).get_params()["num_threads"] == 2
    assert estimator("lightgbm", num_threads=2).get_params()["n_jobs"] is None
    assert estimator("xgboost", nthread=2).get_params()["n_jobs"] is None

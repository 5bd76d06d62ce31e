"""Category encodings (pipeline/data/encodings.py): count and frequency values, target
encoding cross-fitted inside the fold's training rows (never fitted on validation or test
rows), every task's target layout, and the members that take them through the train stage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import train
from pipeline.config import build_config
from pipeline.data.encodings import CategoryEncodings, TabularConfig, normalise_categories
from pipeline.errors import ConfigError


def test_count_and_frequency_values() -> None:
    train_x = pd.DataFrame({"c": ["a", "b", "a", None, "a", 3.0], "d": [1, 1, 2, 2, 2, 2]})
    enc = CategoryEncodings(("count", "frequency"), "binary")
    out = enc.fit_transform(train_x)
    # columns: count(c), count(d), frequency(c), frequency(d); missing is a value of its own,
    # and 3.0 is the category '3'
    np.testing.assert_array_equal(out[:, 0], [3, 1, 3, 1, 3, 1])
    np.testing.assert_array_equal(out[:, 1], [2, 2, 4, 4, 4, 4])
    np.testing.assert_allclose(out[:, 2:], out[:, :2] / 6)
    other = enc.transform(pd.DataFrame({"c": ["z", "3", np.nan], "d": [2, 9, 1]}))
    np.testing.assert_allclose(other, [[0, 4, 0, 4 / 6], [1, 0, 1 / 6, 0], [1, 2, 1 / 6, 2 / 6]])
    assert enc.names_out(["c", "d"]) == ["c:count", "d:count", "c:frequency", "d:frequency"]


def test_target_encoding_is_cross_fitted_within_the_training_rows() -> None:
    """An id-like column (one value per row): encoded with its own label, a row's value gives
    its label away (AUC 1); cross-fitted, every row is encoded without its label (its value
    is unseen in the other inner folds: the prior), so nothing leaks."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = pd.DataFrame({"code": [f"r{i}" for i in range(200)]})
    naive = CategoryEncodings(("target",), "binary").fit(x, y).transform(x)[:, 0]
    assert roc_auc_score(y, naive) == 1.0  # the leak cross-fitting prevents
    crossed = CategoryEncodings(("target",), "binary").fit_transform(x, y)[:, 0]
    assert np.ptp(crossed) < 0.2 and abs(roc_auc_score(y, crossed) - 0.5) < 0.15
    # a real group effect survives cross-fitting
    group = pd.DataFrame({"g": rng.integers(0, 4, 200).astype(str)})
    yg = (rng.random(200) < np.array([0.1, 0.9, 0.2, 0.8])[group["g"].astype(int)]).astype(int)
    assert roc_auc_score(yg, CategoryEncodings(("target",), "binary")
                         .fit_transform(group, yg)[:, 0]) > 0.8


@pytest.mark.parametrize(("task", "y", "width", "names"), [
    ("multiclass", np.arange(60) % 3, 3, ["c:target_0", "c:target_1", "c:target_2"]),
    ("multilabel", np.stack([np.arange(60) % 2, np.arange(60) // 30], 1), 2,
     ["c:target#0", "c:target#1"]),
    ("regression", np.linspace(0, 1, 60)[:, None], 1, ["c:target"]),
    ("regression", np.stack([np.linspace(0, 1, 60)] * 2, 1), 2, ["c:target#0", "c:target#1"]),
])
def test_target_encoding_layout_per_task(task: str, y: np.ndarray, width: int,
                                         names: list[str]) -> None:
    x = pd.DataFrame({"c": np.array(list("abcd"))[np.arange(60) % 4]})
    enc = CategoryEncodings(("target",), task, cv=3)
    assert enc.fit_transform(x, y).shape == (60, width)
    assert enc.transform(x.iloc[:5]).shape == (5, width) and enc.names_out(["c"]) == names


@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_rows_missing_a_target_get_the_encoder_of_the_rows_that_have_it(task: str) -> None:
    """Masked targets ('competition.missing_targets: mask') are NaN: scikit-learn's encoder
    refused them ("Input y contains NaN"), and since high-cardinality columns are encoded by
    default that failed every LightGBM/XGBoost fold of such a competition."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"c": [f"v{i % 30}" for i in range(300)]})
    y = (rng.random((300, 2)) < 0.5).astype(float) if task == "multilabel" else rng.normal(
        size=(300, 2))
    y[::7, 1] = np.nan
    enc = CategoryEncodings(("target",), task, cv=3, random_state=4)
    out = enc.fit_transform(x, y)
    assert out.shape == (300, 2) and not np.isnan(out).any()
    held = ~np.isnan(y[:, 1])
    # the rows with the target: cross-fitted among themselves, as if the others were absent
    alone = CategoryEncodings(("target",), task, cv=3, random_state=4)
    np.testing.assert_allclose(out[held, 1], alone.fit_transform(x[held], y[held, 1])[:, 0])
    # the rows without it: the encoder fitted on the rows that have it
    np.testing.assert_allclose(out[~held, 1], alone.transform(x[~held])[:, 0])
    # the complete target is encoded as before
    whole = CategoryEncodings(("target",), task, cv=3, random_state=4)
    np.testing.assert_allclose(out[:, 0], whole.fit_transform(x, y[:, 0])[:, 0])


def test_multiclass_target_encoding_of_a_fold_with_two_classes() -> None:
    """A class rarer than the folds leaves some fold's training rows two of the classes:
    scikit-learn's multiclass encoder failed there (IndexError); the fold encodes the share
    of the larger label as a binary encoder would."""
    x = pd.DataFrame({"c": list("aabb") * 15})
    y = np.array([0, 2, 2, 2] * 15)  # class 1 absent from these rows
    enc = CategoryEncodings(("target",), "multiclass", cv=3)
    out = enc.fit_transform(x, y)
    assert out.shape == (60, 1) and enc.names_out(["c"]) == ["c:target"]
    # 'a' rows: half are class 2, 'b' rows: all (shrunk towards the 0.75 prior)
    encoded = enc.transform(pd.DataFrame({"c": ["a", "b", "z"]}))[:, 0]
    assert 0.5 <= encoded[0] < 0.75 < encoded[1] <= 1.0 and encoded[2] == pytest.approx(0.75)


def test_target_encoding_needs_targets_and_config_is_checked() -> None:
    with pytest.raises(ValueError, match="needs the training rows' targets"):
        CategoryEncodings(("target",), "binary").fit_transform(pd.DataFrame({"c": ["a"]}))
    with pytest.raises(ValueError, match="each encoding at most once"):
        TabularConfig(encodings=["count", "count"])
    with pytest.raises(ValueError, match="target_cv"):
        TabularConfig(target_cv=1)


def _grouped(factory, model: dict[str, Any], encodings: list[str],
             categories: str = "auto") -> dict[str, Any]:
    """A binary competition whose label depends on a 12-value category (non-monotone in its
    codes) and on nothing else; ids are categories too (a leak check: never seen in CV)."""
    data = factory("tabular", "binary", n_train=240, n_test=20)
    root = Path(data["competition"]["dir"])
    rng = np.random.default_rng(1)
    rates = rng.permutation(np.linspace(0.05, 0.95, 12))
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(root / name)
        frame["g"] = rng.integers(0, 12, len(frame))
        if name == "train.csv":
            frame["target"] = np.where(rng.random(len(frame)) < rates[frame["g"]], "yes", "no")
        frame.to_csv(root / name, index=False)
    data["competition"] |= {"feature_columns": ["g", "id"], "categorical_columns": ["g"]}
    data["model"] = {"encoders": [model],
                     "tabular": {"encodings": encodings, "categories": categories}}
    data["name"] = f"g-{'-'.join(encodings) or 'ordinal'}-{model['name'].split('.')[-1]}"
    return data


def test_sklearn_member_with_target_encoding_fits_inside_each_fold(competition_factory
                                                                   ) -> None:
    # ordinal codes beside the encodings: the control is a linear model on the codes alone
    # (one-hot columns, the default for it, would learn the group rates by themselves)
    model = {"name": "sklearn:sklearn.linear_model.LogisticRegression"}
    plain = train.run(build_config(_grouped(competition_factory, model, [], "ordinal")))
    cfg = build_config(_grouped(competition_factory, model, ["target", "count"], "ordinal"))
    encoded = train.run(cfg)
    assert encoded > plain + 0.1 and encoded > 0.75  # the group rates, not code order
    train_ids = set(pd.read_csv(Path(cfg.competition.dir) / "train.csv")["id"])
    folds = pd.read_csv(cfg.folds_file)
    for fold in range(2):
        fitted = joblib.load(cfg.run_dir / "seed0" / f"fold{fold}" / "model.joblib")
        enc = fitted.named_steps["columns"].named_transformers_["encoded"]
        seen = set(enc.target_encoders_[0].categories_[1]) | set(enc.counts_["id"])
        # only this fold's training rows: no validation id, no test id
        assert seen == set(folds.loc[folds["fold"] != fold, "id"]) and seen < train_ids


def test_gbdt_member_adds_encoding_columns(competition_factory) -> None:
    model = {"name": "lightgbm", "params": {"n_estimators": 100, "learning_rate": 0.3,
                                            "early_stopping_rounds": 5,
                                            "min_child_samples": 5, "n_jobs": 1}}
    cfg = build_config(_grouped(competition_factory, model, ["target", "frequency"]))
    assert train.run(cfg) > 0.7
    fitted = joblib.load(cfg.run_dir / "seed0" / "fold0" / "model.joblib")
    assert fitted.features.columns == ["g", "id", "g:target", "id:target", "g:frequency",
                                       "id:frequency"]
    importance = pd.read_csv(cfg.run_dir / "seed0" / "fold0" / "feature_importance.csv")
    assert set(importance["feature"]) == set(fitted.features.columns)


def test_encodings_refused_for_networks(competition_factory) -> None:
    data = competition_factory("tabular", "binary")
    data["model"]["tabular"] = {"encodings": ["target"]}
    message = re.escape("'model.tabular.encodings' apply to 'sklearn:'")
    with pytest.raises(ConfigError, match=message):
        build_config(data)


def test_normalise_categories_still_served_by_tabular() -> None:
    from pipeline.data import tabular

    assert tabular.normalise_categories is normalise_categories

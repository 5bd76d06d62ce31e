"""High-cardinality categories for LightGBM and XGBoost members: which columns lose their
native codes to target + count encodings, that the encodings never see a row's own label or
another fold's rows, that ``high_cardinality: native`` restores the codes (and the old train
hash), and that a bad value is one line."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import train
from pipeline.config import build_config
from pipeline.data.encodings import HIGH_CARDINALITY, CategoryEncodings, TabularConfig
from pipeline.errors import ConfigError
from pipeline.models.tree_features import TreeFeatures, high_cardinality_encoder
from tests.data.test_encodings import _grouped


def _levels(n: int, rows: int, prefix: str) -> list[str]:
    return [f"{prefix}{i % n}" for i in range(rows)]


def _features(above: int | None, encodings: tuple[str, ...] = ()) -> TreeFeatures:
    high_above, high = high_cardinality_encoder(
        "lightgbm", "native" if above is None else above, encodings, "binary", 5, "auto", 0)
    return TreeFeatures(["n"], ["lo", "at", "hi"], high_above=high_above, high=high,
                        encodings=CategoryEncodings(encodings, "binary", 5, "auto", 0)
                        if encodings else None)


def test_columns_over_the_threshold_lose_their_codes_to_target_and_count() -> None:
    rows = 410
    frame = pd.DataFrame({"n": np.arange(rows, dtype=float), "lo": _levels(5, rows, "l"),
                          "at": _levels(40, rows, "a"), "hi": _levels(41, rows, "h")})
    y = np.arange(rows) % 2
    features = _features(40)
    x = features.fit_transform(frame, y, "lightgbm")
    # 40 levels is not over 40: 'at' keeps its codes; 41 is
    assert features.native_columns == ["lo", "at"] and features.high_columns == ["hi"]
    assert features.columns == ["n", "lo", "at", "hi:target", "hi:count"]
    assert [str(t) for t in x.dtypes] == ["float64", "category", "category", "float64",
                                          "float64"]
    assert x["f4"].tolist() == [10.0] * rows  # each of 41 levels 10 times in 410 rows
    test = frame.iloc[:3].assign(hi=["h0", "unseen", None])
    assert features.transform(test, "lightgbm")["f4"].tolist() == [10.0, 0.0, 0.0]
    # a threshold under every column encodes all of them, in column order
    every = _features(4)
    every.fit_transform(frame, y, "lightgbm")
    assert every.columns == ["n", "lo:target", "at:target", "hi:target", "lo:count",
                             "at:count", "hi:count"]


def test_native_restores_every_columns_codes_and_catboost_is_left_alone() -> None:
    rows = 300
    frame = pd.DataFrame({"n": np.zeros(rows), "lo": _levels(5, rows, "l"),
                          "at": _levels(250, rows, "a"), "hi": _levels(300, rows, "h")})
    native = _features(None)
    x = native.fit_transform(frame, np.arange(rows) % 2, "lightgbm")
    assert native.columns == ["n", "lo", "at", "hi"] and native.high is None
    assert list(x.dtypes.astype(str)) == ["float64", "category", "category", "category"]
    assert high_cardinality_encoder("catboost", 10, (), "binary", 5, "auto", 0) == (None, None)
    assert high_cardinality_encoder("xgboost", "native", (), "binary", 5, "auto", 0) == (
        None, None)
    # the default: 'at' (250 levels) and 'hi' are over 200
    assert TabularConfig().high_cardinality == HIGH_CARDINALITY == 200
    default = _features(HIGH_CARDINALITY)
    default.fit_transform(frame, np.arange(rows) % 2, "lightgbm")
    assert default.high_columns == ["at", "hi"]


def test_encodings_asked_for_every_column_are_not_added_twice() -> None:
    rows = 300
    frame = pd.DataFrame({"n": np.zeros(rows), "lo": _levels(5, rows, "l"),
                          "at": _levels(5, rows, "a"), "hi": _levels(300, rows, "h")})
    features = _features(100, ("target",))  # 'count' is the one left to the high encoder
    features.fit_transform(frame, np.arange(rows) % 2, "lightgbm")
    assert features.columns == ["n", "lo", "at", "lo:target", "at:target", "hi:target",
                                "hi:count"]
    both = _features(100, ("count", "target"))
    assert both.high is None  # nothing to add: the codes are dropped alone
    both.fit_transform(frame, np.arange(rows) % 2, "lightgbm")
    assert both.columns == ["n", "lo", "at", "lo:count", "at:count", "hi:count",
                            "lo:target", "at:target", "hi:target"]


def test_the_training_rows_never_see_their_own_label() -> None:
    # an id-like column (every value once) and labels that are noise: cross-fitted, each
    # training row's target encoding comes from other rows and says nothing of its label;
    # encoded with its own label (in sample) it would rank the labels near perfectly
    rng = np.random.default_rng(0)
    rows = 2000
    frame = pd.DataFrame({"n": np.zeros(rows), "lo": _levels(3, rows, "l"),
                          "at": _levels(3, rows, "a"), "hi": [f"id{i}" for i in range(rows)]})
    y = rng.integers(0, 2, rows)
    features = _features(HIGH_CARDINALITY)
    x = features.fit_transform(frame, y, "lightgbm")
    assert features.columns[-2:] == ["hi:target", "hi:count"]
    assert abs(roc_auc_score(y, x["f3"]) - 0.5) < 0.05
    leaky = features.transform(frame, "lightgbm")["f3"]  # the encoder fitted on every row
    assert roc_auc_score(y, leaky) > 0.95


def test_features_pickled_before_the_rule_keep_every_columns_codes() -> None:
    rows = 300
    frame = pd.DataFrame({"n": np.zeros(rows), "lo": _levels(5, rows, "l"),
                          "at": _levels(5, rows, "a"), "hi": _levels(300, rows, "h")})
    features = _features(None)
    features.fit_transform(frame, None, "lightgbm")
    for name in ("high_above", "high", "native"):  # as an older release pickled it
        del features.__dict__[name]
    assert features.columns == ["n", "lo", "at", "hi"]
    assert features.transform(frame, "lightgbm").shape == (rows, 4)


def _ids_as_categories(factory: Any, tabular: dict[str, Any]) -> dict[str, Any]:
    """The encodings tests' competition (a label that follows a 12-value category) with its
    ids (~120 a fold's training rows) as a categorical column too."""
    data = _grouped(factory, {"name": "lightgbm", "params": {
        "n_estimators": 50, "learning_rate": 0.3, "early_stopping_rounds": 5,
        "min_child_samples": 5, "n_jobs": 1}}, [])
    data["competition"]["categorical_columns"] = ["g", "id"]
    data["model"]["tabular"] = tabular
    data["name"] = f"ids-{tabular.get('high_cardinality', 'default')}"
    return data


def test_a_fold_encodes_its_training_rows_alone_and_native_restores_codes(
        competition_factory) -> None:
    cfg = build_config(_ids_as_categories(competition_factory, {"high_cardinality": 50}))
    train.run(cfg)
    folds = pd.read_csv(cfg.folds_file)
    train_ids = set(pd.read_csv(Path(cfg.competition.dir) / "train.csv")["id"].astype(str))
    for fold in range(2):
        features = joblib.load(cfg.run_dir / "seed0" / f"fold{fold}" / "model.joblib").features
        assert features.columns == ["g", "id:target", "id:count"]
        seen = set(features.high.target_encoders_[0].categories_[0]) | set(
            features.high.counts_["id"])
        # this fold's training rows alone: no validation id, no test id
        assert seen == set(folds.loc[folds["fold"] != fold, "id"].astype(str)) < train_ids
    native = build_config(_ids_as_categories(competition_factory,
                                             {"high_cardinality": "native"}))
    train.run(native)
    features = joblib.load(native.run_dir / "seed0" / "fold0" / "model.joblib").features
    assert features.columns == ["g", "id"] and features.high is None


def _hash_before_the_rule(cfg: Any) -> str:
    """The train hash the release before the high-cardinality rule gave ``cfg`` (mirrors
    pipeline/train_hash.py then, for a LightGBM member without text columns)."""
    dumped = cfg.model_dump(mode="json", exclude_defaults=True)
    for key in ("predict", "output_dir", "folds_dir", "submissions_dir", "name", "executor"):
        dumped.pop(key, None)
    dumped["competition"].pop("dir", None)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def test_runs_trained_on_native_codes_are_not_reused_as_the_new_default(
        competition_factory) -> None:
    data = _ids_as_categories(competition_factory, {})
    default = build_config(copy.deepcopy(data))
    assert default.train_hash() != _hash_before_the_rule(default)
    native = copy.deepcopy(data)
    native["model"]["tabular"] = {"high_cardinality": "native"}
    # 'native' trains what the release before trained: its hash, so its runs are reused
    assert build_config(native).train_hash() == _hash_before_the_rule(default)
    other = copy.deepcopy(data)
    other["model"]["tabular"] = {"high_cardinality": 50}
    assert build_config(other).train_hash() not in (default.train_hash(),
                                                    build_config(native).train_hash())


@pytest.mark.parametrize("value", [0, -3, True, "auto", 2.5, None])
def test_a_bad_high_cardinality_is_refused_in_one_line(competition_factory, value) -> None:
    data = _ids_as_categories(competition_factory, {"high_cardinality": value})
    with pytest.raises(ConfigError) as info:
        build_config(data)
    # the loader's header, then one line for the one problem
    header, problem = str(info.value).strip().splitlines()
    assert header == "invalid config <dict>:"
    assert problem.strip() == (
        "'model.tabular.high_cardinality': must be an int >= 1 (columns with more distinct "
        f"values are target + count encoded) or 'native'. Got {value!r}.")

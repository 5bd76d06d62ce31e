"""Gradient-boosted members (pipeline/models/gbdt.py): their params and checks at load, the
category vocabulary, the device, and the estimator each library gets."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.models.gbdt import (
    DEFAULT_RATE,
    DEFAULT_ROUNDS,
    DEFAULT_TREES,
    LIBRARIES,
    UNKNOWN,
    TreeFeatures,
    build_estimator,
    gbdt_settings,
    resolve_device,
)


def _config(factory, library: str, task: str = "binary", **params: Any) -> dict[str, Any]:
    data = factory("tabular", task)
    data["model"] = {"encoders": [{"name": library, "params": params}]}
    return data


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_member_loads_with_our_defaults_and_its_own_params(competition_factory,
                                                             library: str) -> None:
    cfg = build_config(_config(competition_factory, library, max_depth=4))
    assert cfg.model.is_sklearn  # a whole model: no network, tokenizer or accelerator
    encoder = cfg.model.encoders[0]
    assert encoder.kind == library and encoder.info.build is None
    settings = gbdt_settings(encoder.kind, encoder.params)
    assert settings.params == {"max_depth": 4, "n_estimators": DEFAULT_TREES,
                               "learning_rate": DEFAULT_RATE}
    assert (settings.early_stopping_rounds, settings.device) == (DEFAULT_ROUNDS, "cpu")
    # the library's own names for the tree count and rate replace our defaults
    trees, rate = {"lightgbm": ("num_iterations", "shrinkage_rate"),
                   "xgboost": ("n_estimators", "eta"),
                   "catboost": ("iterations", "learning_rate")}[library]
    own = gbdt_settings(library, {trees: 50, rate: 0.1, "early_stopping_rounds": 0,
                                  "device": "auto"})
    assert own.params == {trees: 50, rate: 0.1}
    assert (own.early_stopping_rounds, own.device) == (0, "auto")


@pytest.mark.parametrize(("library", "param", "hint"), [
    ("lightgbm", "num_leave", "num_leaves"),
    ("xgboost", "max_dept", "max_depth"),
    ("catboost", "depht", "depth"),
])
def test_an_unknown_param_is_refused_at_load_naming_the_member(competition_factory, library,
                                                               param, hint) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(_config(competition_factory, library, **{param: 3}))
    message = str(info.value)
    assert f"encoder {library!r}: unknown param(s) [{param!r}]" in message
    assert f"(did you mean {hint!r}?)" in message


@pytest.mark.parametrize(("params", "message"), [
    ({"early_stopping_rounds": -1}, "'params.early_stopping_rounds' must be an int >= 0"),
    ({"early_stopping_rounds": 2.5}, "'params.early_stopping_rounds' must be an int >= 0"),
    ({"device": "tpu"}, "'params.device' must be one of cpu, gpu, auto"),
    ({"max_depth": "deep"}, "encoder 'xgboost': bad 'params': Invalid Parameter format"),
])
def test_bad_values_of_our_params_are_one_line_errors(params, message) -> None:
    library = "xgboost"
    with pytest.raises(ConfigError, match="encoder 'xgboost'") as info:
        gbdt_settings(library, params)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_whole_gbdt_model_stands_alone(competition_factory) -> None:
    data = _config(competition_factory, "lightgbm")
    data["model"]["encoders"].append({"name": "mlp"})
    with pytest.raises(ConfigError, match="stands alone"):
        build_config(data)


def test_gbdt_members_take_pseudo_rows_but_not_network_parts(competition_factory) -> None:
    data = _config(competition_factory, "catboost")
    data["pseudo"] = {"source": "runs/earlier"}
    assert build_config(data).pseudo is not None  # gradient-boosted trees fit them
    sklearn = copy.deepcopy(data)
    sklearn["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    with pytest.raises(ConfigError, match="'pseudo' needs a network"):
        build_config(sklearn)
    data["predict"] = {"tta": ["noise"]}
    with pytest.raises(ConfigError, match="needs a network, not a 'catboost' model"):
        build_config(data)


def test_tree_features_share_the_mlps_category_rules() -> None:
    """Values normalised to strings (3 and 3.0 are one category); the training rows'
    vocabulary only: unseen and missing values are unknown (NaN, CatBoost: one string)."""
    train = pd.DataFrame({"n": ["1.5", "x", None], "c": [3, 3.0, "red"]}, dtype=object)
    test = pd.DataFrame({"n": [2.0, 1.0], "c": ["green", np.nan]}, dtype=object)
    features = TreeFeatures(["n"], ["c"]).fit(train)
    assert features.categories == {"c": ["3", "red"]}
    x = features.transform(train, "lightgbm")
    assert list(x.columns) == ["f0", "f1"] and x["f0"].dtype == np.float64
    assert np.isnan(x["f0"].iloc[1:]).all()  # an unparsable number is missing, as for the MLP
    assert x["f1"].tolist() == ["3", "3", "red"] and list(x["f1"].cat.categories) == ["3", "red"]
    unseen = features.transform(test, "xgboost")["f1"]
    assert unseen.isna().all() and list(unseen.cat.categories) == ["3", "red"]
    assert features.transform(test, "catboost")["f1"].tolist() == [UNKNOWN, UNKNOWN]
    assert features.categorical_names() == ["f1"]


def test_gpu_needs_cuda_and_auto_takes_it_when_present(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'params\.device: gpu' needs a CUDA GPU"):
        resolve_device(gbdt_settings("xgboost", {"device": "gpu"}))
    assert resolve_device(gbdt_settings("xgboost", {"device": "auto"})) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(gbdt_settings("xgboost", {"device": "auto"})) == "gpu"
    assert resolve_device(gbdt_settings("catboost", {"device": "auto"})) == "gpu"
    # LightGBM's pip build trains on GPUs through OpenCL only: auto stays on the CPU
    assert resolve_device(gbdt_settings("lightgbm", {"device": "auto"})) == "cpu"
    assert resolve_device(gbdt_settings("lightgbm", {"device": "gpu"})) == "gpu"
    assert resolve_device(gbdt_settings("lightgbm", {})) == "cpu"  # the default


@pytest.mark.parametrize(("library", "task", "metric", "expected"), [
    ("lightgbm", "binary", "roc_auc", {"metric": "auc", "random_state": 7, "verbose": -1}),
    ("lightgbm", "multiclass", "log_loss", {"metric": "multi_logloss"}),
    ("lightgbm", "regression", "mae", {"metric": "l1"}),
    ("xgboost", "multilabel", "roc_auc", {"eval_metric": "auc", "enable_categorical": True,
                                          "tree_method": "hist", "early_stopping_rounds": 9}),
    ("xgboost", "multiclass", "accuracy", {"eval_metric": "merror"}),
    ("xgboost", "regression", "rmse", {"eval_metric": "rmse", "device": "cpu"}),
    ("catboost", "binary", "roc_auc", {"eval_metric": "AUC", "random_seed": 7,
                                       "cat_features": ["f2"], "allow_writing_files": False}),
    ("catboost", "multiclass", "qwk", {"eval_metric": "WKappa"}),
    ("catboost", "regression", "r2", {"eval_metric": "R2"}),
])
def test_the_estimator_early_stops_on_the_competition_metric(library, task, metric,
                                                             expected) -> None:
    settings = gbdt_settings(library, {"early_stopping_rounds": 9})
    est = build_estimator(settings, task, metric, "cpu", 7, ["f2"])
    kind = "Regressor" if task == "regression" else "Classifier"
    assert type(est).__name__.endswith(kind)
    params = est.get_params()
    assert {k: params.get(k) for k in expected} == expected
    assert params.get("n_estimators", params.get("iterations")) == DEFAULT_TREES


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_metric_the_library_lacks_leaves_its_own_loss(library) -> None:
    est = build_estimator(gbdt_settings(library, {}), "binary", "f1_macro", "cpu", 0, [])
    key = "metric" if library == "lightgbm" else "eval_metric"
    assert est.get_params().get(key) is None
    mine = build_estimator(gbdt_settings(library, {key: "logloss" if library == "xgboost"
                                                   else "Logloss" if library == "catboost"
                                                   else "binary_logloss"}),
                           "binary", "roc_auc", "cpu", 0, [])
    assert "logloss" in str(mine.get_params()[key]).lower()  # the config's choice wins


def test_gpu_estimators_ask_their_library_for_it() -> None:
    """What each library is told on a GPU (checked without one: nothing is fitted)."""
    xgb = build_estimator(gbdt_settings("xgboost", {}), "binary", "roc_auc", "gpu", 0, [])
    cat = build_estimator(gbdt_settings("catboost", {}), "binary", "roc_auc", "gpu", 0, [])
    lgb = build_estimator(gbdt_settings("lightgbm", {}), "binary", "roc_auc", "gpu", 0, [])
    assert xgb.get_params()["device"] == "cuda"
    assert cat.get_params()["task_type"] == "GPU"
    assert lgb.get_params()["device_type"] == "gpu"

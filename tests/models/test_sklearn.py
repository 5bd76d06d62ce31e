"""scikit-learn models (pipeline/models/sklearn.py): estimators by import path, their column
preprocessing, and predictions in the artifact layout for every task."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.multioutput import MultiOutputClassifier, MultiOutputRegressor

from pipeline.competition import Competition, CompetitionConfig, load_competition
from pipeline.data.encodings import TabularConfig
from pipeline.data.tabular import MedianFill, TabularEncoder
from pipeline.errors import ConfigError
from pipeline.models.sklearn import build_estimator, import_estimator, predict_matrix
from tests.test_competition import cli_config, run_cli

ESTIMATOR = {"binary": "sklearn.linear_model.LogisticRegression",
             "multiclass": "sklearn.linear_model.LogisticRegression",
             "multilabel": "sklearn.linear_model.LogisticRegression",
             "regression": "sklearn.linear_model.Ridge"}


def _competition(factory, task: str) -> Competition:
    data = factory("tabular", task, n_train=60)
    return load_competition(CompetitionConfig(**data["competition"]))


def _fit(comp: Competition, path: str, rows: np.ndarray | None = None,
         categories: str = "auto"):
    rows = np.arange(len(comp.train)) if rows is None else rows
    model = build_estimator(path, {}, comp, seed=0, tabular=TabularConfig(categories=categories))
    y = comp.targets[rows]
    if comp.cfg.task == "binary" or (comp.cfg.task == "regression" and y.shape[1] == 1):
        y = y.ravel()  # as the scikit-learn job fits them
    return model.fit(comp.train.iloc[rows][comp.feature_columns], y)


def _numeric_step(model):
    """The (unfitted) pipeline the estimator's numeric columns go through."""
    return {name: step for name, step, _ in model.named_steps["columns"].transformers}["num"]


@pytest.mark.parametrize(("path", "message"), [
    ("sklearn.linear_model.LogisticRegresion", "no class 'sklearn.linear_model.LogisticRegresion'"),
    ("sklearn.nomodule.Ridge", "no class"),
    ("LogisticRegression", "no class"),
    ("sklearn.metrics.roc_auc_score", "is not an estimator class"),
    ("pathlib.Path", "is not an estimator class"),
])
def test_import_estimator_refuses_bad_paths(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        import_estimator(path)
    assert f"'sklearn:{path}'" in str(info.value)


def test_import_estimator_finds_classes() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    assert (import_estimator("sklearn.ensemble.HistGradientBoostingClassifier")
            is HistGradientBoostingClassifier)


def test_build_estimator_preprocesses_columns_and_seeds(competition_factory) -> None:
    comp = _competition(competition_factory, "multiclass")  # blue and red rows
    assert comp.numeric_columns == ["x1", "x2"] and comp.categorical_columns == ["color"]
    model = build_estimator(ESTIMATOR["multiclass"], {"C": 0.5}, comp, seed=7,
                            tabular=TabularConfig(categories="ordinal"))
    est = model.named_steps["model"]
    assert est.C == 0.5 and est.random_state == 7
    numeric = _numeric_step(model)
    assert isinstance(numeric.named_steps["fill"], MedianFill)  # it refuses NaN
    assert "scale" in numeric.named_steps  # not a tree: standardised
    nan_ok = build_estimator("sklearn.ensemble.HistGradientBoostingClassifier", {}, comp, 0)
    assert not {"fill", "scale"} & set(_numeric_step(nan_ok).named_steps)
    # the fitted encoding: numbers first, then category codes (-1 for unseen 'green')
    frame = comp.train[comp.feature_columns]
    x = model.fit(frame, comp.targets).named_steps["columns"].transform(
        frame.assign(color=["green", *frame["color"].tolist()[1:]]))
    assert not np.isnan(x).any() and x[0, 2] == -1 and set(x[1:, 2]) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="bad 'params'"):
        build_estimator(ESTIMATOR["multiclass"], {"depth": 3}, comp, 0)


def test_binary_predicts_the_positive_class_probability(competition_factory) -> None:
    comp = _competition(competition_factory, "binary")
    model = _fit(comp, ESTIMATOR["binary"])
    frame = comp.test[comp.feature_columns]
    pred = predict_matrix(model, frame, comp)
    assert pred.shape == (len(frame), 1)
    np.testing.assert_allclose(pred[:, 0], model.predict_proba(frame)[:, 1])
    train_pred = predict_matrix(model, comp.train[comp.feature_columns], comp)
    positive = comp.targets[:, 0] == 1  # classes[1] ('yes') is the positive class
    assert train_pred[positive, 0].mean() > train_pred[~positive, 0].mean() + 0.2


def test_multiclass_floors_a_class_absent_from_training(competition_factory) -> None:
    """A class the fold's training rows lack gets Laplace's 1 / (rows + classes), not 0: a
    class of one train row is absent from exactly the fold that validates it, whose log loss
    was then the clip constant (~34.5) for that row, in the CV and the blends tuned on it."""
    comp = _competition(competition_factory, "multiclass")
    assert comp.classes == [0, 1, 2]
    rows = np.flatnonzero(comp.targets != 1)  # class 1 never seen by this fold's model
    model = _fit(comp, ESTIMATOR["multiclass"], rows)
    frame = comp.test[comp.feature_columns]
    pred = predict_matrix(model, frame, comp, len(rows))
    assert pred.shape == (len(comp.test), 3)
    floor = 1.0 / (len(rows) + 3)
    np.testing.assert_allclose(pred[:, 1], floor)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0)
    # the seen classes keep their ratio, scaled to the rest
    proba = model.predict_proba(frame)
    np.testing.assert_allclose(pred[:, [0, 2]], proba * (1 - floor))
    full = predict_matrix(_fit(comp, ESTIMATOR["multiclass"]), frame, comp, len(comp.train))
    assert (full > 0).all() and np.allclose(full.sum(axis=1), 1.0)
    np.testing.assert_allclose(full, _fit(comp, ESTIMATOR["multiclass"]).predict_proba(frame))


def test_multilabel_gives_one_probability_per_label(competition_factory) -> None:
    comp = _competition(competition_factory, "multilabel")
    model = _fit(comp, ESTIMATOR["multilabel"])
    assert isinstance(model.named_steps["model"], MultiOutputClassifier)
    frame = comp.test[comp.feature_columns]
    pred = predict_matrix(model, frame, comp)
    assert pred.shape == (len(frame), 2) and ((pred > 0) & (pred < 1)).all()
    for j, proba in enumerate(model.predict_proba(frame)):
        np.testing.assert_allclose(pred[:, j], proba[:, 1])


@pytest.mark.parametrize("path", [ESTIMATOR["multilabel"],
                                  "sklearn.ensemble.HistGradientBoostingClassifier",
                                  "sklearn.ensemble.RandomForestClassifier"])
def test_a_label_with_one_class_in_training_is_predicted_as_that_class(competition_factory,
                                                                      path: str) -> None:
    """LogisticRegression refused to fit a one-class label, a random forest's one-column
    predict_proba crashed the layout, and HistGradientBoosting's put the lone class in
    column 0 of two: a label 1 on every training row was predicted as 0, silently."""
    comp = _competition(competition_factory, "multilabel")
    ones = comp.train.assign(b=1)
    comp = Competition(comp.cfg, ones, comp.test, comp.sample_submission, comp.classes)
    model = _fit(comp, path)
    rows = len(comp.train)
    pred = predict_matrix(model, comp.test[comp.feature_columns], comp, rows)
    # the value the training rows lack gets Laplace's floor, 1 / (rows + 2), not a certain
    # 0 (a rare label's positives all in the validated fold: log loss clipped them, ~34.5)
    np.testing.assert_allclose(pred[:, 1], 1.0 - 1.0 / (rows + 2))
    assert pred[:, 0].min() < pred[:, 0].max()  # label 'a' is still the estimator's
    comp = Competition(comp.cfg, ones.assign(b=0), comp.test, comp.sample_submission,
                       comp.classes)
    np.testing.assert_allclose(predict_matrix(_fit(comp, path), comp.test[comp.feature_columns],
                                              comp, rows)[:, 1], 1.0 / (rows + 2))
    # without the training rows' count (a caller that has none): the estimator's own values
    np.testing.assert_array_equal(
        predict_matrix(_fit(comp, path), comp.test[comp.feature_columns], comp)[:, 1], 0.0)


def test_regression_gives_values_one_column_per_target(competition_factory) -> None:
    comp = _competition(competition_factory, "regression")
    model = _fit(comp, ESTIMATOR["regression"])
    frame = comp.test[comp.feature_columns]
    pred = predict_matrix(model, frame, comp)
    assert pred.shape == (len(frame), 1) and pred.dtype == np.float64
    np.testing.assert_allclose(pred[:, 0], model.predict(frame))
    two = comp.train.assign(y2=-comp.train["y"])  # a second target: one regressor per column
    cfg = comp.cfg.model_copy(update={"target_columns": ["y", "y2"]})
    comp2 = Competition(cfg, two, comp.test, comp.sample_submission, [])
    model2 = build_estimator(ESTIMATOR["regression"], {}, comp2, seed=0)
    assert isinstance(model2.named_steps["model"], MultiOutputRegressor)
    model2.fit(two[comp2.feature_columns], comp2.targets)
    pred2 = predict_matrix(model2, frame, comp2)
    assert pred2.shape == (len(frame), 2)
    np.testing.assert_allclose(pred2[:, 1], -pred2[:, 0], atol=1e-8)


def test_unimportable_sklearn_estimator(competition_factory, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["model"]["encoders"][0]["name"] = "sklearn:sklearn.linear_model.LogisticRegresion"
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "'sklearn.linear_model.LogisticRegresion'" in err
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    assert not (run_dir / "oof.parquet").exists() and not (run_dir / "test.parquet").exists()
    assert not (Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv").exists()


# --- issue 12 item 1: the shared category encoding -----------------------------------------------


def _with_integer_codes(factory, test_codes: list) -> Competition:
    """The binary tabular competition with an integer-coded category 'k': train has a NaN, so
    pandas reads it as floats (3.0); test gets ``test_codes``."""
    data = factory("tabular", "binary", n_train=24, n_test=4)
    root = Path(data["competition"]["dir"])
    train, test = pd.read_csv(root / "train.csv"), pd.read_csv(root / "test.csv")
    train["k"] = [1, 2, 3, None] * 6
    test["k"] = test_codes
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    data["competition"]["categorical_columns"] = ["k"]
    return load_competition(CompetitionConfig(**data["competition"]))


def _category_codes(model, frame: pd.DataFrame, comp: Competition) -> np.ndarray:
    """The fitted pipeline's code of column 'k' for ``frame``."""
    out = model.named_steps["columns"].transform(frame[comp.feature_columns])
    return out[:, -len(comp.categorical_columns):][:, comp.categorical_columns.index("k")]


@pytest.mark.parametrize("test_codes", [[3, 1, 2, 7], ["3", "1", "2", "?"]],
                         ids=["ints", "strings"])
def test_integer_category_typed_differently_in_test_keeps_train_codes(
        competition_factory, test_codes: list) -> None:
    """issue 12 item 1: a scikit-learn member codes test values 3 / '3' like train's 3.0 (the old
    OrdinalEncoder compared raw values: a test column read as strings, e.g. one '?' among the
    codes, was all unknown), unseen and missing values get -1, and the codes are the network
    encoder's minus one, so every model sees one encoding."""
    comp = _with_integer_codes(competition_factory, test_codes)
    assert comp.train["k"].dtype == np.float64  # control: train read as floats
    assert comp.categorical_columns == ["color", "k"]
    model = _fit(comp, ESTIMATOR["binary"], categories="ordinal")
    train_codes = _category_codes(model, comp.train, comp)
    np.testing.assert_array_equal(train_codes[:4], [0, 1, 2, -1])  # '1', '2', '3', NaN
    np.testing.assert_array_equal(_category_codes(model, comp.test, comp), [2, 0, 1, -1])
    tabular = TabularEncoder(comp.numeric_columns, comp.categorical_columns).fit(comp.train)
    for frame in (comp.train, comp.test):
        np.testing.assert_array_equal(_category_codes(model, frame, comp) + 1,
                                      tabular.transform(frame)["cat"][:, 1])


# --- issue 13 item 2: a scikit-learn Pipeline as a member ----------------------------------------

STEPS = [{"name": "sklearn.impute.SimpleImputer", "params": {"strategy": "mean"}},
         {"name": "sklearn.preprocessing.StandardScaler"},
         {"name": "sklearn.feature_selection.SelectKBest", "params": {"k": 2}},
         {"name": "sklearn.linear_model.LogisticRegression", "params": {"C": 0.5}}]


def test_pipeline_member_trains_through_the_train_stage(competition_factory) -> None:
    from sklearn.feature_selection import SelectKBest

    from pipeline import train
    from pipeline.config import build_config

    data = competition_factory("tabular", "binary", n_train=80, n_test=12)
    data["model"] = {"encoders": [{"name": "sklearn:pipeline", "params": {"steps": STEPS}}],
                     "tabular": {"encodings": ["target"]}}
    cfg = build_config(data)
    assert train.run(cfg) > 0.85  # x1 carries the label
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert list(oof.columns) == ["id", "fold", "target"] and len(oof) == 80
    assert list(test.columns) == ["id", "target"] and len(test) == 12
    assert ((test["target"] > 0) & (test["target"] < 1)).all()
    fitted = joblib.load(cfg.run_dir / "seed0" / "fold0" / "model.joblib")
    assert list(fitted.named_steps) == ["columns", "step0", "step1", "step2", "model"]
    assert isinstance(fitted.named_steps["step2"], SelectKBest)
    assert fitted.named_steps["model"].C == 0.5 and fitted.named_steps["model"].random_state == 0
    # the columns step: x1, x2, the color code and its target encoding; the imputer fills (the
    # columns step does not: SimpleImputer takes NaN)
    assert fitted.named_steps["columns"].transform(
        pd.read_csv(Path(cfg.competition.dir) / "test.csv")[["x1", "x2", "color"]]).shape[1] == 4
    assert "fill" not in _numeric_step(fitted).named_steps


def test_pipeline_member_for_multilabel_and_regression(competition_factory) -> None:
    comp = _competition(competition_factory, "multilabel")
    model = build_estimator("pipeline", {"steps": STEPS}, comp, seed=0)
    # the chain per label: SelectKBest scores one label at a time
    assert list(model.named_steps) == ["columns", "model"]
    assert isinstance(model.named_steps["model"], MultiOutputClassifier)
    model.fit(comp.train[comp.feature_columns], comp.targets)
    assert predict_matrix(model, comp.test[comp.feature_columns], comp).shape == (
        len(comp.test), 2)
    reg = _competition(competition_factory, "regression")
    steps = [*STEPS[:3], {"name": "sklearn.linear_model.Ridge"}]
    fitted = build_estimator("pipeline", {"steps": steps}, reg, 0, target_transform="yeo-johnson")
    fitted.fit(reg.train[reg.feature_columns], reg.targets.ravel())
    pred = predict_matrix(fitted, reg.test[reg.feature_columns], reg)
    assert pred.shape == (len(reg.test), 1) and fitted.transformer_.kind == "yeo-johnson"
    # the columns step fills NaN unless the chain copes: a scaler passes NaN on to Ridge
    scaled = [{"name": "sklearn.preprocessing.StandardScaler"}, steps[-1]]
    assert "fill" in _numeric_step(build_estimator("pipeline", {"steps": scaled}, reg, 0)
                                   ).named_steps
    trees = [{"name": "sklearn.ensemble.HistGradientBoostingRegressor"}]
    assert "fill" not in _numeric_step(build_estimator("pipeline", {"steps": trees}, reg, 0)
                                       ).named_steps


@pytest.mark.parametrize(("params", "message"), [
    ({}, "'model.encoders.0.params.steps' must be a non-empty list of {name, params}"),
    ({"steps": STEPS, "k": 1}, "'model.encoders.0.params' of 'sklearn:pipeline' takes only"),
    ({"steps": ["sklearn.linear_model.Ridge"]}, "'model.encoders.0.params.steps.0' must be a "
                                                "mapping {name, params}"),
    ({"steps": [{"name": "sklearn.impute.SimpleImputr"}, STEPS[-1]]},
     "'model.encoders.0.params.steps.0.name': no class 'sklearn.impute.SimpleImputr'"),
    ({"steps": [{"name": "sklearn.svm.SVC"}, STEPS[-1]]},
     "'model.encoders.0.params.steps.0.name' 'sklearn.svm.SVC' is not a transformer"),
    ({"steps": STEPS[:1]}, "'sklearn.impute.SimpleImputer' \\(the last step\\) is not an "
                           "estimator"),
    ({"steps": [*STEPS[:1], {"name": "sklearn.linear_model.Ridge"}]},
     "'sklearn.linear_model.Ridge' is a regressor; task 'binary'"),
    ({"steps": [{"name": "sklearn.linear_model.LogisticRegression", "params": [1]}]},
     "'model.encoders.0.params.steps.0.params' must be a mapping"),
])
def test_pipeline_steps_refused_at_load(competition_factory, params: dict, message: str) -> None:
    from pipeline.config import build_config

    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:pipeline", "params": params}]}
    with pytest.raises(ConfigError, match=message) as info:
        build_config(data)
    assert len(str(info.value).splitlines()) == 2  # the header and the one problem


def test_onehot_categories_for_sklearn_members_only(competition_factory) -> None:
    from pipeline.config import build_config

    comp = _competition(competition_factory, "multiclass")  # color: blue, red
    onehot = TabularConfig(categories="onehot")
    model = build_estimator(ESTIMATOR["multiclass"], {}, comp, 0, onehot)
    frame = comp.train[comp.feature_columns]
    columns = _fit(comp, ESTIMATOR["multiclass"], categories="ordinal").named_steps["columns"]
    assert columns.transform(frame).shape[1] == 3
    encoded = model.fit(frame, comp.targets).named_steps["columns"].transform(
        frame.assign(color=["green", *frame["color"].tolist()[1:]]))
    assert encoded.shape[1] == 4  # x1, x2, blue, red
    np.testing.assert_array_equal(encoded[0, 2:], [0, 0])  # unseen: no column set
    assert (encoded[1:, 2:].sum(axis=1) == 1).all()
    for name in ("mlp", "lightgbm"):
        data = competition_factory("tabular", "binary")
        data["model"] = {"encoders": [{"name": name}], "tabular": {"categories": "onehot"}}
        with pytest.raises(ConfigError, match="'model.tabular.categories: onehot' applies to "
                                              f"'sklearn:' models; a '{name}' model"):
            build_config(data)


def test_onehot_of_an_id_like_column_stays_sparse_for_models_that_take_it(
    competition_factory,
) -> None:
    """A column with a value per row one-hot encoded was a dense rows x rows float matrix
    (80 GB at 100,000 rows); a model that takes sparse input now gets a sparse one, with the
    same predictions. A model that does not (histogram boosting) still gets dense columns."""
    from scipy import sparse


    comp = _competition(competition_factory, "binary")
    train = comp.train.assign(uid=[f"u{i}" for i in range(len(comp.train))])
    test = comp.test.assign(uid=[f"t{i}" for i in range(len(comp.test))])
    comp = Competition(comp.cfg, train, test, comp.sample_submission, comp.classes)
    assert "uid" in comp.categorical_columns
    frame = comp.train[comp.feature_columns]
    onehot = TabularConfig(categories="onehot")
    model = build_estimator(ESTIMATOR["binary"], {}, comp, 0, onehot).fit(
        frame, comp.targets.ravel())
    encoded = model.named_steps["columns"].transform(frame)
    assert sparse.issparse(encoded)
    assert encoded.shape == (60, 2 + train["color"].nunique() + 60)
    assert encoded.nnz <= 60 * 4  # x1, x2 (a few NaN), one color, one uid per row
    dense = build_estimator(ESTIMATOR["binary"], {}, comp, 0, onehot)
    dense.named_steps["columns"].set_params(sparse_threshold=0.0, cat__codes__sparse_output=False)
    dense.fit(frame, comp.targets.ravel())
    np.testing.assert_allclose(predict_matrix(model, comp.test[comp.feature_columns], comp),
                               predict_matrix(dense, comp.test[comp.feature_columns], comp),
                               rtol=1e-4)
    hgb = build_estimator("sklearn.ensemble.HistGradientBoostingClassifier", {}, comp, 0, onehot)
    assert not sparse.issparse(hgb.fit(frame, comp.targets.ravel()).named_steps["columns"]
                               .transform(frame))


@pytest.mark.parametrize(("path", "one_hot"), [
    ("sklearn.linear_model.LogisticRegression", True),
    ("sklearn.svm.LinearSVC", True),
    ("sklearn.neighbors.KNeighborsClassifier", True),
    ("sklearn.ensemble.RandomForestClassifier", False),  # a tree splits on a code's values
    ("sklearn.ensemble.HistGradientBoostingClassifier", False),
    ("sklearn.naive_bayes.GaussianNB", False),  # dense input only: codes, never rows x rows
])
def test_auto_categories_are_one_hot_for_models_that_are_no_trees(
        competition_factory, path: str, one_hot: bool) -> None:
    """By default (``categories: auto``) a linear model, an SVM or neighbours read a category
    as one-hot columns: as an ordinal code it was a number they could only weigh up or down
    (a probe's 507 movie names gave LogisticRegression CV ROC AUC 0.7995 as codes, as without
    the column, and 0.8177 one-hot)."""
    comp = _competition(competition_factory, "multiclass")  # color: blue, red
    frame = comp.train[comp.feature_columns]
    columns = _fit(comp, path).named_steps["columns"]
    assert columns.transform(frame).shape[1] == (4 if one_hot else 3)  # x1, x2, blue, red


def test_one_hot_categories_let_a_linear_model_learn_a_category_effect(
        competition_factory) -> None:
    """A target set by a category with no order (three colours, the middle code positive):
    one number per colour cannot separate it linearly, one-hot columns can."""
    comp = _competition(competition_factory, "binary")
    rng = np.random.default_rng(0)
    colours = rng.choice(["blue", "green", "red"], len(comp.train))
    train = comp.train.assign(color=colours, x1=rng.normal(size=len(colours)),
                              x2=rng.normal(size=len(colours)))
    y = (colours == "green").astype(float)[:, None]
    comp = Competition(comp.cfg, train, comp.test, comp.sample_submission, comp.classes)
    scores = {}
    for categories in ("ordinal", "auto"):
        model = build_estimator(ESTIMATOR["binary"], {}, comp, 0,
                                TabularConfig(categories=categories))
        model.fit(train[comp.feature_columns], y.ravel())
        scores[categories] = model.score(train[comp.feature_columns], y.ravel())
    assert scores["auto"] == 1.0 and scores["ordinal"] < 0.8


# --- classifiers with a decision function only -----------------------------------------------


@pytest.mark.parametrize("path", ["sklearn.linear_model.RidgeClassifier",
                                  "sklearn.svm.LinearSVC"])
def test_a_classifier_without_predict_proba_trains_and_submits(competition_factory,
                                                               path: str) -> None:
    """RidgeClassifier and LinearSVC have no predict_proba: the member failed with a traceback
    at its first fold's predictions; it now predicts Platt-calibrated probabilities."""
    from pipeline import submit, train
    from pipeline.config import build_config

    data = competition_factory("tabular", "binary", n_train=80, n_test=12)
    data["model"] = {"encoders": [{"name": f"sklearn:{path}"}]}
    cfg = build_config(data)
    assert train.run(cfg) > 0.85  # x1 carries the label
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert ((test["target"] > 0) & (test["target"] < 1)).all()
    sub = pd.read_csv(submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir))
    assert len(sub) == 12 and sub["target"].between(0, 1).all()


def test_decision_function_probabilities_for_multiclass_and_a_rare_class(
        competition_factory) -> None:
    comp = _competition(competition_factory, "multiclass")
    # one row of class 2 in the fold's training rows: fewer than any inner split count
    rows = np.r_[np.flatnonzero(comp.targets != 2), np.flatnonzero(comp.targets == 2)[:1]]
    model = _fit(comp, "sklearn.svm.LinearSVC", rows)
    frame = comp.test[comp.feature_columns]
    pred = predict_matrix(model, frame, comp)
    assert pred.shape == (len(frame), 3) and (pred >= 0).all()
    np.testing.assert_allclose(pred.sum(axis=1), 1.0)
    # the probabilities rank as the decision function does (calibration is monotone)
    binary = _competition(competition_factory, "binary")
    fitted = _fit(binary, "sklearn.linear_model.RidgeClassifier")
    frame = binary.test[binary.feature_columns]
    proba = predict_matrix(fitted, frame, binary)[:, 0]
    scores = np.mean([c.estimator.decision_function(fitted.named_steps["columns"].transform(
        frame)) for c in fitted.named_steps["model"].calibrated_.calibrated_classifiers_],
        axis=0)
    assert np.corrcoef(np.argsort(np.argsort(proba)), np.argsort(np.argsort(scores)))[0, 1] > 0.9


class LabelsOnly(ClassifierMixin, BaseEstimator):
    """A classifier with labels alone (no probabilities, no scores)."""

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.zeros(len(X))


def test_a_classifier_without_probabilities_or_scores_is_refused(competition_factory) -> None:
    comp = _competition(competition_factory, "binary")
    with pytest.raises(ConfigError, match="neither predict_proba nor decision_function"):
        build_estimator("tests.models.test_sklearn.LabelsOnly", {}, comp, seed=0)

"""A scikit-learn estimator named by import path, trained as a model of its own per fold:
``sklearn:<import.path.Estimator>``, or ``sklearn:pipeline`` with ``params.steps``, a
scikit-learn ``Pipeline`` of steps by import path (transformers, then the estimator)::

    name: sklearn:pipeline
    params:
      steps:
        - {name: sklearn.feature_selection.SelectKBest, params: {k: 20}}
        - {name: sklearn.linear_model.LogisticRegression, params: {C: 0.5}}

The shared column encoding (and the ``model.tabular`` encodings) goes first; a regression
``model.target_transform`` wraps the whole in a ``TransformedTargetRegressor``.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.multioutput import MultiOutputClassifier, MultiOutputRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from pipeline.competition import Competition
from pipeline.data.encodings import CategoryEncodings, TabularConfig
from pipeline.data.tabular import column_encoder
from pipeline.data.target_transform import TargetTransform
from pipeline.data.text_features import TfidfColumns
from pipeline.errors import ConfigError
from pipeline.models.absent_classes import floor_absent

PIPELINE = "pipeline"  # 'sklearn:pipeline': a Pipeline of params.steps


def import_estimator(path: str) -> type[BaseEstimator]:
    """The estimator class at ``package.module.Class`` (``pipeline``: ``Pipeline``)."""
    if path == PIPELINE:
        return Pipeline
    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"encoder 'sklearn:{path}': no class {path!r} can be imported") from None
    if not (inspect.isclass(cls) and hasattr(cls, "fit")):
        raise ConfigError(f"encoder 'sklearn:{path}': {path!r} is not an estimator class")
    return cls


def estimator_kind(path: str) -> str | None:
    """'classifier' or 'regressor' for the estimator class at ``path`` (scikit-learn's tags),
    None when it says neither (a transformer, a clusterer, a third-party class)."""
    cls = import_estimator(path)
    try:
        kind = get_tags(cls()).estimator_type
    except Exception:
        return None
    return kind if kind in ("classifier", "regressor") else None


def _step_class(path: Any, where: str) -> type[BaseEstimator]:
    if not isinstance(path, str):
        raise ConfigError(f"{where}.name' must be an import path. Got {path!r}.")
    try:
        return import_estimator(path)
    except ConfigError:
        raise ConfigError(f"{where}.name': no class {path!r} can be imported") from None


def pipeline_problem(params: dict[str, Any], task: str) -> str | None:
    """What is wrong with ``sklearn:pipeline``'s ``params`` for ``task``, or None: steps must
    be ``{name, params}`` mappings, importable, transformers before the last, and the last an
    estimator of the task's kind."""
    steps, where = params.get("steps"), "'model.encoders.0.params.steps"
    if set(params) - {"steps"}:
        return f"{where[:-6]}' of 'sklearn:pipeline' takes only 'steps'. Got {sorted(params)}."
    if not isinstance(steps, list) or not steps:
        return f"{where}' must be a non-empty list of {{name, params}}. Got {steps!r}."
    try:
        for i, step in enumerate(steps):
            here = f"{where}.{i}"
            if not isinstance(step, dict) or "name" not in step or set(step) - {"name", "params"}:
                return f"{here}' must be a mapping {{name, params}}. Got {step!r}."
            if not isinstance(step.get("params", {}), dict):
                return f"{here}.params' must be a mapping. Got {step['params']!r}."
            cls = _step_class(step["name"], here)
            last = i == len(steps) - 1
            if not last and not hasattr(cls, "transform"):
                return (f"{here}.name' {step['name']!r} is not a transformer; only the last "
                        "step is the estimator")
            if last:
                if not hasattr(cls, "predict"):
                    return f"{here}.name' {step['name']!r} (the last step) is not an estimator"
                kind = estimator_kind(step["name"])
                wanted = "regressor" if task == "regression" else "classifier"
                if kind is not None and kind != wanted:
                    return (f"{here}.name' {step['name']!r} is a {kind}; task {task!r} "
                            f"('competition.task') needs a {wanted}")
    except ConfigError as err:
        return str(err)
    return None


def _instance(cls: type[BaseEstimator], params: dict[str, Any], seed: int,
              where: str) -> BaseEstimator:
    params = dict(params)
    if "random_state" in inspect.signature(cls).parameters and "random_state" not in params:
        params["random_state"] = seed
    try:
        estimator = cls(**params)
        if hasattr(estimator, "_parameter_constraints"):  # scikit-learn's own check, which
            estimator._validate_params()  # fit() runs: a traceback in the first fold job
    except TypeError as err:  # scikit-learn's InvalidParameterError is a TypeError too
        raise ConfigError(f"{where}: bad 'params': {err}") from None
    return estimator


class OneClassFallback(ClassifierMixin, BaseEstimator):
    """``estimator``, or the constant answer where the training rows hold one class.

    A rare label of a multilabel task (a fold without its positives) leaves the fold's
    training rows one class: most classifiers refuse that (LogisticRegression: "needs
    samples of at least 2 classes"), and HistGradientBoosting fits but puts the class in
    column 0 of a two-column predict_proba. The label is then constant where the model
    could learn, so its training share (1 or 0) is the prediction (``DummyClassifier``).
    """

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any, **fit_params: Any) -> OneClassFallback:
        one_class = len(np.unique(np.asarray(y))) < 2
        model = DummyClassifier(strategy="prior") if one_class else clone(self.estimator)
        self.estimator_ = model.fit(X, y, **({} if one_class else fit_params))
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(X)


class DecisionProbabilities(ClassifierMixin, BaseEstimator):
    """A classifier without ``predict_proba`` (RidgeClassifier, LinearSVC, SVC without
    ``probability=True``) made to give probabilities, as every metric and blend reads them:
    scikit-learn's ``CalibratedClassifierCV`` maps its ``decision_function`` by Platt's
    sigmoid, fitted on inner folds of the training rows (what ``SVC(probability=True)``
    does), and predicts with the mean of the inner folds' calibrated models.

    The inner folds are stratified, up to 5 and no more than the rarest class's rows (at
    least 2): a class with fewer rows (a fold's rare class) is simply absent from some
    inner folds' training rows, which the calibration handles, rather than refused.
    """

    def __init__(self, estimator: BaseEstimator, seed: int = 0) -> None:
        self.estimator = estimator
        self.seed = seed

    def fit(self, X: Any, y: Any, **fit_params: Any) -> DecisionProbabilities:
        labels = np.asarray(y)
        n_splits = int(min(5, max(2, np.unique(labels, return_counts=True)[1].min())))
        with warnings.catch_warnings():  # "The least populated class ..." (said above)
            warnings.simplefilter("ignore", UserWarning)
            # splits as a list: an int (or a splitter) makes scikit-learn refuse a class
            # with fewer rows than splits
            splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=self.seed)
                          .split(np.zeros((len(labels), 1)), labels))
        self.calibrated_ = CalibratedClassifierCV(clone(self.estimator), method="sigmoid",
                                                  cv=splits).fit(X, labels, **fit_params)
        self.classes_ = self.calibrated_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.calibrated_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.calibrated_.predict_proba(X)


def _with_probabilities(estimator: BaseEstimator, task: str, seed: int,
                        where: str) -> BaseEstimator:
    """``estimator``, or for a classification task one wrapped to predict probabilities
    where it only has a decision function (it would fail at the first fold's predictions)."""
    if task == "regression" or hasattr(estimator, "predict_proba"):
        return estimator
    if not hasattr(estimator, "decision_function"):
        raise ConfigError(f"{where}: {type(estimator).__name__} has neither predict_proba nor "
                          f"decision_function; task {task!r} needs probabilities or scores")
    return DecisionProbabilities(estimator, seed)


def _multi_output(estimator: BaseEstimator, comp: Competition) -> BaseEstimator:
    task, k = comp.cfg.task, len(comp.pred_columns)
    if task == "multilabel":
        return MultiOutputClassifier(OneClassFallback(estimator))
    if task == "regression" and k > 1:
        return MultiOutputRegressor(estimator)
    return estimator


def _takes_nan(steps: list[BaseEstimator]) -> bool:
    """Whether the chain copes with NaN: every step up to the first imputer takes it (a
    scaler passes NaN on, so the estimator after it must take it too)."""
    for step in steps:
        if not get_tags(clone(step)).input_tags.allow_nan:
            return False
        if type(step).__module__.startswith("sklearn.impute") or type(step).__name__.endswith(
                "Imputer"):
            return True
    return True


def _takes_sparse(steps: list[BaseEstimator]) -> bool:
    """Whether every step of the chain takes a sparse matrix (linear models, SVMs, forests;
    not histogram boosting or a centring scaler)."""
    return all(get_tags(clone(step)).input_tags.sparse for step in steps)


# where a model's class comes from that splits on a column's values: an ordinal code is a
# category to it (a split isolates a value in a few cuts); to any other model it is a number
_TREE_MODULES = ("sklearn.tree", "sklearn.ensemble", "lightgbm", "xgboost", "catboost")


def one_hot_categories(mode: str, steps: list[BaseEstimator]) -> bool:
    """Whether a model of ``steps`` (its estimator last) reads the categories as one-hot
    columns (``model.tabular.categories``). ``auto``: where the estimator is no tree model
    and every step takes sparse input
    (linear models, SVMs, neighbours, naive Bayes, scikit-learn's MLP). An ordinal code is a
    number to a linear model, which can only weigh it up or down: a Rotten Tomatoes probe's
    507 movie names gave LogisticRegression nothing as codes (CV ROC AUC 0.7995 against
    0.7996 without the column) and 0.8177 one-hot. A model that takes dense input only keeps
    codes, so a column with a value per row never makes a dense rows x rows table."""
    if mode != "auto":
        return mode == "onehot"
    return not _is_tree(type(steps[-1])) and _takes_sparse(steps)


def _is_tree(cls: type) -> bool:
    return cls.__module__.startswith(_TREE_MODULES)


def scales_numbers(path: str, params: dict[str, Any]) -> bool:
    """Whether the member at ``path`` (``sklearn:pipeline``: its last step) reads its numbers
    standardised: every model but trees. A distance, a kernel or a penalty weighs a column
    by its units: unscaled (an income in the 10,000s beside an age), a probe's SVC scored
    held-out ROC AUC 0.68 and KNeighbors 0.68, against 0.84 and 0.83 standardised."""
    if path == PIPELINE:
        steps = params.get("steps")
        last = steps[-1] if isinstance(steps, list) and steps else None
        path = str(last.get("name", "")) if isinstance(last, dict) else ""
    try:
        return not _is_tree(import_estimator(path))
    except ConfigError:  # refused at load anyway
        return True


def build_estimator(path: str, params: dict[str, Any], comp: Competition, seed: int,
                    tabular: TabularConfig | None = None,
                    target_transform: str = "none") -> BaseEstimator:
    """The shared column encoding (ordinal categories, median fill where the first step does
    not take NaN, the ``tabular`` encodings) + the estimator at import ``path`` with
    ``params`` (or the steps of ``sklearn:pipeline``), in a ``Pipeline``; wrapped in a
    ``TransformedTargetRegressor`` for a ``target_transform``."""
    where = f"encoder 'sklearn:{path}'"
    if path == PIPELINE:
        problem = pipeline_problem(params, comp.cfg.task)
        if problem is not None:
            raise ConfigError(problem)
        classes = [import_estimator(step["name"]) for step in params["steps"]]
        parts = [_instance(cls, step.get("params", {}), seed, f"{where} step {i}")
                 for i, (cls, step) in enumerate(zip(classes, params["steps"], strict=True))]
        steps = [(f"step{i}", part) for i, part in enumerate(parts[:-1])]
        steps.append(("model", _with_probabilities(parts[-1], comp.cfg.task, seed, where)))
        wrapped = _multi_output(Pipeline(steps), comp)
        if not isinstance(wrapped, Pipeline):
            # several labels or targets: the whole chain per output, since a supervised
            # step (SelectKBest's scores) takes one target at a time
            steps = [("model", wrapped)]
    else:
        parts = [_instance(import_estimator(path), params, seed, where)]
        steps = [("model", _multi_output(
            _with_probabilities(parts[0], comp.cfg.task, seed, where), comp))]
    allow_nan = _takes_nan(parts)
    tab = tabular or TabularConfig()
    encodings = CategoryEncodings(tuple(tab.encodings), comp.cfg.task, tab.target_cv,
                                  tab.target_smooth, seed)
    # the encoding every model shares; trees need no scaling (every other model gets its
    # numbers standardised: scales_numbers), and keep NaN where they can; a model that takes
    # sparse input reads the text columns' TF-IDF columns themselves
    sparse = _takes_sparse(parts)
    columns = column_encoder(comp.numeric_columns, comp.categorical_columns,
                             scale=not _is_tree(type(parts[-1])),
                             impute=not allow_nan, indicators=False, encodings=encodings,
                             onehot=one_hot_categories(tab.categories, parts), sparse=sparse,
                             texts=comp.cfg.text_columns,
                             text=TfidfColumns.from_config(tab.text, not sparse, seed))
    model = Pipeline([("columns", columns), *steps])
    if comp.cfg.task != "regression" or target_transform == "none":
        return model
    transform = TargetTransform(target_transform, tuple(comp.cfg.target_columns))
    return TransformedTargetRegressor(regressor=model, transformer=transform,
                                      check_inverse=False)


def predict_matrix(model: BaseEstimator, frame: pd.DataFrame, comp: Competition,
                   rows: int = 0) -> np.ndarray:
    """Predictions in the artifact layout: probabilities per class/label, values otherwise;
    a model fitted on ``rows`` rows lacking a class (or one value of a label) gives it
    :func:`~pipeline.models.absent_classes.floor_absent`'s floor, not 0."""
    task = comp.cfg.task
    if task == "regression":
        return np.asarray(model.predict(frame), dtype=np.float64).reshape(len(frame), -1)
    proba = model.predict_proba(frame)
    if task == "multilabel":  # each label's estimator lists the classes it was fitted on
        return np.stack([_positive(p, c, rows) for p, c in
                         zip(proba, model.classes_, strict=True)], axis=1)
    classes = model.classes_.astype(np.int64)
    full = np.zeros((len(frame), 2 if task == "binary" else len(comp.classes)))
    full[:, classes] = proba
    floored = floor_absent(full, classes, rows) if rows or task == "multiclass" else full
    return floored[:, 1:2] if task == "binary" else floored


def _positive(proba: np.ndarray, classes: np.ndarray, rows: int) -> np.ndarray:
    """The probability of label 1 from an estimator fitted on ``classes`` of ``rows`` rows:
    where they held one value only (a rare label's positives all in the validated fold), the
    other gets :func:`~pipeline.models.absent_classes.floor_absent`'s floor, not a certain 0
    or 1 (log loss clips that: ~34.5 a row)."""
    present = np.asarray(classes).astype(np.int64)
    full = np.zeros((len(proba), 2))
    full[:, present] = proba
    return (floor_absent(full, present, rows) if rows else full)[:, 1]

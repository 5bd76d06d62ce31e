"""LightGBM, XGBoost and CatBoost as whole models, one per fold: their settings, native
categorical inputs, early stopping on the fold's validation rows with the competition metric
where the library has it, and predictions in the artifact layout.

A config names the library and gives its scikit-learn-API estimator's params, plus two of
ours: ``{name: lightgbm, params: {num_leaves: 63, early_stopping_rounds: 200, device: auto}}``.
Binary, multiclass and single-target regression fit one estimator; multilabel fits one per
label and multi-target regression one per target.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.target_transform import TargetTransform
from pipeline.errors import ConfigError
from pipeline.models.absent_classes import floor_absent
from pipeline.models.gbdt_libraries import LIBRARY, job_threads, task_group

# the feature frame lives in its own module; its names stay importable from here (and
# models pickled before the move name pipeline.models.gbdt.TreeFeatures)
from pipeline.models.tree_features import UNKNOWN as UNKNOWN
from pipeline.models.tree_features import TreeFeatures

LIBRARIES = ("lightgbm", "xgboost", "catboost")
OWN_PARAMS = ("early_stopping_rounds", "device")  # ours, not passed to the estimator
DEVICES = ("cpu", "gpu", "auto")
# Enough trees that early stopping, not the cap, ends training; a rate that needs them.
DEFAULT_TREES, DEFAULT_RATE, DEFAULT_ROUNDS = 10000, 0.05, 200
TREE_KEYS = {"n_estimators", "num_iterations", "num_boost_round", "num_trees", "iterations",
              "num_rounds", "nrounds", "num_round", "n_iter", "max_iter"}
_RATE_KEYS = {"learning_rate", "eta", "shrinkage_rate"}


@dataclass(frozen=True)
class GBDTSettings:
    """A GBDT member's config, split into the estimator's params and ours."""

    library: str
    params: dict[str, Any]  # to the estimator, with our defaults filled in
    early_stopping_rounds: int  # 0: no early stopping, every tree is kept
    device: str  # cpu | gpu | auto (as configured; :func:`resolve_device` decides)


def gbdt_settings(library: str, params: dict[str, Any]) -> GBDTSettings:
    """Split and check a member's ``params``; unknown estimator params are refused.

    Raises:
        ConfigError: a bad ``early_stopping_rounds`` or ``device``, or a param the library
            does not know (with the closest known name).
    """
    where = f"encoder {library!r}"
    rounds = params.get("early_stopping_rounds", DEFAULT_ROUNDS)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigError(f"{where}: 'params.early_stopping_rounds' must be an int >= 0 "
                          f"(0: no early stopping). Got {rounds!r}.")
    device = params.get("device", "cpu")
    if device not in DEVICES:
        raise ConfigError(f"{where}: 'params.device' must be one of {', '.join(DEVICES)} "
                          f"(it sets the library's own device option). Got {device!r}.")
    est = {k: v for k, v in params.items() if k not in OWN_PARAMS}
    _check_names(library, est)
    if not TREE_KEYS & set(est):
        est["n_estimators"] = DEFAULT_TREES
    if not _RATE_KEYS & set(est):
        est["learning_rate"] = DEFAULT_RATE
    return GBDTSettings(library, est, rounds, device)


def _known_names(library: str) -> set[str] | None:
    module = importlib.import_module(library)
    info = LIBRARY[library]
    if library == "catboost":  # its estimators list every param in their signatures
        return {name for cls in (info.classifier, info.regressor)
                for name in inspect.signature(getattr(module, cls)).parameters}
    names = set(getattr(module, info.classifier)().get_params())
    if library == "lightgbm":  # the sklearn params plus every core param and alias
        from lightgbm import basic

        try:  # a private table: a release without it skips the check (LightGBM warns)
            table = basic._ConfigAliases._get_all_param_aliases()
        except AttributeError:
            return None
        for aliases in table.values():
            names |= set(aliases)
    return names


def _check_names(library: str, params: dict[str, Any]) -> None:
    known = _known_names(library)
    if known is None:
        return
    # XGBoost's core params have no list: a one-tree dry run names the unused ones
    unknown = (_xgboost_unused(params) if library == "xgboost"
               else sorted(set(params) - known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known | set(OWN_PARAMS)), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"encoder {library!r}: unknown param(s) {unknown} for "
                          f"{library}'s estimators{hint}")


def _xgboost_unused(params: dict[str, Any]) -> list[str]:
    """The params XGBoost says it did not use, from one tree on eight rows (CPU)."""
    from xgboost import XGBRegressor

    probe = {k: v for k, v in params.items()
             if k not in ("objective", "eval_metric", "device", "n_estimators")}
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            XGBRegressor(n_estimators=1, **probe).fit(rng.random((8, 2)), rng.random(8))
        except Exception as err:  # a bad value: the same message as at fit time
            raise ConfigError(f"encoder 'xgboost': bad 'params': {_first_line(err)}") from None
    unused: list[str] = []
    for warning in caught:
        text = str(warning.message)
        if "are not used" in text:
            unused += [w.strip(' "') for w in text.split("{")[1].split("}")[0].split(",")]
    return sorted(w for w in unused if w)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def resolve_device(settings: GBDTSettings) -> str:
    """'cpu' or 'gpu' for this machine. ``gpu`` needs CUDA; ``auto`` takes the GPU when CUDA
    is present, except for LightGBM, whose pip build trains on GPUs only through OpenCL
    (often slower than its CPU trees): ask it for ``gpu`` explicitly.

    Raises:
        ConfigError: ``device: gpu`` on a machine without a CUDA GPU (no silent fallback:
            the config asked for speed it would not get).
    """
    import torch

    cuda = torch.cuda.is_available()
    if settings.device == "gpu" and not cuda:
        raise ConfigError(f"encoder {settings.library!r}: 'params.device: gpu' needs a CUDA "
                          "GPU and none is visible; use 'cpu', or 'auto' (the GPU when one "
                          "is present)")
    if settings.device == "auto":
        return "gpu" if cuda and settings.library != "lightgbm" else "cpu"
    return settings.device


def build_estimator(settings: GBDTSettings, task: str, metric: str, device: str, seed: int,
                    categorical: list[str]) -> Any:
    """The library's estimator for one output of ``task`` with our defaults: the eval
    metric matching ``metric`` (unless params name one), the seed, native categories and
    the device; quiet, and CatBoost writes no files."""
    info, group = LIBRARY[settings.library], task_group(task)
    params = dict(settings.params)
    module = importlib.import_module(info.module)
    cls = getattr(module, info.regressor if group == "regression" else info.classifier)
    if info.metric_key not in params and group in info.metrics.get(metric, {}):
        params[info.metric_key] = info.metrics[metric][group]
    params.setdefault(info.seed_key, seed)
    params |= job_threads(settings.library, params)  # a Ray job's CPUs, unless params say
    if settings.library == "lightgbm":
        params.setdefault("verbose", -1)
        if device == "gpu":
            params.setdefault("device_type", "gpu")
    elif settings.library == "xgboost":
        params |= {"enable_categorical": True}
        params.setdefault("tree_method", "hist")
        params.setdefault("verbosity", 0)
        params.setdefault("device", "cuda" if device == "gpu" else "cpu")
        if settings.early_stopping_rounds:
            params["early_stopping_rounds"] = settings.early_stopping_rounds
    else:
        params |= {"cat_features": categorical, "allow_writing_files": False}
        params.setdefault("verbose", False)
        if device == "gpu":
            params.setdefault("task_type", "GPU")
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"encoder {settings.library!r}: bad 'params': "
                          f"{_first_line(err)}") from None


def fit_estimator(model: Any, settings: GBDTSettings, x: pd.DataFrame, y: np.ndarray,
                  weight: np.ndarray, x_valid: pd.DataFrame, y_valid: np.ndarray) -> int:
    """Fit ``model`` with early stopping on the validation rows; returns the number of
    trees kept (the best iteration, 1-based), which prediction then uses.

    Raises:
        ConfigError: the library refused a param value (its message, on one line).
    """
    rounds, library = settings.early_stopping_rounds, settings.library
    try:
        if library == "lightgbm":
            import lightgbm

            callbacks = [lightgbm.early_stopping(rounds, verbose=False)] if rounds else []
            # 4.7 renamed eval_set (and warns on the old name); 4.0-4.6 know only eval_set
            valid = ({"eval_X": (x_valid,), "eval_y": (y_valid,)}
                     if "eval_X" in inspect.signature(model.fit).parameters
                     else {"eval_set": [(x_valid, y_valid)]})
            model.fit(x, y, sample_weight=weight, callbacks=callbacks, **valid)
            return int(model.best_iteration_ or model.n_estimators_)
        if library == "xgboost":
            model.fit(x, y, sample_weight=weight, eval_set=[(x_valid, y_valid)], verbose=False)
            best = getattr(model, "best_iteration", None) if rounds else None
            if best is None:  # no early stopping: every tree
                return int(model.get_booster().num_boosted_rounds())
            return int(best) + 1
        model.fit(x, y, sample_weight=weight, eval_set=(x_valid, y_valid),
                  early_stopping_rounds=rounds or None, use_best_model=bool(rounds))
        return int(model.tree_count_)  # use_best_model kept exactly the best trees
    except ConfigError:
        raise
    except Exception as err:  # the libraries' own errors (LightGBMError, XGBoostError, ...)
        if isinstance(err, MemoryError | KeyboardInterrupt):
            raise
        raise ConfigError(f"encoder {library!r}: fit failed: {_first_line(err)}") from err


def predict_output(model: Any, library: str, x: pd.DataFrame, trees: int,
                   regression: bool) -> np.ndarray:
    """One estimator's predictions from its first ``trees`` trees: values (regression) or
    class probabilities (one column per class it was fitted on)."""
    kwargs: dict[str, Any] = {}
    if library == "lightgbm":
        kwargs = {"num_iteration": trees}
    elif library == "xgboost":
        kwargs = {"iteration_range": (0, trees)}
    if regression:
        return np.asarray(model.predict(x, **kwargs), dtype=np.float64).reshape(len(x))
    return np.asarray(model.predict_proba(x, **kwargs), dtype=np.float64)


def importances(model: Any, library: str, n_features: int) -> np.ndarray:
    """Total gain per feature (CatBoost: its default, the prediction-value change)."""
    if library == "lightgbm":
        return np.asarray(model.booster_.feature_importance("gain"), dtype=np.float64)
    if library == "xgboost":
        score = model.get_booster().get_score(importance_type="total_gain")
        return np.array([score.get(f"f{i}", 0.0) for i in range(n_features)])
    return np.asarray(model.get_feature_importance(), dtype=np.float64)


IMPORTANCE_TYPE = {"lightgbm": "gain", "xgboost": "total_gain",
                   "catboost": "prediction_values_change"}


@dataclass
class GBDTModel:
    """A fold's fitted GBDT member: the features, one estimator per output, the trees each
    keeps and (classification) the class indices each was fitted on."""

    library: str
    task: str
    n_classes: int  # prediction columns of a multiclass task
    features: TreeFeatures
    estimators: list[Any] = field(default_factory=list)  # None: one class, no trees
    trees: list[int] = field(default_factory=list)
    classes: list[np.ndarray] = field(default_factory=list)
    target: TargetTransform | None = None  # regression: fitted on the training targets
    rows: int = 0  # training rows: the floor of a class they lack (multiclass)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions in the artifact layout: the positive class's probability per
        label (binary, multilabel), one probability per class (multiclass); a class or
        label value absent from the fold's training rows gets :func:`floor_absent`'s floor,
        values per target
        (regression)."""
        x = self.features.transform(frame, self.library)
        regression = self.task == "regression"
        columns = []
        for est, trees, classes in zip(self.estimators, self.trees, self.classes, strict=True):
            # no estimator: the fold's training rows held one class, which is then certain
            pred = (predict_output(est, self.library, x, trees, regression) if est is not None
                    else np.ones((len(x), 1)))
            if regression:
                columns.append(pred[:, None])
                continue
            width = self.n_classes if self.task == "multiclass" else 2
            full = np.zeros((len(x), width))
            # trained on one class (a rare label's positives all in the fold), LightGBM and
            # XGBoost still give two columns, the first that class's probability (~1)
            full[:, classes] = pred[:, : len(classes)]
            # a class the training rows lack gets a floor, not 0 (a model pickled before
            # the rows were kept, rows 0, gives binary and multilabel labels what it gave)
            floored = (floor_absent(full, classes, self.rows)
                       if self.task == "multiclass" or self.rows else full)
            columns.append(floored if self.task == "multiclass" else floored[:, 1:2])
        out = np.concatenate(columns, axis=1)
        return self.target.inverse_transform(out) if self.target is not None else out

    def importance_frame(self) -> pd.DataFrame:
        """Feature importance, the mean over the estimators, largest first."""
        n = len(self.features.columns)
        values = np.mean([importances(e, self.library, n) if e is not None else np.zeros(n)
                          for e in self.estimators], axis=0)
        frame = pd.DataFrame({"feature": self.features.columns, "importance": values,
                              "importance_type": IMPORTANCE_TYPE[self.library]})
        return frame.sort_values("importance", ascending=False, kind="stable")

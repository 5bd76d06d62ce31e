"""Weights tuned by Optuna to optimise the competition metric directly."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import optuna
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from pipeline.ensemble._base import (
    BLENDERS,
    WeightedBlender,
    blend_weighted,
    member_scores,
    resolve_metric,
    simplex,
)
from pipeline.ensemble._prune import drop_small_weights
from pipeline.metrics import Metric


@BLENDERS.register("optuna")
class OptunaBlender(WeightedBlender):
    """Weights on the simplex, tuned by an Optuna study on the metric of the blended OOF.

    Each trial draws one raw value in [0, 1] per member (per member and class with
    ``per_class``) and scales them to sum to one. Equal weights and the best single member
    are the first two trials, so the tuned blend is never worse in-sample than either.
    Members whose tuned weight is below ``zero_below`` are then dropped one at a time while
    the score does not get worse, so useless members end with weight exactly zero.

    Args:
        metric: Name of the registered metric to optimise (direction comes with it).
        n_trials: Completed trials the study should hold; a resumed study runs the rest.
        per_class: One weight per member and class (multiclass), each class on the simplex.
        zero_below: Weights below this are candidates for exact zero.
        storage: None (in memory), an RDB URL such as ``sqlite:///study.db`` or
            ``postgresql://...`` (several workers can tune one study), or a storage object.
        study_name: Name of the study in ``storage``; resumed when it exists.
        sampler: Optuna sampler; default multivariate TPE seeded with ``seed``.
        seed: Seed of the default sampler.
    """

    def __init__(
        self,
        metric: str | None = None,
        n_trials: int = 300,
        per_class: bool = False,
        zero_below: float = 0.05,
        storage: str | BaseStorage | None = None,
        study_name: str = "blend",
        sampler: BaseSampler | None = None,
        seed: int = 0,
    ) -> None:
        self.metric = metric
        self.n_trials = n_trials
        self.per_class = per_class
        self.zero_below = zero_below
        self.storage = storage
        self.study_name = study_name
        self.sampler = sampler
        self.seed = seed

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        metric = resolve_metric(self.metric, type(self).__name__)
        if not (isinstance(self.n_trials, int) and self.n_trials >= 2):
            raise ValueError(
                f"The 'n_trials' parameter of OptunaBlender must be an int >= 2. "
                f"Got {self.n_trials!r}."
            )
        m, _, c = stacked.shape
        shape = (m, c) if self.per_class and c > 1 else (m,)
        if len(shape) == 1:
            names = [f"w{i}" for i in range(m)]
        else:
            names = [f"w{i}_c{j}" for i in range(m) for j in range(c)]
        task = self.task_

        def objective(trial: optuna.Trial) -> float:
            raw = np.array([trial.suggest_float(name, 0.0, 1.0) for name in names])
            return metric(y, blend_weighted(simplex(raw.reshape(shape)), stacked, task))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = self.sampler or TPESampler(seed=self.seed, multivariate=True)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
        try:
            weights = self._tune(objective, names, metric, sampler, stacked, y)
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.weights_, self.best_score_ = drop_small_weights(
            simplex(weights.reshape(shape)),
            lambda w: metric(y, blend_weighted(w, stacked, task)),
            metric,
            self.zero_below,
        )
        return self._predict(stacked)

    def _tune(
        self,
        objective: Callable[[optuna.Trial], float],
        names: list[str],
        metric: Metric,
        sampler: BaseSampler,
        stacked: np.ndarray,
        y: np.ndarray,
    ) -> np.ndarray:
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            direction=metric.direction,
            sampler=sampler,
            load_if_exists=True,
        )
        if not study.trials:
            scores = member_scores(metric, stacked, y)
            best = int(np.argmax(scores) if metric.greater_is_better else np.argmin(scores))
            study.enqueue_trial(dict.fromkeys(names, 1.0))
            study.enqueue_trial({n: float(n.split("_")[0] == f"w{best}") for n in names})
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done < self.n_trials:
            study.optimize(
                objective,
                n_trials=self.n_trials - done,
                callbacks=[MaxTrialsCallback(self.n_trials, states=(TrialState.COMPLETE,))],
            )
        self.n_trials_ = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return np.array([study.best_params[name] for name in names])

"""Weights tuned by Optuna to optimise the competition metric directly."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import optuna
from optuna.samplers import BaseSampler, CmaEsSampler
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from pipeline.ensemble._base import (
    BLENDERS,
    WeightedBlender,
    blend_weighted,
    resolve_metric,
    simplex,
)
from pipeline.ensemble._objective import (
    FOLD_MEAN,
    check_objective,
    objective_scorer,
    resolve_objective,
)
from pipeline.ensemble._prune import drop_small_weights
from pipeline.metrics import Metric

_COMPLETE = (TrialState.COMPLETE,)
# Above this many weights (per_class blends), CMA-ES keeps only a diagonal covariance: the
# full one costs O(d^3) a draw and is redrawn up to 10 d times when the mean sits on a bound
_FULL_CMA_MAX_PARAMS = 20


@BLENDERS.register("optuna")
class OptunaBlender(WeightedBlender):
    """Weights on the simplex, tuned by an Optuna study on the metric of the blended OOF.

    Each trial draws one raw value in [0, 1] per member (per member and class with
    ``per_class``) and scales them to sum to one. Equal weights and the best single member
    are the first two trials, so the tuned blend is never worse in-sample than either.
    Members whose tuned weight is below ``zero_below`` are then dropped one at a time while
    the score does not get worse, so useless members end with weight exactly zero.

    The study runs in memory; with ``storage``, its trials come from there first (a resumed
    or shared study) and each completed trial is written back as it finishes, one write per
    trial (Optuna writing through itself costs one per parameter: about 50 ms a trial on a
    SQLite file at 10 members, on the machine of ``docs/benchmarks.md``); trials other
    workers complete meanwhile are read in between trials. The objective scores blends with
    :func:`blend_scorer`: the registered metric's numbers, for ROC AUC without
    scikit-learn's input checks. Under ``objective`` 'fold_mean' (or 'auto' under a metric
    that ranks rows against each other: ROC AUC, Gini, average precision, Spearman) it is the
    mean of the folds' scores (:mod:`pipeline.ensemble._objective`); such a study
    is stored as ``<study_name>-fold-mean``, so a study tuned on the pooled OOF is never
    resumed under the folds' mean, nor the reverse.

    Args:
        metric: Name of the registered metric to optimise (direction comes with it).
        n_trials: Completed trials the study should hold; a resumed study runs the rest.
        per_class: One weight per member and class (multiclass), each class on the simplex.
        zero_below: Weights below this are candidates for exact zero.
        storage: None (in memory only), the path of a journal file (Optuna's
            ``JournalStorage``; resumable, and shareable by processes that see the file), an
            RDB URL such as ``sqlite:///study.db`` or ``postgresql://...`` (several machines
            can tune one study), or a storage object.
        study_name: Name of the study in ``storage``; resumed when it exists.
        sampler: Optuna sampler; default CMA-ES seeded with ``seed`` (separable above 20
            weights), started at equal weights or at the best member, whichever scores
            better. With fewer than about 60 trials, TPE explores farther.
        seed: Seed of the default sampler.
        objective: 'pooled' (the metric of every OOF row at once), 'fold_mean' (the mean
            of the metric over the folds given to :meth:`fit`) or 'auto' ('fold_mean' under a
            metric that ranks rows across folds, given 2+ folds; measured a wash, so not the
            default: ``docs/benchmarks.md``).
            ``objective_`` holds the one tuned, ``best_score_`` its score.
    """

    def __init__(
        self,
        metric: str | Metric | None = None,
        n_trials: int = 300,
        per_class: bool = False,
        zero_below: float = 0.05,
        storage: str | BaseStorage | None = None,
        study_name: str = "blend",
        sampler: BaseSampler | None = None,
        seed: int = 0,
        objective: str = "pooled",
    ) -> None:
        self.metric = metric
        self.n_trials = n_trials
        self.per_class = per_class
        self.zero_below = zero_below
        self.storage = storage
        self.study_name = study_name
        self.sampler = sampler
        self.seed = seed
        self.objective = objective

    def check_params(self) -> None:
        if not (isinstance(self.n_trials, int) and self.n_trials >= 2):
            raise ValueError(
                f"The 'n_trials' parameter of OptunaBlender must be an int >= 2. "
                f"Got {self.n_trials!r}."
            )
        check_objective(self.objective, type(self).__name__)

    def _fit(self, stacked: np.ndarray, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        metric = resolve_metric(self.metric, type(self).__name__)
        m, _, c = stacked.shape
        shape = (m, c) if self.per_class and c > 1 else (m,)
        if len(shape) == 1:
            names = [f"w{i}" for i in range(m)]
        else:
            names = [f"w{i}_c{j}" for i in range(m) for j in range(c)]
        task = self.task_
        self.objective_ = resolve_objective(self.objective, metric, folds, type(self).__name__)
        # == metric(y, .) or the folds' mean of it, faster
        score = objective_scorer(self.objective_, metric, y, folds, stacked[[0, -1]])
        scores = np.array([score(p) for p in stacked])
        best = int(np.argmax(scores) if metric.greater_is_better else np.argmin(scores))
        equal = dict.fromkeys(names, 1.0)
        one_hot = {n: float(n.split("_")[0] == f"w{best}") for n in names}

        def objective(trial: optuna.Trial) -> float:
            raw = np.array([trial.suggest_float(name, 0.0, 1.0) for name in names])
            return score(blend_weighted(simplex(raw.reshape(shape)), stacked, task))

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
        try:
            with warnings.catch_warnings():  # use_separable_cma is "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # x0 is deprecated since optuna 4.9 (removed in 6, hence the pin below 6 in
                # pyproject.toml); the start it gives CMA-ES is what the blend relies on
                warnings.filterwarnings("ignore", "`x0` has been deprecated", FutureWarning)
                sampler = self.sampler or self._default_sampler(names, scores[best], score(
                    blend_weighted(simplex(np.ones(shape)), stacked, task)), one_hot, metric)
                weights = self._tune(objective, names, metric, sampler, [equal, one_hot])
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.weights_, self.best_score_ = drop_small_weights(
            simplex(weights.reshape(shape)),
            lambda w: score(blend_weighted(w, stacked, task)),
            metric,
            self.zero_below,
        )
        return self._predict(stacked)

    def _default_sampler(self, names: list[str], best_score: float, equal_score: float,
                         one_hot: dict[str, float], metric: Metric) -> BaseSampler:
        """CMA-ES started at the better of the best member and equal weights (the centre)."""
        x0 = one_hot if metric.is_better(best_score, equal_score) else dict.fromkeys(names, 0.5)
        return CmaEsSampler(x0=x0, seed=self.seed, warn_independent_sampling=False,
                            use_separable_cma=len(names) > _FULL_CMA_MAX_PARAMS)

    def _tune(
        self,
        objective: Callable[[optuna.Trial], float],
        names: list[str],
        metric: Metric,
        sampler: BaseSampler,
        first: list[dict[str, float]],
    ) -> np.ndarray:
        study = optuna.create_study(direction=metric.direction, sampler=sampler)
        mirror = _Mirror.open(self.storage, stored_study_name(self.study_name, self.objective_),
                              metric.direction, study)
        if not study.trials:
            for params in first:
                study.enqueue_trial(params)
        for _ in range(max(self.n_trials - _n_complete(study), 0)):
            if _n_complete(study) >= self.n_trials:  # other workers finished the study
                break
            trial = study.ask()
            try:
                value = objective(trial)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            frozen = study.tell(trial, value)
            if mirror is not None:
                if frozen.state == TrialState.COMPLETE:
                    mirror.push(frozen)
                mirror.pull(force=False)
        if mirror is not None:
            mirror.pull()  # what other workers added: best_params is over the whole study
        self.n_trials_ = _n_complete(study)
        return np.array([study.best_params[name] for name in names])


def stored_study_name(study_name: str, objective: str) -> str:
    """The name a study tuned under ``objective`` is stored under: the pooled objective keeps
    ``study_name`` (what every study was tuned on before the folds' mean), the folds' mean
    adds ``-fold-mean``, so their trials, scores of two different functions, never mix."""
    return f"{study_name}-fold-mean" if objective == FOLD_MEAN else study_name


def _n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_COMPLETE))


def open_storage(storage: str | BaseStorage) -> BaseStorage:
    """A storage object from a URL (``dialect://...``: RDB), a journal file path, or itself.

    Workers that start together on an empty database race to create Optuna's tables (one
    of them fails on a duplicate type or table): the loser tries again, and then finds
    them made.
    """
    if isinstance(storage, BaseStorage):
        return storage
    if "://" not in storage:
        return JournalStorage(JournalFileBackend(str(storage)))
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    tries = 0
    while True:
        try:
            return optuna.storages.get_storage(storage)
        except (IntegrityError, ProgrammingError):
            tries += 1
            if tries == _SCHEMA_TRIES:
                raise
            time.sleep(0.2 * tries)


_SCHEMA_TRIES = 5


class _Mirror:
    """A stored study kept in step with the in-memory one the sampler works on.

    The stored study's completed trials are copied in first; each trial completed here is
    written there once; trials other workers complete are read in between trials, at most
    every ``PULL_EVERY_S`` (a read costs ~8 ms on SQLite) and once more at the end.
    """

    PULL_EVERY_S = 0.5

    def __init__(self, storage: BaseStorage, study_id: int, local: optuna.Study) -> None:
        self.storage, self.study_id, self.local = storage, study_id, local
        self.known: set[int] = set()  # numbers (in the stored study) of trials local has
        self.next_pull = 0.0
        self.pull()

    @classmethod
    def open(
        cls, storage: str | BaseStorage | None, name: str, direction: str, local: optuna.Study
    ) -> _Mirror | None:
        if storage is None:
            return None
        stored = open_storage(storage)
        optuna.create_study(
            storage=stored, study_name=name, direction=direction, load_if_exists=True
        )
        return cls(stored, stored.get_study_id_from_name(name), local)

    def pull(self, force: bool = True) -> None:
        if not force and time.monotonic() < self.next_pull:
            return
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False, states=_COMPLETE)
        for trial in trials:
            if trial.number not in self.known:
                self.local.add_trial(trial)
                self.known.add(trial.number)
        self.next_pull = time.monotonic() + self.PULL_EVERY_S

    def push(self, trial: FrozenTrial) -> None:
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=trial)
        self.known.add(self.storage.get_trial_number_from_id(trial_id))

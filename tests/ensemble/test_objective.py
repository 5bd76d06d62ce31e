"""The tuned blenders' objective: the folds' mean of a ranking metric, or the pooled OOF's."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ensemble import HillClimbBlender, OptunaBlender, build_blender, nested_cv
from pipeline.ensemble._objective import objective_scorer, resolve_objective
from pipeline.metrics import get_metric

AUC = get_metric("roc_auc")
TUNED = {"optuna": {"n_trials": 40}, "hill_climb": {}}


def scaled_apart(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two folds, two members. ``a`` orders each fold's rows perfectly but predicts fold 0
    0.5 higher (another fold model's scale), so pooling ranks fold 0's negatives above fold
    1's positives; ``b`` is noisier within each fold but on one scale across them."""
    rng = np.random.default_rng(seed)
    folds = np.arange(n) % 2
    y = (rng.random(n) < 0.3).astype(np.float64)
    a = 0.3 * y + 0.1 * rng.random(n) + 0.5 * (folds == 0)
    b = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=n))))
    return np.stack([a, b])[:, :, None], y[:, None], folds


def fold_mean(y: np.ndarray, p: np.ndarray, folds: np.ndarray) -> float:
    return float(np.mean([AUC(y[folds == f], p[folds == f]) for f in np.unique(folds)]))


@pytest.mark.parametrize("name", ["optuna", "hill_climb"])
def test_the_folds_mean_and_the_pooled_oof_choose_different_weights(name: str) -> None:
    preds, y, folds = scaled_apart()
    assert AUC(y, preds[0]) < 0.75 < 0.94 < AUC(y, preds[1])  # pooled: b is better
    assert fold_mean(y, preds[0], folds) == 1.0  # within each fold: a is perfect
    pooled = build_blender(name, metric="roc_auc", **TUNED[name]).fit(preds, y, folds)
    folds_mean = build_blender(name, metric="roc_auc", objective="auto", **TUNED[name])
    folds_mean.fit(preds, y, folds)
    assert pooled.objective_ == "pooled"  # the default: the folds' mean measured a wash
    assert folds_mean.objective_ == "fold_mean"  # auto, under ROC AUC
    np.testing.assert_array_equal(folds_mean.weights_, [1.0, 0.0])
    assert 0.6 < pooled.weights_[1] < 0.7  # a third of a: more loses b's pooled order
    assert AUC(y, pooled.oof_) > 0.97 > AUC(y, folds_mean.oof_)
    assert fold_mean(y, pooled.oof_, folds) < 0.99 < fold_mean(y, folds_mean.oof_, folds)


@pytest.mark.parametrize(("metric", "expected"), [
    ("roc_auc", "fold_mean"), ("gini", "fold_mean"), ("average_precision", "fold_mean"),
    ("spearman", "fold_mean"), ("log_loss", "pooled"), ("rmse", "pooled"),
    ("accuracy", "pooled"), ("map@3", "pooled")])  # MAP@k orders each row's own classes
def test_auto_tunes_the_folds_mean_under_metrics_that_rank_rows(metric: str,
                                                                expected: str) -> None:
    folds = np.arange(12) % 3
    assert resolve_objective("auto", get_metric(metric), folds) == expected
    assert resolve_objective("pooled", get_metric(metric), folds) == "pooled"
    assert resolve_objective("fold_mean", get_metric(metric), folds) == "fold_mean"
    # without folds, or with one (its mean is the pooled score), auto is pooled
    assert resolve_objective("auto", get_metric(metric), None) == "pooled"
    assert resolve_objective("auto", get_metric(metric), np.zeros(12)) == "pooled"


def test_fold_mean_without_folds_and_an_unknown_objective_are_refused() -> None:
    preds, y, _ = scaled_apart()
    with pytest.raises(ValueError, match="objective 'fold_mean' needs the fold of every"):
        HillClimbBlender(metric="roc_auc", objective="fold_mean").fit(preds, y)
    for cls in (OptunaBlender, HillClimbBlender):
        with pytest.raises(ValueError, match=(
                rf"^The 'objective' parameter of {cls.__name__} must be one of auto, "
                r"fold_mean, pooled. Got 'folds'.$")):
            cls(metric="roc_auc", objective="folds").check_params()
    assert "objective" not in build_blender("stacking").get_params()  # tunes no metric


def test_the_fold_mean_leaves_out_a_fold_where_the_metric_is_undefined() -> None:
    preds, y, folds = scaled_apart()
    folds = folds.copy()
    folds[np.flatnonzero(y[:, 0] == 0)[:5]] = 2  # fold 2: five negatives, no AUC
    score = objective_scorer("fold_mean", AUC, y, folds, [preds[1]])
    expected = np.mean([AUC(y[folds == f], preds[1][folds == f]) for f in (0, 1)])
    assert score(preds[1]) == pytest.approx(expected, abs=1e-12)
    assert score(preds[0]) == 1.0
    none_defined = objective_scorer("fold_mean", AUC, y, np.arange(len(y)), [preds[1]])
    assert np.isnan(none_defined(preds[1]))


@pytest.mark.parametrize("name", ["optuna", "hill_climb"])
def test_the_nested_cv_tunes_each_fold_on_its_inner_folds_mean(name: str) -> None:
    """Each outer fold's blender sees only the other folds' rows, with their folds: its
    weights are those of the folds' mean over those inner folds, not of the pooled rows."""
    preds, y, two = scaled_apart(600, seed=1)
    folds = np.arange(600) % 3
    preds = preds.copy()
    preds[0, :, 0] += 0.5 * (folds == 1) - 0.5 * (two == 0)  # each fold on its own scale
    blender = build_blender(name, metric="roc_auc", objective="auto", **TUNED[name])
    nested = nested_cv(blender, preds, y, folds, AUC)
    differs = 0
    for fold in range(3):
        train, held = folds != fold, folds == fold
        for objective in ("fold_mean", "pooled"):
            inner = build_blender(name, metric="roc_auc", objective=objective, **TUNED[name])
            inner.fit(preds[:, train], y[train], folds[train])
            same = np.array_equal(nested.held_out[held], inner.predict(preds[:, held]))
            if objective == "fold_mean":
                assert same, fold
            else:
                differs += not same
    assert differs >= 1  # the pooled objective would have blended some fold otherwise


def _trials(storage: str, name: str) -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name,
                              storage=JournalStorage(JournalFileBackend(storage)))
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_a_stored_pooled_study_is_not_resumed_under_the_folds_mean(tmp_path) -> None:
    preds, y, folds = scaled_apart()
    storage = str(tmp_path / "study.journal")
    OptunaBlender(metric="roc_auc", n_trials=6, storage=storage).fit(preds, y, folds)
    pooled_values = [t.value for t in _trials(storage, "blend")]
    tuned = OptunaBlender(metric="roc_auc", n_trials=8, storage=storage, objective="auto")
    tuned.fit(preds, y, folds)
    assert tuned.n_trials_ == 8  # a study of its own: none of the 6 pooled trials loaded
    assert len(_trials(storage, "blend")) == 6  # the pooled study is left as it was
    stored = _trials(storage, "blend-fold-mean")
    in_memory = OptunaBlender(metric="roc_auc", n_trials=8, objective="fold_mean")
    in_memory.fit(preds, y, folds)
    np.testing.assert_array_equal(tuned.weights_, in_memory.weights_)
    assert len(stored) == 8 and stored[1].value == 1.0  # the best member a, on its folds
    assert pooled_values[1] == pytest.approx(AUC(y, preds[1]))  # pooled, b is the best
    # and the pooled study resumes under the pooled objective only
    again = OptunaBlender(metric="roc_auc", n_trials=9, storage=storage, objective="pooled")
    assert again.fit(preds, y, folds).n_trials_ == 9
    assert [t.value for t in _trials(storage, "blend")][:6] == pooled_values

"""Every registered metric: finite on each task it declares, coherent direction, exact values."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from pipeline.metrics import METRICS, TASKS, get_metric, hard_labels

N, N_CLASSES, N_LABELS = 300, 4, 3


def _random(task: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random targets and predictions in the artifact layout of ``task``."""
    rng = np.random.default_rng(seed)
    if task == "binary":
        return rng.integers(0, 2, (N, 1)).astype(np.float64), rng.random((N, 1))
    if task == "multiclass":
        logits = rng.normal(size=(N, N_CLASSES))
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return rng.integers(0, N_CLASSES, N), p
    if task == "multilabel":
        return rng.integers(0, 2, (N, N_LABELS)).astype(np.float64), rng.random((N, N_LABELS))
    # regression targets are non-negative so that rmsle is defined
    return rng.gamma(2.0, 1.5, (N, 2)), rng.gamma(2.0, 1.5, (N, 2))


def _perfect(task: str, y: np.ndarray) -> np.ndarray:
    if task == "multiclass":
        return np.eye(N_CLASSES)[y]
    return y.astype(np.float64).copy()


METRIC_TASKS = [(name, task) for name in METRICS for task in get_metric(name).tasks]


def test_every_metric_declares_known_tasks() -> None:
    assert len(list(METRICS)) >= 10
    for name in METRICS:
        metric = get_metric(name)
        assert metric.name == name
        assert metric.tasks and set(metric.tasks) <= set(TASKS), name
    covered = {task for _, task in METRIC_TASKS}
    assert covered == set(TASKS)


@pytest.mark.parametrize(("name", "task"), METRIC_TASKS)
def test_metric_is_finite_float_on_random_inputs(name: str, task: str) -> None:
    y, p = _random(task)
    score = get_metric(name)(y, p)
    assert type(score) is float
    assert math.isfinite(score), (name, task, score)


@pytest.mark.parametrize(("name", "task"), METRIC_TASKS)
def test_perfect_prediction_beats_random(name: str, task: str) -> None:
    metric = get_metric(name)
    y, p = _random(task, seed=1)
    perfect, random = metric(y, _perfect(task, y)), metric(y, p)
    assert metric.is_better(perfect, random), (name, task, perfect, random)
    assert not metric.is_better(random, perfect)
    # the best value the metric can reach: 1 when maximised, 0 when minimised
    best = 1.0 if metric.greater_is_better else 0.0
    assert perfect == pytest.approx(best, abs=1e-9), (name, task)


@pytest.mark.parametrize("name", list(METRICS))
def test_direction_matches_greater_is_better(name: str) -> None:
    metric = get_metric(name)
    assert metric.direction == ("maximize" if metric.greater_is_better else "minimize")
    assert metric.is_better(1.0, 0.5) is metric.greater_is_better
    assert metric.is_better(0.5, 1.0) is not metric.greater_is_better
    assert not metric.is_better(0.5, 0.5)


def test_minimised_metrics_are_the_losses_and_errors() -> None:
    minimised = {n for n in METRICS if not get_metric(n).greater_is_better}
    assert minimised == {"log_loss", "balanced_log_loss", "rmse", "mse", "mae", "mape", "smape",
                         "rmsle", "mcrmse"}


def test_accuracy_hand_computed() -> None:
    acc = get_metric("accuracy")
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    assert acc(y, p) == pytest.approx(0.75)
    # binary: p >= 0.5 is the positive class (0.5 included)
    yb = np.array([[1.0], [0.0], [1.0], [0.0]])
    pb = np.array([[0.7], [0.4], [0.2], [0.5]])
    assert acc(yb, pb) == pytest.approx(0.5)
    # multilabel: a row counts only when every label is right
    ym = np.array([[1.0, 0.0], [1.0, 1.0]])
    pm = np.array([[0.9, 0.1], [0.9, 0.2]])
    assert acc(ym, pm) == pytest.approx(0.5)


def test_log_loss_matches_sklearn() -> None:
    y, p = _random("multiclass", seed=3)
    expected = skm.log_loss(y, p, labels=list(range(N_CLASSES)))
    assert get_metric("log_loss")(y, p) == pytest.approx(expected, rel=1e-9)
    yb, pb = _random("binary", seed=3)
    assert get_metric("log_loss")(yb, pb) == pytest.approx(skm.log_loss(yb.ravel(), pb.ravel()))
    # hand: -mean(log 0.5, log 0.25)
    small = get_metric("log_loss")(np.array([0, 1]), np.array([[0.5, 0.5], [0.75, 0.25]]))
    assert small == pytest.approx(-(np.log(0.5) + np.log(0.25)) / 2)


def test_regression_errors_hand_computed() -> None:
    y = np.array([[1.0], [2.0], [3.0]])
    p = np.array([[1.0], [2.0], [5.0]])
    assert get_metric("rmse")(y, p) == pytest.approx(math.sqrt(4 / 3))
    assert get_metric("mse")(y, p) == pytest.approx(4 / 3)
    assert get_metric("mae")(y, p) == pytest.approx(2 / 3)
    yr, pr = _random("regression", seed=4)
    assert get_metric("rmse")(yr, pr) == pytest.approx(math.sqrt(skm.mean_squared_error(yr, pr)))
    assert get_metric("r2")(yr, pr) == pytest.approx(skm.r2_score(yr, pr))
    # mcrmse: mean of per-column RMSE, not the pooled RMSE
    y2 = np.array([[0.0, 0.0], [0.0, 0.0]])
    p2 = np.array([[1.0, 3.0], [1.0, 3.0]])
    assert get_metric("mcrmse")(y2, p2) == pytest.approx(2.0)
    assert get_metric("rmse")(y2, p2) == pytest.approx(math.sqrt(5.0))


def test_roc_auc_binary_hand_computed() -> None:
    y = np.array([[0.0], [0.0], [1.0], [1.0]])
    p = np.array([[0.1], [0.4], [0.35], [0.8]])
    assert get_metric("roc_auc")(y, p) == pytest.approx(0.75)
    yr, pr = _random("binary", seed=5)
    assert get_metric("roc_auc")(yr, pr) == pytest.approx(skm.roc_auc_score(yr.ravel(), pr.ravel()))


def test_roc_auc_scores_a_fold_without_a_class() -> None:
    """A class (label) absent from a fold's rows, which stratified folds allow for a class
    rarer than n_splits, leaves the fold's AUC the mean over the other classes: it was NaN,
    and a network kept its first epoch as the best of epochs all scored NaN."""
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.4, 0.5, 0.1],
                  [0.2, 0.6, 0.2], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])
    expected = np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in (0, 1)])
    assert get_metric("roc_auc")(y, p) == pytest.approx(expected)
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float64)  # label 1: never
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.2], [0.4, 0.5]])
    assert get_metric("roc_auc")(labels, scores) == pytest.approx(1.0)
    assert math.isnan(get_metric("roc_auc")(np.zeros((4, 2)), scores))  # no class scoreable


def test_a_metric_says_where_it_cannot_rank_predictions() -> None:
    """A fold whose targets leave the metric undefined whatever is predicted (ROC AUC of one
    class, a correlation with a constant target), or the same for every prediction (F1, MCC
    or QWK of one class), is told apart from one whose predictions score badly, so training
    can rank that fold's epochs by another number."""
    one_class = np.zeros((5, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN for a fold of one class, without a warning each
        assert math.isnan(get_metric("roc_auc")(one_class, np.random.default_rng(0).random((5, 1))))
    assert not get_metric("roc_auc").ranks_on("binary", one_class, 1)
    assert get_metric("roc_auc").ranks_on("binary", np.array([[0.0], [1.0]]), 1)
    assert not get_metric("roc_auc").ranks_on("multiclass", np.array([1, 1, 1]), 3)
    assert get_metric("roc_auc").ranks_on("multiclass", np.array([1, 2, 1]), 3)
    assert not get_metric("pearson").ranks_on("regression", np.ones((4, 1)), 1)
    assert get_metric("pearson").ranks_on("regression", np.arange(4.0)[:, None], 1)
    # a score that is the same for every prediction of these rows ranks nothing either
    for name in ("f1", "mcc", "precision"):
        assert not get_metric(name).ranks_on("binary", one_class, 1), name
        assert get_metric(name).ranks_on("binary", np.array([[0.0], [1.0], [1.0]]), 1), name
    assert not get_metric("qwk").ranks_on("multiclass", np.array([2, 2, 2]), 3)
    assert get_metric("qwk").ranks_on("multiclass", np.array([0, 2, 2]), 3)
    for name in ("log_loss", "accuracy", "balanced_accuracy"):
        assert get_metric(name).ranks_on("binary", one_class, 1), name
    assert get_metric("rmse").ranks_on("regression", np.ones((4, 1)), 1)  # constant target


def test_average_precision_leaves_out_a_label_without_positives() -> None:
    """A label with no positive row in a fold was scored 0 (scikit-learn's convention for an
    undefined curve): the fold's mean lost 1/k, and a binary fold of negatives scored 0 at
    every epoch, so its first epoch stayed the best. Such a label is left out, as ROC AUC
    does; no label with a positive: NaN, which training ranks by the loss instead."""
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float64)
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.2], [0.4, 0.5]])
    assert get_metric("average_precision")(y, p) == pytest.approx(1.0)
    assert math.isnan(get_metric("average_precision")(np.zeros((4, 1)), p[:, :1]))
    assert not get_metric("average_precision").ranks_on("binary", np.zeros((4, 1)), 1)


def _qwk_by_hand(t: np.ndarray, h: np.ndarray, c: int) -> float:
    observed = np.zeros((c, c))
    for i, j in zip(t, h, strict=True):
        observed[i, j] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(t)
    weights = np.subtract.outer(np.arange(c), np.arange(c)) ** 2 / (c - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_qwk_matches_hand_and_sklearn() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    pred = np.array([0, 2, 2, 1, 1, 1])
    p = np.eye(3)[pred] * 0.8 + 0.1
    qwk = get_metric("qwk")(y, p)
    assert qwk == pytest.approx(_qwk_by_hand(y, pred, 3))
    assert qwk == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert 0 < qwk < 1


def test_hard_labels() -> None:
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert hard_labels("multiclass", p).tolist() == [1, 0]
    assert hard_labels("binary", np.array([[0.5], [0.49]])).tolist() == [[1], [0]]
    assert hard_labels("multilabel", np.array([[0.7, 0.2]]), threshold=0.6).tolist() == [[1, 0]]


def test_added_metrics_match_hand_values() -> None:
    from pipeline.metrics import METRICS

    y = np.array([0, 1, 2, 1])
    p = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7]])
    # ranks of the true class: 1, 2, 1, 3 -> (1 + 1/2 + 1 + 1/3) / 4
    assert METRICS.get("map@3")(y, p) == pytest.approx((1 + 0.5 + 1 + 1 / 3) / 4)
    yr = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert METRICS.get("pearson")(yr, 2 * yr + 1) == pytest.approx(1.0)
    assert METRICS.get("spearman")(yr, yr**3) == pytest.approx(1.0)
    yb = np.array([[1.0], [0.0], [1.0], [1.0]])
    pb = np.array([[0.9], [0.8], [0.2], [0.7]])
    assert METRICS.get("precision")(yb, pb) == pytest.approx(2 / 3)
    assert METRICS.get("recall")(yb, pb) == pytest.approx(2 / 3)


# --- issue 12 item 4: qwk over the full class range ---------------------------------------


def test_qwk_counts_a_class_absent_from_the_fold() -> None:
    """issue 12 item 4: qwk passes the full class range, so a class missing from a fold's
    labels and predictions still sets the quadratic weights (0.68, not 0.80)."""
    # class 2 of 4 is neither a label nor a prediction here; without labels=range(4)
    # scikit-learn would re-index {0, 1, 3} as {0, 1, 2} and shrink the 1-vs-3 distance
    y = np.array([0, 1, 3, 3])
    pred = np.array([0, 1, 1, 3])
    p = np.eye(4)[pred] * 0.7 + 0.075
    score = get_metric("qwk")(y, p)
    assert score == pytest.approx(
        skm.cohen_kappa_score(y, pred, weights="quadratic", labels=range(4)))
    assert score == pytest.approx(_qwk_by_hand(y, pred, 4))
    assert score == pytest.approx(0.68)
    # the re-indexed score the old code reported
    assert skm.cohen_kappa_score(y, pred, weights="quadratic") == pytest.approx(0.8)


def _kaggle_qwk(truth: np.ndarray, guess: np.ndarray) -> float:
    """Kaggle's QWK (Ben Hamner's ml_metrics): an N x N histogram over the rating range
    min..max of both vectors, weights (i - j)^2 / (N - 1)^2 between rating values."""
    low, high = min(truth.min(), guess.min()), max(truth.max(), guess.max())
    n = high - low + 1
    observed = np.zeros((n, n))
    for a, b in zip(truth, guess, strict=True):
        observed[a - low, b - low] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(truth)
    weights = np.subtract.outer(np.arange(n), np.arange(n)) ** 2 / (n - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_qwk_weighs_by_the_ratings_values_not_their_positions() -> None:
    """Ratings 1, 2, 4, 5 (3 never given): Kaggle's QWK charges a 2 taken for a 4 the squared
    distance of the values (4), the toolkit charged the distance of their positions (1), and
    every CV, epoch choice and blend weight of such a competition was off."""
    ratings = np.array([1, 2, 4, 5])
    y = np.array([0, 1, 1, 2, 3, 3, 0, 2])  # indices into ratings
    pred = np.array([0, 2, 1, 2, 3, 2, 1, 1])
    p = np.eye(4)[pred] * 0.7 + 0.075
    qwk = get_metric("qwk", ratings.tolist())
    expected = _kaggle_qwk(ratings[y], ratings[pred])
    assert qwk(y, p) == pytest.approx(expected)
    assert qwk(y, p) == pytest.approx(skm.cohen_kappa_score(
        ratings[y], ratings[pred], weights="quadratic", labels=range(1, 6)))
    assert get_metric("qwk")(y, p) != pytest.approx(expected)  # positions: another number
    # evenly spaced classes score as their positions; other metrics ignore the classes
    assert get_metric("qwk", [10, 20, 30, 40])(y, p) == pytest.approx(get_metric("qwk")(y, p))
    assert get_metric("accuracy", ratings.tolist()) is get_metric("accuracy")
    assert get_metric("qwk", ["a", "b", "c", "d"]) is get_metric("qwk")  # no values to read


# --- issue 12 item 3: MAP@k -----------------------------------------------------------------


def test_map_at_k_family_is_registered_with_top_k() -> None:
    """issue 12 item 3: map@1,2,3,5,7,10,12 exist, each with top_k = k, maximised, multiclass
    only and order-only (a ranking metric: its submission lists k labels)."""
    for k in (1, 2, 3, 5, 7, 10, 12):
        metric = get_metric(f"map@{k}")
        assert metric.top_k == k and metric.greater_is_better and metric.order_only
        assert metric.tasks == ("multiclass",) and not metric.needs_labels
    assert {n for n in METRICS if get_metric(n).top_k} == {
        f"map@{k}" for k in (1, 2, 3, 5, 7, 10, 12)}


def test_order_only_metrics_are_the_ranking_ones() -> None:
    """issue 12 item 19: the metrics that read only the order of the predictions (so an
    order-only blend such as rank averaging fits them) are AUC, Gini, AP, Spearman and MAP@k."""
    order = {n for n in METRICS if get_metric(n).order_only}
    assert order == {"roc_auc", "gini", "average_precision", "spearman",
                     *(n for n in METRICS if n.startswith("map@"))}


def test_map_at_5_hand_computed_and_map_at_1_is_accuracy() -> None:
    """issue 12 item 3: a generic map@k scores the rank of the true class within the top k."""
    y = np.array([0, 5, 2, 6])
    p = np.array([[0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.05],   # true class ranked 1st
                  [0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.05],   # 6th: outside the top 5
                  [0.10, 0.20, 0.15, 0.30, 0.12, 0.08, 0.05],   # 3rd
                  [0.10, 0.20, 0.15, 0.12, 0.30, 0.08, 0.11]])  # 5th
    assert get_metric("map@5")(y, p) == pytest.approx((1 + 0 + 1 / 3 + 1 / 5) / 4)
    assert get_metric("map@7")(y, p) == pytest.approx((1 + 1 / 6 + 1 / 3 + 1 / 5) / 4)
    assert get_metric("map@1")(y, p) == pytest.approx(get_metric("accuracy")(y, p))


# --- property tests: every metric against scikit-learn or a direct formula ------------------


def _hard(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as the metrics read them: argmax (multiclass) or p >= 0.5, one column raveled."""
    if y.ndim == 1:
        return y, p.argmax(axis=1)
    t, h = y.astype(np.int64), (p >= 0.5).astype(np.int64)
    return (t.ravel(), h.ravel()) if t.shape[1] == 1 else (t, h)


def _on_labels(fn: Callable[..., float], **kw: Any) -> Callable[[np.ndarray, np.ndarray], float]:
    def ref(y: np.ndarray, p: np.ndarray) -> float:
        return float(fn(*_hard(y, p), **kw))

    return ref


def _per_column(fn: Callable[[np.ndarray, np.ndarray], float]
                ) -> Callable[[np.ndarray, np.ndarray], float]:
    """Mean over columns (labels, targets) of ``fn``; multiclass: one-vs-rest per class."""
    def ref(y: np.ndarray, p: np.ndarray) -> float:
        if y.ndim == 1:
            y = np.eye(p.shape[1])[y]
        return float(np.mean([fn(y[:, j], p[:, j]) for j in range(p.shape[1])]))

    return ref


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes (labels) that occur and do not fill every row:
    the others have none."""
    if y.ndim == 1:
        y = np.eye(p.shape[1])[y]
    scores = [skm.roc_auc_score(y[:, j], p[:, j]) for j in range(p.shape[1])
              if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(scores)) if scores else math.nan


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    if y.ndim == 1:
        return float(skm.log_loss(y, p, labels=list(range(p.shape[1]))))
    return float(np.mean([skm.log_loss(y[:, j], p[:, j], labels=[0, 1])
                          for j in range(y.shape[1])]))


def _map_at_k(k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def ref(y: np.ndarray, p: np.ndarray) -> float:
        # rank of the true class: the classes scored higher, and the tied ones of a lower
        # index (a stable order), come before it
        true = p[np.arange(len(y)), y][:, None]
        index = np.arange(p.shape[1])[None, :]
        rank = 1 + (p > true).sum(axis=1) + ((p == true) & (index < y[:, None])).sum(axis=1)
        return float(np.where(rank <= k, 1.0 / rank, 0.0).mean())

    return ref


def _ravel(fn: Callable[[np.ndarray, np.ndarray], float]
           ) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, p: float(fn(y.ravel(), p.ravel()))


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Mean average precision over the labels that have a positive row: the others have no
    precision-recall curve (scikit-learn scores them 0)."""
    scores = [skm.average_precision_score(y[:, j], p[:, j]) for j in range(p.shape[1])
              if y[:, j].max() > 0]
    return float(np.mean(scores)) if scores else math.nan


def _f_beta_rows(beta: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """Kaggle's mean F-beta (Planet, iMet): each row's F-beta of its predicted labels (p >= 0.5)
    against its true ones, 0 where it has no true positive (1 where it has neither a true nor
    a predicted label), averaged over rows."""
    def ref(y: np.ndarray, p: np.ndarray) -> float:
        scores = []
        for t, h in zip(y.astype(bool), p >= 0.5, strict=True):
            tp = (t & h).sum()
            precision, recall = tp / max(h.sum(), 1), tp / max(t.sum(), 1)
            scores.append(float(not t.any() and not h.any()) if tp == 0 else
                          (1 + beta**2) * precision * recall / (beta**2 * precision + recall))
        return float(np.mean(scores))

    return ref


def _balanced_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """ICR's metric as its host wrote it: each class's summed log loss over its row count."""
    if y.ndim == 1:
        per_class = [(-np.log(np.clip(p[y == c, c] / p[y == c].sum(axis=1), 1e-15, 1))).sum()
                     / (y == c).sum() for c in np.unique(y)]
        return float(np.mean(per_class))
    t, q = y[:, 0], np.clip(p[:, 0], 1e-15, 1 - 1e-15)
    n0, n1 = (t == 0).sum(), (t == 1).sum()
    return float((-(np.log(1 - q) * (t == 0)).sum() / n0 - (np.log(q) * (t == 1)).sum() / n1)
                 / 2)


def _rated_qwk(y: np.ndarray, p: np.ndarray) -> float:
    """QWK of a regression's first column: each value taken as the nearest of the targets'
    values (the upper one at a tie), a disagreement costing the squared distance of the two
    values (Kaggle's weights, which over evenly spaced ratings are scikit-learn's)."""
    values = sorted(set(y[:, 0].tolist()))
    truth = [values.index(t) for t in y[:, 0]]
    guess = [min(range(len(values)), key=lambda i: (abs(v - values[i]), -i)) for v in p[:, 0]]
    c = len(values)
    observed = np.zeros((c, c))
    for a, b in zip(truth, guess, strict=True):
        observed[a, b] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(truth)
    weights = np.array([[(a - b) ** 2 for b in values] for a in values])
    return float(1 - (weights * observed).sum() / (weights * expected).sum())


def _smape(y: np.ndarray, p: np.ndarray) -> float:
    total = 0.0
    for a, f in zip(y.ravel(), p.ravel(), strict=True):
        total += 0.0 if a == f == 0 else abs(f - a) / ((abs(a) + abs(f)) / 2)
    return 100.0 * total / y.size


REFERENCE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _on_labels(skm.accuracy_score),
    "balanced_accuracy": _on_labels(skm.balanced_accuracy_score),
    "f1": _on_labels(skm.f1_score),
    "f1_macro": _on_labels(skm.f1_score, average="macro", zero_division=0),
    "f1_micro": _on_labels(skm.f1_score, average="micro", zero_division=0),
    "f1_weighted": _on_labels(skm.f1_score, average="weighted", zero_division=0),
    "f1_samples": _f_beta_rows(1.0),
    "f2_samples": _f_beta_rows(2.0),
    "precision": _on_labels(skm.precision_score, zero_division=0),
    "recall": _on_labels(skm.recall_score, zero_division=0),
    "mcc": _on_labels(skm.matthews_corrcoef),
    "qwk": lambda y, p: (_rated_qwk(y, p) if y.ndim == 2 else float(skm.cohen_kappa_score(
        y, p.argmax(axis=1), weights="quadratic", labels=list(range(p.shape[1]))))),
    "roc_auc": _auc,
    "gini": lambda y, p: 2 * _auc(y, p) - 1,
    "balanced_log_loss": _balanced_log_loss,
    "mape": lambda y, p: float(np.mean(np.abs(p - y) / np.maximum(np.abs(y),
                                                                   np.finfo(float).eps))),
    "smape": _smape,
    "average_precision": _average_precision,
    "log_loss": _log_loss,
    "rmse": lambda y, p: math.sqrt(skm.mean_squared_error(y.ravel(), p.ravel())),
    "mse": _ravel(skm.mean_squared_error),
    "mae": _ravel(skm.mean_absolute_error),
    "rmsle": lambda y, p: math.sqrt(skm.mean_squared_log_error(
        y.ravel(), np.clip(p, 0, None).ravel())),
    "r2": lambda y, p: float(skm.r2_score(y, p)),
    "pearson": _per_column(lambda t, s: stats.pearsonr(t, s).statistic),
    # Spearman is Pearson of the ranks, ties sharing their mean rank
    "spearman": _per_column(lambda t, s: stats.pearsonr(stats.rankdata(t),
                                                        stats.rankdata(s)).statistic),
    "mcrmse": _per_column(lambda t, s: math.sqrt(skm.mean_squared_error(t, s))),
    **{n: _map_at_k(int(n.split("@")[1])) for n in METRICS if n.startswith("map@")},
}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(task: str, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random targets and predictions of ``task``. ``ties``: predictions on a coarse grid
    (many equal values, 0.5 itself among them); ``absent``: class (label) 2 (1) occurs
    neither in the targets nor in the hard predictions."""
    rng = np.random.default_rng(seed)
    n = 120
    if task == "multiclass":
        c = 5
        y = rng.integers(0, c, n)
        p = _softmax(rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y])
        if kind == "ties":  # equal values within rows stay equal after the renormalisation
            p = np.round(p * 4) + 1
            p = p / p.sum(axis=1, keepdims=True)
        if kind == "absent":
            y = np.where(y == 2, 3, y)
            p[:, 2] *= 1e-3
            p = p / p.sum(axis=1, keepdims=True)
        return y, p
    if task in ("binary", "multilabel"):
        k = 1 if task == "binary" else 3
        y = rng.integers(0, 2, (n, k)).astype(np.float64)
        p = np.clip(0.5 * y + 0.6 * rng.random((n, k)) - 0.05, 0.01, 0.99)
        if kind == "ties":
            p = np.round(p * 10) / 10
        if kind == "absent":
            y[:, -1], p[:, -1] = 0.0, p[:, -1] * 0.4
        return y, p
    y = rng.gamma(2.0, 1.5, (n, 2))
    p = y + rng.normal(size=(n, 2))  # a few negative predictions: rmsle clips them to 0
    if kind == "ties":
        y, p = np.round(y), np.round(p)
    return y, p


PROPERTY_CASES = [
    (name, task, kind, seed)
    for name in METRICS for task in get_metric(name).tasks
    for kind in ("random", "ties", "absent") for seed in (0, 1)
    if kind != "absent" or task in ("multiclass", "multilabel")
]


def test_every_metric_has_a_reference() -> None:
    """issue 12 property tests: a new metric must come with its scikit-learn (or formula)
    reference, so the loop below covers every registered one."""
    assert set(REFERENCE) == set(METRICS)


@pytest.mark.parametrize(("name", "task", "kind", "seed"), PROPERTY_CASES)
def test_metric_agrees_with_its_reference(name: str, task: str, kind: str, seed: int) -> None:
    """issue 12 property tests: every registered metric equals scikit-learn (or the direct
    formula) on random inputs of each task it declares, with ties in the predictions and a
    class absent from the targets and the predictions."""
    y, p = _case(task, kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined per-class scores of the absent class
        got, expected = get_metric(name)(y, p), REFERENCE[name](y, p)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (name, task, kind)

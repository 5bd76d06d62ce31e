"""Every registered metric: finite on each task it declares, coherent direction, exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
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
    assert minimised == {"log_loss", "rmse", "mse", "mae", "rmsle", "mcrmse"}


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

"""Thresholds and class weights tuned on OOF: better than 0.5 / argmax, never worse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from pipeline.artifacts import write_json
from pipeline.ensemble import PostProcess, fit_postprocess, load_postprocess
from pipeline.metrics import get_metric


def _imbalanced_binary(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rare positives with under-confident probabilities: the best F1 threshold is below 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.float64)[:, None]
    p = 1 / (1 + np.exp(-(2.0 * y - 3.0 + rng.normal(size=(n, 1)))))
    return y, p


def test_binary_f1_threshold_improves_on_half() -> None:
    y, p = _imbalanced_binary()
    pp = fit_postprocess("binary", "f1", y, p)
    assert pp is not None
    assert len(pp.thresholds) == 1 and pp.thresholds[0] < 0.5
    f1 = get_metric("f1")
    assert pp.default_score == pytest.approx(f1(y, p))
    assert pp.score > pp.default_score + 0.1
    labels = pp.labels(p)
    assert labels.shape == (len(y), 1) and labels.dtype.kind == "i"
    assert set(np.unique(labels)) <= {0, 1}
    assert pp.evaluate(y, p) == pytest.approx(pp.score)


def test_multiclass_class_weights_fix_a_biased_class() -> None:
    rng = np.random.default_rng(1)
    n, c = 1500, 3
    y = rng.integers(0, c, n)
    logits = 1.5 * np.eye(c)[y] + rng.normal(size=(n, c))
    logits[:, 2] -= 1.0  # class 2 is under-predicted
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pp = fit_postprocess("multiclass", "accuracy", y, p)
    assert pp is not None and pp.thresholds == ()
    assert len(pp.class_weights) == c
    assert pp.class_weights[2] > pp.class_weights[0]
    assert pp.score > pp.default_score + 0.03
    labels = pp.labels(p)
    assert labels.shape == (n,)
    assert (labels == y).mean() == pytest.approx(pp.score)


def test_multilabel_thresholds_per_label() -> None:
    y0, p0 = _imbalanced_binary(seed=2)
    y1, p1 = _imbalanced_binary(seed=3)
    y, p = np.hstack([y0, y1]), np.hstack([p0, p1 * 0.5])
    pp = fit_postprocess("multilabel", "f1_macro", y, p)
    assert pp is not None and len(pp.thresholds) == 2
    assert pp.thresholds[1] < pp.thresholds[0]
    assert pp.score > pp.default_score
    assert pp.labels(p).shape == (len(y), 2)


@pytest.mark.parametrize("seed", range(3))
def test_never_worse_than_default_even_on_noise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (200, 1)).astype(np.float64)
    p = rng.random((200, 1))
    for metric in ("f1", "accuracy", "mcc", "balanced_accuracy"):
        pp = fit_postprocess("binary", metric, y, p)
        assert pp is not None
        assert pp.score >= pp.default_score


@pytest.mark.parametrize(
    ("task", "metric"),
    [("binary", "roc_auc"), ("multiclass", "log_loss"), ("regression", "rmse")],
)
def test_none_when_metric_scores_probabilities(task: str, metric: str) -> None:
    assert fit_postprocess(task, metric, np.zeros((4, 1)), np.zeros((4, 1))) is None


def test_json_round_trip(tmp_path) -> None:
    y, p = _imbalanced_binary(500)
    pp = fit_postprocess("binary", "f1", y, p)
    assert pp is not None
    assert load_postprocess(tmp_path) is None
    write_json(tmp_path / "postprocess.json", pp.to_json())
    loaded = load_postprocess(tmp_path)
    assert loaded == pp
    assert isinstance(loaded, PostProcess)
    np.testing.assert_array_equal(loaded.labels(p), pp.labels(p))


# --- issue 12 item 16: the nested post-processing score is tuned without the held-out fold --


def _binary_members(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four members of falling quality (the last is noise), their targets and 4 folds."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)[:, None]
    preds = np.stack([1 / (1 + np.exp(-(q * (2 * y - 1) - 0.8 + rng.normal(size=(n, 1)))))
                      for q in (1.2, 0.9, 0.5, 0.0)])
    return preds, y, np.arange(n) % 4


def test_nested_postprocessing_is_tuned_on_the_inner_blend_without_the_fold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 12 item 16: each fold's rule is fitted on the other folds' rows and on the blend
    of a blender fitted without that fold (its inner OOF), never on the held-out predictions
    of blenders that saw the fold's labels; ``postprocessed`` scores it on the fold."""
    from sklearn.base import clone

    import pipeline.ensemble._nested_cv as nested_module
    from pipeline.ensemble import HillClimbBlender, nested_cv

    preds, y, folds = _binary_members()
    seen: list[tuple[np.ndarray, np.ndarray, PostProcess | None]] = []

    def recording(task: str, metric: str, y_fit: np.ndarray,
                  p_fit: np.ndarray) -> PostProcess | None:
        rule = fit_postprocess(task, metric, y_fit, p_fit)
        seen.append((np.array(y_fit), np.array(p_fit), rule))
        return rule

    monkeypatch.setattr(nested_module, "fit_postprocess", recording)
    blender = HillClimbBlender(metric="accuracy", n_iter=10)
    nested = nested_cv(blender, preds, y, folds, get_metric("accuracy"), task="binary")
    assert nested.postprocessed is not None and sorted(nested.postprocessed) == ["0", "1", "2",
                                                                                 "3"]
    assert len(seen) == 4
    leaked_anywhere = False
    for fold, (y_fit, p_fit, rule) in zip(range(4), seen, strict=True):
        train = folds != fold
        # the fold's own rows never reach its rule
        assert len(y_fit) == train.sum() == 300
        np.testing.assert_array_equal(y_fit, y[train])
        inner = clone(blender).fit(preds[:, train], y[train], folds[train])
        np.testing.assert_allclose(p_fit, inner.oof_)
        # the other folds' held-out predictions come from blenders fitted on this fold
        leaked_anywhere |= not np.allclose(p_fit, nested.held_out[train])
        assert rule is not None
        assert nested.postprocessed[str(fold)] == pytest.approx(
            rule.evaluate(y[~train], nested.held_out[~train]))
    assert leaked_anywhere  # else this case could not tell honest from leaked tuning


def test_nested_postprocessing_only_for_label_metrics_with_a_task() -> None:
    """issue 12 item 16: no task, or a metric that scores probabilities: no rule to score."""
    from pipeline.ensemble import MeanBlender, nested_cv

    preds, y, folds = _binary_members(200)
    assert nested_cv(MeanBlender(), preds, y, folds, get_metric("accuracy")).postprocessed is None
    auc = nested_cv(MeanBlender(), preds, y, folds, get_metric("roc_auc"), task="binary")
    assert auc.postprocessed is None
    acc = nested_cv(MeanBlender(), preds, y, folds, get_metric("accuracy"), task="binary")
    assert acc.postprocessed is not None and len(acc.postprocessed) == 4


# --- issue 15 item 2: a rule is kept only where the nested CV score improves ---------------


@pytest.mark.parametrize(
    ("metric", "with_rule", "without", "applied"),
    [("accuracy", 0.97, 0.955, True), ("accuracy", 0.955, 0.97, False),
     ("accuracy", 0.9, 0.9, False), ("rmse", 0.4, 0.5, True), ("rmse", 0.5, 0.4, False)],
)
def test_auto_applies_the_rule_only_when_the_nested_score_improves(
        metric: str, with_rule: float, without: float, applied: bool) -> None:
    from pipeline.ensemble._postprocess import choose_postprocess

    chosen, reason = choose_postprocess("auto", get_metric(metric), with_rule, without)
    assert chosen is applied
    assert reason == ("auto: it improves the nested CV score" if applied
                      else "auto: it does not improve the nested CV score")
    assert choose_postprocess("on", get_metric(metric), with_rule, without) == (True, "forced on")
    assert choose_postprocess("off", get_metric(metric), with_rule, without) == (False,
                                                                                "forced off")


def test_the_report_records_both_nested_scores_and_the_decision() -> None:
    from pipeline.ensemble._postprocess import postprocess_report
    from pipeline.errors import ConfigError

    y, p = _imbalanced_binary(400)
    pp = fit_postprocess("binary", "f1", y, p)
    assert pp is not None
    report = postprocess_report(pp, {"0": 0.5, "1": 0.7}, 0.65, "auto")
    assert report == {"default_score": pp.default_score, "in_sample": pp.score,
                      "nested": {"per_fold": {"0": 0.5, "1": 0.7}, "mean": pytest.approx(0.6)},
                      "nested_without": 0.65, "mode": "auto", "applied": False,
                      "decision": "auto: it does not improve the nested CV score"}
    with pytest.raises(ConfigError, match=r"\['auto', 'on', 'off'\]. Got 'always'"):
        postprocess_report(pp, {"0": 0.5}, 0.4, "always")


def _ordinal() -> tuple[np.ndarray, np.ndarray]:
    """Ratings 0..4 (scikit-learn's diabetes progression in quintiles) and the out-of-fold
    probabilities of a logistic regression, a classifier of ordered classes."""
    x, t = load_diabetes(return_X_y=True)
    y = pd.qcut(t, 5, labels=False)
    p = cross_val_predict(LogisticRegression(max_iter=2000), x, y, method="predict_proba",
                          cv=StratifiedKFold(5, shuffle=True, random_state=0))
    return y, p


def test_qwk_cuts_the_expected_class_where_that_beats_class_weights() -> None:
    """QWK scores how far a wrong rating is: the expected class, cut at tuned points, keeps
    the middle of a spread prediction, where the argmax takes its peak. Tuned on one half of
    the rows, the cuts score better than the argmax on the other (0.61 against 0.57 over
    three splits in the measurement this test was written from)."""
    y, p = _ordinal()
    qwk = get_metric("qwk")
    order = np.random.default_rng(0).permutation(len(y))
    fit, held = order[: len(y) // 2], order[len(y) // 2:]
    pp = fit_postprocess("multiclass", qwk, y[fit], p[fit])
    assert pp is not None and len(pp.cut_points) == 4 and pp.class_weights == ()
    assert list(pp.cut_points) == sorted(pp.cut_points)
    argmax = qwk(y[held], np.eye(5)[p[held].argmax(axis=1)])
    assert pp.evaluate(y[held], p[held]) > argmax + 0.02
    expected = p[held] @ np.arange(5)
    np.testing.assert_array_equal(pp.labels(p[held]),
                                  np.searchsorted(pp.cut_points, expected, side="right"))


def test_cut_points_round_trip_and_only_for_ordered_metrics(tmp_path) -> None:
    y, p = _ordinal()
    pp = fit_postprocess("multiclass", "qwk", y, p)
    assert pp is not None and pp.cut_points
    write_json(tmp_path / "postprocess.json", pp.to_json())
    assert load_postprocess(tmp_path) == pp
    accuracy = fit_postprocess("multiclass", "accuracy", y, p)
    assert accuracy is not None and accuracy.cut_points == () and accuracy.class_weights

"""The diversity report of ensemble members (pipeline/ensemble/_diversity.py): each member's
OOF score and the correlation of their OOF predictions, and its text form; plus the members
a multi-seed run writes, which the report and the blenders read."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ensemble import diversity_report, format_report
from pipeline.metrics import get_metric


def test_diversity_report_scores_and_correlations():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 1)).astype(float)
    good = np.clip(y + rng.normal(0, 0.3, size=y.shape), 0, 1)
    noise = rng.random(size=y.shape)
    report = diversity_report(["a", "b", "c"], np.stack([good, good, noise]), y,
                              get_metric("roc_auc"))
    corr = report["correlation"]
    assert corr["a"]["b"] == pytest.approx(1.0)
    assert abs(corr["a"]["c"]) < 0.2
    assert report["scores"]["a"] > 0.9 > 0.7 > report["scores"]["c"]


def test_multiclass_correlation_uses_every_class_probability() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    flipped = p[:, ::-1]  # the same rows, classes reversed
    y = np.array([0, 1, 2, 0])
    report = diversity_report(["p", "q"], np.stack([p, flipped]), y, get_metric("accuracy"))
    assert report["metric"] == "accuracy"
    assert report["scores"] == {"p": 1.0, "q": 0.25}
    expected = np.corrcoef(p.ravel(), flipped.ravel())[0, 1]
    assert report["correlation"]["p"]["q"] == pytest.approx(expected, abs=1e-4)
    alone = diversity_report(["p"], p[None], y, get_metric("accuracy"))
    assert alone["correlation"] == {"p": {"p": 1.0}}


def test_format_report_lists_scores_then_the_matrix() -> None:
    report = {"metric": "rmse", "scores": {"long_name": 0.5, "b": 0.25},
              "correlation": {"long_name": {"long_name": 1.0, "b": 0.3},
                              "b": {"long_name": 0.3, "b": 1.0}}}
    lines = format_report(report).splitlines()
    assert lines[:3] == ["member scores (rmse):", "  long_name  0.500000",
                         "  b          0.250000"]
    assert lines[3] == "OOF correlation:"
    assert lines[5].split() == ["long_name", "1.000", "0.300"]
    assert lines[6].split() == ["b", "0.300", "1.000"]

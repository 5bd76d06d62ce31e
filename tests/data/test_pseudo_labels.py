"""Pseudo-label selection (pipeline/data/pseudo_labels.py): row confidence, the predicted
class, threshold / top fraction / class balance, hard and soft labels, and PseudoConfig's
rules. The stage that writes them per fold is tested in tests/test_pseudo.py."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from pipeline.config import build_config
from pipeline.data.pseudo_labels import PseudoConfig, predicted_class, row_confidence, select
from pipeline.errors import ConfigError


def test_row_confidence_per_task() -> None:
    multiclass = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(row_confidence(multiclass, "multiclass"), [0.7, 0.4])
    # 0/1 labels: distance from 0.5 mapped to [0.5, 1]; 0.1 is as sure as 0.9
    binary = np.array([[0.9], [0.1], [0.5], [0.3]])
    np.testing.assert_allclose(row_confidence(binary, "binary"), [0.9, 0.9, 0.5, 0.7])
    # multilabel: a row is as sure as its least sure label
    multilabel = np.array([[0.95, 0.2], [0.99, 0.6]])
    np.testing.assert_allclose(row_confidence(multilabel, "multilabel"), [0.8, 0.6])
    np.testing.assert_array_equal(row_confidence(np.array([[3.0], [-1.0]]), "regression"),
                                  [1.0, 1.0])


def test_predicted_class() -> None:
    np.testing.assert_array_equal(
        predicted_class(np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]), "multiclass"), [1, 0])
    np.testing.assert_array_equal(predicted_class(np.array([[0.5], [0.49], [0.9]]), "binary"),
                                  [1, 0, 1])


def test_threshold_top_fraction_and_balance_select_the_right_rows():
    p = np.array([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7], [0.99, 0.01]])
    rows, labels = select(p, "multiclass", PseudoConfig(source="x", threshold=0.9))
    assert rows.tolist() == [4, 0, 2]
    np.testing.assert_array_equal(labels, [[1, 0], [1, 0], [0, 1]])
    rows, _ = select(p, "multiclass", PseudoConfig(source="x", top_fraction=0.4))
    assert rows.tolist() == [4, 0]
    extra = np.vstack([p, [[0.9, 0.1]]])  # a third confident class-0 row (0.9)
    rows, labels = select(extra, "multiclass",
                          PseudoConfig(source="x", threshold=0.65, balance=True))
    # class 1 has two confident rows (2, 3): class 0 keeps its two most confident (4, 0)
    assert sorted(rows.tolist()) == [0, 2, 3, 4]
    assert (labels.argmax(axis=1) == 0).sum() == (labels.argmax(axis=1) == 1).sum() == 2
    _, soft = select(p, "multiclass", PseudoConfig(source="x", labels="soft", threshold=0.9))
    np.testing.assert_allclose(soft, p[[4, 0, 2]])
    pb = np.array([[0.97], [0.5], [0.02], [0.8]])
    rows, labels = select(pb, "binary", PseudoConfig(source="x", threshold=0.9))
    assert rows.tolist() == [2, 0] and labels.ravel().tolist() == [0.0, 1.0]


def test_multilabel_hard_labels_and_regression_values() -> None:
    p = np.array([[0.9, 0.05], [0.6, 0.9], [0.02, 0.97]])
    rows, labels = select(p, "multilabel", PseudoConfig(source="x", threshold=0.85))
    assert rows.tolist() == [2, 0]  # row 1's first label (0.6) is unsure
    np.testing.assert_array_equal(labels, [[0.0, 1.0], [1.0, 0.0]])
    values = np.array([[1.5], [-2.0]])
    rows, labels = select(values, "regression", PseudoConfig(source="x"))
    assert rows.tolist() == [0, 1]  # every row, labelled with its prediction
    np.testing.assert_array_equal(labels, values)


def test_balance_with_one_class_missing_keeps_nothing() -> None:
    p = np.array([[0.95], [0.9], [0.2]])
    rows, labels = select(p, "binary", PseudoConfig(source="x", threshold=0.85, balance=True))
    assert rows.tolist() == [] and labels.shape == (0, 1)


def test_pseudo_config_mismatch_per_task() -> None:
    assert PseudoConfig(source="x").mismatch("regression") is None
    assert "regression" in (PseudoConfig(source="x", top_fraction=0.5).mismatch("regression")
                            or "")
    assert "multilabel" in (PseudoConfig(source="x", balance=True).mismatch("multilabel") or "")
    for task in ("binary", "multiclass"):
        assert PseudoConfig(source="x", threshold=0.9, balance=True).mismatch(task) is None
    with pytest.raises(pydantic.ValidationError, match="not both"):
        PseudoConfig(source="x", threshold=0.9, top_fraction=0.5)


def test_pseudo_config_rules(competition_factory):
    data = competition_factory("tabular", "regression")
    with pytest.raises(ConfigError, match="regression"):
        build_config({**data, "pseudo": {"source": "runs/x", "threshold": 0.9}})
    with pytest.raises(ConfigError, match="not both"):
        build_config({**data, "pseudo": {"source": "x", "threshold": 0.9, "top_fraction": 0.5}})

"""A fold's preprocessing (pipeline/jobs/inputs.py): FoldPrep is fitted on the fold's training
rows only, written once (preprocess.json, tabular.joblib) and read back, standardises
regression targets and turns network outputs back into predictions exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import read_json, write_json
from pipeline.competition import Competition, load_competition
from pipeline.config import build_config
from pipeline.jobs.inputs import PREP_FILE, TABULAR_FILE, fold_prep
from pipeline.runs import FOLD_FORMAT


def _competition(competition_factory, task: str) -> Competition:
    return load_competition(build_config(competition_factory("tabular", task)).competition)


@pytest.fixture
def regression(competition_factory) -> Competition:
    return _competition(competition_factory, "regression")


@pytest.fixture
def fold(tmp_path: Path) -> Path:
    """The fold folder (the competition's files live in tmp_path itself)."""
    return tmp_path / "seed0" / "fold0"


def test_regression_targets_standardised_and_restored_exactly(regression: Competition,
                                                              fold: Path) -> None:
    rows = np.arange(0, 48, 2)  # the fold's training rows
    prep = fold_prep(fold, regression, rows)
    y = regression.targets
    assert prep.target_mean == pytest.approx(y[rows].mean(axis=0).tolist())
    assert prep.target_std == pytest.approx(y[rows].std(axis=0).tolist())
    z = prep.standardise("regression", y)
    assert z.dtype == np.float32 and z.shape == y.shape
    # zero mean and unit variance on the training rows, not on every row
    np.testing.assert_allclose(z[rows].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[rows].std(axis=0), 1.0, atol=1e-5)
    assert abs(float(z.mean())) > 1e-4
    # outputs on the standardised scale come back as the targets themselves
    exact = (y - np.array(prep.target_mean)) / np.array(prep.target_std)
    np.testing.assert_allclose(prep.predictions("regression", exact), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prep.predictions("regression", z), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_classification_targets_are_not_scaled(competition_factory, fold: Path,
                                               task: str) -> None:
    comp = _competition(competition_factory, task)
    prep = fold_prep(fold, comp, np.arange(24))
    k = comp.n_outputs
    assert (prep.target_mean, prep.target_std) == ([0.0] * k, [1.0] * k)
    y = prep.standardise(task, comp.targets)
    assert y.dtype == (np.int64 if task == "multiclass" else np.float32)
    np.testing.assert_array_equal(y, comp.targets)
    logits = np.array([[0.0] * k, [2.0] + [0.0] * (k - 1)])
    p = prep.predictions(task, logits)
    if task == "multiclass":  # softmax over classes
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
        np.testing.assert_allclose(p[0], 1 / k)
    else:  # sigmoid per cell
        np.testing.assert_allclose(p[1, 0], 1 / (1 + np.exp(-2.0)))
        np.testing.assert_allclose(p[0], 0.5)


def test_tabular_encoder_is_fitted_on_the_training_rows(regression: Competition,
                                                        fold: Path) -> None:
    rows = np.arange(10)
    prep = fold_prep(fold, regression, rows)
    assert prep.tabular.numeric == ["x1", "x2"] and prep.tabular.categorical == ["color"]
    num = prep.tabular.transform(regression.train)["num"][:, :2]
    # scaled to zero mean and unit variance on the fold's training rows only
    np.testing.assert_allclose(num[rows].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(num[rows].std(axis=0), 1.0, atol=1e-5)
    assert np.abs(num.mean(axis=0)).max() > 1e-3
    x1 = regression.train["x1"].iloc[rows]
    np.testing.assert_allclose(num[:, 0], (regression.train["x1"] - x1.mean()) / x1.std(ddof=0),
                               rtol=1e-5, atol=1e-5)


def test_preprocess_files_written_once_and_read_back(regression: Competition,
                                                     fold: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train the fold") as info:
        fold_prep(fold)
    assert str(fold / PREP_FILE) in str(info.value)
    first = fold_prep(fold, regression, np.arange(24))
    assert sorted(p.name for p in fold.iterdir()) == [PREP_FILE, TABULAR_FILE]
    stamps = {p.name: p.stat().st_mtime_ns for p in fold.iterdir()}
    # the values are what the JSON file holds (round-tripped), and the format is recorded
    assert read_json(fold / PREP_FILE) == {"format": FOLD_FORMAT,
                                           "target_mean": first.target_mean,
                                           "target_std": first.target_std}
    # a resumed fold (even if handed other rows) and prediction read the same files
    for again in (fold_prep(fold, regression, np.arange(24, 48)), fold_prep(fold)):
        assert (again.target_mean, again.target_std) == (first.target_mean, first.target_std)
        a, b = again.tabular.transform(regression.test), first.tabular.transform(regression.test)
        for key in ("num", "cat"):
            np.testing.assert_array_equal(a[key], b[key])
    assert {p.name: p.stat().st_mtime_ns for p in fold.iterdir()} == stamps


def test_a_fold_of_an_older_format_is_prepared_again(regression: Competition,
                                                     fold: Path) -> None:
    first = fold_prep(fold, regression, np.arange(24))
    write_json(fold / PREP_FILE, {"format": FOLD_FORMAT - 1, "target_mean": [9.0],
                                  "target_std": [9.0]})
    (fold / "last.pt").write_bytes(b"a resume point trained on the old inputs")
    with pytest.raises(FileNotFoundError):  # prediction cannot use it
        fold_prep(fold)
    again = fold_prep(fold, regression, np.arange(24))
    assert (again.target_mean, again.target_std) == (first.target_mean, first.target_std)
    assert read_json(fold / PREP_FILE)["format"] == FOLD_FORMAT
    assert not (fold / "last.pt").exists()

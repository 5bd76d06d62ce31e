"""Fold schemes: disjoint and complete, stratified, groups kept whole, seeded; the folds stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import folds as folds_stage
from pipeline.competition import Competition, load_competition
from pipeline.config import CompetitionConfig, FoldsConfig, build_config
from pipeline.errors import DataError
from pipeline.folds import make_folds, read_folds

N = 240
METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "multilabel": "roc_auc",
          "regression": "rmse"}


def _frame(task: str, seed: int = 0, groups: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """N train rows of ``task`` with an imbalanced target (and ``groups`` groups if > 0)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"id": [f"t{i:05d}" for i in range(N)], "x": rng.normal(size=N)})
    if task == "binary":
        frame["label"] = rng.choice(["neg", "pos"], size=N, p=[0.8, 0.2])
    elif task == "multiclass":
        frame["label"] = rng.choice([0, 1, 2, 3], size=N, p=[0.5, 0.25, 0.15, 0.1])
    elif task == "multilabel":
        for j, rate in enumerate((0.5, 0.2, 0.08)):
            frame[f"l{j}"] = (rng.random(N) < rate).astype(int)
    else:
        frame["label"] = rng.exponential(2.0, size=N)  # skewed: bins matter
    if groups:
        frame["group"] = rng.integers(0, groups, size=N)
    targets = ["l0", "l1", "l2"] if task == "multilabel" else ["label"]
    return frame, targets


def _competition(root: Path, task: str, seed: int = 0, groups: int = 0) -> Competition:
    frame, targets = _frame(task, seed, groups)
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "train.csv", index=False)
    test = pd.DataFrame({"id": ["q0", "q1"], "x": [0.0, 1.0]})
    test.to_csv(root / "test.csv", index=False)
    test[["id"]].assign(**{t: 0 for t in targets}).to_csv(root / "sample_submission.csv",
                                                          index=False)
    cfg = CompetitionConfig(dir=str(root), task=task, metric=METRIC[task], modality="tabular",
                            target_columns=targets, group_column="group" if groups else None)
    return load_competition(cfg)


def _assert_partition(folds: np.ndarray, n_splits: int) -> None:
    """Every row in exactly one of n_splits non-empty folds."""
    assert folds.shape == (N,) and folds.dtype.kind == "i"
    assert set(np.unique(folds)) == set(range(n_splits))
    sizes = np.bincount(folds, minlength=n_splits)
    assert sizes.sum() == N and (sizes > 0).all()


def _assert_stratified(strata: np.ndarray, folds: np.ndarray, n_splits: int) -> None:
    """Each stratum's count per fold is within one row of its total / n_splits."""
    for value in np.unique(strata):
        counts = np.bincount(folds[strata == value], minlength=n_splits)
        expected = counts.sum() / n_splits
        assert np.abs(counts - expected).max() < 1, (value, counts)


def _assert_groups_whole(groups: np.ndarray, folds: np.ndarray) -> None:
    per_group = pd.Series(folds).groupby(groups).nunique()
    assert (per_group == 1).all(), per_group[per_group > 1]


SCHEMES: list[tuple[str, str, int]] = [  # scheme, task, groups
    ("kfold", "regression", 0),
    ("kfold", "binary", 0),
    ("stratified", "binary", 0),
    ("stratified", "multiclass", 0),
    ("stratified", "regression", 0),
    ("group", "binary", 30),
    ("group", "regression", 30),
    ("stratified_group", "multiclass", 40),
    ("multilabel", "multilabel", 0),
]


@pytest.mark.parametrize(("scheme", "task", "groups"), SCHEMES)
@pytest.mark.parametrize("n_splits", [2, 5])
def test_folds_are_disjoint_and_complete(tmp_path: Path, scheme: str, task: str, groups: int,
                                         n_splits: int) -> None:
    comp = _competition(tmp_path / "comp", task, groups=groups)
    folds = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=n_splits, seed=3))
    _assert_partition(folds, n_splits)
    if scheme in ("kfold", "stratified", "multilabel"):  # row-level splitters: equal sizes
        sizes = np.bincount(folds)
        assert sizes.max() - sizes.min() <= (1 if scheme == "kfold" else 4), sizes
    if groups:
        _assert_groups_whole(comp.train["group"].to_numpy(), folds)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_stratified_keeps_class_counts(tmp_path: Path, task: str) -> None:
    comp = _competition(tmp_path / "comp", task)
    for seed in (0, 1, 2):
        folds = make_folds(comp, FoldsConfig(scheme="stratified", n_splits=5, seed=seed))
        _assert_stratified(comp.train["label"].astype(str).to_numpy(), folds, 5)


def test_kfold_does_not_stratify(tmp_path: Path) -> None:
    """Control for the test above: plain kfold breaks the one-row balance for some seed."""
    comp = _competition(tmp_path / "comp", "multiclass")
    labels = comp.train["label"].to_numpy()
    spreads = []
    for seed in range(5):
        folds = make_folds(comp, FoldsConfig(scheme="kfold", n_splits=5, seed=seed))
        spreads.append(max(np.ptp(np.bincount(folds[labels == c], minlength=5))
                           for c in np.unique(labels)))
    assert max(spreads) > 1


def _mean_spread(y: np.ndarray, folds: np.ndarray, n_splits: int) -> float:
    """Largest distance of a fold's target mean from the overall mean, in target stds."""
    means = np.array([y[folds == k].mean() for k in range(n_splits)])
    return float(np.abs(means - y.mean()).max() / y.std())


def test_regression_stratified_uses_quantile_bins(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "regression")
    y = comp.train["label"].to_numpy()
    bins = np.asarray(pd.qcut(y, q=folds_stage.REGRESSION_BINS, labels=False))
    spreads: dict[str, list[float]] = {"stratified": [], "kfold": []}
    for seed in range(10):
        for scheme, spread in spreads.items():
            folds = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=4, seed=seed))
            spread.append(_mean_spread(y, folds, 4))
            if scheme == "stratified":
                _assert_stratified(bins, folds, 4)
    stratified, kfold = np.mean(spreads["stratified"]), np.mean(spreads["kfold"])
    assert stratified < 0.1, spreads["stratified"]
    assert stratified < 0.7 * kfold, (stratified, kfold)


def test_group_folds_never_split_a_group(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multiclass", groups=25)
    groups = comp.train["group"].to_numpy()
    for scheme in ("group", "stratified_group"):
        for seed in (0, 1):
            folds = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=5, seed=seed))
            _assert_partition(folds, 5)
            _assert_groups_whole(groups, folds)


def test_multilabel_balances_every_label(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multilabel")
    folds = make_folds(comp, FoldsConfig(scheme="multilabel", n_splits=4, seed=0))
    for column in ("l0", "l1", "l2"):
        positives = np.bincount(folds[comp.train[column].to_numpy() == 1], minlength=4)
        assert np.abs(positives - positives.sum() / 4).max() <= 1.5, (column, positives)


@pytest.mark.parametrize(("scheme", "task", "groups"), SCHEMES)
def test_seed_decides_assignment(tmp_path: Path, scheme: str, task: str, groups: int) -> None:
    comp = _competition(tmp_path / "comp", task, groups=groups)
    first = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=4, seed=11))
    again = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=4, seed=11))
    other = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=4, seed=12))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_too_few_rows_in_a_class(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multiclass")
    counts = comp.train["label"].value_counts()
    n_splits = int(counts.min()) + 1
    with pytest.raises(DataError, match=rf"'folds.n_splits'={n_splits}") as info:
        make_folds(comp, FoldsConfig(scheme="stratified", n_splits=n_splits))
    assert "train.csv" in str(info.value) and "'label'" in str(info.value)
    # kfold ignores classes, so it makes those folds
    _assert_partition(make_folds(comp, FoldsConfig(scheme="kfold", n_splits=n_splits)), n_splits)


# --- the folds stage -----------------------------------------------------------------------


def _experiment(factory: Any, **folds: Any) -> Any:
    data = factory("tabular", "multiclass", n_train=60)
    data["folds"].update(folds)
    return build_config(data)


def test_stage_writes_id_fold_csv_and_keeps_it(competition_factory) -> None:
    cfg = _experiment(competition_factory, n_splits=3, seed=5)
    path = folds_stage.run(cfg)
    assert path == cfg.folds_file
    assert path == Path(cfg.folds_dir) / "tabular_multiclass_stratified_k3_s5.csv"
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["id", "fold"]
    comp = load_competition(cfg.competition)
    assert frame["id"].tolist() == comp.train["id"].tolist()  # train.csv order
    assert frame["id"].is_unique and set(frame["fold"]) == {0, 1, 2}
    np.testing.assert_array_equal(frame["fold"].to_numpy(), make_folds(comp, cfg.folds))
    np.testing.assert_array_equal(read_folds(path, comp), frame["fold"].to_numpy())
    stat = path.stat()
    assert folds_stage.run(cfg) == path
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_same_seed_same_file_other_seed_other_folds(competition_factory, tmp_path: Path) -> None:
    cfg = _experiment(competition_factory, seed=1, scheme="kfold")
    first = folds_stage.run(cfg).read_bytes()
    folds_stage.run(cfg).unlink()
    assert folds_stage.run(cfg).read_bytes() == first
    other = folds_stage.run(_experiment(competition_factory, seed=2, scheme="kfold"))
    assert other.name.endswith("_s2.csv") and other != cfg.folds_file
    assert pd.read_csv(other)["fold"].tolist() != pd.read_csv(cfg.folds_file)["fold"].tolist()


def test_folds_name_sets_the_file(competition_factory) -> None:
    cfg = _experiment(competition_factory, name="shared")
    assert folds_stage.run(cfg) == Path(cfg.folds_dir) / "shared.csv"


def test_read_folds_refuses_other_ids(competition_factory) -> None:
    cfg = _experiment(competition_factory)
    comp = load_competition(cfg.competition)
    path = folds_stage.run(cfg, comp)
    frame = pd.read_csv(path)
    frame.iloc[:-2].to_csv(path, index=False)  # two train ids lost
    with pytest.raises(DataError, match="2 train id") as info:
        read_folds(path, comp)
    assert str(path) in str(info.value)
    frame.rename(columns={"fold": "k"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"must have columns \['id', 'fold'\]"):
        read_folds(path, comp)


def test_read_folds_refuses_duplicate_ids(competition_factory) -> None:
    cfg = _experiment(competition_factory)
    comp = load_competition(cfg.competition)
    path = folds_stage.run(cfg, comp)
    frame = pd.read_csv(path)
    extra = pd.DataFrame({"id": [frame["id"].iloc[0]], "fold": [7]})
    pd.concat([frame, extra]).to_csv(path, index=False)
    with pytest.raises(DataError, match="duplicate"):
        read_folds(path, comp)

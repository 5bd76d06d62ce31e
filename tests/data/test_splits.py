"""Fold splitting (pipeline/data/splits.py): every registered scheme makes disjoint, complete,
seeded folds (groups kept whole, classes balanced where it says so), FoldsConfig's refusals,
the errors for too few rows or groups, and read_folds' checks of a folds file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.competition import Competition, CompetitionConfig, load_competition
from pipeline.config import load_config
from pipeline.data import splits
from pipeline.data.splits import REGRESSION_BINS, SPLITTERS, FoldsConfig, make_folds, read_folds
from pipeline.errors import ConfigError, DataError
from tests.test_competition import cli_config, edit_csv, expect_failure, run_cli

N = 240
TASKS = ("binary", "multiclass", "multilabel", "regression")
METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "multilabel": "roc_auc",
          "regression": "rmse"}


def _frame(task: str, seed: int = 0, groups: int = 0,
           times: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """N train rows of ``task`` with an imbalanced target (and ``groups`` groups, a 'day' of
    ``times`` distinct days, if > 0)."""
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
    if times:
        frame["day"] = rng.integers(0, times, size=N)
    targets = ["l0", "l1", "l2"] if task == "multilabel" else ["label"]
    return frame, targets


def _competition(root: Path, task: str, seed: int = 0, groups: int = 0,
                 times: int = 0) -> Competition:
    frame, targets = _frame(task, seed, groups, times)
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "train.csv", index=False)
    test = pd.DataFrame({"id": ["q0", "q1"], "x": [0.0, 1.0]})
    test.to_csv(root / "test.csv", index=False)
    test[["id"]].assign(**{t: 0 for t in targets}).to_csv(root / "sample_submission.csv",
                                                          index=False)
    cfg = CompetitionConfig(dir=str(root), task=task, metric=METRIC[task], modality="tabular",
                            target_columns=targets, group_column="group" if groups else None,
                            time_column="day" if times else None)
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


def _class_indicators(comp: Competition) -> np.ndarray:
    """(rows, strata) 0/1 matrix of what a stratified scheme balances: each class, each
    label's positives, or each quantile bin of a regression target."""
    task = comp.cfg.task
    if task == "multilabel":
        return comp.targets
    if task == "regression":
        values = np.asarray(pd.qcut(comp.train["label"], q=REGRESSION_BINS, labels=False))
    else:
        values = comp.train["label"].astype(str).to_numpy()
    return (values[:, None] == np.unique(values)[None, :]).astype(float)


# --- every registered scheme ------------------------------------------------------------------

SCHEME_TASKS = [(s, t) for s in SPLITTERS for t in SPLITTERS.get(s).tasks]


@pytest.mark.parametrize(("scheme", "task"), SCHEME_TASKS)
def test_every_scheme_makes_seeded_disjoint_complete_folds(tmp_path: Path, scheme: str,
                                                           task: str) -> None:
    splitter = SPLITTERS.get(scheme)
    comp = _competition(tmp_path / "comp", task, groups=40 if splitter.uses_groups else 0,
                        times=30 if splitter.uses_time else 0)
    cfg = FoldsConfig(scheme=scheme, n_splits=4, seed=7)
    assert cfg.mismatch(task, comp.cfg.group_column, comp.cfg.time_column) is None
    folds = make_folds(comp, cfg)
    _assert_partition(folds, 4)
    np.testing.assert_array_equal(make_folds(comp, cfg), folds)  # same seed, same folds
    if splitter.uses_groups:
        _assert_groups_whole(comp.train["group"].to_numpy(), folds)
    if splitter.uses_time:  # a day is never split, and the folds follow the days' order
        _assert_groups_whole(comp.train["day"].to_numpy(), folds)
        assert (np.diff(folds[np.argsort(comp.train["day"].to_numpy(), kind="stable")]) >= 0
                ).all()
    if splitter.stratified:
        # each class / label / bin keeps its overall share in every fold: measured at most
        # 0.02 off row by row (kfold: 0.05-0.11) and 0.05 with whole groups (group: 0.06-0.07)
        tolerance = 0.055 if splitter.uses_groups else 0.03
        indicators = _class_indicators(comp)
        overall = indicators.mean(axis=0)
        for k in range(4):
            share = indicators[folds == k].mean(axis=0)
            assert np.abs(share - overall).max() <= tolerance, (k, share, overall)


@pytest.mark.parametrize("scheme", SPLITTERS.list())
@pytest.mark.parametrize("task", TASKS)
def test_folds_config_refuses_tasks_and_mismatched_groups(scheme: str, task: str) -> None:
    splitter = SPLITTERS.get(scheme)
    cfg = FoldsConfig(scheme=scheme)
    fitting = [n for n in SPLITTERS if task in SPLITTERS.get(n).tasks]
    assert fitting
    task_refusal = None if task in splitter.tasks else (
        f"'folds.scheme' {scheme!r} does not split a {task!r} task ('competition.task'); "
        f"schemes for it: {', '.join(fitting)}")
    time = "day" if splitter.uses_time else None  # what each scheme needs of time
    with_groups, without_groups = cfg.mismatch(task, "site", time), cfg.mismatch(task, None, time)
    if splitter.uses_groups:
        assert with_groups == task_refusal
        assert without_groups == f"'folds.scheme' {scheme!r} needs 'competition.group_column'"
    else:
        assert without_groups == task_refusal
        # a scheme that ignores groups would spread a group's rows over several folds
        group_schemes = [n for n in SPLITTERS if SPLITTERS.get(n).uses_groups]
        assert with_groups is not None and "'site'" in with_groups
        assert f"{scheme!r} ignores groups" in with_groups
        assert with_groups.endswith(" or ".join(group_schemes))


def test_every_task_has_a_scheme_and_unknown_schemes_are_refused() -> None:
    for task in TASKS:
        assert any(task in SPLITTERS.get(s).tasks for s in SPLITTERS), task
    with pytest.raises(ValueError, match="Did you mean 'stratified'"):
        FoldsConfig(scheme="stratifed")


# --- chosen schemes and tasks -----------------------------------------------------------------

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
    bins = np.asarray(pd.qcut(y, q=REGRESSION_BINS, labels=False))
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


# --- too few rows or groups ---------------------------------------------------------------------


def test_a_class_with_fewer_rows_than_folds_is_said_not_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A rare class stopped the run with exit 2 (an unseen competition's config then fails
    as a whole); the fold scores cope with folds that validate without it, so it is a
    warning, and the rare rows still land in distinct folds."""
    comp = _competition(tmp_path / "comp", "multiclass")
    counts = comp.train["label"].value_counts()
    rare = counts.idxmin()
    n_splits = int(counts.min()) + 1
    assert n_splits <= counts.max()
    with caplog.at_level("WARNING", logger="pipeline.data.splits"):
        folds = make_folds(comp, FoldsConfig(scheme="stratified", n_splits=n_splits))
    _assert_partition(folds, n_splits)
    assert f"'folds.n_splits'={n_splits}" in caplog.text and "'label'" in caplog.text
    rare_folds = folds[(comp.train["label"] == rare).to_numpy()]
    assert len(set(rare_folds)) == len(rare_folds)  # one rare row per fold at most


def test_a_class_of_one_row_is_said_to_be_absent_from_its_folds_training(
        caplog: pytest.LogCaptureFixture) -> None:
    """A class of one row never reaches the training rows of the fold that validates it
    (a probe's listings: that fold's OOF predicted it 0, the CV read the clip constant); the
    warning says so for such classes alone."""
    labels = pd.Series(["a"] * 9 + ["b"] * 9 + ["rare"] + ["few"] * 2)
    with caplog.at_level("WARNING", logger="pipeline.data.splits"):
        splits._check_class_counts(labels, 5, "label", Path("train.csv"))
    assert "'few' (2 rows)" in caplog.text and "'rare' (1 rows)" in caplog.text
    assert "['rare'] hold(s) a single row, which the fold validating it trains without" in (
        caplog.text)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.data.splits"):
        splits._check_class_counts(labels[labels != "rare"], 5, "label", Path("train.csv"))
    assert "some folds validate without them" in caplog.text and "single row" not in caplog.text


def test_every_class_with_fewer_rows_than_folds(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multiclass")
    n_splits = int(comp.train["label"].value_counts().max()) + 1
    with pytest.raises(DataError, match=rf"every class .*'folds.n_splits'={n_splits}") as info:
        make_folds(comp, FoldsConfig(scheme="stratified", n_splits=n_splits))
    assert "train.csv" in str(info.value) and "'label'" in str(info.value)
    # kfold ignores classes, so it makes those folds
    _assert_partition(make_folds(comp, FoldsConfig(scheme="kfold", n_splits=n_splits)), n_splits)


def test_run_with_a_class_of_fewer_rows_than_folds(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["folds"]["n_splits"] = 5
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    edit_csv(train, lambda f: f.assign(target=["yes"] * 3 + ["no"] * (len(f) - 3)))
    with caplog.at_level("WARNING"):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "'yes' (3 rows)" in caplog.text and "The least populated class" not in err
    assert (Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv").is_file()


def test_fewer_groups_than_folds(competition_factory, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["group_column"] = "site"
    cfg["folds"].update(scheme="group", n_splits=3)
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    edit_csv(train, lambda f: f.assign(site=["a", "b"] * (len(f) // 2)))
    expect_failure(cfg, tmp_path, capsys, str(train), "'site' has 2 groups",
                   "'folds.n_splits'=3")


def test_unknown_scheme_through_the_cli(competition_factory, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["folds"]["scheme"] = "stratifed"
    expect_failure(cfg, tmp_path, capsys, "{config}", "'folds.scheme'", "'stratified'",
                   "Known: group, kfold")


# --- read_folds ---------------------------------------------------------------------------------


def _write_folds(comp: Competition, path: Path) -> pd.DataFrame:
    """The folds file the folds stage would write (id, fold in train.csv order)."""
    frame = pd.DataFrame({"id": comp.train["id"],
                          "fold": make_folds(comp, FoldsConfig(n_splits=3, seed=0))})
    frame.to_csv(path, index=False)
    return frame


def test_read_folds_aligns_with_train_rows(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multiclass")
    path = tmp_path / "folds.csv"
    frame = _write_folds(comp, path)
    expected = frame["fold"].to_numpy()
    np.testing.assert_array_equal(read_folds(path, comp, 3), expected)
    frame.iloc[::-1].to_csv(path, index=False)  # rows in another order: matched by id
    np.testing.assert_array_equal(read_folds(path, comp, 3), expected)
    with pytest.raises(DataError, match=r"0\.\.3 \('folds.n_splits'=4\)"):
        read_folds(path, comp, 4)


def test_read_folds_refuses_other_ids(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multiclass")
    path = tmp_path / "folds.csv"
    frame = _write_folds(comp, path)
    frame.iloc[:-2].to_csv(path, index=False)  # two train ids lost
    with pytest.raises(DataError, match="2 train id") as info:
        read_folds(path, comp)
    assert str(path) in str(info.value)
    frame.rename(columns={"fold": "k"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"must have columns \['id', 'fold'\]"):
        read_folds(path, comp)


def test_read_folds_names_the_missing_ids_and_counts_the_extra_ones(tmp_path: Path) -> None:
    """The ids are matched in one hash lookup: a train id replaced by one train does not have
    is one missing (named) and one extra; the file's rows in another order still match."""
    comp = _competition(tmp_path / "comp", "multiclass")
    path = tmp_path / "folds.csv"
    frame = _write_folds(comp, path)
    lost = str(frame["id"].iloc[4])
    frame.assign(id=frame["id"].astype(str).replace(lost, "no-such-id")).to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"1 train id\(s\) missing \(e.g. \['{lost}'\]\), 1 id"):
        read_folds(path, comp)
    frame.assign(id=frame["id"].astype(str)).iloc[::-1].to_csv(path, index=False)
    np.testing.assert_array_equal(read_folds(path, comp), frame["fold"].to_numpy())


def test_read_folds_refuses_duplicate_ids(tmp_path: Path) -> None:
    comp = _competition(tmp_path / "comp", "multiclass")
    path = tmp_path / "folds.csv"
    frame = _write_folds(comp, path)
    extra = pd.DataFrame({"id": [frame["id"].iloc[0]], "fold": [7]})
    pd.concat([frame, extra]).to_csv(path, index=False)
    with pytest.raises(DataError, match="duplicate"):
        read_folds(path, comp)


@pytest.mark.parametrize("scheme", ["kfold", "stratified"])
def test_group_column_with_a_scheme_that_ignores_groups_is_refused_at_config_load(
        competition_factory, tmp_path: Path, scheme: str) -> None:
    """issue 12 item 5: a group column with kfold or stratified folds would put a group's rows in
    several folds (validation shares groups with training); the config is refused when it is
    loaded, naming both keys, and a group scheme with the same column loads."""
    data = competition_factory("tabular", "binary")
    data["competition"]["group_column"] = "color"
    data["folds"]["scheme"] = scheme
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "'competition.group_column'" in message and "'folds.scheme'" in message
    assert f"{scheme!r} ignores groups" in message and "'color'" in message
    assert str(path) in message
    for fits in ("group", "stratified_group"):
        assert load_config(path, [f"folds.scheme={fits}"]).folds.scheme == fits


def test_read_folds_refuses_a_group_spread_over_two_folds(tmp_path: Path) -> None:
    """issue 12 item 5: a folds file in which a group of competition.group_column spans two folds
    (made row by row, or for another group column) is refused; group folds are read."""
    comp = _competition(tmp_path / "comp", "binary", groups=20)
    path = tmp_path / "folds.csv"
    rows = np.arange(N) % 3  # rows dealt out in turn, as a scheme without groups would
    pd.DataFrame({"id": comp.train["id"], "fold": rows}).to_csv(path, index=False)
    groups = comp.train["group"].to_numpy()
    assert (pd.Series(rows).groupby(groups).nunique() > 1).any()  # control: groups split
    with pytest.raises(DataError, match="span several folds") as info:
        read_folds(path, comp, 3)
    assert str(path) in str(info.value) and "'group'" in str(info.value)
    whole = make_folds(comp, FoldsConfig(scheme="group", n_splits=3, seed=0))
    pd.DataFrame({"id": comp.train["id"], "fold": whole}).to_csv(path, index=False)
    np.testing.assert_array_equal(read_folds(path, comp, 3), whole)
    # a single row moved to another fold splits its group: refused too
    moved = whole.copy()
    moved[0] = (moved[0] + 1) % 3
    pd.DataFrame({"id": comp.train["id"], "fold": moved}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"1 group\(s\) of column 'group'"):
        read_folds(path, comp, 3)


@pytest.mark.parametrize("scheme", ["stratified", "stratified_group"])
def test_class_codes_give_the_folds_of_the_text_labels(tmp_path: Path, scheme: str) -> None:
    """The splitters get the classes as integer codes in the text labels' sorted order (fast
    where 600,000 strings sorted slowly): the folds are exactly those of the text labels,
    with classes 2 and 10 (whose text order is not their number order)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    comp = _competition(tmp_path / "comp", "multiclass", groups=30 if "group" in scheme else 0)
    rng = np.random.default_rng(1)
    comp.train["label"] = rng.choice([2, 10, 7, 1], len(comp.train))
    folds = make_folds(comp, FoldsConfig(scheme=scheme, n_splits=4, seed=3))
    splitter = (StratifiedGroupKFold if "group" in scheme else StratifiedKFold)(
        n_splits=4, shuffle=True, random_state=3)
    groups = comp.train["group"].to_numpy() if "group" in scheme else None
    labels = comp.train["label"].astype(str).to_numpy()
    expected = np.full(len(labels), -1)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        expected[valid] = k
    np.testing.assert_array_equal(folds, expected)

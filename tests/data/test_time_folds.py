"""Folds ordered in time (pipeline/data/time_folds.py, ``folds.scheme: time``): contiguous,
ordered blocks that keep a time's rows together and validate every row once; the refusals
of a missing, empty or unreadable time column, too few times, and a scheme and column that
do not go together; and the folds stage and a run end to end on a tiny dated table."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import folds as folds_stage
from pipeline.competition import Competition, CompetitionConfig, load_competition
from pipeline.config import build_config, load_config
from pipeline.data.splits import SPLITTERS, FoldsConfig, make_folds, predicting_folds
from pipeline.data.time_folds import (
    TimeBlockKFold,
    shared_period_warning,
    time_blocks,
    training_rows,
)
from pipeline.errors import ConfigError, DataError
from tests.test_competition import cli_config, edit_csv, expect_failure, run_cli


def _blocks(times: np.ndarray, n_splits: int) -> np.ndarray:
    folds = np.full(len(times), -1)
    for k, (_, valid) in enumerate(TimeBlockKFold(n_splits).split(times, groups=times)):
        folds[valid] = k
    return folds


def _assert_time_blocks(times: np.ndarray, folds: np.ndarray, n_splits: int) -> None:
    """Every row in one of n_splits non-empty folds; a time's rows in one fold; fold k's
    times all before fold k+1's."""
    assert set(np.unique(folds)) == set(range(n_splits))
    assert (pd.Series(folds).groupby(times).nunique() == 1).all()
    spans = pd.Series(times).groupby(folds).agg(["min", "max"])
    assert (spans["max"].to_numpy()[:-1] < spans["min"].to_numpy()[1:]).all(), spans


@pytest.mark.parametrize("n_splits", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocks_are_contiguous_ordered_and_keep_ties(n_splits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    times = rng.integers(0, 40, size=400)  # 40 days, ~10 rows each, rows in no order
    folds = _blocks(times, n_splits)
    _assert_time_blocks(times, folds, n_splits)
    # about equal rows: off the ideal by at most one day's rows
    sizes = np.bincount(folds)
    assert np.abs(sizes - 400 / n_splits).max() <= np.bincount(times).max(), sizes
    np.testing.assert_array_equal(_blocks(times, n_splits), folds)  # no seed: same folds


def test_blocks_leave_every_fold_a_time() -> None:
    """A day holding 90% of the rows, or exactly as many days as folds: every fold still
    validates some rows (a cut by row counts alone left folds empty)."""
    times = np.r_[np.zeros(2), np.full(90, 1), np.arange(2, 10)]
    for n_splits in (3, 5, 10):
        _assert_time_blocks(times, _blocks(times, n_splits), n_splits)
    np.testing.assert_array_equal(time_blocks(np.array([1, 50, 1, 1]), 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(time_blocks(np.array([3, 1, 1, 1, 4]), 2), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"at most the number of distinct times \(3\)\. Got 4"):
        time_blocks(np.array([1, 1, 1]), 4)


def _dated(root: Path, times: list[Any], **config: Any) -> Competition:
    root.mkdir(parents=True, exist_ok=True)
    n = len(times)
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"id": [f"t{i}" for i in range(n)], "when": times,
                          "x": rng.normal(size=n), "y": rng.normal(size=n)})
    train.to_csv(root / "train.csv", index=False)
    test = pd.DataFrame({"id": ["q0", "q1"], "when": [times[0], times[-1]], "x": [0.0, 1.0]})
    test.to_csv(root / "test.csv", index=False)
    test[["id"]].assign(y=0.0).to_csv(root / "sample_submission.csv", index=False)
    return load_competition(CompetitionConfig(
        dir=str(root), task="regression", metric="rmse", modality="tabular",
        target_columns=["y"], time_column="when", **config))


@pytest.mark.parametrize(("written", "config"), [
    ("dates", {}),  # read as days since 1970 (a feature), ordered as dates
    ("dates", {"categorical_columns": ["when"]}),  # kept as text: parsed by the folds
    ("mixed", {"categorical_columns": ["when"]}),  # a time of day on some
    # day first, kept as text ('05/01/2022' is 5 January, as '25/12/2021' proves): the folds
    # read '05/01/2022' as May, as pandas guessed from a first value, and '25/12/2021' as
    # December, each on its own, and made blocks of a shuffled order
    ("day first", {"categorical_columns": ["when"]}),
    ("day first", {"feature_columns": ["x"]}),  # not a feature: never read as dates
    ("day first 2-digit year", {"categorical_columns": ["when"]}),  # '05/01/22'
    ("numbers", {}),
])
def test_make_folds_orders_dates_text_and_numbers(tmp_path: Path, written: str,
                                                  config: dict[str, Any]) -> None:
    rng = np.random.default_rng(3)
    days = rng.permutation(np.repeat(np.arange(30), 4))  # 30 days, 4 rows each, shuffled
    second = int(np.argmax(days == 13))  # 2 January first: pandas guessed a format from it
    days[[0, second]] = days[[second, 0]]
    dates = pd.Timestamp("2021-12-20") + pd.to_timedelta(days, unit="D")
    times: list[Any] = {
        "dates": dates.strftime("%Y-%m-%d").tolist(),
        "mixed": [d.strftime("%Y-%m-%d 12:00" if i % 2 else "%Y-%m-%d")
                  for i, d in enumerate(dates)],
        "day first": dates.strftime("%d/%m/%Y").tolist(),
        "day first 2-digit year": dates.strftime("%d/%m/%y").tolist(),
        "numbers": (days * 10 + 1000).tolist(),
    }[written]
    comp = _dated(tmp_path / "comp", times, **config)
    folds = make_folds(comp, FoldsConfig(scheme="time", n_splits=3))
    _assert_time_blocks(days, folds, 3)
    np.testing.assert_array_equal(np.bincount(folds), [40, 40, 40])
    # the first 10 days (across the new year: text order would put 2022 first) are fold 0
    np.testing.assert_array_equal(folds, days // 10)


@pytest.mark.parametrize(("times", "message"), [
    (["2021-01-01", "soon", "2021-01-03", "later"] * 3,
     "holds 2 value(s) that are neither numbers nor dates, e.g. ['soon', 'later']"),
    ([1, 2, None, 4] * 3, "has 3 empty value(s) (ids ['t2', 't6', 't10'])"),
    ([5, 7] * 6, "has 2 distinct times, fewer than 'folds.n_splits'=3"),
])
def test_times_that_cannot_make_folds_are_refused(tmp_path: Path, times: list[Any],
                                                  message: str) -> None:
    comp = _dated(tmp_path / "comp", times, categorical_columns=[])
    with pytest.raises(DataError) as info:
        make_folds(comp, FoldsConfig(scheme="time", n_splits=3))
    text = str(info.value)
    assert message in text and "'when'" in text and "train.csv" in text, text
    assert "\n" not in text


@pytest.mark.parametrize(("scheme", "time_column", "message"), [
    ("time", None, "'folds.scheme' 'time' needs 'competition.time_column'"),
    ("stratified", "date", "'competition.time_column' 'date' is set but 'folds.scheme' "
                           "'stratified' ignores it"),
    ("kfold", "date", "Use time, or drop 'competition.time_column'"),
])
def test_scheme_and_time_column_must_go_together(competition_factory, tmp_path: Path,
                                                 scheme: str, time_column: str | None,
                                                 message: str) -> None:
    data = competition_factory("tabular", "regression")
    data["competition"]["time_column"] = time_column
    data["folds"]["scheme"] = scheme
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def _dated_run(factory: Any) -> dict[str, Any]:
    """A fast regression run on a train file with a 'date' column (two rows a day, rows
    shuffled) and a test period after it, folds by time."""
    cfg = cli_config(factory, "tabular", "regression")
    folder = Path(cfg["competition"]["dir"])
    rng = np.random.default_rng(0)
    edit_csv(folder / "train.csv", lambda f: f.assign(
        date=(pd.Timestamp("2024-01-01") + pd.to_timedelta(
            rng.permutation(np.arange(len(f)) // 2), unit="D")).strftime("%Y-%m-%d")))
    edit_csv(folder / "test.csv", lambda f: f.assign(
        date=pd.date_range("2024-06-01", periods=len(f)).strftime("%Y-%m-%d")))
    cfg["competition"]["time_column"] = "date"
    cfg["folds"].update(scheme="time", n_splits=3)
    return cfg


def test_missing_time_column_is_refused_through_the_cli(competition_factory, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    cfg = _dated_run(competition_factory)
    cfg["competition"]["time_column"] = "day"
    expect_failure(cfg, tmp_path, capsys, "column(s) ['day'] named by "
                   "'competition.time_column' not found")
    cfg["competition"]["time_column"] = "color"  # text, not times: nothing written either
    expect_failure(cfg, tmp_path, capsys, "'color' ('competition.time_column') holds 2 "
                   "value(s) that are neither numbers nor dates, e.g. [")


def test_run_with_time_folds_end_to_end(competition_factory, tmp_path: Path,
                                        capsys: pytest.CaptureFixture,
                                        caplog: pytest.LogCaptureFixture) -> None:
    cfg = _dated_run(competition_factory)
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    config = build_config(cfg)
    assert config.folds_file.name == "tabular_regression_time_k3_s0.csv"
    spec = json.loads(config.folds_file.with_suffix(".json").read_text())
    assert spec["scheme"] == "time" and spec["time_column"] == "date"
    train = pd.read_csv(Path(cfg["competition"]["dir"]) / "train.csv")
    folds = pd.read_csv(config.folds_file)
    assert folds["id"].tolist() == train["id"].tolist()
    _assert_time_blocks(train["date"].to_numpy(), folds["fold"].to_numpy(), 3)
    assert np.bincount(folds["fold"]).tolist() == [16, 16, 16]  # 48 rows, 2 a day
    said = [r.getMessage() for r in caplog.records if "by time in column" in r.getMessage()]
    assert said == ["folds: by time in column 'date': fold 0 2024-01-01..2024-01-08 (16 rows), "
                    "fold 1 2024-01-09..2024-01-16 (16 rows), fold 2 2024-01-17..2024-01-24 "
                    "(16 rows); the test rows are predicted by the models of fold(s) 0, 1 (fold "
                    "2's never trains on the latest block)"]
    # every train row validated once: one OOF prediction each, by its own fold
    oof = pd.read_parquet(config.run_dir / "oof.parquet")
    assert sorted(oof["id"]) == sorted(train["id"]) and oof["id"].is_unique
    by_id = oof.set_index("id")["fold"]
    np.testing.assert_array_equal(by_id.loc[folds["id"]].to_numpy(), folds["fold"].to_numpy())
    assert (Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv").is_file()
    # the test rows: the mean of folds 0 and 1, whose models trained on the latest block
    per_fold = pd.read_parquet(config.run_dir / "test_folds.parquet")
    assert sorted(per_fold["fold"].unique()) == [0, 1, 2]
    test = pd.read_parquet(config.run_dir / "test.parquet").set_index("id")["y"]
    expected = per_fold[per_fold["fold"] < 2].groupby("id")["y"].mean()
    everyone = per_fold.groupby("id")["y"].mean()
    np.testing.assert_allclose(test.to_numpy(), expected.loc[test.index].to_numpy())
    assert not np.allclose(test.to_numpy(), everyone.loc[test.index].to_numpy())
    member = pd.read_parquet(config.run_dir / "seed0" / "test.parquet").set_index("id")["y"]
    np.testing.assert_allclose(member.loc[test.index].to_numpy(), test.to_numpy())
    # the time column is part of the recorded settings: another column refuses these folds
    other = {**cfg, "competition": {**cfg["competition"], "time_column": "x1"}}
    assert build_config(other).train_hash() != config.train_hash()
    with pytest.raises(DataError, match=r"time_column 'date' \(now 'x1'\)"):
        folds_stage.run(build_config({**other, "folds": {**cfg["folds"],
                                                          "name": config.folds_file.stem}}))


def test_a_test_inside_the_train_period_is_said(competition_factory) -> None:
    """Time folds on a test drawn from the train period: the CV asks more than the test,
    said with the share of later test rows; a later test period says nothing."""
    cfg = _dated_run(competition_factory)
    comp = load_competition(build_config(cfg).competition)
    assert shared_period_warning(comp) is None
    folder = Path(cfg["competition"]["dir"])
    edit_csv(folder / "test.csv", lambda f: f.assign(
        date=pd.date_range("2024-01-05", periods=len(f)).strftime("%Y-%m-%d")))
    comp = load_competition(build_config(cfg).competition)
    warning = shared_period_warning(comp)
    assert warning is not None and "only 0% of the test rows come after the last train " \
        "time in column 'date'" in warning and "a shuffled scheme" in warning


def test_time_folds_leave_the_last_blocks_model_out_of_the_test_mean() -> None:
    """Its model never trained on the latest block, the period the test follows; every other
    scheme's folds all predict the test."""
    assert predicting_folds("time", 5) == [0, 1, 2, 3]
    assert predicting_folds("time", 2) == [0]
    for scheme in (s for s in SPLITTERS if s != "time"):
        assert predicting_folds(scheme, 5) == [0, 1, 2, 3, 4]


def test_time_folds_file_that_no_longer_follows_the_times_is_refused(
        competition_factory) -> None:
    """Kept time folds are checked against the train rows' times as they are now: dates
    edited since (the ids unchanged), or a file written otherwise without a record, would
    validate a fold on rows among its training rows' times. An adversarial validation fold
    (its record says 'made_by') is by design no block of time, and is kept."""
    cfg = build_config(_dated_run(competition_factory))
    path = folds_stage.run(cfg)
    made = path.read_bytes()
    train = Path(cfg.competition.dir) / "train.csv"
    edit_csv(train, lambda f: f.assign(date=f["date"].iloc[::-1].to_numpy()))
    with pytest.raises(DataError) as info:
        folds_stage.run(cfg)
    text = str(info.value)
    assert text.startswith(f"folds file {path}: its folds are not blocks of column 'date'")
    assert "fold 0 ends at 2024-01-24, fold 1 starts at 2024-01-03" in text
    assert path.read_bytes() == made  # refused, not rewritten
    sidecar = path.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "made_by": "pipeline adversarial"}))
    assert folds_stage.run(cfg) == path and path.read_bytes() == made
    # a gap around its scattered test-like rows purged near every training row of fold 0
    purged = cfg.model_copy(update={"folds": cfg.folds.model_copy(update={"gap": 1.0})})
    with pytest.raises(DataError, match=r"^'folds.gap' 1 purges the rows beside a block of "
                       r"time, but .* holds folds made by pipeline adversarial .*set "
                       r"'folds.gap: 0'$"):
        folds_stage.run(purged)
    sidecar.unlink()  # a file without its record is checked too
    with pytest.raises(DataError, match="not blocks of column 'date'"):
        folds_stage.run(cfg)


def test_gap_leaves_the_rows_beside_a_block_out_of_its_training(tmp_path: Path) -> None:
    days = np.repeat(np.arange(20), 3)  # 20 days, 3 rows each, in order
    dates = (pd.Timestamp("2023-03-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")
    comp = _dated(tmp_path / "comp", dates.tolist())
    folds = make_folds(comp, FoldsConfig(scheme="time", n_splits=4))
    np.testing.assert_array_equal(folds, days // 5)  # days 0-4, 5-9, 10-14, 15-19
    np.testing.assert_array_equal(training_rows(comp, folds, 1, 0), np.flatnonzero(folds != 1))
    # fold 1 (days 5-9) without the rows of days 3-4 and 10-11; fold 0 without days 5-6
    trained = days[training_rows(comp, folds, 1, 2)]
    assert sorted(set(trained)) == [0, 1, 2, *range(12, 20)]
    assert sorted(set(days[training_rows(comp, folds, 0, 2.0)])) == list(range(7, 20))
    # plain numbers: the gap is in their unit
    numbers = _dated(tmp_path / "numbers", (days * 10).tolist())
    assert sorted(set(days[training_rows(numbers, folds, 1, 20)])) == [0, 1, 2, *range(12, 20)]
    with pytest.raises(DataError, match=r"'folds.gap' 15 leaves fold 1 no rows to train on"):
        training_rows(comp, folds, 1, 15)


def test_gap_through_the_config_and_a_run(competition_factory, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """'folds.gap' purges only time folds (refused with another scheme), is hashed (it
    changes what trains), keeps the folds file, and a gap that empties a fold's training is
    refused before any fold trains."""
    cfg = _dated_run(competition_factory)
    plain = build_config(cfg)
    gapped = build_config({**cfg, "folds": {**cfg["folds"], "gap": 3}})
    assert gapped.folds_file == plain.folds_file
    assert gapped.train_hash() != plain.train_hash()
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({**cfg, "competition": {**cfg["competition"],
                                                           "time_column": None},
                                    "folds": {"scheme": "kfold", "gap": 3}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert ("'folds.gap' 3 leaves out the rows beside a block of time: it needs "
            "'folds.scheme: time'. Got 'kfold'") in str(info.value)
    code, err, _ = run_cli({**cfg, "folds": {**cfg["folds"], "gap": 3}}, tmp_path, capsys)
    assert code == 0, err
    expect_failure({**cfg, "name": "wide", "folds": {**cfg["folds"], "gap": 30}}, tmp_path,
                   capsys, "'folds.gap' 30 leaves fold 0 no rows to train on")

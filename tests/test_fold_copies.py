"""``folds.copies: together``: train rows that repeat another row's inputs share its fold
(pipeline.data.copy_groups), under every scheme that shuffles; refused with time folds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import folds as folds_stage
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data.copy_groups import copy_groups, split_copies
from pipeline.data.repeated_rows import input_keys
from pipeline.errors import DataError
from tests.test_competition import expect_failure
from tests.test_folds import _with_copies


def _folds(data: dict[str, Any]) -> pd.Series:
    cfg = build_config(data)
    folds_stage.run(cfg)
    return pd.read_csv(cfg.folds_file, dtype={"id": str}).set_index("id")["fold"]


def _copies_apart(folds: pd.Series, n_copies: int) -> int:
    """How many of the ``n_copies`` copies (ids c0000..) sit in another fold than their
    original (the first ``n_copies`` train rows)."""
    train_ids = folds.index.tolist()
    originals = folds.loc[train_ids[:n_copies]].to_numpy()
    copies = folds.loc[[f"c{i:04d}" for i in range(n_copies)]].to_numpy()
    return int((originals != copies).sum())


@pytest.mark.parametrize("scheme", ["kfold", "stratified"])
def test_copies_share_their_rows_fold(competition_factory, scheme: str) -> None:
    data = _with_copies(competition_factory, 20)
    data["competition"]["feature_columns"] = ["x1", "x2", "color"]
    data["folds"].update(scheme=scheme, n_splits=5)
    assert _copies_apart(_folds(data), 20) > 0  # the scheme's own split: copies apart
    data["folds"]["copies"] = "together"
    cfg = build_config(data)
    assert cfg.folds_file.name.endswith(f"_{scheme}_k5_s0_together.csv")  # the factory seeds 0
    folds = _folds(data)
    assert _copies_apart(folds, 20) == 0
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert folds.value_counts().max() - folds.value_counts().min() <= 4  # sizes still even
    spec = json.loads(cfg.folds_file.with_suffix(".json").read_text())
    assert spec["copies"] == "together"
    if scheme == "stratified":  # classes still balanced: each fold within 3 of its share
        train = pd.read_csv(Path(data["competition"]["dir"]) / "train.csv", dtype={"id": str})
        share = pd.crosstab(folds.loc[train["id"]].to_numpy(), train["target"])
        assert (share.max() - share.min()).max() <= 3


def test_a_group_column_and_copies_join_into_one_group(competition_factory) -> None:
    """Copies whose entities differ link them: both entities' rows land in one fold."""
    data = _with_copies(competition_factory, 20)
    frame = pd.read_csv(Path(data["competition"]["dir"]) / "train.csv", dtype={"id": str})
    frame["entity"] = np.arange(len(frame)) // 2  # pairs of rows
    frame.to_csv(Path(data["competition"]["dir"]) / "train.csv", index=False)
    data["competition"].update(group_column="entity", feature_columns=["x1", "x2", "color"])
    data["folds"].update(scheme="group", copies="together")
    comp = load_competition(build_config(data).competition)
    groups = copy_groups(comp, comp.train["entity"].to_numpy())
    # copy c0000 repeats row 0 (entity 0, with row 1) and is itself in entity 40 (with c0001,
    # which repeats row 1): rows 0, 1 and both copies are one group
    ids = comp.train["id"].tolist()
    at = {i: ids.index(i) for i in [ids[0], ids[1], "c0000", "c0001"]}
    assert len({groups[p] for p in at.values()}) == 1
    assert groups[ids.index(ids[2])] != groups[at[ids[0]]]
    folds = _folds(data)
    assert _copies_apart(folds, 20) == 0
    assert (frame.assign(fold=folds.loc[frame["id"]].to_numpy())
            .groupby("entity")["fold"].nunique() == 1).all()


def test_multilabel_folds_split_one_row_of_each_copy(competition_factory) -> None:
    data = competition_factory("tabular", "multilabel", n_train=80)
    path = Path(data["competition"]["dir"]) / "train.csv"
    train = pd.read_csv(path, dtype={"id": str})
    copies = train.iloc[:20].assign(id=[f"c{i:04d}" for i in range(20)])
    pd.concat([train, copies]).to_csv(path, index=False)
    data["folds"].update(scheme="multilabel", copies="together")
    folds = _folds(data)
    assert _copies_apart(folds, 20) == 0
    assert sorted(folds.unique()) == list(range(data["folds"]["n_splits"]))


def test_blank_texts_are_not_copies(competition_factory) -> None:
    """Rows whose text is empty share no content: they are not grouped into one fold."""
    data = competition_factory("text", "binary", n_train=60)
    path = Path(data["competition"]["dir"]) / "train.csv"
    train = pd.read_csv(path)
    train.loc[:19, "text"] = ["", "  ", *[None] * 18]
    train.loc[20:29, "text"] = "the same words written ten times"
    train.to_csv(path, index=False)
    data["competition"]["feature_columns"] = []
    data["folds"]["copies"] = "together"
    comp = load_competition(build_config(data).competition)
    keys = input_keys(comp)
    assert len(np.unique(keys[:20])) == 20 and len(np.unique(keys[20:30])) == 1
    folds = _folds(data).to_numpy()
    assert len(set(folds[:20])) > 1 and len(set(folds[20:30])) == 1


def test_copies_together_with_time_folds_is_refused(competition_factory, tmp_path: Path,
                                                     capsys) -> None:
    data = competition_factory("tabular", "regression", n_train=60)
    data["competition"]["time_column"] = "x1"
    data["folds"].update(scheme="time", copies="together")
    expect_failure(data, tmp_path, capsys, "'folds.copies: together' cannot move rows between "
                   "blocks of time")
    data["folds"].update(scheme="stratified", copies="sometimes")
    with pytest.raises(ValueError, match="copies"):
        build_config(data)


def test_too_few_distinct_inputs_are_refused(competition_factory) -> None:
    data = competition_factory("tabular", "binary", n_train=40)
    path = Path(data["competition"]["dir"]) / "train.csv"
    train = pd.read_csv(path)
    train[["x1", "x2"]] = train[["x1", "x2"]].iloc[np.arange(40) % 3].to_numpy()
    train["color"] = train["color"].iloc[0]
    train.to_csv(path, index=False)
    data["competition"]["feature_columns"] = ["x1", "x2", "color"]
    data["folds"].update(scheme="kfold", n_splits=5, copies="together")
    with pytest.raises(DataError, match=re.escape(
            "leaves 3 distinct inputs, fewer than 'folds.n_splits'=5")):
        _folds(data)
    assert not build_config(data).folds_file.exists()


def test_a_kept_folds_file_that_splits_copies_is_refused(competition_factory) -> None:
    """A folds file of the 'together' name whose copies sit in two folds (edited by hand,
    or copies added to train.csv since) is refused, not trained on."""
    data = _with_copies(competition_factory, 20)
    data["competition"]["feature_columns"] = ["x1", "x2", "color"]
    data["folds"]["copies"] = "together"
    cfg = build_config(data)
    folds = _folds(data)
    comp = load_competition(cfg.competition)
    assert split_copies(comp, folds.loc[comp.train["id"].astype(str)].to_numpy()) == 0
    frame = pd.read_csv(cfg.folds_file, dtype={"id": str})
    row = frame.index[frame["id"] == "c0000"][0]
    frame.loc[row, "fold"] = (frame.loc[row, "fold"] + 1) % data["folds"]["n_splits"]
    frame.to_csv(cfg.folds_file, index=False)
    with pytest.raises(DataError, match=re.escape(
            "2 train rows have a copy of their inputs in another fold, but 'folds.copies' "
            "is 'together'")):
        folds_stage.run(cfg)


def test_the_warning_of_copies_apart_names_the_remedy(competition_factory, caplog) -> None:
    data = _with_copies(competition_factory, 20)
    data["competition"]["feature_columns"] = ["x1", "x2", "color"]
    with caplog.at_level("WARNING"):
        folds_stage.run(build_config(data))
    said = [r.getMessage() for r in caplog.records if "repeat the inputs" in r.getMessage()]
    assert len(said) == 1 and "'folds.copies: together' keeps each row's copies" in said[0]
    assert "with its target too (and 0.0% of the test rows repeat a train row's)" in said[0]
    caplog.clear()
    data["folds"]["copies"] = "together"
    with caplog.at_level("WARNING"):
        folds_stage.run(build_config(data))
    assert not [r for r in caplog.records if "repeat the inputs" in r.getMessage()]

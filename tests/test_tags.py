"""A multilabel target written as one column of space-separated labels (Kaggle's Planet:
``tags`` = "haze primary"; Human Protein Atlas: ``Target`` = "16 0"): read into one 0/1
column per label, predicted and submitted as the same kind of column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import DataError
from pipeline.submit import tag_strings
from tests.test_competition import run_cli

TAGS = ["clear", "haze", "primary", "water"]


def _competition(root: Path, tags: list[str], n_train: int = 240, n_test: int = 60,
                 sample_columns: list[str] | None = None, join: str = " "
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """Rows whose labels each show in a feature: x_j > 0 where the row holds tag j; the
    config and the test rows' labels (0/1, in ``tags`` order)."""
    rng = np.random.default_rng(0)
    n = n_train + n_test
    hot = rng.random((n, len(tags))) < 0.4
    hot[np.arange(n), rng.integers(0, len(tags), n)] = True  # every row holds a label
    frame = pd.DataFrame({"image_name": [f"train_{i}" for i in range(n)]})
    frame["tags"] = [join.join(t for t, h in zip(tags, row, strict=True) if h) for row in hot]
    for j in range(len(tags)):
        frame[f"x{j}"] = np.where(hot[:, j], 1.0, -1.0) + rng.normal(scale=0.4, size=n)
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:n_train].to_csv(root / "train.csv", index=False)
    frame.iloc[n_train:].drop(columns=["tags"]).to_csv(root / "test.csv", index=False)
    sample = frame.iloc[n_train:][["image_name"]].copy()
    for c in sample_columns or ["tags"]:
        sample[c] = "clear primary" if c == "tags" else 0.0
    sample.to_csv(root / "sample_submission.csv", index=False)
    return {
        "name": "tags", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(root), "id_column": "image_name", "task": "multilabel",
                        "target_columns": ["tags"], "metric": "f2_samples",
                        "modality": "tabular"},
        "folds": {"scheme": "multilabel", "n_splits": 3, "seed": 0},
        "model": {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]},
        "train": {"epochs": 1},
    }, hot[n_train:]


def test_tags_column_reads_as_one_zero_one_column_per_label(tmp_path: Path) -> None:
    cfg, _ = _competition(tmp_path, TAGS)
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == TAGS and comp.pred_columns == TAGS and comp.n_outputs == 4
    train = pd.read_csv(tmp_path / "train.csv")
    expected = np.array([[t in row.split() for t in TAGS] for row in train["tags"]], float)
    np.testing.assert_array_equal(comp.targets, expected)
    assert "tags" not in comp.feature_columns


def test_integer_labels_sort_as_numbers_and_a_lone_number_is_a_label(tmp_path: Path) -> None:
    # Human Protein Atlas's 'Target': "16 0", "2", "10 2"; rows of one number read as integers
    cfg, _ = _competition(tmp_path, ["0", "2", "10", "16"])
    comp = load_competition(build_config(cfg).competition)
    assert comp.pred_columns == ["0", "2", "10", "16"]
    train = pd.read_csv(tmp_path / "train.csv", dtype=str)
    for row, hot in zip(train["tags"], comp.targets, strict=True):
        assert sorted(row.split(), key=int) == [c for c, h in zip(comp.pred_columns, hot,
                                                                  strict=True) if h]


def test_one_number_a_row_is_a_label_and_one_zero_one_column_stays_one_label(
        tmp_path: Path) -> None:
    cfg, _ = _competition(tmp_path, TAGS)
    train = pd.read_csv(tmp_path / "train.csv")
    train["tags"] = [(0, 5, 1)[i % 3] for i in range(len(train))]  # pandas reads integers
    train.to_csv(tmp_path / "train.csv", index=False)
    comp = load_competition(build_config(cfg).competition)
    assert comp.pred_columns == ["0", "1", "5"]
    np.testing.assert_array_equal(comp.targets[:3], np.eye(3)[[0, 2, 1]])
    train["tags"] = [i % 2 for i in range(len(train))]  # 0/1: one label, as before
    train.to_csv(tmp_path / "train.csv", index=False)
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == [] and comp.pred_columns == ["tags"]
    np.testing.assert_array_equal(comp.targets[:, 0], train["tags"])


@pytest.mark.parametrize(("tags", "message"), [
    (["clear clear", "haze"], r"repeats a label within a row \(e.g. 'clear clear', line 2\)"),
    (["clear", "clear"], r"holds a single label \['clear'\] in every row"),
])
def test_bad_tag_columns_are_refused_naming_the_line(tmp_path: Path, tags: list[str],
                                                     message: str) -> None:
    cfg, _ = _competition(tmp_path, TAGS)
    train = pd.read_csv(tmp_path / "train.csv")
    train["tags"] = [tags[i % 2] for i in range(len(train))]
    train.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=message):
        load_competition(build_config(cfg).competition)


def test_a_row_without_a_passing_label_takes_its_most_probable() -> None:
    p = np.array([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2], [0.4, 0.45, 0.1]])
    labels = (p >= 0.5).astype(int)
    assert tag_strings(labels, p, ["a", "b", "c"]) == ["a c", "b", "b"]
    assert tag_strings(labels, p, [0, 2, 10]) == ["0 10", "2", "2"]


@pytest.mark.parametrize("encoder", [
    {"name": "sklearn:sklearn.linear_model.LogisticRegression"},
    {"name": "mlp", "params": {"hidden": [16]}},
    {"name": "lightgbm", "params": {"n_estimators": 30}},
])
def test_pipeline_run_submits_space_separated_labels(tmp_path: Path, capsys,
                                                     encoder: dict[str, Any]) -> None:
    cfg, truth = _competition(tmp_path / "comp", TAGS)
    cfg["model"]["encoders"] = [encoder]
    cfg["train"] = {"epochs": 8, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1e-2}}
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "tags.csv")
    sample = pd.read_csv(tmp_path / "comp" / "sample_submission.csv")
    assert list(sub.columns) == ["image_name", "tags"]
    assert sub["image_name"].tolist() == sample["image_name"].tolist()
    predicted = np.array([[t in row.split() for t in TAGS] for row in sub["tags"]])
    assert predicted.any(axis=1).all()  # no empty cell
    # the features separate the labels: nearly every held-out row's labels are right
    assert (predicted == truth).all(axis=1).mean() > 0.9
    oof = pd.read_parquet(tmp_path / "comp" / "runs" / "tags" / "oof.parquet")
    assert set(TAGS) <= set(oof.columns)


def test_a_sample_with_one_column_per_label_gets_probabilities(tmp_path: Path,
                                                                capsys) -> None:
    cfg, truth = _competition(tmp_path / "comp", TAGS, sample_columns=list(reversed(TAGS)))
    cfg["competition"]["metric"] = "roc_auc"
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "tags.csv")
    assert list(sub.columns) == ["image_name", *reversed(TAGS)]
    p = sub[TAGS].to_numpy()
    assert ((p > 0) & (p < 1)).all() and ((p >= 0.5) == truth).mean() > 0.95


SOUNDS = ["Bark", "Bass guitar", "Drum kit", "Female singing"]  # Freesound's, spaces inside


def test_labels_joined_by_another_character_are_found_and_submitted_so(tmp_path: Path,
                                                                        capsys) -> None:
    # Freesound's 'labels' = "Bass guitar,Drum kit": split on the comma, not on the spaces
    cfg, truth = _competition(tmp_path / "comp", SOUNDS, join=",")
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == SOUNDS and comp.label_separator == ","
    train = pd.read_csv(tmp_path / "comp" / "train.csv")
    expected = np.array([[t in row.split(",") for t in SOUNDS] for row in train["tags"]], float)
    np.testing.assert_array_equal(comp.targets, expected)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "tags.csv")
    predicted = np.array([[t in row.split(",") for t in SOUNDS] for row in sub["tags"]])
    assert sub["tags"].str.contains(",").any() and not sub["tags"].str.contains(", ").any()
    assert (predicted == truth).all(axis=1).mean() > 0.9
    # a later stage reads the train file's labels with the run's separator, not the config's
    from pipeline.artifacts import load_predictions
    from pipeline.run_targets import targets_for_meta
    meta = load_predictions(tmp_path / "comp" / "runs" / "tags").meta
    assert meta.label_separator == ","
    np.testing.assert_array_equal(targets_for_meta(meta), comp.targets)


def test_a_given_separator_wins_over_the_one_found(tmp_path: Path) -> None:
    # genres holding commas, joined by '|': both characters occur, so none is guessed
    genres = ["Action, Adventure", "Comedy", "Drama", "Sci-Fi, Fantasy"]
    cfg, _ = _competition(tmp_path, genres, join="|")
    try:  # whitespace splits "Action, Adventure|Comedy" into other labels, or refuses them
        found = load_competition(build_config(cfg).competition).classes
    except DataError:
        found = None
    assert found != genres
    cfg["competition"]["label_separator"] = "|"
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == genres and comp.label_separator == "|"
    assert comp.targets.sum(axis=1).min() >= 1


def test_stray_spaces_and_empty_pieces_are_no_labels() -> None:
    from pipeline.task_outputs import split_tags, tag_separator
    cells = pd.Series(["a, b", "b,", " c ,a", "c"])
    assert tag_separator(cells, None) == ","
    assert split_tags(cells, ",") == [["a", "b"], ["b"], ["c", "a"], ["c"]]
    assert tag_separator(pd.Series(["a b", "c"]), None) == " "
    assert tag_separator(pd.Series(["a|b", "c,d"]), None) == " "  # two found: none guessed
    assert tag_separator(pd.Series(["a/b"]), "/") == "/"
    assert tag_separator(pd.Series(["a|b"]), "\t") == " "  # a tab: any whitespace
    assert tag_separator(pd.Series(["a|b"]), "  ") == " "

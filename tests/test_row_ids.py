"""Files that name no row (Kaggle's Digit Recognizer: neither train.csv nor test.csv has an id
column; the sample submission numbers the test rows): train rows are numbered, test rows take
the sample's ids in order, and an id column spelt otherwise is refused, not guessed."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.competition import CompetitionConfig, load_competition
from pipeline.errors import DataError
from tests.test_competition import expect_failure, run_cli


def _digit_recognizer(root: Path, n_train: int = 60, n_test: int = 30) -> dict[str, Any]:
    """label + features in train, features alone in test, ImageId 1..n in the sample."""
    rng = np.random.default_rng(0)
    comp = root / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 3, n_train + n_test)
    x = labels[:, None] * 3.0 + rng.normal(size=(n_train + n_test, 2))
    frame = pd.DataFrame({"label": labels, "x0": x[:, 0], "x1": x[:, 1]})
    frame.iloc[:n_train].to_csv(comp / "train.csv", index=False)
    frame.iloc[n_train:].drop(columns="label").to_csv(comp / "test.csv", index=False)
    pd.DataFrame({"ImageId": range(1, n_test + 1), "Label": 0}).to_csv(
        comp / "sample_submission.csv", index=False)
    pd.Series(labels[n_train:]).to_csv(root / "answers.csv", index=False)
    return {"name": "dr", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
            "submissions_dir": str(root / "subs"),
            "competition": {"dir": str(comp), "id_column": "ImageId", "target_columns": ["label"],
                            "task": "multiclass", "metric": "accuracy", "modality": "tabular"},
            "folds": {"scheme": "stratified", "n_splits": 3, "seed": 0},
            "model": {"encoders": [
                {"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}}


def test_files_without_ids_run_and_submit_in_the_sample_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _digit_recognizer(tmp_path)
    with caplog.at_level(logging.WARNING):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "the train file has no id column 'ImageId': its rows are numbered" in warned
    assert "the test file has no id column 'ImageId': its rows take the sample" in warned
    submission = pd.read_csv(tmp_path / "subs" / "dr.csv")
    assert submission["ImageId"].tolist() == list(range(1, 31))
    answers = pd.read_csv(tmp_path / "answers.csv").iloc[:, 0]
    # each id gets its own row's prediction: the classes are well apart
    # the sample spells the target "Label" (train: "label"): filled from it
    assert list(submission.columns) == ["ImageId", "Label"]
    assert (submission["Label"].to_numpy() == answers.to_numpy()).mean() >= 0.9
    oof = pd.read_parquet(tmp_path / "runs" / "dr" / "oof.parquet")
    assert sorted(oof["ImageId"].astype(int)) == list(range(1, 61))
    # a second run reads the folds file (numbered ids) and the finished folds back
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err


def _config(cfg: dict[str, Any]) -> CompetitionConfig:
    return CompetitionConfig(**cfg["competition"])


def test_a_test_file_of_another_length_cannot_take_the_sample_ids(tmp_path: Path) -> None:
    cfg = _digit_recognizer(tmp_path)
    test = tmp_path / "comp" / "test.csv"
    pd.read_csv(test).iloc[:-1].to_csv(test, index=False)
    with pytest.raises(DataError, match=r"its 29 rows cannot take the ids of the 30 rows"):
        load_competition(_config(cfg))


@pytest.mark.parametrize("file", ["train.csv", "test.csv"])
def test_an_id_column_spelt_otherwise_is_refused(tmp_path: Path, file: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _digit_recognizer(tmp_path)
    path = tmp_path / "comp" / file
    frame = pd.read_csv(path)
    frame.insert(0, "imageid", range(1, len(frame) + 1))
    frame.to_csv(path, index=False)
    expect_failure(cfg, tmp_path, capsys, str(path), "['ImageId']", "'imageid' is")


def test_a_test_column_holding_the_sample_ids_is_refused(tmp_path: Path) -> None:
    """Another name for the ids, in another row order than the sample: taken by order, each
    row would be submitted under another row's id."""
    cfg = _digit_recognizer(tmp_path)
    test = tmp_path / "comp" / "test.csv"
    frame = pd.read_csv(test)
    frame.insert(0, "key", np.arange(30, 0, -1))
    frame.to_csv(test, index=False)
    with pytest.raises(DataError, match="column 'key' holds the ids of"):
        load_competition(_config(cfg))


def test_test_rows_listed_only_by_the_sample_submission(tmp_path: Path) -> None:
    """Image competitions often ship no test.csv (Aerial Cactus: train.csv, train/, test/ and
    sample_submission.csv): the error says how to read the test rows from the sample."""
    from PIL import Image

    comp = tmp_path / "comp"
    for split, names in (("train", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]), ("test", ["e.jpg"])):
        (comp / split).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (8, 8)).save(comp / split / name)
    pd.DataFrame({"id": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "has_cactus": [0, 1, 0, 1]}).to_csv(
        comp / "train.csv", index=False)
    pd.DataFrame({"id": ["e.jpg"], "has_cactus": 0.5}).to_csv(comp / "sample_submission.csv",
                                                              index=False)
    settings = {"dir": str(comp), "target_columns": ["has_cactus"], "task": "binary",
                "metric": "roc_auc", "modality": "image", "image_path": "{split}/{id}"}
    with pytest.raises(DataError, match=r"set 'competition\.test_file: sample_submission\.csv'"):
        load_competition(CompetitionConfig(**settings))
    loaded = load_competition(CompetitionConfig(**settings, test_file="sample_submission.csv"))
    assert loaded.test["id"].tolist() == ["e.jpg"]
    assert loaded.test["_image_path"].tolist() == ["test/e.jpg"]


def test_a_wide_file_without_ids_loads_without_pandas_warnings(tmp_path: Path) -> None:
    # Digit Recognizer's 784 pixel columns: pandas 3 reads them as 784 blocks, and numbering
    # the rows (train) or taking the sample's ids (test) printed its PerformanceWarning,
    # twice a stage
    comp = tmp_path / "comp"
    comp.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 150))
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(150)])
    frame.insert(0, "label", np.arange(20) % 2)
    frame.iloc[:12].to_csv(comp / "train.csv", index=False)
    frame.iloc[12:].drop(columns="label").to_csv(comp / "test.csv", index=False)
    pd.DataFrame({"ImageId": range(1, 9), "Label": 0}).to_csv(
        comp / "sample_submission.csv", index=False)
    cfg = CompetitionConfig(dir=str(comp), id_column="ImageId", target_columns=["label"],
                            task="binary", metric="accuracy", modality="tabular")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        loaded = load_competition(cfg)
    assert list(loaded.train["ImageId"]) == list(range(1, 13))
    assert list(loaded.test["ImageId"]) == list(range(1, 9))
    assert np.array_equal(loaded.test.filter(like="pixel").to_numpy(), pixels[12:])

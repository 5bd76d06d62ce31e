"""Competition files shipped as Parquet (train.parquet, test.parquet): read into the frames
their CSV files would have given (pipeline/competition_files.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import DataError
from tests.test_competition import run_cli


def _competition(root: Path, n_train: int = 150, n_test: int = 50) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = n_train + n_test
    x = rng.normal(size=n)
    frame = pd.DataFrame({
        "id": [f"{i:05d}" for i in range(n)],  # zeros a CSV keeps as text
        "x": x,
        "colour": pd.Categorical(np.where(x > 0, "red", "blue")),  # a Parquet dictionary
        "label": np.where(x + rng.normal(scale=0.3, size=n) > 0, "yes", "no"),
    })
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:n_train].to_parquet(root / "train.parquet", index=False)
    frame.iloc[n_train:].drop(columns="label").to_parquet(root / "test.parquet", index=False)
    frame.iloc[n_train:][["id"]].assign(label=0.5).to_csv(root / "sample_submission.csv",
                                                          index=False)
    return {
        "name": "pq", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(root), "id_column": "id", "target_columns": ["label"],
                        "task": "binary", "metric": "roc_auc", "modality": "tabular",
                        "train_file": "train.parquet", "test_file": "test.parquet"},
        "folds": {"scheme": "stratified", "n_splits": 3, "seed": 0},
        "model": {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]},
    }


def test_parquet_files_read_as_their_csv_would(tmp_path: Path) -> None:
    cfg = _competition(tmp_path)
    comp = load_competition(build_config(cfg).competition)
    assert comp.train["id"].iloc[:2].tolist() == ["00000", "00001"]
    assert comp.classes == ["no", "yes"]
    assert comp.train["colour"].dtype == object or pd.api.types.is_string_dtype(
        comp.train["colour"])
    assert comp.categorical_columns == ["colour"] and comp.numeric_columns == ["x"]
    numbered = pd.read_parquet(tmp_path / "train.parquet")
    numbered["id"] = [str(i) for i in range(len(numbered))]  # plain integers as text
    numbered.to_parquet(tmp_path / "train.parquet", index=False)
    assert load_competition(build_config(cfg).competition).train["id"].dtype == np.int64


def test_a_file_that_is_not_parquet_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = _competition(tmp_path)
    (tmp_path / "test.parquet").write_text("id,x\n1,2\n")
    with pytest.raises(DataError, match=r"^test file .*test.parquet could not be read as "
                       r"Parquet: [^\n]+$"):
        load_competition(build_config(cfg).competition)


def test_pipeline_run_on_parquet_files(tmp_path: Path, capsys) -> None:
    cfg = _competition(tmp_path / "comp")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "pq.csv", dtype={"id": str})
    test = pd.read_parquet(tmp_path / "comp" / "test.parquet")
    assert sub["id"].tolist() == test["id"].tolist()  # '00150', zeros kept
    assert roc_auc_score(test["x"] > 0, sub["label"]) > 0.95


def test_integer_labels_with_empty_cells_stay_integers(tmp_path: Path) -> None:
    """Parquet stores an integer column with an empty cell as floats: with the empty rows
    dropped, the classes were 0.0 / 1.0 / 2.0 (submitted as '1.0')."""
    cfg = _competition(tmp_path)
    train = pd.read_parquet(tmp_path / "train.parquet")
    train["label"] = [float(i % 3) if i % 10 else np.nan for i in range(len(train))]
    train.to_parquet(tmp_path / "train.parquet", index=False)
    cfg["competition"].update(task="multiclass", metric="accuracy",
                              unlabelled_train_rows="drop")
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == [0, 1, 2] and all(type(c) is int for c in comp.classes)
    assert len(comp.train) == 135

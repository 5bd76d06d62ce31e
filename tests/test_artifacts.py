"""Artifacts (pipeline/artifacts.py): atomic writes that leave no temporary file and keep the
old file when a write fails, the RunMeta round trip, and load errors that name the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.artifacts import (
    RunMeta,
    atomic_path,
    load_predictions,
    read_json,
    read_meta,
    read_parquet,
    write_csv,
    write_json,
    write_meta,
    write_parquet,
    write_text,
    write_yaml,
)
from pipeline.errors import DataError

META = RunMeta(
    name="exp", task="multiclass", metric="accuracy", id_column="id",
    target_columns=["label"], classes=[3, 5, 7], pred_columns=["3", "5", "7"],
    folds_file="folds/k2.csv", competition_dir="comp", train_file="train.csv",
    config_hash="0123456789abcdef",
)
FRAME = pd.DataFrame({"id": ["a", "b"], "x": [1.5, -2.0]})


def test_every_writer_leaves_only_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "folder"  # parents are made
    write_text(folder / "a.txt", "hello")
    write_json(folder / "b.json", {"z": 1, "a": [1, 2]})
    write_yaml(folder / "c.yaml", {"z": 1, "a": 2})
    write_parquet(folder / "d.parquet", FRAME)
    write_csv(folder / "e.csv", FRAME)
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.txt", "b.json", "c.yaml", "d.parquet", "e.csv"]
    assert (folder / "a.txt").read_text() == "hello"
    text = (folder / "b.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"z"')  # sorted keys
    assert read_json(folder / "b.json") == {"z": 1, "a": [1, 2]}
    assert list(yaml.safe_load((folder / "c.yaml").read_text())) == ["z", "a"]  # order kept
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "d.parquet"), FRAME)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "e.csv"), FRAME)


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    write_json(path, {"v": 1})
    write_json(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_failed_writes_keep_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    write_json(path, {"v": 1})
    old = path.read_text()
    with pytest.raises(TypeError):  # keys that cannot be sorted fail before any write
        write_json(path, {1: "a", "b": 2})
    with pytest.raises(RuntimeError, match="cut off"), atomic_path(path) as tmp:
        tmp.write_text('{"v": ')  # half written, then the writer dies
        raise RuntimeError("cut off")
    table = tmp_path / "oof.parquet"
    write_parquet(table, FRAME)
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error types
        write_parquet(table, pd.DataFrame({"id": [object()]}))
    assert path.read_text() == old
    pd.testing.assert_frame_equal(pd.read_parquet(table), FRAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oof.parquet", "scores.json"]


def test_json_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    # JSON has no NaN: a constant prediction's correlation score must still be readable
    path = tmp_path / "scores.json"
    write_json(path, {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    assert read_json(path) == {"a": None, "b": [1.0, None], "c": {"d": None}}


def test_atomic_path_is_a_sibling_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path and not path.exists()
        tmp.write_bytes(b"weights")
    assert path.read_bytes() == b"weights" and not tmp.exists()


def test_run_meta_round_trip(tmp_path: Path) -> None:
    assert RunMeta.from_json(META.to_json()) == META
    write_meta(tmp_path, META)
    assert read_meta(tmp_path) == META
    assert json.loads((tmp_path / "run.json").read_text())["classes"] == [3, 5, 7]
    # the fields with defaults are written out and read back as well
    other = dataclasses.replace(META, sample_submission_file="sample.csv", leaky=True)
    write_meta(tmp_path, other)
    assert read_meta(tmp_path) == other
    assert not META.leaky and META.sample_submission_file == "sample_submission.csv"


def test_read_meta_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a finished run or blend") as info:
        read_meta(tmp_path)
    assert str(tmp_path / "run.json") in str(info.value)


def _run(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    oof = pd.DataFrame(rng.dirichlet(np.ones(3), 4), columns=META.pred_columns)
    oof.insert(0, "fold", [0, 1, 0, 1])
    oof.insert(0, "id", ["a", "b", "c", "d"])
    test = pd.DataFrame(rng.dirichlet(np.ones(3), 2), columns=META.pred_columns)
    test.insert(0, "id", ["t0", "t1"])
    write_meta(folder, META)
    write_parquet(folder / "oof.parquet", oof)
    write_parquet(folder / "test.parquet", test)
    return oof, test


def test_load_predictions(tmp_path: Path) -> None:
    oof, test = _run(tmp_path)
    pred = load_predictions(tmp_path)
    assert pred.meta == META
    pd.testing.assert_frame_equal(pred.oof, oof)
    np.testing.assert_allclose(pred.oof_matrix, oof[META.pred_columns].to_numpy())
    np.testing.assert_allclose(pred.test_matrix, test[META.pred_columns].to_numpy())
    assert pred.oof_matrix.dtype == np.float64 and pred.test_matrix.shape == (2, 3)


@pytest.mark.parametrize("missing", ["run.json", "oof.parquet", "test.parquet"])
def test_load_predictions_names_the_missing_file(tmp_path: Path, missing: str) -> None:
    _run(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_predictions(tmp_path)
    assert str(tmp_path / missing) in str(info.value)


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    """Issue 15 item 5: every artifact was 0600 (the temporary file's mode), submissions
    included; now the mode a plain open() would give under the process's umask."""
    import os
    import stat

    from pipeline import artifacts

    mask = os.umask(0)
    os.umask(mask)
    write_text(tmp_path / "a.txt", "x")
    write_csv(tmp_path / "b.csv", pd.DataFrame({"x": [1]}))
    for name in ("a.txt", "b.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
    assert 0o666 & ~mask == artifacts._FILE_MODE


def test_an_unwritable_folder_is_a_data_error_naming_it(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only output folder gave a PermissionError traceback; now a one-line DataError
    (root ignores file modes, so the refusal is simulated where the temporary is made)."""
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(DataError, match="permission denied") as info:
        write_text(tmp_path / "runs" / "x.txt", "x")
    assert str(tmp_path / "runs") in str(info.value)


def test_a_cut_off_parquet_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "oof.parquet"
    pd.DataFrame({"x": np.arange(100)}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="could not be read"):
        read_parquet(path)

"""The blend stage on synthetic run folders: outputs, member checks, resume, logging."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import blend
from pipeline.artifacts import (
    RunMeta,
    load_predictions,
    read_json,
    read_meta,
    write_meta,
    write_parquet,
)
from pipeline.metrics import get_metric
from pipeline.postprocess import load_postprocess

N_TRAIN, N_TEST, N_FOLDS = 400, 120, 4
CLASSES = ["ant", "bee", "cat"]


def _meta(tmp_path: Path, name: str, task: str, metric: str) -> RunMeta:
    binary = task == "binary"
    return RunMeta(
        name=name,
        task=task,
        metric=metric,
        id_column="id",
        target_columns=["label"],
        classes=["no", "yes"] if binary else CLASSES,
        pred_columns=["label"] if binary else CLASSES,
        folds_file=str(tmp_path / "folds" / "kfold.csv"),
        competition_dir=str(tmp_path / "comp"),
        train_file="train.csv",
        config_hash=f"hash-{name}",
    )


def make_competition(
    tmp_path: Path, task: str, metric: str, qualities: list[float], seed: int = 0
) -> tuple[list[Path], np.ndarray]:
    """A competition folder with train.csv and one run folder per member quality."""
    rng = np.random.default_rng(seed)
    c = 1 if task == "binary" else len(CLASSES)
    y_idx = rng.integers(0, 2 if task == "binary" else c, N_TRAIN)
    ids = rng.permutation(10_000)[:N_TRAIN] + 1
    labels = np.array(["no", "yes"] if task == "binary" else CLASSES)[y_idx]
    comp = tmp_path / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "label": labels}).to_csv(comp / "train.csv", index=False)
    folds = np.arange(N_TRAIN) % N_FOLDS
    test_ids = np.arange(N_TEST) + 50_000
    runs = []
    for i, q in enumerate(qualities):
        meta = _meta(tmp_path, f"m{i}", task, metric)
        if task == "binary":
            oof = 1 / (1 + np.exp(-(q * (2 * y_idx - 1) + rng.normal(size=N_TRAIN))))[:, None]
            test = rng.random((N_TEST, 1))
        else:
            logits = q * np.eye(c)[y_idx] + rng.normal(size=(N_TRAIN, c))
            oof = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            test = rng.dirichlet(np.ones(c), N_TEST)
        oof_frame = pd.DataFrame(oof, columns=meta.pred_columns)
        oof_frame.insert(0, "fold", folds)
        oof_frame.insert(0, "id", ids)
        test_frame = pd.DataFrame(test, columns=meta.pred_columns)
        test_frame.insert(0, "id", test_ids)
        folder = tmp_path / "runs" / meta.name
        write_meta(folder, meta)
        write_parquet(folder / "oof.parquet", oof_frame)
        write_parquet(folder / "test.parquet", test_frame)
        runs.append(folder)
    y = y_idx if task == "multiclass" else y_idx.astype(np.float64)[:, None]
    return runs, y


@pytest.fixture
def binary_runs(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    return make_competition(tmp_path, "binary", "roc_auc", [1.2, 0.9, 0.6, 0.0])


def test_optuna_blend_writes_a_complete_folder(tmp_path, binary_runs, caplog) -> None:
    runs, y = binary_runs
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        folder = blend.run(runs, name="b1", blends_dir=tmp_path / "blends", n_trials=30)
    assert folder == tmp_path / "blends" / "b1"
    for f in ("run.json", "oof.parquet", "test.parquet", "weights.json", "cv.json", "study.db"):
        assert (folder / f).is_file(), f
    assert not (folder / "postprocess.json").exists()  # AUC scores probabilities

    pred = load_predictions(folder)
    member = load_predictions(runs[0])
    assert pred.meta.name == "b1" and pred.meta.pred_columns == ["label"]
    pd.testing.assert_frame_equal(pred.oof[["id", "fold"]], member.oof[["id", "fold"]])
    pd.testing.assert_series_equal(pred.test["id"], member.test["id"])

    weights = read_json(folder / "weights.json")
    assert sum(weights["weights"].values()) == pytest.approx(1.0)
    assert weights["weights"]["m3"] < 0.05  # pure noise
    assert weights["zero_weight"] == [n for n, w in weights["weights"].items() if w == 0]

    cv = read_json(folder / "cv.json")
    auc = get_metric("roc_auc")
    assert cv["metric"] == "roc_auc" and cv["direction"] == "maximize"
    assert cv["in_sample"]["score"] == pytest.approx(auc(y, pred.oof_matrix))
    assert cv["in_sample"]["score"] >= cv["best_member"]["score"]
    assert cv["in_sample"]["score"] >= cv["equal_weights"]
    assert cv["best_member"]["name"] == "m0"
    assert sorted(cv["nested"]["per_fold"]) == ["0", "1", "2", "3"]
    assert cv["nested"]["mean"] == pytest.approx(np.mean(list(cv["nested"]["per_fold"].values())))
    assert set(cv["members"]) == {"m0", "m1", "m2", "m3"}
    assert "nested CV" in caplog.text and "m3" in caplog.text


def test_blend_reads_targets_from_the_competition(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    given = blend.run(runs, method="mean", name="a", blends_dir=tmp_path, targets=y)
    read = blend.run(runs, method="mean", name="b", blends_dir=tmp_path)
    assert read_json(given / "cv.json")["in_sample"] == read_json(read / "cv.json")["in_sample"]


def test_rerun_skips_a_complete_blend_and_redoes_a_changed_one(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    kw = {"name": "b", "blends_dir": tmp_path, "targets": y, "method": "hill_climb"}
    folder = blend.run(runs, **kw)
    stamp = (folder / "cv.json").stat().st_mtime_ns
    blend.run(runs, **kw)
    assert (folder / "cv.json").stat().st_mtime_ns == stamp
    first_hash = read_meta(folder).config_hash
    blend.run(runs, params={"n_iter": 3}, **kw)
    assert read_meta(folder).config_hash != first_hash


def test_default_name_and_stacking_weights(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    folder = blend.run(runs, method="stacking", blends_dir=tmp_path, targets=y)
    assert folder.name.startswith("stacking-")
    weights = read_json(folder / "weights.json")
    assert weights["weights"] is None and weights["method"] == "stacking"
    cv = read_json(folder / "cv.json")
    assert cv["in_sample"]["score"] > 0.8


def test_multiclass_accuracy_blend_gets_postprocessing(tmp_path) -> None:
    runs, y = make_competition(tmp_path, "multiclass", "accuracy", [1.5, 1.0, 0.0])
    folder = blend.run(
        runs,
        name="mc",
        blends_dir=tmp_path / "blends",
        n_trials=20,
        targets=y,
        params={"per_class": True},
    )
    pp = load_postprocess(folder)
    assert pp is not None and len(pp.class_weights) == 3
    cv = read_json(folder / "cv.json")
    assert cv["postprocess"]["in_sample"] >= cv["postprocess"]["default_score"]
    assert cv["postprocess"]["default_score"] == pytest.approx(cv["in_sample"]["score"])
    assert "nested" in cv["postprocess"]
    pred = load_predictions(folder)
    np.testing.assert_allclose(pred.test_matrix.sum(axis=1), 1.0)
    assert len(read_json(folder / "weights.json")["per_class"]["m0"]) == 3


def _rewrite(folder: Path, part: str, change) -> None:
    frame = pd.read_parquet(folder / f"{part}.parquet")
    write_parquet(folder / f"{part}.parquet", change(frame))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: _rewrite(f, "oof", lambda d: d.iloc[::-1].reset_index(drop=True)), "oof ids"),
        (lambda f: _rewrite(f, "test", lambda d: d.iloc[1:]), "test ids"),
        (lambda f: _rewrite(f, "oof", lambda d: d.assign(fold=(d["fold"] + 1) % 4)), "oof folds"),
        (lambda f: _rewrite(f, "oof", lambda d: d.assign(label=np.nan)), "NaN"),
        (lambda f: _rewrite(f, "test", lambda d: d.drop(columns="label")), "missing column"),
        (
            lambda f: write_meta(f, dataclasses.replace(read_meta(f), classes=["n", "y"])),
            "classes",
        ),
        (lambda f: write_meta(f, dataclasses.replace(read_meta(f), metric="f1")), "metric"),
    ],
)
def test_members_that_differ_are_refused(tmp_path, binary_runs, change, message) -> None:
    runs, y = binary_runs
    change(runs[2])
    with pytest.raises(ValueError, match=message) as err:
        blend.run(runs, method="mean", blends_dir=tmp_path / "blends", targets=y)
    assert str(runs[2]) in str(err.value)


def test_needs_two_distinct_runs(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    with pytest.raises(ValueError, match="at least 2 runs"):
        blend.run(runs[:1], blends_dir=tmp_path, targets=y)
    with pytest.raises(ValueError, match="more than once"):
        blend.run([runs[0], runs[0]], blends_dir=tmp_path, targets=y)
    with pytest.raises(KeyError, match="hill_climb"):
        blend.run(runs, method="hillclimb", blends_dir=tmp_path, targets=y)
    with pytest.raises(ValueError, match="unknown parameter"):
        blend.run(runs, method="rank", blends_dir=tmp_path, targets=y, params={"power": 3})

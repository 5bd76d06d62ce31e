"""Rows of several targets with some of them empty ('competition.missing_targets: mask'):
kept, each target learning (masked loss, its own trees) and scored on the rows that have it;
what cannot leave a row's empty targets out is refused in one line."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from pipeline import pseudo, train
from pipeline.artifacts import read_json, read_meta
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data.splits import FoldsConfig, make_folds
from pipeline.engine.losses import build_loss
from pipeline.errors import ConfigError
from pipeline.jobs import gbdt as job
from pipeline.metrics import METRICS, get_metric
from pipeline.run_targets import targets_for_meta
from pipeline.runs import load_folds
from tests.test_competition import expect_failure, run_cli
from tests.test_unlabelled_rows import _blank, _cli

GAPS_A, GAPS_B = [0, 3, 7, 12, 20, 31], [3, 5, 9, 14, 22, 40, 41]  # row 3 lacks both


def _masked(cfg: dict[str, Any]) -> dict[str, Any]:
    """The factory's two-target competition with gaps in both columns, under 'mask'."""
    a, b = cfg["competition"]["target_columns"]
    _blank(cfg, [a], GAPS_A)
    _blank(cfg, [b], GAPS_B)
    cfg["competition"].update(missing_targets="mask", unlabelled_train_rows="drop")
    return cfg


def _gappy(rng: np.random.Generator, y: np.ndarray, share: float = 0.3) -> np.ndarray:
    y = y.astype(np.float64).copy()
    y[rng.random(y.shape) < share] = np.nan
    return y


# --- the loss ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,task,params", [
    ("bce", "multilabel", {}), ("bce", "multilabel", {"smoothing": 0.1}),
    ("focal", "multilabel", {"gamma": 2.0}), ("mse", "regression", {}),
    ("l1", "regression", {}), ("huber", "regression", {"delta": 0.5}),
])
def test_masked_loss_is_the_loss_over_present_cells(name: str, task: str,
                                                    params: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    outputs = torch.tensor(rng.normal(size=(16, 3)), dtype=torch.float32, requires_grad=True)
    values = rng.integers(0, 2, (16, 3)) if task == "multilabel" else rng.normal(size=(16, 3))
    target = torch.tensor(_gappy(rng, values), dtype=torch.float32)
    present = ~torch.isnan(target)
    masked = build_loss(name, task, params, masked=True)(outputs, {"target": target})
    # the same loss of the present cells alone, as one column: the mean over those cells
    plain = build_loss(name, task, params)
    alone = plain(outputs[present][:, None], {"target": target[present][:, None]})
    assert masked.item() == pytest.approx(alone.item(), rel=1e-6)
    masked.backward()
    assert torch.isfinite(outputs.grad).all()  # no NaN through the empty cells
    assert (outputs.grad[~present] == 0).all()

    # row weights (pseudo-labelled rows): a weighted mean over the present cells
    weight = torch.tensor(rng.uniform(0.2, 1.0, 16), dtype=torch.float32)
    got = build_loss(name, task, params, masked=True)(outputs, {"target": target,
                                                                "weight": weight})
    cells = weight[:, None].expand_as(target)[present]
    one = plain(outputs[present][:, None], {"target": target[present][:, None],
                                            "weight": cells})
    assert got.item() == pytest.approx(one.item(), rel=1e-6)


def test_masked_loss_without_gaps_and_a_sum_of_terms() -> None:
    rng = np.random.default_rng(1)
    outputs = torch.tensor(rng.normal(size=(8, 2)), dtype=torch.float32)
    full = torch.tensor(rng.integers(0, 2, (8, 2)), dtype=torch.float32)
    assert build_loss("bce", "multilabel", masked=True)(outputs, {"target": full}).item() == \
        pytest.approx(F.binary_cross_entropy_with_logits(outputs, full).item(), rel=1e-6)
    gappy = full.clone()
    gappy[0, 1] = gappy[4, 0] = float("nan")
    keep = ~torch.isnan(gappy)
    terms = [("bce", 1.0, {}), ("focal", 0.5, {"gamma": 1.0})]
    got = build_loss("sum", "multilabel", terms=terms, masked=True)(outputs, {"target": gappy})
    bce = F.binary_cross_entropy_with_logits(outputs[keep], gappy[keep])
    focal = build_loss("focal", "multilabel", {"gamma": 1.0})(
        outputs[keep][:, None], {"target": gappy[keep][:, None]})
    assert got.item() == pytest.approx((bce + 0.5 * focal).item(), rel=1e-6)


# --- the metrics ------------------------------------------------------------------------

def test_metrics_score_each_target_or_cell_over_the_present_cells() -> None:
    rng = np.random.default_rng(2)
    y = _gappy(rng, rng.integers(0, 2, (60, 3)))
    p = rng.uniform(0.01, 0.99, (60, 3))
    have = ~np.isnan(y)
    cols = [(y[have[:, j], j], p[have[:, j], j]) for j in range(3)]
    assert get_metric("roc_auc")(y, p) == pytest.approx(
        np.mean([roc_auc_score(t, s) for t, s in cols]))
    assert get_metric("f1_macro")(y, p) == pytest.approx(
        np.mean([f1_score(t, s >= 0.5) for t, s in cols]))
    assert get_metric("f1_micro")(y, p) == pytest.approx(f1_score(y[have], p[have] >= 0.5))
    assert get_metric("log_loss")(y, p) == pytest.approx(log_loss(y[have], p[have]))

    r = _gappy(rng, rng.normal(size=(40, 2)))
    q = rng.normal(size=(40, 2))
    held = ~np.isnan(r)
    assert get_metric("rmse")(r, q) == pytest.approx(np.sqrt(np.mean((r[held] - q[held]) ** 2)))
    assert get_metric("mcrmse")(r, q) == pytest.approx(np.mean(
        [np.sqrt(np.mean((r[held[:, j], j] - q[held[:, j], j]) ** 2)) for j in range(2)]))
    # a label of one class on its rows has no AUC: left out of the mean, as without gaps
    y[have[:, 0], 0] = 1.0
    assert get_metric("roc_auc")(y, p) == pytest.approx(
        np.mean([roc_auc_score(t, s) for t, s in cols[1:]]))


def test_masked_metrics_without_gaps_score_as_before() -> None:
    """Every metric that masks scores complete targets exactly as its own function does."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (50, 3)).astype(np.float64)
    p = rng.uniform(0.01, 0.99, (50, 3))
    r, q = rng.uniform(0.5, 3, (50, 2)), rng.uniform(0.5, 3, (50, 2))
    for name in METRICS:
        metric = METRICS.get(name)
        if metric.masked is None:
            continue
        for task, (t, s) in (("multilabel", (y, p)), ("regression", (r, q))):
            if task in metric.tasks:
                assert metric(t, s) == metric.fn(t, s), name
                # and a gap-free column scored through the mask path equals it too
                gappy = np.vstack([t, np.full((1, t.shape[1]), np.nan)])
                both = np.vstack([s, s[:1]])
                if metric.masked == "cells" or name in ("r2", "pearson", "spearman",
                                                        "mcrmse", "roc_auc",
                                                        "average_precision"):
                    assert metric(gappy, both) == pytest.approx(metric.fn(t, s)), name


# --- loading, folds, an end-to-end run --------------------------------------------------

def test_rows_with_some_targets_are_kept_and_their_cells_empty(competition_factory,
                                                               caplog) -> None:
    cfg = _masked(competition_factory("tabular", "multilabel"))
    with caplog.at_level(logging.INFO):
        comp = load_competition(build_config(cfg).competition)
    # 48 rows; row 3 lacks both labels (dropped), 11 more lack one of them (kept)
    assert len(comp.train) == 47
    assert "11 row(s) with some of their targets empty kept" in caplog.text
    assert "'a': 42, 'b': 41" in caplog.text
    assert int(np.isnan(comp.targets).sum()) == 5 + 6
    folds = make_folds(comp, FoldsConfig(scheme="multilabel", n_splits=3, seed=0))
    assert sorted(np.unique(folds)) == [0, 1, 2] and (folds >= 0).all()


def test_regression_stratified_folds_give_an_empty_first_target_its_stratum(
        competition_factory) -> None:
    cfg = competition_factory("tabular", "regression")
    path = Path(cfg["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    frame["z"] = frame["y"] * 2
    frame.to_csv(path, index=False)
    test = Path(cfg["competition"]["dir"])
    for name in ("sample_submission.csv",):
        sample = pd.read_csv(test / name)
        sample["z"] = 0
        sample.to_csv(test / name, index=False)
    cfg["competition"].update(target_columns=["y", "z"])
    _blank(cfg, ["y"], GAPS_A)
    cfg["competition"]["missing_targets"] = "mask"
    comp = load_competition(build_config(cfg).competition)
    assert len(comp.train) == 48
    folds = make_folds(comp, FoldsConfig(scheme="stratified", n_splits=2, seed=0))
    assert sorted(np.bincount(folds)) == [24, 24]


def test_network_run_keeps_the_rows_and_scores_each_label_on_its_rows(
        competition_factory, tmp_path: Path, capsys, one_thread) -> None:
    cfg = _masked(competition_factory("tabular", "multilabel"))
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    oof = pd.read_parquet(run_dir / "oof.parquet")
    train = pd.read_csv(Path(cfg["competition"]["dir"]) / "train.csv")
    assert len(oof) == 47 and set(oof["id"]) == set(train["id"]) - {train["id"][3]}
    truth = train.set_index("id").loc[oof["id"], ["a", "b"]].to_numpy()
    pred = oof[["a", "b"]].to_numpy()
    hand = np.mean([roc_auc_score(truth[~np.isnan(truth[:, j]), j],
                                  pred[~np.isnan(truth[:, j]), j]) for j in range(2)])
    assert read_json(run_dir / "scores.json")["scores"]["oof"] == pytest.approx(hand)
    meta = read_meta(run_dir)
    assert meta.missing_targets == "mask"
    y = targets_for_meta(meta)  # what blends and reports read back: the same gaps
    np.testing.assert_array_equal(np.isnan(y), np.isnan(truth))


def test_gbdt_fits_each_target_on_its_rows(competition_factory, tmp_path: Path,
                                           capsys) -> None:
    cfg = _masked(competition_factory("tabular", "multilabel"))
    cfg["model"] = {"encoders": [{"name": "lightgbm", "params": {
        "n_estimators": 10, "min_child_samples": 2, "num_threads": 1}}]}
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    oof = pd.read_parquet(run_dir / "oof.parquet")
    train = pd.read_csv(Path(cfg["competition"]["dir"]) / "train.csv").set_index("id")
    truth = train.loc[oof["id"], ["a", "b"]].to_numpy()
    hand = np.mean([roc_auc_score(truth[~np.isnan(truth[:, j]), j],
                                  oof[c].to_numpy()[~np.isnan(truth[:, j])])
                    for j, c in enumerate(["a", "b"])])
    assert read_json(run_dir / "scores.json")["scores"]["oof"] == pytest.approx(hand)
    assert np.isfinite(oof[["a", "b"]].to_numpy()).all()


def test_gbdt_with_gaps_fits_pseudo_rows_beside_the_rows_that_have_the_target(
        competition_factory, monkeypatch) -> None:
    data = _masked(competition_factory("tabular", "multilabel"))
    data["model"] = {"encoders": [{"name": "lightgbm", "params": {
        "n_estimators": 10, "min_child_samples": 2, "num_threads": 1}}]}
    source = build_config(data)
    train.run(source)
    cfg = build_config({**data, "name": "with-pseudo", "pseudo": {"source": str(source.run_dir)}})
    fitted: list[tuple[int, int, int, bool]] = []
    fit = job.fit_estimator

    def spy(model, settings, x, y, weight, x_valid, y_valid):
        fitted.append((len(x), len(y), len(weight), bool(np.isnan(y).any())))
        return fit(model, settings, x, y, weight, x_valid, y_valid)

    monkeypatch.setattr(job, "fit_estimator", spy)
    train.run(cfg)  # was: "fit failed", the target's NaN rows fitted beside the pseudo rows
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    expected = []
    for fold in range(2):
        n_pseudo = len(pd.read_parquet(pseudo.pseudo_path(cfg, fold)))
        have = (~np.isnan(comp.targets[folds != fold])).sum(axis=0)
        expected += [(int(n) + n_pseudo,) * 3 + (False,) for n in have]
    assert fitted == expected


# --- the default, and what is refused ---------------------------------------------------

def test_default_still_refuses_and_names_the_option(competition_factory, tmp_path: Path,
                                                    capsys) -> None:
    cfg = _masked(competition_factory("tabular", "multilabel"))
    del cfg["competition"]["missing_targets"], cfg["competition"]["unlabelled_train_rows"]
    expect_failure(cfg, tmp_path, capsys, "12 of 48 row(s) have an empty target",
                   "'competition.missing_targets: mask'")
    cfg["competition"]["unlabelled_train_rows"] = "drop"  # as before: left out whole
    comp = load_competition(build_config(cfg).competition)
    assert len(comp.train) == 36 and not np.isnan(comp.targets).any()


@pytest.mark.parametrize("edit,needles", [
    ({"competition.metric": "f1_samples"}, ["'metric' 'f1_samples' scores whole rows",
                                             "roc_auc"]),
    ({"competition.target_columns": ["a"]}, ["several target columns"]),
    ({"model": {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}},
     ["fits every target at once"]),
    ({"train.loss": {"name": "focal", "params": {"softmax": True}}},
     ["'train.loss' focal with 'softmax: true' scores whole rows"]),
    ({"model": {"encoders": [{"name": "lightgbm"}], "tabular": {"encodings": ["target"]}}},
     ["'model.tabular.encodings' 'target'"]),
])
def test_what_cannot_mask_is_refused_in_one_line(competition_factory, tmp_path: Path, capsys,
                                                 edit: dict[str, Any],
                                                 needles: list[str]) -> None:
    cfg = _masked(competition_factory("tabular", "multilabel"))
    for key, value in edit.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    with pytest.raises(ConfigError):
        build_config(cfg)
    err = expect_failure(cfg, tmp_path, capsys, *needles)
    # the config's errors: a header naming the file, then the problem on one line
    assert any(all(n in line for n in needles) for line in err.splitlines()), err


def test_a_stacking_blend_is_refused(competition_factory, tmp_path: Path, capsys) -> None:
    cfg = _masked(competition_factory("tabular", "multilabel"))
    cfg["model"] = {"encoders": [{"name": "lightgbm", "params": {"n_estimators": 5,
                                                                  "num_threads": 1}}]}
    cfg["folds"]["n_splits"] = 3
    assert run_cli(cfg, tmp_path, capsys)[0] == 0
    second = {**cfg, "name": "second", "model": {"encoders": [{"name": "mlp", "params": {
        "hidden": [8]}}]}}
    assert run_cli(second, tmp_path, capsys)[0] == 0
    runs = [str(Path(cfg["output_dir"]) / name) for name in (cfg["name"], "second")]
    capsys.readouterr()
    blends = tmp_path / "blends"
    assert _cli(["blend", "--runs", *runs, "--method", "stacking",
                 "--blends-dir", str(blends)]) == 2
    err = capsys.readouterr().err
    assert "'stacking' fits a model on every target" in err and "Traceback" not in err
    assert not blends.exists() or not any(blends.iterdir())
    # a weight blend tunes on the present cells: its OOF score is theirs
    assert _cli(["blend", "--runs", *runs, "--method", "hill_climb",
                 "--blends-dir", str(blends)]) == 0
    folder = next(blends.iterdir())
    oof = pd.read_parquet(folder / "oof.parquet")
    y = targets_for_meta(read_meta(folder))
    hand = np.mean([roc_auc_score(y[~np.isnan(y[:, j]), j],
                                  oof[c].to_numpy()[~np.isnan(y[:, j])])
                    for j, c in enumerate(["a", "b"])])
    assert math.isfinite(hand)
    assert read_json(folder / "cv.json")["oof"]["score"] == pytest.approx(hand)


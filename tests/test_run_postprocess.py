"""A single run's post-processing (pipeline/run_postprocess.py): thresholds / class weights
tuned on the run's own OOF when it is gathered, kept by the blend's nested-CV rule, and
applied by ``submit`` to a run submitted alone."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from pipeline import run_postprocess, submit, train
from pipeline.artifacts import read_json, write_json
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.ensemble import fit_postprocess, load_postprocess
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric
from pipeline.prediction_state import prediction_hash
from pipeline.runs import gather, load_folds
from tests.ensemble.test_postprocess import _ordinal


def _rare_positives(root: Path, metric: str = "f1", n_train: int = 600) -> dict[str, Any]:
    """A binary competition whose positive class ('yes') is ~9% of the rows, learnt by a
    logistic regression: its probabilities rarely reach 0.5, so 0.5 under-predicts 'yes'."""
    rng = np.random.default_rng(0)
    n = n_train + 200
    x = rng.normal(size=(n, 3))
    positive = rng.random(n) < 1 / (1 + np.exp(-(1.2 * x[:, 0] + 0.8 * x[:, 1] - 2.8)))
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2"])
    frame.insert(0, "id", np.arange(n))
    frame["target"] = np.where(positive, "yes", "no")
    comp = root / "comp"
    comp.mkdir()
    frame.iloc[:n_train].to_csv(comp / "train.csv", index=False)
    test = frame.iloc[n_train:]
    test.drop(columns="target").to_csv(comp / "test.csv", index=False)
    test[["id"]].assign(target="no").to_csv(comp / "sample_submission.csv", index=False)
    return {
        "name": "lr", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "subs"),
        "competition": {"dir": str(comp), "id_column": "id", "task": "binary",
                        "modality": "tabular", "target_columns": ["target"], "metric": metric},
        "folds": {"n_splits": 3, "seed": 0},
        "model": {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression",
                                "params": {"max_iter": 500}}]},
    }


def _with(data: dict[str, Any], mode: Any) -> Any:
    out = copy.deepcopy(data)
    out["predict"] = {"postprocess": mode}
    return build_config(out)


def _submitted(cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The submission's labels (1 = 'yes') and the run's test probabilities, in test order."""
    path = submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir)
    labels = (pd.read_csv(path)["target"] == "yes").to_numpy().astype(int)
    p = pd.read_parquet(cfg.run_dir / "test.parquet")["target"].to_numpy()
    return labels, p


def test_a_single_runs_submission_follows_the_threshold_tuned_on_its_oof(tmp_path) -> None:
    data = _rare_positives(tmp_path)
    cfg = build_config(data)
    train.run(cfg)
    comp = load_competition(cfg.competition)
    y = comp.targets
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")[["target"]].to_numpy()
    rule = load_postprocess(cfg.run_dir)
    assert rule is not None and rule.metric == "f1"
    (t,) = rule.thresholds
    assert t < 0.4  # a rare class: the best F1 threshold is well under 0.5
    assert rule == fit_postprocess("binary", get_metric("f1", comp.classes), y, oof)
    at_half, tuned = f1_score(y[:, 0], oof[:, 0] >= 0.5), f1_score(y[:, 0], oof[:, 0] >= t)
    assert tuned > at_half + 0.05  # several points of F1 that 0.5 threw away
    report = read_json(cfg.run_dir / "scores.json")["postprocess"]
    assert report["default_score"] == pytest.approx(at_half)
    assert report["in_sample"] == pytest.approx(tuned)
    assert report["applied"] and report["mode"] == "auto"
    assert report["nested"]["mean"] > report["nested_without"]  # why auto kept it
    assert report["tuned"] == {"thresholds": [t]}
    labels, p = _submitted(cfg)
    np.testing.assert_array_equal(labels, (p >= t).astype(int))
    assert labels.sum() > (p >= 0.5).sum()  # more 'yes' than 0.5 gives

    # off: 0.5, nothing retrained or predicted again (the option is not in the hashes)
    off = _with(data, False)  # YAML reads a bare `off` as false
    assert off.predict.postprocess == "off"
    assert (off.train_hash(), prediction_hash(off)) == (cfg.train_hash(), prediction_hash(cfg))
    train.run(off)
    assert not (cfg.run_dir / "postprocess.json").exists()
    assert read_json(cfg.run_dir / "scores.json")["postprocess"]["decision"] == "forced off"
    labels, p = _submitted(off)
    np.testing.assert_array_equal(labels, (p >= 0.5).astype(int))


def test_every_gather_tunes_again_from_the_current_oof(tmp_path) -> None:
    cfg = build_config(_rare_positives(tmp_path))
    train.run(cfg)
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    first = load_postprocess(cfg.run_dir)
    # the folds' predictions change (a retrained or re-predicted fold): the rule follows
    path = cfg.run_dir / "seed0" / "fold0" / "oof.parquet"
    part = pd.read_parquet(path)
    part["target"] = np.clip(part["target"] * 1.6, 0, 1)
    part.to_parquet(path, index=False)
    gather(cfg, comp, folds)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")[["target"]].to_numpy()
    second = load_postprocess(cfg.run_dir)
    assert second is not None and second != first
    expected = fit_postprocess("binary", get_metric("f1", comp.classes), comp.targets, oof)
    assert second.thresholds == expected.thresholds


def test_a_probability_metric_writes_no_postprocessing(tmp_path) -> None:
    cfg = build_config(_rare_positives(tmp_path, metric="roc_auc"))
    cfg.run_dir.mkdir(parents=True)
    # a rule left by an older gather is removed, not applied to this run's submission
    write_json(cfg.run_dir / "postprocess.json", {"task": "binary", "metric": "f1",
                                                  "thresholds": [0.01]})
    train.run(cfg)
    assert not (cfg.run_dir / "postprocess.json").exists()
    assert "postprocess" not in read_json(cfg.run_dir / "scores.json")
    path = submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir)
    p = pd.read_parquet(cfg.run_dir / "test.parquet")["target"].to_numpy()
    np.testing.assert_allclose(pd.read_csv(path)["target"], p)  # probabilities, as before


def test_a_multiclass_run_gets_class_weights(competition_factory) -> None:
    data = competition_factory("tabular", "multiclass", n_train=120)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression",
                                   "params": {"max_iter": 200, "C": 0.05}}]}
    data["folds"]["n_splits"] = 3
    data["predict"] = {"postprocess": "on"}  # forced: the decision itself is tested above
    cfg = build_config(data)
    train.run(cfg)
    comp = load_competition(cfg.competition)
    rule = load_postprocess(cfg.run_dir)
    assert rule is not None and rule.thresholds == () and len(rule.class_weights) == 3
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")[comp.pred_columns].to_numpy()
    assert rule == fit_postprocess("multiclass", get_metric("accuracy", comp.classes),
                                   comp.targets, oof)
    assert read_json(cfg.run_dir / "scores.json")["postprocess"]["decision"] == "forced on"
    path = submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir)
    p = pd.read_parquet(cfg.run_dir / "test.parquet")[comp.pred_columns].to_numpy()
    expected = np.asarray(comp.classes)[(p * np.asarray(rule.class_weights)).argmax(axis=1)]
    np.testing.assert_array_equal(pd.read_csv(path)["target"], expected)


def test_tuning_estimated_to_take_too_long_is_left_out_unless_forced(
        competition_factory, monkeypatch, caplog) -> None:
    data = competition_factory("tabular", "multiclass", n_train=60)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression",
                                   "params": {"max_iter": 200}}]}
    monkeypatch.setattr(run_postprocess, "TUNING_BUDGET_S", 0)  # any estimate is over it
    cfg = build_config(data)
    rule = cfg.run_dir / "postprocess.json"
    cfg.run_dir.mkdir(parents=True)
    write_json(rule, {"task": "multiclass", "metric": "accuracy", "class_weights": [9, 1, 1]})
    with caplog.at_level("WARNING"):
        train.run(cfg)
    assert "post-processing not tuned" in caplog.text and "predict.postprocess: on" in caplog.text
    assert not rule.exists()  # an older rule is not left to label this OOF's submission
    assert "postprocess" not in read_json(cfg.run_dir / "scores.json")
    data["predict"] = {"postprocess": "on"}
    train.run(build_config(data))
    assert load_postprocess(cfg.run_dir) is not None


def test_an_unknown_mode_is_refused_at_load(tmp_path) -> None:
    data = _rare_positives(tmp_path)
    with pytest.raises(ConfigError, match=r"'predict.postprocess': Input should be 'auto', "
                                          r"'on' or 'off'. Got 'maybe'"):
        _with(data, "maybe")
    assert _with(data, True).predict.postprocess == "on"


def test_a_qwk_run_records_its_cut_points(tmp_path: Path) -> None:
    """A QWK rule of cut points (no thresholds, no class weights) was logged and recorded as
    empty class weights."""
    y, p = _ordinal()
    data = _rare_positives(tmp_path)
    data["competition"].update(task="multiclass", metric="qwk")
    cfg = _with(data, "on")
    rule, report = run_postprocess.tune_run_postprocess(cfg, get_metric("qwk"), y, p,
                                                        np.arange(len(y)) % 5)
    assert rule is not None and rule.cut_points and report is not None
    assert report["tuned"] == {"cut_points": list(rule.cut_points)}

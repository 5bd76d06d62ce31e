"""The train stage (pipeline/train.py) end to end on tiny data: every modality and task through
folds, train (with its predictions) and submit; reruns, seeds and a model that learns."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import submit, train
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric

CASES = [(m, t) for m in ("tabular", "image", "text")
         for t in ("binary", "multiclass", "multilabel", "regression")]


def _check_artifacts(cfg: Any, score: float) -> None:
    comp = load_competition(cfg.competition)
    cols = comp.pred_columns
    run_dir = cfg.run_dir
    oof = pd.read_parquet(run_dir / "oof.parquet")
    test = pd.read_parquet(run_dir / "test.parquet")
    test_folds = pd.read_parquet(run_dir / "test_folds.parquet")
    assert oof["id"].tolist() == comp.train["id"].tolist()
    assert test["id"].tolist() == comp.test["id"].tolist()
    assert list(oof.columns) == ["id", "fold", *cols]
    assert len(test_folds) == len(comp.test) * cfg.folds.n_splits * len(cfg.train.seeds)
    p = oof[cols].to_numpy()
    assert np.isfinite(p).all()
    if cfg.competition.task != "regression":
        assert ((p >= 0) & (p <= 1)).all()
    if cfg.competition.task == "multiclass":
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    # the run's score is the metric of its OOF, and test.parquet is the mean of the folds
    assert score == pytest.approx(get_metric(cfg.competition.metric)(comp.targets, p))
    mean = test_folds.groupby("id")[cols].mean().loc[test["id"]].to_numpy()
    np.testing.assert_allclose(test[cols].to_numpy(), mean)
    path = submit.run(run_dir, cfg.name, cfg.submissions_dir)
    written = pd.read_csv(path)
    sample = comp.sample_submission
    assert list(written.columns) == list(sample.columns)
    assert written["id"].tolist() == sample["id"].tolist()


@pytest.mark.parametrize(("modality", "task"), CASES)
def test_every_modality_and_task_runs_end_to_end(competition_factory, modality, task):
    cfg = build_config(competition_factory(modality, task))
    score = train.run(cfg)
    _check_artifacts(cfg, score)
    metrics = (cfg.run_dir / "seed0" / "fold0" / "metrics.json").read_text()
    assert '"best_epoch"' in metrics


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression"])
def test_sklearn_model_runs_end_to_end(competition_factory, task):
    data = competition_factory("tabular", task, n_train=80)
    est = "Regressor" if task == "regression" else "Classifier"
    data["model"] = {"encoders": [{
        "name": f"sklearn:sklearn.ensemble.HistGradientBoosting{est}",
        "params": {"max_iter": 30, "min_samples_leaf": 5},
    }]}
    cfg = build_config(data)
    score = train.run(cfg)
    _check_artifacts(cfg, score)
    assert (cfg.run_dir / "seed0" / "fold1" / "model.joblib").is_file()


def test_models_learn_the_signal(competition_factory):
    data = competition_factory("tabular", "binary", n_train=200)
    data["train"]["epochs"] = 8
    assert train.run(build_config(data)) > 0.9
    data = competition_factory("tabular", "binary", n_train=200)
    data["name"] = "gbdt"
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    assert train.run(build_config(data)) > 0.9


def test_rerun_skips_complete_folds_and_refuses_another_config(competition_factory):
    data = competition_factory("tabular", "multiclass")
    cfg = build_config(data)
    first = train.run(cfg)
    best = cfg.run_dir / "seed0" / "fold0" / "best.pt"
    stamp = best.stat().st_mtime_ns
    assert train.run(cfg) == first
    assert best.stat().st_mtime_ns == stamp
    data["train"]["optimizer"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="another config"):
        train.run(build_config(data))


def test_seeds_average_into_the_oof(competition_factory):
    data = competition_factory("tabular", "regression")
    data["train"]["seeds"] = [0, 1]
    cfg = build_config(data)
    train.run(cfg)
    comp = load_competition(cfg.competition)
    per_seed = []
    for seed in (0, 1):
        parts = [pd.read_parquet(cfg.run_dir / f"seed{seed}" / f"fold{k}" / "oof.parquet")
                 for k in range(2)]
        per_seed.append(pd.concat(parts).set_index("id").loc[comp.train["id"], "y"].to_numpy())
    assert not np.allclose(per_seed[0], per_seed[1])
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")["y"].to_numpy()
    np.testing.assert_allclose(oof, (per_seed[0] + per_seed[1]) / 2)


# --- issue 12 item 14: the last epoch's OOF beside the best epoch's -------------------------



def _last_epoch_run(competition_factory, **train_overrides: Any) -> tuple[Any, Any]:
    data = competition_factory("tabular", "multiclass")
    # float32 everywhere: the OOF of best.pt is compared with the outputs of training
    data["train"].update({"epochs": 3, "mixed_precision": "no", **train_overrides})
    cfg = build_config(data)
    train.run(cfg)
    return cfg, load_competition(cfg.competition)


def _fold_files(cfg: Any, fold: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    out = cfg.run_dir / "seed0" / f"fold{fold}"
    return (pd.read_parquet(out / "oof.parquet"), pd.read_parquet(out / "oof_last_epoch.parquet"),
            json.loads((out / "metrics.json").read_text()))


@pytest.mark.usefixtures("one_thread")
def test_a_network_run_scores_its_last_epochs_beside_the_best(competition_factory):
    """issue 12 item 14: each fold of a network run writes its last epoch's held-out
    predictions (oof_last_epoch.parquet) and score; scores.json scores them all together;
    with the default checkpoint 'best', best.pt is the best epoch's."""
    import torch

    cfg, comp = _last_epoch_run(competition_factory)
    metric = get_metric("accuracy")
    cols = comp.pred_columns
    folds = pd.read_parquet(cfg.run_dir / "oof.parquet")["fold"].to_numpy()
    last = np.zeros((len(comp.train), len(cols)))
    for fold in (0, 1):
        rows = np.flatnonzero(folds == fold)
        oof, last_frame, metrics = _fold_files(cfg, fold)
        assert last_frame["id"].tolist() == comp.train["id"].iloc[rows].tolist()
        assert list(last_frame.columns) == ["id", *cols]
        last[rows] = last_frame[cols].to_numpy()
        np.testing.assert_allclose(last[rows].sum(axis=1), 1.0, atol=1e-5)
        assert metrics["checkpoint"] == "best"
        assert metrics["last_epoch_score"] == pytest.approx(
            metric(comp.targets[rows], last[rows]))
        assert metrics["last_epoch_score"] == pytest.approx(metrics["epochs"][-1]["score"])
        best = torch.load(cfg.run_dir / "seed0" / f"fold{fold}" / "best.pt",
                          map_location="cpu", weights_only=False)
        assert best["epoch"] == metrics["best_epoch"]
        if metrics["best_epoch"] == 3:  # the best epoch was the last: one set of weights
            np.testing.assert_allclose(oof[cols].to_numpy(), last[rows], atol=1e-6)
    scores = json.loads((cfg.run_dir / "scores.json").read_text())["scores"]
    assert scores["oof_last_epoch"] == pytest.approx(metric(comp.targets, last))


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_last_predicts_with_the_last_epoch(competition_factory):
    """issue 12 item 14: with train.checkpoint 'last' best.pt holds the last epoch's
    weights, so the OOF (no TTA) equals the last-epoch OOF and the two scores agree."""
    import torch

    cfg, comp = _last_epoch_run(competition_factory, checkpoint="last")
    cols = comp.pred_columns
    for fold in (0, 1):
        oof, last, metrics = _fold_files(cfg, fold)
        assert oof["id"].tolist() == last["id"].tolist()
        np.testing.assert_allclose(oof[cols].to_numpy(), last[cols].to_numpy(), atol=1e-6)
        assert metrics["checkpoint"] == "last"
        best = torch.load(cfg.run_dir / "seed0" / f"fold{fold}" / "best.pt",
                          map_location="cpu", weights_only=False)
        assert best["epoch"] == 3 == len(metrics["epochs"])
    scores = json.loads((cfg.run_dir / "scores.json").read_text())["scores"]
    assert scores["oof_last_epoch"] == pytest.approx(scores["oof"])


def test_a_sklearn_run_has_no_last_epoch_oof(competition_factory):
    """issue 12 item 14: a scikit-learn model has no epochs: no oof_last_epoch file or score."""
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    cfg = build_config(data)
    train.run(cfg)
    assert not list(cfg.run_dir.rglob("oof_last_epoch.parquet"))
    scores = json.loads((cfg.run_dir / "scores.json").read_text())["scores"]
    assert "oof" in scores and "oof_last_epoch" not in scores


def test_two_processes_share_the_folds_instead_of_both_training_all(competition_factory):
    """Issue 15 item 4: a second `pipeline train` on the same config did all the work again.
    Each (seed, fold) is now a locked job: while another process holds fold 0, this one trains
    fold 1, names the holder of fold 0 and does not gather; once the holder is gone, a rerun
    trains what is left and gathers."""
    import subprocess
    import sys
    import time

    from pipeline.fold_lock import FoldBusy
    from pipeline.runs import fold_complete, fold_dir

    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=1)
    cfg = build_config(data)
    folder = fold_dir(cfg, 0, 0)
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, filelock, os\n"
        f"lock = filelock.FileLock({str(folder / '.lock')!r}, timeout=0); lock.acquire()\n"
        f"open({str(folder / '.lock.owner')!r}, 'w').write(f'pid {{os.getpid()}} on host h')\n"
        "print('held', flush=True); sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FoldBusy, match=rf"pid {holder.pid}|another process") as info:
            train.run(cfg)
        assert "(0, 0)" in str(info.value)
        assert fold_complete(cfg, 0, 1) and not fold_complete(cfg, 0, 0)
        assert not (cfg.run_dir / "oof.parquet").exists()  # nothing gathered from half a run
    finally:
        holder.communicate("")  # closing stdin ends the holder, which releases its lock
    time.sleep(0.1)
    assert np.isfinite(train.run(cfg))
    assert fold_complete(cfg, 0, 0) and (cfg.run_dir / "oof.parquet").is_file()


def test_a_damaged_fold_is_found_and_made_again(competition_factory):
    """Issue 15 item 3: a truncated checkpoint or prediction file broke every later stage,
    and rerunning train did not heal it. Checksums in metrics.json / predictions.json find
    it: a damaged prediction file is predicted again (no retraining), a damaged checkpoint
    retrains its fold, and the run ends with the same OOF as before."""
    from pipeline.runs import fold_dir

    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=2)
    cfg = build_config(data)
    train.run(cfg)
    before = pd.read_parquet(cfg.run_dir / "oof.parquet")
    folder = fold_dir(cfg, 0, 1)
    best_mtime = (folder / "best.pt").stat().st_mtime_ns
    oof = folder / "oof.parquet"
    oof.write_bytes(oof.read_bytes()[:50])
    train.run(cfg)  # re-predicted from the intact checkpoint
    assert (folder / "best.pt").stat().st_mtime_ns == best_mtime
    pd.testing.assert_frame_equal(pd.read_parquet(cfg.run_dir / "oof.parquet"), before)
    best = folder / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    train.run(cfg)  # retrained: the same seed gives the same weights
    assert (folder / "best.pt").stat().st_mtime_ns != best_mtime
    pd.testing.assert_frame_equal(pd.read_parquet(cfg.run_dir / "oof.parquet"), before)


def test_a_damaged_scikit_learn_fold_is_fitted_again(competition_factory):
    from pipeline.runs import fold_dir

    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    cfg = build_config(data)
    train.run(cfg)
    before = pd.read_parquet(cfg.run_dir / "oof.parquet")
    test = fold_dir(cfg, 0, 0) / "test.parquet"
    test.write_bytes(b"PAR1")
    train.run(cfg)
    pd.testing.assert_frame_equal(pd.read_parquet(cfg.run_dir / "oof.parquet"), before)
    assert pd.read_parquet(test).shape[0] > 0


def test_compile_compiles_the_model_in_place_for_training_and_prediction(
        competition_factory, monkeypatch):
    """``train.compile``: nn.Module.compile (in place, so state-dict names and checkpoints
    stay as without it) on the model each fold trains, which then predicts in place (no
    second compilation), and on a model rebuilt from best.pt to predict later."""
    from pipeline.competition import load_competition
    from pipeline.engine import build_accelerator
    from pipeline.jobs import predict_fold
    from pipeline.runs import load_folds

    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, *a, **k: compiled.append(type(self).__name__))
    data = competition_factory("tabular", "binary")
    data["train"].update(compile=True, epochs=1)
    cfg = build_config(data)
    train.run(cfg)
    assert compiled == ["CompetitionModel"] * 2  # 2 folds, each trained then predicting
    comp = load_competition(cfg.competition)
    predict_fold(cfg, comp, load_folds(cfg, comp), 0, 1, build_accelerator("no"), None)
    assert compiled == ["CompetitionModel"] * 3


def test_the_fold_time_line_counts_the_trained_epochs_not_the_swa_entry(competition_factory,
                                                                        caplog):
    """With SWA the history holds one more entry (the averaged weights' score), and the fold's
    time line said "in 3 epoch(s)" for 2 trained epochs."""
    import logging

    data = competition_factory("tabular", "binary", n_train=32, n_test=8)
    data["train"]["swa"] = {"start_epoch": 1}
    cfg = build_config(data)
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        train.run(cfg)
    history = json.loads((cfg.run_dir / "seed0" / "fold0" / "metrics.json").read_text())
    assert [e.get("swa", False) for e in history["epochs"]] == [False, False, True]
    assert "in 2 epoch(s)" in caplog.text and "in 3 epoch(s)" not in caplog.text


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("metric", "swa"), [("roc_auc", False), ("f1", False), ("f1", True)])
def test_a_fold_without_a_metric_chooses_its_epochs_by_log_loss(competition_factory, caplog,
                                                                metric, swa):
    """A validation fold of one class has no ROC AUC (every epoch NaN) and the same F1 (0)
    for every prediction: the first epoch stayed the best and early stopping ended the fit
    after `patience` epochs. The fold now ranks its epochs by the log loss of its
    predictions (SWA's averaged weights too), and says so once."""
    import logging

    from sklearn.metrics import log_loss

    data = competition_factory("tabular", "binary", n_train=40, n_test=8)
    path = f"{data['competition']['dir']}/train.csv"
    frame = pd.read_csv(path)
    negatives = np.flatnonzero(frame["target"] == "no")
    # group "a": half the negatives, nothing else; its fold validates on one class
    frame["g"] = np.where(np.isin(np.arange(len(frame)), negatives[: len(negatives) // 2]),
                          "a", "b")
    frame.to_csv(path, index=False)
    data["competition"].update(group_column="g", metric=metric)
    data["folds"] = {"scheme": "group", "n_splits": 2, "seed": 0}
    data["train"].update({"epochs": 3, "early_stopping": {"patience": 1}, "mixed_precision": "no",
                          "optimizer": {"name": "adamw", "lr": 3e-2}})
    if swa:
        data["train"]["swa"] = {"start_epoch": 2}
    cfg = build_config(data)
    with caplog.at_level(logging.WARNING):
        train.run(cfg)
    folds = pd.read_parquet(cfg.run_dir / "oof.parquet").set_index("id")["fold"]
    one_class = int(folds[frame.loc[frame["g"] == "a", "id"]].iloc[0])
    out = cfg.run_dir / "seed0" / f"fold{one_class}"
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [e for e in metrics["epochs"] if not e.get("swa")]
    losses = [e["valid_loss"] for e in epochs]
    assert len(losses) == 3  # no early stop on NaN scores
    # the training loss is BCE: the same number as the log loss of the predictions
    assert [e["score"] for e in epochs] == pytest.approx(losses, rel=1e-4)
    if swa:  # the averaged weights predict; their score is the log loss of their OOF
        oof = pd.read_parquet(out / "oof.parquet")["target"].to_numpy()
        assert metrics["epochs"][-1]["swa"]
        assert metrics["best_score"] == pytest.approx(log_loss(np.zeros(len(oof)), oof,
                                                               labels=[0, 1]), rel=1e-4)
    else:
        assert metrics["best_epoch"] == int(np.argmin(losses)) + 1
    assert caplog.text.count(f"{metric} is undefined on this fold's validation rows") == 1
    other = json.loads((cfg.run_dir / "seed0" / f"fold{1 - one_class}" / "metrics.json")
                       .read_text())
    assert all(0 <= e["score"] <= 1 for e in other["epochs"])  # the other fold: its metric


@pytest.mark.usefixtures("one_thread")
def test_a_qwk_run_scores_the_ratings_values(competition_factory):
    """Ratings 1, 2, 5: the fold scores and the CV were QWK of the classes' positions (a 2
    taken for a 5 cost 1, not 9), another number than Kaggle's."""
    from sklearn.metrics import cohen_kappa_score

    data = competition_factory("tabular", "multiclass")
    path = f"{data['competition']['dir']}/train.csv"
    frame = pd.read_csv(path)
    frame["target"] = frame["target"].map({0: 1, 1: 2, 2: 5})
    frame.to_csv(path, index=False)
    data["competition"]["metric"] = "qwk"
    data["train"]["epochs"] = 1
    cfg = build_config(data)
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    ratings = np.array([1, 2, 5])[oof[["1", "2", "5"]].to_numpy().argmax(axis=1)]
    truth = frame.set_index("id").loc[oof["id"], "target"].to_numpy()
    scores = json.loads((cfg.run_dir / "scores.json").read_text())["scores"]
    assert scores["oof"] == pytest.approx(
        cohen_kappa_score(truth, ratings, weights="quadratic", labels=range(1, 6)))


def test_a_first_start_says_it_reads_the_images_before_the_rest(competition_factory, caplog):
    """A first start decodes every image before it writes anything: on 1,500 images of 512
    px, 8 of the run's 31 s passed before any line (minutes on a large set)."""
    import logging

    from pipeline.train import prepare

    cfg = build_config(competition_factory("image", "binary"))
    with caplog.at_level(logging.INFO):
        prepare(cfg, load_competition(cfg.competition))
    said = [r.getMessage() for r in caplog.records]
    first = next(i for i, m in enumerate(said) if "reading the 64 images before" in m)
    assert first < next(i for i, m in enumerate(said) if m.startswith("folds: wrote"))

"""Full fit (pipeline/full_fit.py, 'train.full_fit'): the length read from the folds, the
test predictions combined with the fold models' mean, the predict stage refreshing and
checking the full models, the refused combinations, and resuming an interrupted full fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import predict, train
from pipeline.artifacts import read_json, write_json
from pipeline.cli import main
from pipeline.config import build_config
from pipeline.engine.trainer import Trainer
from pipeline.errors import ConfigError, DataError
from pipeline.executor import Executor
from pipeline.full_fit import gbdt_trees, network_epochs
from pipeline.full_fit_predictions import combine
from pipeline.jobs.multiprocess import multiprocess_problem
from pipeline.leaderboard import read_run
from pipeline.runs import FULL_FIT, fold_dir


def _mlp(competition_factory, **train: Any) -> dict[str, Any]:
    data = competition_factory("tabular", "binary")
    data["train"] |= {"epochs": 3, **train}
    return data


def _full_test(cfg: Any, seed: int) -> np.ndarray:
    frame = pd.read_parquet(fold_dir(cfg, seed, FULL_FIT) / "test.parquet")
    return frame[cfg.competition.target_columns[0]].to_numpy()


def _fold_mean(cfg: Any) -> np.ndarray:
    per_fold = pd.read_parquet(cfg.run_dir / "test_folds.parquet")
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    return per_fold.groupby("id")[cfg.competition.target_columns[0]].mean().loc[
        test["id"]].to_numpy()


def _run_test(cfg: Any) -> np.ndarray:
    frame = pd.read_parquet(cfg.run_dir / "test.parquet")
    return frame[cfg.competition.target_columns[0]].to_numpy()


def _stamps(cfg: Any, seed: int = 0) -> list[int]:
    return [(fold_dir(cfg, seed, k) / "metrics.json").stat().st_mtime_ns
            for k in range(cfg.folds.n_splits)]


# --- the length the folds choose ---------------------------------------------------------

def test_network_epochs_are_the_folds_median_chosen_epoch_rounded_half_up() -> None:
    records = [{"best_epoch": b, "epochs": [{}] * 6} for b in (2, 3, 3, 4)]
    assert network_epochs(records, "best") == 3
    assert network_epochs(records[:2], "best") == 3  # 2.5 rounds up
    assert network_epochs([{"best_epoch": 1}, {"best_epoch": 2}, {"best_epoch": 9}],
                          "best") == 2
    # checkpoint 'last': the epochs each fold trained (early stopping may end one sooner),
    # an SWA entry is no epoch
    stopped = [{"best_epoch": 1, "epochs": [{}] * n} for n in (4, 6, 6)]
    assert network_epochs(stopped, "last") == 6
    assert network_epochs([{"best_epoch": 1, "epochs": [{}, {}, {"swa": True}]}],
                          "last") == 2


def test_gbdt_trees_are_the_folds_mean_scaled_to_every_row() -> None:
    records = [{"best_iteration": t} for t in (80, 100, 120, 100, 100)]
    assert gbdt_trees(records, 5) == [125]  # 100 * 5 / 4
    # one estimator per output; a fold that kept no trees (one class) is left out
    multi = [{"best_iteration": [10, 0]}, {"best_iteration": [20, 30]}]
    assert gbdt_trees(multi, 2) == [30, 60]
    assert gbdt_trees([{"best_iteration": [0]}, {"best_iteration": [0]}], 3) == [0]
    # no early stopping: every fold kept the configured trees, and so does the full model
    assert gbdt_trees([{"best_iteration": 500}] * 5, 5, early_stopped=False) == [500]


def test_combine_replaces_or_averages() -> None:
    folds, full = np.array([[0.2], [0.6]]), np.array([[0.4], [1.0]])
    np.testing.assert_allclose(combine(folds, full, "replace"), full)
    np.testing.assert_allclose(combine(folds, full, "average"), [[0.3], [0.8]])
    with pytest.raises(ValueError, match="how='mean'"):
        combine(folds, full, "mean")


# --- end to end ---------------------------------------------------------------------------

def test_network_full_fit_end_to_end(competition_factory, one_thread) -> None:
    data = _mlp(competition_factory, seeds=[0, 1])
    plain = build_config(data)
    score = train.run(plain)
    plain_test = pd.read_parquet(plain.run_dir / "test.parquet")["target"].to_numpy()
    oof = pd.read_parquet(plain.run_dir / "oof.parquet")
    stamps = _stamps(plain)

    data["train"]["full_fit"] = True
    cfg = build_config(data)
    assert cfg.train_hash() == plain.train_hash()  # the folds are the same: not retrained
    assert train.run(cfg) == pytest.approx(score)
    assert _stamps(cfg) == stamps
    pd.testing.assert_frame_equal(pd.read_parquet(cfg.run_dir / "oof.parquet"), oof)
    for seed in (0, 1):
        folds = [read_json(fold_dir(cfg, seed, k) / "metrics.json")["best_epoch"]
                 for k in range(2)]
        record = read_json(fold_dir(cfg, seed, FULL_FIT) / "metrics.json")
        epochs = network_epochs([{"best_epoch": b} for b in folds], "best")
        assert record["length"] == {"epochs": epochs}
        assert len(record["epochs"]) == epochs  # stopped there, no early stopping
        assert not (fold_dir(cfg, seed, FULL_FIT) / "oof.parquet").exists()
    full = (_full_test(cfg, 0) + _full_test(cfg, 1)) / 2
    test = pd.read_parquet(cfg.run_dir / "test.parquet")["target"].to_numpy()
    np.testing.assert_allclose(_fold_mean(cfg), plain_test)
    np.testing.assert_allclose(test, (plain_test + full) / 2)  # 'average', the default
    member = pd.read_parquet(cfg.run_dir / "seed1" / "test.parquet")["target"].to_numpy()
    per_fold = pd.read_parquet(cfg.run_dir / "test_folds.parquet")
    seed1 = per_fold[per_fold["seed"] == 1].groupby("id")["target"].mean()
    np.testing.assert_allclose(member, (seed1.loc[pd.read_parquet(
        cfg.run_dir / "test.parquet")["id"]].to_numpy() + _full_test(cfg, 1)) / 2)
    assert read_json(cfg.run_dir / "scores.json")["full_fit"] == "average"
    assert read_json(cfg.run_dir / "run.json")["full_fit"] == "average"
    # the leaderboard counts the folds alone
    assert len(read_run(cfg.run_dir).folds) == 4

    data["train"]["full_fit_combine"] = "replace"
    replace = build_config(data)
    train.run(replace)  # nothing trains again: the test predictions are combined anew
    assert _stamps(replace) == stamps
    np.testing.assert_allclose(
        pd.read_parquet(replace.run_dir / "test.parquet")["target"], full)

    train.run(plain)  # switched off: the fold models' mean again
    np.testing.assert_allclose(
        pd.read_parquet(plain.run_dir / "test.parquet")["target"], plain_test)
    assert "full_fit" not in read_json(plain.run_dir / "scores.json")
    assert read_json(plain.run_dir / "run.json")["full_fit"] == ""


def test_gbdt_full_fit_keeps_the_folds_trees_scaled(competition_factory) -> None:
    data = competition_factory("tabular", "regression", n_train=80)
    data["model"] = {"encoders": [{"name": "lightgbm", "params": {
        "n_estimators": 60, "min_child_samples": 5, "early_stopping_rounds": 5,
        "n_jobs": 1}}]}
    data["train"] = {"full_fit": True, "full_fit_combine": "replace"}
    cfg = build_config(data)
    train.run(cfg)
    kept = [read_json(fold_dir(cfg, 0, k) / "metrics.json")["best_iteration"]
            for k in range(2)]
    trees = max(1, round(np.mean(kept) * 2))  # k / (k - 1) = 2
    model = joblib.load(fold_dir(cfg, 0, FULL_FIT) / "model.joblib")
    assert model.trees == [trees]
    assert model.estimators[0].booster_.num_trees() == trees  # fitted no more
    assert read_json(fold_dir(cfg, 0, FULL_FIT) / "metrics.json")["length"] == {
        "trees": [trees]}
    np.testing.assert_allclose(_run_test(cfg), _full_test(cfg, 0))
    assert predict.run(cfg) == pytest.approx(read_json(cfg.run_dir / "scores.json")[
        "scores"]["oof"])


def _lightgbm_full_fit(competition_factory: Any, n_train: int, **params: Any) -> Any:
    """A small binary table's LightGBM run config with ``train.full_fit``."""
    data = competition_factory("tabular", "binary", n_train=n_train)
    data["model"] = {"encoders": [{"name": "lightgbm", "params": {
        "min_child_samples": 5, "n_jobs": 1, **params}}]}
    data["train"] = {"full_fit": True}
    return build_config(data)


def test_gbdt_without_early_stopping_keeps_its_configured_trees(competition_factory) -> None:
    cfg = _lightgbm_full_fit(competition_factory, 60, n_estimators=15, early_stopping_rounds=0)
    train.run(cfg)
    assert joblib.load(fold_dir(cfg, 0, FULL_FIT) / "model.joblib").trees == [15]


def test_sklearn_full_fit_fits_every_row(competition_factory) -> None:
    data = competition_factory("tabular", "binary", n_train=60)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    data["train"] = {"full_fit": True}
    cfg = build_config(data)
    train.run(cfg)
    model = joblib.load(fold_dir(cfg, 0, FULL_FIT) / "model.joblib")
    assert model.n_features_in_ >= 1
    assert read_json(fold_dir(cfg, 0, FULL_FIT) / "metrics.json")["length"] == {}
    np.testing.assert_allclose(_run_test(cfg), (_fold_mean(cfg) + _full_test(cfg, 0)) / 2)


class _Batches(Executor):
    """Runs each batch of jobs here, as a remote executor would hand them out, and keeps
    the (seed, fold) tags of every batch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[Any, ...]]] = []

    def run(self, jobs: Any) -> Any:
        self.batches.append([job.tag for job in jobs])
        for job in jobs:
            yield job, job.fn()


def test_remote_jobs_start_the_full_models_after_every_fold(competition_factory) -> None:
    data = competition_factory("tabular", "binary", n_train=60)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    data["train"] = {"full_fit": True, "seeds": [0, 1]}
    executor = _Batches()
    train.run(build_config(data), executor=executor)
    # a remote executor runs a batch's jobs at once: the full models, which read every
    # fold's record, come in a batch of their own
    assert executor.batches == [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, FULL_FIT), (1, FULL_FIT)]]


# --- predict ------------------------------------------------------------------------------

def test_predict_refreshes_the_full_model_with_tta_and_checks_it(competition_factory,
                                                                  one_thread) -> None:
    data = _mlp(competition_factory, full_fit=True)
    cfg = build_config(data)
    train.run(cfg)
    full = fold_dir(cfg, 0, FULL_FIT)
    weights = (full / "best.pt").stat().st_mtime_ns
    data["predict"] = {"tta": ["noise"]}
    tta = build_config(data)
    predict.run(tta)
    assert (full / "best.pt").stat().st_mtime_ns == weights  # predicted, not retrained
    views = pd.read_parquet(full / "tta_test.parquet")
    assert sorted(views["tta"].unique()) == ["noise", "none"]
    test = pd.read_parquet(tta.run_dir / "test.parquet")["target"].to_numpy()
    np.testing.assert_allclose(test, (_fold_mean(tta) + _full_test(tta, 0)) / 2)

    # the folds choose another length since (trained again): refused, nothing deleted
    path = fold_dir(cfg, 0, 0) / "metrics.json"
    record = read_json(path)
    write_json(path, record | {"best_epoch": 3 if record["best_epoch"] != 3 else 1})
    with pytest.raises(DataError, match="choose another length: run the train stage"):
        predict.run(tta)
    assert (full / "best.pt").is_file()
    write_json(path, record)

    (full / "metrics.json").unlink()  # never finished
    with pytest.raises(DataError, match="full is not trained under this config"):
        predict.run(tta)


def test_pipeline_run_submits_the_combined_predictions(competition_factory, tmp_path, capsys,
                                                       one_thread) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(_mlp(competition_factory)))
    assert main(["run", str(config), "--set", "train.full_fit=true", "--set",
                 "train.full_fit_combine=replace"]) == 0
    assert "test predictions of the full models (train.full_fit)" in capsys.readouterr().out
    cfg = build_config(_mlp(competition_factory))
    submission = pd.read_csv(Path(cfg.submissions_dir) / f"{cfg.name}.csv")
    np.testing.assert_allclose(submission["target"], _full_test(cfg, 0), rtol=1e-6)
    # refused (the config error's header and its one line), exit 2, before anything is written
    other = tmp_path / "other.yaml"
    data = _mlp(competition_factory)
    data["name"] = "refused"
    other.write_text(yaml.safe_dump(data))
    assert main(["train", str(other), "--set", "train.full_fit=true", "--set",
                 "train.swa.start_epoch=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: invalid config") and len(err) == 2
    assert "'train.full_fit' cannot be combined with 'train.swa'" in err[1]
    assert not (Path(cfg.output_dir) / "refused").exists()


# --- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "says"), [
    ({"train": {"consistency": {"method": "fixmatch"}}}, "'train.consistency'"),
    ({"train": {"ensemble": {"members": 2}}}, "'train.ensemble'"),
    ({"train": {"swa": {"start_epoch": 2}}}, "'train.swa'"),
    ({"train": {"snapshots": True, "scheduler": {"name": "restarts", "cycle_epochs": 1}}},
     "'train.snapshots'"),
    ({"train": {"stages": [{"epochs": 1, "scheduler": {"name": "plateau"}}]}},
     "'train.stages.0.scheduler' plateau"),
    ({"folds": {"scheme": "time", "n_splits": 2}, "competition": {"time_column": "x2"}},
     "'folds.scheme: time'"),
])
def test_unsupported_combinations_are_refused_at_load(competition_factory, extra,
                                                      says) -> None:
    data = _mlp(competition_factory, full_fit=True)
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    if "time_column" in data["competition"]:
        data["competition"]["task"] = "regression"
        data["competition"]["metric"] = "rmse"
    with pytest.raises(ConfigError) as err:
        build_config(data)
    # the config error's one line of its own
    assert f"'train.full_fit' cannot be combined with {says}" in str(err.value).splitlines()[-1]


def test_pseudo_labels_are_refused(competition_factory, tmp_path) -> None:
    data = _mlp(competition_factory, full_fit=True)
    data["pseudo"] = {"source": str(tmp_path / "runs" / "other")}
    with pytest.raises(ConfigError, match=r"'train\.full_fit' cannot be combined with 'pseudo'"):
        build_config(data)


@pytest.mark.parametrize("full_fit", [True, False])
def test_a_resolved_config_loads_again(competition_factory, full_fit) -> None:
    cfg = build_config(_mlp(competition_factory, full_fit=full_fit,
                            full_fit_combine="replace"))
    again = build_config(cfg.to_dict())
    assert (again.train.full_fit, again.train.full_fit_combine) == (full_fit, "replace")
    assert again.train_hash() == cfg.train_hash()


def test_multi_process_launches_are_refused(competition_factory) -> None:
    cfg = build_config(_mlp(competition_factory, full_fit=True, batch_size=16))
    assert "'train.full_fit' is not supported in a multi-process launch" in (
        multiprocess_problem(cfg, 2) or "")


def test_the_options_at_their_defaults_keep_every_hash(competition_factory) -> None:
    data = _mlp(competition_factory)
    base = build_config(data).train_hash()
    data["train"] |= {"full_fit": False}
    assert build_config(data).train_hash() == base
    data["train"] |= {"full_fit": True, "full_fit_combine": "replace"}
    assert build_config(data).train_hash() == base


# --- resume -------------------------------------------------------------------------------

def test_a_killed_full_fit_resumes_to_the_same_model(competition_factory, monkeypatch,
                                                     train_killed_in_epoch, one_thread) -> None:
    data = _mlp(competition_factory, full_fit=True, epochs=4, resume_every=0)
    data["name"] = "whole"
    whole = build_config(data)
    train.run(whole)
    data["name"] = "killed"
    killed = build_config(data)
    epochs = read_json(fold_dir(whole, 0, FULL_FIT) / "metrics.json")["length"]["epochs"]
    assert epochs >= 2
    train_killed_in_epoch(killed, epochs, desc="full")
    full = fold_dir(killed, 0, FULL_FIT)
    assert (full / "last.pt").is_file() and not (full / "metrics.json").exists()
    resumed: list[int] = []
    monkeypatch.setattr(Trainer, "_start_or_resume", _recording(resumed))
    train.run(killed)
    assert resumed == [epochs - 1]  # the full model resumed after its last finished epoch
    np.testing.assert_allclose(_full_test(killed, 0), _full_test(whole, 0), rtol=1e-5)


def _recording(resumed: list[int]) -> Any:
    original = Trainer._start_or_resume

    def record(self: Trainer, plans: Any) -> None:
        original(self, plans)
        if "full" in self.desc:
            resumed.append(self.epoch)

    return record


def test_a_full_model_of_another_length_trains_again(competition_factory) -> None:
    cfg = _lightgbm_full_fit(competition_factory, 80, n_estimators=40, early_stopping_rounds=5)
    train.run(cfg)
    full = fold_dir(cfg, 0, FULL_FIT)
    made = (full / "metrics.json").stat().st_mtime_ns
    train.run(cfg)  # current: kept
    assert (full / "metrics.json").stat().st_mtime_ns == made
    # a fold's record names another best iteration (as if trained again): the full model
    # is made again for the new length
    path = fold_dir(cfg, 0, 1) / "metrics.json"
    record = read_json(path)
    write_json(path, record | {"best_iteration": record["best_iteration"] + 20})
    train.run(cfg)
    trees = read_json(full / "metrics.json")["length"]["trees"]
    assert trees == gbdt_trees([read_json(fold_dir(cfg, 0, k) / "metrics.json")
                                for k in range(2)], 2)
    assert joblib.load(full / "model.joblib").trees == trees
    # an interrupted one (no record) is trained again, not read half-made
    (full / "metrics.json").unlink()
    train.run(cfg)
    assert json.loads((full / "metrics.json").read_text())["length"] == {"trees": trees}


def test_full_model_folder_is_no_fold(tmp_path: Path) -> None:
    cfg = build_config({"name": "x", "output_dir": str(tmp_path), "competition": {
        "dir": str(tmp_path), "id_column": "id", "target_columns": ["y"], "task": "binary",
        "metric": "roc_auc", "modality": "tabular"}, "model": {"encoders": [{"name": "mlp"}]}})
    assert fold_dir(cfg, 2, FULL_FIT) == tmp_path / "x" / "seed2" / "full"

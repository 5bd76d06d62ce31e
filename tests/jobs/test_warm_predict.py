"""A fold predicts with the network its fit left in memory (pipeline/jobs/network.py
TrainedFold): the same files, bit for bit, as rebuilding the model from best.pt, and the
rebuild still happens wherever the weights in memory are not the chosen ones."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from pipeline import train
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.engine import build_accelerator
from pipeline.engine.plan import FitHistory
from pipeline.jobs import network as network_job
from pipeline.jobs import predict_fold
from pipeline.runs import fold_dir, load_folds

FILES = ("oof.parquet", "test.parquet", "tta_oof.parquet", "tta_test.parquet")


def _files(cfg, fold: int) -> dict[str, pd.DataFrame]:
    return {name.split(".")[0]: pd.read_parquet(fold_dir(cfg, 0, fold) / name) for name in FILES}


def _cold_files(cfg, fold: int) -> dict[str, pd.DataFrame]:
    """The fold's predictions again, from a model rebuilt and loaded from best.pt."""
    comp = load_competition(cfg.competition)
    predict_fold(cfg, comp, load_folds(cfg, comp), 0, fold, build_accelerator("no"), None)
    return _files(cfg, fold)


def _count_warm(monkeypatch) -> list[bool]:
    """Record, per fold, whether training handed its network to prediction."""
    seen: list[bool] = []
    fit = network_job.fit_network_fold

    def spy(*args, **kwargs):
        result, trained = fit(*args, **kwargs)
        seen.append(trained is not None)
        return result, trained

    monkeypatch.setattr(train, "fit_network_fold", spy)
    return seen


@pytest.mark.parametrize(("modality", "extra"), [
    ("image", {"checkpoint": "last"}),
    ("tabular", {"checkpoint": "last", "ema": {"decay": 0.9}}),  # predicts with the EMA copy
])
def test_in_memory_prediction_equals_rebuilding_from_best_pt(
        competition_factory, one_thread, monkeypatch, caplog, modality, extra) -> None:
    data = competition_factory(modality, "multiclass" if modality == "image" else "binary")
    data["train"].update(extra)
    data["predict"] = {"tta": ["hflip"]} if modality == "image" else {}
    cfg = build_config(data)
    warm = _count_warm(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pipeline.train"):
        train.run(cfg)
    assert warm == [True, True]
    # where the fold's time went, one line per fold
    timing = [r.getMessage() for r in caplog.records if "predicting and writing" in r.getMessage()]
    assert len(timing) == 2 and "in 2 epoch(s)" in timing[0]
    for fold in (0, 1):
        assert (fold_dir(cfg, 0, fold) / "best.pt").is_file()  # landed before metrics.json
        assert (fold_dir(cfg, 0, fold) / "last.pt").is_file()
        in_memory = _files(cfg, fold)
        rebuilt = _cold_files(cfg, fold)
        assert list(in_memory) == ["oof", "test", "tta_oof", "tta_test"]
        for name, frame in in_memory.items():
            pd.testing.assert_frame_equal(frame, rebuilt[name], check_exact=True)


def test_an_earlier_best_epoch_is_read_back_from_best_pt(
        competition_factory, one_thread, monkeypatch) -> None:
    """checkpoint: best whose best epoch is not the last: the weights in memory are not the
    fold's model, so prediction rebuilds it from best.pt."""
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=3, checkpoint="best")
    cfg = build_config(data)
    warm = _count_warm(monkeypatch)
    # every fold's best epoch is its first (the history is asked before it records one)
    monkeypatch.setattr(FitHistory, "improves",
                        lambda self, score, greater, ties=False: not self.epochs)
    train.run(cfg)
    assert warm == [False, False]
    for fold in (0, 1):
        assert _files(cfg, fold)["oof"].equals(_cold_files(cfg, fold)["oof"])


@pytest.mark.parametrize("extra", [
    {"swa": {"start_epoch": 1}},  # SWA replaces the weights at the end of the fit
    {"snapshots": True, "scheduler": {"name": "restarts", "cycle_epochs": 1}},
])
def test_end_of_fit_weights_elsewhere_are_predicted_from_disk(
        competition_factory, one_thread, monkeypatch, extra) -> None:
    data = competition_factory("tabular", "binary")
    data["train"].update(extra)
    cfg = build_config(data)
    warm = _count_warm(monkeypatch)
    train.run(cfg)
    assert warm == [False, False]


"""pipeline.engine.callbacks.averaging: EMA, SWA, snapshot ensembles and early stopping, in
runs (what the fold predicts with) and through their resume state."""

from __future__ import annotations

import io
import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from pipeline.engine import StagePlan, Trainer
from pipeline.engine.batchnorm import recompute_batch_norm
from pipeline.engine.callbacks.averaging import (
    EMA,
    SWA,
    EarlyStopping,
    cycle_end_epochs,
    snapshot_paths,
)
from pipeline.engine.losses import build_loss
from pipeline.models import build_model


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """Through torch.save, as the resume point (last.pt) stores it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _trainer() -> Trainer:
    torch.manual_seed(0)
    return Trainer(nn.Linear(3, 2), Accelerator(cpu=True))


def _move(model: nn.Module, step: int) -> None:
    """A training step stand-in: shift every weight by a step-dependent amount."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * step)


def test_ema_resumes_from_its_state_dict():
    trainer = _trainer()
    expected = trainer.unwrapped.weight.detach().clone()
    ema = EMA(decay=0.5, warmup=False)
    ema.on_fit_start(trainer)
    for step in range(1, 4):
        _move(trainer.unwrapped, step)
        ema.on_after_step(trainer)
        decay = 0.0 if step == 1 else 0.5  # timm's first update copies the weights
        expected = decay * expected + (1 - decay) * trainer.unwrapped.weight.detach()
    saved = _round_trip(ema.state_dict())
    restored = EMA(decay=0.5, warmup=False)
    restored.load_state_dict(saved)
    restored.on_fit_start(trainer)  # the loop calls it after loading a resume point
    _move(trainer.unwrapped, 4)
    for callback in (ema, restored):
        callback.on_after_step(trainer)
    expected = 0.5 * expected + 0.5 * trainer.unwrapped.weight.detach()
    for callback in (ema, restored):
        assert callback.updates == 4
        torch.testing.assert_close(callback.eval_model(trainer).weight, expected)
    assert not torch.allclose(expected, trainer.unwrapped.weight)


def test_swa_resumes_from_its_state_dict_and_averages_equally():
    trainer = _trainer()
    seen = []
    swa = SWA(start_epoch=1)
    swa.on_fit_start(trainer)
    for epoch in (1, 2):
        _move(trainer.unwrapped, epoch)
        trainer.epoch = epoch
        swa.on_epoch_end(trainer)
        seen.append(trainer.unwrapped.weight.detach().clone())
    saved = _round_trip(swa.state_dict())
    restored = SWA(start_epoch=1)
    restored.load_state_dict(saved)
    restored.on_fit_start(trainer)
    _move(trainer.unwrapped, 3)
    trainer.epoch = 3
    for callback in (swa, restored):
        callback.on_epoch_end(trainer)
    seen.append(trainer.unwrapped.weight.detach().clone())
    for callback in (swa, restored):
        assert callback.averaged is not None
        assert int(callback.averaged.n_averaged) == 3
        torch.testing.assert_close(callback.averaged.module.weight, torch.stack(seen).mean(0))


def _early_stopping_run(stopper: EarlyStopping, trainer: Trainer, scores: list[float]) -> int:
    """Feed epoch scores until the stopper stops the fit; returns the epochs run."""
    for epoch, score in enumerate(scores, start=1):
        trainer.history.epochs.append({"epoch": epoch, "score": score})
        stopper.on_epoch_end(trainer)
        if trainer.should_stop:
            return epoch
    return len(scores)


@pytest.mark.parametrize("greater_is_better", [True, False])
def test_early_stopping_resumes_from_its_state_dict(greater_is_better):
    sign = 1.0 if greater_is_better else -1.0
    scores = [sign * s for s in (0.5, 0.7, 0.69, 0.7, 0.704, 0.6)]  # no gain > 0.005 after epoch 2
    whole = EarlyStopping(patience=3, min_delta=0.005, greater_is_better=greater_is_better)
    assert _early_stopping_run(whole, _trainer(), scores) == 5

    first = EarlyStopping(patience=3, min_delta=0.005, greater_is_better=greater_is_better)
    trainer = _trainer()
    assert _early_stopping_run(first, trainer, scores[:3]) == 3 and not trainer.should_stop
    restored = EarlyStopping(patience=3, min_delta=0.005, greater_is_better=greater_is_better)
    restored.load_state_dict(_round_trip(first.state_dict()))
    assert restored.state_dict() == {"best": pytest.approx(0.7), "waited": 1}
    trainer.history.epochs.clear()
    assert _early_stopping_run(restored, trainer, scores[3:]) == 2  # epoch 5, as unbroken


def test_early_stopping_waits_for_the_epochs_best_may_choose():
    # a consistency run's warm-up (best_from 4) neither sets the score to beat nor stops it
    stopper = EarlyStopping(patience=2, min_delta=0.0, greater_is_better=True)
    trainer = _trainer()
    trainer.best_from = 4
    scores = [0.9, 0.5, 0.4, 0.3, 0.6, 0.5, 0.4, 0.3]
    assert _early_stopping_run(stopper, trainer, scores) == 7 and trainer.should_stop
    assert stopper.state_dict() == {"best": 0.6, "waited": 2}


def test_early_stopping_ends_the_fold(tabular_run, fold_history):
    cfg = tabular_run(epochs=30, optimizer={"name": "adamw", "lr": 1e-6},
                      early_stopping={"patience": 2})
    assert len(fold_history(cfg)["epochs"]) < 30


def _oof(cfg) -> pd.DataFrame:
    return pd.read_parquet(cfg.run_dir / "oof.parquet")


def test_ema_and_snapshot_predictions_differ_from_plain_and_fill_the_artifacts(
        tabular_run, fold_history):
    plain = tabular_run(epochs=4)
    base = _oof(plain)[["0", "1", "2"]].to_numpy()
    ema = tabular_run("ema", epochs=4, ema={"decay": 0.9})
    snap = tabular_run("snap", epochs=4, snapshots=True,
                       scheduler={"name": "restarts", "cycle_epochs": 2})
    for cfg in (ema, snap):
        assert not np.allclose(base, _oof(cfg)[["0", "1", "2"]].to_numpy())
    fold_dir = snap.run_dir / "seed0" / "fold0"
    paths = snapshot_paths(fold_dir)
    assert [p.name for p in paths] == ["snapshot_0.pt", "snapshot_1.pt"]
    comp_oof = pd.read_parquet(fold_dir / "oof.parquet")
    mean = _predict_with(snap, fold_dir, paths)
    np.testing.assert_allclose(comp_oof[["0", "1", "2"]].to_numpy(), mean, atol=1e-6)
    assert fold_history(ema)["best_score"] is not None


def _predict_with(cfg, fold_dir, checkpoints) -> np.ndarray:
    """Mean of each checkpoint's held-out probabilities, computed by hand."""
    from pipeline.competition import load_competition
    from pipeline.data import CompetitionDataset
    from pipeline.data.splits import read_folds
    from pipeline.jobs.inputs import fold_prep
    from pipeline.models import model_inputs

    comp = load_competition(cfg.competition)
    folds = read_folds(cfg.folds_file, comp)
    tab = fold_prep(fold_dir).tabular  # the encoder the fold fitted on its training rows
    frame = comp.train.iloc[np.flatnonzero(folds == 0)]
    ds = CompetitionDataset(frame, model_inputs(comp, cfg.model, None, tab))
    loader = DataLoader(ds, batch_size=len(ds), collate_fn=lambda b: {
        k: torch.stack([it[k] for it in b]) for k in b[0]})
    batch = next(iter(loader))
    preds = []
    for path in checkpoints:
        model = build_model(cfg.model, 3, tab)
        model.load_state_dict(torch.load(path, weights_only=False)["model"])
        model.eval()
        with torch.no_grad():
            preds.append(torch.softmax(model(batch).double(), dim=1).numpy())
    return np.mean(preds, axis=0)


def test_ema_checkpoint_holds_the_averaged_weights(tabular_run):
    cfg = tabular_run("ema", epochs=1, ema={"decay": 0.5, "warmup": False})
    fold_dir = cfg.run_dir / "seed0" / "fold0"
    best = torch.load(fold_dir / "best.pt", weights_only=False)["model"]
    last = torch.load(fold_dir / "last.pt", weights_only=False)
    ema_weights = last["callbacks"][0]["weights"]  # one epoch: best == last
    for key, value in best.items():
        torch.testing.assert_close(value, ema_weights[key])
    trained = last["model"]
    assert any(not torch.equal(best[k], trained[k]) for k in best if best[k].is_floating_point())
    np.testing.assert_allclose(
        pd.read_parquet(fold_dir / "oof.parquet")[["0", "1", "2"]].to_numpy(),
        _predict_with(cfg, fold_dir, [fold_dir / "best.pt"]), atol=1e-6)


def test_swa_makes_the_average_the_fold_model(tabular_run, fold_history):
    cfg = tabular_run("swa", epochs=4, swa={"start_epoch": 2})
    fold_dir = cfg.run_dir / "seed0" / "fold0"
    history = fold_history(cfg)
    assert history["epochs"][-1].get("swa") is True
    assert history["best_epoch"] == 4
    np.testing.assert_allclose(
        pd.read_parquet(fold_dir / "oof.parquet")[["0", "1", "2"]].to_numpy(),
        _predict_with(cfg, fold_dir, [fold_dir / "best.pt"]), atol=1e-6)


def test_snapshot_cycles_end_where_the_restarts_do():
    # cycles of 2 epochs over 5: ends at 2, 4 and the last epoch; cycle_mul 2 doubles them
    assert cycle_end_epochs([5], [(2.0, 1.0)]) == [2, 4, 5]
    assert cycle_end_epochs([7], [(1.0, 2.0)]) == [1, 3, 7]
    assert cycle_end_epochs([2, 4], [(1.0, 1.0), None]) == [1, 2]


@pytest.mark.usefixtures("one_thread")
def test_swa_keeps_the_best_epoch_when_early_stopping_ends_the_fit_before_it_starts(
        make_toy, scripted_fit, tmp_path, caplog):
    """issue 12 item 2: early stopping before swa.start_epoch leaves SWA nothing averaged;
    best.pt keeps the best epoch's weights (not the initial ones) and a warning says so."""
    torch.manual_seed(0)
    model = make_toy()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    swa = SWA(start_epoch=5)
    stopper = EarlyStopping(patience=1, min_delta=0.0, greater_is_better=True)
    with caplog.at_level(logging.WARNING, logger="pipeline.engine.callbacks.averaging"):
        fit = scripted_fit(model, [0.5, 0.9, 0.4, 0.3, 0.2, 0.1], tmp_path,
                           callbacks=[swa, stopper])
    assert len(fit.history.epochs) == 3  # stopped after epoch 3, before SWA's epoch 5
    assert swa.averaged is not None and int(swa.averaged.n_averaged) == 0
    assert fit.history.best_epoch == 2 and fit.history.best_score == 0.9
    assert not any(e.get("swa") for e in fit.history.epochs)
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and best["score"] == 0.9
    for key, value in best["model"].items():
        torch.testing.assert_close(value, fit.recorder.weights[1][key])
    assert not torch.equal(best["model"]["head.0.weight"], initial["head.0.weight"])
    assert any("SWA averaged nothing" in r.getMessage() for r in caplog.records)


def test_early_stopping_never_takes_a_nan_score_as_its_best():
    """issue 12 item 9: a NaN score counts as no gain and is never the score to beat, so
    later finite scores can still improve."""
    stopper = EarlyStopping(patience=2, min_delta=0.0, greater_is_better=True)
    trainer = _trainer()
    assert _early_stopping_run(stopper, trainer, [math.nan]) == 1
    assert stopper.state_dict() == {"best": None, "waited": 1}
    trainer.history.epochs.clear()
    # 0.5 becomes the best, a NaN waits one epoch, 0.6 improves: no stop
    assert _early_stopping_run(stopper, trainer, [0.5, math.nan, 0.6]) == 3
    assert not trainer.should_stop
    assert stopper.state_dict() == {"best": pytest.approx(0.6), "waited": 0}
    # two NaNs in a row are two epochs without gain
    trainer.history.epochs.clear()
    assert _early_stopping_run(stopper, trainer, [math.nan, math.nan, 0.9]) == 2
    assert trainer.should_stop and stopper.best == pytest.approx(0.6)


class _NormNet(nn.Module):
    """An encoder and a head, each with batch norm, over the 8 ``num`` features."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6))])
        self.head = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(),
                                  nn.Linear(5, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoders[0](batch["num"]))


def _norm_net() -> _NormNet:
    torch.manual_seed(0)
    net = _NormNet()
    # statistics of a frozen pretrained encoder: nothing like the defaults (0, 1)
    norm = net.encoders[0][1]
    norm.running_mean.copy_(torch.linspace(-1.0, 1.0, 6))
    norm.running_var.copy_(torch.linspace(0.5, 3.0, 6))
    norm.num_batches_tracked.fill_(1000)
    return net


def _norm_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k
            or "num_batches" in k}


@pytest.mark.usefixtures("one_thread")
def test_batch_norm_recompute_leaves_frozen_modules_and_matches_update_bn_elsewhere():
    """issue 12 item 15: SWA's batch-norm update keeps a frozen module's running statistics
    and recomputes the trainable ones as torch's update_bn does over the same inputs."""
    net = _norm_net()
    frozen_before = _norm_state(net.encoders[0])
    g = torch.Generator().manual_seed(1)
    batches = [{"num": torch.randn(8, 8, generator=g) * 2 + 1} for _ in range(3)]
    net.train()  # training mode on entry must come back unchanged too
    recompute_batch_norm(batches, net, ["encoders.0"])
    assert net.training and net.encoders[0].training
    for key, value in _norm_state(net.encoders[0]).items():
        assert torch.equal(value, frozen_before[key]), key
    # the reference: the head's inputs through the frozen encoder as training saw them
    # (eval mode, its own statistics), then torch's update_bn on the head alone
    reference = _norm_net()
    encoder = reference.encoders[0].eval()
    with torch.no_grad():
        features = [encoder(b["num"]) for b in batches]
    update_bn(features, reference.head)
    head_norm, want = net.head[1], reference.head[1]
    torch.testing.assert_close(head_norm.running_mean, want.running_mean)
    torch.testing.assert_close(head_norm.running_var, want.running_var)
    assert head_norm.momentum == 0.1  # the layer's own momentum is put back
    assert not torch.allclose(head_norm.running_mean, torch.zeros(5))


@pytest.mark.usefixtures("one_thread")
def test_swa_with_a_frozen_encoder_keeps_its_batch_norm_statistics(scripted_fit, tmp_path):
    """issue 12 item 15: the SWA model a fold predicts with (best.pt) carries the frozen
    encoder's statistics as trained, not ones recomputed in training mode."""
    net = _norm_net()
    frozen_before = _norm_state(net.encoders[0])
    head_before = _norm_state(net.head)
    fit = scripted_fit(net, [0.1, 0.2], tmp_path, callbacks=[SWA(start_epoch=1)],
                       freeze=["encoders.0"])
    assert fit.history.epochs[-1].get("swa") is True
    best = torch.load(tmp_path / "best.pt", weights_only=False)["model"]
    for key, value in frozen_before.items():
        assert torch.equal(best[f"encoders.0.{key}"], value), key
    # the head's statistics were recomputed for the averaged weights
    assert not torch.equal(best["head.1.running_mean"], head_before["1.running_mean"])
    assert best["head.1.num_batches_tracked"] == 3  # one pass over the 3 training batches


@pytest.mark.usefixtures("one_thread")
def test_swa_batch_norm_update_leaves_out_a_lone_last_row(tmp_path):
    """25 training rows at batch 8: training leaves the lone 25th row out of its epochs, but
    SWA's batch-norm pass over the rows ended on a batch of one and crashed the fold at its
    end ('Expected more than 1 value per channel when training')."""
    net = _norm_net()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(25, 8, generator=g)
    rows = [{"num": x[i], "target": x[i, :1] * 2} for i in range(25)]
    plan = StagePlan(
        epochs=2, loader=DataLoader(rows, batch_size=8, shuffle=True,  # type: ignore[arg-type]
                                    drop_last=True),  # as build_loader makes it for 25 rows
        make_optimizer=lambda: torch.optim.SGD(net.parameters(), lr=0.05),
        make_schedule=lambda opt, updates: None, loss_fn=build_loss("mse", "regression"))
    trainer = Trainer(net, Accelerator(cpu=True), callbacks=[SWA(start_epoch=1)])
    history = trainer.fit([plan], DataLoader(rows[:8], batch_size=8),  # type: ignore[arg-type]
                          lambda outputs: 0.5, True, tmp_path)
    assert history.epochs[-1].get("swa") is True
    best = torch.load(tmp_path / "best.pt", weights_only=False)["model"]
    assert best["head.1.num_batches_tracked"] == 3  # 24 rows in 3 batches, the 25th left out


def test_swa_lr_holds_from_the_first_update_of_its_first_epoch(make_toy, tmp_path):
    """swa.lr is the constant lr while averaging; it was set only after each update, so the
    first update of start_epoch still took the schedule's lr (0.75 here, 15x swa.lr)."""
    from pipeline.engine import Callback
    from pipeline.engine.optim import SchedulerConfig, build_scheduler

    torch.manual_seed(0)
    model = make_toy()
    x = torch.randn(24, 8)
    rows = [{"num": x[i], "target": x[i, :1]} for i in range(24)]
    lrs: list[float] = []

    class Recorder(Callback):
        def on_after_backward(self, trainer, batch, loss_fn) -> None:
            lrs.append(trainer.optimizer.param_groups[0]["lr"])

    cosine = SchedulerConfig(name="cosine", min_lr_ratio=0.0)
    plan = StagePlan(
        epochs=3, loader=DataLoader(rows, batch_size=8),  # type: ignore[arg-type]
        make_optimizer=lambda: torch.optim.SGD(model.parameters(), lr=1.0),
        make_schedule=lambda opt, updates: build_scheduler(opt, cosine, 3, updates),
        loss_fn=build_loss("mse", "regression"))
    trainer = Trainer(model, Accelerator(cpu=True), callbacks=[Recorder(), SWA(2, lr=0.05)])
    trainer.fit([plan], DataLoader(rows[:8], batch_size=8),  # type: ignore[arg-type]
                lambda outputs: 0.5, True, tmp_path)
    assert lrs[:3] == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 9)),
                                     0.5 * (1 + math.cos(2 * math.pi / 9))])
    assert lrs[3:] == pytest.approx([0.05] * 6)  # epochs 2 and 3: every update at swa.lr

"""pipeline.engine.trainer: freezing, gradient accumulation, the accelerator, and resume: a
run killed with SIGKILL at any moment, then rerun, ends with the uninterrupted OOF."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from accelerate import Accelerator
from torch import nn

from pipeline import train
from pipeline.config import build_config
from pipeline.engine import Callback, Trainer, apply_freeze, build_accelerator
from pipeline.engine.losses import build_loss
from pipeline.engine.optim import OptimizerConfig, build_optimizer, parameter_groups
from pipeline.errors import ConfigError


def test_frozen_encoder_keeps_its_weights_and_batchnorm_statistics(make_two_encoder_model):
    torch.manual_seed(0)
    model, cfg = make_two_encoder_model()
    frozen_body = model.encoders[0].body
    before = {k: v.clone() for k, v in frozen_body.state_dict().items()}
    other_bn = model.encoders[1].body.bn1
    other_before = other_bn.running_mean.clone()
    batches = [{"image": torch.randn(4, 3, 32, 32), "target": torch.randint(0, 3, (4,))}
               for _ in range(3)]
    optim = OptimizerConfig(name="sgd", lr=0.1, params={"momentum": 0.9})
    trainer = Trainer(model, Accelerator(cpu=True))
    trainer.frozen = apply_freeze(model, ["encoders.0"])
    opt = build_optimizer(parameter_groups(model, cfg, optim), optim)
    assert all(not p.requires_grad for p in frozen_body.parameters())
    trainer.train_epoch(batches, opt, None, build_loss("cross_entropy", "multiclass"))  # type: ignore[arg-type]
    after = frozen_body.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert not torch.equal(other_before, other_bn.running_mean)


def test_freezing_an_unknown_module_names_the_top_level_ones(make_toy):
    model = make_toy()
    with pytest.raises(ConfigError, match=r"no module 'encoders\.3'.*\['encoders', 'head'\]"):
        apply_freeze(model, ["encoders.3"])
    # freezing is a full assignment: a later stage's list unfreezes what it leaves out
    apply_freeze(model, ["head"])
    assert not any(p.requires_grad for p in model.head.parameters())
    assert apply_freeze(model, []) == []
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_accumulation_matches_the_larger_batch(make_toy):
    torch.manual_seed(0)
    x, y = torch.randn(8, 8), torch.randn(8, 1)
    loss_fn = build_loss("mse", "regression")
    weights = []
    for batch_size, accum in ((8, 1), (4, 2)):
        torch.manual_seed(1)
        model = make_toy()
        trainer = Trainer(model, Accelerator(cpu=True))
        batches = [{"num": x[i:i + batch_size], "target": y[i:i + batch_size]}
                   for i in range(0, 8, batch_size)]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer.train_epoch(batches, opt, None, loss_fn, grad_accum_steps=accum)  # type: ignore[arg-type]
        assert trainer.stage_updates == 1
        weights.append(model.head[0].weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_the_stage_accelerator_does_not_scale_the_loss_again(competition_factory):
    # accumulation belongs to the engine; Accelerate dividing the loss too would halve grads
    cfg = build_config({**competition_factory("tabular", "binary"),
                        "train": {"grad_accum_steps": 4}})
    assert build_accelerator(cfg.train.mixed_precision).gradient_accumulation_steps == 1


# Files whose appearance marks a moment to kill at: mid-fold (after an epoch's resume point),
# between training and prediction, between folds, and before the run is gathered.
KILL_AFTER = [
    "seed0/fold0/last.pt",
    "seed0/fold0/oof.parquet",
    "seed0/fold1/last.pt",
    "seed0/fold1/metrics.json",
]


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PIPELINE_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], path: Path, timeout: float = 120) -> str:
    """SIGKILL the process as soon as ``path`` exists; returns what it logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() or proc.poll() is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stderr is not None
            return proc.stderr.read().decode()
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"{path} did not appear within {timeout}s")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_oof(competition_factory, tmp_path):
    data = competition_factory("tabular", "multiclass", n_train=200)
    data["train"].update(epochs=3, batch_size=8, resume_every=0)
    data["model"]["encoders"][0]["params"] = {"hidden": [64, 32], "dropout": 0.3}
    reference = build_config({**data, "output_dir": str(tmp_path / "reference")})
    train.run(reference)
    expected = pd.read_parquet(reference.run_dir / "oof.parquet")

    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump({**data, "output_dir": str(tmp_path / "killed")}))
    run_dir = tmp_path / "killed" / data["name"]
    logs = [_kill_when(_start(config), run_dir / marker) for marker in KILL_AFTER]
    assert sum("resuming after epoch" in log for log in logs) >= 2, logs
    assert not (run_dir / "oof.parquet").exists()
    proc = _start(config)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    resumed = pd.read_parquet(run_dir / "oof.parquet")
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True)


class _WindowSizes(Callback):
    """Records ``trainer.grad_accum_steps`` at each backward pass (what callbacks scale by)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_before_backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.sizes.append(trainer.grad_accum_steps)


@pytest.mark.usefixtures("one_thread")
def test_a_partial_last_accumulation_window_is_a_mean_over_its_own_batches(make_toy):
    """issue 12 (small): with 3 batches and grad_accum_steps 2 the second update is the
    plain gradient step of the last batch alone, not half of it."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 8), torch.randn(12, 1)
    batches = [{"num": x[i:i + 4], "target": y[i:i + 4]} for i in range(0, 12, 4)]
    loss_fn = build_loss("mse", "regression")
    torch.manual_seed(1)
    model = make_toy()
    torch.manual_seed(1)
    by_hand = make_toy()
    sizes = _WindowSizes()
    trainer = Trainer(model, Accelerator(cpu=True), callbacks=[sizes])
    trainer.train_epoch(batches, torch.optim.SGD(model.parameters(), lr=0.1), None,  # type: ignore[arg-type]
                        loss_fn, grad_accum_steps=2)
    assert trainer.stage_updates == 2
    # the window of batches 0-1 holds two micro-batches, the last window one
    assert sizes.sizes == [2, 2, 1]
    # the same two updates by hand: the mean gradient of batches 0 and 1, then batch 2's
    opt = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    for window in (batches[:2], batches[2:]):
        loss = sum(loss_fn(by_hand(b), b) for b in window) / len(window)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    for (name, got), want in zip(model.state_dict().items(), by_hand.state_dict().values(),
                                 strict=True):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("greater_is_better", "scores"), [
    (True, [math.nan, 0.5, math.nan, 0.7, 0.6]),
    (False, [math.nan, 0.5, math.inf, 0.3, 0.4]),
])
def test_a_non_finite_score_is_the_worst_and_never_the_best(
        make_toy, scripted_fit, tmp_path, caplog, greater_is_better, scores):
    """issue 12 item 9: a NaN (or inf) validation score never becomes the best once a finite
    one exists, and a later finite score improves on a NaN best."""
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="pipeline.engine.trainer"):
        fit = scripted_fit(make_toy(), scores, tmp_path, greater_is_better=greater_is_better)
    # epoch 1's NaN was best only while there was nothing else; epoch 2 beat it, epoch 4 won
    assert fit.history.best_epoch == 4
    assert fit.history.best_score == scores[3]
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 4 and best["score"] == scores[3]
    for key, value in best["model"].items():
        torch.testing.assert_close(value, fit.recorder.weights[3][key])
    assert [e["score"] for e in fit.history.epochs] == pytest.approx(scores, nan_ok=True)
    assert sum("the validation score is" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.usefixtures("one_thread")
def test_a_first_nan_score_is_kept_only_until_a_finite_one(make_toy, scripted_fit, tmp_path):
    """issue 12 item 9: a fit whose every score is NaN still checkpoints (its first epoch),
    and the first finite score after NaNs improves on them."""
    torch.manual_seed(0)
    fit = scripted_fit(make_toy(), [math.nan, math.nan], tmp_path)
    assert fit.history.best_epoch == 1 and math.isnan(fit.history.best_score)
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 1
    trainer = fit.trainer
    assert trainer.history.improves(-1e9, greater_is_better=True)
    assert trainer.history.improves(1e9, greater_is_better=False)
    assert not trainer.history.improves(math.nan, greater_is_better=True)
    trainer.history.best_score = 0.5
    assert not trainer.history.improves(math.nan, greater_is_better=True)
    assert not trainer.history.improves(-math.inf, greater_is_better=False)
    assert trainer.history.improves(0.6, greater_is_better=True)


def _strict_json(path: Path) -> Any:
    """Parse ``path`` as standard JSON: NaN and Infinity (Python's extension) are refused."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}, which JSON readers refuse")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_pearson_of_a_constant_prediction_completes_the_run_with_null_scores(
        competition_factory):
    """issue 12 item 9: a regression run scored by Pearson whose model predicts one value
    for every row (its inputs are constant) has NaN scores: every fold completes and
    metrics.json / scores.json hold them as null."""
    # 16 validation rows per fold: numpy's mean of 16 equal numbers is exact, so the
    # correlation of a constant prediction is 0/0 = NaN (for some sizes the mean's rounding
    # leaves a ~1e-17 "correlation" instead)
    data = competition_factory("tabular", "regression", n_train=32)
    data["competition"]["metric"] = "pearson"
    data["folds"]["scheme"] = "kfold"
    comp_dir = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        # constant inputs: the MLP gives every row the same output
        frame = pd.read_csv(comp_dir / name).assign(x1=1.0, x2=2.0, color="red")
        frame.to_csv(comp_dir / name, index=False)
    data["train"].update(mixed_precision="no", epochs=2)
    cfg = build_config(data)
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    assert oof.groupby("fold")["y"].agg(["size", "nunique"]).to_numpy().tolist() == [
        [16, 1], [16, 1]]
    for fold in (0, 1):
        metrics = _strict_json(cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json")
        assert [e["score"] for e in metrics["epochs"]] == [None, None]
        # the first NaN was kept (nothing to beat), the second did not replace it
        assert metrics["best_score"] is None and metrics["best_epoch"] == 1
    scores = _strict_json(cfg.run_dir / "scores.json")["scores"]
    assert scores["seed0/fold0"] is None and scores["seed0/fold1"] is None
    # the whole OOF mixes two folds' constants: a real, finite correlation
    assert math.isfinite(scores["oof"])


def test_the_loss_scaler_state_travels_in_the_resume_point(make_toy):
    """issue 12 item 10: an fp16 run's dynamic loss scale (and growth tracker) is saved in
    last.pt and restored, so a resumed run does not restart at the initial scale."""
    def trainer_with_scaler() -> Trainer:
        model = make_toy()
        trainer = Trainer(model, Accelerator(cpu=True))
        # the CPU stand-in of the scaler Accelerate makes for fp16 on a GPU
        trainer.accelerator.scaler = torch.amp.GradScaler(
            "cpu", init_scale=1024.0, growth_interval=3)
        trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return trainer

    torch.manual_seed(0)
    trainer = trainer_with_scaler()
    scaler, opt = trainer.accelerator.scaler, trainer.optimizer
    param = next(trainer.unwrapped.parameters())
    scaler.scale(param.sum())  # the first scale() sets the scale up
    for grad in (math.inf, 1.0):  # an overflow halves the scale; a finite step counts growth
        param.grad = torch.full_like(param, grad)
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 512.0 and scaler.state_dict()["_growth_tracker"] == 1
    buffer = io.BytesIO()  # through torch.save, as last.pt stores it
    torch.save(trainer._resume_state(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    assert saved["scaler"] == scaler.state_dict()

    fresh = trainer_with_scaler()
    assert fresh.accelerator.scaler.get_scale() == 1024.0
    fresh._load_resume_state(saved, plans=[])
    assert fresh.accelerator.scaler.state_dict() == scaler.state_dict()
    assert fresh.accelerator.scaler.get_scale() == 512.0


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_checkpoint_last_writes_the_last_epoch_and_keeps_the_best_in_the_history(
        make_toy, scripted_fit, tmp_path, checkpoint):
    """issue 12 item 14: checkpoint 'last' makes best.pt the last epoch's weights while the
    history still names the best epoch; 'best' keeps the best epoch's; either way the
    history holds the last epoch's validation outputs (the unselected OOF)."""
    torch.manual_seed(0)
    fit = scripted_fit(make_toy(), [0.5, 0.9, 0.4], tmp_path, checkpoint=checkpoint)
    assert fit.history.best_epoch == 2 and fit.history.best_score == 0.9
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    chosen = 3 if checkpoint == "last" else 2
    assert best["epoch"] == chosen
    for key, value in best["model"].items():
        torch.testing.assert_close(value, fit.recorder.weights[chosen - 1][key])
    assert not torch.equal(fit.recorder.weights[1]["head.0.weight"],
                           fit.recorder.weights[2]["head.0.weight"])
    assert fit.history.last_outputs is not None
    np.testing.assert_array_equal(fit.history.last_outputs, fit.outputs[-1])
    assert not np.array_equal(fit.outputs[1], fit.outputs[2])


@pytest.mark.usefixtures("one_thread")
def test_best_chooses_among_the_epochs_from_best_from_on(make_toy, scripted_fit, tmp_path):
    """issue 18: a consistency run's warm-up epochs never become its best, however its few
    validation rows score them (epoch 1 scores highest here; epoch 3 is the best allowed)."""
    torch.manual_seed(0)
    fit = scripted_fit(make_toy(), [0.9, 0.95, 0.6, 0.7, 0.65], tmp_path, best_from=3)
    assert fit.history.best_epoch == 4 and fit.history.best_score == 0.7
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 4


def test_a_tie_goes_to_the_later_epoch_when_asked(make_toy, scripted_fit, tmp_path):
    """issue 18: on 30 validation rows a consistency stage's epochs tie often; the earlier of
    two tied epochs had been chosen, after one pass over the unlabelled rows of five (MNIST:
    every fold of a seed). A consistency run (later_ties) takes the later; others keep the
    earlier, as Keras and Lightning do."""
    scores = [0.9, 0.967, 0.933, 0.967, 0.967, 0.9]
    torch.manual_seed(0)
    kept = scripted_fit(make_toy(), scores, tmp_path / "a")
    assert kept.history.best_epoch == 2
    torch.manual_seed(0)
    later = scripted_fit(make_toy(), scores, tmp_path / "b", best_from=2, later_ties=True)
    assert later.history.best_epoch == 5 and later.history.best_score == 0.967
    assert torch.load(tmp_path / "b" / "best.pt", weights_only=False)["epoch"] == 5


@pytest.mark.usefixtures("one_thread")
def test_each_epoch_records_the_validation_loss_of_the_scored_outputs(make_toy, scripted_fit,
                                                                      tmp_path, caplog):
    """issue 15 item 8: the epoch line and history carry the validation loss (the main loss
    on the outputs that were scored), not only the training loss."""
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="pipeline.engine.trainer"):
        fit = scripted_fit(make_toy(), [0.5, 0.6], tmp_path)
    x = torch.randn(24, 8, generator=torch.Generator().manual_seed(0))[:8]
    for epoch, outputs in zip(fit.history.epochs, fit.outputs, strict=True):
        expected = float(((torch.from_numpy(outputs).float() - x[:, :1] * 2) ** 2).mean())
        assert epoch["valid_loss"] == pytest.approx(expected, rel=1e-5)
    assert f"valid_loss {fit.history.epochs[-1]['valid_loss']:.4f}" in caplog.text


def test_validation_scores_the_main_loss_without_auxiliary_terms():
    from pipeline.engine.contrastive import with_aux_losses

    main = build_loss("cross_entropy", "multiclass")
    wrapped = with_aux_losses(main, nn.Linear(2, 2), [("supcon", 0.5, {})])
    assert wrapped is not main and wrapped.main is main


def test_a_step_without_a_loss_scaler_skips_accelerates_wrappers(
        make_toy, monkeypatch) -> None:
    """Accelerate's AcceleratedOptimizer.step searches the file system for 'lomo_optim' twice
    per call and Accelerator.backward divides the loss by 1; without a loss scaler they add
    nothing else, so the loop calls the optimizer and the loss's backward itself: the same
    weights as through the wrappers."""
    import accelerate.optimizer

    from pipeline.engine import build_accelerator

    def run(through_wrapper: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        accelerator = build_accelerator("no")
        trainer = Trainer(make_toy(), accelerator)
        initial.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        opt = accelerator.prepare_optimizer(torch.optim.AdamW(trainer.model.parameters()))
        if not through_wrapper:  # the wrapper's step must not run at all
            monkeypatch.setattr(accelerate.optimizer.AcceleratedOptimizer, "step",
                                lambda self, closure=None: pytest.fail("wrapper stepped"))
            monkeypatch.setattr(type(accelerator), "backward",
                                lambda self, loss: pytest.fail("wrapper's backward"))
        else:  # the old way: through the wrappers
            monkeypatch.setattr("pipeline.engine.trainer.backward",
                                lambda acc, loss: acc.backward(loss))
            def through(o):
                o.step()
                o.zero_grad(set_to_none=True)

            monkeypatch.setattr("pipeline.engine.trainer.update", through)
        g = torch.Generator().manual_seed(1)
        rows = [{"num": torch.randn(4, 8, generator=g), "target": torch.randn(4, 1, generator=g)}
                for _ in range(3)]
        trainer.train_epoch(rows, opt, None,  # type: ignore[arg-type]
                            lambda out, b: ((out - b["target"]) ** 2).mean())
        monkeypatch.undo()
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}

    initial: dict[str, torch.Tensor] = {}
    direct, wrapped = run(False), run(True)
    assert not torch.equal(direct["head.0.weight"], initial["head.0.weight"])  # it trained
    assert direct.keys() == wrapped.keys()
    for key in direct:
        assert torch.equal(direct[key], wrapped[key])


def test_fp16_clipping_unscales_a_later_stage_once(make_toy, monkeypatch) -> None:
    """fp16 with max_grad_norm: Accelerate's clip_grad_norm_ unscaled the gradients through
    every optimizer it had prepared; the first stage's holds the same parameters, so a second
    stage's gradients were divided by the loss scale twice (updates 1024x too small here)."""
    import contextlib

    import pipeline.engine.trainer as trainer_module
    from pipeline.engine import StagePlan

    # a CPU stand-in of fp16 on a GPU: Accelerate's scaler and its fp16 switch, no autocast
    monkeypatch.setattr(trainer_module, "autocast", lambda acc: contextlib.nullcontext())
    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "fp16"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    rows = [{"num": x[i:i + 8], "target": x[i:i + 8, :1] * 2} for i in (0, 8)]
    loss_fn = build_loss("mse", "regression")

    def step_size(stages_before: int) -> float:
        torch.manual_seed(0)
        model = make_toy()
        accelerator = Accelerator(cpu=True)
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        trainer = Trainer(model, accelerator, max_grad_norm=100.0)
        plan = StagePlan(epochs=1, loader=rows,  # type: ignore[arg-type]
                         make_optimizer=lambda: torch.optim.SGD(model.parameters(), lr=0.1),
                         make_schedule=lambda opt, updates: None, loss_fn=loss_fn)
        for _ in range(stages_before + 1):
            trainer._start_stage(plan)
        before = model.head[0].weight.detach().clone()
        trainer.train_epoch(rows, trainer.optimizer, None, loss_fn)  # type: ignore[arg-type]
        return float((model.head[0].weight.detach() - before).abs().sum())

    first = step_size(0)
    assert first > 1e-3
    assert step_size(1) == pytest.approx(first, rel=1e-5)

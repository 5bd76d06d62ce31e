"""The training recipe: optimizers, parameter groups, schedules, losses, stages, tricks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from pipeline import train
from pipeline.callbacks import cycle_end_epochs, snapshot_paths
from pipeline.config import (
    EncoderConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    build_config,
)
from pipeline.engine import Trainer, apply_freeze
from pipeline.losses import build_loss
from pipeline.models import CompetitionModel, TimmEncoder, build_model
from pipeline.optim import build_optimizer, build_scheduler, parameter_groups

OPTIMIZERS = [
    ("momentum", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adamw", {}), ("radam", {}), ("lars", {}), ("lamb", {}),
    ("lookahead_adamw", {}), ("lookahead_sgd", {"momentum": 0.9}),
]


class Toy(nn.Module):
    """A linear head over tabular input, shaped like a CompetitionModel."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([nn.Identity()])
        self.head = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["num"])


def _toy_model_config() -> ModelConfig:
    return ModelConfig(encoders=[EncoderConfig(name="mlp")])


@pytest.mark.parametrize(("name", "params"), OPTIMIZERS)
def test_every_optimizer_lowers_the_loss(name, params):
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    model = Toy()
    cfg = OptimizerConfig(name=name, lr=0.05 if "sgd" in name or name == "momentum" else 0.01,
                          weight_decay=0.0, params=params)
    opt = build_optimizer(parameter_groups(model, _toy_model_config(), cfg), cfg)  # type: ignore[arg-type]
    first = F.mse_loss(model({"num": x}), y).item()
    for _ in range(150):
        loss = F.mse_loss(model({"num": x}), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert F.mse_loss(model({"num": x}), y).item() < 0.5 * first


def _lrs(sched_cfg: SchedulerConfig, epochs: int, per_epoch: int, scores=None) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [param], "lr": 1.0}], lr=1.0)
    schedule = build_scheduler(opt, sched_cfg, epochs, per_epoch, greater_is_better=True)
    lrs = []
    for epoch in range(epochs):
        for update in range(1, per_epoch + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.after_update(epoch * per_epoch + update)
        schedule.after_epoch(epoch + 1, scores[epoch] if scores else 0.0)
    lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_cosine_with_warmup_gives_the_expected_lr():
    lrs = _lrs(SchedulerConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.0), 5, 10)
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(0.5)  # half-way through a linear warmup
    assert lrs[10] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 50)))
    assert lrs[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 50)))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_linear_constant_and_onecycle_schedules():
    lin = _lrs(SchedulerConfig(name="linear", min_lr_ratio=0.0), 2, 10)
    assert lin[10] == pytest.approx(0.5)
    const = _lrs(SchedulerConfig(name="constant"), 2, 10)
    assert set(const) == {1.0}
    one = _lrs(SchedulerConfig(name="onecycle", pct_start=0.25), 4, 10)
    assert int(np.argmax(one)) == pytest.approx(10, abs=1)  # peak at 25% of 40 updates
    assert max(one) == pytest.approx(1.0, rel=1e-3)
    assert one[0] < 0.1 and one[-1] < 1e-3


def test_warm_restarts_return_to_the_peak_each_cycle():
    lrs = _lrs(SchedulerConfig(name="restarts", cycle_epochs=2, min_lr_ratio=0.0), 6, 10)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[19] < 0.01  # end of the first cycle
    assert lrs[20] == pytest.approx(1.0)  # restart
    assert lrs[40] == pytest.approx(1.0)
    assert cycle_end_epochs([6], [(2.0, 1.0)]) == [2, 4, 6]
    assert cycle_end_epochs([3, 7], [None, (1.0, 2.0)]) == [4, 6, 10]


def test_plateau_cuts_the_lr_after_patience_epochs_without_gain():
    cfg = SchedulerConfig(name="plateau", patience=1, factor=0.5, min_lr_ratio=0.0)
    lrs = _lrs(cfg, 5, 2, scores=[0.5, 0.6, 0.6, 0.6, 0.6])
    per_epoch = lrs[::2]  # lr during epochs 1..5, then after the last
    # best 0.6 at epoch 2; epochs 3 and 4 bring no gain: more than `patience` -> halve
    assert per_epoch == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5])


def _two_encoder_model() -> tuple[CompetitionModel, ModelConfig]:
    cfg = ModelConfig(encoders=[EncoderConfig(name="timm:test_resnet", lr=1e-4),
                                EncoderConfig(name="timm:test_efficientnet")])
    encoders = [TimmEncoder(e) for e in cfg.encoders]
    return CompetitionModel(encoders, 3, 0.0, 0), cfg


def test_discriminative_rates_layer_decay_and_no_decay_groups():
    model, cfg = _two_encoder_model()
    optim = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    groups = parameter_groups(model, cfg, optim)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    head_w = model.head[-1].weight
    assert lr_of[id(head_w)] == (1e-3, 0.05)
    assert lr_of[id(model.head[-1].bias)] == (1e-3, 0.0)
    body = model.encoders[0].body
    first, last = body.conv1[0].weight, body.layer4[-1].conv2.weight
    depths = sorted({lr for p in model.encoders[0].parameters() for lr in [lr_of[id(p)][0]]})
    assert lr_of[id(last)][0] == pytest.approx(1e-4)  # the top block keeps the encoder's lr
    assert lr_of[id(first)][0] == pytest.approx(1e-4 * 0.5 ** (len(depths) - 1))
    assert all(lr_of[id(p)][1] == 0.0 for n, p in body.named_parameters() if p.ndim == 1)
    effnet_lrs = {lr_of[id(p)][0] for p in model.encoders[1].parameters()}
    assert max(effnet_lrs) == pytest.approx(1e-3)  # second encoder: the optimizer's lr


def test_frozen_encoder_keeps_its_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model, cfg = _two_encoder_model()
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


def test_focal_with_gamma_zero_equals_cross_entropy_and_bce():
    torch.manual_seed(0)
    logits = torch.randn(16, 4)
    target = torch.randint(0, 4, (16,))
    ce = build_loss("cross_entropy", "multiclass")(logits, {"target": target})
    focal0 = build_loss("focal", "multiclass", {"gamma": 0.0})(logits, {"target": target})
    assert focal0.item() == pytest.approx(ce.item(), rel=1e-6)
    focal2 = build_loss("focal", "multiclass", {"gamma": 2.0})(logits, {"target": target})
    assert focal2.item() < ce.item()
    bl, bt = torch.randn(16, 3), torch.randint(0, 2, (16, 3)).float()
    bce = build_loss("bce", "multilabel")(bl, {"target": bt})
    f0 = build_loss("focal", "multilabel", {"gamma": 0.0})(bl, {"target": bt})
    assert f0.item() == pytest.approx(bce.item(), rel=1e-6)


def test_label_smoothing_and_temperature_match_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    eps = 0.1
    logp = torch.log_softmax(logits, dim=1)[0]
    soft = torch.tensor([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -(soft * logp).sum().item()
    got = build_loss("cross_entropy", "multiclass", {"smoothing": eps})(logits, {"target": target})
    assert got.item() == pytest.approx(expected, rel=1e-6)
    bce = build_loss("bce", "binary", {"smoothing": 0.2})(torch.tensor([[0.0]]),
                                                          {"target": torch.tensor([[1.0]])})
    assert bce.item() == pytest.approx(math.log(2), rel=1e-6)  # p=0.5 for any target
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="timm:test_resnet")],
                                    head={"temperature": 2.0}), 3, None)
    model.eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = model.head(model.encoders[0]({"image": image}))
        scaled = model({"image": image})
    torch.testing.assert_close(scaled, raw / 2.0)
    hand = -torch.log_softmax(raw / 2.0, dim=1)[0, 1].item()
    with torch.no_grad():
        got_t = build_loss("cross_entropy", "multiclass")(scaled[:1], {"target": torch.tensor([1])})
    assert got_t.item() == pytest.approx(hand, rel=1e-5)


def test_weighted_sum_of_losses():
    logits, target = torch.randn(8, 3), torch.randint(0, 3, (8,))
    batch = {"target": target}
    total = build_loss("sum", "multiclass", terms=[
        ("cross_entropy", 0.3, {}), ("focal", 0.7, {"gamma": 2.0})])(logits, batch)
    ce = build_loss("cross_entropy", "multiclass")(logits, batch)
    fo = build_loss("focal", "multiclass", {"gamma": 2.0})(logits, batch)
    assert total.item() == pytest.approx(0.3 * ce.item() + 0.7 * fo.item(), rel=1e-6)


def test_gradient_accumulation_matches_the_larger_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 8), torch.randn(8, 1)
    loss_fn = build_loss("mse", "regression")
    weights = []
    for batch_size, accum in ((8, 1), (4, 2)):
        torch.manual_seed(1)
        model = Toy()
        trainer = Trainer(model, Accelerator(cpu=True))
        batches = [{"num": x[i:i + batch_size], "target": y[i:i + batch_size]}
                   for i in range(0, 8, batch_size)]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer.train_epoch(batches, opt, None, loss_fn, grad_accum_steps=accum)  # type: ignore[arg-type]
        assert trainer.stage_updates == 1
        weights.append(model.head[0].weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def _run(competition_factory, name="plain", **train_overrides):
    data = competition_factory("tabular", "multiclass", n_train=96)
    data["name"] = name
    # float32 on a GPU too: the tests compare the run's predictions with a CPU recomputation
    data["train"].update({"mixed_precision": "no", **train_overrides})
    cfg = build_config(data)
    train.run(cfg)
    return cfg


def _history(cfg, fold=0):
    import json

    return json.loads((cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json").read_text())


def test_two_stage_run_switches_batch_size_and_optimizer(competition_factory):
    cfg = _run(competition_factory, epochs=2, batch_size=8, stages=[{
        "epochs": 2, "batch_size": 24,
        "optimizer": {"name": "lookahead_sgd", "lr": 0.01, "params": {"momentum": 0.9}},
        "loss": {"name": "focal", "params": {"gamma": 2.0}},
    }])
    epochs = _history(cfg)["epochs"]
    assert [e["stage"] for e in epochs] == [0, 0, 1, 1]
    assert [e["batch_size"] for e in epochs] == [8, 8, 24, 24]
    assert [e["updates"] for e in epochs] == [6, 12, 2, 4]  # 48 training rows per fold
    assert [e["optimizer"] for e in epochs] == ["AdamW", "AdamW", "Lookahead", "Lookahead"]


def test_early_stopping_ends_the_fold(competition_factory):
    cfg = _run(competition_factory, epochs=30, optimizer={"name": "adamw", "lr": 1e-6},
               early_stopping={"patience": 2})
    assert len(_history(cfg)["epochs"]) < 30


def _oof(cfg) -> pd.DataFrame:
    return pd.read_parquet(cfg.run_dir / "oof.parquet")


def test_ema_and_snapshot_predictions_differ_from_plain_and_fill_the_artifacts(
        competition_factory):
    plain = _run(competition_factory, epochs=4)
    base = _oof(plain)[["0", "1", "2"]].to_numpy()
    ema = _run(competition_factory, "ema", epochs=4, ema={"decay": 0.9})
    snap = _run(competition_factory, "snap", epochs=4, snapshots=True,
                scheduler={"name": "restarts", "cycle_epochs": 2})
    for cfg in (ema, snap):
        assert not np.allclose(base, _oof(cfg)[["0", "1", "2"]].to_numpy())
    fold_dir = snap.run_dir / "seed0" / "fold0"
    paths = snapshot_paths(fold_dir)
    assert [p.name for p in paths] == ["snapshot_0.pt", "snapshot_1.pt"]
    comp_oof = pd.read_parquet(fold_dir / "oof.parquet")
    mean = _predict_with(snap, fold_dir, paths)
    np.testing.assert_allclose(comp_oof[["0", "1", "2"]].to_numpy(), mean, atol=1e-6)
    assert _history(ema)["best_score"] is not None


def _predict_with(cfg, fold_dir, checkpoints) -> np.ndarray:
    """Mean of each checkpoint's held-out probabilities, computed by hand."""
    import json

    from pipeline.competition import load_competition
    from pipeline.data import CompetitionDataset, TabularEncoder, model_inputs
    from pipeline.folds import read_folds

    comp = load_competition(cfg.competition)
    folds = read_folds(cfg.folds_file, comp)
    prep = json.loads((fold_dir / "preprocess.json").read_text())
    tab = TabularEncoder.from_state_dict(prep["tabular"])
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


def test_ema_checkpoint_holds_the_averaged_weights(competition_factory):
    cfg = _run(competition_factory, "ema", epochs=1, ema={"decay": 0.5, "warmup": False})
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


def test_swa_makes_the_average_the_fold_model(competition_factory):
    cfg = _run(competition_factory, "swa", epochs=4, swa={"start_epoch": 2})
    fold_dir = cfg.run_dir / "seed0" / "fold0"
    history = _history(cfg)
    assert history["epochs"][-1].get("swa") is True
    assert history["best_epoch"] == 4
    np.testing.assert_allclose(
        pd.read_parquet(fold_dir / "oof.parquet")[["0", "1", "2"]].to_numpy(),
        _predict_with(cfg, fold_dir, [fold_dir / "best.pt"]), atol=1e-6)


def test_the_stage_accelerator_does_not_scale_the_loss_again(competition_factory):
    # accumulation belongs to the engine; Accelerate dividing the loss too would halve grads
    cfg = build_config({**competition_factory("tabular", "binary"),
                        "train": {"grad_accum_steps": 4}})
    assert train.build_accelerator(cfg).gradient_accumulation_steps == 1

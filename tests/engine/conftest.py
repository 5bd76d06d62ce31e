"""Shared by the engine tests: a toy tabular model, a two-encoder image model, a tiny tabular
run with its per-fold history, and a Trainer fit with scripted validation scores (one-thread
torch: tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from pipeline import train
from pipeline.config import ExperimentConfig, build_config
from pipeline.engine import Callback, FitHistory, StagePlan, Trainer
from pipeline.engine.losses import build_loss
from pipeline.models import CompetitionModel, EncoderConfig, ModelConfig, TimmEncoder


class Toy(nn.Module):
    """A linear head over tabular input, shaped like a CompetitionModel."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([nn.Identity()])
        self.head = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["num"])



@pytest.fixture
def make_toy() -> type[Toy]:
    """The toy model's class: tests build it where their random draws expect it."""
    return Toy


@pytest.fixture
def toy_model_config() -> ModelConfig:
    """A one-encoder model config matching :class:`Toy` (for parameter groups)."""
    return ModelConfig(encoders=[EncoderConfig(name="mlp")])


def _two_encoder_model() -> tuple[CompetitionModel, ModelConfig]:
    cfg = ModelConfig(encoders=[EncoderConfig(name="timm:test_resnet", lr=1e-4),
                                EncoderConfig(name="timm:test_efficientnet")])
    encoders = [TimmEncoder(e) for e in cfg.encoders]
    return CompetitionModel(encoders, 3, 0.0, 0), cfg


@pytest.fixture
def make_two_encoder_model() -> Callable[[], tuple[CompetitionModel, ModelConfig]]:
    """Builds a resnet + efficientnet model (the first encoder at its own lr) and its config."""
    return _two_encoder_model


@pytest.fixture
def tabular_run(competition_factory) -> Callable[..., ExperimentConfig]:
    """``run(name="plain", **train_overrides)``: train a tiny 3-class tabular competition."""

    def run(name: str = "plain", **train_overrides: Any) -> ExperimentConfig:
        data = competition_factory("tabular", "multiclass", n_train=96)
        data["name"] = name
        # float32 on a GPU too: the tests compare the run's predictions with a CPU recomputation
        data["train"].update({"mixed_precision": "no", **train_overrides})
        cfg = build_config(data)
        train.run(cfg)
        return cfg

    return run


@pytest.fixture
def fold_history() -> Callable[..., dict[str, Any]]:
    """``history(cfg, fold=0)``: the fold's metrics.json of seed 0."""

    def history(cfg: ExperimentConfig, fold: int = 0) -> dict[str, Any]:
        return json.loads((cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json").read_text())

    return history


class WeightRecorder(Callback):
    """Keeps a copy of the trained weights after every epoch (``weights[e - 1]``: epoch e)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.weights.append({k: v.detach().clone()
                             for k, v in trainer.unwrapped.state_dict().items()})


@dataclass
class ScriptedFit:
    """What :func:`scripted_fit` returns: the trainer, its history, each epoch's weights and
    the validation outputs each score was computed from."""

    trainer: Trainer
    history: FitHistory
    recorder: WeightRecorder
    outputs: list[np.ndarray]


def _scripted_fit(model: nn.Module, scores: list[float], out: Path,
                  callbacks: list[Callback] | None = None, greater_is_better: bool = True,
                  **trainer_kwargs: Any) -> ScriptedFit:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g)
    rows = [{"num": x[i], "target": x[i, :1] * 2} for i in range(24)]
    plan = StagePlan(
        epochs=len(scores), loader=DataLoader(rows, batch_size=8),  # type: ignore[arg-type]
        make_optimizer=lambda: torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.05),
        make_schedule=lambda opt, updates: None, loss_fn=build_loss("mse", "regression"),
        freeze=trainer_kwargs.pop("freeze", []))
    seen: list[np.ndarray] = []

    def score_fn(outputs: np.ndarray) -> float:
        seen.append(outputs.copy())
        # the scripted score of each epoch; a callback's extra scoring (SWA) gets 0
        return scores[len(seen) - 1] if len(seen) <= len(scores) else 0.0

    recorder = WeightRecorder()
    trainer = Trainer(model, Accelerator(cpu=True), callbacks=[recorder, *(callbacks or [])],
                      **trainer_kwargs)
    history = trainer.fit([plan], DataLoader(rows[:8], batch_size=8),  # type: ignore[arg-type]
                          score_fn, greater_is_better, out)
    return ScriptedFit(trainer, history, recorder, seen)


@pytest.fixture
def scripted_fit() -> Callable[..., ScriptedFit]:
    """``fit(model, scores, out, callbacks=None, greater_is_better=True, **trainer_kwargs)``:
    a one-stage fit of ``model`` (a batch dict with ``num`` (8 features) and ``target``)
    whose validation score at epoch e is ``scores[e - 1]``, checkpoints under ``out``."""
    return _scripted_fit

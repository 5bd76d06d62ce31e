"""Denoising autoencoder for tables, as in the Porto Seguro winning solution: rows corrupted
by swap noise (and optionally Gaussian noise) are reconstructed by a deep, wide network with
no narrow bottleneck; the features are the concatenated hidden activations ("take the middle
layers out"), fed to an MLP head or exported as a table for scikit-learn and GBDT members.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData
from pipeline.pretrain._tabular import (
    BUILDERS,
    ReconstructionHead,
    TabularInput,
    TabularObjectiveConfig,
    TabularSpace,
    column_probabilities,
    mlp,
    save_tabular,
    swap_noise,
    tabular_features,
    train_batches,
    unlabelled_space,
)
from pipeline.schema import Section


class DAEConfig(TabularObjectiveConfig):
    """``objective: {kind: dae, swap_p: 0.15, gaussian_std: 0.0, hidden: [1500, 1500, 1500]}``."""

    kind: Literal["dae"] = "dae"
    swap_p: float = Field(0.15, ge=0, lt=1)  # chance each cell takes another row's value
    swap_columns: dict[str, float] = Field(default_factory=dict)  # per-column swap_p
    gaussian_std: float = Field(0.0, ge=0)  # added to the gaussianised numbers
    # hidden layers (0-based) whose activations make the features; None: all of them
    feature_layers: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> DAEConfig:
        for column, p in self.swap_columns.items():
            if not 0 <= p < 1:
                raise ValueError(f"'swap_columns.{column}' must be in [0, 1). Got {p}.")
        bad = [i for i in self.feature_layers or [] if not 0 <= i < len(self.hidden)]
        if bad:
            raise ValueError(f"'feature_layers' must index 'hidden' (0..{len(self.hidden) - 1})."
                             f" Got {bad}.")
        return self


class TabularDAE(nn.Module):
    """Input space -> wide hidden layers -> reconstruction of the clean row."""

    def __init__(self, space: TabularSpace, cfg: DAEConfig) -> None:
        super().__init__()
        self.inputs = TabularInput(space)
        self.blocks = mlp(space.width, cfg.hidden, cfg.dropout)
        self.head = ReconstructionHead(cfg.hidden[-1], self.inputs)
        self.layers = list(cfg.feature_layers if cfg.feature_layers is not None
                           else range(len(cfg.hidden)))
        self.out_dim = sum(cfg.hidden[i] for i in self.layers)

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden layer's activations for input vectors ``x``."""
        states = []
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    def features(self, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """The chosen hidden activations, concatenated, for raw numbers and codes."""
        states = self.hidden(self.inputs.vector(*self.inputs.parts(num, cat)))
        return torch.cat([states[i] for i in self.layers], dim=1)


def _noisy_loss(model: TabularDAE, cfg: DAEConfig, probs: tuple[torch.Tensor, torch.Tensor]
                ) -> Any:
    def loss(num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        gauss, flags, codes = model.inputs.parts(num, cat)
        noisy = swap_noise(gauss, flags, codes, *probs, model.inputs.missing)
        if cfg.gaussian_std:
            noisy = (noisy[0] + cfg.gaussian_std * torch.randn_like(noisy[0]), *noisy[1:])
        hidden = model.hidden(model.inputs.vector(*noisy))[-1]
        return model.head.loss(hidden, gauss, flags, codes)

    return loss


def fit_dae(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
            seed: int) -> dict[str, Any]:
    """Train the DAE on every unlabelled row; write ``encoder.pt``."""
    assert isinstance(cfg, DAEConfig)
    space = unlabelled_space(cfg, data)
    torch.manual_seed(seed)  # the initial weights, before the loop reseeds for the epochs
    model = TabularDAE(space, cfg).to(device)
    num, cat = (t.to(device) for t in space.raw(data.frame))
    probs = column_probabilities(space, cfg.swap_p, cfg.swap_columns, device)
    losses = train_batches(model, cfg, (num, cat), _noisy_loss(model, cfg, probs), out_dir,
                           seed)
    save_tabular(out_dir, "dae", space, cfg, model)
    return {"losses": losses, "feature_width": model.out_dim, "input_width": space.width}



BUILDERS["dae"] = TabularDAE
OBJECTIVES.add("dae", Objective(DAEConfig, "tabular", fit_dae, "tabular", tabular_features),
               "denoising autoencoder (swap + Gaussian noise), hidden layers as features")

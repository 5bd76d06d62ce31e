"""Variational autoencoder for tables: the alternative to the denoising autoencoder, with the
same input space, saved encoder and feature interface. The encoder gives a Gaussian posterior
over a latent vector; training maximises the ELBO (reconstruction minus ``beta`` times the
KL divergence to the standard normal) through the reparameterisation trick; the features are
the posterior means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData
from pipeline.pretrain._tabular import (
    BUILDERS,
    ReconstructionHead,
    TabularInput,
    TabularObjectiveConfig,
    TabularSpace,
    mlp,
    save_tabular,
    tabular_features,
    train_batches,
    unlabelled_space,
)
from pipeline.schema import Section


class VAEConfig(TabularObjectiveConfig):
    """``objective: {kind: vae, latent: 32, beta: 1.0, hidden: [256, 256]}``."""

    kind: Literal["vae"] = "vae"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256], min_length=1)
    latent: int = Field(32, ge=1)
    beta: float = Field(1.0, ge=0)  # weight of the KL term (beta-VAE)


class TabularVAE(nn.Module):
    """Input space -> posterior (mean, log-variance) -> sample -> reconstruction."""

    def __init__(self, space: TabularSpace, cfg: VAEConfig) -> None:
        super().__init__()
        self.inputs = TabularInput(space)
        self.encoder = nn.Sequential(*mlp(space.width, cfg.hidden, cfg.dropout))
        self.posterior = nn.Linear(cfg.hidden[-1], 2 * cfg.latent)
        self.decoder = nn.Sequential(*mlp(cfg.latent, cfg.hidden[::-1], cfg.dropout))
        self.head = ReconstructionHead(cfg.hidden[0], self.inputs)
        self.latent = cfg.latent
        self.out_dim = cfg.latent

    def posterior_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the latent posterior of input vectors ``x``."""
        mean, log_var = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mean, log_var.clamp(-20.0, 20.0)

    def features(self, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Posterior means for raw numbers and codes."""
        return self.posterior_of(self.inputs.vector(*self.inputs.parts(num, cat)))[0]

    def elbo_loss(self, num: torch.Tensor, cat: torch.Tensor, beta: float) -> torch.Tensor:
        """Negative ELBO per column: reconstruction + beta * KL(q(z|x) || N(0, I))."""
        gauss, flags, codes = self.inputs.parts(num, cat)
        mean, log_var = self.posterior_of(self.inputs.vector(gauss, flags, codes))
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)  # reparameterisation
        recon = self.head.loss(self.decoder(z), gauss, flags, codes)
        kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(1).mean()
        # the reconstruction is a mean over columns; the KL is scaled alike, so beta keeps
        # its meaning whatever the table's width
        columns = self.head.n_dense + len(self.head.cardinalities)
        return recon + beta * kl / max(1, columns)


def fit_vae(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
            seed: int) -> dict[str, Any]:
    """Train the VAE on every unlabelled row; write ``encoder.pt``."""
    assert isinstance(cfg, VAEConfig)
    space = unlabelled_space(cfg, data)
    torch.manual_seed(seed)
    model = TabularVAE(space, cfg).to(device)
    num, cat = (t.to(device) for t in space.raw(data.frame))
    losses = train_batches(model, cfg, (num, cat),
                           lambda n, c: model.elbo_loss(n, c, cfg.beta), out_dir, seed)
    save_tabular(out_dir, "vae", space, cfg, model)
    return {"losses": losses, "feature_width": model.out_dim, "input_width": space.width}


BUILDERS["vae"] = TabularVAE
OBJECTIVES.add("vae", Objective(VAEConfig, "tabular", fit_vae, "tabular", tabular_features),
               "variational autoencoder (ELBO, beta-weighted KL), posterior means as features")

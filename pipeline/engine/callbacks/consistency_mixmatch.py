"""MixMatch (Berthelot et al. 2019) as a consistency method: the label of an unlabelled row is
the sharpened mean prediction over K weak views; labelled and unlabelled rows are mixed with a
partner drawn from both (mixup, lambda = max(l, 1 - l), l ~ Beta(alpha, alpha)), pixels for
image-only models and pooled features otherwise (as MixText does for text); labelled rows take
the configured loss, unlabelled ones the squared error of their probabilities.

Registered here, beside the method (:data:`CONSISTENCY` lives with the config that validates
names against it); :mod:`pipeline.engine.callbacks.consistency` imports this module, so the
name is known wherever the callbacks package is.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.datasets import Batch, view_of
from pipeline.engine.callbacks.consistency_losses import Step, encoded_targets, sharpen
from pipeline.engine.callbacks.consistency_methods import (
    CONSISTENCY,
    ConsistencyConfig,
    ConsistencyMethod,
)
from pipeline.engine.losses import LossFn
from pipeline.models.network import embedding_noise
from pipeline.task_outputs import probabilities


class MixMatch(ConsistencyMethod):
    """Guessed labels from K weak views, sharpened, then mixup of every row (pixels for
    image-only models, pooled features otherwise)."""

    defaults: ClassVar[dict[str, float | None]] = {
        "weight": 75.0, "threshold": None, "temperature": 0.5}
    mixes_rows = True
    # the paper ramps lambda_u = 75 up linearly; at full weight from the first step the
    # guessed labels of an untrained model swamp the labelled loss
    ramp_fraction = 0.5

    def __init__(self, cfg: ConsistencyConfig, task: str, n_outputs: int | None = None,
                 image_only: bool = False) -> None:
        if n_outputs is None:
            raise ValueError("MixMatch needs n_outputs: it one-hot encodes class indices")
        super().__init__(cfg, task, n_outputs, image_only)
        self.beta = torch.distributions.Beta(cfg.alpha, cfg.alpha)

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {f"weak{k}": "weak" for k in range(cfg.augmentations)}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        views = [view_of(unlabelled, name) for name in self.views]
        noisy = embedding_noise(model, self.cfg.embedding_noise)  # the views of tabular rows
        with torch.no_grad(), noisy:
            guess = torch.stack([probabilities(self.task, model(v)) for v in views]).mean(0)
            guess = sharpen(self.task, guess, self.cfg.resolved("temperature"))
        n = len(batch["target"])
        targets = torch.cat([encoded_targets(self.task, batch["target"], self.n_outputs),
                             guess.repeat(len(views), 1)])
        lam = float(self.beta.sample())
        lam = max(lam, 1 - lam)  # the mixed row stays closer to its own
        perm = torch.randperm(len(targets), device=targets.device)
        mixed_targets = lam * targets + (1 - lam) * targets[perm]
        if self.image_only:
            images = torch.cat([batch["image"], *(v["image"] for v in views)])
            outputs = model({"image": lam * images + (1 - lam) * images[perm]})
        else:
            core: Any = getattr(model, "module", model)  # the model under any DDP wrapper
            with embedding_noise(model, self.cfg.embedding_noise):
                unlabelled_features = [core.encode(v) for v in views]
            features = torch.cat([core.encode(batch), *unlabelled_features])
            outputs = core.classify(lam * features + (1 - lam) * features[perm])
        labelled: Batch = {"target": mixed_targets[:n]}
        if "weight" in batch:
            weights = torch.cat([batch["weight"], batch["weight"].new_ones(len(targets) - n)])
            labelled["weight"] = lam * weights[:n] + (1 - lam) * weights[perm][:n]
        supervised = loss_fn(outputs[:n], labelled)
        unsup = F.mse_loss(probabilities(self.task, outputs[n:]), mixed_targets[n:])
        return supervised + weight * unsup, Step(unsup.detach(), unsup.new_ones(()))


CONSISTENCY.add("mixmatch", MixMatch)

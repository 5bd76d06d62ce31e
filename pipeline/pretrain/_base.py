"""What every pretraining objective shares: the rows it sees, its registry entry, and the
epoch loop that makes a killed run resume to the same weights.

An objective trains an encoder without the target on train + test (+ extra unlabelled) rows
and writes it into a work folder; the stage (:mod:`pipeline.pretraining`) chooses the rows,
publishes the folder atomically and records what it saw. A training config then names the
result as an encoder (``{name: "pretrained:<name>"}``), which :attr:`Objective.encoder` tells
:mod:`pipeline.models.encoders` how to build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.competition import Competition
from pipeline.engine.state import rng_state, save_checkpoint, seed_everything, set_rng_state
from pipeline.errors import ConfigError
from pipeline.registry import Registry
from pipeline.schema import Section

RESUME_FILE = "resume.pt"  # the loop's resume point inside the work folder; not published


@dataclass(frozen=True)
class PretrainData:
    """The unlabelled rows an objective trains on."""

    frame: pd.DataFrame  # train + test + extra rows, target column(s) dropped, index 0..n-1
    comp: Competition  # column names, modality, image dir / text columns
    sources: dict[str, int]  # rows per source ("train", "test", "extra"), for the record


# fit(config, data, out_dir, device, seed) -> record fields (e.g. {"losses": [...]})
FitFn = Callable[[Section, PretrainData, Path, torch.device, int], dict[str, Any]]
# features(folder, frame, device) -> (rows, width) array: the encoder applied to new rows
FeaturesFn = Callable[[Path, pd.DataFrame, torch.device], np.ndarray]


@dataclass(frozen=True)
class Objective:
    """One pretraining objective: its config section, what it reads, how it trains, and
    how a training config uses what it wrote.

    ``encoder`` is one of ``"hf"`` (the folder is a transformers model + tokenizer),
    ``"timm"`` (a timm state dict), ``"tabular"`` (a DAE/VAE encoder over the feature
    columns) or ``"embeddings"`` (token vectors from skip-gram / DeepWalk).
    """

    config: type[Section]  # has ``kind: Literal["<name>"]``
    modality: str  # "tabular" | "text" | "image" | "sequence"
    fit: FitFn
    encoder: str
    # the trained encoder as a feature table (for scikit-learn / GBDT members); None when
    # the objective's output is only usable inside a network
    features: FeaturesFn | None = field(default=None)


OBJECTIVES: Registry[Objective] = Registry("pretrain objective")


def fit_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    run_epoch: Callable[[int], float],
    out_dir: Path,
    seed: int,
    *,
    scheduler: Any | None = None,
) -> list[float]:
    """Run ``run_epoch(epoch)`` for ``epoch`` in ``range(epochs)`` and return its losses.

    After each epoch the model, optimizer (and scheduler), every random generator and the
    losses so far go to ``out_dir / "resume.pt"``; a call that finds that file continues
    from the epoch after it. Because the generators are restored too, a run killed at any
    point ends with the same weights as one that never stopped, provided ``run_epoch`` draws
    its randomness (shuffles, noise, dropout) from the global generators.

    Args:
        model: the module being trained (its state dict is saved).
        optimizer: its optimizer.
        epochs: total number of epochs.
        run_epoch: trains one epoch, returns its mean loss.
        out_dir: the objective's work folder.
        seed: seeds every generator before the first epoch.
        scheduler: anything with ``state_dict``/``load_state_dict`` stepped by ``run_epoch``.

    Returns:
        The mean loss of every epoch, resumed ones included.
    """
    path = Path(out_dir) / RESUME_FILE
    losses: list[float] = []
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        losses = [float(v) for v in state["losses"]]
    else:
        seed_everything(seed)
    for epoch in range(len(losses), epochs):
        model.train()
        losses.append(float(run_epoch(epoch)))
        if not np.isfinite(losses[-1]):  # NaN weights stay NaN: the encoder was published
            # as it was, and every run built on it diverged, blaming its own learning rate
            raise ConfigError(f"pretraining diverged: the loss of epoch {epoch + 1} is "
                              f"{losses[-1]}. Lower the learning rate ('objective.lr')")
        save_checkpoint(path, {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
            "losses": losses,
        })
    model.eval()
    return losses

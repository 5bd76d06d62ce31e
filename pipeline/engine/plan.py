"""What the training loop runs and records: a stage ready to run, the fit's history, the
frozen parts of a stage, and whether to draw progress bars."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data.datasets import Batch
from pipeline.engine.losses import LossFn
from pipeline.errors import ConfigError


@dataclass
class StagePlan:
    """One training stage, ready to run."""

    epochs: int
    loader: DataLoader[Batch]
    make_optimizer: Callable[[], torch.optim.Optimizer]  # called after freezing
    make_schedule: Callable[[torch.optim.Optimizer, int], Any]  # (optimizer, updates/epoch)
    loss_fn: LossFn
    freeze: list[str] = field(default_factory=list)
    grad_accum_steps: int = 1
    label: str = ""


@dataclass
class FitHistory:
    """Per-epoch record of a fit."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float | None = None
    # raw validation outputs of the last epoch: the last-epoch OOF, which no epoch selection
    # has seen (the best epoch's score is chosen on the same rows, so it is optimistic)
    last_outputs: np.ndarray | None = None

    def improves(self, score: float, greater_is_better: bool, ties: bool = False) -> bool:
        """Whether ``score`` beats the best so far (or equals it, with ``ties``). A non-finite
        score (Pearson of a constant prediction) is the worst there is: it improves only on
        nothing at all, and any finite score improves on it."""
        best = self.best_score
        if best is None:
            return True
        if not math.isfinite(score):
            return False
        if not math.isfinite(best):
            return True
        if ties and score == best:
            return True
        return score > best if greater_is_better else score < best


def show_progress() -> bool:
    """Progress bars on a terminal only (a redirected log gets the per-epoch lines, not
    thousands of bar redraws), and never with PIPELINE_PROGRESS=0 (``pipeline --quiet``)."""
    return os.environ.get("PIPELINE_PROGRESS", "1") != "0" and sys.stderr.isatty()


def quiet_library_progress() -> None:
    """Transformers' own progress bars ('Loading weights', once per fold) follow ours: none
    off a terminal or under ``--quiet`` (a redirected log got a bar's redraws per fold)."""
    if show_progress():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read as transformers loads
    if "transformers" in sys.modules:  # loaded already (an earlier call in this process)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


# set on a module that its encoder's own config froze (``params: {freeze: true}`` of a
# pretrained tabular encoder): frozen in every stage, whatever ``train.freeze`` lists
ALWAYS_FROZEN = "always_frozen"


def apply_freeze(model: nn.Module, paths: list[str]) -> list[nn.Module]:
    """Freeze the modules at ``paths`` (dotted, e.g. ``encoders.0``) and those marked
    :data:`ALWAYS_FROZEN`, unfreeze the rest; returns the frozen modules, which the loop keeps
    in eval mode (batch-norm statistics untouched)."""
    for param in model.parameters():
        param.requires_grad_(True)
    frozen = [m for m in model.modules() if getattr(m, ALWAYS_FROZEN, False)]
    for module in frozen:
        module.requires_grad_(False)
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            top = [n for n, _ in model.named_children()]
            raise ConfigError(
                f"'train.freeze': no module {path!r} in the model. Top-level modules: {top} "
                "(encoders are 'encoders.0', 'encoders.1', ...)"
            ) from None
        module.requires_grad_(False)
        frozen.append(module)
    return frozen

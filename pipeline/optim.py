"""Optimizers and learning-rate schedules, built with timm's factories."""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, PolyLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler

from pipeline.config import OptimizerConfig, SchedulerConfig


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Any optimizer timm knows, over parameter groups that carry their own lr and decay."""
    return create_optimizer_v2(groups, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               **cfg.params)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, updates_per_epoch: int
) -> Scheduler:
    """A timm schedule stepped after every optimizer update, with linear warmup.

    ``cosine`` decays to ``min_lr_ratio`` x lr, ``linear`` decays linearly to it, ``constant``
    holds the lr after warmup.
    """
    total = max(1, epochs * updates_per_epoch)
    warmup = int(round(cfg.warmup_epochs * updates_per_epoch))
    base = min(g["lr"] for g in optimizer.param_groups)
    common = {"t_in_epochs": False, "warmup_t": warmup, "warmup_lr_init": base * 0.01,
              "warmup_prefix": False}
    if cfg.name == "cosine":
        return CosineLRScheduler(optimizer, t_initial=total, lr_min=base * cfg.min_lr_ratio,
                                 **common)
    if cfg.name == "linear":
        return PolyLRScheduler(optimizer, t_initial=total, power=1.0,
                               lr_min=base * cfg.min_lr_ratio, **common)
    return StepLRScheduler(optimizer, decay_t=total + 1, decay_rate=1.0, **common)

"""Optimizers, parameter groups and learning-rate schedules over timm's and torch's factories.

Parameter groups give every encoder its own learning rate (discriminative rates for a
pretrained encoder vs a new head), optionally decayed layer by layer down the encoder, and
no weight decay for biases and normalisation weights.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.models import group_parameters
from timm.optim import create_optimizer_v2
from timm.scheduler import (
    CosineLRScheduler,
    PlateauLRScheduler,
    PolyLRScheduler,
    StepLRScheduler,
)
from torch import nn

from pipeline.config import ModelConfig, OptimizerConfig, SchedulerConfig
from pipeline.models import CompetitionModel, HFEncoder, TimmEncoder

_HF_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each parameter of an encoder (0 = input side) and the number of depths.

    timm models use their own ``group_matcher``; transformers encoders count embeddings as 0
    and ``layer.<i>`` as i + 1. Other encoders are one block.
    """
    names = [n for n, _ in encoder.named_parameters()]
    if isinstance(encoder, TimmEncoder) and hasattr(encoder.body, "group_matcher"):
        groups = group_parameters(encoder.body, encoder.body.group_matcher(coarse=False))
        ids = {f"body.{n}": i for i, (_, members) in enumerate(sorted(groups.items()))
               for n in members}
        return {n: ids.get(n, len(groups) - 1) for n in names}, len(groups)
    if isinstance(encoder, HFEncoder):
        depth = {n: int(m.group(1)) + 1 if (m := _HF_LAYER.search(n)) else 0 for n in names}
        top = max(depth.values(), default=0) + 1
        return {n: top if "pooler" in n else d for n, d in depth.items()}, top + 1
    return dict.fromkeys(names, 0), 1


def parameter_groups(
    model: CompetitionModel, cfg: ModelConfig, optim: OptimizerConfig
) -> list[dict[str, Any]]:
    """Groups by (module, depth, decay): each encoder at its own ``lr`` (``layer_decay``
    scaling it down the encoder), the head at the optimizer's ``lr``; biases and 1-d
    weights get no weight decay. Frozen parameters are left out."""
    groups: dict[tuple[int, int, bool], dict[str, Any]] = {}
    parts = [(enc, ecfg.lr or optim.lr, True)
             for enc, ecfg in zip(model.encoders, cfg.encoders, strict=True)]
    parts.append((model.head, optim.lr, False))
    for index, (module, lr, is_encoder) in enumerate(parts):
        depth, n_depths = layer_ids(module) if is_encoder else ({}, 1)
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            d = depth.get(name, 0)
            scale = optim.layer_decay ** (n_depths - 1 - d) if optim.layer_decay else 1.0
            decay = param.ndim > 1
            key = (index, d, decay)
            if key not in groups:
                groups[key] = {"params": [], "lr": lr * scale,
                               "weight_decay": optim.weight_decay if decay else 0.0}
            groups[key]["params"].append(param)
    return list(groups.values())


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Any optimizer timm knows (``lookahead_`` prefix included) over ready-made groups."""
    return create_optimizer_v2(groups, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               **cfg.params)


class Schedule:
    """A learning-rate schedule the engine steps after every update and every epoch.

    Wraps a timm scheduler (stepped per update, or per epoch with the validation metric for
    plateau) or torch's OneCycleLR.
    """

    def __init__(self, scheduler: Any, per_epoch: bool = False, onecycle: bool = False) -> None:
        self.scheduler = scheduler
        self.per_epoch = per_epoch
        self.onecycle = onecycle

    def after_update(self, num_updates: int) -> None:
        """Called after optimizer update number ``num_updates`` (1-based, within the stage)."""
        if self.onecycle:
            if num_updates < self.scheduler.total_steps:
                self.scheduler.step()
        elif not self.per_epoch:
            self.scheduler.step_update(num_updates)

    def after_epoch(self, epoch: int, score: float) -> None:
        """Called after epoch ``epoch`` (1-based, within the stage) with its validation score."""
        if self.per_epoch:
            self.scheduler.step(epoch, score)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped scheduler's state."""
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.scheduler.load_state_dict(state)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, updates_per_epoch: int,
    greater_is_better: bool = True,
) -> Schedule:
    """The configured schedule over ``epochs`` of ``updates_per_epoch`` updates."""
    total = max(1, epochs * updates_per_epoch)
    warmup = round(cfg.warmup_epochs * updates_per_epoch)
    common = {"t_in_epochs": False, "warmup_t": warmup, "warmup_lr_init": 0.0,
              "warmup_prefix": False}
    lowest = min(g["lr"] for g in optimizer.param_groups)
    lr_min = lowest * cfg.min_lr_ratio
    if cfg.name == "cosine":
        return Schedule(CosineLRScheduler(optimizer, t_initial=total, lr_min=lr_min, **common))
    if cfg.name == "restarts":
        cycle = max(1, round(cfg.cycle_epochs * updates_per_epoch))
        return Schedule(CosineLRScheduler(
            optimizer, t_initial=cycle, lr_min=lr_min, cycle_mul=cfg.cycle_mul,
            cycle_decay=cfg.cycle_decay, cycle_limit=total, **common))
    if cfg.name == "linear":
        return Schedule(PolyLRScheduler(optimizer, t_initial=total, power=1.0, lr_min=lr_min,
                                        **common))
    if cfg.name == "onecycle":
        peak = [g["lr"] for g in optimizer.param_groups]
        return Schedule(torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=total, pct_start=cfg.pct_start,
            cycle_momentum=False), onecycle=True)
    if cfg.name == "plateau":
        return Schedule(PlateauLRScheduler(
            optimizer, decay_rate=cfg.factor, patience_t=cfg.patience, lr_min=lr_min,
            mode="max" if greater_is_better else "min", warmup_t=0),
            per_epoch=True)
    return Schedule(StepLRScheduler(optimizer, decay_t=total + 1, decay_rate=1.0, **common))

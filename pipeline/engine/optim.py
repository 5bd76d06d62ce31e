"""Optimizers, parameter groups and learning-rate schedules over timm's and torch's factories.

Parameter groups give every encoder its own learning rate (discriminative rates for a
pretrained encoder vs a new head), optionally decayed layer by layer down the encoder, and
no weight decay for biases and normalisation weights.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import nn

from pipeline.models.encoders import HFEncoder, TimmEncoder
from pipeline.models.network import CompetitionModel, ModelConfig
from pipeline.registry import Registry
from pipeline.schema import Section


class OptimizerConfig(Section):
    """Any optimizer timm's ``create_optimizer_v2`` knows, by name.

    ``lookahead_<name>`` wraps it in Lookahead (e.g. ``lookahead_sgd``); ``sgd``/``momentum``
    take ``params: {momentum: 0.9, nesterov: true}``; ``layer_decay`` multiplies each encoder
    layer's lr by decay^(layers above it).
    """

    name: str = "adamw"
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)  # inf: NaN weights from step one
    weight_decay: float = Field(0.01, ge=0)
    layer_decay: float | None = Field(None, gt=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)  # e.g. momentum, betas, nesterov

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name in _TORCH_OPTIMIZERS:
            return name
        from timm.optim import list_optimizers

        known = [n for n in list_optimizers() if n not in _NEEDS_SECOND_ORDER]
        base = name.removeprefix("lookahead_")
        if base in _NEEDS_SECOND_ORDER:
            raise ValueError(f"optimizer {base!r} needs second-order gradients (a backward "
                             "pass with create_graph), which the training loop does not make")
        if base not in known:
            close = difflib.get_close_matches(base, known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"unknown optimizer {name!r}.{hint} Known: {', '.join(known)} "
                "(each also as 'lookahead_<name>')"
            )
        return name


# timm optimizers the loop cannot drive: they read Hessian-vector products
_NEEDS_SECOND_ORDER = ("adahessian",)
# Names timm maps to torch's own classes, with the same defaults: built here directly, a run
# that needs nothing else from timm (a table, a text) skips importing it (~1 s, torchvision
# and torch._dynamo with it). Any other name goes through timm.
_TORCH_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class SchedulerConfig(Section):
    """Learning-rate schedule with linear warmup.

    Per optimizer update: ``cosine`` (annealing to ``min_lr_ratio`` x lr), ``linear``,
    ``constant``, ``restarts`` (cosine with warm restarts every ``cycle_epochs``, each cycle
    ``cycle_mul`` times longer and its peak ``cycle_decay`` times lower), ``onecycle``.
    Per epoch: ``plateau`` (ReduceLROnPlateau on the validation metric).
    """

    name: str = "cosine"  # a name in SCHEDULERS
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    cycle_epochs: float = Field(1.0, gt=0)
    cycle_mul: float = Field(1.0, ge=1)
    cycle_decay: float = Field(1.0, gt=0, le=1)
    patience: int = Field(1, ge=0)
    factor: float = Field(0.5, gt=0, lt=1)
    pct_start: float = Field(0.3, gt=0, lt=1)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in SCHEDULERS:
            raise ValueError(SCHEDULERS.unknown_message(name))
        return name


_HF_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each parameter of an encoder (0 = input side) and the number of depths.

    timm models use their own ``group_matcher``; transformers encoders count embeddings as 0
    and ``layer.<i>`` as i + 1. Other encoders are one block.
    """
    names = [n for n, _ in encoder.named_parameters()]
    if isinstance(encoder, TimmEncoder) and hasattr(encoder.body, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(encoder.body, encoder.body.group_matcher(coarse=False))
        ids = {f"body.{n}": i for i, (_, members) in enumerate(sorted(groups.items()))
               for n in members}
        return {n: ids.get(n, len(groups) - 1) for n in names}, len(groups)
    if isinstance(encoder, HFEncoder):
        depth = {n: int(m.group(1)) + 1 if (m := _HF_LAYER.search(n)) else 0 for n in names}
        top = max(depth.values(), default=0) + 1
        return {n: top if "pooler" in n else d for n, d in depth.items()}, top + 1
    return dict.fromkeys(names, 0), 1


def no_weight_decay(module: nn.Module) -> set[str]:
    """Parameter names a timm model exempts from weight decay (``no_weight_decay()``: its
    position embeddings, class and distillation tokens), as names inside ``module``."""
    if isinstance(module, TimmEncoder) and hasattr(module.body, "no_weight_decay"):
        exempt = set(module.body.no_weight_decay())
        return {name for name, _ in module.named_parameters()
                if name.removeprefix("body.") in exempt}
    return set()


def parameter_groups(
    model: CompetitionModel, cfg: ModelConfig, optim: OptimizerConfig
) -> list[dict[str, Any]]:
    """Groups by (module, depth, decay): each encoder at its own ``lr`` (``layer_decay``
    scaling it down the encoder), the head at the optimizer's ``lr``; biases, 1-d weights and
    what a timm model exempts (position embeddings, class tokens) get no weight decay. Frozen
    parameters are left out."""
    groups: dict[tuple[int, int, bool], dict[str, Any]] = {}
    parts = [(enc, ecfg.lr or optim.lr, True)
             for enc, ecfg in zip(model.encoders, cfg.encoders, strict=True)]
    parts.append((model.head, optim.lr, False))
    for index, (module, lr, is_encoder) in enumerate(parts):
        depth, n_depths = layer_ids(module) if is_encoder else ({}, 1)
        exempt = no_weight_decay(module)
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            d = depth.get(name, 0)
            scale = optim.layer_decay ** (n_depths - 1 - d) if optim.layer_decay else 1.0
            decay = param.ndim > 1 and name not in exempt
            key = (index, d, decay)
            if key not in groups:
                groups[key] = {"params": [], "lr": lr * scale,
                               "weight_decay": optim.weight_decay if decay else 0.0}
            groups[key]["params"].append(param)
    return list(groups.values())


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Any optimizer timm knows (``lookahead_`` prefix included) over ready-made groups.

    Adam and AdamW take torch's fused kernel unless ``params`` say otherwise: on a GPU one
    launch for every parameter's update (a small model's step is launch-bound), on the CPU
    one pass over each tensor instead of ten (resnet18's AdamW step: 66 -> 27 ms on one
    thread). Same update, other rounding.
    """
    params = dict(cfg.params)
    groups = merged_groups(groups)
    tensors = [p for g in groups for p in g["params"]]
    kinds = {p.device.type for p in tensors}
    if (cfg.name in _FUSABLE and not {"fused", "foreach"} & params.keys() and tensors
            and len(kinds) == 1 and kinds <= _FUSED_DEVICES
            and all(p.is_floating_point() for p in tensors)):
        params["fused"] = True
    if cfg.name in _TORCH_OPTIMIZERS:
        return _TORCH_OPTIMIZERS[cfg.name](groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           **params)
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(groups, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               **params)


def merged_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups whose settings are all the same made one, in the order each first appears.

    An optimizer updates every parameter on its own; a group only carries settings. But it
    launches its kernels once per group, and :func:`parameter_groups` makes one per encoder
    block (its depth), head and weight decay: resnet18 at one rate is 20 groups where 2 do
    the same update with a tenth of the launches (a small model's step on a GPU waits on
    them)."""
    merged: dict[str, dict[str, Any]] = {}
    for group in groups:
        settings = repr(sorted((k, v) for k, v in group.items() if k != "params"))
        if settings in merged:
            merged[settings]["params"] = [*merged[settings]["params"], *group["params"]]
        else:
            merged[settings] = {**group, "params": list(group["params"])}
    return list(merged.values())


_FUSABLE = ("adam", "adamw")  # torch.optim.Adam / AdamW
_FUSED_DEVICES = {"cuda", "cpu"}  # where torch has their fused kernels


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
        """The wrapped scheduler's state, all of it: timm's plateau scheduler keeps its
        count of epochs without gain in the torch scheduler it wraps, which its own
        ``state_dict`` leaves out (a resumed run would cut the lr later)."""
        state = {"scheduler": self.scheduler.state_dict()}
        inner = getattr(self.scheduler, "lr_scheduler", None)
        if inner is not None:
            state["inner"] = inner.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if "scheduler" not in state:  # a resume point of an older release
            self.scheduler.load_state_dict(state)
            return
        self.scheduler.load_state_dict(state["scheduler"])
        inner = getattr(self.scheduler, "lr_scheduler", None)
        if inner is not None and "inner" in state:
            inner.load_state_dict(state["inner"])


@dataclass(frozen=True)
class Horizon:
    """What a schedule spans, in optimizer updates, with the settings every schedule shares."""

    total: int  # updates of the stage
    updates_per_epoch: int
    warmup: int  # warmup updates
    lr_min: float
    greater_is_better: bool  # direction of the validation score (plateau)

    @property
    def common(self) -> dict[str, Any]:
        """Keyword arguments of every timm scheduler: per-update steps with linear warmup."""
        return {"t_in_epochs": False, "warmup_t": self.warmup, "warmup_lr_init": 0.0,
                "warmup_prefix": False}


ScheduleFactory = Callable[[torch.optim.Optimizer, "SchedulerConfig", Horizon], Schedule]
SCHEDULERS: Registry[ScheduleFactory] = Registry("scheduler")


@SCHEDULERS.register("cosine", "cosine annealing to min_lr_ratio x lr")
def _cosine(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, h: Horizon) -> Schedule:
    from timm.scheduler import CosineLRScheduler

    return Schedule(CosineLRScheduler(optimizer, t_initial=h.total, lr_min=h.lr_min, **h.common))


@SCHEDULERS.register("restarts", "cosine with warm restarts every cycle_epochs")
def _restarts(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, h: Horizon) -> Schedule:
    from timm.scheduler import CosineLRScheduler

    cycle = max(1, round(cfg.cycle_epochs * h.updates_per_epoch))
    return Schedule(CosineLRScheduler(
        optimizer, t_initial=cycle, lr_min=h.lr_min, cycle_mul=cfg.cycle_mul,
        cycle_decay=cfg.cycle_decay, cycle_limit=h.total, **h.common))


@SCHEDULERS.register("linear", "linear decay to min_lr_ratio x lr")
def _linear(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, h: Horizon) -> Schedule:
    from timm.scheduler import PolyLRScheduler

    return Schedule(PolyLRScheduler(optimizer, t_initial=h.total, power=1.0, lr_min=h.lr_min,
                                    **h.common))


@SCHEDULERS.register("onecycle", "one-cycle: up to lr over pct_start, then down")
def _onecycle(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, h: Horizon) -> Schedule:
    peak = [g["lr"] for g in optimizer.param_groups]
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak, total_steps=h.total, pct_start=cfg.pct_start,
        cycle_momentum=False), onecycle=True)


@SCHEDULERS.register("plateau", "lr x factor when the validation score stalls (per epoch)")
def _plateau(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, h: Horizon) -> Schedule:
    from timm.scheduler import PlateauLRScheduler

    return Schedule(PlateauLRScheduler(
        optimizer, decay_rate=cfg.factor, patience_t=cfg.patience, lr_min=h.lr_min,
        mode="max" if h.greater_is_better else "min", warmup_t=0), per_epoch=True)


@SCHEDULERS.register("constant", "constant lr after the warmup")
def _constant(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, h: Horizon) -> Schedule:
    from timm.scheduler import StepLRScheduler

    return Schedule(StepLRScheduler(optimizer, decay_t=h.total + 1, decay_rate=1.0, **h.common))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, updates_per_epoch: int,
    greater_is_better: bool = True,
) -> Schedule:
    """The configured schedule over ``epochs`` of ``updates_per_epoch`` updates."""
    lowest = min(g["lr"] for g in optimizer.param_groups)
    horizon = Horizon(total=max(1, epochs * updates_per_epoch),
                      updates_per_epoch=updates_per_epoch,
                      warmup=round(cfg.warmup_epochs * updates_per_epoch),
                      lr_min=lowest * cfg.min_lr_ratio, greater_is_better=greater_is_better)
    return SCHEDULERS.get(cfg.name)(optimizer, cfg, horizon)

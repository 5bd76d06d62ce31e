"""The training recipe: its config (a first stage, later stages, the tricks) and what the
engine runs from it: one :class:`StagePlan` per stage and the callbacks of the tricks."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.utils.data import Dataset

from pipeline.data.augment import AugmentConfig
from pipeline.data.memory_loader import build_fold_loader, memory_unsupported
from pipeline.engine.auto_batch import BatchSize, stage_batch, stage_optimizer
from pipeline.engine.callbacks.adversarial import AdversarialConfig, build_adversarial
from pipeline.engine.callbacks.averaging import (
    EMA,
    SWA,
    EarlyStopping,
    EarlyStoppingConfig,
    EMAConfig,
    Snapshots,
    SWAConfig,
    cycle_end_epochs,
)
from pipeline.engine.callbacks.consistency import ConsistencyConfig
from pipeline.engine.contrastive import AuxLossConfig, with_aux_losses
from pipeline.engine.losses import LOSSES, LossConfig, LossFn, build_loss
from pipeline.engine.member_ensemble import (
    EnsembleConfig,
    MemberEnsemble,
    ensemble_loss,
    member_groups,
    member_paths,
    single_member_is_plain,
)
from pipeline.engine.optim import (
    OptimizerConfig,
    Schedule,
    SchedulerConfig,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)
from pipeline.engine.plan import StagePlan
from pipeline.engine.stage_sections import SECTIONS, carried_over
from pipeline.engine.trainer import Callback
from pipeline.models.network import CompetitionModel, ModelConfig
from pipeline.schema import Section


class StageConfig(Section):
    """A later training stage: what it changes from the stage before (keys left out carry
    over, within optimizer, scheduler and loss too: :mod:`pipeline.engine.stage_sections`)."""

    epochs: int = Field(ge=1)
    batch_size: int | None = Field(None, ge=1)
    grad_accum_steps: int | None = Field(None, ge=1)
    optimizer: OptimizerConfig | None = None
    scheduler: SchedulerConfig | None = None
    loss: LossConfig | None = None
    freeze: list[str] | None = None


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage with every key filled in (see :attr:`TrainConfig.resolved_stages`)."""

    epochs: int
    batch_size: int | Literal["auto"]  # 'auto': sized per fold (pipeline.engine.auto_batch)
    grad_accum_steps: int
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    loss: LossConfig
    freeze: tuple[str, ...]


class TrainConfig(Section):
    """The training recipe: the first stage, optional later ``stages``, and the tricks."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    epochs: int = Field(5, ge=1)
    batch_size: BatchSize = 32  # 'auto': grown with a fold's rows (tabular MLP's default)
    grad_accum_steps: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(None, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    # which epoch's weights predict: the best validation score's (chosen on the fold that
    # becomes the OOF, so the OOF score is optimistic) or the last epoch's (unbiased);
    # 'auto': the last in a consistency run, else the best (:attr:`predicting_epoch`)
    checkpoint: Literal["auto", "best", "last"] = "auto"
    # batches of training rows on which batch-norm statistics are recomputed with the epoch's
    # final weights before validation (precise BN); 0 keeps the lagging running averages
    precise_bn: int = Field(32, ge=0)
    num_workers: int = Field(0, ge=0)
    # where a fold's rows live: 'memory' holds them decoded and tokenised on the device (batches
    # augmented there); 'stream' reads them through a DataLoader each epoch (any transform);
    # 'auto': memory when they fit a third of its free memory and each augmentation can
    loader: Literal["auto", "memory", "stream"] = "auto"
    # seconds between resume points (last.pt, best.pt; 0: every epoch; the last one always)
    resume_every: float = Field(60.0, ge=0)
    channels_last: bool = True  # on a GPU: image models' weights and batches channels-last
    # torch.compile the model: a slower first epoch (compiling), faster steps on a GPU
    compile: bool = False
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    loss: LossConfig = LossConfig()
    freeze: list[str] = Field(default_factory=list)  # module paths, e.g. encoders.0
    stages: list[StageConfig] = Field(default_factory=list)
    ema: EMAConfig | None = None
    adversarial: AdversarialConfig | None = None
    swa: SWAConfig | None = None
    snapshots: bool = False  # with 'restarts': predict with the mean of each cycle's weights
    augment: AugmentConfig = AugmentConfig()
    aux_losses: list[AuxLossConfig] = Field(default_factory=list)
    early_stopping: EarlyStoppingConfig | None = None
    consistency: ConsistencyConfig | None = None
    # M members of the network trained jointly per fold, kept apart by a penalty
    ensemble: EnsembleConfig | None = None
    # after the folds, one model per seed trained on every train row, for the length the
    # folds chose; its test predictions replace the fold models' mean or are averaged with
    # it (pipeline.full_fit). Left out of the train hash: the folds train the same either way
    full_fit: bool = False
    full_fit_combine: Literal["replace", "average"] = "average"

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct. Got {seeds}.")
        if bad := [s for s in seeds if not 0 <= s < 2**32]:  # else an estimator refused it
            raise ValueError(f"seeds must be in [0, 2**32), numpy's seed range. Got {bad}.")
        return seeds

    @field_validator("ensemble")
    @classmethod
    def _one_member_is_plain(cls, ensemble: EnsembleConfig | None) -> EnsembleConfig | None:
        return single_member_is_plain(ensemble)

    @model_validator(mode="after")
    def _ensemble_fits(self) -> TrainConfig:
        # consistency methods read model(batch) as one prediction per row (and MixMatch the
        # model's encode/classify), which an ensemble's stacked training outputs are not
        if self.ensemble is not None and self.consistency is not None:
            raise ValueError("'train.ensemble' cannot be combined with 'train.consistency'; "
                             "drop one")
        # AWP replaces a batch's gradient by that of the task loss at the moved weights: the
        # unlabelled term of the consistency loss would silently drop out of every update
        if (self.adversarial is not None and self.adversarial.method == "awp"
                and self.consistency is not None):
            raise ValueError("'train.adversarial.method' awp cannot be combined with "
                             "'train.consistency' (its update would drop the unlabelled loss); "
                             "use fgm, or drop one")
        return self

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.consistency is not None and self.stages and self.consistency.given("stage"):
            raise ValueError("'train.consistency.stage' is appended to a recipe without "
                             "'train.stages'; the method starts at stage 2 of yours: drop it")
        stages = self.resolved_stages
        total = self.total_epochs
        if self.snapshots and not any(s.scheduler.name == "restarts" for s in stages):
            raise ValueError("'snapshots' needs a 'restarts' scheduler (cosine warm restarts)")
        for s in stages:
            sched = s.scheduler
            if self.snapshots and sched.name == "restarts" and not (
                float(sched.cycle_epochs).is_integer() and float(sched.cycle_mul).is_integer()
            ):
                # a snapshot is taken at an epoch's end: a cycle that ends mid-epoch would be
                # saved partway into the next cycle, at a high learning rate
                raise ValueError(
                    "'snapshots' needs cycles that end at epoch ends: 'scheduler.cycle_epochs' "
                    f"and 'cycle_mul' must be whole numbers. Got {sched.cycle_epochs} and "
                    f"{sched.cycle_mul}.")
        if self.loader == "memory":
            reason = memory_unsupported(self.augment)
            if reason is not None:
                raise ValueError(f"'loader: memory' holds rows on the device, but {reason}: "
                                 "use 'auto' (streams instead) or 'stream'")
        if self.snapshots and self.swa:
            raise ValueError("'snapshots' and 'swa' both choose the final weights; pick one")
        if self.swa and self.swa.start_epoch > total:
            raise ValueError(
                f"'swa.start_epoch' {self.swa.start_epoch} is after the last epoch ({total})"
            )
        return self

    # Derived once per config (the config is frozen): every stage with all keys filled.
    @functools.cached_property
    def resolved_stages(self) -> tuple[Stage, ...]:
        """Every stage with all keys filled: the first from this section, later ones from
        the stage before plus their overrides."""
        current = Stage(
            epochs=self.epochs, batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps, optimizer=self.optimizer,
            scheduler=self.scheduler, loss=self.loss, freeze=tuple(self.freeze),
        )
        stages = [current]
        for stage in self.stages:
            overrides = {k: v for k, v in stage if v is not None}
            if "freeze" in overrides:
                overrides["freeze"] = tuple(overrides["freeze"])
            for name in SECTIONS:  # key by key over the stage before's
                overrides[name] = carried_over(getattr(current, name), getattr(stage, name))
            current = dataclasses.replace(current, **overrides)
            stages.append(current)
        if self.appends_consistency_stage:
            assert self.consistency is not None
            extra = self.consistency.stage
            optimizer = current.optimizer.model_copy(
                update={"lr": current.optimizer.lr * extra.lr})
            stages.append(dataclasses.replace(current, epochs=extra.passes, optimizer=optimizer))
        return tuple(stages)

    @property
    def predicting_epoch(self) -> Literal["best", "last"]:
        """``checkpoint`` with 'auto' resolved. A consistency run predicts with its last
        epoch: the method's passes are what the run is for, the last at the schedule's
        lowest lr, and a best among a handful of them scored on a few dozen validation rows
        is a draw (MNIST at 150 labels, seed 1: two folds of five chose the stage's first
        pass; the fold models' mean 0.933 against 0.946 for the last passes;
        docs/benchmarks.md, issue 18)."""
        if self.checkpoint != "auto":
            return self.checkpoint
        return "last" if self.consistency is not None else "best"

    @property
    def appends_consistency_stage(self) -> bool:
        """Whether ``consistency.stage`` follows the recipe: a recipe without ``stages``
        whose consistency method has no start of its own."""
        return (self.consistency is not None and not self.stages
                and self.consistency.appends_stage)

    def stage_key(self, i: int) -> str:
        """The config key of resolved stage ``i`` (0-based)."""
        if i == 0:
            return "train"
        return "train.consistency.stage" if i > len(self.stages) else f"train.stages.{i - 1}"

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return sum(s.epochs for s in self.resolved_stages)

    def first_epoch(self, start_epoch: int | None, start_stage: int | None) -> int:
        """The 1-based epoch where something starting at ``start_epoch`` or at the first
        epoch of ``start_stage`` (1-based) begins; 1 when neither is given."""
        if start_stage is None:
            return start_epoch or 1
        stages = self.resolved_stages
        if start_stage > len(stages):
            raise ValueError(f"stage {start_stage} of {len(stages)}")
        return 1 + sum(s.epochs for s in stages[:start_stage - 1])


    @property
    def unlabelled_from(self) -> int:
        """The 1-based epoch where ``consistency`` starts (its default late start filled in);
        1 without it."""
        cons = self.consistency
        if cons is None:
            return 1
        return self.first_epoch(*cons.start(self.total_epochs))

    def check_start(self, where: str, start_epoch: int | None,
                    start_stage: int | None) -> str | None:
        """Why a trick starting at ``start_epoch`` or ``start_stage`` (the config key
        ``where``) never runs in this recipe, or None when it does."""
        n_stages = len(self.resolved_stages)
        if start_stage is not None and start_stage > n_stages:
            return (f"'{where}.start_stage' {start_stage}: the recipe has {n_stages} "
                    "stage(s) (train plus train.stages)")
        first = self.first_epoch(start_epoch, start_stage)
        if first > self.total_epochs:
            return f"'{where}.start_epoch' {first} is after the last epoch ({self.total_epochs})"
        return None

    def outputs_mismatch(self, n_outputs: int) -> str | None:
        """Why a loss parameter sized per output column does not fit ``n_outputs`` columns
        (known once the competition's classes are read), or None."""
        for i, stage in enumerate(self.resolved_stages):
            where = f"{self.stage_key(i)}.loss"
            terms = ([(f"{where}.terms.{j}", t.name, t.params)
                      for j, t in enumerate(stage.loss.terms)]
                     or [(where, stage.loss.name, stage.loss.params)])
            for key, name, params in terms:
                for param in ("alpha", "class_weights", "pos_weight"):
                    value = params.get(param)
                    if isinstance(value, list) and len(value) != n_outputs:
                        return (f"'{key}.params.{param}' of loss {name!r} lists {len(value)} "
                                f"values; the model has {n_outputs} output column(s)")
        return None

    def bounded(self, task: str) -> bool:
        """Whether a regression trains as a bounded one: ``bce`` on the target scaled into
        [0, 1] by the fold's training range, its outputs read through a sigmoid (as some
        Pawpularity winners trained BCE on target / 100): no prediction leaves that range."""
        return task == "regression" and any(
            "bce" in stage.loss.names() for stage in self.resolved_stages)

    def loss_mismatch(self, task: str) -> str | None:
        """Why a stage's loss does not fit ``task``, naming the stage's key, or None."""
        if self.bounded(task) and (
                any(stage.loss.names() != ["bce"] for stage in self.resolved_stages)
                or self.consistency is not None or self.ensemble is not None):
            # the sigmoid reads every stage's outputs as logits; consistency and member
            # ensembles read a regression's outputs as values
            return ("'train.loss' 'bce' under task 'regression' (a bounded regression) must "
                    "be the whole loss of every stage, without train.consistency or "
                    "train.ensemble")
        for i, stage in enumerate(self.resolved_stages):
            for loss in stage.loss.names():
                if loss != "auto" and task not in LOSSES.get(loss).tasks:
                    where = f"{self.stage_key(i)}.loss"
                    where += ".name" if stage.loss.name != "sum" else ".terms"
                    fits = ", ".join(LOSSES.get(loss).tasks)
                    return (f"'{where}' {loss!r} does not fit task {task!r} "
                            f"('competition.task'); it fits {fits}")
        return None


def build_callbacks(train: TrainConfig, encoder_kinds: list[str],
                    greater_is_better: bool) -> list[Callback]:
    """The callbacks of the tricks the recipe switches on (consistency, which needs the
    unlabelled rows, is built by the fold's job)."""
    callbacks: list[Callback] = []
    if train.ema is not None:
        callbacks.append(EMA(train.ema.decay, train.ema.warmup))
    if train.swa is not None:
        callbacks.append(SWA(train.swa.start_epoch, train.swa.lr))
    if train.snapshots:
        stages = train.resolved_stages
        cycles = [(s.scheduler.cycle_epochs, s.scheduler.cycle_mul)
                  if s.scheduler.name == "restarts" else None for s in stages]
        callbacks.append(Snapshots(cycle_end_epochs([s.epochs for s in stages], cycles)))
    adv = train.adversarial
    if adv is not None:
        callbacks.append(build_adversarial(adv, encoder_kinds,
                                           train.first_epoch(adv.start_epoch, adv.start_stage)))
    if train.early_stopping is not None:
        callbacks.append(EarlyStopping(train.early_stopping.patience,
                                       train.early_stopping.min_delta, greater_is_better))
    return callbacks


def build_stage_plans(
    train: TrainConfig, model_cfg: ModelConfig, task: str,
    model: CompetitionModel | MemberEnsemble, train_ds: Dataset[Any],
    generator: torch.Generator, greater_is_better: bool, device: torch.device | None = None,
    masked: bool = False,
) -> list[StagePlan]:
    """One ready-to-run plan per stage of the recipe; ``masked``: each loss over the target
    cells a row holds ('competition.missing_targets: mask')."""
    plans, rows = [], len(train_ds)  # type: ignore[arg-type]
    for stage in train.resolved_stages:
        size = stage_batch(stage.batch_size, rows, stage.grad_accum_steps)
        optim = stage_optimizer(stage.optimizer, stage.batch_size, size)
        sched, loss = stage.scheduler, stage.loss

        def make_optimizer(optim: OptimizerConfig = optim) -> torch.optim.Optimizer:
            groups = member_groups(model, lambda m: parameter_groups(m, model_cfg, optim))
            return build_optimizer(groups, optim)

        def make_schedule(optimizer: torch.optim.Optimizer, updates: int,
                          sched: SchedulerConfig = sched, epochs: int = stage.epochs) -> Schedule:
            return build_scheduler(optimizer, sched, epochs, updates, greater_is_better)

        terms = [(t.name, t.weight, t.params) for t in loss.terms]

        def member_loss(net: nn.Module, loss: LossConfig = loss,
                        terms: list[tuple[str, float, dict[str, Any]]] = terms) -> LossFn:
            return with_aux_losses(build_loss(loss.name, task, loss.params, terms, masked), net,
                                   [(a.name, a.weight, a.params) for a in train.aux_losses])

        plans.append(StagePlan(
            epochs=stage.epochs,
            loader=build_fold_loader(train_ds, size, True, train.num_workers,
                                     generator, train.loader, device),
            make_optimizer=make_optimizer,
            make_schedule=make_schedule,
            loss_fn=ensemble_loss(model, train.ensemble, member_loss),
            freeze=member_paths(model, list(stage.freeze)),
            grad_accum_steps=stage.grad_accum_steps,
            label=f"{optim.name} lr={optim.lr:g} bs={size}",
        ))
    return plans

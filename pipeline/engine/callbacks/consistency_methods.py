"""Consistency methods on unlabelled rows (the competition's test rows) and their config:
each method turns a labelled batch and a batch of unlabelled views into supervised loss +
lambda_u x unlabelled loss. :mod:`pipeline.engine.callbacks.consistency` runs them.

- ``fixmatch`` (Sohn et al. 2020): the weak view (``train.augment``) gives a hard label where
  its confidence reaches the threshold; the strong view is trained on it. The unlabelled loss
  is averaged over every unlabelled row, masked ones counting as zero.
- ``uda`` (Xie et al. 2020): the strong view's prediction follows the clean row's, sharpened
  by a temperature, by KL divergence over the rows whose confidence reaches the threshold
  (averaged over those rows). Regression: mean squared difference, no mask.
- ``mixmatch``: :mod:`.consistency_mixmatch`.

Both teacher-student methods run the strong view's forward and backward on the trusted rows
alone (``strong_rows: trusted``): an untrusted row's loss is zero whatever its outputs, so
only batch-norm statistics (taken over the trusted rows instead of all) tell the difference,
and at the usual 70-75% mask rate a quarter of the strong view's work, the largest part of a
step, is saved. ``strong_rows: all`` is the reference code's full batch.

Strong views: images through :data:`pipeline.data.augment.STRONG_IMAGE` (or the configured
transforms), text through token noise; tabular and text rows also through noise after the
embedding layer (:func:`pipeline.models.network.embedding_noise`; MixMatch: every view).
Teacher passes run without gradients, in training mode (batch-norm statistics see the
unlabelled rows, as in the reference code) unless the teacher is the student's EMA (eval).

The default shape suits runs of a few hundred steps, not FixMatch's million: the supervised
recipe first, then a stage of passes over the unlabelled rows from its weights
(:mod:`.consistency_stage`); FixMatch's targets aligned to the labelled class balance and
trusted above class thresholds that follow the model's confidence (``teacher: ema`` for a
Mean Teacher; see :mod:`.consistency_thresholds`). ``threshold: 0.95, start_epoch: 1,
alignment: false, teacher: student`` is FixMatch as it was (``warmup: 0.3``: the previous
default's start, within the recipe's epochs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from pipeline.data.datasets import Batch, view_of
from pipeline.engine.callbacks.consistency_losses import (
    Step,
    cell_confidence,
    entropy,
    joint_inputs,
    sharpen,
    soft_cross_entropy,
    split_joint,
    trusted_rows,
)
from pipeline.engine.callbacks.consistency_stage import ConsistencyStageConfig
from pipeline.engine.callbacks.consistency_strong import StrongAugmentConfig
from pipeline.engine.callbacks.consistency_thresholds import (
    AdaptiveThresholds,
    DistributionAlignment,
    EMATeacher,
    SoftWeights,
)
from pipeline.engine.losses import LossFn
from pipeline.models.network import embedding_noise, takes_embedding_noise
from pipeline.registry import Registry
from pipeline.schema import Section
from pipeline.task_outputs import probabilities


class ConsistencyConfig(Section):
    """Consistency regularization on the unlabelled (test) rows, from ``start_epoch`` or
    ``start_stage`` (1-based) on. See :mod:`pipeline.engine.callbacks.consistency`.

    ``fixmatch``: hard labels from the weak view (``train.augment``) where the confidence
    reaches ``threshold`` train the strong view. ``uda``: the strong view's prediction
    follows the clean row's, sharpened by ``temperature``, where confident. ``mixmatch``:
    labels guessed from ``augmentations`` weak views, sharpened, then mixup (Beta(``alpha``))
    of labelled and unlabelled rows (pixels for image models, pooled features otherwise).
    ``weight`` (lambda_u) multiplies the unlabelled loss, reached linearly over
    ``ramp_epochs``; an unlabelled batch holds ``ratio`` x the labelled batch size.
    ``epoch_over: unlabelled`` makes every epoch one pass over the unlabelled rows (stages
    that end before the method starts keep theirs over the labelled rows).
    ``embedding_noise``: Gaussian noise after the embedding layer of tabular ('mlp': category
    embeddings and the standardised numbers) and text ('hf': word embeddings) encoders, as a
    fraction of each table's std, on the student views (fixmatch, uda: the strong view) or on
    every unlabelled view (mixmatch): the augmentation of rows that have no other.

    Without ``start_epoch``/``start_stage``/``warmup`` the method starts after the supervised
    recipe: at stage 2 of a recipe with stages, else in the ``stage`` appended after it
    (:class:`.consistency_stage.ConsistencyStageConfig`); ``warmup`` f trains the method
    within the recipe's epochs after the first f of them (the shape before). Multiclass
    fixmatch/uda: ``thresholds`` 'adaptive' (FreeMatch, EMA ``momentum``), 'soft' (SoftMatch's
    Gaussian weights) or 'fixed' (``threshold``), ``alignment`` (ReMixMatch), ``teacher``
    'ema' (``teacher_decay`` a step) or 'student'; defaults: :attr:`ConsistencyMethod.options`.
    """

    method: str  # a name in CONSISTENCY
    weight: float | None = Field(None, gt=0)  # None: the method's default
    threshold: float | None = Field(None, gt=0, lt=1)
    temperature: float | None = Field(None, gt=0, le=1)
    ratio: int | None = Field(None, ge=1)  # None: the method's (fixmatch 3, others 1)
    # what one epoch is: a pass over the labelled rows, or over the unlabelled ones (ceil(rows
    # / (batch x ratio)) steps, the labelled rows cycled: .consistency_epochs)
    epoch_over: Literal["labelled", "unlabelled"] = "labelled"
    augmentations: int = Field(2, ge=1)  # mixmatch's K
    alpha: float = Field(0.75, gt=0)  # mixmatch's Beta parameter
    embedding_noise: float = Field(0.1, ge=0)
    # None: the method's default (MixMatch: half its active epochs, as its large weight
    # needs; FixMatch and UDA: none)
    ramp_epochs: float | None = Field(None, ge=0)
    start_epoch: int | None = Field(None, ge=1)
    start_stage: int | None = Field(None, ge=1)
    # instead of a start: train this fraction of the recipe's epochs supervised, the rest
    # with the method (None: after the recipe, below)
    warmup: float | None = Field(None, ge=0, lt=1)
    # the stage appended after a recipe without train.stages when no start is given
    stage: ConsistencyStageConfig = ConsistencyStageConfig()
    # the teacher's targets (fixmatch, uda; multiclass); None: the method's default
    thresholds: Literal["fixed", "adaptive", "soft"] | None = None  # see the class doc
    alignment: bool | None = None  # ReMixMatch's distribution alignment
    teacher: Literal["student", "ema"] | None = None  # ema: Mean Teacher
    teacher_decay: float = Field(0.99, gt=0, lt=1)  # per optimizer step
    momentum: float = Field(0.99, gt=0, lt=1)  # of adaptive thresholds and alignment
    # fixmatch, uda: the strong view's pass over the trusted rows alone or all (module doc)
    strong_rows: Literal["trusted", "all"] = "trusted"
    # fixmatch, uda: the labelled rows and the strong view's rows through the model in one
    # forward and backward, as FixMatch's reference code does (batch norm normalises them
    # together), where their inputs stack. Off by default: on the CPU it saved 0-5% of the
    # time and cost 0.2-0.4 points (docs/benchmarks.md); on a GPU it launches a pass less
    joint_pass: bool = False
    strong: StrongAugmentConfig = StrongAugmentConfig()

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        if method not in CONSISTENCY:
            raise ValueError(CONSISTENCY.unknown_message(method))
        return method

    @model_validator(mode="after")
    def _check(self) -> ConsistencyConfig:
        defaults = CONSISTENCY.get(self.method).defaults
        for key in ("threshold", "temperature"):
            if getattr(self, key) is not None and defaults[key] is None:
                raise ValueError(f"method {self.method!r} takes no {key!r}")
        if self.method == "mixmatch" and self.given("strong"):
            raise ValueError("method 'mixmatch' uses weak views only ('train.augment'); "
                             "'strong' belongs to fixmatch and uda")
        if self.method != "mixmatch" and self.given("augmentations", "alpha"):
            raise ValueError("'augmentations' and 'alpha' belong to method 'mixmatch'")
        if self.start_epoch is not None and self.start_stage is not None:
            raise ValueError("give 'start_epoch' or 'start_stage', not both")
        if self.warmup is not None and self.given("start_epoch", "start_stage"):
            raise ValueError("give 'warmup' or a start ('start_epoch', 'start_stage'), not both")
        if self.given("stage") and self.given("warmup", "start_epoch", "start_stage"):
            raise ValueError("'stage' is appended after the recipe when the method has no "
                             "start; with 'warmup', 'start_epoch' or 'start_stage' drop it")
        if self.method == "mixmatch":
            given = self.given("thresholds", "alignment", "teacher", "strong_rows",
                                "joint_pass")
            if given:
                raise ValueError(f"{given} belong to methods 'fixmatch' and 'uda'")
        if self.thresholds in ("adaptive", "soft") and self.threshold is not None:
            raise ValueError(f"'threshold' is the fixed threshold; 'thresholds: "
                             f"{self.thresholds}' sets its own")
        return self

    def given(self, *keys: str) -> list[str]:
        """Those of ``keys`` given a value other than their default. Written-out defaults
        do not count, so a resolved config (a run's config.yaml) loads again as written."""
        fields = type(self).model_fields
        return sorted(key for key in keys if getattr(self, key) != fields[key].default)

    def option(self, key: str) -> Any:
        """``thresholds``, ``alignment``, ``teacher`` or ``ratio``, or the method's;
        a ``threshold`` given alone means a fixed one (the behaviour before adaptive ones)."""
        value = getattr(self, key)
        if value is not None:
            return value
        if key == "thresholds" and self.threshold is not None:
            return "fixed"
        return CONSISTENCY.get(self.method).options[key]

    @property
    def appends_stage(self) -> bool:
        """Whether a recipe without ``train.stages`` gets :attr:`stage` appended: the
        method has no start of its own."""
        return self.warmup is None and self.start_epoch is None and self.start_stage is None

    def start(self, total_epochs: int) -> tuple[int | None, int | None]:
        """(start_epoch, start_stage) with the default late start filled in: the epoch after
        ``warmup`` of ``total_epochs``, else stage 2 (the recipe's own or the appended)."""
        if self.start_epoch is not None or self.start_stage is not None:
            return self.start_epoch, self.start_stage
        if self.warmup is not None:
            return 1 + int(self.warmup * total_epochs), None
        return None, 2

    def resolved(self, key: str) -> float:
        """``weight``, ``threshold`` or ``temperature``, or the method's default."""
        value = getattr(self, key)
        default = CONSISTENCY.get(self.method).defaults[key]
        return float(value if value is not None else default)  # type: ignore[arg-type]

    def ramp(self, active_epochs: int) -> float:
        """Epochs over which lambda_u grows from 0, for a method active ``active_epochs``."""
        if self.ramp_epochs is not None:
            return self.ramp_epochs
        return CONSISTENCY.get(self.method).ramp_fraction * active_epochs

    def mismatch(self, task: str, aux_losses: bool) -> str | None:
        """Why this method cannot train a model of ``task`` (with auxiliary losses or not),
        or None when it can."""
        method = CONSISTENCY.get(self.method)
        if task not in method.tasks:
            fits = [m for m in CONSISTENCY if task in CONSISTENCY.get(m).tasks]
            return (f"'train.consistency.method' {self.method} needs class confidences; "
                    f"for {task} use {' or '.join(fits)}")
        if task != "multiclass" and (self.thresholds in ("adaptive", "soft")
                                     or self.alignment):
            return ("'train.consistency' 'thresholds: adaptive' or 'soft' and 'alignment' "
                    f"need softmax classes (multiclass); the task is {task}")
        if method.mixes_rows and aux_losses:
            return (f"'train.consistency.method' {self.method} mixes rows of different "
                    "classes, which leaves 'train.aux_losses' no class per row")
        return None


class ConsistencyMethod(ABC):
    """One consistency method: which views of the unlabelled rows it reads and its loss.

    The class itself is the registry entry (:data:`CONSISTENCY`): its defaults, the tasks it
    can train and whether it mixes rows are class attributes.
    """

    # FixMatch (Sohn et al. 2020), UDA (Xie et al. 2020), MixMatch (Berthelot et al. 2019)
    defaults: ClassVar[dict[str, float | None]]  # weight, threshold, temperature
    # thresholds, alignment, teacher, ratio (ConsistencyConfig.option); the late start,
    # its target shaping and fixmatch's ratio 3: benchmarks/semi_supervised.py ('defaults')
    options: ClassVar[dict[str, Any]] = {
        "thresholds": "fixed", "alignment": False, "teacher": "student", "ratio": 1}
    tasks: ClassVar[tuple[str, ...]] = ("binary", "multiclass", "multilabel", "regression")
    mixes_rows: ClassVar[bool] = False
    # default ramp of lambda_u, as a fraction of the epochs the method is active
    ramp_fraction: ClassVar[float] = 0.0

    def __init__(self, cfg: ConsistencyConfig, task: str, n_outputs: int | None = None,
                 image_only: bool = False) -> None:
        self.cfg = cfg
        self.task = task
        self.n_outputs = n_outputs
        self.image_only = image_only  # the model reads images alone (pixels can be mixed)
        self.views = list(self.view_kinds(cfg))

    def attach(self, model: nn.Module) -> None:  # noqa: B027 (an optional hook)
        """Before training (and before a resume point's state is loaded)."""

    def after_step(self, model: nn.Module) -> None:  # noqa: B027 (an optional hook)
        """After each optimizer update of ``model`` (an EMA teacher follows it)."""

    def state_dict(self) -> dict[str, Any]:
        """The method's running state (thresholds, distributions, teacher weights)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional)
        """Restore :meth:`state_dict`."""

    @staticmethod
    @abstractmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        """Each view's name and augmentation: 'clean', 'weak' (train.augment) or 'strong'."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        """Total loss of a labelled batch and an unlabelled batch of views."""


class _TeacherStudent(ConsistencyMethod):
    """A teacher view (no gradient) whose prediction targets a noisier student view.

    The teacher is the student itself or its EMA (``teacher``); for multiclass its
    probabilities can be aligned to the labelled class distribution (``alignment``) and
    trusted above adaptive class thresholds (``thresholds``), see
    :mod:`pipeline.engine.callbacks.consistency_thresholds`.
    """

    def __init__(self, cfg: ConsistencyConfig, task: str, n_outputs: int | None = None,
                 image_only: bool = False) -> None:
        super().__init__(cfg, task, n_outputs, image_only)
        softmax = task == "multiclass" and n_outputs is not None
        kind, n = (cfg.option("thresholds") if softmax else "fixed"), int(n_outputs or 0)
        # what trusts a row instead of the fixed threshold (same interface)
        self.adaptive = (AdaptiveThresholds(n, cfg.momentum) if kind == "adaptive"
                         else SoftWeights(cfg.momentum) if kind == "soft" else None)
        self.alignment = (DistributionAlignment(n_outputs, cfg.momentum)  # type: ignore[arg-type]
                          if softmax and cfg.option("alignment") else None)
        self.teacher = (EMATeacher(cfg.teacher_decay) if cfg.option("teacher") == "ema"
                        else None)

    def attach(self, model: nn.Module) -> None:
        if self.teacher is not None:
            self.teacher.attach(getattr(model, "module", model))

    def after_step(self, model: nn.Module) -> None:
        if self.teacher is not None:
            self.teacher.update(getattr(model, "module", model))

    def teacher_pass(self, model: nn.Module, batch: Batch, unlabelled: Batch) -> torch.Tensor:
        """The teacher's probabilities on its view (aligned when asked), without gradient."""
        with torch.no_grad():
            teacher = (self.teacher.get(getattr(model, "module", model))
                       if self.teacher is not None else model)
            probs = probabilities(self.task, teacher(view_of(unlabelled, self.views[0])))
            if self.alignment is not None:
                self.alignment.observe_labels(batch["target"])
                probs = self.alignment(probs)
        return probs

    def student_pass(self, model: nn.Module, batch: Batch, loss_fn: LossFn, unlabelled: Batch,
                     mask: torch.Tensor | None,
                     ) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The supervised loss, the student's outputs on its view of the rows ``mask`` trusts
        (``strong_rows: trusted``; None: every row), and what picks those rows out of a
        per-row tensor. One forward over both where :func:`joint_inputs` can stack them."""
        view = view_of(unlabelled, self.views[1])
        rows = (trusted_rows(mask) if mask is not None and self.cfg.strong_rows == "trusted"
                else None)
        if rows is not None:
            view = {key: value[rows] for key, value in view.items()}
        noise = self.cfg.embedding_noise
        joint = None  # only a joint pass asks what the model is: no module walk a step else
        # embedding noise belongs to the student's rows alone: where it acts, two passes
        if self.cfg.joint_pass and not (noise and takes_embedding_noise(model)):
            joint = joint_inputs(model, batch, view)
        if joint is not None:
            labelled, strong = split_joint(model, model(joint), len(next(iter(view.values()))))
            supervised = loss_fn(labelled, batch)
        else:
            supervised = loss_fn(model(batch), batch)
            with embedding_noise(model, noise):
                strong = model(view)
        return supervised, strong, lambda values: values if rows is None else values[rows]

    def trust(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Which rows (cells) to learn from, and the (mean) threshold applied (on the device
        when adaptive: read once an epoch, not once a step)."""
        if self.adaptive is not None:
            self.adaptive.update(probs)
            return self.adaptive.mask(probs), self.adaptive.applied()
        threshold = self.cfg.resolved("threshold")
        return (cell_confidence(self.task, probs) >= threshold).float(), threshold

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name in ("adaptive", "alignment", "teacher")
                if (part := getattr(self, name)) is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part_state in state.items():
            getattr(self, name).load_state_dict(part_state)


class FixMatch(_TeacherStudent):
    """Hard labels from confident weak views train the strong views."""

    defaults: ClassVar[dict[str, float | None]] = {
        "weight": 1.0, "threshold": 0.95, "temperature": None}
    options: ClassVar[dict[str, Any]] = {
        "thresholds": "adaptive", "alignment": True, "teacher": "student", "ratio": 3}
    tasks = ("binary", "multiclass", "multilabel")

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {"weak": "weak", "strong": "strong"}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        probs = self.teacher_pass(model, batch, unlabelled)
        mask, threshold = self.trust(probs)
        hard = (F.one_hot(probs.argmax(dim=1), probs.shape[1]).float()
                if self.task == "multiclass" else (probs >= 0.5).float())
        supervised, strong, same_rows = self.student_pass(model, batch, loss_fn, unlabelled,
                                                          mask)
        # the mean over every row (cell): the untrusted ones, skipped or not, count as zero
        unsup = ((soft_cross_entropy(self.task, strong, same_rows(hard)) * same_rows(mask)).sum()
                 / mask.numel())
        return supervised + weight * unsup, Step(unsup.detach(), mask.mean(), threshold)


class UDA(_TeacherStudent):
    """The strong view follows the clean view's sharpened prediction where it is confident."""

    defaults: ClassVar[dict[str, float | None]] = {
        "weight": 1.0, "threshold": 0.8, "temperature": 0.4}

    @staticmethod
    def view_kinds(cfg: ConsistencyConfig) -> dict[str, str]:
        return {"clean": "clean", "strong": "strong"}

    def loss(self, model: nn.Module, batch: Batch, unlabelled: Batch, loss_fn: LossFn,
             weight: float) -> tuple[torch.Tensor, Step]:
        probs = self.teacher_pass(model, batch, unlabelled)
        if self.task == "regression":  # no confidence, no mask: every row
            supervised, strong, _ = self.student_pass(model, batch, loss_fn, unlabelled, None)
            unsup = F.mse_loss(strong.float(), probs)
            return supervised + weight * unsup, Step(unsup.detach(), unsup.new_ones(()))
        target = sharpen(self.task, probs, self.cfg.resolved("temperature"))
        mask, threshold = self.trust(probs)
        supervised, strong, same_rows = self.student_pass(model, batch, loss_fn, unlabelled,
                                                          mask)
        target = same_rows(target)
        kl = soft_cross_entropy(self.task, strong, target) - entropy(self.task, target)
        unsup = (kl * same_rows(mask)).sum() / mask.sum().clamp_min(1.0)
        return supervised + weight * unsup, Step(unsup.detach(), mask.mean(), threshold)


CONSISTENCY: Registry[type[ConsistencyMethod]] = Registry("consistency method")
CONSISTENCY.add("fixmatch", FixMatch)
CONSISTENCY.add("uda", UDA)

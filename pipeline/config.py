"""Typed experiment config: YAML + ``--set key=value`` overrides, validated at load.

Every section forbids unknown keys; an error names the dotted path of the bad key, what was
expected, what was found, and close matches for misspelt keys or part names.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

Task = Literal["binary", "multiclass", "multilabel", "regression"]
Modality = Literal["image", "text", "tabular"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompetitionConfig(_Section):
    """Where the competition lives and what it asks for."""

    dir: str
    id_column: str = "id"
    target_columns: list[str] = Field(min_length=1)
    task: Task
    metric: str
    modality: Modality
    image_column: str | None = None  # column holding image paths relative to dir
    # or a template of the path, with {split} (train/test) and any column, e.g.
    # "{split}_images/{image_id}.jpg"
    image_path: str | None = None
    text_columns: list[str] = Field(default_factory=list)
    feature_columns: list[str] | None = None  # tabular inputs; None: every other column
    categorical_columns: list[str] = Field(default_factory=list)  # besides non-numeric ones
    group_column: str | None = None
    train_file: str = "train.csv"
    test_file: str = "test.csv"
    sample_submission_file: str = "sample_submission.csv"

    @model_validator(mode="after")
    def _check(self) -> CompetitionConfig:
        from pipeline.metrics import METRICS

        if self.metric not in METRICS:
            raise ValueError(f"'metric': {METRICS.unknown_message(self.metric)}")
        metric = METRICS.get(self.metric)
        if self.task not in metric.tasks:
            raise ValueError(
                f"'metric' {self.metric!r} is not defined for task {self.task!r}; "
                f"it applies to {', '.join(metric.tasks)}. Metrics for {self.task}: "
                f"{', '.join(n for n in METRICS if self.task in METRICS.get(n).tasks)}"
            )
        if self.task in ("binary", "multiclass") and len(self.target_columns) != 1:
            raise ValueError(
                f"'target_columns' must hold one column for task {self.task!r}. "
                f"Got {self.target_columns}."
            )
        if self.modality == "image" and not (self.image_column or self.image_path):
            raise ValueError(
                "'image_column' or 'image_path' is required when 'modality' is 'image'"
            )
        if self.image_column and self.image_path:
            raise ValueError("give 'image_column' or 'image_path', not both")
        if self.modality == "text" and not self.text_columns:
            raise ValueError("'text_columns' is required when 'modality' is 'text'")
        return self


class FoldsConfig(_Section):
    """How train rows are split into folds; every model of a competition shares them."""

    scheme: Literal["kfold", "stratified", "group", "stratified_group", "multilabel"] = (
        "stratified"
    )
    n_splits: int = Field(5, ge=2)
    seed: int = 42
    name: str | None = None  # file stem under folds/; default <competition>_<scheme>_k<n>_s<seed>


class EncoderConfig(_Section):
    """One encoder: ``timm:<arch>``, ``hf:<local dir>``, ``hf`` (from ``hf_config``), ``mlp``,
    or a whole scikit-learn model ``sklearn:<import.path.Estimator>``."""

    name: str
    # timm: a local weights file (never a hub download); hf:<dir> loads the dir's weights
    # unless pretrained is false (random init from the dir's config)
    pretrained: bool | str | None = None
    params: dict[str, Any] = Field(default_factory=dict)  # passed to the model factory
    hf_config: dict[str, Any] | None = None  # build a transformers model from this config
    tokenizer: str | None = None  # local tokenizer dir (default: the model dir)
    lr: float | None = Field(None, gt=0)  # own learning rate (default: train.optimizer.lr)

    @field_validator("name")
    @classmethod
    def _known_kind(cls, name: str) -> str:
        kind = name.split(":", 1)[0]
        if kind not in ENCODER_KINDS:
            close = difflib.get_close_matches(kind, ENCODER_KINDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown encoder kind {kind!r} in {name!r}.{hint} "
                f"Known: {', '.join(ENCODER_KINDS)} (as 'timm:resnet18', 'hf:/path', 'mlp', "
                "'sklearn:sklearn.ensemble.HistGradientBoostingClassifier')"
            )
        if kind in ("timm", "hf", "sklearn") and kind != name and not name.split(":", 1)[1]:
            raise ValueError(f"encoder {name!r} names no model after {kind!r}:")
        return name

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.name == "hf" and not (self.hf_config and self.tokenizer):
            raise ValueError(
                "encoder 'hf' without a directory needs 'hf_config' (with 'model_type') and "
                "'tokenizer' (a local tokenizer dir); or name a local model as 'hf:<dir>'"
            )
        if self.hf_config is not None and "model_type" not in self.hf_config:
            raise ValueError("'hf_config' needs 'model_type' (e.g. bert)")
        if self.kind in ("mlp", "sklearn") and self.pretrained:
            raise ValueError(f"encoder {self.name!r} takes no 'pretrained' weights")
        if self.kind == "sklearn":
            from pipeline.sklearn_models import import_estimator

            import_estimator(self.target)
        return self

    @property
    def kind(self) -> str:
        """timm, hf, mlp or sklearn."""
        return self.name.split(":", 1)[0]

    @property
    def target(self) -> str:
        """What follows the kind: architecture, directory or import path."""
        return self.name.split(":", 1)[1] if ":" in self.name else ""


ENCODER_KINDS = ("timm", "hf", "mlp", "sklearn")


class HeadConfig(_Section):
    """The head on the (concatenated) pooled features."""

    dropout: float = Field(0.1, ge=0, lt=1)
    hidden: int = Field(0, ge=0)  # 0: a single linear layer
    temperature: float = Field(1.0, gt=0)  # logits are divided by it, in training and inference


class ModelConfig(_Section):
    """Encoders (concatenated when several) and the head."""

    encoders: list[EncoderConfig] = Field(min_length=1)
    head: HeadConfig = HeadConfig()
    image_size: int = Field(224, ge=8)
    max_length: int = Field(256, ge=8)
    # which tokens a long text keeps: the first, the last, or a quarter head + the tail
    truncation: Literal["head", "tail", "head_tail"] = "head"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        kinds = [e.kind for e in self.encoders]
        if "sklearn" in kinds and len(kinds) > 1:
            raise ValueError("a 'sklearn:' model stands alone: it cannot share 'encoders'")
        return self

    @property
    def is_sklearn(self) -> bool:
        """Whether the model is a scikit-learn estimator rather than a torch network."""
        return self.encoders[0].kind == "sklearn"


class OptimizerConfig(_Section):
    """Any optimizer timm's ``create_optimizer_v2`` knows, by name.

    ``lookahead_<name>`` wraps it in Lookahead (e.g. ``lookahead_sgd``); ``sgd``/``momentum``
    take ``params: {momentum: 0.9, nesterov: true}``; ``layer_decay`` multiplies each encoder
    layer's lr by decay^(layers above it).
    """

    name: str = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    layer_decay: float | None = Field(None, gt=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)  # e.g. momentum, betas, nesterov

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from timm.optim import list_optimizers

        known = list_optimizers()
        base = name.removeprefix("lookahead_")
        if base not in known:
            close = difflib.get_close_matches(base, known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"unknown optimizer {name!r}.{hint} Known: {', '.join(known)} "
                "(each also as 'lookahead_<name>')"
            )
        return name


class SchedulerConfig(_Section):
    """Learning-rate schedule with linear warmup.

    Per optimizer update: ``cosine`` (annealing to ``min_lr_ratio`` x lr), ``linear``,
    ``constant``, ``restarts`` (cosine with warm restarts every ``cycle_epochs``, each cycle
    ``cycle_mul`` times longer and its peak ``cycle_decay`` times lower), ``onecycle``.
    Per epoch: ``plateau`` (ReduceLROnPlateau on the validation metric).
    """

    name: Literal["cosine", "linear", "constant", "restarts", "onecycle", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    cycle_epochs: float = Field(1.0, gt=0)
    cycle_mul: float = Field(1.0, ge=1)
    cycle_decay: float = Field(1.0, gt=0, le=1)
    patience: int = Field(1, ge=0)
    factor: float = Field(0.5, gt=0, lt=1)
    pct_start: float = Field(0.3, gt=0, lt=1)


class LossTermConfig(_Section):
    """One weighted term of a ``sum`` loss."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> LossTermConfig:
        _check_loss(self.name, self.params)
        return self


def _check_loss(name: str, params: dict[str, Any]) -> None:
    from pipeline.losses import LOSSES, check_params

    if name not in LOSSES:
        raise ValueError(LOSSES.unknown_message(name))
    check_params(name, params)


class LossConfig(_Section):
    """Training loss: ``auto`` (CE, BCE or MSE by task), a registered loss with ``params``
    (focal: gamma, alpha; cross_entropy/bce/focal: smoothing), or ``sum`` of ``terms``."""

    name: str = "auto"
    params: dict[str, Any] = Field(default_factory=dict)
    terms: list[LossTermConfig] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from pipeline.losses import LOSSES

        if name not in ("auto", "sum") and name not in LOSSES:
            raise ValueError(LOSSES.unknown_message(name))
        return name

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        if self.name == "sum":
            if not self.terms:
                raise ValueError("loss 'sum' needs 'terms': [{name, weight, params}, ...]")
        elif self.terms:
            raise ValueError(f"'terms' belong to loss 'sum', not {self.name!r}")
        elif self.name != "auto":
            _check_loss(self.name, self.params)
        elif self.params:
            raise ValueError("loss 'auto' takes no 'params'; name the loss to set them")
        return self

    def names(self) -> list[str]:
        """The registered losses this config uses."""
        return [t.name for t in self.terms] if self.name == "sum" else [self.name]


class StageConfig(_Section):
    """A later training stage: what it changes from the stage before (keys left out carry
    over from the ``train`` section)."""

    epochs: int = Field(ge=1)
    batch_size: int | None = Field(None, ge=1)
    grad_accum_steps: int | None = Field(None, ge=1)
    optimizer: OptimizerConfig | None = None
    scheduler: SchedulerConfig | None = None
    loss: LossConfig | None = None
    freeze: list[str] | None = None


class EMAConfig(_Section):
    """Exponential moving average of the weights (timm ModelEmaV3), used for validation,
    the best checkpoint and the predictions."""

    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True  # ramp the decay up over the first updates


class SWAConfig(_Section):
    """Stochastic weight averaging from ``start_epoch`` (1-based) to the end; the averaged
    weights (batch-norm statistics recomputed) are the fold's final model."""

    start_epoch: int = Field(ge=1)
    lr: float | None = Field(None, gt=0)  # constant lr while averaging; None keeps the schedule


class EarlyStoppingConfig(_Section):
    """Stop a fold when the validation score has not improved for ``patience`` epochs."""

    patience: int = Field(ge=1)
    min_delta: float = Field(0.0, ge=0)


class AuxLossConfig(_Section):
    """An auxiliary loss on the pooled features: ``supcon`` (temperature) or ``triplet``
    (margin, batch-hard mining), added to the task loss with ``weight``."""

    name: Literal["supcon", "triplet"]
    weight: float = Field(0.1, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> AuxLossConfig:
        known = {"supcon": {"temperature"}, "triplet": {"margin"}}[self.name]
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise ValueError(f"loss {self.name!r} has no parameter(s) {unknown}. "
                             f"Known: {sorted(known)}")
        return self


class TextNoiseConfig(_Section):
    """Token-level noise on training texts (special tokens are never touched)."""

    mask: float = Field(0.0, ge=0, lt=1)  # replace with the mask (or unknown) token
    delete: float = Field(0.0, ge=0, lt=1)
    swap: float = Field(0.0, ge=0, lt=1)  # swap with the next token


class TabularNoiseConfig(_Section):
    """Noise on training rows of tabular inputs."""

    gaussian: float = Field(0.0, ge=0)  # std of noise on standardised numeric features
    swap: float = Field(0.0, ge=0, lt=1)  # chance a cell takes another row's value


class AugmentConfig(_Section):
    """Training-time augmentation per input kind."""

    # albumentations transforms by class name with their arguments, applied before the
    # resize and normalisation, e.g. [{name: HorizontalFlip, p: 0.5}, {name: Affine, ...}]
    image: list[dict[str, Any]] = Field(default_factory=list)
    text: TextNoiseConfig | None = None
    tabular: TabularNoiseConfig | None = None

    @field_validator("image")
    @classmethod
    def _albumentations(cls, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from pipeline.augment import build_image_augment

        build_image_augment(items)
        return items


class AdversarialConfig(_Section):
    """Adversarial training from ``start_epoch`` (1-based: early adversarial training hurts).

    Images, in the normalised input space (epsilon default 0.03): ``fgsm``, ``pgd`` (``steps``
    steps of ``alpha``, default 2.5 x epsilon / steps) and ``fast_fgsm`` (random start, one step
    of ``alpha``, default 1.25 x epsilon). Text/tabular embeddings: ``fgm`` (embeddings moved
    by epsilon along the normalised gradient, default 1.0). Weights of any network: ``awp``
    (relative bound epsilon, default 0.01; step ``alpha``, default 1.0). See
    :mod:`pipeline.adversarial`.
    """

    method: Literal["fgsm", "pgd", "fast_fgsm", "fgm", "awp"] = "fast_fgsm"
    epsilon: float | None = Field(None, gt=0)  # None: the method's default
    alpha: float | None = Field(None, gt=0)  # step of pgd, fast_fgsm and awp
    steps: int = Field(3, ge=1)  # pgd only
    start_epoch: int | None = Field(None, ge=1)  # None: from the first epoch
    start_stage: int | None = Field(None, ge=1)  # or from the first epoch of this stage

    @model_validator(mode="after")
    def _check(self) -> AdversarialConfig:
        if self.alpha is not None and self.method in ("fgsm", "fgm"):
            raise ValueError(f"method {self.method!r} takes no 'alpha': its step is 'epsilon'")
        if self.start_epoch is not None and self.start_stage is not None:
            raise ValueError("give 'start_epoch' or 'start_stage', not both")
        return self


class StrongAugmentConfig(_Section):
    """The strong view of an unlabelled row, per input kind (FixMatch and UDA).

    ``image``: albumentations transforms (None: a RandAugment-like default, two of
    affine/colour/contrast/sharpness/equalise/posterise/solarise ops per row, then cutout; see
    :data:`pipeline.augment.STRONG_IMAGE`). ``text``: token noise. ``tabular``: swap/Gaussian
    noise on rows.
    """

    image: list[dict[str, Any]] | None = None
    text: TextNoiseConfig = TextNoiseConfig(mask=0.15, delete=0.05, swap=0.05)
    tabular: TabularNoiseConfig = TabularNoiseConfig()

    @field_validator("image")
    @classmethod
    def _albumentations(cls, items: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        from pipeline.augment import build_image_augment

        if items is not None:
            build_image_augment(items)
        return items


_CONSISTENCY_DEFAULTS: dict[str, dict[str, float | None]] = {
    # FixMatch (Sohn et al. 2020), UDA (Xie et al. 2020), MixMatch (Berthelot et al. 2019)
    "fixmatch": {"weight": 1.0, "threshold": 0.95, "temperature": None},
    "uda": {"weight": 1.0, "threshold": 0.8, "temperature": 0.4},
    "mixmatch": {"weight": 75.0, "threshold": None, "temperature": 0.5},
}


class ConsistencyConfig(_Section):
    """Consistency regularization on the unlabelled (test) rows, from ``start_epoch`` or
    ``start_stage`` (1-based) on. See :mod:`pipeline.consistency`.

    ``fixmatch``: hard labels from the weak view (``train.augment``) where the confidence
    reaches ``threshold`` train the strong view. ``uda``: the strong view's prediction
    follows the clean row's, sharpened by ``temperature``, where confident. ``mixmatch``:
    labels guessed from ``augmentations`` weak views, sharpened, then mixup (Beta(``alpha``))
    of labelled and unlabelled rows (pixels for image models, pooled features otherwise).
    ``weight`` (lambda_u) multiplies the unlabelled loss, reached linearly over
    ``ramp_epochs``; an unlabelled batch holds ``ratio`` x the labelled batch size.
    ``embedding_noise``: Gaussian noise after the embedding layer of tabular ('mlp': category
    embeddings and the standardised numbers) and text ('hf': word embeddings) encoders, as a
    fraction of each table's std, on the student views (fixmatch, uda: the strong view) or on
    every unlabelled view (mixmatch): the augmentation of rows that have no other.
    """

    method: Literal["fixmatch", "uda", "mixmatch"]
    weight: float | None = Field(None, gt=0)  # None: the method's default
    threshold: float | None = Field(None, gt=0, lt=1)
    temperature: float | None = Field(None, gt=0, le=1)
    ratio: int = Field(1, ge=1)
    augmentations: int = Field(2, ge=1)  # mixmatch's K
    alpha: float = Field(0.75, gt=0)  # mixmatch's Beta parameter
    embedding_noise: float = Field(0.1, ge=0)
    ramp_epochs: float = Field(0.0, ge=0)
    start_epoch: int | None = Field(None, ge=1)
    start_stage: int | None = Field(None, ge=1)
    strong: StrongAugmentConfig = StrongAugmentConfig()

    @model_validator(mode="after")
    def _check(self) -> ConsistencyConfig:
        defaults = _CONSISTENCY_DEFAULTS[self.method]
        for key in ("threshold", "temperature"):
            if getattr(self, key) is not None and defaults[key] is None:
                raise ValueError(f"method {self.method!r} takes no {key!r}")
        if self.method == "mixmatch" and "strong" in self.model_fields_set:
            raise ValueError("method 'mixmatch' uses weak views only ('train.augment'); "
                             "'strong' belongs to fixmatch and uda")
        if self.method != "mixmatch" and {"augmentations", "alpha"} & self.model_fields_set:
            raise ValueError("'augmentations' and 'alpha' belong to method 'mixmatch'")
        if self.start_epoch is not None and self.start_stage is not None:
            raise ValueError("give 'start_epoch' or 'start_stage', not both")
        return self

    def resolved(self, key: str) -> float:
        """``weight``, ``threshold`` or ``temperature``, or the method's default."""
        value = getattr(self, key)
        return float(value if value is not None else _CONSISTENCY_DEFAULTS[self.method][key])


class TrainConfig(_Section):
    """The training recipe: the first stage, optional later ``stages``, and the tricks."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(None, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    num_workers: int = Field(0, ge=0)
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

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct. Got {seeds}.")
        return seeds

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        stages = self.resolved_stages()
        total = sum(s.epochs for s in stages)
        if self.snapshots and not any(s.scheduler.name == "restarts" for s in stages):
            raise ValueError("'snapshots' needs a 'restarts' scheduler (cosine warm restarts)")
        if self.snapshots and self.swa:
            raise ValueError("'snapshots' and 'swa' both choose the final weights; pick one")
        if self.swa and self.swa.start_epoch > total:
            raise ValueError(
                f"'swa.start_epoch' {self.swa.start_epoch} is after the last epoch ({total})"
            )
        return self

    def resolved_stages(self) -> list[StageConfig]:
        """Every stage with all keys filled: the first from this section, later ones from
        the stage before plus their overrides."""
        current = StageConfig(
            epochs=self.epochs, batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps, optimizer=self.optimizer,
            scheduler=self.scheduler, loss=self.loss, freeze=self.freeze,
        )
        stages = [current]
        for stage in self.stages:
            overrides = {k: v for k, v in stage if v is not None}
            current = current.model_copy(update=overrides)
            stages.append(current)
        return stages

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return sum(s.epochs for s in self.resolved_stages())

    def first_epoch(self, start_epoch: int | None, start_stage: int | None) -> int:
        """The 1-based epoch where something starting at ``start_epoch`` or at the first
        epoch of ``start_stage`` (1-based) begins; 1 when neither is given."""
        if start_stage is None:
            return start_epoch or 1
        stages = self.resolved_stages()
        if start_stage > len(stages):
            raise ValueError(f"stage {start_stage} of {len(stages)}")
        return 1 + sum(s.epochs for s in stages[:start_stage - 1])


class PredictConfig(_Section):
    """Inference: test-time augmentation and batch size."""

    tta: list[str] = Field(default_factory=list)
    tta_reduce: Literal["mean", "gmean", "median"] = "mean"
    batch_size: int | None = Field(None, ge=1)  # default: 2 x train.batch_size

    @field_validator("tta")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        from pipeline.tta import TTA

        for name in names:
            if name not in TTA:
                raise ValueError(TTA.unknown_message(name))
        return names


class PseudoConfig(_Section):
    """Pseudo-labelled test rows added to every fold's training rows.

    ``source`` is a finished run: the model of fold k then trains on labels from the source's
    fold-k models only, which never saw fold k's validation rows, so CV stays honest (also
    over several rounds, each round's source being the previous round). A blend (or any
    source without per-fold test predictions) leaks every fold's labels into every fold and
    is refused unless ``allow_leak`` is set.
    """

    source: str
    labels: Literal["hard", "soft"] = "hard"
    threshold: float | None = Field(None, gt=0, le=1)  # keep rows at least this confident
    top_fraction: float | None = Field(None, gt=0, le=1)  # or the most confident fraction
    balance: bool = False  # as many rows per predicted class (the rarest class's count)
    weight: float = Field(1.0, gt=0)  # loss weight of a pseudo row (train rows weigh 1)
    allow_leak: bool = False

    @model_validator(mode="after")
    def _check(self) -> PseudoConfig:
        if self.threshold is not None and self.top_fraction is not None:
            raise ValueError("give 'threshold' or 'top_fraction', not both")
        return self


class ExperimentConfig(_Section):
    """One experiment: competition, folds, model, training recipe and prediction."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    output_dir: str = "runs"
    folds_dir: str = "folds"
    submissions_dir: str = "submissions"
    competition: CompetitionConfig
    folds: FoldsConfig = FoldsConfig()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    pseudo: PseudoConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        comp, model = self.competition, self.model
        if self.train.aux_losses and comp.task not in ("binary", "multiclass"):
            raise ValueError(
                f"'train.aux_losses' need one class per row (binary or multiclass). "
                f"Got task {comp.task!r}."
            )
        if self.train.aux_losses and model.is_sklearn:
            raise ValueError("'train.aux_losses' need a network, not a 'sklearn:' model")
        if self.pseudo is not None:
            if model.is_sklearn:
                raise ValueError("'pseudo' needs a network; a 'sklearn:' model has no weights")
            if comp.task == "regression" and (
                self.pseudo.threshold or self.pseudo.top_fraction or self.pseudo.balance
            ):
                raise ValueError(
                    "'pseudo.threshold', 'top_fraction' and 'balance' need class confidences; "
                    "a regression task has none"
                )
            if comp.task == "multilabel" and self.pseudo.balance:
                raise ValueError("'pseudo.balance' needs one class per row, not multilabel")
        if self.folds.scheme in ("group", "stratified_group") and not comp.group_column:
            raise ValueError(
                f"'folds.scheme' {self.folds.scheme!r} needs 'competition.group_column'"
            )
        if self.folds.scheme == "multilabel" and comp.task != "multilabel":
            raise ValueError(
                f"'folds.scheme' 'multilabel' needs 'competition.task' multilabel. "
                f"Got {comp.task!r}."
            )
        if self.folds.scheme in ("stratified", "stratified_group") and comp.task == "multilabel":
            raise ValueError(
                "'folds.scheme' must be 'multilabel' (or 'kfold', 'group') for a multilabel "
                f"task. Got {self.folds.scheme!r}."
            )
        from pipeline.losses import LOSS_TASKS

        for i, stage in enumerate(self.train.resolved_stages()):
            assert stage.loss is not None
            for loss in stage.loss.names():
                if loss != "auto" and comp.task not in LOSS_TASKS[loss]:
                    where = "train.loss" if i == 0 else f"train.stages.{i - 1}.loss"
                    where += ".name" if stage.loss.name != "sum" else ".terms"
                    raise ValueError(
                        f"'{where}' {loss!r} does not fit task {comp.task!r} "
                        f"('competition.task'); it fits {', '.join(LOSS_TASKS[loss])}"
                    )
        kinds = {e.kind for e in model.encoders}
        if comp.modality == "image" and not kinds & {"timm"}:
            raise ValueError("'model.encoders' needs a 'timm:' encoder for modality 'image'")
        if comp.modality == "text" and not kinds & {"hf"}:
            raise ValueError("'model.encoders' needs an 'hf' encoder for modality 'text'")
        if comp.modality != "tabular" and model.is_sklearn:
            raise ValueError(
                f"a 'sklearn:' model needs 'competition.modality' tabular. Got {comp.modality!r}."
            )
        for name in self.predict.tta:
            from pipeline.tta import TTA

            kinds = TTA.entry(name).flags["inputs"]
            if not kinds & _input_kinds(model):
                raise ValueError(
                    f"'predict.tta' {name!r} does not apply to "
                    f"{'/'.join(sorted(_input_kinds(model)))} inputs; it applies to "
                    f"{'/'.join(sorted(kinds))} inputs"
                )
        adv = self.train.adversarial
        if adv is not None:
            from pipeline.adversarial import mismatch

            problem = mismatch(adv.method, [e.kind for e in model.encoders])
            if problem is not None:
                raise ValueError(problem)
            self._check_start("train.adversarial", adv.start_epoch, adv.start_stage)
        if self.train.consistency is not None:
            self._check_consistency(self.train.consistency)
        if self.predict.tta and model.is_sklearn:
            raise ValueError("'predict.tta' needs a network; a 'sklearn:' model predicts once")
        if self.predict.tta_reduce == "gmean" and comp.task == "regression":
            raise ValueError("'predict.tta_reduce' gmean needs probabilities, not regression")
        return self

    def _check_start(self, where: str, start_epoch: int | None,
                     start_stage: int | None) -> None:
        n_stages = len(self.train.resolved_stages())
        if start_stage is not None and start_stage > n_stages:
            raise ValueError(f"'{where}.start_stage' {start_stage}: the recipe has {n_stages} "
                             "stage(s) (train plus train.stages)")
        first = self.train.first_epoch(start_epoch, start_stage)
        if first > self.train.total_epochs:
            raise ValueError(f"'{where}.start_epoch' {first} is after the last epoch "
                             f"({self.train.total_epochs})")

    def _check_consistency(self, cons: ConsistencyConfig) -> None:
        task = self.competition.task
        if self.model.is_sklearn:
            raise ValueError("'train.consistency' needs a network, not a 'sklearn:' model")
        if cons.method == "fixmatch" and task == "regression":
            raise ValueError("'train.consistency.method' fixmatch needs class confidences; "
                             "for regression use uda or mixmatch")
        if cons.method == "mixmatch" and self.train.aux_losses:
            raise ValueError("'train.consistency.method' mixmatch mixes rows of different "
                             "classes, which leaves 'train.aux_losses' no class per row")
        self._check_start("train.consistency", cons.start_epoch, cons.start_stage)

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``."""
        return Path(self.output_dir) / self.name

    @property
    def folds_file(self) -> Path:
        """``<folds_dir>/<name>.csv`` shared by every model of the competition."""
        f = self.folds
        name = f.name or f"{Path(self.competition.dir).name}_{f.scheme}_k{f.n_splits}_s{f.seed}"
        return Path(self.folds_dir) / f"{name}.csv"

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (every default filled in)."""
        return self.model_dump(mode="json")

    def train_hash(self) -> str:
        """Hash of what decides trained weights (not prediction settings or output paths).

        Keys left at their defaults are not hashed, so a release that adds an option does
        not orphan existing runs.
        """
        data = self.model_dump(mode="json", exclude_defaults=True)
        for key in ("predict", "output_dir", "folds_dir", "submissions_dir", "name"):
            data.pop(key, None)
        data.get("train", {}).pop("num_workers", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _input_kinds(model: ModelConfig) -> set[str]:
    kinds = {"timm": "image", "hf": "text", "mlp": "tabular", "sklearn": "tabular"}
    return {kinds[e.kind] for e in model.encoders}


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to nested dicts."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        node: Any = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {item!r}: {'.'.join(parts[:i])!r} is a list of "
                        f"{len(node)}; {part!r} is not an index of it"
                    )
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
                if not last:
                    node.setdefault(part, {})
            else:
                raise ConfigError(f"override {item!r}: {parts[i - 1]!r} is not a section")
            if last:
                node[index] = _parse_value(raw)
            else:
                node = node[index]
    return data


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next(
            (a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
             and issubclass(a, BaseModel)),
            None,
        )
    return list(model.model_fields) if model else []


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key."""
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        path = _dotted(e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = _section_fields(e["loc"])
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"  '{path}': unknown key.{hint} Known here: {', '.join(known)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            show = e["type"] != "missing" and "Got" not in msg and not isinstance(e["input"], dict)
            got = f" Got {e['input']!r}." if show else ""
            lines.append(f"  '{path}': {msg}.{got}".replace("..", "."))
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate plain data into an :class:`ExperimentConfig`."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config, apply ``--set`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return build_config(apply_overrides(data, overrides or []), str(path))

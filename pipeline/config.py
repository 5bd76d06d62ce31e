"""The experiment config: the sections of every part composed into one, the rules that span
sections, and loading (YAML + ``--set key=value`` overrides, validated at load).

Each section lives beside the part it configures; this module only composes them. Every
section forbids unknown keys; an error names the dotted path of the bad key, what was
expected, what was found, and close matches for misspelt keys or part names.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.competition import CompetitionConfig
from pipeline.config_defaults import auto_batch_fits, fill_defaults
from pipeline.data.pseudo_labels import PseudoConfig
from pipeline.data.splits import FoldsConfig
from pipeline.engine.callbacks.adversarial import mismatch as adversarial_mismatch
from pipeline.engine.callbacks.consistency_methods import CONSISTENCY
from pipeline.engine.losses import mask_mismatch
from pipeline.engine.recipe import TrainConfig
from pipeline.errors import ConfigError
from pipeline.executor import ExecutorConfig
from pipeline.full_fit_options import full_fit_problem
from pipeline.models.encoders import ENCODERS, pretrained_record
from pipeline.models.network import ModelConfig
from pipeline.models.sklearn import PIPELINE as SKLEARN_PIPELINE
from pipeline.models.sklearn import estimator_kind, pipeline_problem
from pipeline.multiple_choice import options_fit
from pipeline.output_folders import check_output_folders
from pipeline.schema import Section
from pipeline.train_hash import compute_train_hash, pretrained_names
from pipeline.tta import PredictConfig
from pipeline.yaml_files import read_yaml_mapping


class ExperimentConfig(Section):
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
    executor: ExecutorConfig = ExecutorConfig()  # where the jobs run, not what they compute

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        for rule in CROSS_SECTION_RULES:
            problem = rule(self)
            if problem is not None:
                raise ValueError(problem)
        return self

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``."""
        return Path(self.output_dir) / self.name

    @property
    def folds_file(self) -> Path:
        """``<folds_dir>/<name>.csv`` shared by every model of the competition."""
        f = self.folds
        name = f.name or (f"{Path(self.competition.dir).name}_{f.scheme}_k{f.n_splits}_s{f.seed}"
                          + ("_together" if f.copies == "together" else ""))
        return Path(self.folds_dir) / f"{name}.csv"

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (every default filled in)."""
        return self.model_dump(mode="json")

    def train_hash(self) -> str:
        """Hash of what decides trained weights (not prediction settings, output paths or
        where the competition's files lie: :mod:`pipeline.train_hash`).

        Keys left at their defaults are not hashed, so a release that adds an option does
        not orphan existing runs.
        """
        return self._train_hash

    def legacy_train_hash(self) -> str:
        """The train hash as releases before recorded it (the folders hashed)."""
        return self._legacy_train_hash

    # Derived once per config (the config is frozen); every fold asks for it.
    @functools.cached_property
    def _train_hash(self) -> str:
        return compute_train_hash(self)

    @functools.cached_property
    def _legacy_train_hash(self) -> str:
        return compute_train_hash(self, legacy=True)


# Rules that span sections. Each names the keys involved; most ask the part that knows
# (the loss registry, the fold scheme, the adversarial method, ...).


def _folds_fit_task(cfg: ExperimentConfig) -> str | None:
    comp = cfg.competition
    return cfg.folds.mismatch(comp.task, comp.group_column, comp.time_column)


def _losses_fit_task(cfg: ExperimentConfig) -> str | None:
    return cfg.train.loss_mismatch(cfg.competition.task)


def _masked_targets_fit(cfg: ExperimentConfig) -> str | None:
    """What cannot leave out the targets a row lacks ('competition.missing_targets: mask')."""
    if cfg.competition.missing_targets != "mask":
        return None
    why, encoder = "('competition.missing_targets: mask')", cfg.model.encoders[0]
    if encoder.kind == "sklearn":
        return (f"a {encoder.name!r} model fits every target at once, so it cannot leave out "
                f"the targets a row lacks {why}; use a network or lightgbm / xgboost / "
                "catboost (one model per target)")
    if "target" in cfg.model.tabular.encodings:
        return (f"'model.tabular.encodings' 'target' is fitted on every target of a row, so "
                f"it cannot leave out the targets a row lacks {why}; use count or frequency")
    cons = cfg.train.consistency
    if cons is not None and CONSISTENCY.get(cons.method).mixes_rows:
        return (f"'train.consistency.method' {cons.method} mixes the targets of several rows, "
                f"so it cannot leave out the targets a row lacks {why}")
    return next((p for i, stage in enumerate(cfg.train.resolved_stages)
                 if (p := mask_mismatch(stage.loss, cfg.train.stage_key(i)))), None)


def _encoders_read_modality(cfg: ExperimentConfig) -> str | None:
    modality, model = cfg.competition.modality, cfg.model
    # a tabular model reads them as TF-IDF (an image encoder beside it has no images here)
    if modality == "text" and model.reads_tfidf and "image" not in model.modalities:
        return None
    # a tabular competition may also read text columns, so only image and text are required
    if modality in ("image", "text") and modality not in model.modalities:
        kinds = [k for k in ENCODERS if ENCODERS.get(k).modality == modality
                 and ENCODERS.get(k).build is not None]
        names = " or ".join(f"'{k}:'" for k in kinds)
        return f"'model.encoders' needs a {names} encoder for modality {modality!r}"
    if modality != "tabular" and model.is_sklearn:
        return (f"a {model.encoders[0].name!r} model needs 'competition.modality' tabular. "
                f"Got {modality!r}.")
    return None


def _network_only(cfg: ExperimentConfig) -> str | None:
    """Parts that need a network's weights or outputs refuse a scikit-learn model."""
    if not cfg.model.is_sklearn:
        return None
    # gradient-boosted members (pipeline.models.gbdt) fit pseudo-labelled rows; 'sklearn:' not
    pseudo = cfg.pseudo is not None and cfg.model.encoders[0].kind == "sklearn"
    needs = {"train.aux_losses": bool(cfg.train.aux_losses), "pseudo": pseudo,
             "train.consistency": cfg.train.consistency is not None,
             "predict.tta": bool(cfg.predict.tta),
             "train.ensemble": cfg.train.ensemble is not None}
    used = [key for key, on in needs.items() if on]
    if used:
        return f"'{used[0]}' needs a network, not a {cfg.model.encoders[0].kind!r} model"
    return None


def _aux_losses_fit_task(cfg: ExperimentConfig) -> str | None:
    task = cfg.competition.task
    if cfg.train.aux_losses and task not in ("binary", "multiclass"):
        return (f"'train.aux_losses' need one class per row (binary or multiclass). "
                f"Got task {task!r}.")
    return None


def _pseudo_fits_task(cfg: ExperimentConfig) -> str | None:
    if cfg.pseudo is None:
        return None
    return cfg.pseudo.mismatch(cfg.competition.task) or cfg.pseudo.own_run(cfg.run_dir)


def _tta_fits_model(cfg: ExperimentConfig) -> str | None:
    return cfg.predict.mismatch(cfg.competition.task, cfg.model.modalities)


def _adversarial_fits_model(cfg: ExperimentConfig) -> str | None:
    adv = cfg.train.adversarial
    if adv is None:
        return None
    return (adversarial_mismatch(adv.method, [e.kind for e in cfg.model.encoders])
            or cfg.train.check_start("train.adversarial", adv.start_epoch, adv.start_stage))


def _consistency_fits(cfg: ExperimentConfig) -> str | None:
    cons = cfg.train.consistency
    if cons is None:
        return None
    return (cons.mismatch(cfg.competition.task, bool(cfg.train.aux_losses))
            or cfg.train.check_start("train.consistency", cons.start_epoch, cons.start_stage))


def _estimator_fits_task(cfg: ExperimentConfig) -> str | None:
    """A scikit-learn regressor for a classification task (or the reverse) would fail after
    the first fold's fit; refuse it at load."""
    encoder = cfg.model.encoders[0]
    if encoder.kind != "sklearn":  # gradient-boosted members pick their estimator per task
        return None
    kind = estimator_kind(encoder.target)
    task = cfg.competition.task
    wanted = "regressor" if task == "regression" else "classifier"
    if kind is not None and kind != wanted:
        return (f"'model.encoders.0.name' {encoder.name!r} is a {kind}; task {task!r} "
                f"('competition.task') needs a {wanted}")
    return None


def _pipeline_steps_fit(cfg: ExperimentConfig) -> str | None:
    """'sklearn:pipeline' steps that cannot be built, or end in the wrong kind of estimator."""
    encoder = cfg.model.encoders[0]
    if encoder.name != f"sklearn:{SKLEARN_PIPELINE}":
        return None
    return pipeline_problem(encoder.params, cfg.competition.task)


def _target_transform_fits(cfg: ExperimentConfig) -> str | None:
    task, kind = cfg.competition.task, cfg.model.target_transform
    if kind != "none" and task != "regression":
        return (f"'model.target_transform' {kind!r} transforms regression targets; task "
                f"{task!r} ('competition.task') has none")
    return None


def _encodings_fit_model(cfg: ExperimentConfig) -> str | None:
    """Category encodings are columns of a whole tabular model: an 'mlp' network embeds its
    categories, and its training rows would see their own labels in a target encoding."""
    kind = cfg.model.encoders[0].kind
    if cfg.model.tabular.encodings and not cfg.model.is_sklearn:
        return ("'model.tabular.encodings' apply to 'sklearn:' and lightgbm/xgboost/catboost "
                f"models, not a {kind!r} network")
    if cfg.model.tabular.categories == "onehot" and kind != "sklearn":
        return (f"'model.tabular.categories: onehot' applies to 'sklearn:' models; a {kind!r} "
                "model " + ("embeds" if not cfg.model.is_sklearn else "splits on") +
                " its categories itself")
    return None


def _multitask_fits(cfg: ExperimentConfig) -> str | None:
    multitask = cfg.model.multitask
    if (multitask is not None or cfg.competition.aux_targets) and cfg.model.head.hidden:
        return ("'model.head.hidden' has no effect on a multi-task head (one tower per task): "
                "set 'model.multitask.hidden' instead")
    if multitask is None:
        return None
    params = [p for stage in cfg.train.resolved_stages
              for p in [stage.loss.params, *(t.params for t in stage.loss.terms)]]
    return multitask.mismatch(cfg.competition.task, cfg.competition.target_columns, params)


def _pretrained_exist(cfg: ExperimentConfig) -> str | None:
    """Each pretraining the model uses needs `pipeline pretrain`'s folder, checked at load
    (its record also says which kind of encoder it is)."""
    for name in pretrained_names(cfg):
        try:
            pretrained_record(name)
        except ConfigError as err:
            return str(err)
    return None


CROSS_SECTION_RULES: tuple[Callable[[ExperimentConfig], str | None], ...] = (
    _pretrained_exist,
    _estimator_fits_task, _pipeline_steps_fit, _target_transform_fits, _encodings_fit_model,
    _network_only, _aux_losses_fit_task, _pseudo_fits_task, _folds_fit_task, _losses_fit_task,
    _encoders_read_modality, _tta_fits_model, _adversarial_fits_model, _consistency_fits,
    _multitask_fits, _masked_targets_fit, options_fit, auto_batch_fits, full_fit_problem,
)


def parse_value(text: str) -> Any:
    """A ``--set``/``--param`` value parsed as YAML; text YAML cannot parse is the text itself
    (an image path template such as ``{split}/{image_id}.png`` is not a YAML value)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to nested dicts."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        node: Any = data
        parts = key.strip().split(".")
        if not all(parts):  # '=3' or 'folds..n_splits=3' named no key it could say
            raise ConfigError(f"override {item!r}: the key {key!r} has an empty part; write "
                              "it as section.key=value (e.g. folds.n_splits=3)")
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
                node[index] = parse_value(raw)
            else:
                node = node[index]
    return data


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def section_fields(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> list[str]:
    """The field names of the section (of ``root``, default :class:`ExperimentConfig`) that
    holds the key at ``loc``; [] where the path leaves the typed sections."""
    model: Any = root or ExperimentConfig
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


def format_validation_error(
    err: ValidationError, source: str, what: str = "config",
    known_keys: Callable[[tuple[Any, ...]], list[str]] = section_fields,
) -> str:
    """One line per problem, each naming the dotted key; an unknown key gets the closest
    known one and the keys ``known_keys(loc)`` lists for its section."""
    lines = [f"invalid {what} {source}:"]
    for e in err.errors():
        path = _dotted(e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = known_keys(e["loc"])
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            listed = f" Known here: {', '.join(known)}" if known else ""
            lines.append(f"  '{path}': unknown key.{hint}{listed}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            show = e["type"] != "missing" and "Got" not in msg and not isinstance(e["input"], dict)
            got = f" Got {e['input']!r}." if show else ""
            lines.append(f"  '{path}': {msg}.{got}".replace("..", "."))
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate plain data into an :class:`ExperimentConfig`."""
    try:
        return ExperimentConfig.model_validate(fill_defaults(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config, apply ``--set`` overrides and validate it."""
    data = read_yaml_mapping(path)
    try:
        cfg = build_config(apply_overrides(data, overrides or []), str(path))
    except ConfigError as err:
        if not overrides:
            raise
        # a key given on the command line is not the YAML file's fault: say where it came from
        keys = {o.split("=", 1)[0].strip() for o in overrides}
        lines = [line + (" (from --set)" if any(f"'{k}'" in line for k in keys) else "")
                 for line in str(err).splitlines()]
        raise ConfigError("\n".join(lines)) from None
    check_output_folders({"'output_dir'": Path(cfg.output_dir), "'name'": cfg.run_dir,
                          "'folds_dir'": Path(cfg.folds_dir),
                          "'submissions_dir'": Path(cfg.submissions_dir)})
    return cfg

"""A sweep's search space, read from YAML: which config keys vary and over what.

```yaml
name: recipe              # the sweep's folder name (default: the space file's name)
method: optuna            # grid | optuna (default: grid when every key lists its values)
n_trials: 12              # optuna: trials the study should hold
space:
  train.consistency.start_stage: [1, 2]                # a list: these values (any YAML)
  train.adversarial: [null, {method: fast_fgsm}]
  train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-2]}  # Optuna distributions
  train.epochs: {int: [2, 6]}                          # also uniform, log_int; step: 2
```

A variant is the base config with these keys set, through the same dotted-key overrides as
``--set``; every value is checked against the config schema before anything trains.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import Field, ValidationError, field_validator

from pipeline.config import (
    ExperimentConfig,
    apply_overrides,
    build_config,
    format_validation_error,
    read_yaml_mapping,
    section_fields,
)
from pipeline.errors import ConfigError
from pipeline.schema import Section

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "log_int")


@dataclass(frozen=True)
class Param:
    """One swept key: a list of ``choices``, or a ``kind`` of range from ``low`` to
    ``high`` (``step`` optional)."""

    key: str
    choices: tuple[Any, ...] | None = None
    kind: str = ""
    low: float = 0.0
    high: float = 0.0
    step: float | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        """This key's value in an Optuna trial."""
        if self.choices is not None:
            # stored as JSON text: Optuna's storages keep only None/bool/int/float/str choices
            text = trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices])
            return json.loads(text)
        log = self.kind.startswith("log_")
        if self.kind.endswith("int"):
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.key, self.low, self.high, log=log, step=self.step)

    def probes(self) -> list[Any]:
        """Values that stand for the whole range when the space is checked at load."""
        if self.choices is not None:
            return list(self.choices)
        cast = int if self.kind.endswith("int") else float
        return [cast(self.low), cast(self.high)]


def _param(key: str, value: Any) -> Param:
    if isinstance(value, list):
        if not value:
            raise ValueError(f"'space.{key}' lists no values")
        return Param(key, choices=tuple(value))
    kinds = [k for k in DISTRIBUTIONS if isinstance(value, dict) and k in value]
    extra = set(value) - {*DISTRIBUTIONS, "step"} if isinstance(value, dict) else set()
    bounds = value.get(kinds[0]) if len(kinds) == 1 else None
    if (len(kinds) != 1 or extra or not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, int | float) for b in bounds) or bounds[0] >= bounds[1]):
        forms = ", ".join(f"{{{k}: [low, high]}}" for k in DISTRIBUTIONS)
        raise ValueError(f"'space.{key}' must be a list of values or one of {forms} with "
                         f"low < high (and an optional step). Got {value!r}")
    if kinds[0].startswith("log_") and bounds[0] <= 0:
        raise ValueError(f"'space.{key}': a log range needs low > 0. Got {bounds!r}")
    return Param(key, kind=kinds[0], low=float(bounds[0]), high=float(bounds[1]),
                 step=value.get("step"))


class SweepSpace(Section):
    """The space file: a name, a method and the swept keys (see the module docstring)."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    method: Literal["grid", "optuna"] | None = None
    n_trials: int = Field(default=20, ge=1)
    seed: int = 0  # the sampler's
    sampler: Literal["tpe", "random"] = "tpe"
    # Optuna's median pruner: a trial whose running mean of fold scores is worse than the
    # median of earlier trials' at the same fold stops there (after ``prune_after`` folds,
    # once ``startup_trials`` trials have completed); "none" runs every fold of every trial
    pruner: Literal["median", "none"] = "median"
    prune_after: int = Field(default=1, ge=1)
    startup_trials: int = Field(default=2, ge=0)
    space: dict[str, Any]

    @field_validator("space")
    @classmethod
    def _params(cls, space: dict[str, Any]) -> dict[str, Any]:
        if not space:
            raise ValueError("names no key to sweep")
        for key, value in space.items():
            _param(key, value)
        return space

    @property
    def params(self) -> list[Param]:
        """The swept keys, in file order."""
        return [_param(k, v) for k, v in self.space.items()]

    @property
    def resolved_method(self) -> str:
        """``grid`` or ``optuna``: by default grid when every key lists its values."""
        if self.method is not None:
            return self.method
        return "grid" if all(p.choices is not None for p in self.params) else "optuna"

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the listed values (``method: grid``), in file order."""
        ranged = [p.key for p in self.params if p.choices is None]
        if ranged:
            raise ConfigError(f"a grid sweep needs a list of values for every key; "
                              f"{ranged} give ranges. Set 'method: optuna' to sample them")
        keys = [p.key for p in self.params]
        combos = itertools.product(*(p.choices or () for p in self.params))
        return [dict(zip(keys, combo, strict=True)) for combo in combos]


def load_space(path: str | Path) -> SweepSpace:
    """Read and validate a space file; the sweep's name defaults to the file's."""
    path = Path(path)
    data = read_yaml_mapping(path, "space file")
    data.setdefault("name", path.stem)
    try:
        return SweepSpace.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(
            err, str(path), "space file", lambda loc: section_fields(loc, SweepSpace))) from None


def variant_name(base: str, sweep: str, changes: dict[str, Any]) -> str:
    """``<base>-<sweep>-<digest of the changes>``: the same changes get the same run folder,
    so a rerun (or another worker drawing the same point) resumes it."""
    digest = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]
    return f"{base}-{sweep}-{digest}"


def build_variant(base: dict[str, Any], sweep: str, changes: dict[str, Any]) -> ExperimentConfig:
    """The base config (plain data) with ``changes`` set (dotted keys), validated."""
    overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True)}"
                 for key, value in changes.items()]
    data = apply_overrides(copy.deepcopy(base), overrides)
    data["name"] = variant_name(str(base.get("name")), sweep, changes)
    return build_config(data, f"(sweep {sweep!r} variant {changes})")


def check_space(base: dict[str, Any], space: SweepSpace) -> None:
    """Refuse a space with a value the config does not accept, before anything trains: each
    listed value and both ends of each range, one key at a time."""
    for param in space.params:
        for value in param.probes():
            build_variant(base, space.name or "sweep", {param.key: value})


def describe(changes: dict[str, Any]) -> str:
    """``key=value; key=value`` in the table's 'changes' column."""
    return "; ".join(f"{k}={json.dumps(v)}" for k, v in changes.items())

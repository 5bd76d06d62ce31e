"""What a run folder's config snapshot and the config now differ in: the keys that the
refusals of `train` and `submit --config` name, so a competitor sees why the run is another."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig

# keys that do not shape the trained weights (as ExperimentConfig.train_hash leaves them out)
NOT_HASHED = ("name", "output_dir", "folds_dir", "submissions_dir", "predict", "competition.dir",
              "train.num_workers", "train.resume_every", "executor")


def config_diff(old: dict[Any, Any], new: dict[Any, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (sections recursed)."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        if path in NOT_HASHED:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            a, b = dict(enumerate(a)), dict(enumerate(b))  # encoders.0.params.C, not the list
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, f"{path}.")
        elif a != b and _by_name(path, a) != _by_name(path, b):
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines


# keys naming a file or folder that counts by its own name, not where it lies (the train
# hash: pipeline.train_hash): a run moved to a notebook listed them as differences, before
# (and in place of, past the keys shown) the key that made it another config
_BY_NAME = re.compile(r"model\.encoders\.\d+\.(name|pretrained|tokenizer)|pseudo\.source")


def _by_name(path: str, value: Any) -> Any:
    if not isinstance(value, str) or not _BY_NAME.fullmatch(path):
        return value
    kind, colon, target = value.rpartition(":") if path.endswith(".name") else ("", "", value)
    return f"{kind}{colon}{PurePath(target).name}"


def snapshot_diff(cfg: ExperimentConfig, shown: int) -> str:
    """The keys (up to ``shown``) in which ``cfg`` differs from its run folder's
    ``config.yaml``; where none does, what else decides the run (its hash holds a
    pretraining's identity, not only the keys that name it)."""
    from pipeline.config import pretrained_names

    snapshot = cfg.run_dir / "config.yaml"
    if not snapshot.is_file():  # every key would read 'None -> ...': thousands of characters
        return f"its {snapshot.name} is gone, so which keys differ is unknown"
    old = yaml.safe_load(snapshot.read_text())
    diff = config_diff(old or {}, cfg.to_dict())
    if diff:
        return "; ".join(diff[:shown]) + (f"; and {len(diff) - shown} more"
                                          if len(diff) > shown else "")
    names = pretrained_names(cfg)
    if names:
        return (f"the same keys: the pretraining {', '.join(map(repr, names))} it reads was "
                "made again since")
    return "the same keys: the inputs they read are made otherwise since the run"

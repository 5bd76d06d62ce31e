"""Pairs of encoders as experiments of their own: different architectures concatenated two
at a time make the most diverse blend members (``pipeline pairs CONFIG``)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

from pipeline.artifacts import write_text
from pipeline.config import build_config
from pipeline.errors import ConfigError


def _short(encoder: str) -> str:
    """A file-name friendly label of an encoder name."""
    target = encoder.split(":", 1)[-1].rstrip("/")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(target).name or encoder)


def expand_pairs(config_path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one config per pair of the config's encoders (concatenated into one model).

    Different architectures make the most diverse members; each pair becomes its own
    experiment named ``<name>--<a>--<b>``.
    """
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    data = yaml.safe_load(path.read_text())
    encoders = data.get("model", {}).get("encoders", [])
    if len(encoders) < 3:
        raise ConfigError(f"{path}: 'model.encoders' needs 3 or more encoders to pair up")
    out = Path(out_dir) if out_dir is not None else path.parent
    pairs = []
    for a, b in itertools.combinations(encoders, 2):
        pair = {**data, "name": f"{data['name']}--{_short(a['name'])}--{_short(b['name'])}",
                "model": {**data["model"], "encoders": [a, b]}}
        build_config(pair, str(path))  # every pair is checked before any file is written
        pairs.append(pair)
    written = []
    for pair in pairs:
        target = out / f"{pair['name']}.yaml"
        write_text(target, yaml.safe_dump(pair, sort_keys=False))
        written.append(target)
    return written

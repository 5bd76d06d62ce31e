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


def _labels(encoders: list[dict]) -> list[str]:
    """Each encoder's label in the pair names; labels shared by several encoders (two
    ``mlp``s of other widths, one architecture with two weights files) get the encoder's
    position, so no two pairs share a name (and a config file and run folder)."""
    short = [_short(e["name"]) for e in encoders]
    return [f"{s}-{i}" if short.count(s) > 1 else s for i, s in enumerate(short)]


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
    labelled = zip(_labels(encoders), encoders, strict=True)
    for (label_a, a), (label_b, b) in itertools.combinations(labelled, 2):
        pair = {**data, "name": f"{data['name']}--{label_a}--{label_b}",
                "model": {**data["model"], "encoders": [a, b]}}
        build_config(pair, str(path))  # every pair is checked before any file is written
        pairs.append(pair)
    written = []
    for pair in pairs:
        target = out / f"{pair['name']}.yaml"
        write_text(target, yaml.safe_dump(pair, sort_keys=False))
        written.append(target)
    return written

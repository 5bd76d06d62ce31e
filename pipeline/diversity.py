"""Diversity report of ensemble members: each member's OOF score and the correlation of
their OOF predictions (low correlation between good members is what a blend feeds on)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.artifacts import write_text
from pipeline.errors import ConfigError
from pipeline.metrics import Metric


def diversity_report(names: list[str], oof: np.ndarray, y: np.ndarray,
                     metric: Metric) -> dict[str, Any]:
    """Scores and the Pearson correlation matrix of members' OOF predictions ``(m, n, c)``.

    For multiclass, the correlation is over all class probabilities of all rows.
    """
    flat = oof.reshape(len(names), -1)
    corr = np.corrcoef(flat) if len(names) > 1 else np.ones((1, 1))
    return {
        "metric": metric.name,
        "scores": {n: metric(y, oof[i]) for i, n in enumerate(names)},
        "correlation": pd.DataFrame(corr, index=names, columns=names).round(4).to_dict(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as text: scores, then the correlation matrix."""
    names = list(report["scores"])
    width = max(len(n) for n in names)
    lines = [f"member scores ({report['metric']}):"]
    lines += [f"  {n:<{width}}  {s:.6f}" for n, s in report["scores"].items()]
    matrix = pd.DataFrame(report["correlation"]).loc[names, names]
    lines.append("OOF correlation:")
    lines += ["  " + line for line in matrix.to_string(float_format="%.3f").splitlines()]
    return "\n".join(lines)


def _short(encoder: str) -> str:
    """A file-name friendly label of an encoder name."""
    target = encoder.split(":", 1)[-1].rstrip("/")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(target).name or encoder)


def expand_pairs(config_path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one config per pair of the config's encoders (concatenated into one model).

    Different architectures make the most diverse members; each pair becomes its own
    experiment named ``<name>--<a>--<b>``.
    """
    from pipeline.config import build_config

    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    data = yaml.safe_load(path.read_text())
    encoders = data.get("model", {}).get("encoders", [])
    if len(encoders) < 3:
        raise ConfigError(f"{path}: 'model.encoders' needs 3 or more encoders to pair up")
    out = Path(out_dir) if out_dir is not None else path.parent
    written = []
    for a, b in itertools.combinations(encoders, 2):
        pair = {**data, "name": f"{data['name']}--{_short(a['name'])}--{_short(b['name'])}",
                "model": {**data["model"], "encoders": [a, b]}}
        build_config(pair, str(path))
        target = out / f"{pair['name']}.yaml"
        write_text(target, yaml.safe_dump(pair, sort_keys=False))
        written.append(target)
    return written

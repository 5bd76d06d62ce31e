"""Diversity report of ensemble members: each member's OOF score and the correlation of
their OOF predictions (low correlation between good members is what a blend feeds on)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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

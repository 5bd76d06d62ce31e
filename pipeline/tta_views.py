"""Each test-time augmentation view's OOF score, said when a run's folds are gathered.

The run's score is that of the views' merged predictions, so a view that changes what an
image shows (a flip of digits or of text, a turn of an upright scene) only lowers it, and
nothing said which view did: on 8x8 digits, hflip alone scored OOF accuracy 0.40 and the
merged views 0.88 against 0.96 without TTA, in a log that gave the 0.88 alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import read_parquet
from pipeline.metric_base import Metric

log = logging.getLogger(__name__)


def view_scores(paths: Sequence[Path], id_col: str, ids: Sequence[str], cols: list[str],
                metric: Metric, y: np.ndarray) -> dict[str, float] | None:
    """The OOF score of each view in the folds' ``tta_oof.parquet`` files ``paths`` (every
    seed's: a view's predictions of a row are averaged over seeds, as the run's are), in the
    order the files list them; None when a file is missing or a view lacks some rows (folds
    trained by an older release)."""
    if not paths or not all(p.is_file() for p in paths):
        return None
    views = pd.concat([read_parquet(p) for p in paths], ignore_index=True)
    views["_id"] = views[id_col].astype(str)
    scores = {}
    for name, part in views.groupby("tta", sort=False):
        matrix = part.groupby("_id")[cols].mean().reindex(list(ids)).to_numpy(dtype=float)
        if np.isnan(matrix).any():
            return None
        scores[str(name)] = float(metric(y, matrix))
    return scores


def say_view_scores(name: str, metric: Metric, scores: dict[str, float] | None,
                    merged: float) -> None:
    """Log each view's OOF score beside the merged one, and warn where the merged views
    score below no TTA, naming the views that score below it alone."""
    if not scores or len(scores) < 2 or "none" not in scores:
        return
    listed = ", ".join(f"{view} {score:.5f}" for view, score in scores.items())
    log.info("%s: OOF %s by TTA view: %s; merged (the run's) %.5f", name, metric.name, listed,
             merged)
    base = scores["none"]
    if not metric.is_better(base, merged):
        return
    worse = [f"{v} ({s:.5f})" for v, s in scores.items() if metric.is_better(base, s)]
    if worse:
        advice = (f"alone, {', '.join(worse)} {'scores' if len(worse) == 1 else 'score'} below "
                  "no TTA (a view that changes what the input shows, such as a flip of digits "
                  f"or text, hurts): leave {'it' if len(worse) == 1 else 'them'} out of "
                  "'predict.tta'")
    else:
        advice = "no view alone scores below no TTA: try another 'predict.tta_reduce'"
    log.warning("%s: 'predict.tta' lowers the OOF %s from %.5f without TTA to %.5f; %s, then "
                "run `pipeline predict`", name, metric.name, base, merged, advice)

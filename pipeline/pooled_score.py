"""When a run's OOF score, pooled over its folds, understates every fold's own score.

Under a metric that reads only the order of the predictions (ROC AUC, average precision,
Gini, Spearman), pooling ranks the rows of several fold models together. Where those models
predict on different scales, as early-stopped trees on rare positives do (one fold kept 51
trees, another 306: mean predictions from 0.0009 to 0.0022), a fold's positives are ranked
below another fold's negatives and the pooled score falls below every fold's. The test
predictions average the fold models, each ranking its own rows. On three tables of 0.4%
positives (6 members each) the folds' mean ordered the members as their held-out scores did
(Spearman 0.83, 0.94, 0.60) far better than the pooled score (-0.09, 0.77, 0.14); LightGBM's
pooled OOF ROC AUC was 0.724, its folds' mean 0.819 and its held-out score 0.819
(docs/benchmarks.md, "Rare positives"). The run says so, with both numbers.
"""

from __future__ import annotations

import numpy as np

from pipeline.metric_base import Metric

# a gap the size of the usual difference between the two for one model's folds (a few
# thousandths of ROC AUC on 10,000-row folds) says nothing; ten thousandths does
POOLED_GAP = 0.01


def pooled_gap_note(metric: Metric, pooled: float, fold_scores: np.ndarray,
                    oof: np.ndarray, folds: np.ndarray) -> str | None:
    """Why ``pooled`` (the metric of the pooled OOF predictions ``oof``) is no estimate of
    the test score, or None: an order-only ``metric`` whose defined ``fold_scores`` average
    more than :data:`POOLED_GAP` better than ``pooled``. ``folds`` gives each OOF row's
    fold; the note names the fold models' mean prediction per fold, the scales they differ
    in."""
    defined = fold_scores[np.isfinite(fold_scores)]
    if not metric.order_only or not defined.size or not np.isfinite(pooled):
        return None
    mean = float(defined.mean())
    gap = mean - pooled if metric.greater_is_better else pooled - mean
    if gap <= POOLED_GAP:
        return None
    level = [float(np.mean(oof[folds == k])) for k in np.unique(folds)]
    return (f"OOF {metric.name} {pooled:.5f} pooled over the folds is {gap:.5f} worse than "
            f"the folds' mean {mean:.5f}: the fold models predict on different scales (mean "
            f"prediction {min(level):.4g} to {max(level):.4g} by fold), so pooling ranks one "
            "fold's rows against another's. The test predictions average the fold models, "
            "each ranking its own rows: compare runs by the folds' mean; a blend, tuned on the "
            "pooled OOF, favours members whose folds share one scale")

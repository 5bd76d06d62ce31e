"""``pipeline report RUN_OR_BLEND ...``: one static, self-contained HTML page of plots about
runs and blends, read from their folders (and the competition's train file for the targets).

A section per folder (``<section id="<name>">``), each plot a ``<figure id="<name>-<kind>">``
with kinds:

- ``fold-scores``: the score of every (seed, fold) against the pooled CV (a blend: its OOF's);
- ``learning-curves``: train and validation loss and the validation score per epoch, per fold
  (``seed*/fold*/metrics.json``; networks only);
- classification: ``confusion-matrix`` (argmax, or a 0.5 threshold), ``class-report``
  (scikit-learn's precision/recall/F1 table) and ``calibration`` (reliability diagram);
- regression: ``residuals`` (against the prediction, and their histogram);
- ``tta``: the OOF score of every test-time augmentation view (``tta_oof.parquet``);
- ``feature-importance``: mean over folds of ``feature_importance.csv`` (GBDT members);
- a blend: ``blend-weights`` and ``correlation`` (its members' OOF correlation).

Several folders add ``<section id="comparison">`` with their OOF correlation and scores.
What a folder lacks is skipped with a note (``<p class="note" data-skipped="<kind>">``), so a
half-finished run still gets a page. Plots are base64 PNGs: the file opens anywhere, offline.
"""

from pipeline.report._page import build_report, cmd_report, register
from pipeline.report._source import ReportError

__all__ = ["ReportError", "build_report", "cmd_report", "register"]

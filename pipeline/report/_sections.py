"""The sections of the report: a header and plots per folder, and the comparison of
several folders. Each returns HTML; what a folder lacks becomes a note."""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError
from pipeline.report._source import Source, figure, fmt, note, table

if TYPE_CHECKING:
    import numpy as np


def _header(src: Source) -> str:
    import numpy as np

    row = src.row
    better = "higher" if row.greater_is_better else "lower"
    items = [("kind", row.kind), ("metric", f"{row.metric} ({better} is better)"),
             ("CV" if row.kind == "run" else _blend_cv(src)[1], row.cv)]
    if row.folds:
        items.append(("folds mean +- std", f"{np.mean(row.folds):.5f} +- "
                      f"{np.std(row.folds):.5f} ({len(row.folds)} folds)"))
    if row.last_cv is not None:
        items.append(("last-epoch CV", row.last_cv))
    if row.nested is not None:
        items.append(("nested CV", row.nested))
    if row.kind == "blend" and (objective := _blend_objective(src)) is not None:
        items.append(("weights tuned on", objective))
    if src.meta is not None:
        items.append(("task", src.meta.task))
    if src.oof is not None:
        items.append(("OOF rows", len(src.oof)))
    if row.members:
        items.append(("members", row.members.removeprefix("blend: ")))
    if row.leaky:
        items.append(("warning", "trained on leaked pseudo-labels: CV is optimistic"))
    items.append(("folder", str(src.folder)))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(fmt(v))}</td></tr>" for k, v in items)
    return f'<table class="summary">{body}</table>'


def _blend_objective(src: Source) -> str | None:
    """What a tuned blend's weights optimised, in words (None: it tunes none, or was made
    before ``cv.json`` said: then the pooled OOF)."""
    from pipeline.artifacts import read_json
    from pipeline.ensemble._objective import describe

    cv = read_json(src.folder / "cv.json")
    return describe(cv["objective"], cv["metric"]) if "objective" in cv else None


def _blend_cv(src: Source) -> tuple[dict[str, float], str]:
    """A blend's per-fold scores of its ``oof.parquet`` and what they are: out of fold (a
    blend made before ``cv.json`` recorded them: its in-sample blend, tuned on those rows)."""
    from pipeline.artifacts import read_json

    cv = read_json(src.folder / "cv.json")
    if "oof" in cv:
        return cv["oof"].get("per_fold", {}), "CV out of fold"
    return cv.get("in_sample", {}).get("per_fold", {}), "CV in-sample"


def _fold_scores(src: Source) -> str:
    from pipeline.artifacts import read_json
    from pipeline.report import _plots as plots

    row = src.row
    if row.kind == "run":
        scores = read_json(src.folder / "scores.json").get("scores", {})
        pairs = [(k, v) for k, v in scores.items() if "/fold" in k and v is not None]
        if len({k.split("/")[0] for k, _ in pairs}) == 1:  # one seed: 'fold0' says it all
            pairs = [(k.split("/")[1], v) for k, v in pairs]
        label = "OOF CV"
    else:
        per_fold, label = _blend_cv(src)
        pairs = [(f"fold{k}", v) for k, v in per_fold.items()]
    if not pairs:
        return note("fold-scores", "no per-fold scores recorded")
    labels, values = [k for k, _ in pairs], [float(v) for _, v in pairs]
    img = plots.fold_scores(labels, values, row.metric, row.cv, label)
    return figure(src, "fold-scores", "Fold scores", img)


def _learning_curves(src: Source) -> str:
    from pipeline.artifacts import read_json
    from pipeline.report import _plots as plots

    paths = sorted(src.folder.glob("seed*/fold*/metrics.json"))
    seeds = {p.parent.parent.name for p in paths}
    curves = {}
    for path in paths:
        try:
            epochs = read_json(path).get("epochs") or []
        except ValueError:
            continue
        fold, seed = path.parent.name, path.parent.parent.name
        label = fold if len(seeds) == 1 else f"{seed}/{fold}"
        if epochs:
            curves[label] = epochs
    if not curves:
        return note("learning-curves", "no per-epoch metrics (a scikit-learn or GBDT "
                     "member, or no fold finished)")
    img = plots.learning_curves(curves, src.row.metric)
    return figure(src, "learning-curves", "Learning curves", img)


def _classification(src: Source, pred: np.ndarray, y: np.ndarray) -> list[str]:
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    from pipeline.report import _plots as plots

    assert src.meta is not None
    task, parts = src.meta.task, []
    if task == "multilabel":
        names = list(src.meta.pred_columns)
        parts.append(note("confusion-matrix", "not drawn for multilabel targets; see the "
                           "per-label report (threshold 0.5)"))
        held = ~np.isnan(y)  # a label a row lacks ('competition.missing_targets: mask')
        # such a cell neither true nor predicted: no TP, FP or FN, so each label's precision,
        # recall, F1 and support are those of the rows that have it
        truth = np.where(held, y, 0).astype(int)
        hard = (held & (pred >= 0.5)).astype(int)
        prob, hit, what = pred[held], y[held], "probability"
    else:
        if task == "binary":
            truth, hard = y[:, 0].astype(int), (pred[:, 0] >= 0.5).astype(int)
            prob, hit, what = pred[:, 0], y[:, 0], f"P({src.meta.classes[1]})"
        else:
            truth, hard = y.astype(int), pred.argmax(axis=1)
            prob, hit, what = pred.max(axis=1), (hard == truth).astype(float), "top-class prob."
        names = [str(c) for c in src.meta.classes]
        matrix = confusion_matrix(truth, hard, labels=range(len(names)))
        attrs = f" data-matrix='{json.dumps(matrix.tolist())}'"
        rule = "0.5 threshold" if task == "binary" else "argmax"
        parts.append(figure(src, "confusion-matrix", f"OOF confusion matrix ({rule})",
                             plots.confusion(matrix, names), attrs))
    report = classification_report(truth, hard, labels=range(len(names)), target_names=names,
                                   output_dict=True, zero_division=0)
    rows = [[name, *(float(v[k]) for k in ("precision", "recall", "f1-score")),
             int(v["support"])] for name, v in report.items() if isinstance(v, dict)]
    parts.append(figure(src, "class-report", "Per-class report (OOF)", table(
        ["class", "precision", "recall", "F1", "support"], rows)))
    if np.all((prob >= 0) & (prob <= 1)):
        parts.append(figure(src, "calibration", "Calibration", plots.calibration(
            prob, hit, what)))
    else:
        parts.append(note("calibration", "predictions are not probabilities in [0, 1]"))
    return parts


def _diagnostics(src: Source) -> list[str]:
    """Confusion matrix, per-class report and calibration, or residuals: the OOF predictions
    against the targets."""
    import numpy as np

    from pipeline.report import _plots as plots

    if src.y is None or src.meta is None or src.oof is None:
        reason = src.problems.get("targets", "no OOF predictions")
        return [note("oof-diagnostics", f"skipped: {reason}")]
    pred = src.oof[src.meta.pred_columns].to_numpy(dtype=float)
    if src.meta.task != "regression":
        return _classification(src, pred, src.y)
    y = src.y.reshape(len(pred), -1)
    held = ~np.isnan(y)  # a target a row lacks ('competition.missing_targets: mask')
    return [figure(src, "residuals" if i == 0 else f"residuals-{i}", f"Residuals: {col}",
                   plots.residuals(pred[held[:, i], i], y[held[:, i], i], col))
            for i, col in enumerate(src.meta.pred_columns[:4])]  # ids stay unique


def _tta(src: Source) -> str:
    """Each TTA view's OOF score, pooled over folds and averaged over seeds."""
    import pandas as pd

    from pipeline.artifacts import read_parquet
    from pipeline.metrics import get_metric
    from pipeline.report import _plots as plots

    paths = sorted(src.folder.glob("seed*/fold*/tta_oof.parquet"))
    if not paths:
        return note("tta", "no tta_oof.parquet in the fold folders")
    if src.y is None or src.meta is None or src.oof is None:
        return note("tta", src.problems.get("targets", "no OOF predictions"))
    meta, cols = src.meta, src.meta.pred_columns
    metric = get_metric(meta.metric, meta.scored_values)
    ids = src.oof[meta.id_column].astype(str)
    scores = {}
    try:
        views = pd.concat([read_parquet(p) for p in paths], ignore_index=True)
        for name, part in views.groupby("tta", sort=False):
            mean = part.assign(_id=part[meta.id_column].astype(str)).groupby("_id")[cols].mean()
            matrix = mean.reindex(ids).to_numpy(dtype=float)
            if pd.isna(matrix).any():
                return note("tta", f"view {name!r} lacks some OOF rows (folds unfinished)")
            scores[str(name)] = metric(src.y, matrix)
        merged = metric(src.y, src.oof[cols].to_numpy(dtype=float))
    except (PipelineError, KeyError, ValueError, OSError) as err:
        return note("tta", f"{paths[0].name} could not be read ({err})")
    if len(scores) < 2:
        return note("tta", f"one view only ({', '.join(scores)}): 'predict.tta' lists no "
                    "transform")
    base = scores.get("none")
    sign = 1 if metric.greater_is_better else -1  # a gain is an improvement, either direction

    def gain(score: float) -> str:
        return "-" if base is None else f"{round(sign * (score - base), 5) + 0.0:+.5f}"  # no -0.0

    rows = [[n, s, gain(s)] for n, s in scores.items()]
    rows.append([f"merged ({src.folder.name}/oof.parquet)", merged, gain(merged)])
    grid = table(["view", f"OOF {meta.metric}", "gain over 'none'"], rows)
    img = plots.bars(list(scores), list(scores.values()), "OOF score per TTA view "
                     "(dashed: no TTA)", meta.metric, reference=base)
    return figure(src, "tta", "Test-time augmentation views", grid + img)


def _importance(src: Source) -> str:
    """Mean importance over the folds' ``feature_importance.csv``; nothing when none."""
    import pandas as pd

    from pipeline.report import _plots as plots

    paths = sorted(src.folder.glob("seed*/fold*/feature_importance.csv"))
    if not paths:
        return ""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
            frames.append(frame[["feature", "importance"]].astype({"importance": float}))
        except (KeyError, ValueError, OSError) as err:  # other columns, or not numbers
            return note("feature-importance", f"{path} could not be read ({err}); expected "
                        "columns feature, importance")
    mean = pd.concat(frames).groupby("feature")["importance"].mean()
    mean = mean.sort_values(ascending=False)
    img = plots.bars([str(f) for f in mean.index], mean.tolist(),
                     f"feature importance (mean of {len(paths)} fold(s))", "importance")
    values = escape(json.dumps({str(k): float(v) for k, v in mean.items()}))
    return figure(src, "feature-importance", "Feature importance", img,
                  f' data-values="{values}"')


def _blend_parts(src: Source) -> list[str]:
    """A blend's member weights and its members' OOF correlation (its own files)."""
    import numpy as np

    from pipeline.artifacts import read_json
    from pipeline.report import _plots as plots

    parts = []
    weights_path, diversity_path = src.folder / "weights.json", src.folder / "diversity.json"
    weights = read_json(weights_path).get("weights") if weights_path.is_file() else None
    if weights:
        parts.append(figure(src, "blend-weights", "Blend weights", plots.bars(
            list(weights), list(weights.values()), "member weights", "weight")))
    else:
        parts.append(note("blend-weights", "no member weights (a stacker, or weights.json "
                           "missing)"))
    corr = read_json(diversity_path).get("correlation") if diversity_path.is_file() else None
    if corr:
        names = list(corr)
        matrix = np.array([[corr[a].get(b, np.nan) for b in names] for a in names], float)
        parts.append(figure(src, "correlation", "Members' OOF correlation",
                             plots.heatmap(names, matrix, "OOF correlation")))
    else:
        parts.append(note("correlation", "no diversity.json"))
    return parts


def _guarded(kind: str, build: Callable[[Source], str | list[str]], src: Source) -> list[str]:
    """A part of the section, or a note when the folder's files defeat it (a damaged file,
    predictions the metric refuses): one bad file costs one plot, not the page."""
    try:
        made = build(src)
    except (PipelineError, KeyError, ValueError, TypeError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [note(kind, f"could not be drawn ({reason})")]
    return made if isinstance(made, list) else [made]


def section(src: Source) -> str:
    """A folder's section: its header, then every plot its files allow."""
    run = src.row.kind == "run"
    builders: list[tuple[str, Callable[[Source], str | list[str]]]] = [
        ("header", _header), ("fold-scores", _fold_scores),
        *([("learning-curves", _learning_curves)] if run else []),
        ("oof-diagnostics", _diagnostics),
        *([("tta", _tta), ("feature-importance", _importance)] if run else
          [("blend", _blend_parts)]),
    ]
    parts = [p for kind, build in builders for p in _guarded(kind, build, src)]
    title = f"{escape(src.row.name)} <small>({src.row.kind})</small>"
    return f'<section id="{src.slug}" class="source"><h2>{title}</h2>{"".join(parts)}</section>'


def comparison(sources: list[Source]) -> str:
    """The scores of the folders that share the first one's competition and metric, side by
    side, and their OOF correlation (matched by id); other folders are named in a note."""
    from pipeline.report import _plots as plots

    group = [s for s in sources if s.row.group == sources[0].row.group]
    parts = [f"<h2>Comparison of {len(group)} folders</h2>"]
    if len(group) < len(sources):
        others = ", ".join(s.row.name for s in sources if s not in group)
        parts.append(note("comparison", f"left out: {others} (another competition or metric "
                          f"than {sources[0].row.name})"))
    scored = [s for s in group if s.row.score is not None]
    if scored:
        labels = [s.row.name + (" (nested)" if s.row.kind == "blend" else "") for s in scored]
        parts.append(figure(None, "scores", "Scores", plots.bars(
            labels, [float(s.row.score or 0) for s in scored],
            "CV (blends: nested CV)", sources[0].row.metric)))
    try:
        matrix, names = _oof_correlation(group)
    except (KeyError, ValueError) as err:  # duplicate ids, say
        matrix, names = None, [str(err).splitlines()[0]]
    if matrix is None:
        parts.append(note("correlation", "needs two or more folders with OOF predictions of "
                          "the same rows and columns" + "".join(f" ({n})" for n in names)))
    else:
        parts.append(figure(None, "correlation", "OOF correlation", plots.heatmap(
            names, matrix, "OOF correlation (Pearson)")))
    return f'<section id="comparison">{"".join(parts)}</section>'


def _oof_correlation(sources: list[Source]) -> tuple[np.ndarray | None, list[str]]:
    """Pearson correlation of the folders' OOF predictions (all columns, rows matched by id
    to the first folder's), or None when fewer than two share its rows and columns."""
    import numpy as np

    usable = [(s.row.name, s.meta, s.oof) for s in sources
              if s.meta is not None and s.oof is not None]
    if len(usable) < 2:
        return None, []
    _, meta, oof = usable[0]
    assert meta is not None and oof is not None
    ids, cols = oof[meta.id_column].astype(str), list(meta.pred_columns)
    names, flat = [], []
    for name, m, frame in usable:
        assert m is not None and frame is not None
        if list(m.pred_columns) != cols:
            continue
        matrix = frame.set_index(frame[m.id_column].astype(str))[cols].reindex(ids)
        values = matrix.to_numpy(dtype=float).ravel()
        if not np.isnan(values).any():
            names.append(name)
            flat.append(values)
    return (np.corrcoef(np.vstack(flat)), names) if len(flat) >= 2 else (None, [])

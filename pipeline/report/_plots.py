"""The figures of ``pipeline report`` (:mod:`pipeline.report`): each function draws one plot
with matplotlib and returns it as an ``<img>`` tag holding a base64 PNG, so the page needs no
other file, no script and no network.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas, never pyplot:
no global figure state to leak between reports, and no display needed on a headless machine.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH = 9.0  # inches at DPI: about 800 px, the page's content width
DPI = 90
MAX_BARS = 25  # a longer bar chart keeps the largest, so labels stay readable
MAX_POINTS = 5000  # a scatter of more draws a random sample of them


def _canvas(height: float, ncols: int = 1, width: float = WIDTH) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def to_img(fig: Figure, alt: str) -> str:
    """The figure as ``<img src="data:image/png;base64,...">``."""
    from html import escape

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def fold_scores(labels: Sequence[str], values: Sequence[float], metric: str,
                overall: float | None, overall_label: str = "OOF CV") -> str:
    """A bar per (seed, fold) with its score; the pooled score as a dashed line."""
    fig, (ax,) = _canvas(3.0)
    x = np.arange(len(values))
    ax.bar(x, values, color="#4c72b0")
    ax.set_xticks(x, [_short(s, 14) for s in labels], rotation=30 if len(x) > 8 else 0)
    low, high = min(values), max(values)
    title = "score per fold"
    if overall is not None:  # named in the title: a legend would cover a bar
        ax.axhline(overall, color="#c44e52", linestyle="--")
        low, high = min(low, overall), max(high, overall)
        title += f" (dashed: {overall_label} {overall:.5f})"
    pad = (high - low) * 0.25 or abs(high) * 0.05 or 0.05
    ax.set_ylim(low - pad, high + pad)  # differences between folds are what matters
    for xi, v in zip(x, values, strict=True):
        ax.annotate(f"{v:.4f}", (xi, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title)
    return to_img(fig, "fold scores")


def learning_curves(curves: dict[str, list[dict[str, Any]]], metric: str) -> str:
    """Train (solid) and validation (dashed) loss per epoch, and the validation score, one
    colour per fold."""
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, score_ax) = _canvas(3.4, 2)
    for i, (label, epochs) in enumerate(curves.items()):
        color = f"C{i % 10}"
        x = [e.get("epoch", k + 1) for k, e in enumerate(epochs)]
        for key, style, name in (("train_loss", "-", "train"), ("valid_loss", "--", "valid")):
            y = [e.get(key) for e in epochs]
            if any(v is not None for v in y):
                loss_ax.plot(x, [np.nan if v is None else v for v in y], style, color=color,
                             marker="o", markersize=3, label=f"{label} {name}")
        scores = [e.get("score") for e in epochs]
        score_ax.plot(x, [np.nan if v is None else v for v in scores], color=color,
                      marker="o", markersize=3, label=label)
    loss_ax.set(title="loss (solid: train, dashed: valid)", xlabel="epoch", ylabel="loss")
    score_ax.set(title=f"validation {metric}", xlabel="epoch", ylabel=metric)
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    if len(curves) <= 10:
        score_ax.legend(fontsize=7)
    return to_img(fig, "learning curves")


def confusion(matrix: np.ndarray, classes: Sequence[str]) -> str:
    """Counts of true (rows) against predicted (columns) classes, shaded by row share."""
    n = len(classes)
    side = min(2.2 + 0.5 * n, 8.0)
    fig, (ax,) = _canvas(side, width=side + 1.0)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = [_short(str(c), 12) for c in classes]
    ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0)
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="true", title="OOF confusion matrix")
    if n <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=9,
                    color="white" if shares[i, j] > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    return to_img(fig, "confusion matrix")


def calibration(prob: np.ndarray, hit: np.ndarray, label: str, bins: int = 10) -> str:
    """Reliability diagram (mean predicted probability against observed frequency per bin)
    beside the histogram of predicted probabilities."""
    fig, (ax, hist_ax) = _canvas(3.4, 2)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    mean_p = [prob[which == b].mean() for b in used]
    freq = [hit[which == b].mean() for b in used]
    ax.plot([0, 1], [0, 1], ":", color="gray")  # named in the title: a legend hid points
    ax.plot(mean_p, freq, "o-", color="#4c72b0")
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel=f"mean predicted {label}",
           ylabel="observed frequency", title="reliability (dotted: perfectly calibrated)")
    ax.grid(alpha=0.3)
    hist_ax.hist(prob, bins=edges, color="#55a868")
    hist_ax.set(xlim=(0, 1), xlabel=f"predicted {label}", ylabel="rows",
                title="predicted probabilities")
    return to_img(fig, "calibration")


def residuals(pred: np.ndarray, truth: np.ndarray, target: str) -> str:
    """Residual (truth - prediction) against prediction, and the residuals' histogram."""
    fig, (ax, hist_ax) = _canvas(3.4, 2)
    resid = truth - pred
    shown = np.random.default_rng(0).permutation(len(pred))[:MAX_POINTS]  # a readable cloud
    ax.scatter(pred[shown], resid[shown], s=10, alpha=0.6, color="#4c72b0")
    ax.axhline(0, color="#c44e52", linestyle="--")
    ax.set(xlabel=f"OOF prediction ({_short(target)})", ylabel="truth - prediction",
           title="residuals vs prediction")
    ax.grid(alpha=0.3)
    hist_ax.hist(resid, bins=min(40, max(5, len(resid) // 5)), color="#55a868")
    hist_ax.axvline(0, color="#c44e52", linestyle="--")
    hist_ax.set(xlabel="truth - prediction", ylabel="rows",
                title=f"residuals: mean {resid.mean():.4g}, std {resid.std():.4g}")
    return to_img(fig, f"residuals of {target}")


def bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str,
         reference: float | None = None) -> str:
    """Horizontal bars, largest |value| kept when there are more than :data:`MAX_BARS`;
    ``reference`` as a dashed line (the score without TTA, for instance)."""
    order = np.argsort(-np.abs(np.asarray(values, dtype=float)), kind="stable")[:MAX_BARS]
    labels, values = [labels[i] for i in order], [float(values[i]) for i in order]
    fig, (ax,) = _canvas(1.2 + 0.3 * len(values))
    y = np.arange(len(values))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, [_short(s, 32) for s in labels])
    ax.invert_yaxis()  # the first (largest) on top
    if reference is not None:
        ax.axvline(reference, color="#c44e52", linestyle="--")
        finite = [*values, reference]
        low, high = min(finite), max(finite)
        pad = (high - low) * 0.3 or abs(high) * 0.05 or 0.05
        ax.set_xlim(low - pad, high + pad)
    else:
        ax.margins(x=0.12)  # room for the value printed after the longest bar
    for yi, v in zip(y, values, strict=True):
        ax.annotate(f"{v:.4g}", (v, yi), va="center", ha="left", fontsize=8,
                    xytext=(2, 0), textcoords="offset points")
    ax.set(title=title, xlabel=xlabel)
    return to_img(fig, title)


def heatmap(names: Sequence[str], matrix: np.ndarray, title: str) -> str:
    """A correlation matrix, annotated, on a fixed [-1, 1] scale."""
    n = len(names)
    side = min(2.5 + 0.6 * n, 9.0)
    fig, (ax,) = _canvas(side, width=side + 1.2)
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    short = [_short(s, 20) for s in names]
    ax.set_xticks(range(n), short, rotation=45, ha="right")
    ax.set_yticks(range(n), short)
    if n <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(v) > 0.7 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return to_img(fig, title)

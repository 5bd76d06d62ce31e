"""A run or blend folder as the report reads it, and the HTML pieces every section is
made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import DataError, PipelineError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipeline.artifacts import RunMeta
    from pipeline.leaderboard import Row


class ReportError(PipelineError):
    """A path given to ``pipeline report`` that cannot be reported on."""


@dataclass
class Source:
    """One run or blend folder and what the report reads from it."""

    folder: Path
    row: Row  # the leaderboard's reading of its scores
    slug: str  # the HTML id of its section
    meta: RunMeta | None = None
    oof: pd.DataFrame | None = None
    y: np.ndarray | None = None  # encoded targets aligned with ``oof``
    problems: dict[str, str] = field(default_factory=dict)  # why a piece is missing


def note(kind: str, text: str) -> str:
    return f'<p class="note" data-skipped="{kind}">{escape(kind)}: {escape(text)}</p>'


def figure(src: Source | None, kind: str, title: str, body: str, attrs: str = "") -> str:
    pid = f"{src.slug}-{kind}" if src is not None else f"comparison-{kind}"
    return (f'<figure id="{pid}" class="plot {kind}"{attrs}><figcaption>{escape(title)}'
            f"</figcaption>{body}</figure>")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.5f}" if isinstance(v, float) else escape(str(v))

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def load_source(folder: Path, slug: str) -> Source:
    """Read a run (``scores.json``) or blend (``cv.json``) folder; its OOF predictions and
    targets when they can be read (otherwise the reason is kept for the page)."""
    from pipeline.leaderboard import find_source

    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder (pass a run folder such as runs/<name> "
                          "or a blend folder such as blends/<name>)")
    try:
        row = find_source(folder)
    except (TypeError, AttributeError) as err:  # valid JSON of the wrong shape
        raise ReportError(f"{folder}: its scores.json or cv.json could not be read ({err}); "
                          "rerun the stage that wrote it") from None
    if row is None:
        raise ReportError(f"{folder} is neither a run (no scores.json) nor a blend (no "
                          "cv.json): pass a finished run or blend folder")
    src = Source(folder, row, slug)
    try:
        from pipeline.artifacts import read_meta, read_parquet

        src.meta = read_meta(folder)
        src.oof = read_parquet(folder / "oof.parquet")
        src.y = _targets(src.meta, src.oof)
    except (PipelineError, OSError, KeyError, ValueError) as err:
        src.problems["targets"] = str(err).splitlines()[0]
    return src


def _targets(meta: RunMeta, oof: pd.DataFrame) -> np.ndarray:
    """Encoded targets of the OOF rows, matched by id in the competition's train file."""
    from pipeline.competition_files import class_labels, labels_typed, read_csv
    from pipeline.task_outputs import encode_targets

    path = Path(meta.competition_dir) / meta.train_file
    train = read_csv(path, "train", meta.csv_sep, meta.csv_encoding, meta.id_column,
                     class_labels(meta.task, meta.target_columns), decimal=meta.csv_decimal,
                     thousands=meta.csv_thousands, na_values=meta.csv_na_values,
                     number_rows=True, quoting=meta.csv_quoting)
    ids = train[meta.id_column].astype(str)
    rows = ids.reset_index(drop=True).reset_index().set_index(meta.id_column)["index"]
    wanted = oof[meta.id_column].astype(str)
    missing = ~wanted.isin(rows.index)
    if missing.any():
        raise DataError(f"{missing.sum()} OOF ids are not in {path}")
    # typed as the run's classes were: a label column with empty cells (unlabelled rows,
    # never in the OOF) holds the others as Python values
    return encode_targets(labels_typed(train.iloc[rows.loc[wanted].to_numpy()],
                                       meta.target_columns),
                          meta.task, meta.target_columns, meta.classes)


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.5f}" if isinstance(value, float) else str(value)

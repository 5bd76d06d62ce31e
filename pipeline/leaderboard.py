"""``pipeline leaderboard``: every run and blend of a project in one table, best first, read
from their folders alone (no config needed); and ``pipeline lb``, which records a public
leaderboard score in the ledger (:mod:`pipeline.ledger`).

What a row shows, and where it comes from:

- run (``<runs_dir>/<name>/scores.json``): CV = the OOF score (the predicting epochs'), folds
  = mean +- std of the per-(seed, fold) scores, last CV = the OOF score of the last epochs and
  last folds = mean +- std of the folds' ``last_epoch_score`` (``metrics.json``; networks
  only). A run submitted with tuned thresholds shows and is ranked by their nested score.
- blend (``cv.json``): CV and folds score its ``oof.parquet``, out of fold like a run's (an
  older blend's: in-sample); nested = the nested-CV score (re-tuned without each fold, pooled
  over the held-out folds), which ranks blends; with tuned thresholds, theirs (fold mean).
- time: the sum of every fold's epoch seconds (``metrics.json``); where a fold has no epochs
  (scikit-learn models), ``~`` and the span from ``config.yaml`` to the last fold's
  ``metrics.json`` (file times: unknown once a later command rewrote it). Blends: none.
- differs from best: the dotted config keys whose values differ from the best run's of the
  same competition and metric (``config.yaml``); a blend: its members and weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from pipeline import ledger
from pipeline.errors import DataError, PipelineError

if TYPE_CHECKING:
    import pandas as pd

_NOT_COMPARED = ("name", "output_dir", "folds_dir", "submissions_dir", "competition.dir",
                 "train.num_workers")  # name or place a run or its files, not shape it
SHOWN_KEYS = 3  # 'differs from best' in the terminal; the CSV has every key


@dataclass
class Row:
    """One run or blend on the leaderboard."""

    name: str
    kind: str  # 'run' or 'blend'
    folder: Path
    metric: str
    greater_is_better: bool
    competition: str  # the competition folder of run.json: rows are compared within one
    cv: float | None  # run: OOF; blend: its oof.parquet's (out of fold)
    folds: list[float] = field(default_factory=list)
    last_cv: float | None = None
    last_folds: list[float] = field(default_factory=list)
    nested: float | None = None  # blend: pooled held-out score
    nested_folds: list[float] = field(default_factory=list)
    seconds: float | None = None
    time_source: str = ""  # 'epochs' or 'files'
    leaky: bool = False
    config: dict[str, Any] | None = None
    members: str = ""
    lb: list[float] = field(default_factory=list)  # public scores, oldest first
    differs: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        """What the row is ranked by: a blend's nested CV, a run's OOF CV (its tuned
        thresholds' nested CV where its submission applies them)."""
        return self.nested if self.kind == "blend" or self.nested is not None else self.cv

    @property
    def cv_kind(self) -> str:
        """Which score :attr:`score` is, as the ledger records it."""
        return "nested" if self.kind == "blend" or self.nested is not None else "oof"

    @property
    def group(self) -> tuple[str, str]:
        """Rows are ranked and compared within one competition and metric."""
        return self.competition, self.metric


def _finite(value: Any) -> float | None:
    """A score as float, None for a missing or non-finite one (JSON null, NaN)."""
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _scores(values: Any) -> list[float]:
    return [v for v in (_finite(x) for x in values) if v is not None]


def _read(path: Path, missing: Any = None) -> Any:
    """A JSON file; ``missing`` when given and the file is not there."""
    if missing is not None and not path.is_file():
        return missing
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # not JSON, or not text
        raise DataError(f"{path} could not be read ({err}); rerun the stage that wrote "
                        "it") from None


def _run_time(folder: Path, metrics: list[dict[str, Any]]) -> tuple[float | None, str]:
    if metrics and all(m.get("epochs") for m in metrics):
        return sum(e.get("seconds", 0.0) for m in metrics for e in m["epochs"]), "epochs"
    config, ends = folder / "config.yaml", list(folder.glob("seed*/fold*/metrics.json"))
    if not config.is_file() or not ends:
        return None, ""
    span = max(p.stat().st_mtime for p in ends) - config.stat().st_mtime
    return (span, "files") if span >= 0 else (None, "")


def read_run(folder: Path) -> Row:
    """A run folder's row (its ``scores.json``, ``run.json``, fold metrics, config)."""
    scores = _read(folder / "scores.json")
    meta, values = _read(folder / "run.json", {}), scores.get("scores", {})
    metrics = [_read(p) for p in sorted(folder.glob("seed*/fold*/metrics.json"))]
    last_folds = [m.get("last_epoch_score") for m in metrics]
    seconds, source = _run_time(folder, metrics)
    pp = scores.get("postprocess") or {}
    tuned = pp["nested"] if pp.get("applied") else {}  # the submitted labels' nested score
    config_path = folder / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    except yaml.YAMLError:
        config = None
    return Row(
        name=folder.name, kind="run", folder=folder, metric=scores.get("metric", "?"),
        greater_is_better=scores.get("direction") != "minimize",
        competition=meta.get("competition_dir", ""), cv=_finite(values.get("oof")),
        folds=_scores(v for k, v in values.items() if "/fold" in k),
        last_cv=_finite(values.get("oof_last_epoch")),
        last_folds=_scores(last_folds) if None not in last_folds else [],
        nested=_finite(tuned.get("mean")), nested_folds=_scores(tuned.get("per_fold", {}).values()),
        seconds=seconds, time_source=source, leaky=bool(meta.get("leaky")),
        config=config if isinstance(config, dict) else None,
    )


def read_blend(folder: Path) -> Row:
    """A blend folder's row (its ``cv.json``, ``weights.json``, ``run.json``)."""
    cv, meta = _read(folder / "cv.json"), _read(folder / "run.json", {})
    weights = _read(folder / "weights.json", {}).get("weights")
    if weights:
        members = ", ".join(f"{n} {w:.2f}" for n, w in weights.items())
    else:
        members = f"{cv.get('method', 'stacking')} of " + ", ".join(cv.get("members", {}))
    published = cv.get("oof") or cv.get("in_sample", {})  # older blends: no "oof", in-sample
    nested, pp = cv.get("nested", {}), cv.get("postprocess")
    if pp and pp.get("applied", True):  # submitted with tuned thresholds (older blends: always)
        nested = {**pp["nested"], "pooled": pp["nested"]["mean"]}  # the rule's nested score
    return Row(
        name=folder.name, kind="blend", folder=folder, metric=cv.get("metric", "?"),
        greater_is_better=cv.get("direction") != "minimize",
        competition=meta.get("competition_dir", ""), cv=_finite(published.get("score")),
        folds=_scores(published.get("per_fold", {}).values()),
        nested=_finite(nested.get("pooled")),
        nested_folds=_scores(nested.get("per_fold", {}).values()),
        leaky=bool(meta.get("leaky")), members=f"blend: {members}",
    )


def find_source(folder: Path) -> Row | None:
    """The row of a run or blend folder, None when it is neither."""
    if (folder / "scores.json").is_file():
        return read_run(folder)
    if (folder / "cv.json").is_file():
        return read_blend(folder)
    return None


def collect(runs_dir: Path, blends_dir: Path) -> tuple[list[Row], list[str]]:
    """Rows of every run and blend folder, and a warning per folder that could not be read
    (one damaged file does not hide the rest)."""
    rows, problems = [], []
    for parent, marker, reader in ((runs_dir, "scores.json", read_run),
                                   (blends_dir, "cv.json", read_blend)):
        if not parent.is_dir():
            continue
        for folder in sorted(p for p in parent.iterdir() if (p / marker).is_file()):
            try:
                rows.append(reader(folder))
            except (DataError, TypeError, AttributeError, ValueError) as err:
                problems.append(f"warning: {folder} skipped: {err}")
    return rows, problems


def flatten(config: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a config: sections and lists of sections recursed
    (``model.encoders.0.params.hidden``), lists of values kept whole."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, dict):  # an empty section adds no key: {} equals absent
            flat.update(flatten(value, f"{path}."))
        elif path not in _NOT_COMPARED:
            flat[path] = value
    return flat


def config_differences(config: dict[str, Any], best: dict[str, Any]) -> list[str]:
    """``key=value`` (this run's value) for every dotted key that differs from ``best``."""
    mine, theirs = flatten(config), flatten(best)
    return [f"{k}={_show(mine.get(k, '<absent>'))}" for k in sorted(set(mine) | set(theirs))
            if mine.get(k, "<absent>") != theirs.get(k, "<absent>")]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _rank_key(row: Row, sort: str) -> tuple[bool, Any]:
    """Missing values last; better first in the metric's direction."""
    sign = 1.0 if row.greater_is_better else -1.0
    value: float | None = {"score": row.score, "last": row.last_cv,
                           "lb": row.lb[-1] if row.lb else None}.get(sort)
    if sort == "name":
        return False, row.name
    if sort == "time":
        return row.seconds is None, row.seconds or 0.0
    return value is None, -sign * value if value is not None else 0.0


def rank(rows: list[Row], entries: list[ledger.Entry], sort: str = "score") -> list[list[Row]]:
    """Rows grouped by competition and metric, each group sorted; fills the LB scores and
    the config keys that differ from each group's best run."""
    for row in rows:
        row.lb = [e.lb for e in entries
                  if e.kind == row.kind and Path(e.source).name == row.name]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    ranked = []
    for key in sorted(groups):  # tables in competition, then metric, order
        group = groups[key]
        runs = sorted((r for r in group if r.kind == "run"), key=lambda r: _rank_key(r, "score"))
        best = runs[0] if runs and runs[0].score is not None else None
        for row in group:
            if row.kind == "blend":
                row.differs = [row.members]
            elif row is best:
                row.differs = ["(best run)"]
            elif best is not None and row.config is not None and best.config is not None:
                row.differs = config_differences(row.config, best.config) or ["(same config)"]
        ranked.append(sorted(group, key=lambda r: _rank_key(r, sort)))
    return ranked


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.5f} +- {np.std(values):.5f}" if values else "-"


def _duration(row: Row) -> str:
    if row.seconds is None:
        return "-"
    s = row.seconds
    text = f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s" if s < 3600 else \
        f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return ("~" if row.time_source == "files" else "") + text


def _lb(row: Row) -> str:
    many = f" ({len(row.lb)} scores)" if len(row.lb) > 1 else ""
    return f"{row.lb[-1]:.5f}{many}" if row.lb else "-"


def _differs(row: Row) -> str:
    shown = ", ".join(row.differs[:SHOWN_KEYS])
    more = len(row.differs) - SHOWN_KEYS
    return shown + (f" +{more} more" if more > 0 else "")


HEADERS = ("#", "name", "kind", "CV", "folds", "last CV", "last folds", "nested", "time",
           "LB", "differs from best")
_LEFT = {"name", "kind", "differs from best"}
LEGEND = ("CV: the OOF score (a blend's: out of fold; older: in-sample); folds: mean +- std over "
          "(seed, fold); last: the last epochs' predictions;\nnested: a blend re-tuned without "
          "each fold, or tuned thresholds (ranked by it); time: sum of epoch seconds (~: file "
          "times); *: trained on leaked pseudo-labels (CV optimistic)")


def _cells(rows: list[Row]) -> list[list[str]]:
    return [[str(i), row.name + (" *" if row.leaky else ""), row.kind, _score(row.cv),
             _spread(row.folds), _score(row.last_cv), _spread(row.last_folds),
             _score(row.nested), _duration(row), _lb(row), _differs(row)]
            for i, row in enumerate(rows, 1)]


def format_table(headers: tuple[str, ...], cells: list[list[str]], markdown: bool) -> list[str]:
    """Aligned plain-text lines (text columns left, numbers right), or a Markdown table."""
    if markdown:
        return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
            "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        parts = [c.ljust(w) if h in _LEFT else c.rjust(w)
                 for h, c, w in zip(headers, row, widths, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return lines


def _title(group: tuple[str, str], rows: list[Row], markdown: bool) -> str:
    competition, metric = group
    better = "higher" if rows[0].greater_is_better else "lower"
    runs = sum(r.kind == "run" for r in rows)
    text = (f"{competition or '(competition unknown)'}: {metric} ({better} is better), "
            f"{runs} run(s), {len(rows) - runs} blend(s)")
    return f"### {text}" if markdown else text


def render(groups: list[list[Row]], entries: list[ledger.Entry], markdown: bool) -> list[str]:
    """The leaderboard's lines: per competition and metric a title, the table and what the
    ledger says of it (CV vs LB correlation, ranking disagreements)."""
    lines: list[str] = []
    by_group = ledger.by_group(entries)
    for rows in groups:
        lines += [_title(rows[0].group, rows, markdown), *([""] if markdown else []),
                  *format_table(HEADERS, _cells(rows), markdown), ""]
        lines += [*ledger.summary(by_group.pop(rows[0].group, [])), ""]
    shown = {e.submission for rows in groups for e in entries if e.group == rows[0].group}
    for (competition, metric), group in by_group.items():  # deleted or unknown sources
        rest = [e for e in group if e.submission not in shown]  # not paired since
        if not rest:
            continue
        lines += [f"ledger only ({competition or 'no source'}, {metric or 'no metric'}): " +
                  ", ".join(f"{Path(e.submission).stem} LB {e.lb:.5f}" for e in rest),
                  *ledger.summary(rest), ""]
    lines.append(LEGEND)
    return [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]


def to_frame(groups: list[list[Row]]) -> pd.DataFrame:
    """Every column of the leaderboard, unabridged, one row per run or blend."""
    import pandas as pd  # here: pandas is slow to import, and the CLI imports this module
    records = []
    for rows in groups:
        for i, row in enumerate(rows, 1):
            record = {"competition": row.competition, "metric": row.metric, "rank": i,
                      "name": row.name, "kind": row.kind, "folder": str(row.folder),
                      "cv": row.cv, "last_cv": row.last_cv, "nested": row.nested}
            for part, values in (("fold", row.folds), ("last_fold", row.last_folds),
                                 ("nested_fold", row.nested_folds)):
                record[f"{part}_mean"] = float(np.mean(values)) if values else None
                record[f"{part}_std"] = float(np.std(values)) if values else None
            records.append({**record, "seconds": row.seconds, "time_source": row.time_source,
                            "lb": row.lb[-1] if row.lb else None,
                            "lb_all": ";".join(map(repr, row.lb)), "leaky": row.leaky,
                            "differs_from_best": "; ".join(row.differs)})
    return pd.DataFrame.from_records(records)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """``pipeline leaderboard``: print the table; write it as CSV / Markdown on request."""
    runs_dir, blends_dir = Path(args.runs_dir), Path(args.blends_dir)
    rows, problems = collect(runs_dir, blends_dir)
    entries = ledger.read_ledger(args.submissions_dir)
    if not rows and not entries:
        raise PipelineError(f"nothing to rank: no run folder with scores.json under {runs_dir}"
                            f" and no blend folder with cv.json under {blends_dir} (pass "
                            "--runs-dir / --blends-dir)")
    groups = rank(rows, entries, args.sort)
    for problem in problems:
        print(problem, file=sys.stderr)
    print("\n".join(render(groups, entries, markdown=False)))
    from pipeline.artifacts import write_csv, write_text  # here: it imports pandas

    if args.csv:
        write_csv(args.csv, to_frame(groups))
        print(f"wrote {args.csv}")
    if args.markdown:
        write_text(args.markdown, "\n".join(render(groups, entries, markdown=True)) + "\n")
        print(f"wrote {args.markdown}")
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; examples kept as written."""


def _folders(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default="runs", help="parent of the run folders")
    p.add_argument("--blends-dir", default="blends", help="parent of the blend folders")
    p.add_argument("--submissions-dir", default="submissions",
                   help="submission files and the ledger lb.csv")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``leaderboard`` and ``lb`` to the ``pipeline`` command's subparsers."""
    text = "every run and blend, best first: CV, folds, last epochs, nested CV, time, LB"
    p = sub.add_parser("leaderboard", help=text, description=text, formatter_class=_Formatter,
                       epilog="example: pipeline leaderboard --csv leaderboard.csv")
    _folders(p)
    p.add_argument("--sort", default="score", choices=["score", "last", "lb", "time", "name"],
                   help="rank by CV (blends: nested CV), last-epoch CV, public LB, time, name")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also write it as Markdown (for a report)")
    p.set_defaults(fn=cmd_leaderboard)
    text = "record a submission's public leaderboard score next to its CV (submissions/lb.csv)"
    p = sub.add_parser("lb", help=text, description=text, formatter_class=_Formatter,
                       epilog="example: pipeline lb exp-v2 0.81234 --note 'after TTA'")
    p.add_argument("submission", help="submission file, or its name in --submissions-dir")
    p.add_argument("score", help="the public leaderboard score")
    p.add_argument("--note", default=None, help="free text kept with the score")
    p.add_argument("--source", default=None, metavar="FOLDER",
                   help="the run or blend folder it came from; when not given, the one named "
                   "as the submission file")
    _folders(p)
    p.set_defaults(fn=functools.partial(ledger.cmd_lb, find=find_source))

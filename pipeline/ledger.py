"""The CV-vs-leaderboard ledger: ``submissions/lb.csv``, one row per public score recorded
with ``pipeline lb``, next to the CV of the run or blend the submission came from.

Its point is the question every competitor asks and no tool answers: does my CV track the
public leaderboard? With three or more scored submissions of one competition the ledger
gives the Spearman and Pearson correlation of CV and LB, and names every pair of submissions
whose order CV and LB disagree on (a sign of a noisy public split, a leaky CV, or a CV that
measures something the leaderboard does not).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from filelock import FileLock

from pipeline.errors import DataError, PipelineError

LEDGER_FILE = "lb.csv"
MIN_CORRELATION_POINTS = 3  # two points always correlate perfectly: no evidence
MAX_SWAPS_SHOWN = 5


class LedgerError(PipelineError, ValueError):
    """A ``pipeline lb`` call that cannot be recorded (unknown submission, score not a
    number, ambiguous source)."""


@dataclass(frozen=True)
class Entry:
    """One recorded public score.

    ``kind``/``source`` name the run or blend the submission came from (empty when none was
    found); ``source_from`` says how it was found: ``name`` (a run or blend folder named as
    the submission file: submit writes ``submissions/<run or blend name>.csv`` and no
    sidecar) or ``--source`` (given). ``cv`` is the source's score when the LB score was
    recorded (a run's OOF CV, a blend's nested CV: ``cv_kind``).
    """

    time: str
    submission: str
    lb: float
    kind: str
    source: str
    source_from: str
    metric: str
    direction: str  # 'maximize' or 'minimize'; the public LB uses the same metric
    cv: float | None
    cv_kind: str
    competition: str
    note: str

    @property
    def group(self) -> tuple[str, str]:
        """Entries are compared within one competition and metric only."""
        return self.competition, self.metric


FIELDS = tuple(f.name for f in fields(Entry))


def ledger_path(submissions_dir: str | Path) -> Path:
    """``<submissions_dir>/lb.csv``."""
    return Path(submissions_dir) / LEDGER_FILE


def parse_score(text: str) -> float:
    """The public score given on the command line, as a finite float."""
    try:
        value = float(text)
    except ValueError:
        raise LedgerError(f"score {text!r} is not a number: give the public leaderboard score "
                          "as shown on the competition page, e.g. 0.81234") from None
    if not math.isfinite(value):
        raise LedgerError(f"score {text!r} is not a finite number")
    return value


def _number(path: Path, line: int, key: str, value: str, optional: bool) -> float | None:
    if optional and value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path} line {line}: {key} {value!r} is not a number; fix or "
                        "delete that line") from None


def read_ledger(submissions_dir: str | Path) -> list[Entry]:
    """Every entry of the ledger in the order recorded; no ledger file is no entries."""
    path = ledger_path(submissions_dir)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise DataError(f"{path} has columns {reader.fieldnames}, not the ledger's "
                            f"{list(FIELDS)}; move it away to start a new ledger")
        entries = []
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():  # cells beyond the header, or missing
                raise DataError(f"{path} line {line} does not have the {len(FIELDS)} cells of "
                                "the header; fix or delete that line")
            values: dict[str, Any] = dict(row)
            values["lb"] = _number(path, line, "lb", row["lb"], optional=False)
            values["cv"] = _number(path, line, "cv", row["cv"], optional=True)
            entries.append(Entry(**values))
    return entries


def append_entry(submissions_dir: str | Path, entry: Entry) -> Path:
    """Add ``entry`` to the ledger: the whole file rewritten atomically (a cut-off write
    leaves the old ledger), under a lock so two ``pipeline lb`` calls never lose a row."""
    # imported here: artifacts imports pandas, and the CLI imports this module at start
    from pipeline.artifacts import write_text

    path = ledger_path(submissions_dir)
    lock = FileLock(path.with_name(f".{LEDGER_FILE}.lock"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except PermissionError:
        raise DataError(f"cannot write {path}: permission denied on {path.parent} (pass a "
                        "writable --submissions-dir)") from None
    try:
        read_ledger(submissions_dir)  # a damaged ledger is refused, not appended to
        old = path.read_text() if path.is_file() else ""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        if not old:
            writer.writeheader()
        row = asdict(entry)
        row["cv"] = "" if entry.cv is None else repr(entry.cv)
        row["lb"] = repr(entry.lb)
        writer.writerow(row)
        if old and not old.endswith("\n"):
            old += "\n"
        write_text(path, old + buffer.getvalue())
    finally:
        lock.release()
    return path


def now() -> str:
    """The entry's time stamp: UTC, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Point:
    """A submission's CV and public LB score (the latest entry of that submission)."""

    label: str
    cv: float
    lb: float


def points(entries: list[Entry]) -> list[Point]:
    """One point per submission that has a CV: its latest entry (a score recorded again
    replaces the earlier one)."""
    latest: dict[str, Entry] = {}
    for entry in entries:
        latest[entry.submission] = entry
    return [Point(Path(e.submission).stem, e.cv, e.lb) for e in latest.values()
            if e.cv is not None and math.isfinite(e.cv)]


def correlations(pts: list[Point]) -> tuple[float, float] | None:
    """(Spearman, Pearson) of CV vs LB; None under 3 points or when either side is
    constant (the correlation is undefined)."""
    if len(pts) < MIN_CORRELATION_POINTS:
        return None
    cv = np.array([p.cv for p in pts])
    lb = np.array([p.lb for p in pts])
    if np.ptp(cv) == 0 or np.ptp(lb) == 0:
        return None
    pearson = float(np.corrcoef(cv, lb)[0, 1])
    spearman = float(np.corrcoef(_ranks(cv), _ranks(lb))[0, 1])
    return spearman, pearson


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their mean rank (as Spearman's coefficient has it)."""
    ranks = np.empty(len(values))
    ranks[values.argsort(kind="stable")] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def swapped_pairs(pts: list[Point], greater_is_better: bool) -> list[str]:
    """Each pair CV and LB order differently, as ``a beats b on CV (..) but not on LB (..)``.
    A tie on either side is no disagreement."""
    better = "higher" if greater_is_better else "lower"
    lines = []
    for a, b in combinations(pts, 2):
        if (a.cv - b.cv) * (a.lb - b.lb) >= 0:
            continue
        first, second = (a, b) if (a.cv > b.cv) == greater_is_better else (b, a)
        lines.append(f"{first.label} beats {second.label} on CV ({first.cv:.5f} vs "
                     f"{second.cv:.5f}) but not on LB ({first.lb:.5f} vs {second.lb:.5f}; "
                     f"{better} is better)")
    return lines


def summary(entries: list[Entry]) -> list[str]:
    """Lines on one group's entries: the correlation (3+ submissions with a CV) and a
    ``warning:`` line per ranking disagreement."""
    pts = points(entries)
    if not pts:
        return []
    greater = entries[-1].direction != "minimize"
    lines = []
    corr = correlations(pts)
    if corr is not None:
        lines.append(f"CV vs LB over {len(pts)} submissions: Spearman {corr[0]:+.3f}, "
                     f"Pearson {corr[1]:+.3f}")
    elif len(pts) >= MIN_CORRELATION_POINTS:
        lines.append(f"CV vs LB over {len(pts)} submissions: correlation undefined (every "
                     "CV or every LB score is the same)")
    else:
        lines.append(f"CV vs LB: {len(pts)} submission(s) with a CV; the correlation needs "
                     f"{MIN_CORRELATION_POINTS}")
    swaps = swapped_pairs(pts, greater)
    if swaps:
        lines.append(f"warning: CV and LB rank {len(swaps)} pair(s) of submissions in "
                     "opposite order:")
        lines += [f"warning:   {s}" for s in swaps[:MAX_SWAPS_SHOWN]]
        if len(swaps) > MAX_SWAPS_SHOWN:
            lines.append(f"warning:   and {len(swaps) - MAX_SWAPS_SHOWN} more pair(s)")
    return lines


def by_group(entries: list[Entry]) -> dict[tuple[str, str], list[Entry]]:
    """Entries by (competition, metric), in the order first recorded."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    return groups


def resolve_submission(text: str, submissions_dir: str | Path) -> Path:
    """The submission file ``pipeline lb`` was given: a path, or a name (with or without
    ``.csv``) in ``submissions_dir``."""
    folder = Path(submissions_dir)
    if Path(text).name == LEDGER_FILE:
        raise LedgerError(f"{text} is the ledger itself, not a submission")
    for candidate in (Path(text), folder / text, folder / f"{text}.csv"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in folder.glob("*.csv") if p.name != LEDGER_FILE)
    there = (f"submissions there: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
             if known else f"{folder} holds no submission (write one with pipeline submit)")
    raise LedgerError(f"unknown submission {text!r}: no file {text} nor "
                      f"{folder / (Path(text).stem + '.csv')}; {there}")


class Source(Protocol):
    """What the ledger reads of a run or blend (a leaderboard row)."""

    kind: str
    folder: Path
    metric: str
    greater_is_better: bool
    competition: str

    @property
    def score(self) -> float | None: ...  # the CV the ledger records

    @property
    def cv_kind(self) -> str: ...  # "oof" (run) or "nested" (blend)


Finder = Callable[[Path], "Source | None"]  # a folder -> its run or blend, None if neither


def _source(submission: Path, args: argparse.Namespace,
            find: Finder) -> tuple[Source | None, str]:
    """The run or blend a submission came from, and how it was found: ``--source``, or a
    folder named as the submission (submit writes ``<run or blend name>.csv``; no sidecar)."""
    if args.source:
        source = find(Path(args.source))
        if source is None:
            raise LedgerError(f"--source {args.source} is neither a run (no scores.json) nor "
                              "a blend (no cv.json)")
        return source, "--source"
    found = [source for folder in (Path(args.runs_dir) / submission.stem,
                                   Path(args.blends_dir) / submission.stem)
             if (source := find(folder)) is not None]
    if len(found) > 1:
        raise LedgerError(f"{submission.name} is named like run {found[0].folder} and blend "
                          f"{found[1].folder}; pass --source with the one it came from")
    return (found[0], "name") if found else (None, "")


def cmd_lb(args: argparse.Namespace, find: Finder) -> int:
    """``pipeline lb``: record a public score with the CV of the submission's source (found
    by ``find``); print the CV-vs-LB summary of its competition."""
    score = parse_score(args.score)
    path = resolve_submission(args.submission, args.submissions_dir)
    source, how = _source(path, args, find)
    entry = Entry(
        time=now(), submission=path.name, lb=score, kind=source.kind if source else "",
        source=str(source.folder) if source else "", source_from=how,
        metric=source.metric if source else "",
        direction=("maximize" if source.greater_is_better else "minimize") if source else "",
        cv=source.score if source else None, cv_kind=source.cv_kind if source else "",
        competition=source.competition if source else "", note=args.note or "")
    written = append_entry(args.submissions_dir, entry)
    if source is None:
        print(f"{path.name}: LB {score:.5f} recorded in {written} without a CV\nwarning: no run"
              f" under {args.runs_dir} nor blend under {args.blends_dir} is named "
              f"{path.stem!r}; pass --source FOLDER to pair the score with its CV")
        return 0
    cv = "-" if entry.cv is None else f"{entry.cv:.5f}"
    found = "given by --source" if how == "--source" else "found by the submission's name"
    print(f"{path.name}: LB {score:.5f} recorded in {written}; CV {cv} ({entry.cv_kind}) of "
          f"{entry.kind} {entry.source}, {found}")
    same = [e for e in read_ledger(args.submissions_dir) if e.group == entry.group]
    print("\n".join(summary(same)))
    return 0

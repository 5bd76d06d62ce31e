"""Splitting train rows into folds: seeded scikit-learn / iterstrat splitters by scheme name
(and time-ordered blocks, :mod:`pipeline.data.time_folds`), and the checks of a folds file
against the competition."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from pydantic import Field, field_validator
from sklearn.model_selection import (
    BaseCrossValidator,
    GroupKFold,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)

from pipeline.artifacts import id_positions
from pipeline.competition import Competition
from pipeline.data.copy_groups import GROUPED, copy_groups, representatives
from pipeline.data.time_folds import TimeBlockKFold, competition_times
from pipeline.errors import DataError
from pipeline.metrics import METRICS
from pipeline.registry import Registry
from pipeline.schema import Section

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splitter:
    """A fold scheme: its scikit-learn splitter and what it needs from the competition."""

    cls: type[BaseCrossValidator]
    description: str
    uses_groups: bool = False  # keeps each group in one fold: needs 'competition.group_column'
    stratified: bool = False  # balances classes (regression: quantile bins)
    # blocks of the order in 'competition.time_column', unshuffled (the seed plays no part)
    uses_time: bool = False
    tasks: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")


SPLITTERS: Registry[Splitter] = Registry("fold scheme")
_SINGLE_LABEL = ("binary", "multiclass", "regression")
for _name, _splitter in {
    "kfold": Splitter(KFold, "shuffled KFold"),
    "stratified": Splitter(StratifiedKFold, "class proportions kept (regression: quantile bins)",
                           stratified=True, tasks=_SINGLE_LABEL),
    "group": Splitter(GroupKFold, "a group never spans two folds", uses_groups=True),
    "stratified_group": Splitter(StratifiedGroupKFold, "groups kept whole, classes balanced",
                                 uses_groups=True, stratified=True, tasks=_SINGLE_LABEL),
    "multilabel": Splitter(MultilabelStratifiedKFold, "iterative multilabel stratification",
                           stratified=True, tasks=("multilabel",)),
    "time": Splitter(TimeBlockKFold, "contiguous blocks of time, each validated once",
                     uses_time=True),
}.items():
    SPLITTERS.add(_name, _splitter, _splitter.description)


class FoldsConfig(Section):
    """How train rows are split into folds; every model of a competition shares them."""

    scheme: str = "stratified"  # a name in SPLITTERS
    n_splits: int = Field(5, ge=2)
    seed: int = Field(42, ge=0, lt=2**32)  # numpy's seed range: -1 was a traceback
    # file stem under folds/; default <competition>_<scheme>_k<n>_s<seed> ('../x' wrote the
    # folds file outside folds_dir)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # time folds: the rows within this many time units (days, for dates) of a fold's block
    # left out of its training ("purged"); the folds file stays the same
    gap: float = Field(0, ge=0)
    # train rows repeating another's inputs: 'apart' where the scheme's split puts them,
    # 'together' in one fold (pipeline.data.copy_groups); the folds file's default name
    # ends in '_together'
    copies: Literal["apart", "together"] = "apart"

    @field_validator("scheme")
    @classmethod
    def _known(cls, scheme: str) -> str:
        if scheme not in SPLITTERS:
            raise ValueError(SPLITTERS.unknown_message(scheme))
        return scheme

    def mismatch(self, task: str, group_column: str | None,
                 time_column: str | None = None) -> str | None:
        """Why this scheme cannot split a competition of ``task`` (with or without a group
        or time column), or None when it can."""
        splitter = SPLITTERS.get(self.scheme)
        if splitter.uses_time and not time_column:
            return (f"'folds.scheme' {self.scheme!r} needs 'competition.time_column' (the "
                    "column that orders the rows in time)")
        if self.copies == "together" and splitter.uses_time:
            return (f"'folds.copies: together' cannot move rows between blocks of time: "
                    f"scheme {self.scheme!r} puts each row in its time's block. Drop "
                    "'folds.copies'")
        if self.gap and not splitter.uses_time:
            return (f"'folds.gap' {self.gap:g} leaves out the rows beside a block of time: it "
                    f"needs 'folds.scheme: time'. Got {self.scheme!r}")
        if time_column and not splitter.uses_time:
            fits = [n for n in SPLITTERS if SPLITTERS.get(n).uses_time]
            return (f"'competition.time_column' {time_column!r} is set but 'folds.scheme' "
                    f"{self.scheme!r} ignores it: its folds validate on rows interleaved in "
                    f"time with their training rows. Use {' or '.join(fits)}, or drop "
                    "'competition.time_column'")
        if splitter.uses_groups and not group_column:
            return f"'folds.scheme' {self.scheme!r} needs 'competition.group_column'"
        if group_column and not splitter.uses_groups:
            fits = [n for n in SPLITTERS if SPLITTERS.get(n).uses_groups]
            return (f"'competition.group_column' {group_column!r} is set but 'folds.scheme' "
                    f"{self.scheme!r} ignores groups: a group's rows would land in several "
                    f"folds and leak into validation. Use {' or '.join(fits)}")
        if task not in splitter.tasks:
            fits = [n for n in SPLITTERS if task in SPLITTERS.get(n).tasks]
            return (f"'folds.scheme' {self.scheme!r} does not split a {task!r} task "
                    f"('competition.task'); schemes for it: {', '.join(fits)}")
        return None


def predicting_folds(scheme: str, n_splits: int) -> list[int]:
    """The folds whose models' mean predicts the test rows: every fold, but under time folds
    not the last, whose model never trained on the latest block of time, the period the test
    rows follow. On a trending table that model alone scored held-out RMSE 2.87 where the
    others scored 1.34-1.38; the mean of the other four beat that of all five in every seed
    of both drifting regression tables, and was level on a credit table (docs/benchmarks.md,
    folds ordered in time). Every fold still predicts its OOF rows."""
    if SPLITTERS.get(scheme).uses_time:
        return list(range(n_splits - 1))
    return list(range(n_splits))


REGRESSION_BINS = 10


def _strata(comp: Competition) -> np.ndarray:
    """What stratification balances: the class, or a quantile bin of a regression target."""
    cfg = comp.cfg
    if cfg.task == "multilabel":  # a masked empty cell balances as a negative
        return np.nan_to_num(comp.targets).astype(int)
    if cfg.task == "regression":  # (a masked empty first target: a stratum of its own)
        values = comp.train[cfg.target_columns[0]]
        bins = pd.qcut(values, q=REGRESSION_BINS, labels=False, duplicates="drop")
        return (bins.fillna(-1).astype(np.int64) if bins.isna().any() else bins).to_numpy()
    # the classes as text (3 and "3" are one class), coded in their sorted order: the
    # splitters order classes by np.unique, so the folds are those of the text labels, and
    # np.unique sorts integers fast where it sorts 600,000 strings in 0.4 s
    return pd.factorize(_class_labels(comp), sort=True)[0]


def _class_labels(comp: Competition) -> pd.Series:
    return comp.train[comp.cfg.target_columns[0]].astype(str)


def _check_class_counts(labels: pd.Series, n_splits: int, column: str, path: Path) -> None:
    """A class with fewer rows than folds is left out of some folds' validation rows: said,
    not refused (the fold scores and the OOF score cope; a rare class is common in an unseen
    competition). Refused only when no class fills every fold, which no stratified split
    can make."""
    counts = labels.value_counts(sort=False).sort_index()
    small = [(v, c) for v, c in counts.items() if c < n_splits]
    if not small:
        return
    shown = ", ".join(f"{v!r} ({c} rows)" for v, c in small[:5])
    if len(small) == len(counts):
        raise DataError(
            f"{path}: every class of column {column!r} has fewer rows than "
            f"'folds.n_splits'={n_splits}: {shown}. Lower n_splits or use scheme 'kfold'."
        )
    # a class of one row is absent from the training rows of the fold that validates it:
    # said, since that fold's scikit-learn and GBDT members can only floor it there
    single = [v for v, c in small if c == 1]
    lone = (f"; {[str(v) for v in single[:5]]} hold(s) a single row, which the fold "
            "validating it trains without (its whole-model members give it 1 / (training "
            "rows + classes) there)" if single else "")
    log.warning("%s: column %r has %d class(es) with fewer rows than 'folds.n_splits'=%d: %s; "
                "some folds validate without them%s", path, column, len(small), n_splits, shown,
                lone)


def constant_labels_warning(comp: Competition) -> str | None:
    """Multilabel columns that hold one value in every train row (a Jigsaw label no train
    comment carries): every model predicts that value, and ROC AUC or average precision,
    averaged over the labels that have both values, leave them out of every fold's score and
    the CV, which so stayed silent about a column the test rows may well hold (a
    leaderboard that averages every column scores it at chance)."""
    cfg = comp.cfg
    if cfg.task != "multilabel" or len(cfg.target_columns) < 2:
        return None  # a tags column's labels are the ones its train rows hold
    held = {c: comp.train[c].dropna().unique() for c in cfg.target_columns}
    constant = {c: v[0].item() for c, v in held.items() if len(v) == 1}
    if not constant:
        return None
    said = ", ".join(f"{c!r} ({v})" for c, v in constant.items())
    metric = METRICS.get(cfg.metric)
    left_out = ("" if not (metric.order_only and metric.masked == "columns") else
                f"; {cfg.metric} averages over the labels that hold both values, so the CV "
                "leaves them out, where a leaderboard that averages every column scores each "
                "at chance")
    return (f"folds: label column(s) {said} hold one value in every train row: every model "
            f"predicts that value, nothing is learnt of them{left_out}")


def make_folds(comp: Competition, cfg: FoldsConfig) -> np.ndarray:
    """Fold id of every train row (train.csv order)."""
    ccfg = comp.cfg
    n = len(comp.train)
    train_path = Path(ccfg.dir) / ccfg.train_file
    if n < cfg.n_splits:
        raise DataError(f"{train_path}: {n} rows cannot make {cfg.n_splits} folds")
    groups = comp.train[ccfg.group_column].to_numpy() if ccfg.group_column else None
    strata = _strata(comp)
    splitter_info = SPLITTERS.get(cfg.scheme)
    if splitter_info.stratified and ccfg.task in ("binary", "multiclass"):
        _check_class_counts(_class_labels(comp), cfg.n_splits, ccfg.target_columns[0],
                            train_path)
    if groups is not None and splitter_info.uses_groups:
        n_groups = len(pd.unique(groups))
        if n_groups < cfg.n_splits:
            raise DataError(
                f"{train_path}: column {ccfg.group_column!r} has {n_groups} groups, fewer than "
                f"'folds.n_splits'={cfg.n_splits}"
            )
    splitter_cls = splitter_info.cls
    if cfg.copies == "together":
        groups = copy_groups(comp, groups if splitter_info.uses_groups else None)
        if (n_groups := len(np.unique(groups))) < cfg.n_splits:
            raise DataError(f"{train_path}: 'folds.copies: together' leaves {n_groups} "
                            f"distinct inputs, fewer than 'folds.n_splits'={cfg.n_splits}")
        if cfg.scheme not in GROUPED:  # multilabel: the representatives are split
            first, of_row = representatives(groups)
            return _split(splitter_cls(n_splits=cfg.n_splits, shuffle=True,
                                       random_state=cfg.seed), strata[first], None)[of_row]
        splitter_cls = GROUPED[cfg.scheme]
    if splitter_info.uses_time:
        groups = _distinct_times(comp, cfg.n_splits, train_path).to_numpy()
        splitter = splitter_cls(n_splits=cfg.n_splits)
    else:
        splitter = splitter_cls(n_splits=cfg.n_splits, shuffle=True, random_state=cfg.seed)
    return _split(splitter, strata, groups)


def _split(splitter: BaseCrossValidator, strata: np.ndarray,
           groups: np.ndarray | None) -> np.ndarray:
    """Fold id of every row that ``splitter`` validates."""
    n = len(strata)
    folds = np.full(n, -1, dtype=np.int64)
    x = np.zeros((n, 1))
    with warnings.catch_warnings():  # scikit-learn's warning of a rare class: said above
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for k, (_, valid) in enumerate(splitter.split(x, strata, groups)):
            folds[valid] = k
    assert (folds >= 0).all(), "splitter left rows without a fold"
    return folds


def _distinct_times(comp: Competition, n_splits: int, train_path: Path) -> pd.Series:
    """The train rows' times, refused when fewer distinct times than folds."""
    times = competition_times(comp)
    if (n_times := times.nunique()) < n_splits:
        raise DataError(f"{train_path}: column {comp.cfg.time_column!r} "
                        f"('competition.time_column') has {n_times} distinct times, fewer than "
                        f"'folds.n_splits'={n_splits}")
    return times


def folds_spec(comp: Competition, cfg: FoldsConfig) -> dict[str, Any]:
    """Everything that shapes a folds file: kept beside it (``<name>.json``) and compared on
    every read, so a changed group column or target never reuses folds made for another."""
    ccfg = comp.cfg
    return {"scheme": cfg.scheme, "n_splits": cfg.n_splits, "seed": cfg.seed,
            "task": ccfg.task, "target_columns": list(ccfg.target_columns),
            "group_column": ccfg.group_column, "train_file": ccfg.train_file,
            **({"time_column": ccfg.time_column} if ccfg.time_column else {}),
            **({"copies": cfg.copies} if cfg.copies != "apart" else {})}


def spec_path(folds_file: Path) -> Path:
    """The sidecar of a folds file."""
    return folds_file.with_suffix(".json")


def check_spec(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Refuse a folds file whose sidecar records another spec (a file without a sidecar,
    from before sidecars, is checked by its ids and groups alone); return the sidecar's
    record ({} without one)."""
    sidecar = spec_path(path)
    if not sidecar.is_file():
        return {}
    try:
        made = json.loads(sidecar.read_text())
    except ValueError as err:  # cut off or edited: a traceback before
        raise DataError(f"folds file {path}: its record {sidecar} could not be read as JSON "
                        f"({err}). Delete both to rebuild them") from None
    differ = {k: (made.get(k), v) for k, v in spec.items() if made.get(k) != v}
    if differ:
        shown = ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in differ.items())
        raise DataError(
            f"folds file {path} was made for other settings: {shown}. Delete it (and "
            f"{sidecar.name}) to rebuild, or set 'folds.name' to a new file."
        )
    return dict(made)


def check_groups(path: Path, comp: Competition, folds: np.ndarray) -> None:
    """Refuse folds in which a group of ``competition.group_column`` spans two folds."""
    column = comp.cfg.group_column
    if not column:
        return
    per_group = pd.Series(folds).groupby(comp.train[column].to_numpy()).nunique()
    split = per_group[per_group > 1]
    if len(split):
        raise DataError(
            f"folds file {path}: {len(split)} group(s) of column {column!r} span several folds "
            f"(e.g. {split.index[:3].tolist()}), so validation rows share groups with training "
            "rows. Delete it to rebuild with a group scheme, or set 'folds.name'."
        )


def read_folds(path: Path, comp: Competition, n_splits: int | None = None) -> np.ndarray:
    """Fold ids aligned with train.csv rows; errors if the file was built for other ids or
    splits a group of ``competition.group_column`` across folds."""
    id_col = comp.cfg.id_column
    # compared as text: '00120' stays, and so do ids such as 'NA' or 'None'
    try:
        frame = pd.read_csv(path, dtype={id_col: str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as err:
        raise DataError(f"folds file {path} could not be read as CSV ({err}). Delete it (and "
                        f"{spec_path(path).name}) to rebuild it") from None
    if list(frame.columns) != [id_col, "fold"]:
        raise DataError(
            f"folds file {path} must have columns [{id_col!r}, 'fold']. Got {list(frame.columns)}."
        )
    dup = frame[id_col][frame[id_col].duplicated()]
    if len(dup):
        raise DataError(
            f"folds file {path} has {len(dup)} duplicate id(s), e.g. {dup.iloc[:3].tolist()}"
        )
    fold = frame["fold"]
    if not pd.api.types.is_integer_dtype(fold) or (len(fold) and fold.min() < 0) or (
        n_splits is not None and sorted(fold.unique()) != list(range(n_splits))
    ):
        raise DataError(
            f"folds file {path}: column 'fold' must hold the integers 0..{(n_splits or 0) - 1}"
            f" ('folds.n_splits'={n_splits}). Got {sorted(map(str, fold.unique()))[:10]}."
        )
    where, train_ids = id_positions(frame[id_col], comp.train[id_col])  # (unique: above)
    missing = train_ids[where < 0].tolist()
    extra = len(frame) - (len(train_ids) - len(missing))
    if missing or extra:
        raise DataError(
            f"folds file {path} was built for other ids: {len(missing)} train id(s) missing "
            f"(e.g. {missing[:3]}), {extra} id(s) not in train. Delete it to rebuild, or set "
            "'folds.name' to a new file."
        )
    folds = frame["fold"].to_numpy(dtype=np.int64)[where]
    check_groups(path, comp, folds)
    return folds

"""The members of a blend: run (or blend) folders read and checked to share rows, folds and
target layout.

A blend can be a member of another blend. Its ``oof.parquet`` then has to be out of fold, as
a run's is: a blend whose weights were tuned on the labels publishes the nested CV's held-out
blend (each fold's rows blended with weights fitted on the other folds), and its ``cv.json``
says so (``oof.from``). A tuned blend made before that published its in-sample blend, fitted
on the very labels the next blend tunes on, which that blend then over-trusts: such a member
is refused, naming the blend to make again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import RunMeta, load_predictions, read_json
from pipeline.ensemble import BLENDERS
from pipeline.errors import DataError
from pipeline.predicted_here import check_member

_SHARED_META = ("task", "metric", "id_column", "target_columns", "classes", "pred_columns")


@dataclass(frozen=True)
class Members:
    """The checked predictions of the runs being blended."""

    names: list[str]
    meta: RunMeta  # the first member's; every shared field is equal across members
    oof_ids: pd.Series
    test_ids: pd.Series
    folds: np.ndarray  # (n,) fold of every OOF row
    oof: np.ndarray  # (m, n, c)
    test: np.ndarray  # (m, n_test, c)
    config_hashes: list[str]


def load_members(runs: Sequence[str | Path]) -> Members:
    """Read the runs' predictions; raise DataError naming the run and what differs."""
    folders = [Path(r) for r in runs]
    if len(folders) < 2:
        raise DataError(f"blend needs at least 2 runs. Got {len(folders)}: {folders}.")
    resolved = [f.resolve() for f in folders]
    dupes = sorted(str(f) for f, r in zip(folders, resolved, strict=True) if resolved.count(r) > 1)
    if dupes:
        raise DataError(f"blend members must be distinct runs; given more than once: {dupes}")
    names = [f.name for f in folders]
    if len(set(names)) < len(names):
        names = [str(f) for f in folders]
    preds = [load_predictions(f) for f in folders]
    first, ref = folders[0], preds[0]
    meta = ref.meta
    for folder, pred in zip(folders, preds, strict=True):
        check_member(pred.meta, folder)  # predicted here, from the test file there
        check_out_of_fold(folder)
        for key in _SHARED_META:
            mine, theirs = getattr(pred.meta, key), getattr(meta, key)
            if mine != theirs:
                raise DataError(
                    f"{folder}: {key} is {mine!r} but {first} has {theirs!r}; blend members "
                    "must predict the same competition with the same target layout"
                )
        _check_columns(folder, pred.oof, [meta.id_column, "fold", *meta.pred_columns], "oof")
        _check_columns(folder, pred.test, [meta.id_column, *meta.pred_columns], "test")
        _check_same(folder, first, "oof ids", pred.oof[meta.id_column], ref.oof[meta.id_column])
        _check_same(folder, first, "test ids", pred.test[meta.id_column], ref.test[meta.id_column])
        _check_same(folder, first, "oof folds", pred.oof["fold"], ref.oof["fold"])
    return Members(
        names=names,
        meta=meta,
        oof_ids=ref.oof[meta.id_column],
        test_ids=ref.test[meta.id_column],
        folds=ref.oof["fold"].to_numpy(),
        oof=np.stack([p.oof_matrix for p in preds]),
        test=np.stack([p.test_matrix for p in preds]),
        config_hashes=[p.meta.config_hash for p in preds],
    )


def _check_columns(folder: Path, frame: pd.DataFrame, columns: list[str], part: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{folder / (part + '.parquet')}: missing column(s) {missing}")
    bad = [c for c in columns if frame[c].isna().any()]
    if bad:
        raise DataError(
            f"{folder / (part + '.parquet')}: NaN in column(s) {bad}; a run with untrained "
            "folds cannot be blended"
        )


def _check_same(folder: Path, first: Path, what: str, mine: pd.Series, ref: pd.Series) -> None:
    if len(mine) != len(ref):
        raise DataError(f"{folder}: {len(mine)} {what} but {first} has {len(ref)}")
    differ = np.flatnonzero(mine.to_numpy() != ref.to_numpy())
    if len(differ):
        i = int(differ[0])
        raise DataError(
            f"{folder}: {what} differ from {first} at {len(differ)} row(s), first at row {i} "
            f"({mine.iloc[i]!r} vs {ref.iloc[i]!r}); members must share rows, order and folds"
        )



def check_out_of_fold(folder: Path) -> None:
    """Refuse a member that is a blend of tuned weights whose ``oof.parquet`` is in-sample
    (written before blends published their nested CV's held-out blend)."""
    if not (folder / "cv.json").is_file() or (folder / "scores.json").is_file():
        return  # a run: its OOF comes from fold models that never saw their rows
    cv = read_json(folder / "cv.json")
    if not isinstance(cv, dict):
        raise DataError(f"{folder / 'cv.json'} holds no blend's scores; rerun the stage that "
                        "wrote it")
    method = cv.get("method")
    fixed = method in BLENDERS and BLENDERS.get(method).oof_held_out  # nothing tuned on y
    if "oof" not in cv and not fixed:
        raise DataError(
            f"{folder} is a {method} blend whose oof.parquet is in-sample (its weights were "
            "tuned on those rows' labels; blends made since publish their nested CV's "
            "held-out OOF): make it again first (the `pipeline blend` that wrote it)")

"""A competition's train and test frames checked at load: the columns the config names, the
ids, the groups and the auxiliary targets, each refusal one line naming the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pandas as pd

from pipeline.errors import DataError
from pipeline.targets import file_lines, plain


class AuxTarget(Protocol):
    """An auxiliary target as the config holds it (``competition.aux_targets``)."""

    column: str
    task: str


def require_columns(frame: pd.DataFrame, columns: list[str], path: Path, key: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} named by 'competition.{key}' not found. "
            f"Columns: {list(frame.columns)}"
        )


def check_ids(frame: pd.DataFrame, id_column: str, path: Path) -> None:
    ids = frame[id_column]
    if ids.isna().any():
        raise DataError(f"{path}: column {id_column!r} has {int(ids.isna().sum())} empty id(s)")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(
            f"{path}: column {id_column!r} has {len(dup)} duplicate id(s), "
            f"e.g. {plain(dup.iloc[:3].tolist())} (lines {file_lines(dup.index[:3])})"
        )


def check_groups(frame: pd.DataFrame, column: str, path: Path) -> None:
    # a row without a group cannot be kept with its group; scikit-learn's group splitters
    # stopped the folds stage with a traceback ('Input groups contains NaN')
    empty = frame[column].isna()
    if empty.any():
        raise DataError(f"{path}: column {column!r} ('competition.group_column') has "
                        f"{int(empty.sum())} empty value(s) (lines "
                        f"{file_lines(frame.index[empty][:3])})")


def check_aux(frame: pd.DataFrame, aux_targets: Sequence[AuxTarget], path: Path) -> None:
    for aux in aux_targets:
        values = frame[aux.column].dropna()
        where = f"{path}: 'aux_targets' column {aux.column!r} (task {aux.task!r})"
        found = sorted(map(str, values.unique()))
        if aux.task == "regression" and not pd.api.types.is_numeric_dtype(values):
            raise DataError(f"{where} must be numeric. Got {values.dtype} values.")
        least = 1 if aux.task == "regression" else 2
        if len(found) < least or (aux.task == "binary" and len(found) > 2):
            wanted = "2" if aux.task == "binary" else f"at least {least}"
            raise DataError(f"{where} must hold {wanted} distinct values. Got {len(found)}: "
                            f"{found[:5]}.")

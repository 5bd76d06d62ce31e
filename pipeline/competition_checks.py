"""A competition's train and test frames checked at load: the columns the config names, the
ids, the groups and the auxiliary targets, each refusal one line naming the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pandas as pd

from pipeline.competition_files import add_row_numbers
from pipeline.errors import DataError
from pipeline.targets import file_lines, plain


class ImageSource(Protocol):
    """Where a competition's images are named (``competition.image_column`` or
    ``competition.image_path``)."""

    image_column: str | None
    image_path: str | None


class AuxTarget(Protocol):
    """An auxiliary target as the config holds it (``competition.aux_targets``)."""

    column: str
    task: str


def column_roles_problem(id_column: str, target_columns: list[str], text_columns: list[str],
                         feature_columns: list[str] | None, aux: list[str]) -> str | None:
    """Why the config's columns cannot play the roles it gives them, or None. A text column
    named twice stopped the run with a traceback from the column encoder; the id or a target
    named as a text column was read as words (the ids as features, silently) or, read as
    text, refused as a target that 'must hold 0/1' while it held 0 and 1."""
    for key, columns in (("target_columns", target_columns), ("text_columns", text_columns)):
        if twice := sorted({c for c in columns if columns.count(c) > 1}):
            return f"'{key}' names column(s) {twice} more than once"
    if clash := [c for c in text_columns if c == id_column or c in target_columns]:
        return (f"'text_columns' {clash} are also the 'id_column' or 'target_columns': a "
                "text column is a model's input, never the id or a target")
    taken = {"feature_columns": feature_columns or [], "target_columns": target_columns,
             "id_column": [id_column]}
    for key, columns in taken.items():
        if both := sorted(set(aux) & set(columns)):
            return (f"'aux_targets' column(s) {both} are also in {key!r}: an auxiliary target "
                    "is never a feature, target or id")
    return None


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


def check_fold_columns(train: pd.DataFrame, labelled: pd.DataFrame, group_column: str | None,
                       time_column: str | None, path: Path) -> None:
    """The columns the folds read are in the train file, and every labelled row has a group
    (its times are read, and refused, when the time folds are made)."""
    for key, column in (("group_column", group_column), ("time_column", time_column)):
        if column:
            require_columns(train, [column], path, key)
    if group_column:
        check_groups(labelled, group_column, path)


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


def ids_from_sample(test: pd.DataFrame, sample: pd.DataFrame, id_column: str, test_path: Path,
                    sample_path: Path) -> bool:
    """Give a test file without ``id_column`` the sample submission's ids, row for row (the
    layout of a competition whose submission numbers the test rows, e.g. ImageId 1..28000);
    True when it had none. Refused when the row counts differ: no order could match them."""
    if id_column in test.columns:
        return False
    ids = set(sample[id_column].astype(str))
    for column in test.columns if len(test) == len(ids) else []:
        values = test[column]
        # a number column of repeated values (784 pixel columns) is no id: skipped before
        # its values are written out as text
        if pd.api.types.is_numeric_dtype(values) and values.nunique() != len(ids):
            continue
        if set(values.astype(str)) == ids:
            raise DataError(f"{test_path}: column(s) [{id_column!r}] named by "
                            f"'competition.id_column' not found, but column {column!r} holds "
                            f"the ids of {sample_path}: name the id column alike in every file")
    if len(test) != len(sample):
        raise DataError(f"{test_path}: no column {id_column!r} ('competition.id_column'), and "
                        f"its {len(test)} rows cannot take the ids of the {len(sample)} rows "
                        f"of {sample_path} in order")
    test.insert(0, id_column, sample[id_column].to_numpy())
    return True


def check_id_lookalike(frame: pd.DataFrame, id_column: str, path: Path) -> None:
    """Refuse a file whose id column is spelt otherwise ('ID' for 'id'): numbered or given
    the sample's ids instead, its own ids would be a feature and its rows matched by order."""
    if id_column in frame.columns:
        return
    alike = [c for c in frame.columns if str(c).lower() == id_column.lower()]
    if alike:
        raise DataError(f"{path}: column(s) [{id_column!r}] named by 'competition.id_column' "
                        f"not found, but {alike[0]!r} is: name the id column alike in every "
                        "file")


def give_ids(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame, id_column: str,
             paths: tuple[Path, Path, Path]) -> list[str]:
    """Ids for files that name no row (Kaggle's Digit Recognizer): train's rows are numbered
    from 1 (its ids only match OOF rows to targets), test's take the sample submission's ids
    in order. Returns the files so given ids ('train', 'test')."""
    train_path, test_path, sample_path = paths
    check_id_lookalike(train, id_column, train_path)
    check_id_lookalike(test, id_column, test_path)
    return (["train"] if add_row_numbers(train, id_column) else []) + (
        ["test"] if ids_from_sample(test, sample, id_column, test_path, sample_path) else [])


def image_paths(frame: pd.DataFrame, cfg: ImageSource, split: str, path: Path) -> list[str]:
    """Each row's image path relative to the competition folder."""
    if cfg.image_column:
        require_columns(frame, [cfg.image_column], path, "image_column")
        empty = frame[cfg.image_column].isna()
        if empty.any():
            raise DataError(f"{path}: column {cfg.image_column!r} ('competition.image_column') "
                            f"has {int(empty.sum())} empty value(s) (lines "
                            f"{file_lines(frame.index[empty][:3])})")
        # a file written on Windows separates folders with backslashes (images\0\a.png): on
        # any other system that is one file name that is nowhere, so every row was not found
        return frame[cfg.image_column].astype(str).str.replace("\\", "/").tolist()
    assert cfg.image_path is not None
    try:
        # '{split}' is the split, as documented, also where a file has a 'split' column
        return [cfg.image_path.format_map({**row, "split": split})
                for row in frame.to_dict(orient="records")]
    except KeyError as err:
        raise DataError(
            f"{path}: 'competition.image_path' {cfg.image_path!r} names column {err} that is "
            f"not in the file. Columns: {list(frame.columns)}"
        ) from None
    except (ValueError, IndexError, AttributeError) as err:  # '{id:05d}' on text ids, '{}'
        raise DataError(f"{path}: 'competition.image_path' {cfg.image_path!r} cannot be "
                        f"filled from this file's rows: {err}") from None


# the extensions a missing name is tried with, for the hint below (PIL reads each)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif",
                   ".JPG", ".JPEG", ".PNG")


def missing_images_error(missing: list[str], root: Path, column: str | None,
                         template: str | None, path: Path) -> DataError:
    """The refusal of image files not found under ``root``; where a missing name is a file's
    without its extension (a column of image ids, ISIC's 'ISIC_0015719' for
    'ISIC_0015719.jpg'), it says which file is there and how to name it."""
    source = f"column {column!r}" if column else f"'image_path' {template!r}"
    hint = ""
    for name in missing[:20]:  # a few stats, not one per row of a large set
        found = next((s for s in _IMAGE_SUFFIXES if (root / (name + s)).is_file()), None)
        if found is not None:
            fix = (f"'competition.image_path: \"{{{column}}}{found}\"'"
                   if column else f"'competition.image_path' ending in {found!r}")
            hint = (f"; {name + found!r} is there: the names lack the file extension, so "
                    f"name the files with {fix} (where every file has it)")
            break
    return DataError(f"{path}: {len(missing)} image file(s) from {source} not found under "
                     f"{root}, e.g. {missing[:3]}{hint}")

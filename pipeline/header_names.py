"""A competition CSV's header as written: a column name given twice is refused (pandas reads
the second 'x1' as 'x1.1', a name the file does not have), and a column with no name and no
value (the trailing separator a spreadsheet writes on every line) is left out."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import DataError


def check_header(path: Path, what: str, sep: str, encoding: str) -> list[str]:
    """The header's cells as written; refused where it names a column twice: pandas renames
    the second 'x1' to 'x1.1', a column no file has, so train's was refused as missing from
    test, and a test file's second copy was read as an extra column."""
    names = pd.read_csv(path, sep=sep, encoding=encoding, header=None, nrows=1, dtype=str,
                        keep_default_na=False).iloc[0].str.strip()
    twice = sorted(set(names[names.duplicated() & (names != "")]))
    if twice:
        raise DataError(f"{what} file {path}: its header names column(s) {twice} more than "
                        "once; give each column its own name")
    return names.tolist()


def blank_columns(frame: pd.DataFrame, header: list[str]) -> list[str]:
    """The columns of ``frame`` (read from a file whose header cells are ``header``) that
    have no name and no value: a trailing separator on every line ('a,b,' as spreadsheets
    export) read as 'Unnamed: 2', which train has at another position than test (it lacks
    the target), so train's was refused as a column missing from test."""
    if len(header) != len(frame.columns):
        return []
    return [c for c, cell in zip(frame.columns, header, strict=True)
            if cell == "" and frame[c].isna().all()]


def read_rows(path: Path, what: str, sep: str, encoding: str, **read: Any) -> pd.DataFrame:
    """``pd.read_csv`` of a competition file, its header checked (:func:`check_header`),
    its blank columns left out (:func:`blank_columns`). Rows with one more field than the
    header, empty (a trailing separator after each row, not after the header), are read as
    the header says: pandas read their first field as the index, every cell shifted (a
    traceback, or ids read as features); one that holds a value there is refused."""
    cells = check_header(path, what, sep, encoding)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = pd.read_csv(path, sep=sep, encoding=encoding, index_col=False, **read)
    for warning in caught:
        if issubclass(warning.category, pd.errors.ParserWarning) and "Length of header" in str(
                warning.message):
            _refuse_values_past_header(path, what, sep, encoding, len(cells))
        else:  # the others as they were
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    if frame.empty and what in ("test", "sample submission"):  # (train's own check says so)
        # was refused as '0 only in test, 10 only in the sample submission': no word of why
        raise DataError(f"{what} file {path}: no rows under the header")
    return frame.drop(columns=blank_columns(frame, cells))


def _refuse_values_past_header(path: Path, what: str, sep: str, encoding: str,
                               width: int) -> None:
    with open(path, encoding=encoding, newline="") as handle:
        for line, row in enumerate(csv.reader(handle, delimiter=sep), start=1):
            if any(cell.strip() for cell in row[width:]):
                raise DataError(f"{what} file {path}: line {line} has {len(row)} fields, "
                                f"more than the header's {width}, with values past them")

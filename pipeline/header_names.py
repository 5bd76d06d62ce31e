"""A competition CSV's header, checked for a column name given twice (pandas reads the
second 'x1' as 'x1.1', a name the file does not have)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import DataError


def check_unique_names(path: Path, what: str, sep: str, encoding: str) -> None:
    """Refuse a header that names a column twice: pandas renames the second 'x1' to 'x1.1',
    a column no file has, so train's was refused as missing from test, and a test file's
    second copy was read as an extra column."""
    names = pd.read_csv(path, sep=sep, encoding=encoding, header=None, nrows=1, dtype=str,
                        keep_default_na=False).iloc[0].str.strip()
    twice = sorted(set(names[names.duplicated() & (names != "")]))
    if twice:
        raise DataError(f"{what} file {path}: its header names column(s) {twice} more than "
                        "once; give each column its own name")

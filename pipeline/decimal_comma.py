"""Numbers written with a decimal comma ('competition.decimal: ","') in text columns.

pandas reads a decimal-comma file's plain numbers, but a column it leaves as text stayed
text: a column of numbers with one '?' cell ('3,5' among '?', read as categories where a
'.' file's column is read as numbers with the '?' missing), and the spreadsheet forms a
'.' file's column is read from ('12,5%', '1.234,50 €', '12,5 kg'). Such values are
rewritten the way a '.' file writes them ('1.234,5' -> '1234.5') and read by the same
rules (:func:`pipeline.competition_files.parse_written_numbers`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.stray_cells import stray_numbers

Reader = Callable[[pd.Series], pd.Series]

# a number with '.' or space thousands and a decimal comma, not inside a longer number
_NUMBER = re.compile(r"(?<![\d.,])(\d{1,3}(?:[.\s\u00a0\u202f]\d{3})+|\d+)(?:,(\d+))?(?!\d)")
_GROUPS = re.compile(r"[.\s\u00a0\u202f]")
_MONEY_AFTER = re.compile(r"^([+-]?)([\d.]+)\s?([$€£¥])$")  # '-1234.50 €' -> '-€1234.50'


def to_point(text: pd.Series, groups: bool = True) -> pd.Series:
    """``text`` with its decimal-comma numbers written with a decimal point and no
    thousands marks ('1.234,5' -> '1234.5', '12,5 %' -> '12.5 %'), and a money sign after
    a number put before it, as '.' files write it. ``groups``: '.' and spaces between
    digits are thousands marks; else the numbers are left as written."""
    def number(match: re.Match[str]) -> str:
        whole = _GROUPS.sub("", match[1])
        return f"{whole}.{match[2]}" if match[2] else whole

    if groups:
        text = text.str.replace(_NUMBER, number, regex=True)
    return text.str.replace(_MONEY_AFTER, r"\1\3\2", regex=True)


def _plain_numbers(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype(np.float64)


def comma_numbers(values: pd.Series, column: str,
                  number_reader: Callable[[pd.Series, str, str], Reader | None],
                  stray_reader: Callable[[pd.Series, str], Reader | None],
                  thousands: str | None = None) -> tuple[Reader | None, bool]:
    """How to read a decimal-comma file's text column ``values`` (none missing) as numbers:
    the reader ``number_reader`` or ``stray_reader`` finds for them written with a decimal
    point, applied to the cells so rewritten, and whether it is the written-number one
    (else a stray-text one, which warns itself); (None, False) when neither reads them.
    A '.' is a thousands mark where ``thousands`` says so or some value has a decimal comma:
    a column written with decimal points ('48.856', '48.85') keeps them, each value alike."""
    groups = thousands == "." or bool(values.str.contains(",", regex=False).any())
    point = to_point(values, groups)
    inner = number_reader(point, ",", ".")
    if inner is None and pd.to_numeric(point, errors="coerce").notna().all():
        # every cell a plain number with a decimal point ('0.125', '-48.85'): pandas'
        # decimal-comma reading left them text, so categories whose test values train never
        # holds, where the same column with one '?' cell was read as numbers
        inner = _plain_numbers
    written = inner is not None
    if inner is None:
        inner = stray_reader(point, column)
    if inner is None:  # '12,5%' among a few '-' cells
        inner = stray_numbers(point, column, lambda v: number_reader(v, ",", "."))
        written = inner is not None
    if inner is None:
        return None, False
    found = inner
    return (lambda text: found(to_point(text, groups))), written

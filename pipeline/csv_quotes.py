"""How the quote characters of a competition's CSV files are read ('competition.quoting'),
and the check that finds a quote that opened a field and never closed it.

A field that starts with ``"`` is quoted up to the next ``"`` (the CSV rule), so a text that
starts with a quote it never closes takes in the lines after it, without a word: a 500-row
tab-separated file of reviews, one of them ``"Unbalanced quote ... good``, was read as 490
rows, ten reviews and their labels gone into one cell. ``quoting: none`` reads every quote
as a character of its text (pandas' ``quoting=3``, as Kaggle's "Bag of Words Meets Bags of
Popcorn" tutorial reads its .tsv files); a field can then hold no separator nor line break.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import pandas as pd

from pipeline.errors import DataError

Quoting = Literal["minimal", "none"]
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}


def check_unclosed_quotes(frame: pd.DataFrame, path: Path, sep: str, quoting: str) -> None:
    """Refuse a tab-separated file read with quotes whose cell holds a tab: such a file
    quotes nothing (a tab in a text is not written so), so the cell is a field that opened
    with a quote and took in the lines after it, with their tabs. (A comma-separated
    text may hold commas and line breaks inside its quotes: nothing tells such a cell from
    one that took in lines.)"""
    if sep != "\t" or quoting == "none":
        return
    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        held = values.fillna("").astype(str).str.contains("\t", regex=False)
        if held.any():
            row = int(held.to_numpy().argmax())
            raise DataError(
                f"{path}: the cell of column {column!r} in row {row + 1} holds tabs: a field "
                "that opens with a quote (\") that never closes took in the lines after it "
                f"({len(frame)} rows read). Set 'competition.quoting: none' where quotes are "
                "characters of the texts")

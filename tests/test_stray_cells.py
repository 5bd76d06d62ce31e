"""Text columns checked for written numbers, dates and stray text cells at load
(pipeline/competition_files.py:parse_written_numbers, pipeline/stray_cells.py): each check
reads a column's distinct values, not every cell."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import competition_files
from pipeline.competition_files import parse_written_numbers


def _codes(rows: int, values: int) -> pd.DataFrame:
    """A merchant-code column ('m_00001'...) of ``rows`` cells and ``values`` codes."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({"merchant": [f"m_{i:05d}" for i in rng.integers(0, values, rows)]})


def test_a_code_column_is_checked_once_per_distinct_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a 100k-row table's three code columns took 7 s per load (every stage loads it)
    seen: list[int] = []
    date_format, to_numeric = competition_files.date_format, pd.to_numeric

    def count_dates(values: pd.Series) -> Any:
        seen.append(len(values))
        return date_format(values)

    def count_numbers(values: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(values))
        return to_numeric(values, *args, **kwargs)

    monkeypatch.setattr(competition_files, "date_format", count_dates)
    monkeypatch.setattr(pd, "to_numeric", count_numbers)
    train, test = _codes(20_000, 50), _codes(8_000, 50)
    assert parse_written_numbers([train, test], ["merchant"]) == []
    assert seen and max(seen) == 50  # the 50 codes, not the 28,000 cells
    assert train["merchant"].iloc[0].startswith("m_")  # left as text


def test_numbers_among_a_few_text_cells_read_as_numbers(
        caplog: pytest.LogCaptureFixture) -> None:
    values = [str(v) for v in np.round(np.linspace(0, 10, 400), 3)]
    train = pd.DataFrame({"x": values[:200] + ["?"] * 5})
    test = pd.DataFrame({"x": [*values[200:], "unknown"]})
    with caplog.at_level(logging.WARNING):
        assert parse_written_numbers([train, test], ["x"]) == []  # stray, not written
    assert train["x"].dtype == np.float64 and train["x"].isna().sum() == 5
    assert test["x"].iloc[:-1].tolist() == pytest.approx(np.linspace(0, 10, 400)[200:], abs=1e-3)
    assert np.isnan(test["x"].iloc[-1])
    assert "6 of 406 cells are text among numbers (['?', 'unknown'])" in caplog.text


def test_numbers_among_six_distinct_texts_stay_text() -> None:
    # past five distinct texts the column is no number column: categories as written
    train = pd.DataFrame({"x": [str(v) for v in range(300)] + list("abcdef")})
    test = pd.DataFrame({"x": ["1", "2"]})
    assert parse_written_numbers([train, test], ["x"]) == []
    assert train["x"].iloc[-1] == "f" and not pd.api.types.is_numeric_dtype(train["x"])

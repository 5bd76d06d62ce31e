"""Text columns of a decimal-comma file read as numbers (pipeline/decimal_comma.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.decimal_comma import to_point


def test_to_point_rewrites_numbers_as_point_files_write_them() -> None:
    text = pd.Series(["1.234,5", "12,5%", "-1.234,50 €", "1 234,5 kg", "25.12.2021", "a1,5b"])
    assert to_point(text).tolist() == ["1234.5", "12.5%", "-€1234.50", "1234.5 kg",
                                       "25.12.2021", "a1.5b"]


def test_a_decimal_comma_table_reads_numbers_among_text_and_spreadsheet_forms(
        competition_factory, caplog: pytest.LogCaptureFixture) -> None:
    """A ';' file with a decimal comma: its column of numbers with one '?' cell and its
    columns of percents and euros were categories (each value its own, test values unseen)
    where a '.' file's same columns are numbers."""
    data = competition_factory("tabular", "regression", n_train=60, n_test=20)
    folder = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(folder / name)
        frame["rate"] = [f"{v:.1f}%".replace(".", ",") for v in 10 * frame["x1"]]
        frame["price"] = [f"{v:,.2f} €".translate(str.maketrans(",.", ".,"))
                          for v in 1000 + 500 * frame["x1"]]
        frame["x1"] = frame["x1"].map(lambda v: f"{v:.3f}".replace(".", ","))
        if name == "train.csv":
            frame.loc[3, "x1"] = "?"
        frame.to_csv(folder / name, sep=";", decimal=",", index=False)
    data["competition"].update(sep=";", decimal=",")
    comp = load_competition(build_config(data).competition)
    assert {"x1", "rate", "price"} <= set(comp.numeric_columns)
    assert "rate" not in comp.categorical_columns and "price" not in comp.categorical_columns
    train = pd.read_csv(folder / "train.csv", sep=";", dtype=str)
    x1 = pd.to_numeric(train["x1"].str.replace(",", "."), errors="coerce").to_numpy()
    np.testing.assert_allclose(comp.train["x1"].to_numpy(dtype=float), x1, atol=1e-9)
    rate = pd.to_numeric(train["rate"].str.rstrip("%").str.replace(",", ".")) / 100
    np.testing.assert_allclose(comp.train["rate"].to_numpy(dtype=float), rate, atol=1e-12)
    assert comp.train["price"].min() < 0 < comp.train["price"].max()  # '-500,00 €' too
    assert np.isnan(comp.train["x1"].iloc[3]) and "text among numbers (['?'])" in caplog.text



def test_a_column_written_with_decimal_points_keeps_them() -> None:
    """'.' is a thousands mark only where a value of the column has a decimal comma or
    'competition.thousands' says so: '48.856' stayed 48856 beside '48.85' (48.85). And
    percents among a few '-' cells are numbers, as in a '.' file."""
    from pipeline.competition_files import parse_written_numbers

    plain, percent = [str(i) for i in range(30)], [f"{i}%" for i in range(30)]
    for cells, thousands, want in ((["48.856", "48.85", "?", *plain], None, [48.856, 48.85]),
                                   (["1.234", "12.500", "?", *plain], ".", [1234.0, 12500.0]),
                                   (["1.234,5", "2,5", "?", *plain], None, [1234.5, 2.5]),
                                   (["12,5%", "3%", "-", *percent], None, [0.125, 0.03])):
        frame = pd.DataFrame({"c": cells})
        parse_written_numbers([frame], ["c"], ";", ",", thousands)
        assert frame["c"].tolist()[:2] == want and np.isnan(frame["c"].iloc[2])
    # without a '?' cell, every cell a number written with a point, the column stayed text:
    # categories whose test values train never holds (a '.' file read with 'decimal: ","')
    frame = pd.DataFrame({"c": ["48.856", "-0.125", *plain]})
    assert parse_written_numbers([frame], ["c"], ";", ",") == ["c"]
    assert frame["c"].tolist()[:3] == [48.856, -0.125, 0.0]

"""Quote characters in a competition's files (pipeline/csv_quotes.py, 'competition.quoting')."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import DataError
from tests.test_competition import expect_failure, run_cli


def _tab_separated(data: dict) -> list[str]:
    """The competition's train and test files as .tsv files that quote nothing, a train text
    opening with a quote it never closes; returns the train texts as written."""
    folder = Path(data["competition"]["dir"])
    texts = []
    for part in ("train", "test"):
        frame = pd.read_csv(folder / f"{part}.csv")
        if part == "train":
            frame.loc[3, "text"] = '"an unclosed quote ' + frame.loc[3, "text"]
            frame.loc[9, "text"] = frame.loc[9, "text"] + ' and a quote" at the end'
            texts = frame["text"].tolist()
        frame.to_csv(folder / f"{part}.tsv", sep="\t", index=False, quoting=csv.QUOTE_NONE)
    data["competition"].update(train_file="train.tsv", test_file="test.tsv", sep="\t")
    return texts


def test_an_unclosed_quote_of_a_tab_separated_file_is_refused_then_read_as_written(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """A text opening with a quote took in the lines after it up to the next quote: 6 of the
    48 train rows were gone into one cell, without a word. 'quoting: none' reads them all."""
    data = competition_factory("text", "regression")
    texts = _tab_separated(data)
    with pytest.raises(DataError, match=r"train.tsv: the cell of column 'text' in row 4 holds "
                                        r"tabs: .* \(42 rows read\)\. Set 'competition.quoting"):
        load_competition(build_config(data).competition)
    expect_failure(data, tmp_path, capsys, "'competition.quoting: none'")
    data["competition"]["quoting"] = "none"
    comp = load_competition(build_config(data).competition)
    assert comp.train["text"].tolist() == texts
    # the submission reads the train targets again (the clip of a regression) the same way
    code, err, _ = run_cli(data, tmp_path, capsys)
    assert code == 0, err
    submission = pd.read_csv(Path(data["submissions_dir"]) / f"{data['name']}.csv")
    assert len(submission) == len(comp.test)

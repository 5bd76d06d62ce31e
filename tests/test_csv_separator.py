"""Which separator each competition file is read with (pipeline/csv_separator.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.csv_separator import file_separator
from tests.test_competition import cli_config, expect_failure, run_cli


def _tsv_tables(cfg: dict, sep: str | None) -> Path:
    """The factory's train and test files rewritten as tab-separated .tsv files; the sample
    submission stays a comma-separated .csv, as Kaggle ships Mercari's."""
    folder = Path(cfg["competition"]["dir"])
    for part in ("train", "test"):
        pd.read_csv(folder / f"{part}.csv").to_csv(folder / f"{part}.tsv", sep="\t", index=False)
        (folder / f"{part}.csv").unlink()
    cfg["competition"].update(train_file="train.tsv", test_file="test.tsv")
    if sep is not None:
        cfg["competition"]["sep"] = sep
    return folder


def test_tab_tables_beside_a_comma_sample_submission_run(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The sample was read with the tables' tab, as one column 'id,target': refused for its
    id, whatever the config said; it is now read with the separator its header holds."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    folder = _tsv_tables(cfg, "\t")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    submission = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv", dtype=str)
    sample = pd.read_csv(folder / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == ["id", "target"]
    assert submission["id"].tolist() == sample["id"].tolist()


def test_tables_read_with_the_wrong_separator_are_refused_naming_the_key(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Read with ',', a .tsv train file was one column and the error named a missing target
    column; it now names 'competition.sep' and the separator to set, writing nothing."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    _tsv_tables(cfg, None)
    expect_failure(cfg, tmp_path, capsys, "train.tsv", "holds no \",\"",
                   "set 'competition.sep: \"\\t\"'")


def test_the_configured_separator_wins_where_the_header_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "sample_submission.csv"
    path.write_text("id;a,b\n1;2\n")  # ';' file with a comma inside a column name
    assert file_separator(path, "sample submission", ";") == ";"
    path.write_text("id\n1\n")  # one column: nothing to tell
    assert file_separator(path, "train", ";") == ";"
    path.write_text("id|target\n1|2\n")
    assert file_separator(path, "sample submission", ",") == "|"
    assert file_separator(path, "train", r"\s+") == r"\s+"  # a pattern is the user's rule


def test_a_sample_read_with_comma_under_decimal_commas(competition_factory) -> None:
    """';' tables writing 1,5 beside a ',' sample: the sample's cells are no numbers of the
    tables (pandas refuses a decimal mark equal to the separator)."""
    data = competition_factory("tabular", "regression")
    folder = Path(data["competition"]["dir"])
    for part in ("train", "test"):
        frame = pd.read_csv(folder / f"{part}.csv")
        frame.to_csv(folder / f"{part}.csv", sep=";", decimal=",", index=False)
    data["competition"].update(sep=";", decimal=",")
    comp = load_competition(build_config(data).competition)
    sample = comp.sample_submission
    assert list(sample.columns) == ["id", "y"] and len(sample) == len(comp.test)
    assert comp.train["x1"].dtype.kind == "f"


def test_thousands_commas_in_a_comma_file_stay_numbers(tmp_path: Path) -> None:
    """'competition.thousands: ","' in a ','-separated file (quoted "24,000") is the user's
    rule for the tables: only a sample read with another separator drops it."""
    from pipeline.competition_files import read_csv

    path = tmp_path / "train.csv"
    path.write_text('id,y\n1,"24,000"\n2,"1,500"\n')
    frame = read_csv(path, "train", ",", id_column="id", thousands=",")
    assert frame["y"].tolist() == [24000, 1500]

"""A run's log.txt keeps its own commands' lines: a notebook calls ``pipeline.cli.main`` once
per stage in one process, and the log attached by ``train`` stayed on the root logger."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests.test_competition import cli_config


def _file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def test_a_later_command_logs_nothing_into_an_earlier_runs_log(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """`blend` and `submit --run` of other runs, after `train` of 'b' in the same process,
    wrote their lines into b's log.txt; each command's own run log still gets its lines."""
    caplog.set_level(logging.INFO)  # as the CLI sets it where pytest's handlers are not
    cfg = cli_config(competition_factory, "tabular", "binary")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = _file_handlers()
    runs = [Path(cfg["output_dir"]) / name for name in (cfg["name"], "b")]
    try:
        for run in runs:
            assert main(["train", str(path), "--set", f"name={run.name}"]) == 0
        logs = {run: (run / "log.txt").read_text() for run in runs}
        assert all("OOF roc_auc" in text for text in logs.values()), logs
        subs = str(tmp_path / "submissions")
        assert main(["submit", "--run", str(runs[0]), "--submissions-dir", subs]) == 0
        assert main(["blend", "--runs", *map(str, runs), "--method", "mean", "--name", "mix",
                     "--blends-dir", str(tmp_path / "blends")]) == 0
        assert main(["submit", "--blend", str(tmp_path / "blends" / "mix"),
                     "--submissions-dir", subs]) == 0
        assert {run: (run / "log.txt").read_text() for run in runs} == logs
        assert main(["submit", str(path), "--submissions-dir", subs]) == 0  # its own run's
        assert "submission: wrote" in (runs[0] / "log.txt").read_text()
        assert (runs[1] / "log.txt").read_text() == logs[runs[1]]
        assert _file_handlers() == before  # the run log ends with its command
    finally:  # the old code left one attached: not into the next test's logs
        for handler in _file_handlers():
            if handler not in before:
                logging.getLogger().removeHandler(handler)
                handler.close()


def test_quiet_lasts_one_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`--quiet` turned the terminal to warnings and the progress bars off for the rest of
    the process: a notebook's next command, without it, said nothing but warnings."""
    import io

    monkeypatch.delenv("PIPELINE_PROGRESS", raising=False)
    stream = io.StringIO()
    terminal = logging.StreamHandler(stream)  # the terminal's handler, as setup_logging's
    root = logging.getLogger()
    root.addHandler(terminal)
    try:
        missing = str(tmp_path / "none.yaml")
        assert main(["--quiet", "train", missing]) == 2  # refused or not, it ends
        assert terminal.level == logging.NOTSET and "PIPELINE_PROGRESS" not in os.environ
        monkeypatch.setenv("PIPELINE_PROGRESS", "1")
        assert main(["--quiet", "train", missing]) == 2
        assert os.environ["PIPELINE_PROGRESS"] == "1"
        logging.getLogger("pipeline").warning("after")
        assert "after" in stream.getvalue()
    finally:
        root.removeHandler(terminal)
    assert "error: " in capsys.readouterr().err

"""A network fold cut off mid-way resumes only on the inputs it started on
(pipeline/fold_start.py): after its train file changed it starts afresh, so the run ends
with what a fresh run gives; on unchanged inputs it still resumes."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline import train
from pipeline.config import build_config


def _data(competition_factory, name: str) -> dict[str, Any]:
    data = competition_factory("tabular", "regression")
    data["name"] = name
    data["train"].update(epochs=4, resume_every=0)
    return data


def test_a_resume_on_a_changed_train_file_starts_afresh(
        competition_factory, tmp_path: Path, train_killed_in_epoch,
        caplog: pytest.LogCaptureFixture) -> None:
    data = _data(competition_factory, "killed")
    cfg = build_config(data)
    train_killed_in_epoch(cfg, 3)  # fold 0 stops with a resume point after epoch 2
    assert (cfg.run_dir / "seed0" / "fold0" / "last.pt").is_file()
    path = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    frame.assign(y=frame["y"] * 3.0 + 5.0, x2=frame["x2"] * 2.0).to_csv(path, index=False)
    with caplog.at_level(logging.INFO):
        train.run(cfg)
    assert "starts again instead of resuming" in caplog.text
    assert "resuming after epoch" not in caplog.text
    fresh = copy.deepcopy(data)
    fresh["name"] = "fresh"
    train.run(build_config(fresh))
    oof = [pd.read_parquet(Path(data["output_dir"]) / n / "oof.parquet")
           for n in ("killed", "fresh")]
    pd.testing.assert_frame_equal(*oof)


def test_a_resume_on_the_same_inputs_still_resumes(
        competition_factory, train_killed_in_epoch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = build_config(_data(competition_factory, "killed"))
    train_killed_in_epoch(cfg, 3)
    with caplog.at_level(logging.INFO):
        train.run(cfg)
    assert "resuming after epoch 2" in caplog.text
    assert "starts again" not in caplog.text

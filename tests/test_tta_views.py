"""Each TTA view's OOF score in the log (pipeline/tta_views.py), and the warning when the
merged views score below no TTA."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline import train
from pipeline.artifacts import write_parquet
from pipeline.config import build_config
from pipeline.metrics import get_metric
from pipeline.tta_views import say_view_scores, view_scores


def _views(tmp_path, y: np.ndarray) -> list:
    """Two folds' tta_oof files: 'none' right on every row, 'hflip' wrong on every row."""
    paths = []
    for fold, rows in enumerate(np.array_split(np.arange(len(y)), 2)):
        right = np.eye(3)[y[rows]]
        frames = [pd.DataFrame(p, columns=["a", "b", "c"]).assign(tta=name, id=rows.astype(str))
                  for name, p in (("none", right), ("hflip", np.roll(right, 1, axis=1)))]
        write_parquet(tmp_path / f"fold{fold}.parquet", pd.concat(frames, ignore_index=True))
        paths.append(tmp_path / f"fold{fold}.parquet")
    return paths


def test_a_view_that_hurts_is_named_in_a_warning(tmp_path, caplog) -> None:
    y = np.arange(12) % 3
    metric = get_metric("accuracy")
    scores = view_scores(_views(tmp_path, y), "id", [str(i) for i in range(12)],
                         ["a", "b", "c"], metric, y)
    assert scores == {"none": 1.0, "hflip": 0.0}
    with caplog.at_level(logging.INFO, logger="pipeline.tta_views"):
        say_view_scores("exp", metric, scores, merged=0.5)
    info, warning = caplog.records
    assert "none 1.00000, hflip 0.00000; merged (the run's) 0.50000" in info.getMessage()
    assert warning.levelno == logging.WARNING
    assert "from 1.00000 without TTA to 0.50000" in warning.getMessage()
    assert "hflip (0.00000) scores below no TTA" in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.tta_views"):
        say_view_scores("exp", metric, {"none": 0.5, "hflip": 0.7}, merged=0.6)
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # TTA helped: no warning


def test_a_view_missing_rows_or_files_gives_no_scores(tmp_path) -> None:
    y = np.arange(12) % 3
    paths = _views(tmp_path, y)
    ids = [str(i) for i in range(12)]
    metric = get_metric("accuracy")
    assert view_scores(paths[:1], "id", ids, ["a", "b", "c"], metric, y) is None
    assert view_scores([*paths, tmp_path / "gone.parquet"], "id", ids, ["a", "b", "c"],
                       metric, y) is None


def test_an_image_run_with_tta_logs_each_views_oof_score(competition_factory, caplog) -> None:
    data = competition_factory("image", "multiclass")
    data["train"]["epochs"] = 1
    data["predict"] = {"tta": ["hflip"]}
    cfg = build_config(data)
    with caplog.at_level(logging.INFO, logger="pipeline.tta_views"):
        score = train.run(cfg)
    [line] = [r.getMessage() for r in caplog.records if "by TTA view" in r.getMessage()]
    assert "none " in line and "hflip " in line
    assert line.endswith(f"merged (the run's) {score:.5f}")
    assert pytest.approx(score) == train.run(cfg)  # the rerun gathers and says it again

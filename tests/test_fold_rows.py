"""A folds file rewritten under the same name after training (edited by hand, or
``pipeline adversarial --valid-fold NAME --overwrite``) gives a fold other validation rows:
the fold trains again, so the OOF is what a fresh run on the new folds gives, never a model
scored on rows it trained on (nor a ValueError traceback where the sizes differ)."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline import train
from pipeline.config import build_config


def _swap(path: Path, n: int) -> None:
    """Move rows between folds 0 and 1: ``n`` each way (the sizes stay) or ``n`` one way."""
    frame = pd.read_csv(path, dtype={"id": str})
    zero, one = frame.index[frame["fold"] == 0], frame.index[frame["fold"] == 1]
    frame.loc[zero[:n], "fold"] = 1
    frame.loc[one[:n], "fold"] = 0
    frame.to_csv(path, index=False)


def _fresh_oof(data: dict[str, Any], folds: Path, tmp_path: Path) -> pd.DataFrame:
    fresh = copy.deepcopy(data)
    fresh["output_dir"] = str(tmp_path / "fresh_runs")
    fresh["folds_dir"] = str(tmp_path / "fresh_folds")
    cfg = build_config(fresh)
    Path(fresh["folds_dir"]).mkdir()
    shutil.copy(folds, cfg.folds_file)
    shutil.copy(folds.with_suffix(".json"), cfg.folds_file.with_suffix(".json"))
    train.run(cfg)
    return pd.read_parquet(cfg.run_dir / "oof.parquet")


@pytest.mark.parametrize("model", ["sklearn", "mlp"])
def test_moved_fold_rows_train_the_fold_again(competition_factory, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture,
                                              model: str) -> None:
    data = competition_factory("tabular", "binary")
    if model == "sklearn":
        data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    cfg = build_config(data)
    train.run(cfg)
    _swap(cfg.folds_file, 3)  # equal sizes: scored silently on the wrong rows before
    if model == "mlp":  # the network's validation predictions are made again from its weights
        for fold in (0, 1):
            (cfg.run_dir / "seed0" / f"fold{fold}" / "oof.parquet").unlink()
    with caplog.at_level(logging.WARNING):
        train.run(cfg)
    assert "trained again" in caplog.text
    got = pd.read_parquet(cfg.run_dir / "oof.parquet")
    pd.testing.assert_frame_equal(got, _fresh_oof(data, cfg.folds_file, tmp_path))


def test_a_fold_of_another_size_trains_again_instead_of_a_traceback(
        competition_factory, tmp_path: Path) -> None:
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    cfg = build_config(data)
    train.run(cfg)
    frame = pd.read_csv(cfg.folds_file, dtype={"id": str})
    frame.loc[frame.index[frame["fold"] == 0][:2], "fold"] = 1  # 2 rows move one way
    frame.to_csv(cfg.folds_file, index=False)
    train.run(cfg)  # a ValueError (inconsistent numbers of samples) before
    got = pd.read_parquet(cfg.run_dir / "oof.parquet")
    pd.testing.assert_frame_equal(got, _fresh_oof(data, cfg.folds_file, tmp_path))

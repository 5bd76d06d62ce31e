"""One fold's prediction job (pipeline/jobs/predict.py): its refusals. What it writes is
checked through the train and predict stages (tests/test_train.py, tests/test_predict.py)."""

from __future__ import annotations

import pytest

from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.engine import build_accelerator
from pipeline.errors import DataError
from pipeline.jobs import predict_fold
from pipeline.runs import fold_dir, load_folds


@pytest.mark.parametrize("snapshots", [False, True])
def test_a_fold_without_checkpoint_is_refused(competition_factory, snapshots: bool) -> None:
    data = competition_factory("tabular", "binary")
    if snapshots:
        # a snapshot ensemble predicts with every cycle's checkpoint: none is there either
        data["train"].update(snapshots=True, scheduler={"name": "restarts"})
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    out = fold_dir(cfg, 0, 1)
    with pytest.raises(DataError, match="train seed 0 fold 1 first") as info:
        predict_fold(cfg, comp, folds, 0, 1, build_accelerator("no"), None)
    assert f"no checkpoint in {out}" in str(info.value)
    assert not out.exists() or not any(out.iterdir())  # nothing written

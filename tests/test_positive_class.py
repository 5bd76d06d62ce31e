"""Which class a binary submission's one probability column holds. With text labels
('fresh'/'rotten', 'real'/'fake') it is the label that sorts last unless
'competition.positive_class' names one; the run said nothing of it, so a competition scoring
the other label's probability got ROC AUC 1 - AUC without a word (a Rotten Tomatoes probe
submitted P(rotten) for a 'fresh' column: 0.81 read as 0.19)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.artifacts import read_json
from tests.test_competition import run_cli
from tests.test_text_features import _competition


def _labelled(root: Path, labels: tuple[str, str], **competition: Any) -> tuple[dict, Any]:
    cfg, truth = _competition(root, n_train=150, n_test=60, numbers=False)
    for name in ("train.csv",):
        frame = pd.read_csv(root / name)
        frame["target"] = np.where(frame["target"] == 1, labels[1], labels[0])
        frame.to_csv(root / name, index=False)
    cfg["competition"].update(modality="text", **competition)
    cfg["model"]["encoders"] = [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]
    return cfg, truth


@pytest.mark.parametrize("labels, positive, warned, of", [
    (("rotten", "fresh"), None, True, "rotten"),      # 'rotten' sorts last: its probability
    (("rotten", "fresh"), "fresh", False, "fresh"),   # named: no warning, P(fresh) submitted
    (("no", "yes"), None, False, "yes"),              # the positive one by name
])
def test_the_submitted_class_is_named_and_a_guess_is_a_warning(
        tmp_path: Path, capsys, caplog, labels: tuple[str, str], positive: str | None,
        warned: bool, of: str) -> None:
    extra = {} if positive is None else {"positive_class": positive}
    cfg, truth = _labelled(tmp_path / "comp", labels, **extra)
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    said = [r for r in caplog.records if "holds each row's probability of" in r.getMessage()]
    assert len(said) == 1 and f"probability of {of!r}" in said[0].getMessage()
    assert (said[0].levelno == logging.WARNING) == warned
    if warned:
        assert "'competition.positive_class: fresh'" in said[0].getMessage()
    meta = read_json(tmp_path / "comp" / "runs" / "reviews" / "run.json")
    assert meta["positive_class"] == positive
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "reviews.csv")
    positive_rows = truth == 1 if of == labels[1] else truth == 0
    assert roc_auc_score(positive_rows, sub["target"]) > 0.9


@pytest.mark.parametrize("metric, said", [("f1", True), ("accuracy", False)])
def test_labels_for_a_one_sided_metric_name_their_positive_class(
        tmp_path: Path, capsys, caplog, metric: str, said: bool) -> None:
    """F1 of 'rotten' is not F1 of 'fresh': the labels' tuned threshold serves one of them.
    Accuracy scores both alike: nothing to say."""
    cfg, _ = _labelled(tmp_path / "comp", ("rotten", "fresh"), metric=metric)
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    lines = [r for r in caplog.records if "as the positive class" in r.getMessage()]
    assert len(lines) == int(said)
    if said:
        assert lines[0].levelno == logging.WARNING
        assert "labels chosen for the f1 of 'rotten' as the positive class" in lines[0].getMessage()
        assert "'competition.positive_class: fresh'" in lines[0].getMessage()
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "reviews.csv")
    assert set(sub["target"]) <= {"rotten", "fresh"}

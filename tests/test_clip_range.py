"""A regression's submission held to the train target's range where its OOF, each fold clipped
to the range of its own training rows, scores better (pipeline.clip_range)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import submit, train
from pipeline.cli import main
from pipeline.clip_range import decide_clip
from pipeline.config import build_config
from pipeline.metrics import get_metric


def _overshooting(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A bounded target (0..100, as Pawpularity) and a linear model's overshoot at its ends."""
    signal = rng.uniform(-1.5, 1.5, n)
    y = np.clip(50 + 40 * signal, 0, 100)
    return y[:, None], (50 + 40 * signal + rng.normal(0, 8, n))[:, None]


def test_random_folds_clip_an_overshooting_model() -> None:
    rng = np.random.default_rng(0)
    y, oof = _overshooting(rng, 400)
    folds = np.arange(400) % 5
    rmse = get_metric("rmse")
    decision = decide_clip("auto", rmse, y, oof, folds)
    assert decision.applied and decision.low.tolist() == [0.0] and decision.high.tolist() == [100]
    assert decision.oof_without == pytest.approx(rmse(y, oof))
    assert decision.oof_with < decision.oof_without - 1.0  # points of RMSE, not noise
    p = np.array([[-20.0], [50.0], [130.0]])
    assert decision.apply(p)[:, 0].tolist() == [0.0, 50.0, 100.0]
    # forced either way, whatever the OOF says
    assert decide_clip("on", rmse, y, y, folds).apply(p)[:, 0].tolist() == [0.0, 50.0, 100.0]
    assert decide_clip("off", rmse, y, oof, folds).apply(p)[:, 0].tolist() == [-20, 50, 130]


def test_a_trend_held_out_by_period_keeps_the_extrapolation() -> None:
    """Each period its own fold (group folds on the period): the model that follows the trend
    predicts each end period beyond the other periods' range, rightly; clipping those
    predictions to the training rows' range makes the OOF worse, so auto keeps the values."""
    rng = np.random.default_rng(1)
    t = np.arange(500, dtype=np.float64)
    y = (10 + 0.2 * t + rng.normal(0, 2, 500))[:, None]
    oof = (10 + 0.2 * t + rng.normal(0, 2, 500))[:, None]  # the trend, learnt
    folds = (t // 100).astype(int)
    decision = decide_clip("auto", get_metric("rmse"), y, oof, folds)
    assert not decision.applied and decision.oof_with > decision.oof_without
    assert decision.apply(np.array([[1e3]]))[0, 0] == 1e3


def test_predictions_inside_the_range_are_a_tie_and_kept() -> None:
    y = np.array([[0.0], [1.0], [2.0], [3.0]] * 2)  # each fold's training rows span 0..3
    decision = decide_clip("auto", get_metric("mae"), y, y * 0.5 + 0.5, np.repeat([0, 1], 4))
    assert not decision.applied and decision.oof_with == decision.oof_without


def test_masked_targets_and_lower_bounds() -> None:
    """NaN cells span nothing; a target no row holds bounds nothing (not NaN everywhere); the
    metric's lower bound (RMSLE) applies before either score, so negatives do not crash it."""
    y = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.nan], [2.0, np.nan]])
    decision = decide_clip("on", get_metric("rmse"), y, np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    assert decision.low.tolist() == [1.0, -np.inf] and decision.high.tolist() == [3.0, np.inf]
    assert decision.apply(np.array([[5.0, 7.0]])).tolist() == [[3.0, 7.0]]
    y = np.array([[0.5], [2.0], [4.0], [1.0], [3.0], [6.0]])
    oof = np.array([[-1.0], [2.5], [9.0], [1.0], [-0.5], [7.0]])
    decision = decide_clip("auto", get_metric("rmsle"), y, oof, np.array([0, 1, 2, 0, 1, 2]))
    assert decision.applied and np.isfinite(decision.oof_without)
    with pytest.raises(ValueError, match="clip must be one of"):
        decide_clip("maybe", get_metric("rmse"), y, oof, np.zeros(6, dtype=int))


@pytest.mark.usefixtures("one_thread")
def test_a_linear_run_on_a_bounded_target_submits_inside_its_range(competition_factory,
                                                                    tmp_path: Path) -> None:
    """End to end: a linear model on a saturating target overshoots on the test rows; the
    submission is held to the train range (auto), the values as predicted with --clip off;
    predict.clip is not a training key (submit --config after changing it retrains nothing)."""
    data = competition_factory("tabular", "regression", n_train=160, n_test=60)
    comp_dir = Path(data["competition"]["dir"])
    frame = pd.read_csv(comp_dir / "train.csv")
    frame["y"] = np.clip(frame["x1"], -0.8, 0.8)
    frame.to_csv(comp_dir / "train.csv", index=False)
    test = pd.read_csv(comp_dir / "test.csv")
    test["x1"] *= 2.0  # rows further out than the train rows: the model overshoots more
    test.to_csv(comp_dir / "test.csv", index=False)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LinearRegression"}]}
    cfg = build_config(data)
    train.run(cfg)
    predicted = pd.read_parquet(cfg.run_dir / "test.parquet").set_index("id")["y"]
    low, high = frame["y"].min(), frame["y"].max()
    assert (predicted > high).sum() > 3 and (predicted < low).sum() > 3
    clipped = pd.read_csv(submit.run(cfg.run_dir, "auto", tmp_path / "subs")).set_index("id")
    assert clipped["y"].between(low, high).all()
    assert clipped["y"].to_numpy() == pytest.approx(
        predicted.loc[clipped.index].clip(low, high).to_numpy())
    assert main(["submit", "--run", str(cfg.run_dir), "--name", "off", "--clip", "off",
                 "--submissions-dir", str(tmp_path / "subs")]) == 0
    kept = pd.read_csv(tmp_path / "subs" / "off.csv").set_index("id")["y"]
    assert kept.to_numpy() == pytest.approx(predicted.loc[kept.index].to_numpy())
    # the config's key decides a config's submission, and changing it retrains nothing
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**data, "predict": {"clip": "off"}}))
    assert main(["submit", str(path), "--name", "by-config",
                 "--submissions-dir", str(tmp_path / "subs")]) == 0
    by_config = pd.read_csv(tmp_path / "subs" / "by-config.csv").set_index("id")["y"]
    assert by_config.to_numpy() == pytest.approx(kept.to_numpy())


def test_no_test_value_outside_the_range_is_not_said_clipped(caplog) -> None:
    """'0 of 300 test values outside the train target's range [0, 6]: clipped' said a clip
    of a submission it left as it was."""
    import logging
    from types import SimpleNamespace

    from pipeline.clip_range import ClipDecision

    decision = ClipDecision(True, np.array([0.0]), np.array([6.0]), "auto: it scores better",
                            1.0, 0.9)
    inside = SimpleNamespace(test_matrix=np.array([[1.0], [5.0]]),
                             meta=SimpleNamespace(metric="rmse"))
    with caplog.at_level(logging.INFO, logger="pipeline.submit"):
        submit._log_clip(decision, inside)
        submit._log_clip(decision, SimpleNamespace(test_matrix=np.array([[7.0], [5.0]]),
                                                   meta=inside.meta))
    first, second = (r.getMessage() for r in caplog.records)
    assert "0 of 2 test values outside the train target's range [0, 6]: nothing to clip" in first
    assert "1 of 2 test values outside the train target's range [0, 6]: clipped" in second


def test_the_two_oof_scores_are_said_with_the_digits_that_tell_them_apart(caplog) -> None:
    """'scores better; OOF mcrmse 0.59744 as it is, 0.59744 with each fold clipped' (a
    probe's six essay scores, where the clip gained 2e-7) read as a contradiction."""
    import logging
    from types import SimpleNamespace

    from pipeline.clip_range import ClipDecision

    preds = SimpleNamespace(test_matrix=np.array([[1.0]]), meta=SimpleNamespace(metric="mcrmse"))
    with caplog.at_level(logging.INFO, logger="pipeline.submit"):
        for without, with_clip in ((0.5974357, 0.5974355), (0.61, 0.6)):
            submit._log_clip(ClipDecision(True, np.array([0.0]), np.array([6.0]),
                                          "auto: it scores better", without, with_clip), preds)
    first, second = (r.getMessage() for r in caplog.records)
    assert first.endswith("OOF mcrmse 0.5974357 as it is, 0.5974355 with each fold clipped to "
                          "its training rows' range)")
    assert "OOF mcrmse 0.61000 as it is, 0.60000 with" in second

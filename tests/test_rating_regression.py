"""A regression on ratings scored by QWK (``task: regression, metric: qwk``): APTOS-,
PetFinder- or essay-scoring-style, where competitors fit one value and tune the cut points
between ratings on the OOF (the "optimized rounder"). The metric rounds a value to the
nearest of the train target's ratings, the rule tunes the cuts, the submission writes ratings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from pipeline import train
from pipeline.config import build_config
from pipeline.ensemble import PostProcess, fit_postprocess
from pipeline.errors import DataError
from pipeline.metrics import get_metric, nearest_rating
from pipeline.targets import MAX_RATINGS, target_ratings


def _kappa(truth: np.ndarray, guess: np.ndarray) -> float:
    return cohen_kappa_score(truth, guess, weights="quadratic",
                             labels=np.arange(min(truth.min(), guess.min()),
                                              max(truth.max(), guess.max()) + 1))


def test_values_are_scored_as_the_nearest_rating() -> None:
    """QWK of a regression rounds each value to the nearest rating (beyond the ends: the end
    rating) and weighs a disagreement by the ratings' values, as Kaggle's QWK of those
    rounded ratings."""
    y = np.array([[1.0], [2.0], [3.0], [5.0], [5.0], [1.0], [3.0], [2.0]])
    p = np.array([[0.2], [2.6], [3.4], [4.1], [9.0], [1.49], [3.9], [1.51]])
    ratings = [1, 2, 3, 5]
    rounded = np.array([1, 3, 3, 5, 5, 1, 3, 2])  # 4.1 is nearer 5 than 3; 3.9 nearer 3
    assert np.array(ratings)[nearest_rating(p[:, 0], np.array(ratings))].tolist() == \
        rounded.tolist()
    score = get_metric("qwk", ratings)(y, p)
    assert score == pytest.approx(_kappa(y[:, 0].astype(int), rounded))
    # unbound, the ratings are the scored rows' own values (here the same four)
    assert get_metric("qwk")(y, p) == pytest.approx(score)
    assert get_metric("qwk", ratings)(y, y) == pytest.approx(1.0)


def test_the_rule_tunes_cut_points_between_ratings() -> None:
    """A model whose values are squeezed towards the mean (a regression's habit) rounds most
    rows to the middle rating; cut points tuned on the OOF spread them again, and the rule
    read back from JSON gives the same ratings."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 600).astype(np.float64)[:, None]
    p = 2.0 + 0.3 * (y - 2.0) + rng.normal(0, 0.25, y.shape)  # squeezed, noisy
    qwk = get_metric("qwk", [0, 1, 2, 3, 4])
    rule = fit_postprocess("regression", qwk, y, p)
    assert rule is not None and len(rule.cut_points) == 4
    assert rule.ratings == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert rule.default_score == pytest.approx(qwk(y, p))
    assert rule.score > rule.default_score + 0.2  # rounding leaves most rows at 2
    assert rule.score == pytest.approx(rule.evaluate(y, p, qwk))
    assert rule.score == pytest.approx(_kappa(y[:, 0].astype(int), rule.labels(p)))
    again = PostProcess.from_json(json.loads(json.dumps(rule.to_json())))
    assert np.array_equal(again.labels(p), rule.labels(p))
    # a metric of values has no rule
    assert fit_postprocess("regression", get_metric("rmse"), y, p) is None
    # the stages' estimate of the search counts a cut between each two ratings
    from pipeline.ensemble._tuning_cost import postprocess_seconds

    assert 0 < postprocess_seconds("regression", qwk, y, p, 5) < 60


def test_ratings_of_the_train_target(tmp_path: Path) -> None:
    """The ratings are the target's values, whole ones as ints (the submission writes 3,
    not 3.0); a scale too long for ratings, several targets or one rating are refused."""
    path = tmp_path / "train.csv"
    frame = pd.DataFrame({"y": [3.0, 1.0, 2.0, 3.0], "z": [0.5, 1.5, 1.0, 0.5]})
    assert target_ratings(frame, "regression", "qwk", ["y"], path) == [1, 2, 3]
    assert all(type(v) is int for v in target_ratings(frame, "regression", "qwk", ["y"], path))
    assert target_ratings(frame, "regression", "qwk", ["z"], path) == [0.5, 1.0, 1.5]
    assert target_ratings(frame, "regression", "rmse", ["y"], path) == []
    assert target_ratings(frame, "multiclass", "qwk", ["y"], path) == []
    with pytest.raises(DataError, match="scores one column of ratings"):
        target_ratings(frame, "regression", "qwk", ["y", "z"], path)
    wide = pd.DataFrame({"y": np.linspace(0, 1, MAX_RATINGS + 1)})
    with pytest.raises(DataError, match=r"holds 101 distinct values \(at most 100\)"):
        target_ratings(wide, "regression", "qwk", ["y"], path)
    with pytest.raises(DataError, match="holds a single rating"):
        target_ratings(frame.assign(y=2), "regression", "qwk", ["y"], path)


@pytest.mark.usefixtures("one_thread")
def test_a_rating_regression_run_submits_ratings(competition_factory) -> None:
    """End to end: the run scores its OOF as the nearest ratings, records the ratings, tunes
    cut points, and the submission holds the train file's ratings as integers."""
    from pipeline import submit

    data = competition_factory("tabular", "regression", n_train=80, n_test=20)
    comp_dir = Path(data["competition"]["dir"])
    frame = pd.read_csv(comp_dir / "train.csv")
    frame["y"] = pd.qcut(frame["y"], 4, labels=False) + 1  # ratings 1..4
    frame.to_csv(comp_dir / "train.csv", index=False)
    data["competition"]["metric"] = "qwk"
    data["train"]["epochs"] = 2
    data["predict"] = {**data.get("predict", {}), "postprocess": "on"}
    cfg = build_config(data)
    train.run(cfg)
    meta = json.loads((cfg.run_dir / "run.json").read_text())
    assert meta["ratings"] == [1, 2, 3, 4] and meta["classes"] == []
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    truth = frame.set_index("id").loc[oof["id"], "y"].to_numpy()
    rounded = 1 + nearest_rating(oof["y"].to_numpy(), np.array([1, 2, 3, 4]))
    scores = json.loads((cfg.run_dir / "scores.json").read_text())["scores"]
    assert scores["oof"] == pytest.approx(_kappa(truth, rounded))
    rule = PostProcess.from_json(json.loads((cfg.run_dir / "postprocess.json").read_text()))
    assert rule.task == "regression" and len(rule.cut_points) == 3
    path = submit.run(cfg.run_dir, submissions_dir=comp_dir / "subs")
    written = pd.read_csv(path)
    test = pd.read_parquet(cfg.run_dir / "test.parquet").set_index("id")
    assert written["y"].dtype.kind == "i"
    assert set(written["y"]) <= {1, 2, 3, 4}
    expected = 1 + rule.labels(test.loc[written["id"], ["y"]].to_numpy())
    assert written["y"].tolist() == expected.tolist()

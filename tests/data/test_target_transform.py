"""Regression target transforms (pipeline/data/target_transform.py): each round-trips, refuses
targets outside its domain, is fitted on the fold's training targets, and wraps every kind of
member (scikit-learn, GBDT, network) so OOF and test files stay in the targets' units."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import TransformedTargetRegressor

from pipeline import train
from pipeline.competition import CompetitionConfig, load_competition
from pipeline.config import build_config
from pipeline.data.target_transform import TARGET_TRANSFORMS, TargetTransform
from pipeline.errors import ConfigError, DataError
from pipeline.jobs.inputs import PREP_FILE, fold_prep

SKEWED = np.random.default_rng(0).lognormal(1.0, 1.0, size=(80, 2))


@pytest.mark.parametrize("kind", TARGET_TRANSFORMS)
def test_each_transform_round_trips(kind: str) -> None:
    t = TargetTransform(kind, ("a", "b")).fit(SKEWED[:60])
    z = t.transform(SKEWED)
    rebuilt = TargetTransform.from_state(json.loads(json.dumps(t.state())))
    np.testing.assert_allclose(rebuilt.inverse_transform(z), SKEWED, rtol=1e-9)
    np.testing.assert_allclose(rebuilt.transform(SKEWED), z)
    one = TargetTransform(kind).fit(SKEWED[:60, 0])
    assert one.transform(SKEWED[:, 0]).shape == (80,)  # one target: the shape kept
    if kind != "none":
        assert not np.allclose(z, SKEWED)
    if kind == "standardize":  # fitted on the 60 training rows only
        np.testing.assert_allclose(z[:60].mean(axis=0), 0, atol=1e-9)
        assert abs(z[60:].mean()) > 1e-3
    if kind in ("log1p", "box-cox", "yeo-johnson"):  # the skew is (mostly) gone
        skew = pd.DataFrame(z).skew().abs().max()
        assert skew < pd.DataFrame(SKEWED).skew().abs().min() / 2


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("log1p", -0.5, "needs targets >= 0; column 'b' has negative values (min -0.5)"),
    ("box-cox", 0.0, "needs targets > 0; column 'b' has non-positive values (min 0)"),
])
def test_domain_refusals_name_column_and_minimum(kind: str, value: float, message: str) -> None:
    y = SKEWED.copy()
    y[3, 1] = value
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        TargetTransform(kind, ("a", "b")).fit(y)
    assert "\n" not in str(info.value)
    TargetTransform("yeo-johnson", ("a", "b")).fit(y)  # any sign
    with pytest.raises(ValueError, match="'kind' of TargetTransform must be one of"):
        TargetTransform("log").fit(y)


@pytest.mark.parametrize("kind", ["box-cox", "yeo-johnson"])
def test_power_inverse_past_its_domain_is_the_training_targets_end(kind: str) -> None:
    """A right-skewed target gets a negative lambda, whose transformed values are bounded
    above by -1 / lambda just past the largest training target's: a prediction beyond it
    had no inverse (NaN), and a single such test row refused the whole submission."""
    y = np.random.default_rng(0).lognormal(0.0, 1.0, size=(200, 1)) + 1
    fitted = TargetTransform(kind).fit(y)
    t = TargetTransform.from_state(json.loads(json.dumps(fitted.state())))
    (lam,) = t.lambdas_
    assert lam < 0
    z = t.transform(y)
    bound = -1 / lam
    assert z.max() < bound < 1.5 * z.max()
    past = np.array([[bound], [1.5 * z.max()], [3 * z.max()]])
    np.testing.assert_allclose(t.inverse_transform(past), y.max())
    inside = np.array([[z.min()], [z.max()], [(z.max() + bound) / 2]])
    back = t.inverse_transform(inside)  # the domain itself is untouched, extrapolation kept
    np.testing.assert_allclose(back[:2, 0], [y.min(), y.max()])
    assert back[2, 0] > y.max() and np.isfinite(back).all()


def test_power_transform_of_an_older_fold_still_inverts_its_domain() -> None:
    state = TargetTransform("box-cox").fit(SKEWED).state()
    for key in ("low", "high"):  # a fold prepared before the span was kept
        del state[key]
    t = TargetTransform.from_state(state)
    np.testing.assert_allclose(t.inverse_transform(t.transform(SKEWED)), SKEWED, rtol=1e-9)


def test_a_linear_member_overshooting_on_a_test_row_still_submits(competition_factory,
                                                                   tmp_path: Path) -> None:
    from pipeline import submit

    data = competition_factory("tabular", "regression", n_train=120, n_test=40)
    root = Path(data["competition"]["dir"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=160)
    y = np.exp(1.5 * x + rng.normal(scale=0.3, size=160))
    for name, rows in (("train.csv", slice(0, 120)), ("test.csv", slice(120, 160))):
        frame = pd.read_csv(root / name)[["id"]].assign(x1=x[rows])
        if name == "train.csv":
            frame["y"] = y[rows]
        frame.to_csv(root / name, index=False)
    test = pd.read_csv(root / "test.csv")
    test.loc[0, "x1"] = 4.0  # one row past every train row: its linear fit past the bound
    test.to_csv(root / "test.csv", index=False)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LinearRegression"}],
                     "target_transform": "yeo-johnson"}
    cfg = build_config(data)
    train.run(cfg)
    predicted = pd.read_parquet(cfg.run_dir / "test.parquet")["y"]
    assert np.isfinite(predicted).all()  # was NaN: "test predictions ... hold NaN/inf"
    assert predicted.iloc[0] == pytest.approx(y[:120].max(), rel=0.05)  # a fold's largest
    path = submit.run(cfg.run_dir, submissions_dir=tmp_path / "subs", clip="off")
    assert np.isfinite(pd.read_csv(path)["y"]).all()


def test_labels_of_another_run_are_held_to_the_transforms_targets() -> None:
    y = SKEWED[:, :1]
    log = TargetTransform("log1p").fit(y)
    np.testing.assert_array_equal(log.in_domain(np.array([[-4.0], [-0.5], [2.0]])),
                                  [[0.0], [0.0], [2.0]])
    box = TargetTransform.from_state(TargetTransform("box-cox").fit(y).state())
    held = box.in_domain(np.array([[-1.0], [0.0], [y.max()]]))
    np.testing.assert_allclose(held, [[y.min()], [y.min()], [y.max()]])
    assert np.isfinite(box.transform(held)).all()
    same = TargetTransform("yeo-johnson").fit(y)  # any sign: nothing to hold
    np.testing.assert_array_equal(same.in_domain(np.array([[-4.0]])), [[-4.0]])


def test_a_log1p_round_takes_pseudo_labels_below_zero(competition_factory) -> None:
    """A source fitted on the raw target (Ridge) predicts below -1 for the smallest ones;
    log1p made those pseudo-labels NaN, and the network trained on them predicted NaN in
    every fold ("OOF predictions of seed 0 miss rows")."""
    data = competition_factory("tabular", "regression", n_train=80, n_test=40)
    root = Path(data["competition"]["dir"])
    rng = np.random.default_rng(0)
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(root / name)
        frame["x1"] = rng.uniform(-3, 1.5, len(frame))
        if name == "train.csv":
            frame["y"] = np.exp(2 * frame["x1"])
        frame.to_csv(root / name, index=False)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.Ridge"}]}
    source = build_config(data)
    train.run(source)
    assert pd.read_parquet(source.run_dir / "test.parquet")["y"].min() < -1
    cfg = build_config({**data, "name": "round1", "pseudo": {"source": str(source.run_dir)},
                        "model": {"encoders": [{"name": "mlp", "params": {"hidden": [8]}}],
                                  "target_transform": "log1p"}})
    assert np.isfinite(train.run(cfg))
    assert np.isfinite(pd.read_parquet(cfg.run_dir / "test.parquet")["y"]).all()


def test_works_as_transformed_target_regressor_transformer() -> None:
    from sklearn.linear_model import LinearRegression

    x = np.linspace(0, 2, 50)[:, None]
    y = np.exp(1.5 * x[:, 0])
    model = TransformedTargetRegressor(LinearRegression(), transformer=TargetTransform("log1p"),
                                       check_inverse=False).fit(x, y)
    assert model.predict(x).shape == (50,) and np.corrcoef(model.predict(x), y)[0, 1] > 0.99


def _skewed(factory, model: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """A regression competition whose target is lognormal in x1 (RMSLE-style)."""
    data = factory("tabular", "regression", n_train=160, n_test=20)
    root = Path(data["competition"]["dir"])
    frame = pd.read_csv(root / "train.csv")
    rng = np.random.default_rng(3)
    frame["x1"] = rng.uniform(0, 3, size=len(frame))
    noise = rng.normal(scale=0.15, size=len(frame))
    frame["y"] = np.expm1(np.clip(0.5 + 1.2 * frame["x1"] + noise, 0, None))
    frame.to_csv(root / "train.csv", index=False)
    data["competition"]["metric"] = "rmsle"
    data["model"] = {"encoders": [model], "target_transform": kind}
    data["name"] = name
    return data


def _oof(cfg) -> pd.DataFrame:
    return pd.read_parquet(cfg.run_dir / "oof.parquet")


@pytest.mark.parametrize("model", [
    {"name": "sklearn:sklearn.linear_model.Ridge"},
    {"name": "lightgbm", "params": {"n_estimators": 200, "learning_rate": 0.2,
                                    "early_stopping_rounds": 10, "min_child_samples": 5,
                                    "n_jobs": 1}},  # OpenMP threads crawl on a busy machine
], ids=["sklearn", "lightgbm"])
def test_log1p_run_writes_original_units_and_scores_better(competition_factory,
                                                           model: dict[str, Any]) -> None:
    plain_cfg = build_config(_skewed(competition_factory, model, "none", "plain"))
    plain = train.run(plain_cfg)
    cfg = build_config(_skewed(competition_factory, model, "log1p", "log1p"))
    score = train.run(cfg)
    assert score < 0.9 * plain  # rmsle, lower is better: fitted where the metric measures
    y = pd.read_csv(Path(cfg.competition.dir) / "train.csv")["y"]
    oof = _oof(cfg)
    # the targets' units: the OOF median is near the targets' (log space would be ~log1p)
    assert 0.5 < oof["y"].median() / y.median() < 2 and oof["y"].max() > np.log1p(y.max())
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert np.isfinite(test["y"]).all() and (test["y"] > -1).all()
    fitted = joblib.load(cfg.run_dir / "seed0" / "fold0" / "model.joblib")
    target = fitted.transformer_ if model["name"].startswith("sklearn") else fitted.target
    assert target.kind == "log1p"


def test_an_rmsle_regression_fits_in_log1p_space_unless_told(competition_factory) -> None:
    """A probe's lognormal prices (0 to 3.7e7) under RMSLE: LightGBM on the raw target scored
    held-out RMSLE 3.27 (it fits squared error where the largest prices rule), 0.52 on log1p.
    An RMSLE regression that names no transform now fits in the metric's space."""
    model = {"name": "sklearn:sklearn.linear_model.Ridge"}
    data = _skewed(competition_factory, model, "none", "default")
    del data["model"]["target_transform"]
    cfg = build_config(data)
    assert cfg.model.target_transform == "log1p"
    assert build_config(_skewed(competition_factory, model, "none", "x")).model \
        .target_transform == "none"  # said explicitly: kept
    other = dict(data, competition={**data["competition"], "metric": "rmse"})
    assert build_config(other).model.target_transform == "none"
    score = train.run(cfg)
    plain = train.run(build_config(_skewed(competition_factory, model, "none", "plain")))
    assert score < 0.9 * plain
    fitted = joblib.load(cfg.run_dir / "seed0" / "fold0" / "model.joblib")
    assert fitted.transformer_.kind == "log1p"


def test_network_prep_composes_transform_then_standardisation(competition_factory,
                                                              tmp_path: Path) -> None:
    data = _skewed(competition_factory, {"name": "mlp"}, "box-cox", "net")
    comp = load_competition(CompetitionConfig(**data["competition"]))
    rows = np.arange(100)
    fold = tmp_path / "fold0"
    fold.mkdir()
    prep = fold_prep(fold, comp, rows, "box-cox")
    z = prep.standardise("regression", comp.targets)
    np.testing.assert_allclose(z[rows].mean(axis=0), 0, atol=1e-4)  # training rows only
    np.testing.assert_allclose(z[rows].std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(prep.predictions("regression", z), comp.targets, rtol=1e-4)
    stored = json.loads((fold / PREP_FILE).read_text())["target_transform"]
    assert stored["kind"] == "box-cox" and len(stored["lambdas"]) == 1
    # the predict stage (no competition handed in) re-applies the same fitted transform
    again = fold_prep(fold)
    np.testing.assert_allclose(again.predictions("regression", z), comp.targets, rtol=1e-4)
    # a fold asked for another transform is prepared again (no resume on other targets)
    (fold / "last.pt").write_bytes(b"resume point")
    plain = fold_prep(fold, comp, rows, "none")
    assert plain.target.kind == "none" and not (fold / "last.pt").exists()
    assert "target_transform" not in json.loads((fold / PREP_FILE).read_text())
    np.testing.assert_allclose(plain.target_mean, comp.targets[rows].mean(axis=0))


def test_network_run_predicts_in_original_units(competition_factory) -> None:
    data = _skewed(competition_factory, {"name": "mlp", "params": {"hidden": [16]}}, "log1p",
                   "net-log1p")
    data["train"]["epochs"] = 3
    cfg = build_config(data)
    train.run(cfg)
    y = pd.read_csv(Path(cfg.competition.dir) / "train.csv")["y"]
    assert 0.3 < _oof(cfg)["y"].median() / y.median() < 3


def test_target_transform_refused_for_classification(competition_factory) -> None:
    data = competition_factory("tabular", "binary")
    data["model"]["target_transform"] = "log1p"
    with pytest.raises(ConfigError, match=re.escape(
            "'model.target_transform' 'log1p' transforms regression targets; task 'binary'")):
        build_config(data)


def test_negative_targets_refused_before_any_fold(competition_factory) -> None:
    data = _skewed(competition_factory, {"name": "sklearn:sklearn.linear_model.Ridge"},
                   "log1p", "neg")
    root = Path(data["competition"]["dir"])
    frame = pd.read_csv(root / "train.csv")
    frame.loc[5, "y"] = -2.0
    frame.to_csv(root / "train.csv", index=False)
    data["competition"]["metric"] = "rmse"
    with pytest.raises(DataError, match=r"column 'y' has negative values \(min -2\)"):
        train.run(build_config(data))

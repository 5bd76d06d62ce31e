"""`pipeline adversarial`: the train-vs-test classifier, its drift report, sample weights and a
test-like folds file the train stage accepts (issue 15 item 14)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.adversarial_validation import (
    adversarial_validation,
    register,
    sample_weights,
)
from pipeline.competition import load_competition
from pipeline.config import build_config, load_config
from pipeline.errors import DataError, PipelineError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny fits: OpenMP threads only contend (tenfold slower on a busy 2-core machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _competition(root: Path, shift: float, n_train: int = 400, n_test: int = 200,
                 text: bool = False, seed: int = 0) -> Path:
    """A binary tabular competition whose column 'drift' is shifted by ``shift`` in test;
    'noise' and 'color' are drawn alike. Returns the config path."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    is_test = np.arange(n) >= n_train
    frame = pd.DataFrame({
        "id": [f"r{i:04d}" for i in range(n)],
        "target": rng.choice(["no", "yes"], size=n),
        "drift": rng.normal(size=n) + shift * is_test,
        "noise": rng.normal(size=n),
        "color": rng.choice(["red", "blue", "green"], size=n),
    })
    comp_dir = root / "comp"
    comp_dir.mkdir(parents=True)
    text_columns = []
    if text:  # the word 'sequel' only in test reviews
        words = np.array(["good", "bad", "plot", "film", "story", "actor"])
        frame["review"] = [" ".join(rng.choice(words, 4)) + (" sequel" if t else "")
                           for t in is_test]
        text_columns = ["review"]
    frame.iloc[:n_train].to_csv(comp_dir / "train.csv", index=False)
    frame.iloc[n_train:].drop(columns="target").to_csv(comp_dir / "test.csv", index=False)
    frame.iloc[n_train:][["id"]].assign(target=0).to_csv(comp_dir / "sample_submission.csv",
                                                          index=False)
    data: dict[str, Any] = {
        "name": "adv", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(comp_dir), "task": "binary", "metric": "roc_auc",
                        "modality": "tabular", "target_columns": ["target"],
                        "text_columns": text_columns},
        "folds": {"scheme": "stratified", "n_splits": 3, "seed": 0},
        "model": {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]},
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipeline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["adversarial", *argv])
    return int(args.fn(args))


def test_a_shifted_column_is_found_and_ranked_first(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = _competition(tmp_path, shift=1.5)
    assert _run([str(config)]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "runs" / "_adversarial" / "adv" / "report.json").read_text())
    # a 1.5-sd shift in one column separates the sets well (the Bayes AUC is about 0.86)
    assert report["auc"] > 0.75
    assert "drift" in report["reading"] and "no noticeable" not in report["reading"]
    first, *rest = report["features"]
    assert first["feature"] == "drift" and first["kind"] == "numeric"
    assert first["importance"] > 0.1 > max(r["importance"] for r in rest)
    assert first["univariate"] > 0.4  # KS of a 1.5-sd shift is about 0.55
    assert all(r["univariate"] < 0.2 for r in rest)
    assert f"adversarial ROC AUC = {report['auc']:.4f}" in out
    assert out.index("drift ") < out.index("noise ")
    scores = pd.read_csv(tmp_path / "runs" / "_adversarial" / "adv" / "scores.csv")
    assert list(scores.columns) == ["id", "split", "p_test"] and len(scores) == 600


def test_no_drift_reads_as_none(tmp_path: Path) -> None:
    cfg = load_config(_competition(tmp_path, shift=0.0))
    result = adversarial_validation(load_competition(cfg.competition), n_splits=3, seed=0)
    assert abs(result.auc - 0.5) < 0.07
    assert all(abs(r["importance"]) < 0.05 for r in result.drift)


def test_a_test_only_word_makes_the_text_column_drift(tmp_path: Path) -> None:
    cfg = load_config(_competition(tmp_path, shift=0.0, n_train=150, n_test=100, text=True))
    result = adversarial_validation(load_competition(cfg.competition), n_splits=3, seed=0)
    assert result.auc > 0.95
    assert result.drift[0]["feature"] == "review" and result.drift[0]["kind"] == "text"


def test_weights_have_mean_one_and_favour_test_like_rows(tmp_path: Path) -> None:
    config = _competition(tmp_path, shift=1.5)
    path = tmp_path / "w.csv"
    assert _run([str(config), "--weights", str(path), "--max-weight", "5"]) == 0
    weights = pd.read_csv(path)
    train = pd.read_csv(tmp_path / "comp" / "train.csv")
    assert list(weights.columns) == ["id", "weight"]
    assert weights["id"].tolist() == train["id"].tolist()
    w = weights["weight"].to_numpy()
    assert w.mean() == pytest.approx(1.0) and w.max() <= 5 + 1e-9 and w.min() > 0
    # rows shifted towards test (high 'drift') weigh more than the others
    high = train["drift"] > 1.0
    assert w[high].mean() > 2 * w[~high].mean()


def test_sample_weights_are_the_clipped_density_ratio() -> None:
    p = np.array([0.5, 0.5, 0.2, 0.8, 0.999])
    w = sample_weights(p, max_weight=3.0)
    assert w.mean() == pytest.approx(1.0) and w.max() == pytest.approx(3.0)
    # below the cap the odds ratios survive: p=0.5 is 4x p=0.2 (odds 1 vs 0.25)
    assert w[0] / w[2] == pytest.approx(4.0) and w[0] == w[1]


def test_valid_fold_is_accepted_by_the_train_stage(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import train
    from pipeline.runs import load_folds, read_scores

    config = _competition(tmp_path, shift=1.5)
    assert _run([str(config), "--valid-fold", "testlike", "--valid-share", "0.25"]) == 0
    assert "--set folds.name=testlike" in capsys.readouterr().out
    cfg = load_config(config, ["folds.name=testlike"])
    assert cfg.folds_file == tmp_path / "folds" / "testlike.csv"
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)  # the folds stage's checks: spec sidecar, ids, 0..n-1
    assert sorted(np.unique(folds)) == [0, 1, 2]
    assert (folds == 0).sum() == pytest.approx(100, abs=2)  # 25% of 400, per class
    # fold 0 keeps the class balance and holds the rows most like test (high 'drift')
    target = comp.train["target"].to_numpy()
    assert abs((target[folds == 0] == "yes").mean() - (target == "yes").mean()) < 0.02
    drift = comp.train["drift"].to_numpy()
    assert drift[folds == 0].mean() > drift[folds != 0].mean() + 0.8
    spec = json.loads((tmp_path / "folds" / "testlike.json").read_text())
    assert spec["made_by"] == "pipeline adversarial" and spec["valid_share"] == 0.25
    score = train.run(cfg, comp)
    assert np.isfinite(score)
    assert {"seed0/fold0", "seed0/fold1", "seed0/fold2"} <= set(read_scores(cfg.run_dir)["scores"])


def test_valid_fold_with_two_splits_and_groups_keeps_groups_whole(tmp_path: Path) -> None:
    from pipeline.data.splits import read_folds

    config = _competition(tmp_path, shift=1.5)
    train = pd.read_csv(tmp_path / "comp" / "train.csv")
    train["grp"] = np.arange(len(train)) // 4
    train.to_csv(tmp_path / "comp" / "train.csv", index=False)
    sets = ["competition.group_column=grp", "folds.scheme=stratified_group", "folds.n_splits=2"]
    argv = [str(config), "--valid-fold", "grouped"] + [x for s in sets for x in ("--set", s)]
    assert _run(argv) == 0
    cfg = load_config(config, [*sets, "folds.name=grouped"])
    comp = load_competition(cfg.competition)
    folds = read_folds(cfg.folds_file, comp, 2)  # also refuses a group split across folds
    assert 70 <= (folds == 0).sum() <= 90  # whole groups of 4 up to 20% of 400 rows


def test_refusals_are_one_line_before_any_work(tmp_path: Path) -> None:
    config = _competition(tmp_path, shift=0.0)
    for argv, words in (
        (["--valid-fold", "x", "--valid-share", "1.5"], "--valid-share must be a fraction"),
        (["--valid-fold", "x", "--valid-share", "0"], "(0, 1)"),
        (["--valid-share", "0.3"], "needs --valid-fold"),
        (["--valid-fold", "../x"], "file stem"),
        (["--max-weight", "1"], "--max-weight must be > 1"),
        (["--n-splits", "1"], "--n-splits"),
    ):
        with pytest.raises(PipelineError, match=words.replace("(", r"\(").replace(")", r"\)")):
            _run([str(config), *argv])
    existing = tmp_path / "w.csv"
    existing.write_text("keep")
    with pytest.raises(PipelineError, match="exists; pass --overwrite"):
        _run([str(config), "--weights", str(existing)])
    assert existing.read_text() == "keep"
    assert not (tmp_path / "runs").exists()  # refused before the classifier ran
    with pytest.raises(PipelineError, match="no config given"):
        _run([])


def test_a_fold_split_it_cannot_make_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _competition(tmp_path, shift=1.5)

    def cannot(*_args: object) -> None:  # what make_folds says of a split it cannot make
        raise DataError("train.csv: column 'target' has 3 groups, fewer than 'folds.n_splits'")

    monkeypatch.setattr("pipeline.adversarial_validation.make_folds", cannot)
    with pytest.raises(DataError, match=r"rows outside fold 0 make folds 1..2, and .*fewer"):
        _run([str(config), "--valid-fold", "tl", "--weights", str(tmp_path / "w.csv")])
    assert not (tmp_path / "w.csv").exists() and not (tmp_path / "folds").exists()
    assert not (tmp_path / "runs").exists()


def test_a_rare_class_outside_fold_0_is_said_and_split(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _competition(tmp_path, shift=1.5)
    train = pd.read_csv(tmp_path / "comp" / "train.csv")
    train["target"] = ["yes"] * 2 + ["no"] * (len(train) - 2)  # 1 'yes' row left for 2 folds
    train.to_csv(tmp_path / "comp" / "train.csv", index=False)
    assert _run([str(config), "--valid-fold", "tl", "--weights", str(tmp_path / "w.csv")]) == 0
    assert "fewer rows than 'folds.n_splits'=2" in caplog.text
    assert pd.read_csv(tmp_path / "folds" / "tl.csv")["fold"].nunique() == 3


def test_overwrite_replaces_and_separable_sets_warn(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    config = _competition(tmp_path, shift=0.0, n_train=150, n_test=100, text=True)
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "tl.csv").write_text("old")
    assert _run([str(config), "--valid-fold", "tl", "--overwrite"]) == 0
    assert pd.read_csv(tmp_path / "folds" / "tl.csv")["fold"].nunique() == 3
    # the test-only word separates the sets: every train row gets p ~ 0, said in one warning
    assert "all but separable (top column 'review')" in caplog.text


def test_an_image_only_competition_is_refused(competition_factory) -> None:
    cfg = build_config(competition_factory("image", "binary", n_train=8, n_test=4))
    with pytest.raises(DataError, match="not images"):
        adversarial_validation(load_competition(cfg.competition), n_splits=2)


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(["--help"])
    assert "pipeline adversarial configs/exp.yaml" in capsys.readouterr().out

"""The blend stage's tuned objective: the pooled OOF by default, the folds' mean on request
('auto': under ranking metrics), the study keyed by it, its report and its refusal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline import blend
from pipeline.artifacts import read_json
from pipeline.errors import ConfigError
from pipeline.report import build_report
from tests.test_blend import _binary_runs, make_competition

N = 400


def _scaled_apart(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    """m0 orders each of the 4 folds perfectly, folds 0 and 2 on a scale 0.5 higher; m1 is
    noisier but on one scale: pooled, m1 is better; fold by fold, m0 is perfect."""
    rng = np.random.default_rng(0)
    folds = np.arange(N) % 4
    y = (rng.random(N) < 0.3).astype(np.float64)
    a = 0.3 * y + 0.1 * rng.random(N) + 0.5 * (folds % 2 == 0)
    b = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=N))))
    return _binary_runs(tmp_path, np.stack([a, b])[:, :, None], "roc_auc"), y[:, None]


def _journal_studies(folder: Path) -> dict[str, int]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}


@pytest.mark.parametrize("method", ["optuna", "hill_climb"])
def test_a_blend_tunes_the_pooled_oof_unless_told_the_folds_mean(
        tmp_path, caplog, method) -> None:
    runs, y = _scaled_apart(tmp_path)
    kw = {"method": method, "blends_dir": tmp_path / "blends", "targets": y, "n_trials": 30}
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        folds_mean = blend.run(runs, name="f", params={"objective": "auto"}, **kw)
    assert "weights tuned on the mean of the folds' roc_auc" in caplog.text
    assert read_json(folds_mean / "cv.json")["objective"] == "fold_mean"
    assert read_json(folds_mean / "weights.json")["weights"] == {"m0": 1.0, "m1": 0.0}
    page = build_report([folds_mean], tmp_path / f"{method}.html").read_text()
    assert "<th>weights tuned on</th><td>the mean of the folds&#x27; roc_auc" in page
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        pooled = blend.run(runs, name="p", **kw)  # the default
    assert "weights tuned on the roc_auc of the pooled OOF" in caplog.text
    assert read_json(pooled / "cv.json")["objective"] == "pooled"
    assert read_json(pooled / "weights.json")["weights"]["m1"] > 0.6


def test_a_pooled_study_in_the_blend_folder_is_not_resumed_under_the_folds_mean(
        tmp_path) -> None:
    """A blend tuned on the pooled OOF (every blend before the folds' mean) left its study in
    study.journal: the same blend under the folds' mean is redone, in a study of its own."""
    runs, y = _scaled_apart(tmp_path)
    kw = {"name": "s", "blends_dir": tmp_path / "blends", "targets": y}
    folder = blend.run(runs, n_trials=6, **kw)
    (pooled_study,) = _journal_studies(folder)
    assert not pooled_study.endswith("-fold-mean")
    blend.run(runs, n_trials=8, params={"objective": "fold_mean"}, **kw)
    assert _journal_studies(folder) == {pooled_study: 6, f"{pooled_study}-fold-mean": 8}
    assert read_json(folder / "cv.json")["objective"] == "fold_mean"
    blend.run(runs, n_trials=9, **kw)  # resumes its own
    assert _journal_studies(folder) == {pooled_study: 9, f"{pooled_study}-fold-mean": 8}


def test_an_older_pooled_sqlite_study_is_not_imported_under_the_folds_mean(tmp_path,
                                                                         caplog) -> None:
    from pipeline.ensemble import OptunaBlender

    runs, y = _scaled_apart(tmp_path)
    members = blend.load_members(runs)
    folder = tmp_path / "blends" / "old"
    folder.mkdir(parents=True)
    old_hash = blend.blend_hash(members, "optuna", {"n_trials": 7, "seed": 0})
    OptunaBlender(metric="roc_auc", n_trials=5, storage=f"sqlite:///{folder / 'study.db'}",
                  study_name=f"blend-{old_hash}").fit(members.oof, y)
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        blend.run(runs, name="old", blends_dir=tmp_path / "blends", targets=y, n_trials=7,
                  params={"objective": "fold_mean"})
    assert "imported" not in caplog.text  # its 5 trials were scored on the pooled OOF
    ((study, n),) = _journal_studies(folder).items()
    assert study.endswith("-fold-mean") and n == 7


def test_auto_tunes_the_pooled_oof_under_metrics_that_score_values(tmp_path) -> None:
    runs, y = make_competition(tmp_path, "binary", "log_loss", [1.2, 0.6])
    folder = blend.run(runs, method="hill_climb", blends_dir=tmp_path / "blends", targets=y,
                       params={"objective": "auto"})
    assert read_json(folder / "cv.json")["objective"] == "pooled"
    mean = blend.run(runs, method="mean", blends_dir=tmp_path / "blends", targets=y)
    assert "objective" not in read_json(mean / "cv.json")  # tunes nothing


@pytest.mark.parametrize("method", ["optuna", "hill_climb"])
def test_an_objective_that_is_none_is_refused_in_one_line(tmp_path, capsys, method) -> None:
    from pipeline import cli

    runs, _ = _scaled_apart(tmp_path)
    blends = tmp_path / "blends"
    code = cli.main(["blend", "--runs", *map(str, runs), "--method", method,
                     "--blends-dir", str(blends), "--param", "objective=folds"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "'objective' parameter" in err and "auto, fold_mean, pooled. Got 'folds'." in err
    assert not blends.exists()
    with pytest.raises(ConfigError, match="must be one of auto, fold_mean, pooled"):
        blend.run(runs, method=method, blends_dir=blends, params={"objective": 1})

"""``pipeline sweep`` (pipeline/sweep.py, pipeline/sweep_space.py): a grid or an Optuna study
over config keys, every variant a full k-fold run and blend member, one table of them; a
space with a value the config refuses fails before anything trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipeline import cli
from pipeline.blend import load_members
from pipeline.errors import ConfigError
from pipeline.runs import read_scores
from pipeline.sweep_space import load_space


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sweep(tmp_path: Path, config: Path, space: dict[str, Any], *extra: str) -> pd.DataFrame:
    space_file = _write(tmp_path / "space.yaml", space)
    code = cli.main(["sweep", str(config), "--space", str(space_file), "--sweeps-dir",
                     str(tmp_path / "sweeps"), *extra])
    assert code == 0
    return pd.read_csv(tmp_path / "sweeps" / "space" / "results.csv")


def test_a_grid_sweep_trains_every_variant_and_tabulates_them(
        competition_factory, tmp_path, one_thread, capsys):
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=2)
    config = _write(tmp_path / "base.yaml", data)
    space = {"space": {"train.optimizer.lr": [1.0e-5, 3.0e-2],
                       "model.encoders.0.params.hidden": [[8], [16]]}}
    frame = _sweep(tmp_path, config, space)
    assert len(frame) == 4 and (frame["state"] == "complete").all()
    assert frame["folds"].tolist() == ["2/2"] * 4
    for _, row in frame.iterrows():  # each row is its run folder's own scores
        scores = read_scores(Path(row["run_dir"]))["scores"]
        assert row["cv"] == pytest.approx(scores["oof"])
        assert row["cv_last_epoch"] == pytest.approx(scores["oof_last_epoch"])
        snapshot = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())
        lr = snapshot["train"]["optimizer"]["lr"]
        hidden = snapshot["model"]["encoders"][0]["params"]["hidden"]
        assert row["changes"] == f"train.optimizer.lr={lr}; model.encoders.0.params.hidden={hidden}"
        assert row["seconds"] > 0
    assert frame["cv"].is_monotonic_decreasing  # roc_auc: best first
    assert frame["variant"].str.startswith("tabular-binary-space-").all()
    # every variant is a blend member
    members = (tmp_path / "sweeps" / "space" / "members.txt").read_text().split()
    assert sorted(members) == sorted(frame["run_dir"])
    assert len(load_members(members).names) == 4
    markdown = (tmp_path / "sweeps" / "space" / "results.md").read_text()
    assert markdown.count("| tabular-binary-space-") == 4 and "train.optimizer.lr=" in markdown
    first = frame.iloc[0]  # scores to 5 decimals, seconds to 1 (the CSV keeps milliseconds)
    assert f"| {first['cv']:.5f} | {first['cv_last_epoch']:.5f} | 2/2 | " \
           f"{first['seconds']:.1f} |" in markdown
    assert "tabular-binary-space-" in capsys.readouterr().out
    # a rerun trains nothing again and gives the same table
    stamps = {p: p.stat().st_mtime_ns for p in Path(data["output_dir"]).rglob("metrics.json")}
    again = _sweep(tmp_path, config, space)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), frame.drop(columns="seconds"))


def test_an_optuna_sweep_prunes_hopeless_variants_after_their_first_fold(
        competition_factory, tmp_path):
    """Ridge with alpha 1e6 predicts about the mean: its first fold's RMSE is far worse than
    the finished trials' (alpha 0.01), so the median pruner stops it there. Points drawn
    again reuse their run folder (one row each); a rerun with more trials resumes the study
    from its journal."""
    import optuna

    data = competition_factory("tabular", "regression", n_train=60)
    data["folds"] = {"scheme": "kfold", "n_splits": 3, "seed": 0}
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.Ridge"}]}
    config = _write(tmp_path / "base.yaml", data)
    # this seed draws 0.01, 0.01, 0.01, 1e6, 0.01, 0.01
    space = {"method": "optuna", "n_trials": 6, "sampler": "random", "seed": 2,
             "startup_trials": 1, "space": {"model.encoders.0.params.alpha": [0.01, 1.0e6]}}
    frame = _sweep(tmp_path, config, space)
    assert frame["changes"].tolist() == ["model.encoders.0.params.alpha=0.01",
                                         "model.encoders.0.params.alpha=1000000.0"]
    assert frame["state"].tolist() == ["complete", "pruned"]
    assert frame["folds"].tolist() == ["3/3", "1/3"]
    good, bad = (Path(d) for d in frame["run_dir"])
    assert (good / "oof.parquet").is_file() and not (bad / "oof.parquet").exists()
    assert frame["cv"][0] == pytest.approx(read_scores(good)["scores"]["oof"])
    assert frame["cv"][1] > 2 * frame["cv"][0]  # the pruned row: its first fold's RMSE
    members = (tmp_path / "sweeps" / "space" / "members.txt").read_text().split()
    assert members == [str(good)]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "sweeps" / "space" / "study.journal")))
    study = optuna.load_study(study_name="space", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") == 1 and states.count("COMPLETE") == 5
    _sweep(tmp_path, config, space, "--trials", "8")
    assert len(optuna.load_study(study_name="space", storage=storage).trials) == 8


@pytest.mark.parametrize(("space", "message"), [
    ({"space": {"train.optimzer.lr": [0.1]}}, r"'train.optimzer': unknown key.*optimizer"),
    ({"space": {"train.epochs": [2, 0]}}, r"'train.epochs'.*Got 0"),
    ({"space": {"train.epochs": {"int": [1, 3]}}, "method": "grid"},
     r"grid sweep needs a list.*train.epochs"),
    ({"space": {"train.optimizer.lr": {"log_uniform": [0, 1]}}},
     r"space.train.optimizer.lr.*low > 0"),
    ({"space": {"train.optimizer.lr": {"normal": [0, 1]}}}, r"'space.train.optimizer.lr'.*Got"),
])
def test_a_bad_space_is_refused_before_anything_trains(competition_factory, tmp_path, space,
                                                        message, capsys):
    data = competition_factory("tabular", "binary")
    config = _write(tmp_path / "base.yaml", data)
    space_file = _write(tmp_path / "space.yaml", space)
    with pytest.raises(ConfigError, match=message):
        from pipeline import sweep

        sweep.run(data, load_space(space_file), tmp_path / "sweeps")
    assert cli.main(["sweep", str(config), "--space", str(space_file)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not Path(data["output_dir"]).exists()


def test_the_shipped_example_space_fits_the_tabular_demo_config():
    from pipeline.sweep_space import check_space

    configs = Path(__file__).resolve().parents[1] / "configs"
    space = load_space(configs / "sweep_example.yaml")
    assert space.resolved_method == "optuna"
    assert {p.key for p in space.params} == {"train.optimizer.lr", "train.adversarial",
                                             "model.head.dropout", "train.epochs"}
    check_space(yaml.safe_load((configs / "demo_tabular.yaml").read_text()), space)


def test_a_bad_space_file_names_each_key_and_the_closest_known_one(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("methd: grid\nn_trials: many\nspace: {train.epochs: [1, 2]}\n")
    with pytest.raises(ConfigError) as err:
        load_space(space)
    lines = str(err.value).splitlines()
    assert lines[0] == f"invalid space file {space}:"
    assert any(line.startswith("  'methd': unknown key. Did you mean 'method'? Known here: ")
               for line in lines)
    assert any(line.startswith("  'n_trials': ") and "Got 'many'." in line for line in lines)


def test_a_variant_run_under_another_base_config_names_the_sweeps_options(
        competition_factory, tmp_path, capsys):
    """A sweep rerun after its base config changed was refused with the train stage's
    advice, '--new-version', which `pipeline sweep` does not take (an argparse error)."""
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    config = _write(tmp_path / "base.yaml", data)
    space = {"space": {"model.encoders.0.params.C": [0.1]}}
    _sweep(tmp_path, config, space)
    space_file = tmp_path / "space.yaml"
    args = ["sweep", str(config), "--space", str(space_file), "--sweeps-dir",
            str(tmp_path / "sweeps"), "--set", "folds.n_splits=3"]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "folds.n_splits: 2 -> 3" in err and "--overwrite" in err and "--name" in err, err
    assert "--new-version" not in err, err
    assert cli.main([*args, "--overwrite"]) == 0

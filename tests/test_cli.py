"""The ``pipeline`` command (pipeline/cli.py): every subcommand's help, user errors as one
'error:' line with exit status 2, ``pipeline pairs`` and ``pipeline diversity``."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import train
from pipeline.cli import build_parser, main
from pipeline.config import build_config, load_config


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


# the subcommands that read an experiment config
CONFIG_COMMANDS = ["folds", "train", "predict", "pseudo", "run", "submit"]


def _write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def test_subcommands() -> None:
    assert set(_subcommands()) >= {*CONFIG_COMMANDS, "blend", "diversity", "pairs", "demo",
                                   "adversarial", "leaderboard", "lb", "report"}


def test_adversarial_through_the_command_line(competition_factory, tmp_path, capsys) -> None:
    from threadpoolctl import threadpool_limits

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(competition_factory("tabular", "binary")))
    with threadpool_limits(1):  # OpenMP threads on a busy 2-core machine: 10x slower
        assert main(["adversarial", str(config)]) == 0
    assert "AUC" in capsys.readouterr().out
    code = main(["adversarial", str(config), "--valid-share", "1.5", "--valid-fold", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "valid-share" in err


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_exits_0(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: pipeline {command}")


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_missing_config_is_one_error_line_and_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([command]) == 2
    assert "no config given" in _one_error_line(capsys)
    missing = tmp_path / "missing.yaml"
    assert main([command, str(missing)]) == 2
    assert str(missing) in _one_error_line(capsys)
    assert main([command, "--config", str(missing)]) == 2
    assert str(missing) in _one_error_line(capsys)


def test_cli_reports_config_errors_with_exit_2(competition_factory, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_yaml(tmp_path / "exp.yaml", competition_factory("tabular", "binary"))
    assert main(["folds", str(path), "--set", "train.epocs=3"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'train.epocs'" in err and "'epochs'" in err
    missing = tmp_path / "missing.yaml"
    assert main(["folds", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_a_refused_command_leaves_no_run_folder_and_a_run_keeps_its_log(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal wrote an empty run folder holding an empty log.txt (the log is opened when
    the config loads). Now the log and the folders made for it go with the refusal; a run
    folder that holds a run, or a log of an earlier command, keeps it, the refusal its last
    line."""
    data = competition_factory("tabular", "binary")
    data["output_dir"] = str(tmp_path / "fresh" / "runs")
    path = _write_yaml(tmp_path / "exp.yaml", data)
    missing = ["--set", f"competition.dir={tmp_path / 'nowhere'}"]
    assert main(["train", str(path), *missing]) == 2
    assert "not found" in _one_error_line(capsys)
    assert not (tmp_path / "fresh").exists()  # nor the output folder it would have made

    run_dir = tmp_path / "fresh" / "runs" / data["name"]
    run_dir.mkdir(parents=True)
    (run_dir / "log.txt").write_text("an earlier command\n")
    assert main(["train", str(path), *missing]) == 2
    assert "not found" in _one_error_line(capsys)  # the terminal's one line, as before
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert lines[0] == "an earlier command" and "error: competition folder" in lines[-1]

    (run_dir / "log.txt").unlink()
    (run_dir / "config.yaml").write_text("a run's file\n")
    assert main(["train", str(path), *missing]) == 2
    assert "not found" in _one_error_line(capsys)  # the terminal's one line, as before
    assert "error: competition folder" in (run_dir / "log.txt").read_text()
    assert (run_dir / "config.yaml").read_text() == "a run's file\n"


def test_a_bad_scikit_learn_parameter_value_is_one_line(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A value scikit-learn refuses (max_iter: -1) raised its InvalidParameterError from the
    first fold's fit: a traceback, exit 1, the run folder left behind."""
    data = competition_factory("tabular", "binary")
    data["output_dir"] = str(tmp_path / "fresh" / "runs")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.ensemble.HistGradientBoosting"
                                           "Classifier", "params": {"max_iter": -1}}]}
    path = _write_yaml(tmp_path / "exp.yaml", data)
    assert main(["train", str(path)]) == 2
    line = _one_error_line(capsys)
    assert "bad 'params'" in line and "'max_iter'" in line and "Got -1" in line, line
    assert not (tmp_path / "fresh").exists()


def test_a_model_refused_after_the_run_folder_is_made_leaves_no_run_folder(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing weights file is refused once the run folder holds its config snapshot and a
    fold's preprocessing: those files were left behind, and the fold folder's lock, where a
    refusal writes nothing."""
    data = competition_factory("image", "multiclass")
    data["output_dir"] = str(tmp_path / "fresh" / "runs")
    path = _write_yaml(tmp_path / "exp.yaml", data)
    wrong = f"model.encoders.0.pretrained={tmp_path / 'gone.pth'}"
    assert main(["train", str(path), "--set", wrong]) == 2
    assert "weights file" in _one_error_line(capsys)
    assert not (tmp_path / "fresh").exists()
    # the same under a relative output_dir (the default 'runs'): the handler's path is
    # absolute, the folders made for it were relative, and the run folder was left behind
    monkeypatch.chdir(tmp_path)
    relative = _write_yaml(tmp_path / "rel.yaml", {**data, "output_dir": "fresh/runs"})
    assert main(["train", str(relative), "--set", wrong]) == 2
    assert "weights file" in _one_error_line(capsys)
    assert not (tmp_path / "fresh").exists()
    # a fold that trained is kept: the refusal is its log's last line
    run_dir = tmp_path / "fresh" / "runs" / data["name"]
    assert main(["train", str(path), "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "--set", wrong]) == 2
    assert (run_dir / "seed0" / "fold0" / "metrics.json").is_file()


def test_pairs_writes_one_config_per_pair(competition_factory, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = competition_factory("image", "multiclass")
    data["model"]["encoders"] = [{"name": "timm:test_resnet"}, {"name": "timm:test_efficientnet"},
                                 {"name": "timm:test_convnext"}]
    path = _write_yaml(tmp_path / "exp.yaml", data)
    assert main(["pairs", str(path), "--out", str(tmp_path / "pairs")]) == 0
    written = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert [p.name for p in written] == [
        "image-multiclass--test_resnet--test_efficientnet.yaml",
        "image-multiclass--test_resnet--test_convnext.yaml",
        "image-multiclass--test_efficientnet--test_convnext.yaml",
    ]
    for p in written:
        cfg = load_config(p)  # each pair is a valid experiment of its own
        assert p.parent == tmp_path / "pairs" and f"{cfg.name}.yaml" == p.name
        assert len(cfg.model.encoders) == 2
    data["model"]["encoders"] = data["model"]["encoders"][:2]
    _write_yaml(path, data)
    assert main(["pairs", str(path)]) == 2
    assert "3 or more encoders" in _one_error_line(capsys)


def test_diversity_of_two_finished_runs(competition_factory,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = competition_factory("tabular", "binary")
    runs = {}
    for name, estimator, params in (
        ("logreg", "sklearn.linear_model.LogisticRegression", {}),
        ("tree", "sklearn.tree.DecisionTreeClassifier", {"max_depth": 2}),
    ):
        run = copy.deepcopy(data)
        run["name"] = name
        run["model"] = {"encoders": [{"name": f"sklearn:{estimator}", "params": params}]}
        cfg = build_config(run)
        runs[name] = (train.run(cfg), cfg.run_dir)
    assert main(["diversity", "--runs", *(str(d) for _, d in runs.values())]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "member scores (roc_auc):"
    for line, (name, (score, _)) in zip(lines[1:3], runs.items(), strict=True):
        member, value = line.split()
        assert member == name and float(value) == pytest.approx(score, abs=1e-6)
    assert lines[3] == "OOF correlation:"
    oof = [pd.read_parquet(d / "oof.parquet")["target"] for _, d in runs.values()]
    corr = np.corrcoef(oof[0], oof[1])[0, 1]
    row = lines[5].split()
    assert row[0] == "logreg" and row[1] == "1.000" and row[2] == f"{corr:.3f}"
    assert main(["diversity", "--runs", str(runs["tree"][1])]) == 2
    assert "at least 2 runs" in _one_error_line(capsys)


# --- one line, exit 2, for runs and blends that are not there (issue 15 item 3) ---------------


@pytest.mark.parametrize("argv", [
    ["submit", "--run", "{missing}"],
    ["submit", "--blend", "{missing}"],
    ["blend", "--runs", "{missing}", "{other}", "--method", "mean"],
    ["diversity", "--runs", "{missing}", "{other}"],
])
def test_a_run_or_blend_that_does_not_exist_is_one_error_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """These were tracebacks (FileNotFoundError); now one line naming run.json, exit 2."""
    other = tmp_path / "other"
    other.mkdir()
    args = [a.format(missing=tmp_path / "nope", other=other) for a in argv]
    assert main([*args, "--blends-dir", str(tmp_path / "b")] if args[0] == "blend"
                else args) == 2
    line = _one_error_line(capsys)
    assert "run.json not found" in line and "not a finished run or blend" in line


def test_a_cut_off_prediction_file_is_one_error_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated test.parquet (a copy cut off, a full disk) reads as one line, exit 2."""
    from pipeline.artifacts import RunMeta, write_meta

    run = tmp_path / "run"
    write_meta(run, RunMeta(name="r", task="binary", metric="roc_auc", id_column="id",
                            target_columns=["t"], classes=[0, 1], pred_columns=["t"],
                            folds_file="f.csv", competition_dir=str(tmp_path),
                            train_file="train.csv", config_hash="x"))
    pd.DataFrame({"id": [1], "fold": [0], "t": [0.5]}).to_parquet(run / "oof.parquet")
    pd.DataFrame({"id": [1], "t": [0.5]}).to_parquet(run / "test.parquet")
    data = (run / "test.parquet").read_bytes()
    (run / "test.parquet").write_bytes(data[: len(data) // 2])
    assert main(["submit", "--run", str(run), "--submissions-dir", str(tmp_path / "s")]) == 2
    line = _one_error_line(capsys)
    assert "test.parquet could not be read" in line and "rerun" in line


def test_train_prints_its_cv_and_logs_name_the_metric(competition_factory, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15 item 8: train printed its result only to the log (stderr); the epoch line
    did not name the metric and marked the best epoch with an unexplained '*'; folds were
    '1/3' in logs but fold0 on disk; no fold mean +- std."""
    import logging

    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=2)
    path = _write_yaml(tmp_path / "exp.yaml", data)
    with caplog.at_level(logging.INFO):
        assert main(["--quiet", "train", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{data['name']}: CV roc_auc = ")
    assert f"{data['name']} seed0/fold1 (of 2) epoch 1/2: train_loss " in caplog.text
    assert "valid roc_auc " in caplog.text and "(best so far)" in caplog.text
    assert " +- " in caplog.text and "folds " in caplog.text


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.engine.plan import show_progress

    monkeypatch.setenv("PIPELINE_PROGRESS", "1")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert not show_progress()
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert show_progress()
    monkeypatch.setenv("PIPELINE_PROGRESS", "0")
    assert not show_progress()


def test_submit_refuses_a_config_together_with_a_run(competition_factory, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15 item 7: `submit CONFIG --blend X` silently ignored the config."""
    path = _write_yaml(tmp_path / "exp.yaml", competition_factory("tabular", "binary"))
    assert main(["submit", str(path), "--run", str(tmp_path)]) == 2
    assert "not both" in _one_error_line(capsys)


def test_submit_of_a_config_refuses_its_run_folder_of_another_config(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config edited (a training key, or a network's TTA) and submitted before train or
    predict wrote the old run's submission under the new config's name, silently."""
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=1)
    path = _write_yaml(tmp_path / "exp.yaml", data)
    assert main(["--quiet", "train", str(path)]) == 0
    subs = ["--submissions-dir", str(tmp_path / "subs")]
    assert main(["submit", str(path), *subs]) == 0
    first = (tmp_path / "subs" / f"{data['name']}.csv").read_text()
    capsys.readouterr()
    for change, message in ((["--set", "train.optimizer.lr=0.01"],
                             "holds a run of another config (train.optimizer.lr: "),
                            (["--set", "predict.tta=[noise]"], "run pipeline predict")):
        assert main(["submit", str(path), *change, *subs]) == 2
        assert message in _one_error_line(capsys)
    assert main(["--quiet", "predict", str(path), "--set", "predict.tta=[noise]"]) == 0
    # submitted without the --set it was predicted under: the refusal names the difference
    # (it said 'another predict section', and to predict again, undoing the TTA)
    assert main(["submit", str(path), *subs]) == 2
    assert ("fold0 was predicted under another 'predict' section (predict.tta: [\"noise\"] -> "
            "[]: predicted -> this config): submit with the section it was predicted under, "
            "or run pipeline predict") in _one_error_line(capsys)
    assert main(["submit", str(path), "--set", "predict.tta=[noise]", *subs]) == 0
    assert (tmp_path / "subs" / f"{data['name']}.csv").read_text() != first
    # the train file relabelled since the run trained: train first
    train_csv = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(train_csv)
    target = data["competition"]["target_columns"][0]
    frame[target] = frame[target].iloc[::-1].to_numpy()
    frame.to_csv(train_csv, index=False)
    assert main(["submit", str(path), "--set", "predict.tta=[noise]", *subs]) == 2
    assert "train.csv changed since" in _one_error_line(capsys)
    # a run trained with --new-version is named in the refusal of the changed config
    changed = ["--set", "train.optimizer.lr=0.01"]
    assert main(["--quiet", "train", str(path), *changed, "--new-version"]) == 0
    capsys.readouterr()
    assert main(["submit", str(path), *changed, *subs]) == 2
    assert f"{data['name']}-v2: submit --run it" in _one_error_line(capsys)


def test_new_version_runs_a_changed_config_beside_the_old_one(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15 item 6: one flag instead of a hand-edited name for each change."""
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    path = _write_yaml(tmp_path / "exp.yaml", data)
    assert main(["train", str(path)]) == 0
    changed = ["--set", "model.encoders.0.params.C=0.1"]
    assert main(["train", str(path), *changed]) == 2  # refused, naming the key
    assert "model.encoders.0.params" in _one_error_line(capsys)
    assert main(["train", str(path), *changed, "--new-version"]) == 0
    out = capsys.readouterr()
    assert f"runs as {data['name']}-v2" in out.err
    assert out.out.startswith(f"{data['name']}-v2: CV ")
    assert main(["train", str(path), *changed, "--overwrite"]) == 0  # in place, retrained


def test_version_and_examples_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15 item 9: --version, and examples in --help."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("pipeline ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "pipeline run configs/exp.yaml" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "example: pipeline train" in capsys.readouterr().out


def test_an_unreadable_image_in_a_loader_worker_is_one_error_line(
    competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # torch re-raises a worker's error with the worker's traceback as its message
    data = competition_factory("image", "binary")
    data["train"].update(epochs=1, loader="stream", num_workers=1)
    broken = Path(data["competition"]["dir"]) / "images" / "0003.png"
    broken.write_bytes(b"not a png")
    path = _write_yaml(tmp_path / "exp.yaml", data)
    assert main(["train", str(path)]) == 2
    line = _one_error_line(capsys)
    assert line == f"error: {broken}: could not be read as an image (cannot identify image " \
                   f"file '{broken}')"

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
    assert set(_subcommands()) >= {*CONFIG_COMMANDS, "blend", "diversity", "pairs", "demo"}


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

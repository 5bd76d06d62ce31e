"""Bad inputs found by fuzzing ``pipeline run CONFIG`` on a tiny competition: each is refused
with exit status 2 and an error naming the key or file, before anything is written (no run
folder, no folds file, no submission), where each was a traceback or a refusal that came
after the folds file and the run folder had been written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main

SKLEARN = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
RIDGE = {"encoders": [{"name": "sklearn:sklearn.linear_model.Ridge"}]}


def _inf_target(data: dict[str, Any], comp: Path) -> None:
    """An 'inf' cell (a division by zero upstream): 'Input y contains infinity' from the
    first fold's fit, the folds file and run folder left behind."""
    data["model"] = RIDGE
    train = pd.read_csv(comp / "train.csv")
    train.loc[3, "y"] = np.inf
    train.to_csv(comp / "train.csv", index=False)


def _twice_named(data: dict[str, Any], comp: Path) -> None:
    """pandas renamed the second 'x1' to 'x1.1': refused as a train column missing from
    test, a name neither file has."""
    lines = (comp / "train.csv").read_text().splitlines()
    lines[0] = lines[0].replace("x2", "x1")
    (comp / "train.csv").write_text("\n".join(lines) + "\n")


def _header_only(name: str) -> Callable[[dict[str, Any], Path], None]:
    def mutate(data: dict[str, Any], comp: Path) -> None:
        header = (comp / name).read_text().splitlines()[0]
        (comp / name).write_text(header + "\n")
    return mutate


def _set(path: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def mutate(data: dict[str, Any], comp: Path) -> None:
        *sections, key = path.split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return mutate


CASES = [
    # (task, mutation, what the error says)
    ("regression", _inf_target, "target column 'y' has 1 infinite value(s) (lines [5])"),
    # the id column as the target: AttributeError reading the train file's labels
    ("binary", _set("competition.id_column", "target"),
     "'target_columns' ['target'] also named by 'id_column'"),
    # the target as a feature was refused as 'not found' in test.csv, saying nothing of why
    ("binary", _set("competition.feature_columns", ["x1", "target"]),
     "'target_columns' ['target'] also named by 'feature_columns'"),
    # UTF-16 without its byte-order mark: UnicodeError (not a UnicodeDecodeError), a traceback
    ("binary", _set("competition.encoding", "utf-16"), "could not be read as utf-16 text"),
    # numpy's seed range: 'Seed must be between 0 and 2**32 - 1' from the folds' splitter
    ("binary", _set("folds.seed", -1), "'folds.seed'"),
    # an estimator's random_state refused it, naming LogisticRegression, after the folds
    ("binary", _set("train.seeds", [-1]), "seeds must be in [0, 2**32)"),
    # the folds file was written outside folds_dir
    ("binary", _set("folds.name", "../elsewhere"), "'folds.name'"),
    # pandas: 'only single character unicode strings can be converted to Py_UCS4'
    ("binary", _set("competition.sep", ""), "'competition.sep'"),
    ("binary", _twice_named, "its header names column(s) ['x1'] more than once"),
    ("binary", _header_only("test.csv"), "test.csv: no rows under the header"),
    ("binary", _header_only("sample_submission.csv"), "sample_submission.csv: no rows under"),
]


@pytest.mark.parametrize(("task", "mutate", "said"), CASES,
                         ids=["inf-target", "id-is-target", "target-as-feature", "utf16-no-bom",
                              "folds-seed", "train-seeds", "folds-name", "empty-sep",
                              "column-named-twice", "header-only-test", "header-only-sample"])
def test_a_bad_input_is_refused_before_anything_is_written(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str,
        mutate: Callable[[dict[str, Any], Path], None], said: str) -> None:
    data = competition_factory("tabular", task)
    data["model"] = SKLEARN
    mutate(data, Path(data["competition"]["dir"]))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and "Traceback" not in err, err
    for folder in ("runs", "folds", "submissions", "elsewhere.csv"):
        assert not (tmp_path / folder).exists(), folder


def _trained_config(competition_factory, tmp_path: Path, command: str = "train") -> Path:
    data = competition_factory("tabular", "binary")
    data["model"] = SKLEARN
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main([command, str(config)]) == 0
    return config


@pytest.mark.parametrize(("damage", "said"), [
    ("", "could not be read as CSV (No columns to parse from file)"),  # was EmptyDataError
    ("{", "could not be read as JSON"),  # the folds file's record: was JSONDecodeError
])
def test_a_damaged_folds_file_or_record_is_one_line(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str,
        said: str) -> None:
    config = _trained_config(competition_factory, tmp_path, "folds")
    folds_file = next((tmp_path / "folds").glob("*.csv"))
    (folds_file if damage == "" else folds_file.with_suffix(".json")).write_text(damage)
    capsys.readouterr()
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and f"{folds_file.stem}" in err, err
    assert not (tmp_path / "submissions").exists()


def test_a_damaged_run_json_is_written_again_by_train_and_one_line_for_submit(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cut-off run.json was a JSONDecodeError traceback from both: train now writes it
    again (each fold's own record says whether it trains again), submit says what is wrong."""
    config = _trained_config(competition_factory, tmp_path)
    meta = tmp_path / "runs" / "tabular-binary" / "run.json"
    meta.write_text("{")
    capsys.readouterr()
    assert main(["submit", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{meta} could not be read as JSON" in err, err
    assert not (tmp_path / "submissions").exists()
    assert main(["run", str(config)]) == 0
    assert (tmp_path / "submissions" / "tabular-binary.csv").is_file()
    assert '"config_hash"' in meta.read_text()


def test_predict_before_train_writes_no_folds_file(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal (no fold trained) came after the folds file had been made."""
    data = competition_factory("tabular", "binary")
    data["model"] = SKLEARN
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["predict", str(config)]) == 2
    assert "run the train stage first" in capsys.readouterr().err
    assert not (tmp_path / "folds").exists() and not (tmp_path / "runs").exists()


def test_a_submission_or_table_path_it_cannot_write_is_one_line(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """submit --name '../x' wrote the submission outside the submissions folder ('a/b' in a
    folder of its own); a --submissions-dir under a file (FileExistsError) and a
    leaderboard --csv that is a folder (IsADirectoryError) were tracebacks."""
    _trained_config(competition_factory, tmp_path)
    run = str(tmp_path / "runs" / "tabular-binary")
    subs = ["--submissions-dir", str(tmp_path / "submissions")]
    blocker = tmp_path / "a_file"
    blocker.write_text("x\n")
    capsys.readouterr()
    for argv, said in (
            (["submit", "--run", run, "--name", "../evil", *subs],
             "--name '../evil' must be a plain"),
            (["submit", "--run", run, "--name", "a/b", *subs], "--name 'a/b' must be a plain name"),
            (["submit", "--run", run, "--submissions-dir", str(blocker / "subs")],
             f"{blocker} is a file, not a folder"),
            (["leaderboard", "--runs-dir", str(tmp_path / "runs"), "--csv", str(tmp_path)],
             f"cannot write {tmp_path}: it is a folder")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "evil.csv").exists() and not (tmp_path / "submissions").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(("lr", "said"), [
    # NaN weights: a metric's 'Input contains NaN' traceback (ROC AUC), or argmax's class 0
    # and 'OOF predictions miss rows: folds incomplete' (accuracy)
    (1e30, "training diverged. Lower the learning rate ('train.optimizer.lr', 1e+30)"),
    (float("inf"), "'train.optimizer.lr'"),  # refused at load: it trained NaN weights
])
def test_a_network_that_diverges_is_one_line_naming_the_learning_rate(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread,
        lr: float, said: str) -> None:
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=1, optimizer={"name": "adamw", "lr": lr})
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "submissions").exists()


def test_a_pseudo_round_named_as_its_source_is_refused_and_keeps_the_source(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """A pseudo section added to a config without a new 'name' was refused as another
    config of the run folder, advising --overwrite; --overwrite then deleted the source run
    and failed with 'has no per-fold test predictions (a blend?)'."""
    data = competition_factory("tabular", "binary")
    data["train"]["epochs"] = 1
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config)]) == 0
    source = tmp_path / "runs" / data["name"]
    data["pseudo"] = {"source": str(source)}
    config.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["run", str(config), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is this config's own run folder" in err and "another 'name'" in err, err
    assert (source / "test_folds.parquet").is_file() and (source / "oof.parquet").is_file()


@pytest.mark.parametrize(("change", "said"), [
    # NaN weights were published as the encoder (exit 0), and each run that named it
    # diverged, blaming its own learning rate
    ({"lr": 1e30}, "pretraining diverged: the loss of epoch 1 is nan"),
    ({"pretrained_dir": "a_file"}, "'pretrained_dir'"),  # NotADirectoryError, a traceback
])
def test_a_pretraining_that_cannot_finish_is_one_line_and_leaves_no_folder(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread,
        change: dict[str, Any], said: str) -> None:
    data = competition_factory("tabular", "binary")
    (tmp_path / "a_file").write_text("x\n")
    config = {"name": "dae", "competition": data["competition"], "seed": 0,
              "objective": {"kind": "dae", "hidden": [8], "epochs": 1, "batch_size": 16,
                            "lr": change.get("lr", 1e-3)},
              "pretrained_dir": str(tmp_path / change.get("pretrained_dir", "pretrained"))}
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["pretrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "pretrained").exists()


def test_a_fold_whose_training_rows_hold_one_class_is_one_line_for_scikit_learn(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One 'yes' row: the fold validating it trains on 'no' rows alone, and scikit-learn's
    'needs samples of at least 2 classes' was a traceback with the run folder left."""
    data = competition_factory("tabular", "binary")
    data["model"] = SKLEARN
    train_path = Path(data["competition"]["dir"]) / "train.csv"
    train = pd.read_csv(train_path)
    train["target"] = ["yes"] + ["no"] * (len(train) - 1)
    train.to_csv(train_path, index=False)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "its training rows hold a single class ('no')" in err and "'folds.n_splits'" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "submissions").exists()


@pytest.mark.parametrize("header_too", [True, False], ids=["every-line", "rows-only"])
def test_a_trailing_separator_on_each_line_is_read_as_the_header_says(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        header_too: bool) -> None:
    """'a,b,' as spreadsheets export: after every line, train's empty 'Unnamed: 5' (test's
    'Unnamed: 4') was refused as a train column missing from test; after the rows alone,
    pandas read each row's first field as the index, every cell shifted: a traceback."""
    data = competition_factory("tabular", "binary")
    data["model"] = SKLEARN
    comp = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        lines = (comp / name).read_text().splitlines()
        (comp / name).write_text("\n".join(
            line + ("," if header_too or i else "") for i, line in enumerate(lines)) + "\n")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config)]) == 0
    submission = pd.read_csv(tmp_path / "submissions" / "tabular-binary.csv")
    assert list(submission.columns) == ["id", "target"] and submission["id"].str[0].eq("r").all()
    if header_too:
        return
    # a value past the header on every row: refused, not shifted
    lines = (comp / "train.csv").read_text().splitlines()
    (comp / "train.csv").write_text("\n".join([lines[0]] + [f"{x}v" for x in lines[1:]]) + "\n")
    capsys.readouterr()
    assert main(["run", str(config)]) == 2
    assert "line 2 has 6 fields, more than the header's 5" in capsys.readouterr().err


def test_submit_of_a_network_run_with_a_fold_folder_deleted_says_to_train(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        one_thread) -> None:
    """It said 'run pipeline predict on this config first', and predict then said to run
    the train stage: two commands to learn what one line can say."""
    import shutil

    data = competition_factory("tabular", "binary")
    data["train"]["epochs"] = 1
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config)]) == 0
    fold = tmp_path / "runs" / data["name"] / "seed0" / "fold1"
    shutil.rmtree(fold)
    capsys.readouterr()
    assert main(["submit", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{fold} holds no trained fold: run the train stage first" in err, err
    assert not (tmp_path / "submissions").exists()


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_an_adversarial_weights_path_it_cannot_write_is_refused_before_the_report(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        where: str) -> None:
    """--weights under a file was a FileExistsError traceback, and a folder (with
    --overwrite) failed, each after the report's scores.csv had been written."""
    data = competition_factory("tabular", "binary")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    weights = config / "w.csv" if where == "under-a-file" else tmp_path
    assert main(["adversarial", str(config), "--weights", str(weights), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--weights" in err, err
    assert not (tmp_path / "runs").exists()

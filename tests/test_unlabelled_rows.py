"""Train rows with an empty target ('competition.unlabelled_train_rows'): refused by default,
left out of folds, training, OOF, scores, blends and reports ('drop'), and given to the
semi-supervised parts as unlabelled rows ('unlabelled')."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score

from pipeline import blend, submit
from pipeline.artifacts import read_json, read_meta
from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.pretraining import (
    PretrainConfig,
    build_pretrain_config,
    export_features,
    unlabelled_rows,
)
from pipeline.pretraining import run as pretrain_run
from pipeline.report._source import _targets
from pipeline.run_targets import targets_for_meta
from tests.test_competition import cli_config, expect_failure, run_cli

EMPTY = [1, 4, 9, 20, 33]  # row positions of train.csv left without a target


def _blank(cfg: dict[str, Any], columns: list[str], rows: list[int] = EMPTY,
           cell: str = "") -> Path:
    """Empty ``columns`` of train.csv at ``rows`` (file lines: row + 2), written as ``cell``;
    the file's path."""
    path = Path(cfg["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[rows, columns] = cell
    frame.to_csv(path, index=False)
    return path


def _cli(args: list[str]) -> int:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        return main(args)
    finally:  # the CLI adds a FileHandler for the run's log.txt to the root logger
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)


def test_default_refuses_the_rows_naming_the_option(competition_factory, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "multiclass")
    path = _blank(cfg, ["target"])
    expect_failure(cfg, tmp_path, capsys, str(path), "5 of 48 row(s) have an empty target",
                   "lines [3, 6, 11]", "'competition.unlabelled_train_rows'", "'drop'",
                   "'unlabelled'")


def test_a_bad_value_is_a_one_line_config_error(competition_factory, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["unlabelled_train_rows"] = "skip"
    with pytest.raises(ConfigError) as err:
        build_config(cfg)
    line = next(x for x in str(err.value).splitlines() if "unlabelled_train_rows" in x)
    assert "'error', 'drop' or 'unlabelled'" in line and "'skip'" in line, line
    code, err_text, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "Traceback" not in err_text and "'skip'" in err_text


def test_drop_leaves_the_rows_out_of_folds_oof_scores_blend_report_and_submission(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = cli_config(competition_factory, "tabular", "multiclass")
    cfg["competition"]["unlabelled_train_rows"] = "drop"
    path = _blank(cfg, ["target"])
    train = pd.read_csv(path)
    labelled = train.drop(index=EMPTY)
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "5 train row(s) with an empty target left out" in caplog.text
    assert "43 labelled rows remain" in caplog.text

    comp = build_config(cfg).competition
    loaded = load_competition(comp)
    assert len(loaded.train) == 43 and loaded.unlabelled is None
    # labels 0/1/2 of a column with gaps are integers, not floats 0.0/1.0/2.0
    assert loaded.classes == [0, 1, 2] and all(type(c) is int for c in loaded.classes)

    folds = pd.read_csv(next(Path(cfg["folds_dir"]).glob("*.csv")))
    assert sorted(folds["id"]) == sorted(labelled["id"])
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    oof = pd.read_parquet(run_dir / "oof.parquet")
    assert oof["id"].tolist() == labelled["id"].tolist()
    # the recorded OOF score is the metric on the labelled rows alone
    truth = labelled.set_index("id").loc[oof["id"], "target"].to_numpy()
    meta = read_meta(run_dir)
    pred = oof[meta.pred_columns].to_numpy().argmax(1)
    scores = read_json(run_dir / "scores.json")["scores"]
    assert scores["oof"] == pytest.approx(accuracy_score(truth, pred))

    y = targets_for_meta(meta)  # what blend and diversity score against
    assert y.tolist() == truth.tolist()
    assert _targets(meta, oof).tolist() == truth.tolist()  # the report's
    other = tmp_path / "runs_b"
    code, err, _ = run_cli({**cfg, "output_dir": str(other),
                            "model": {"encoders": [{"name": "sklearn:sklearn.tree."
                                                    "DecisionTreeClassifier"}]}},
                           tmp_path, capsys)
    assert code == 0, err
    folder = blend.run([run_dir, other / cfg["name"]], "mean", "ab", tmp_path / "blends",
                       submissions_dir=tmp_path / "subs")
    assert pd.read_parquet(folder / "oof.parquet")["id"].tolist() == oof["id"].tolist()
    sub = pd.read_csv(submit.run(folder, None, tmp_path / "subs"), dtype=str)
    sample = pd.read_csv(Path(cfg["competition"]["dir"]) / "sample_submission.csv", dtype=str)
    assert sub["id"].tolist() == sample["id"].tolist()
    assert set(sub["target"]) <= {"0", "1", "2"}  # never '1.0'


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_targets_written_as_na_values_stay_missing_after_training(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        task: str) -> None:
    """Targets written '?' with 'competition.na_values: [?]' were left out of training, but
    the stages after it (submit's clip check, blends, diversity, the report) read the train
    file again without na_values: 'could not convert string to float' after every fold had
    trained (regression), '?' rows among the OOF rows' targets (classes)."""
    cfg = cli_config(competition_factory, "tabular", task)
    cfg["competition"].update(na_values=["?"], unlabelled_train_rows="drop")
    target = cfg["competition"]["target_columns"][0]
    path = _blank(cfg, [target], cell="?")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    meta, oof = read_meta(run_dir), pd.read_parquet(run_dir / "oof.parquet")
    truth = pd.read_csv(path).drop(index=EMPTY).set_index("id").loc[oof["id"], target]
    assert targets_for_meta(meta).ravel().tolist() == pytest.approx(truth.astype(float).tolist())
    assert _targets(meta, oof).ravel().tolist() == pytest.approx(truth.astype(float).tolist())


def test_drop_leaves_out_rows_missing_one_of_several_targets(competition_factory) -> None:
    cfg = competition_factory("tabular", "multilabel")
    cfg["competition"]["unlabelled_train_rows"] = "drop"
    _blank(cfg, ["a"], [2, 5])
    _blank(cfg, ["b"], [5, 7])
    comp = load_competition(build_config(cfg).competition)
    assert len(comp.train) == 45
    assert comp.targets.shape == (45, 2) and not np.isnan(comp.targets).any()


def test_unlabelled_rows_join_the_consistency_pool_and_pretraining(
        competition_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        one_thread) -> None:
    cfg = competition_factory("tabular", "binary")
    cfg["competition"]["unlabelled_train_rows"] = "unlabelled"
    _blank(cfg, ["target"])
    comp = load_competition(build_config(cfg).competition)
    assert len(comp.train) == 43 and len(comp.unlabelled) == 5
    assert comp.unlabelled["id"].tolist() == [f"r{i:04d}" for i in EMPTY]
    pool = comp.unlabelled_pool
    assert len(pool) == 16 + 5 and "target" not in pool.columns
    assert pool["id"].tolist()[-5:] == comp.unlabelled["id"].tolist()
    pre = PretrainConfig.model_validate({"name": "dae", "competition": cfg["competition"],
                                         "objective": {"kind": "dae"}})
    data = unlabelled_rows(pre, comp)
    assert data.sources == {"train": 43, "train_unlabelled": 5, "test": 16}

    cfg["train"] = {"epochs": 1, "batch_size": 16, "consistency": {
        "method": "fixmatch", "stage": {"passes": 1}}}
    path = tmp_path / "ul.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO):
        assert _cli(["train", str(path)]) == 0
    assert "of 21 unlabelled rows" in caplog.text  # 16 test + 5 unlabelled train rows
    oof = pd.read_parquet(Path(cfg["output_dir"]) / cfg["name"] / "oof.parquet")
    assert len(oof) == 43 and not set(oof["id"]) & set(comp.unlabelled["id"])


def test_pretraining_export_keeps_the_unlabelled_rows_unlabelled(
        competition_factory, tmp_path: Path, one_thread) -> None:
    cfg = competition_factory("tabular", "multiclass")
    cfg["competition"]["unlabelled_train_rows"] = "unlabelled"
    _blank(cfg, ["target"])
    pre = build_pretrain_config({
        "name": "dae", "pretrained_dir": str(tmp_path / "pretrained"),
        "competition": cfg["competition"],
        "objective": {"kind": "dae", "epochs": 1, "hidden": [8], "batch_size": 16}})
    folder = pretrain_run(pre)
    assert read_json(folder / "record.json")["sources"] == {
        "train": 43, "train_unlabelled": 5, "test": 16}
    out = export_features(pre, tmp_path / "feats", keep_raw=True)
    exported = cfg["competition"] | {"dir": str(out)}
    comp = load_competition(build_config({**cfg, "competition": exported}).competition)
    # the exported folder, under the same option, has the same labelled and unlabelled rows
    assert len(comp.train) == 43 and len(comp.unlabelled) == 5
    assert comp.classes == [0, 1, 2]  # written '1', not '1.0'

"""The run-folder contract (pipeline/runs.py): where a (seed, fold) lives, when it is complete,
what identifies its predictions, the run folder's identity, and how fold predictions are
gathered. Fold predictions are written by hand here: no model is trained."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import train
from pipeline.artifacts import read_json, read_meta, write_json, write_parquet
from pipeline.blend import load_members
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig, build_config
from pipeline.config_diff import config_diff
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import get_metric
from pipeline.prediction_state import prediction_hash, predictions_current
from pipeline.runs import (
    FOLD_FORMAT,
    LAST_EPOCH_OOF,
    fold_complete,
    fold_dir,
    fold_label,
    fold_score,
    gather,
    last_epoch_note,
    load_folds,
    next_version,
    prepare_run_dir,
    pseudo_path,
    read_scores,
)


@pytest.fixture
def data(competition_factory) -> dict[str, Any]:
    return competition_factory("tabular", "multiclass")


def _cfg(data: dict[str, Any], **sections: dict[str, Any]) -> ExperimentConfig:
    """``data`` with top-level keys or whole sections replaced."""
    out = copy.deepcopy(data)
    out.update(sections)
    return build_config(out)


def _with_lr(data: dict[str, Any], lr: float) -> ExperimentConfig:
    out = copy.deepcopy(data)
    out["train"]["optimizer"]["lr"] = lr
    return build_config(out)


def _fake_predictions(cfg: ExperimentConfig, comp: Competition, folds: np.ndarray,
                      seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Write every fold's oof/test parquet of ``seed`` as a job would; returns the OOF
    matrix in train order and each fold's test matrix."""
    rng = np.random.default_rng(seed)
    cols, id_col = comp.pred_columns, cfg.competition.id_column
    oof = np.zeros((len(comp.train), len(cols)))
    tests = []
    for fold in range(cfg.folds.n_splits):
        rows = np.flatnonzero(folds == fold)
        oof[rows] = rng.dirichlet(np.ones(len(cols)), len(rows))
        tests.append(rng.dirichlet(np.ones(len(cols)), len(comp.test)))
        for part, ids, values in (("oof", comp.train[id_col].iloc[rows], oof[rows]),
                                  ("test", comp.test[id_col], tests[-1])):
            frame = pd.DataFrame(values, columns=cols)
            frame.insert(0, id_col, ids.to_numpy())
            write_parquet(fold_dir(cfg, seed, fold) / f"{part}.parquet", frame)
    return oof, tests


def _prepared(data: dict[str, Any], seeds: list[int]
              ) -> tuple[ExperimentConfig, Competition, np.ndarray]:
    out = copy.deepcopy(data)
    out["train"]["seeds"] = seeds
    cfg = build_config(out)
    comp = load_competition(cfg.competition)
    folds = load_folds(cfg, comp)
    prepare_run_dir(cfg, comp)
    return cfg, comp, folds


def test_fold_dir_layout(data: dict[str, Any]) -> None:
    cfg = build_config(data)
    assert cfg.run_dir == Path(data["output_dir"]) / data["name"]
    assert fold_dir(cfg, 3, 1) == cfg.run_dir / "seed3" / "fold1"
    assert pseudo_path(cfg, 1) == cfg.run_dir / "pseudo" / "fold1.parquet"
    assert fold_label(cfg, 3, 1) == f"{data['name']} seed3/fold1 (of 2)"  # as on disk


def test_fold_complete_only_with_the_config_hash(data: dict[str, Any]) -> None:
    cfg = build_config(data)
    metrics = fold_dir(cfg, 0, 1) / "metrics.json"
    done = {"config_hash": cfg.train_hash(), "format": FOLD_FORMAT, "best_epoch": 1}
    assert not fold_complete(cfg, 0, 1)
    write_json(metrics, {"best_epoch": 1})  # a fold without a hash is not complete
    assert not fold_complete(cfg, 0, 1)
    write_json(metrics, {**done, "config_hash": _with_lr(data, 0.5).train_hash()})
    assert not fold_complete(cfg, 0, 1)
    write_json(metrics, {**done, "format": FOLD_FORMAT - 1})  # an older release's fold
    assert not fold_complete(cfg, 0, 1)
    write_json(metrics, done)
    assert fold_complete(cfg, 0, 1)
    assert not fold_complete(cfg, 0, 0) and not fold_complete(cfg, 1, 1)
    assert not fold_complete(_with_lr(data, 0.5), 0, 1)


def test_prediction_hash_follows_the_predict_section_not_output_paths(
    data: dict[str, Any], tmp_path: Path,
) -> None:
    base = prediction_hash(build_config(data))
    assert len(base) == 16 and base == prediction_hash(build_config(copy.deepcopy(data)))
    for predict in ({"tta": ["noise"]}, {"tta_reduce": "median"}, {"batch_size": 7}):
        assert prediction_hash(_cfg(data, predict=predict)) != base, predict
    assert prediction_hash(_with_lr(data, 0.5)) != base  # other weights, other predictions
    for key, value in (("output_dir", tmp_path / "elsewhere"), ("folds_dir", tmp_path / "f2"),
                       ("submissions_dir", tmp_path / "subs")):
        assert prediction_hash(_cfg(data, **{key: str(value)})) == base, key


def test_predictions_current(data: dict[str, Any]) -> None:
    cfg = build_config(data)
    tta = _cfg(data, predict={"tta": ["noise"]})
    assert not predictions_current(cfg, 0, 0)
    write_json(fold_dir(cfg, 0, 0) / "predictions.json", {"hash": prediction_hash(cfg),
                                                          "tta": []})
    assert predictions_current(cfg, 0, 0)
    assert not predictions_current(tta, 0, 0)
    assert not predictions_current(cfg, 0, 1)


def test_prepare_run_dir_writes_the_run_and_refuses_another_config(data: dict[str, Any]) -> None:
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    meta = prepare_run_dir(cfg, comp)
    assert read_meta(cfg.run_dir) == meta
    assert meta.config_hash == cfg.train_hash() and meta.name == cfg.name
    assert meta.classes == comp.classes and meta.pred_columns == ["0", "1", "2"]
    assert (cfg.run_dir / "config.yaml").is_file()
    assert read_json(cfg.run_dir / "env.json")["python"]
    # the same training config (even with another predict section) reuses the folder
    assert prepare_run_dir(_cfg(data, predict={"tta_reduce": "median"}), comp) == meta
    write_json(fold_dir(cfg, 0, 0) / "metrics.json", {"config_hash": cfg.train_hash()})
    other = _with_lr(data, 0.5)  # a trained fold is there: another config is refused
    with pytest.raises(ConfigError, match="another config") as info:
        prepare_run_dir(other, comp)
    # the refusal names the keys that differ (issue 15 item 6), not two hashes
    assert str(cfg.run_dir) in str(info.value)
    assert "train.optimizer.lr: " in str(info.value) and "-> 0.5)" in str(info.value)
    assert "--overwrite" in str(info.value) and "--new-version" in str(info.value)
    assert read_meta(cfg.run_dir).config_hash == cfg.train_hash()  # left as it was
    assert not meta.leaky
    assert prepare_run_dir(cfg, comp, leaky=True).leaky and read_meta(cfg.run_dir).leaky


def test_load_folds_makes_the_folds_file(data: dict[str, Any]) -> None:
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    assert not cfg.folds_file.exists()
    folds = load_folds(cfg, comp)
    assert cfg.folds_file.is_file()
    assert folds.shape == (len(comp.train),) and set(folds) == {0, 1}
    np.testing.assert_array_equal(load_folds(cfg, comp), folds)


def test_gather_merges_folds_and_seeds(data: dict[str, Any]) -> None:
    cfg, comp, folds = _prepared(data, [0, 1])
    written = {seed: _fake_predictions(cfg, comp, folds, seed) for seed in (0, 1)}
    metric = get_metric("accuracy")
    oof_mean = (written[0][0] + written[1][0]) / 2
    assert gather(cfg, comp, folds) == pytest.approx(metric(comp.targets, oof_mean))

    cols = comp.pred_columns
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    assert list(oof.columns) == ["id", "fold", *cols]
    assert oof["id"].tolist() == comp.train["id"].tolist()
    np.testing.assert_array_equal(oof["fold"], folds)
    np.testing.assert_allclose(oof[cols].to_numpy(), oof_mean)
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert test["id"].tolist() == comp.test["id"].tolist()
    every_fold = [t for seed in (0, 1) for t in written[seed][1]]
    np.testing.assert_allclose(test[cols].to_numpy(), np.mean(every_fold, axis=0))
    test_folds = pd.read_parquet(cfg.run_dir / "test_folds.parquet")
    assert list(test_folds.columns) == ["seed", "fold", "id", *cols]
    assert len(test_folds) == 4 * len(comp.test)

    scores = read_scores(cfg.run_dir)
    assert scores["metric"] == "accuracy" and scores["direction"] == "maximize"
    assert sorted(scores["scores"]) == ["oof", "seed0", "seed0/fold0", "seed0/fold1", "seed1",
                                        "seed1/fold0", "seed1/fold1"]
    rows = folds == 1
    expected = metric(comp.targets[rows], written[1][0][rows])
    assert scores["scores"]["seed1/fold1"] == pytest.approx(expected)
    assert fold_score(cfg, comp, folds, 1, 1) == pytest.approx(expected)
    # each seed is an ensemble member of its own
    member = cfg.run_dir / "seed1"
    assert read_meta(member).name == f"{cfg.name}-seed1"
    seed_oof = pd.read_parquet(member / "oof.parquet")
    np.testing.assert_allclose(seed_oof[cols].to_numpy(), written[1][0])
    assert scores["scores"]["seed1"] == pytest.approx(metric(comp.targets, written[1][0]))


@pytest.mark.parametrize("swap", ["reversed", "other fold"])
def test_gather_refuses_a_fold_parquet_with_other_ids(data: dict[str, Any], swap: str) -> None:
    cfg, comp, folds = _prepared(data, [0])
    _fake_predictions(cfg, comp, folds, 0)
    path = fold_dir(cfg, 0, 1) / "oof.parquet"
    if swap == "reversed":  # the right ids in another order would misalign every row
        write_parquet(path, pd.read_parquet(path).iloc[::-1].reset_index(drop=True))
    else:
        write_parquet(path, pd.read_parquet(fold_dir(cfg, 0, 0) / "oof.parquet"))
    with pytest.raises(DataError, match="holds other ids than fold 1") as info:
        gather(cfg, comp, folds)
    assert str(path) in str(info.value)
    assert not (cfg.run_dir / "oof.parquet").exists()


def test_gather_scores_the_last_epochs_when_every_fold_has_them(data: dict[str, Any]) -> None:
    cfg, comp, folds = _prepared(data, [0])
    oof, _ = _fake_predictions(cfg, comp, folds, 0)
    gather(cfg, comp, folds)
    assert "oof_last_epoch" not in read_scores(cfg.run_dir)["scores"]  # no fold has them
    cols = comp.pred_columns
    last = oof[:, ::-1].copy()  # other predictions than the best epochs'
    for fold in range(2):
        rows = np.flatnonzero(folds == fold)
        frame = pd.DataFrame(last[rows], columns=cols)
        frame.insert(0, "id", comp.train["id"].iloc[rows].to_numpy())
        write_parquet(fold_dir(cfg, 0, fold) / LAST_EPOCH_OOF, frame)
    metric = get_metric("accuracy")
    assert gather(cfg, comp, folds) == pytest.approx(metric(comp.targets, oof))
    scores = read_scores(cfg.run_dir)["scores"]
    assert scores["oof_last_epoch"] == pytest.approx(metric(comp.targets, last))
    path = fold_dir(cfg, 0, 1) / LAST_EPOCH_OOF
    write_parquet(path, pd.read_parquet(path).iloc[::-1])
    with pytest.raises(DataError, match="holds other ids than fold 1") as info:
        gather(cfg, comp, folds)
    assert str(path) in str(info.value)


def test_gather_averages_the_last_epochs_over_seeds_only_when_every_fold_has_them(
        data: dict[str, Any]) -> None:
    """issue 12 item 14: oof_last_epoch is the seeds' mean of the last-epoch OOF, scored
    only once every (seed, fold) has one (a run resumed from an older release has gaps)."""
    cfg, comp, folds = _prepared(data, [0, 1])
    for seed in (0, 1):
        _fake_predictions(cfg, comp, folds, seed)
    cols = comp.pred_columns
    rng = np.random.default_rng(7)
    last = {seed: rng.dirichlet(np.ones(len(cols)), len(comp.train)) for seed in (0, 1)}

    def write_last(seed: int, fold: int) -> None:
        rows = np.flatnonzero(folds == fold)
        frame = pd.DataFrame(last[seed][rows], columns=cols)
        frame.insert(0, "id", comp.train["id"].iloc[rows].to_numpy())
        write_parquet(fold_dir(cfg, seed, fold) / LAST_EPOCH_OOF, frame)

    for seed, fold in ((0, 0), (0, 1), (1, 0)):
        write_last(seed, fold)
    gather(cfg, comp, folds)
    assert "oof_last_epoch" not in read_scores(cfg.run_dir)["scores"]  # seed 1 fold 1 lacks it
    write_last(1, 1)
    gather(cfg, comp, folds)
    metric = get_metric("accuracy")
    expected = metric(comp.targets, (last[0] + last[1]) / 2)
    assert read_scores(cfg.run_dir)["scores"]["oof_last_epoch"] == pytest.approx(expected)
    assert expected != pytest.approx(metric(comp.targets, last[0]))  # the mean, not one seed


def test_three_seeds_write_three_members_and_their_average(competition_factory):
    """gather writes each seed as a member of its own (seed<s>/run.json, oof, test) and the
    run's predictions are their mean."""
    data = competition_factory("tabular", "binary")
    data["train"]["seeds"] = [0, 1, 2]
    cfg = build_config(data)
    train.run(cfg)
    folders = [cfg.run_dir / f"seed{s}" for s in (0, 1, 2)]
    assert [read_meta(f).name for f in folders] == [f"{cfg.name}-seed{s}" for s in (0, 1, 2)]
    members = load_members(folders)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")["target"].to_numpy()
    np.testing.assert_allclose(oof, members.oof.mean(axis=0)[:, 0])
    test = pd.read_parquet(cfg.run_dir / "test.parquet")["target"].to_numpy()
    np.testing.assert_allclose(test, members.test.mean(axis=0)[:, 0])


def test_a_damaged_metrics_file_makes_the_fold_train_again(data: dict[str, Any]) -> None:
    """Issue 15 item 3: a cut-off metrics.json raised a JSON traceback on every rerun; now
    the fold counts as incomplete, so train heals it."""
    cfg = build_config(data)
    metrics = fold_dir(cfg, 0, 1) / "metrics.json"
    write_json(metrics, {"config_hash": cfg.train_hash(), "format": FOLD_FORMAT})
    assert fold_complete(cfg, 0, 1)
    metrics.write_text(metrics.read_text()[:10])
    assert not fold_complete(cfg, 0, 1)


def test_a_start_that_trained_nothing_does_not_block_the_corrected_config(
        data: dict[str, Any]) -> None:
    """Issue 15 item 6: a first start that failed (a bad estimator parameter) left a run
    folder that then refused the corrected config. With nothing trained it is replaced."""
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    prepare_run_dir(cfg, comp)
    (fold_dir(cfg, 0, 0)).mkdir(parents=True)
    (fold_dir(cfg, 0, 0) / "preprocess.json").write_text("{}")  # started, never trained
    (cfg.run_dir / "log.txt").write_text("the failed start\n")
    fixed = _with_lr(data, 0.5)
    assert prepare_run_dir(fixed, comp).config_hash == fixed.train_hash()
    assert not (fold_dir(cfg, 0, 0) / "preprocess.json").exists()  # the old start is gone
    assert (cfg.run_dir / "log.txt").read_text() == "the failed start\n"  # the log is kept


def test_overwrite_replaces_a_trained_run_of_another_config(data: dict[str, Any]) -> None:
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    prepare_run_dir(cfg, comp)
    write_json(fold_dir(cfg, 0, 0) / "metrics.json", {"config_hash": cfg.train_hash()})
    other = _with_lr(data, 0.5)
    assert prepare_run_dir(other, comp, overwrite=True).config_hash == other.train_hash()
    assert not fold_dir(cfg, 0, 0).exists()


def test_a_run_folder_without_its_config_snapshot_is_refused_in_a_short_line(
        data: dict[str, Any]) -> None:
    """A run folder whose config.yaml was deleted listed every section as 'None -> {...}',
    a line of thousands of characters."""
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    prepare_run_dir(cfg, comp)
    write_json(fold_dir(cfg, 0, 0) / "metrics.json", {"config_hash": cfg.train_hash()})
    (cfg.run_dir / "config.yaml").unlink()
    with pytest.raises(ConfigError) as info:
        prepare_run_dir(_with_lr(data, 0.5), comp)
    message = str(info.value)
    assert "config.yaml is gone" in message and "--overwrite" in message
    assert len(message) < 400 and "None ->" not in message, message


def test_next_version_finds_the_first_free_or_matching_name(data: dict[str, Any]) -> None:
    """--new-version: a changed config runs as <name>-v2 (then -v3); a rerun of the same
    config finds its own version again instead of starting another."""
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    assert next_version(cfg) == cfg.name  # nothing there yet
    prepare_run_dir(cfg, comp)
    other = _with_lr(data, 0.5)
    assert next_version(other) == f"{cfg.name}-v2"
    prepare_run_dir(other.model_copy(update={"name": f"{cfg.name}-v2"}), comp)
    assert next_version(other) == f"{cfg.name}-v2"  # the same config: resume it
    assert next_version(_with_lr(data, 0.1)) == f"{cfg.name}-v3"


def test_the_config_diff_leaves_out_where_a_run_was_trained() -> None:
    old = {"executor": {"name": "ray", "address": "head:6379"}, "train": {"epochs": 3}}
    new = {"executor": {"name": "local"}, "train": {"epochs": 4}}
    assert config_diff(old, new) == ["train.epochs: 3 -> 4"]


def test_last_epoch_note_says_when_tta_separates_the_two_scores(competition_factory) -> None:
    # the last epochs' OOF is the last validation's, without TTA: beside a TTA'd run score
    # a lower best-epoch score was called 'the optimistic one'
    data = competition_factory("image", "binary")
    assert "optimistic" in last_epoch_note(build_config(data), 0.9, 0.8)
    # the same score: nothing was optimistic; nor does it say the best epochs were the last
    # (an accuracy ties on other epochs: it said so of a fold whose best was epoch 2 of 4)
    note = last_epoch_note(build_config(data), 0.81234, 0.812341)
    assert "optimistic" not in note and "the same" in note and "were the last" not in note
    data["predict"] = {"tta": ["hflip"]}
    note = last_epoch_note(build_config(data), 0.9, 0.8)
    assert "without TTA" in note and "optimistic" not in note

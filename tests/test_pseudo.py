"""The pseudo stage (pipeline/pseudo.py): leak-free per-fold labels from a source run, their
weights, training with them over rounds, a blend source refused unless the leak is
accepted, and the train rows kept without a target ('unlabelled') labelled like test rows.
Row selection is tested in tests/data/test_pseudo_labels.py."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import blend, pseudo, submit, train
from pipeline.artifacts import read_meta, write_meta
from pipeline.competition import load_competition
from pipeline.config import ExperimentConfig, build_config
from pipeline.errors import ConfigError, DataError
from pipeline.jobs.inputs import pseudo_rows


def _source_run(competition_factory, **train_overrides):
    data = competition_factory("tabular", "multiclass", n_train=60, n_test=30)
    data["name"] = "round0"
    data["train"].update(train_overrides)
    cfg = build_config(data)
    train.run(cfg)
    return data, cfg


def test_fold_k_pseudo_labels_come_only_from_the_source_fold_k_models(competition_factory):
    data, source = _source_run(competition_factory)
    data = {**data, "name": "round1",
            "pseudo": {"source": str(source.run_dir), "labels": "soft", "weight": 0.5}}
    cfg = build_config(data)
    pseudo.run(cfg)
    per_fold = pd.read_parquet(source.run_dir / "test_folds.parquet")
    cols = ["0", "1", "2"]
    for fold in (0, 1):
        labels = pd.read_parquet(pseudo.pseudo_path(cfg, fold)).set_index("id")
        assert (labels["source_fold"] == fold).all()
        assert (labels["weight"] == 0.5).all()
        made_by = per_fold[per_fold["fold"] == fold].set_index("id").loc[labels.index, cols]
        np.testing.assert_allclose(labels[cols].to_numpy(), made_by.to_numpy())
        other = per_fold[per_fold["fold"] != fold].set_index("id").loc[labels.index, cols]
        assert not np.allclose(labels[cols].to_numpy(), other.to_numpy())


def test_training_with_pseudo_rows_adds_them_and_chains_rounds(competition_factory):
    data, source = _source_run(competition_factory, batch_size=10)
    round1 = build_config({**data, "name": "round1",
                           "pseudo": {"source": str(source.run_dir), "top_fraction": 0.5}})
    score = train.run(round1)
    assert np.isfinite(score)
    epochs = json.loads((round1.run_dir / "seed0" / "fold0" / "metrics.json").read_text())
    # 30 training rows + 15 pseudo rows at batch 10 -> 5 updates per epoch (3 without)
    assert epochs["epochs"][0]["updates"] == 5
    round2 = build_config({**data, "name": "round2",
                           "pseudo": {"source": str(round1.run_dir), "labels": "soft"}})
    assert np.isfinite(train.run(round2))
    assert (pd.read_parquet(pseudo.pseudo_path(round2, 1))["source_fold"] == 1).all()


def test_a_blend_source_is_refused_unless_the_leak_is_accepted(competition_factory, caplog):
    data, source = _source_run(competition_factory)
    other = build_config({**data, "name": "round0b", "train": {**data["train"], "seeds": [1]}})
    train.run(other)
    folder = blend.run([source.run_dir, other.run_dir], method="mean", name="b",
                       blends_dir=source.run_dir.parent.parent / "blends")
    naive = build_config({**data, "name": "naive", "pseudo": {"source": str(folder)}})
    with pytest.raises(ConfigError, match="CV would be inflated"):
        pseudo.run(naive)
    leaky = build_config({**data, "name": "leaky",
                          "pseudo": {"source": str(folder), "allow_leak": True}})
    with caplog.at_level(logging.WARNING):
        pseudo.run(leaky)
    assert "LEAKY" in caplog.text
    assert (pd.read_parquet(pseudo.pseudo_path(leaky, 0))["source_fold"] == -1).all()


# --- issue 12 item 6: a leak carries over pseudo-label rounds -------------------------------


@pytest.fixture(scope="module")
def clean_round(tmp_path_factory) -> tuple[dict[str, Any], ExperimentConfig]:
    """One tiny leak-free run (1 epoch, 2 folds), shared by the leak tests below; each test
    trains its own later rounds under other names."""
    import torch

    from tests.conftest import make_competition

    data = make_competition(tmp_path_factory.mktemp("leak"), "tabular", "multiclass",
                            n_train=40, n_test=16)
    data["name"] = "clean0"
    data["train"]["epochs"] = 1
    cfg = build_config(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    try:
        train.run(cfg)
    finally:
        torch.set_num_threads(threads)
    return data, cfg



def _round(data: dict[str, Any], name: str, source: Path, **pseudo_kw: Any) -> ExperimentConfig:
    return build_config({**data, "name": name,
                         "pseudo": {"source": str(source), "top_fraction": 0.5, **pseudo_kw}})


def _blend_source(cfg: ExperimentConfig) -> Path:
    """A blend of the run and a copy of its gathered files: a source without per-fold test
    predictions (its labels come from models that saw every fold)."""
    copy = cfg.run_dir.parent / f"{cfg.name}-copy"
    copy.mkdir(exist_ok=True)
    for name in ("oof.parquet", "test.parquet"):
        shutil.copy(cfg.run_dir / name, copy / name)
    write_meta(copy, read_meta(cfg.run_dir))  # its run.json written where it lies
    return blend.run([cfg.run_dir, copy], method="mean", name=f"{cfg.name}-blend",
                     blends_dir=cfg.run_dir.parent.parent / "blends")


@pytest.mark.usefixtures("one_thread")
def test_a_leaky_run_is_marked_and_its_leak_carries_over_to_the_next_round(clean_round):
    """issue 12 item 6: a run trained (with allow_leak) on a blend's pseudo-labels is
    ``leaky: true`` in run.json; as the next round's source it is refused without
    allow_leak (one line naming the leak, before the run folder is written), and with it the
    next round trains and is marked leaky again."""
    data, clean = clean_round
    source = _blend_source(clean)
    assert not (source / "test_folds.parquet").exists()
    leaky1 = _round(data, "leaky1", source, allow_leak=True)
    assert np.isfinite(train.run(leaky1))
    assert read_meta(leaky1.run_dir).leaky is True
    assert json.loads((leaky1.run_dir / "run.json").read_text())["leaky"] is True
    # leaky1 has per-fold test predictions, yet its fold-k models learnt from labels that
    # models trained on fold k made: the leak must not be laundered by one more round
    assert (leaky1.run_dir / "test_folds.parquet").is_file()
    naive = _round(data, "leaky2", leaky1.run_dir)
    with pytest.raises(ConfigError) as info:
        train.run(naive)
    message = str(info.value)
    assert "\n" not in message
    assert str(leaky1.run_dir) in message and "leaky" in message and "allow_leak" in message
    assert not naive.run_dir.exists()
    accepted = _round(data, "leaky2", leaky1.run_dir, allow_leak=True)
    assert np.isfinite(train.run(accepted))
    assert read_meta(accepted.run_dir).leaky is True


@pytest.mark.usefixtures("one_thread")
def test_a_leak_free_chain_stays_leak_free(clean_round):
    """issue 12 item 6: pseudo-labels from a leak-free run, over two rounds, need no
    allow_leak and leave every run ``leaky: false``."""
    data, clean = clean_round
    assert read_meta(clean.run_dir).leaky is False
    round1 = _round(data, "clean1", clean.run_dir)
    train.run(round1)
    assert read_meta(round1.run_dir).leaky is False
    round2 = _round(data, "clean2", round1.run_dir, labels="soft")
    train.run(round2)
    assert read_meta(round2.run_dir).leaky is False
    assert (pd.read_parquet(pseudo.pseudo_path(round2, 1))["source_fold"] == 1).all()


def test_a_source_without_per_fold_test_predictions_is_refused_before_any_write(
        clean_round, caplog):
    """issue 12 item 6: any folder without test_folds.parquet (here a copy of a run's
    gathered files) is a leaky source: refused by train before the run folder exists; with
    allow_leak it is accepted, with a warning, and said to be leaky."""
    data, clean = clean_round
    copy = clean.run_dir.parent / "gathered-only"
    copy.mkdir()
    for name in ("run.json", "oof.parquet", "test.parquet"):
        shutil.copy(clean.run_dir / name, copy / name)
    refused = _round(data, "from-copy", copy)
    with pytest.raises(ConfigError, match="no per-fold test predictions") as info:
        train.run(refused)
    assert "\n" not in str(info.value) and "allow_leak" in str(info.value)
    assert not refused.run_dir.exists()
    with caplog.at_level(logging.WARNING):
        assert pseudo.source_leaky(_round(data, "from-copy", copy, allow_leak=True)) is True
    assert "LEAKY" in caplog.text
    assert pseudo.source_leaky(_round(data, "from-run", clean.run_dir)) is False


def test_a_source_without_some_test_ids_is_refused_in_one_line(clean_round) -> None:
    """A source whose per-fold predictions lack a test id of this run (made from another
    test file) stopped the pseudo stage with a pandas KeyError traceback; it is one line
    naming the file, the count and an id, and nothing is written."""
    data, clean = clean_round
    copy = clean.run_dir.parent / "trimmed"
    shutil.copytree(clean.run_dir, copy)
    per_fold = pd.read_parquet(copy / "test_folds.parquet")
    dropped = str(per_fold[data["competition"]["id_column"]].iloc[0])
    id_values = per_fold[data["competition"]["id_column"]].astype(str)
    per_fold[id_values != dropped].to_parquet(copy / "test_folds.parquet", index=False)
    cfg = _round(data, "from-trimmed", copy)
    with pytest.raises(DataError, match=rf"has no prediction for 1 of this run's \d+ rows "
                                        rf"\(such as id '{dropped}'\)") as info:
        pseudo.run(cfg)
    assert "\n" not in str(info.value)
    assert not pseudo.pseudo_path(cfg, 0).exists()


def test_a_fold_without_pseudo_rows_trains_on_its_own_rows(clean_round, caplog):
    """A threshold no test row reaches leaves a fold with no pseudo rows: the network fold
    crashed in the column encoders (a ValueError about 0 samples). It trains on its own
    rows, and the pseudo stage says why nothing was added."""
    data, clean = clean_round
    cfg = build_config({**data, "name": "none-passed",
                        "pseudo": {"source": str(clean.run_dir), "threshold": 1.0}})
    with caplog.at_level(logging.WARNING, logger="pipeline.pseudo"):
        assert np.isfinite(train.run(cfg))
    assert "no test row passed the selection for fold 0 (threshold: 1.0)" in caplog.text
    assert len(pd.read_parquet(pseudo.pseudo_path(cfg, 0))) == 0
    epochs = json.loads((cfg.run_dir / "seed0" / "fold0" / "metrics.json").read_text())
    plain = json.loads((clean.run_dir / "seed0" / "fold0" / "metrics.json").read_text())
    assert epochs["epochs"][0]["updates"] == plain["epochs"][0]["updates"]


def test_the_log_says_of_how_many_test_rows_and_by_which_rule(clean_round, caplog):
    """'pseudo: {'fold0': 10, 'fold1': 22, 'fold2': 7} rows per fold from runs/tags' said
    neither the pool nor the rule that left so few."""
    data, clean = clean_round
    cfg = build_config({**data, "name": "said",
                        "pseudo": {"source": str(clean.run_dir), "threshold": 1.0}})
    with caplog.at_level(logging.INFO, logger="pipeline.pseudo"):
        pseudo.run(cfg)
    assert ("{'fold0': 0, 'fold1': 0} rows per fold, of 16 test rows (threshold: 1.0; hard "
            "labels, weight 1), from ") in caplog.text


UNLABELLED = list(range(0, 50, 5))  # train.csv rows left without a target: 10 of 50 (20%)
LOGISTIC = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}


def _semi_supervised(competition_factory, mode: str) -> dict[str, Any]:
    """A binary table whose train rows at UNLABELLED have an empty target, kept under
    ``mode``; 40 labelled rows in 2 folds, 16 test rows."""
    data = competition_factory("tabular", "binary", n_train=50, n_test=16)
    path = Path(data["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[UNLABELLED, "target"] = ""
    frame.to_csv(path, index=False)
    data["competition"]["unlabelled_train_rows"] = mode
    data["train"].update(epochs=1, batch_size=10)
    return data


@pytest.mark.usefixtures("one_thread")
def test_unlabelled_train_rows_are_pseudo_labelled_like_the_test_rows(competition_factory,
                                                                      tmp_path, caplog):
    """Under 'unlabelled_train_rows: unlabelled' the train rows without a target were only
    given to consistency training and pretraining: pseudo-labelling labelled the test rows
    alone. The source predicts them per fold like the test rows, and fold k's pseudo rows
    are the test rows plus those rows, labelled by the source's fold-k models."""
    data = _semi_supervised(competition_factory, "unlabelled")
    source = build_config({**data, "name": "src", "model": LOGISTIC})
    train.run(source)
    per_fold = pd.read_parquet(source.run_dir / "unlabelled_folds.parquet")
    unlabelled_ids = [f"r{i:04d}" for i in UNLABELLED]
    for fold in (0, 1):  # every fold model predicts every unlabelled row, as for the test
        assert per_fold[per_fold["fold"] == fold]["id"].tolist() == unlabelled_ids
    by_fold = [per_fold[per_fold["fold"] == fold]["target"] for fold in (0, 1)]
    assert not np.allclose(*by_fold)  # each fold's own models
    round1 = build_config({**data, "name": "round1", "pseudo": {"source": str(source.run_dir)}})
    with caplog.at_level(logging.INFO, logger="pipeline.pseudo"):
        assert np.isfinite(train.run(round1))
    assert "of which train rows without a target (of 10): {'fold0': 10, 'fold1': 10}" in (
        caplog.text)
    test_folds = pd.read_parquet(source.run_dir / "test_folds.parquet")
    for fold in (0, 1):
        labels = pd.read_parquet(pseudo.pseudo_path(round1, fold))
        assert labels["part"].value_counts().to_dict() == {"test": 16, "unlabelled": 10}
        for part, made in (("test", test_folds), ("unlabelled", per_fold)):
            rows = labels[labels["part"] == part].set_index("id")
            p = made[made["fold"] == fold].set_index("id").loc[rows.index, "target"]
            # hard labels: the source's fold-k probability thresholded at 0.5
            assert rows["target"].tolist() == (p >= 0.5).astype(float).tolist()
            assert (rows["source_fold"] == fold).all()
        assert set(labels.loc[labels["part"] == "unlabelled", "id"]) == set(unlabelled_ids)
    epochs = json.loads((round1.run_dir / "seed0" / "fold0" / "metrics.json").read_text())
    # 20 training rows + 16 test + 10 unlabelled pseudo rows at batch 10 -> 5 updates (4
    # with the test rows alone)
    assert epochs["epochs"][0]["updates"] == 5
    oof = pd.read_parquet(round1.run_dir / "oof.parquet")
    assert len(oof) == 40 and not set(oof["id"]) & set(unlabelled_ids)
    sub = pd.read_csv(submit.run(round1.run_dir, None, tmp_path / "subs"), dtype=str)
    sample = pd.read_csv(Path(data["competition"]["dir"]) / "sample_submission.csv", dtype=str)
    assert sub.shape == sample.shape and sub["id"].tolist() == sample["id"].tolist()
    # gradient-boosted members read the same pseudo rows (test and unlabelled train rows)
    trees = build_config({**data, "name": "trees", "model": {"encoders": [{
        "name": "lightgbm", "params": {"n_estimators": 5, "min_child_samples": 2}}]},
        "pseudo": {"source": str(source.run_dir), "top_fraction": 0.5}})
    assert np.isfinite(train.run(trees))
    assert len(pd.read_parquet(pseudo.pseudo_path(trees, 0))) == 13  # half of 16 + 10


def test_drop_and_a_source_without_unlabelled_predictions_label_the_test_rows(
        competition_factory, caplog):
    """Under 'drop' nothing changes: the source keeps no unlabelled predictions and the
    pseudo rows are the test rows. A source trained under 'drop' used by a run that keeps
    the rows labels the test rows only, and says so."""
    data = _semi_supervised(competition_factory, "drop")
    source = build_config({**data, "name": "src", "model": LOGISTIC})
    train.run(source)
    assert not (source.run_dir / "unlabelled_folds.parquet").exists()
    assert not (source.run_dir / "seed0" / "fold0" / "unlabelled.parquet").exists()
    for mode in ("drop", "unlabelled"):
        competition = {**data["competition"], "unlabelled_train_rows": mode}
        cfg = build_config({**data, "competition": competition, "name": f"r-{mode}",
                            "pseudo": {"source": str(source.run_dir)}})
        with caplog.at_level(logging.WARNING, logger="pipeline.pseudo"):
            pseudo.run(cfg)
        for fold in (0, 1):
            labels = pd.read_parquet(pseudo.pseudo_path(cfg, fold))
            assert len(labels) == 16 and (labels["part"] == "test").all()
    assert caplog.text.count("not pseudo-labelled") == 1
    assert "trained under 'drop'" in caplog.text


def test_pseudo_rows_tell_a_test_row_from_a_train_row_of_the_same_id(competition_factory):
    """A test row and an unlabelled train row may share an id: the pseudo file's ``part``
    picks the right one (a lookup by id alone would feed one row's features twice)."""
    data = _semi_supervised(competition_factory, "unlabelled")
    folder = Path(data["competition"]["dir"])
    for name in ("test.csv", "sample_submission.csv"):
        frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
        frame.loc[0, "id"] = "r0000"  # the first unlabelled train row's id
        frame.to_csv(folder / name, index=False)
    comp = load_competition(build_config(data).competition)
    pseudo_file = pd.DataFrame({"id": ["r0000", "r0000", "r0005"],
                                "part": ["unlabelled", "test", "unlabelled"]})
    rows = pseudo_rows(comp, pseudo_file)
    assert rows["x1"].tolist() == [comp.unlabelled["x1"][0], comp.test["x1"][0],
                                   comp.unlabelled["x1"][1]]
    assert rows["x1"][0] != rows["x1"][1] and "target" not in rows.columns
    with pytest.raises(DataError, match="test row 'r0005'"):
        pseudo_rows(comp, pseudo_file.assign(part="test"))


@pytest.mark.usefixtures("one_thread")
def test_a_round_trains_again_when_its_source_was_retrained(competition_factory):
    """A source retrained in place (--overwrite with other settings) gives other pseudo-labels:
    the next round's folds, trained on the old ones, were kept as complete (same config, same
    data), so the round's OOF and submission stayed the old labels' silently."""
    data = competition_factory("tabular", "multiclass", n_train=40, n_test=16)
    data["train"]["epochs"] = 1
    source = build_config({**data, "name": "src"})
    train.run(source)
    round1 = _round(data, "r1", source.run_dir, labels="soft")
    train.run(round1)
    before = pd.read_parquet(round1.run_dir / "oof.parquet")
    changed = build_config({**data, "name": "src", "train": {**data["train"], "epochs": 3}})
    train.run(changed, overwrite=True)
    train.run(round1)
    after = pd.read_parquet(round1.run_dir / "oof.parquet")
    fresh = _round(data, "r1-fresh", changed.run_dir, labels="soft")
    train.run(fresh)
    cols = ["0", "1", "2"]
    assert not np.allclose(before[cols], after[cols])
    np.testing.assert_allclose(after[cols], pd.read_parquet(fresh.run_dir / "oof.parquet")[cols])


def test_a_source_predicted_from_an_older_test_file_is_refused(clean_round) -> None:
    """The test file's values changed since the source predicted it: its labels were of the
    old rows' features, paired silently with the new ones."""
    data, source = clean_round
    test_csv = Path(data["competition"]["dir"]) / "test.csv"
    original = test_csv.read_text()
    frame = pd.read_csv(test_csv)
    numeric = ["x1", "x2"]
    frame[numeric] = frame[numeric] * 2
    frame.to_csv(test_csv, index=False)
    try:
        with pytest.raises(DataError, match=r"changed since .*pseudo-labelling from it"):
            pseudo.run(_round(data, "stale-test", source.run_dir))
    finally:
        test_csv.write_text(original)


def test_a_source_of_another_positive_class_is_refused(competition_factory) -> None:
    """A binary source predicts P('yes'); a round under 'positive_class: no' reads its one
    column as P('no'): every confident row was labelled the other way (source 0.94 ->
    label 1 = 'no'). Refused in one line, before any label is written."""
    data = competition_factory("tabular", "binary", n_train=60, n_test=30)
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    source = build_config(data)
    train.run(source)
    data["model"] = {"encoders": [{"name": "lightgbm", "params": {"n_estimators": 10}}]}
    flipped = {**data["competition"], "positive_class": "no"}
    cfg = build_config({**data, "name": "round1", "competition": flipped,
                        "pseudo": {"source": str(source.run_dir), "threshold": 0.8}})
    with pytest.raises(DataError, match=re.escape(
            f"pseudo source {source.run_dir} predicts classes ['no', 'yes'] (binary: the "
            "probability of the last); this run needs ['yes', 'no']")) as info:
        pseudo.run(cfg)
    assert "\n" not in str(info.value)
    assert not pseudo.pseudo_path(cfg, 0).exists()
    same = build_config({**data, "name": "round1", "pseudo": {"source": str(source.run_dir),
                                                              "threshold": 0.8}})
    pseudo.run(same)  # the source's own positive class: labelled as it predicts
    labels = pd.read_parquet(pseudo.pseudo_path(same, 0)).set_index("id")["target"]
    p = pd.read_parquet(source.run_dir / "test_folds.parquet").query("fold == 0")
    assert ((p.set_index("id").loc[labels.index, "target"] >= 0.5) == (labels == 1)).all()

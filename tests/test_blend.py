"""The blend stage on synthetic run folders: outputs, member checks, resume, logging."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import blend
from pipeline.artifacts import (
    RunMeta,
    load_predictions,
    read_json,
    read_meta,
    write_meta,
    write_parquet,
)
from pipeline.ensemble import load_postprocess
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric

N_TRAIN, N_TEST, N_FOLDS = 400, 120, 4
CLASSES = ["ant", "bee", "cat"]


def _meta(tmp_path: Path, name: str, task: str, metric: str) -> RunMeta:
    one_column = task in ("binary", "regression")
    return RunMeta(
        name=name,
        task=task,
        metric=metric,
        id_column="id",
        target_columns=["label"],
        classes={"binary": ["no", "yes"], "regression": []}.get(task, CLASSES),
        pred_columns=["label"] if one_column else CLASSES,
        folds_file=str(tmp_path / "folds" / "kfold.csv"),
        competition_dir=str(tmp_path / "comp"),
        train_file="train.csv",
        config_hash=f"hash-{name}",
    )


def make_competition(
    tmp_path: Path, task: str, metric: str, qualities: list[float], seed: int = 0
) -> tuple[list[Path], np.ndarray]:
    """A competition folder with train.csv and one run folder per member quality
    (regression: non-negative targets and predictions)."""
    rng = np.random.default_rng(seed)
    c = 1 if task in ("binary", "regression") else len(CLASSES)
    y_idx = rng.integers(0, 2 if task == "binary" else c, N_TRAIN)
    ids = rng.permutation(10_000)[:N_TRAIN] + 1
    if task == "regression":
        labels = rng.gamma(2.0, 1.0, N_TRAIN)
    else:
        labels = np.array(["no", "yes"] if task == "binary" else CLASSES)[y_idx]
    comp = tmp_path / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "label": labels}).to_csv(comp / "train.csv", index=False)
    folds = np.arange(N_TRAIN) % N_FOLDS
    test_ids = np.arange(N_TEST) + 50_000
    runs = []
    for i, q in enumerate(qualities):
        meta = _meta(tmp_path, f"m{i}", task, metric)
        if task == "binary":
            oof = 1 / (1 + np.exp(-(q * (2 * y_idx - 1) + rng.normal(size=N_TRAIN))))[:, None]
            test = rng.random((N_TEST, 1))
        elif task == "regression":
            oof = np.abs(labels + rng.normal(scale=1.0 / (q + 0.2), size=N_TRAIN))[:, None]
            test = rng.gamma(2.0, 1.0, (N_TEST, 1))
        else:
            logits = q * np.eye(c)[y_idx] + rng.normal(size=(N_TRAIN, c))
            oof = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            test = rng.dirichlet(np.ones(c), N_TEST)
        oof_frame = pd.DataFrame(oof, columns=meta.pred_columns)
        oof_frame.insert(0, "fold", folds)
        oof_frame.insert(0, "id", ids)
        test_frame = pd.DataFrame(test, columns=meta.pred_columns)
        test_frame.insert(0, "id", test_ids)
        folder = tmp_path / "runs" / meta.name
        write_meta(folder, meta)
        write_parquet(folder / "oof.parquet", oof_frame)
        write_parquet(folder / "test.parquet", test_frame)
        runs.append(folder)
    if task == "regression":
        return runs, labels[:, None]
    y = y_idx if task == "multiclass" else y_idx.astype(np.float64)[:, None]
    return runs, y


@pytest.fixture
def binary_runs(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    return make_competition(tmp_path, "binary", "roc_auc", [1.2, 0.9, 0.6, 0.0])


def test_optuna_blend_writes_a_complete_folder(tmp_path, binary_runs, caplog) -> None:
    runs, y = binary_runs
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        # 100 trials: CMA-ES (the default sampler) starts at equal weights and needs a few
        # generations to take the noise member's weight under 0.05
        folder = blend.run(runs, name="b1", blends_dir=tmp_path / "blends", n_trials=100)
    assert folder == tmp_path / "blends" / "b1"
    for f in ("run.json", "oof.parquet", "test.parquet", "weights.json", "cv.json",
              "study.journal"):
        assert (folder / f).is_file(), f
    assert not (folder / "postprocess.json").exists()  # AUC scores probabilities

    pred = load_predictions(folder)
    member = load_predictions(runs[0])
    assert pred.meta.name == "b1" and pred.meta.pred_columns == ["label"]
    pd.testing.assert_frame_equal(pred.oof[["id", "fold"]], member.oof[["id", "fold"]])
    pd.testing.assert_series_equal(pred.test["id"], member.test["id"])

    weights = read_json(folder / "weights.json")
    assert sum(weights["weights"].values()) == pytest.approx(1.0)
    assert weights["weights"]["m3"] < 0.05  # pure noise
    assert weights["zero_weight"] == [n for n, w in weights["weights"].items() if w == 0]

    cv = read_json(folder / "cv.json")
    auc = get_metric("roc_auc")
    assert cv["metric"] == "roc_auc" and cv["direction"] == "maximize"
    # oof.parquet is the nested CV's held-out blend; the in-sample one is cv.json's score
    assert cv["oof"]["from"] == "nested"
    assert cv["oof"]["score"] == pytest.approx(auc(y, pred.oof_matrix))
    assert cv["oof"]["score"] == pytest.approx(cv["nested"]["pooled"])
    w = np.array([weights["weights"][f"m{i}"] for i in range(len(runs))])
    members_oof = np.stack([load_predictions(r).oof_matrix for r in runs])
    in_sample = np.einsum("m,mnc->nc", w, members_oof)
    assert cv["in_sample"]["score"] == pytest.approx(auc(y, in_sample))
    assert cv["in_sample"]["score"] > cv["oof"]["score"]  # tuned on those very rows
    assert cv["in_sample"]["score"] >= cv["best_member"]["score"]
    assert cv["in_sample"]["score"] >= cv["equal_weights"]
    assert cv["best_member"]["name"] == "m0"
    assert sorted(cv["nested"]["per_fold"]) == ["0", "1", "2", "3"]
    assert cv["nested"]["mean"] == pytest.approx(np.mean(list(cv["nested"]["per_fold"].values())))
    assert set(cv["members"]) == {"m0", "m1", "m2", "m3"}
    assert "nested CV" in caplog.text and "m3" in caplog.text


def _study_trials(storage, name: str | None = None) -> list:
    """Completed trials of the (only, or named) study in a journal file or an RDB URL."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    if isinstance(storage, Path):
        storage = JournalStorage(JournalFileBackend(str(storage)))
    if name is None:
        (summary,) = optuna.get_all_study_summaries(storage)
        name = summary.study_name
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_default_study_is_a_journal_that_a_run_with_more_trials_continues(
    tmp_path, binary_runs
) -> None:
    runs, y = binary_runs
    kw = {"name": "r", "blends_dir": tmp_path / "blends", "targets": y}
    folder = blend.run(runs, n_trials=8, **kw)
    first = _study_trials(folder / "study.journal")
    assert len(first) == 8 and not (folder / "study.db").exists()
    blend.run(runs, n_trials=12, **kw)  # a new blend hash, the same study
    again = _study_trials(folder / "study.journal")
    assert len(again) == 12
    assert [t.params for t in again[:8]] == [t.params for t in first]
    assert [t.value for t in again[:8]] == [t.value for t in first]


def test_an_rdb_url_still_holds_the_study(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    folder = blend.run(runs, name="u", blends_dir=tmp_path / "blends", targets=y, n_trials=8,
                       storage=url)
    assert len(_study_trials(url)) == 8
    assert not (folder / "study.journal").exists()
    cv = read_json(folder / "cv.json")
    assert cv["in_sample"]["score"] >= cv["equal_weights"]


def test_the_blend_is_deterministic_for_a_seed(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    kw = {"blends_dir": tmp_path / "blends", "targets": y, "n_trials": 40, "seed": 3}
    a, b = blend.run(runs, name="a", **kw), blend.run(runs, name="b", **kw)
    assert read_json(a / "weights.json") == read_json(b / "weights.json")
    assert read_json(a / "cv.json") == read_json(b / "cv.json")
    np.testing.assert_array_equal(load_predictions(a).test_matrix,
                                  load_predictions(b).test_matrix)


def test_an_older_blends_sqlite_study_is_imported_once(tmp_path, binary_runs, caplog) -> None:
    """A blend folder from before the journal holds study.db, its study named after the
    blend hash with n_trials in it: that study's trials are copied into study.journal once
    and the tuning continues from them; a study.db of other settings is left unused. Its
    trials were scored on the pooled OOF: only a blend tuned on it imports them."""
    from pipeline.ensemble import OptunaBlender

    runs, y = binary_runs
    blends = tmp_path / "blends"
    members = blend.load_members(runs)
    pooled = {"objective": "pooled"}
    old_hash = blend.blend_hash(members, "optuna", {"n_trials": 10, "seed": 0})
    folder = blends / "old"
    folder.mkdir(parents=True)
    legacy = f"sqlite:///{folder / 'study.db'}"
    OptunaBlender(metric="roc_auc", n_trials=6, storage=legacy,
                  study_name=f"blend-{old_hash}").fit(members.oof, y)
    old_trials = _study_trials(legacy, f"blend-{old_hash}")
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        blend.run(runs, name="old", blends_dir=blends, targets=y, n_trials=10, params=pooled)
    assert "imported the 6 completed trials" in caplog.text
    trials = _study_trials(folder / "study.journal")
    assert len(trials) == 10
    assert [t.params for t in trials[:6]] == [t.params for t in old_trials]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        blend.run(runs, name="old", blends_dir=blends, targets=y, n_trials=14, params=pooled)
    assert "imported" not in caplog.text  # once only: the journal is the study now
    assert len(_study_trials(folder / "study.journal")) == 14
    assert len(_study_trials(legacy, f"blend-{old_hash}")) == 6  # study.db is not written

    other = blends / "other"
    other.mkdir()
    OptunaBlender(metric="roc_auc", n_trials=4, storage=f"sqlite:///{other / 'study.db'}",
                  study_name="blend-0123456789abcdef").fit(members.oof, y)
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        blend.run(runs, name="other", blends_dir=blends, targets=y, n_trials=5, params=pooled)
    assert "holds no study of these settings; it is not used" in caplog.text
    assert len(_study_trials(other / "study.journal")) == 5


def test_blend_reads_targets_from_the_competition(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    given = blend.run(runs, method="mean", name="a", blends_dir=tmp_path, targets=y)
    read = blend.run(runs, method="mean", name="b", blends_dir=tmp_path)
    assert read_json(given / "cv.json")["in_sample"] == read_json(read / "cv.json")["in_sample"]


def test_rows_added_to_the_train_file_since_say_to_train_again(tmp_path, binary_runs) -> None:
    """Train rows added after the members trained: the refusal said only "330 targets for 300
    OOF rows", not what to do."""
    from pipeline.errors import DataError

    runs, _ = binary_runs
    path = tmp_path / "comp" / "train.csv"
    frame = pd.read_csv(path)
    pd.concat([frame, frame.head(3).assign(id=[1, 2, 3])]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"OOF rows of .*: the train file changed since; train "
                                        r"the members again"):
        blend.run(runs, method="mean", name="grown", blends_dir=tmp_path)
    assert not (tmp_path / "grown").exists()


def test_rerun_skips_a_complete_blend_and_redoes_a_changed_one(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    kw = {"name": "b", "blends_dir": tmp_path, "targets": y, "method": "hill_climb"}
    folder = blend.run(runs, **kw)
    stamp = (folder / "cv.json").stat().st_mtime_ns
    blend.run(runs, **kw)
    assert (folder / "cv.json").stat().st_mtime_ns == stamp
    first_hash = read_meta(folder).config_hash
    blend.run(runs, params={"n_iter": 3}, **kw)
    assert read_meta(folder).config_hash != first_hash


def test_default_name_and_stacking_weights(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    folder = blend.run(runs, method="stacking", blends_dir=tmp_path, targets=y)
    assert folder.name.startswith("stacking-")
    weights = read_json(folder / "weights.json")
    assert weights["weights"] is None and weights["method"] == "stacking"
    cv = read_json(folder / "cv.json")
    assert cv["in_sample"]["score"] > 0.8


def test_multiclass_accuracy_blend_gets_postprocessing(tmp_path) -> None:
    runs, y = make_competition(tmp_path, "multiclass", "accuracy", [1.5, 1.0, 0.0])
    folder = blend.run(
        runs,
        name="mc",
        blends_dir=tmp_path / "blends",
        n_trials=20,
        targets=y,
        params={"per_class": True},
        postprocess="on",  # unbiased classes: by nested CV alone the weights would not pay
    )
    pp = load_postprocess(folder)
    assert pp is not None and len(pp.class_weights) == 3
    cv = read_json(folder / "cv.json")
    assert cv["postprocess"]["applied"] and cv["postprocess"]["decision"] == "forced on"
    assert cv["postprocess"]["in_sample"] >= cv["postprocess"]["default_score"]
    assert cv["postprocess"]["default_score"] == pytest.approx(cv["in_sample"]["score"])
    assert "nested" in cv["postprocess"]
    pred = load_predictions(folder)
    np.testing.assert_allclose(pred.test_matrix.sum(axis=1), 1.0)
    assert len(read_json(folder / "weights.json")["per_class"]["m0"]) == 3


def _rewrite(folder: Path, part: str, change) -> None:
    frame = pd.read_parquet(folder / f"{part}.parquet")
    write_parquet(folder / f"{part}.parquet", change(frame))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: _rewrite(f, "oof", lambda d: d.iloc[::-1].reset_index(drop=True)), "oof ids"),
        (lambda f: _rewrite(f, "test", lambda d: d.iloc[1:]), "test ids"),
        (lambda f: _rewrite(f, "oof", lambda d: d.assign(fold=(d["fold"] + 1) % 4)), "oof folds"),
        (lambda f: _rewrite(f, "oof", lambda d: d.assign(label=np.nan)), "NaN"),
        (lambda f: _rewrite(f, "test", lambda d: d.drop(columns="label")), "missing column"),
        (
            lambda f: write_meta(f, dataclasses.replace(read_meta(f), classes=["n", "y"])),
            "classes",
        ),
        (lambda f: write_meta(f, dataclasses.replace(read_meta(f), metric="f1")), "metric"),
    ],
)
def test_members_that_differ_are_refused(tmp_path, binary_runs, change, message) -> None:
    runs, y = binary_runs
    change(runs[2])
    with pytest.raises(ValueError, match=message) as err:
        blend.run(runs, method="mean", blends_dir=tmp_path / "blends", targets=y)
    assert str(runs[2]) in str(err.value)


def test_needs_two_distinct_runs(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    with pytest.raises(ValueError, match="at least 2 runs"):
        blend.run(runs[:1], blends_dir=tmp_path, targets=y)
    with pytest.raises(ValueError, match="more than once"):
        blend.run([runs[0], runs[0]], blends_dir=tmp_path, targets=y)
    with pytest.raises(ConfigError, match="hill_climb"):  # a KeyError, a traceback, before
        blend.run(runs, method="hillclimb", blends_dir=tmp_path, targets=y)
    with pytest.raises(ValueError, match="unknown parameter"):
        blend.run(runs, method="rank", blends_dir=tmp_path, targets=y, params={"power": 3})


# --- issue 12 item 7: a blend follows its members' predictions, not only their configs -----


def _members_test(runs: list[Path]) -> np.ndarray:
    return np.stack([load_predictions(r).test_matrix for r in runs])


@pytest.mark.parametrize("part", ["test", "oof"])
def test_changed_member_predictions_redo_the_blend(tmp_path, binary_runs, part) -> None:
    """issue 12 item 7: re-predicting a member (a new TTA rewrites its predictions but not
    its training hash) redoes a blend of the same name; unchanged members skip it."""
    runs, y = binary_runs
    kw = {"name": "b", "blends_dir": tmp_path / "blends", "targets": y, "method": "hill_climb",
          "params": {"n_iter": 6}}
    folder = blend.run(runs, **kw)
    stamp = (folder / "cv.json").stat().st_mtime_ns
    first = read_meta(folder).config_hash
    blend.run(runs, **kw)
    assert (folder / "cv.json").stat().st_mtime_ns == stamp  # up to date: skipped
    first_weights = read_json(folder / "weights.json")["weights"]
    # the strongest member's predictions change as a re-predict would change them; its
    # run.json (training hash included) stays as it was
    if part == "test":
        _rewrite(runs[0], "test", lambda d: d.assign(label=d["label"] ** 2))
    else:  # its OOF becomes noise: the tuned weights must move away from it
        noise = np.random.default_rng(5).random(N_TRAIN)
        _rewrite(runs[0], "oof", lambda d: d.assign(label=noise))
    blend.run(runs, **kw)
    assert read_meta(folder).config_hash != first
    assert (folder / "cv.json").stat().st_mtime_ns != stamp
    weights = read_json(folder / "weights.json")["weights"]
    if part == "oof":
        assert weights["m0"] < first_weights["m0"]
    # the blend's test predictions are the new members' test predictions under its weights
    w = np.array([weights[f"m{i}"] for i in range(len(runs))])
    np.testing.assert_allclose(load_predictions(folder).test_matrix,
                               np.einsum("m,mnc->nc", w, _members_test(runs)))


def test_a_blend_whose_member_changed_since_is_refused_by_submit(tmp_path, binary_runs) -> None:
    """A member retrained or predicted again after the blend, the blend not rerun: submit
    wrote the old members' blend, silently. It is refused until the blend is redone; a
    member folder removed since leaves the blend submittable."""
    import shutil

    from pipeline import submit
    from pipeline.errors import DataError

    runs, y = binary_runs
    _sample_submission(runs)
    kw = {"name": "b", "blends_dir": tmp_path / "blends", "targets": y, "method": "mean"}
    folder = blend.run(runs[:2], **kw)
    subs = tmp_path / "submissions"
    first = submit.run(folder, None, subs).read_text()
    _rewrite(runs[0], "test", lambda d: d.assign(label=d["label"] ** 2))
    with pytest.raises(DataError, match=f"{runs[0]} predicts otherwise"):
        submit.run(folder, None, subs)
    blend.run(runs[:2], **kw)  # redone from the new predictions
    new = pd.read_csv(submit.run(folder, None, subs))
    assert new.to_csv(index=False) != first
    np.testing.assert_allclose(new["yes"] if "yes" in new else new["label"],
                               _members_test(runs[:2]).mean(axis=0)[:, 0])
    shutil.rmtree(runs[1])
    assert submit.run(folder, None, subs).is_file()


def test_repredicting_a_member_with_tta_redoes_the_blend(competition_factory, tmp_path) -> None:
    """issue 12 item 7, end to end: blend a run with another member, re-predict the run with
    a TTA (predictions change, the training hash does not), blend again under the same name:
    the blend is redone with the new predictions."""
    import shutil

    import torch

    from pipeline import predict, train
    from pipeline.config import build_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    try:
        data = competition_factory("tabular", "binary", n_train=32, n_test=8)
        data["train"]["epochs"] = 1
        cfg = build_config(data)
        train.run(cfg)
        # a second member: the run's gathered files under another name (one training only)
        other = tmp_path / "other"
        other.mkdir()
        for name in ("oof.parquet", "test.parquet"):
            shutil.copy(cfg.run_dir / name, other / name)
        write_meta(other, read_meta(cfg.run_dir))  # its run.json written where it lies
        members = [cfg.run_dir, other]
        kw = {"method": "mean", "name": "b", "blends_dir": tmp_path / "blends"}
        folder = blend.run(members, **kw)
        before = load_predictions(folder).test_matrix
        tta = build_config({**data, "predict": {"tta": ["noise"]}})
        assert tta.train_hash() == cfg.train_hash()
        predict.run(tta)
        blend.run(members, **kw)
    finally:
        torch.set_num_threads(threads)
    after = load_predictions(folder).test_matrix
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, _members_test(members).mean(axis=0))


def test_the_test_blend_uses_the_weights_fitted_on_the_oof(tmp_path, binary_runs) -> None:
    """issue 12 blender invariants, at the stage: the written test blend is the members'
    test predictions under the weights in weights.json; the written OOF blend is out of fold:
    each fold's rows under weights tuned on the other folds alone (the nested CV's)."""
    from pipeline.ensemble import build_blender

    runs, y = binary_runs
    # 40 trials: with 12, each fold's study kept the same best draw as the whole OOF's
    folder = blend.run(runs, method="optuna", name="o", blends_dir=tmp_path, targets=y,
                       n_trials=40)
    weights = read_json(folder / "weights.json")["weights"]
    w = np.array([weights[f"m{i}"] for i in range(len(runs))])
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    pred = load_predictions(folder)
    oof = np.stack([load_predictions(r).oof_matrix for r in runs])
    np.testing.assert_allclose(pred.test_matrix, np.einsum("m,mnc->nc", w, _members_test(runs)))
    assert not np.allclose(pred.oof_matrix, np.einsum("m,mnc->nc", w, oof))  # not in-sample
    folds = pred.oof["fold"].to_numpy()
    for k in np.unique(folds):
        rest = folds != k
        inner = build_blender("optuna", metric="roc_auc", n_trials=40).fit(
            oof[:, rest], y[rest], folds[rest])
        np.testing.assert_allclose(pred.oof_matrix[~rest], inner.predict(oof[:, ~rest]))


# --- issue 12 item 16: the nested post-processing score is honest ---------------------------


def test_nested_postprocess_score_is_tuned_without_the_held_out_fold(tmp_path) -> None:
    """issue 12 item 16: cv.json's nested post-processing score of each fold comes from a
    rule tuned on the inner blend of the other folds (its blender never saw the fold), not
    on the other folds' held-out predictions, whose blenders were fitted on the fold."""
    from sklearn.base import clone

    from pipeline.ensemble import build_blender, fit_postprocess

    runs, y = make_competition(tmp_path, "binary", "accuracy", [1.0, 0.8, 0.5, 0.0], seed=1)
    folder = blend.run(runs, method="hill_climb", name="h", blends_dir=tmp_path / "blends",
                       targets=y, params={"n_iter": 10})
    reported = read_json(folder / "cv.json")["postprocess"]["nested"]
    oof = np.stack([load_predictions(r).oof_matrix for r in runs])
    folds = load_predictions(runs[0]).oof["fold"].to_numpy()
    blender = build_blender("hill_climb", metric="accuracy", seed=0, n_iter=10)
    inner = {f: clone(blender).fit(oof[:, folds != f], y[folds != f], folds[folds != f])
             for f in range(N_FOLDS)}
    held_out = np.zeros_like(y)
    for f, model in inner.items():
        held_out[folds == f] = model.predict(oof[:, folds == f])
    honest, leaked = {}, {}
    for f, model in inner.items():
        train, held = folds != f, folds == f
        rule = fit_postprocess("binary", "accuracy", y[train], model.oof_)
        honest[str(f)] = rule.evaluate(y[held], held_out[held])
        # what tuning on the held-out predictions of blenders fitted on fold f gives
        rule = fit_postprocess("binary", "accuracy", y[train], held_out[train])
        leaked[str(f)] = rule.evaluate(y[held], held_out[held])
    assert reported["per_fold"] == pytest.approx(honest)
    assert reported["mean"] == pytest.approx(np.mean(list(honest.values())))
    # in this case the leak is visible: it flatters the score
    assert np.mean(list(leaked.values())) > reported["mean"] + 0.02


# --- issue 12 item 19: rank and power only under metrics that read the order ---------------


@pytest.mark.parametrize(("task", "metric"),
                         [("binary", "log_loss"), ("multiclass", "accuracy"),
                          ("regression", "rmse")])
@pytest.mark.parametrize("method", ["rank", "power"])
def test_order_only_blend_is_refused_under_a_value_metric(tmp_path, capsys, task, metric,
                                                          method) -> None:
    """issue 12 item 19: rank and power output an order, so a metric that scores the
    predictions themselves refuses them: one line, exit status 2, no blend folder."""
    from pipeline import cli

    runs, _ = make_competition(tmp_path, task, metric, [1.0, 0.5])
    blends = tmp_path / "blends"
    code = cli.main(["blend", "--runs", *map(str, runs), "--method", method,
                     "--blends-dir", str(blends)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert repr(method) in err and repr(metric) in err
    assert not blends.exists()
    with pytest.raises(ConfigError, match="outputs an order"):
        blend.run(runs, method=method, blends_dir=blends)


@pytest.mark.parametrize(("task", "metric"),
                         [("binary", "roc_auc"), ("binary", "average_precision"),
                          ("multiclass", "map@3"), ("regression", "spearman")])
@pytest.mark.parametrize("method", ["rank", "power"])
def test_order_only_blend_is_accepted_under_an_order_metric(tmp_path, capsys, task, metric,
                                                            method) -> None:
    """issue 12 item 19: under ROC AUC, average precision, MAP@k and Spearman (metrics that
    read only the order) rank and power blend as before."""
    from pipeline import cli

    runs, y = make_competition(tmp_path, task, metric, [1.0, 0.5])
    blends = tmp_path / "blends"
    code = cli.main(["blend", "--runs", *map(str, runs), "--method", method,
                     "--blends-dir", str(blends), "--name", "b"])
    assert code == 0, capsys.readouterr().err
    cv = read_json(blends / "b" / "cv.json")
    assert cv["metric"] == metric
    assert cv["in_sample"]["score"] == pytest.approx(
        get_metric(metric)(y, load_predictions(blends / "b").oof_matrix))


def test_rank_blend_under_map_at_k_keeps_each_rows_class_order(tmp_path) -> None:
    """The blend stage hands the metric to the rank blender: under MAP@3 two members with
    the same class order in every row blend to that order (OOF score and submitted top
    classes alike), where ranks over each column's rows reordered the classes."""
    runs, y = make_competition(tmp_path, "multiclass", "map@3", [1.0, 0.5])
    first = load_predictions(runs[0])
    sharper = first.oof_matrix ** 3 / (first.oof_matrix ** 3).sum(axis=1, keepdims=True)
    oof = first.oof.copy()
    oof[first.meta.pred_columns] = sharper
    write_parquet(runs[1] / "oof.parquet", oof)
    write_parquet(runs[1] / "test.parquet", first.test)
    folder = blend.run(runs, method="rank", name="r", blends_dir=tmp_path / "blends",
                       targets=y)
    metric = get_metric("map@3")
    cv = read_json(folder / "cv.json")
    assert cv["in_sample"]["score"] == metric(y, first.oof_matrix)
    blended = load_predictions(folder).test_matrix
    np.testing.assert_array_equal(np.argsort(-blended, axis=1, kind="stable")[:, :3],
                                  np.argsort(-first.test_matrix, axis=1, kind="stable")[:, :3])


def test_every_blender_meets_the_metric_rule_of_the_stage(tmp_path) -> None:
    """issue 12 item 19 / blender invariants: looping over BLENDERS, the blend stage refuses
    exactly the order-only ones under log_loss and takes every one under roc_auc."""
    from pipeline.ensemble import BLENDERS

    loss_runs, y = make_competition(tmp_path / "loss", "binary", "log_loss", [1.0, 0.5])
    auc_runs, _ = make_competition(tmp_path / "auc", "binary", "roc_auc", [1.0, 0.5])
    for method in BLENDERS:
        params = {"n_iter": 3} if method == "hill_climb" else {}
        kw = {"method": method, "name": method, "targets": y, "n_trials": 4, "params": params}
        if BLENDERS.get(method).order_only:
            with pytest.raises(ConfigError, match=method):
                blend.run(loss_runs, blends_dir=tmp_path / "loss_blends", **kw)
        else:
            assert (blend.run(loss_runs, blends_dir=tmp_path / "loss_blends", **kw)
                    / "cv.json").is_file()
        assert (blend.run(auc_runs, blends_dir=tmp_path / "auc_blends", **kw)
                / "cv.json").is_file()


def test_stacking_on_two_fold_members_is_refused_in_one_line(tmp_path, capsys) -> None:
    """Stacking's nested CV fits its second-level model on inner folds of the other folds, so
    members of 2 folds (a quick run) cannot give it one: refused in one line, exit 2, no blend
    folder, where it was a ValueError traceback after the folder was made. A weight blender
    takes the same members."""
    from pipeline import cli

    runs, y = make_competition(tmp_path, "binary", "roc_auc", [1.0, 0.5])
    for run in runs:
        _rewrite(run, "oof", lambda d: d.assign(fold=d["fold"] % 2))
    blends = tmp_path / "blends"
    code = cli.main(["blend", "--runs", *map(str, runs), "--method", "stacking",
                     "--blends-dir", str(blends)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "'stacking' needs members trained on at least 3 folds" in err and "has 2" in err
    assert not blends.exists()
    folder = blend.run(runs, method="mean", name="m", blends_dir=blends, targets=y)
    assert sorted(read_json(folder / "cv.json")["nested"]["per_fold"]) == ["0", "1"]


# --- issue 15 item 2: post-processing only where the nested CV says it helps ---------------


def _binary_runs(tmp_path: Path, preds: np.ndarray, metric: str) -> list[Path]:
    """One binary run folder per member of ``preds`` ``(m, n, 1)``, 4 folds, 8 test rows."""
    n = preds.shape[1]
    runs = []
    for i, oof in enumerate(preds):
        meta = _meta(tmp_path, f"m{i}", "binary", metric)
        folder = tmp_path / "runs" / meta.name
        write_meta(folder, meta)
        write_parquet(folder / "oof.parquet",
                      pd.DataFrame({"id": np.arange(n), "fold": np.arange(n) % 4,
                                    "label": oof[:, 0]}))
        write_parquet(folder / "test.parquet",
                      pd.DataFrame({"id": np.arange(8) + 1000, "label": np.linspace(0, 1, 8)}))
        runs.append(folder)
    return runs


def test_postprocessing_that_hurts_the_nested_score_is_not_applied(tmp_path, caplog) -> None:
    """issue 15 item 2: 40 noisy rows: a threshold tuned on 30 of them fits their noise. In
    sample it looks better than 0.5, but each fold's threshold, tuned without the fold, scores
    the fold worse than 0.5 does: the blend keeps 0.5 and says so in the log and cv.json."""
    rng = np.random.default_rng(7)
    y = (rng.random(40) < 0.5).astype(np.float64)[:, None]
    preds = np.stack([1 / (1 + np.exp(-(0.8 * (2 * y - 1) + 1.5 * rng.normal(size=(40, 1)))))
                      for _ in range(2)])
    runs = _binary_runs(tmp_path, preds, "accuracy")
    kw = {"method": "mean", "blends_dir": tmp_path / "blends", "targets": y}
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        folder = blend.run(runs, name="noisy", **kw)
    cv = read_json(folder / "cv.json")
    pp = cv["postprocess"]
    assert pp["in_sample"] > pp["default_score"]  # in sample the threshold looks like a gain
    assert pp["nested_without"] == pytest.approx(cv["nested"]["mean"]) == pytest.approx(0.75)
    assert pp["nested"]["mean"] == pytest.approx(0.65)  # ... that does not hold out of sample
    assert pp["mode"] == "auto" and pp["applied"] is False
    assert pp["decision"] == "auto: it does not improve the nested CV score"
    assert load_postprocess(folder) is None  # submit labels with 0.5
    (line,) = [r.getMessage() for r in caplog.records if "post-processing" in r.getMessage()]
    assert "nested CV 0.650000 with, 0.750000 without" in line and "-> not applied" in line

    forced = blend.run(runs, name="forced", postprocess="on", **kw)
    assert read_json(forced / "cv.json")["postprocess"]["applied"] is True
    assert load_postprocess(forced) is not None


def test_postprocessing_that_helps_the_nested_score_is_applied(tmp_path) -> None:
    """issue 15 item 2: rare positives with under-confident probabilities: under F1 a
    threshold below 0.5 wins in every nested fold, so the blend gets it; ``off`` (a changed
    mode redoes the blend) removes it again."""
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.15).astype(np.float64)[:, None]
    preds = np.stack([1 / (1 + np.exp(-(2.5 * y - 3.0 + rng.normal(size=(200, 1)))))
                      for _ in range(2)])
    runs = _binary_runs(tmp_path, preds, "f1")
    kw = {"method": "mean", "name": "skewed", "blends_dir": tmp_path / "blends", "targets": y}
    folder = blend.run(runs, **kw)
    pp = read_json(folder / "cv.json")["postprocess"]
    assert pp["nested"]["mean"] > pp["nested_without"] + 0.1
    assert pp["applied"] is True and pp["decision"] == "auto: it improves the nested CV score"
    rule = load_postprocess(folder)
    assert rule is not None and rule.thresholds[0] < 0.5

    blend.run(runs, postprocess="off", **kw)
    pp = read_json(folder / "cv.json")["postprocess"]
    assert pp["applied"] is False and pp["decision"] == "forced off"
    assert load_postprocess(folder) is None
    with pytest.raises(ConfigError, match=r"'postprocess'.*\['auto', 'on', 'off'\]. Got 'yes'"):
        blend.run(runs, postprocess="yes", **kw)


def test_a_blend_leaves_out_tuning_estimated_to_take_too_long_unless_forced(
        tmp_path, monkeypatch, caplog) -> None:
    """A blend's post-processing search (in-sample and in every nested fold) is estimated
    first, as a run's is: over the budget, 'auto' and 'off' label with 0.5 and say why; 'on'
    tunes regardless. Before, the blend ran the whole search whatever it cost."""
    from pipeline.ensemble import _tuning_cost

    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.15).astype(np.float64)[:, None]
    preds = np.stack([1 / (1 + np.exp(-(2.5 * y - 3.0 + rng.normal(size=(200, 1)))))
                      for _ in range(2)])
    runs = _binary_runs(tmp_path, preds, "f1")
    kw = {"method": "mean", "blends_dir": tmp_path / "blends", "targets": y}
    monkeypatch.setattr(_tuning_cost, "POSTPROCESS_BUDGET_S", 0)  # any estimate is over it
    with caplog.at_level(logging.WARNING):
        folder = blend.run(runs, name="costly", **kw)
    assert "blend costly: post-processing not tuned" in caplog.text
    assert "--postprocess on" in caplog.text
    cv = read_json(folder / "cv.json")
    assert "postprocess" not in cv and load_postprocess(folder) is None  # 0.5 labels it
    forced = blend.run(runs, name="forced", postprocess="on", **kw)
    assert read_json(forced / "cv.json")["postprocess"]["applied"] is True
    assert load_postprocess(forced) is not None


# --- issue 15 item 7: a blend name reused with other members --------------------------------


def test_a_name_reused_with_other_members_is_refused(tmp_path, binary_runs, capsys) -> None:
    """issue 15 item 7: one line naming both member lists and the ways out; the old blend is
    left as it was. Another method under the name is refused too."""
    from pipeline import cli

    runs, y = binary_runs
    blends = tmp_path / "blends"
    kw = {"method": "mean", "name": "ab", "blends_dir": blends, "targets": y}
    folder = blend.run(runs[:3], **kw)
    stamp = (folder / "cv.json").stat().st_mtime_ns
    with pytest.raises(ConfigError) as err:
        blend.run([runs[0], runs[1], runs[3]], **kw)
    message = str(err.value)
    assert "['m0', 'm1', 'm2']" in message and "['m0', 'm1', 'm3']" in message
    assert "--overwrite" in message and "'ab-v2'" in message
    with pytest.raises(ConfigError, match=r"\(mean\); this one is of .* \(hill_climb\)"):
        blend.run(runs[:3], **{**kw, "method": "hill_climb"})
    code = cli.main(["blend", "--runs", *map(str, runs[1:]), "--method", "mean",
                     "--name", "ab", "--blends-dir", str(blends)])
    assert code == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "['m1', 'm2', 'm3']" in err_text
    assert (folder / "cv.json").stat().st_mtime_ns == stamp
    assert read_json(folder / "blend.json")["members"] == ["m0", "m1", "m2"]
    code = cli.main(["blend", "--runs", *map(str, runs[1:]), "--method", "mean",
                     "--name", "ab", "--blends-dir", str(blends), "--new-version"])
    assert code == 0 and read_json(blends / "ab-v2" / "blend.json")["members"] == [
        "m1", "m2", "m3"]
    # the same members, in another order and with other settings: the same blend, redone
    blend.run(runs[2::-1], params={}, seed=1, **kw)
    assert read_json(folder / "blend.json")["params"]["seed"] == 1


def test_new_version_writes_the_next_free_name_and_resumes_it(tmp_path, binary_runs) -> None:
    runs, y = binary_runs
    blends = tmp_path / "blends"
    kw = {"method": "mean", "name": "ab", "blends_dir": blends, "targets": y}
    first = blend.run(runs[:2], **kw)
    second = blend.run(runs[2:], new_version=True, **kw)
    assert second == blends / "ab-v2"
    assert read_json(second / "blend.json")["members"] == ["m2", "m3"]
    assert read_json(first / "blend.json")["members"] == ["m0", "m1"]
    stamp = (second / "cv.json").stat().st_mtime_ns
    assert blend.run(runs[2:], new_version=True, **kw) == second  # this blend's version
    assert (second / "cv.json").stat().st_mtime_ns == stamp  # up to date: skipped
    assert blend.run(runs[2:], new_version=True, **{**kw, "name": "ab-v2"}) == second
    assert blend.run(runs[1:3], new_version=True, **kw) == blends / "ab-v3"
    assert blend.run(runs[:2], new_version=True, **kw) == first


def _sample_submission(runs: list[Path]) -> None:
    meta = read_meta(runs[0])
    test_ids = load_predictions(runs[0]).test["id"]
    pd.DataFrame({"id": test_ids, "label": "no"}).to_csv(
        Path(meta.competition_dir) / meta.sample_submission_file, index=False)


def test_overwrite_replaces_the_blend_and_its_stale_submission(tmp_path, binary_runs,
                                                               caplog) -> None:
    """issue 15 item 7: ``overwrite`` replaces a blend of other members; the submission the
    old blend left under its name is written again from the new one, not left claiming to
    be current. A submission under that name that the old blend did not make is left alone."""
    from pipeline import submit

    runs, y = binary_runs
    _sample_submission(runs)
    subs, blends = tmp_path / "submissions", tmp_path / "blends"
    kw = {"name": "ab", "blends_dir": blends, "targets": y, "submissions_dir": subs,
          "method": "hill_climb", "params": {"n_iter": 4}}
    folder = blend.run(runs[:2], **kw)
    path = submit.run(folder, None, subs)
    first = path.read_text()
    # the same members with other settings: redone, and its submission follows it
    blend.run(runs[:2], **{**kw, "params": {"n_iter": 1}})
    old = path.read_text()
    assert old != first
    assert old == submit.format_submission(
        read_meta(folder), load_predictions(folder).test,
        pd.read_csv(tmp_path / "comp" / "sample_submission.csv"), folder).to_csv(index=False)
    with caplog.at_level(logging.INFO, logger="pipeline.blend"):
        assert blend.run(runs[1:], overwrite=True, **kw) == folder
    assert read_json(folder / "blend.json")["members"] == ["m1", "m2", "m3"]
    assert set(read_json(folder / "cv.json")["members"]) == {"m1", "m2", "m3"}
    assert "replacing the blend of ['m0', 'm1']" in caplog.text
    new = path.read_text()
    assert new != old
    expected = submit.format_submission(read_meta(folder), load_predictions(folder).test,
                                        pd.read_csv(tmp_path / "comp" / "sample_submission.csv"),
                                        folder)
    assert new == expected.to_csv(index=False)
    assert "written again from the new blend" in caplog.text

    path.write_text(old)  # a file this blend did not make (an old copy put back by hand)
    blend.run(runs[:2], overwrite=True, **kw)
    assert path.read_text() == old
    assert read_json(folder / "blend.json")["members"] == ["m0", "m1"]


def _value_qwk(ratings: np.ndarray, y: np.ndarray, labels: np.ndarray) -> float:
    """Kaggle's QWK of rating values: weights (a - b)^2 between the ratings themselves."""
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(ratings[y], ratings[labels], weights="quadratic",
                                   labels=range(ratings.min(), ratings.max() + 1)))


def test_a_qwk_blend_weighs_the_ratings_values(tmp_path) -> None:
    """Ratings 1, 2, 5: member scores, the blend's score and its tuned class weights were
    all QWK of class positions (a 2 taken for a 5 cost 1, not 9), unlike Kaggle's."""
    runs, y = make_competition(tmp_path, "multiclass", "qwk", [1.5, 0.8, 0.0])
    ratings, columns = np.array([1, 2, 5]), ["1", "2", "5"]
    for folder in runs:
        meta = read_meta(folder)
        write_meta(folder, dataclasses.replace(meta, classes=ratings.tolist(),
                                               pred_columns=columns))
        for part in ("oof", "test"):
            frame = pd.read_parquet(folder / f"{part}.parquet")
            write_parquet(folder / f"{part}.parquet",
                          frame.rename(columns=dict(zip(CLASSES, columns, strict=True))))
    folder = blend.run(runs, method="hill_climb", name="q", blends_dir=tmp_path / "blends",
                       targets=y, postprocess="on")
    cv = read_json(folder / "cv.json")
    for name, run in zip(("m0", "m1", "m2"), runs, strict=True):
        oof = pd.read_parquet(run / "oof.parquet")[columns].to_numpy()
        assert cv["members"][name] == pytest.approx(_value_qwk(ratings, y, oof.argmax(axis=1)))
    # the rule is tuned on the in-sample blend (the weights of weights.json on every row);
    # oof.parquet holds the nested CV's held-out one, scored there under argmax
    weights = read_json(folder / "weights.json")["weights"]
    blended = sum(w * pd.read_parquet(run / "oof.parquet")[columns].to_numpy()
                  for w, run in zip(weights.values(), runs, strict=True))
    published = pd.read_parquet(folder / "oof.parquet")[columns].to_numpy()
    assert cv["oof"]["score"] == pytest.approx(_value_qwk(ratings, y, published.argmax(axis=1)))
    pp = load_postprocess(folder)
    assert pp is not None
    assert cv["in_sample"]["score"] == pytest.approx(cv["postprocess"]["default_score"])
    assert cv["in_sample"]["score"] == pytest.approx(_value_qwk(ratings, y, blended.argmax(1)))
    assert cv["postprocess"]["in_sample"] == pytest.approx(
        _value_qwk(ratings, y, pp.labels(blended)))

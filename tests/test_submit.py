"""Submit stage: the sample submission decides ids, row order, columns and value format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import submit
from pipeline.artifacts import RunMeta, write_json, write_meta
from pipeline.errors import DataError

IDS = ["s03", "s01", "s04", "s00", "s02"]  # sample_submission order (not sorted)


def _run_folder(
    root: Path, task: str, metric: str, classes: list[Any], pred_columns: list[str],
    test: pd.DataFrame, sample: pd.DataFrame, target_columns: list[str] | None = None,
) -> Path:
    """A finished run: run.json, oof.parquet, test.parquet, and its competition folder."""
    comp = root / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    sample.to_csv(comp / "sample_submission.csv", index=False)
    targets = target_columns or ["target"]
    # the OOF rows' targets (a regression's clip reads them): the OOF's 0.5 lies inside
    pd.DataFrame({"id": ["t0", "t1"], **{t: [0.0, 10.0] for t in targets}}).to_csv(
        comp / "train.csv", index=False)
    run = root / "runs" / "exp"
    run.mkdir(parents=True, exist_ok=True)
    write_meta(run, RunMeta(
        name="exp", task=task, metric=metric, id_column="id", target_columns=targets,
        classes=classes, pred_columns=pred_columns, folds_file=str(root / "folds.csv"),
        competition_dir=str(comp), train_file="train.csv", config_hash="0123456789abcdef",
    ))
    oof = pd.DataFrame({"id": ["t0", "t1"], "fold": [0, 1]})
    for c in pred_columns:
        oof[c] = 0.5
    oof.to_parquet(run / "oof.parquet", index=False)
    test.to_parquet(run / "test.parquet", index=False)
    return run


def _test_frame(columns: dict[str, np.ndarray], ids: list[str] | None = None) -> pd.DataFrame:
    """test.parquet rows in sorted-id order, i.e. not the sample's order."""
    return pd.DataFrame({"id": ids or sorted(IDS), **columns})


def _sample(*columns: str, ids: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"id": ids or IDS, **{c: 0 for c in columns}})


def _submit(run: Path, root: Path) -> pd.DataFrame:
    path = submit.run(run, "sub", root / "submissions")
    assert path == root / "submissions" / "sub.csv"
    return pd.read_csv(path)


def _by_sample(values: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
    """Rows of ``values`` (sorted-id order) rearranged into the sample's order."""
    order = sorted(ids or IDS)
    return values[[order.index(i) for i in (ids or IDS)]]


def test_regression_rows_follow_sample_order(tmp_path: Path) -> None:
    values = np.array([10.5, 11.25, 12.0, 13.75, 14.5])  # by sorted id: s00..s04
    reversed_ids = sorted(IDS)[::-1]
    test = pd.DataFrame({"id": reversed_ids, "target": values[::-1]})
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"], test, _sample("target"))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", "target"]
    assert sub["id"].tolist() == IDS
    np.testing.assert_allclose(sub["target"], _by_sample(values))


def test_multiclass_label_column_gets_train_label_values(tmp_path: Path) -> None:
    classes = ["bird", "cat", "dog"]
    p = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3],
                  [0.1, 0.1, 0.8]])
    test = _test_frame({c: p[:, i] for i, c in enumerate(classes)})
    run = _run_folder(tmp_path, "multiclass", "accuracy", classes, classes, test,
                      _sample("target"))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", "target"] and sub["id"].tolist() == IDS
    expected = np.array(classes)[p.argmax(axis=1)]
    assert sub["target"].tolist() == _by_sample(expected).tolist()
    assert set(sub["target"]) <= set(classes)


def test_multiclass_integer_labels_stay_labels_with_probability_metric(tmp_path: Path) -> None:
    """A single label column gets labels even when the metric scores probabilities."""
    classes = [3, 5, 7]
    p = np.eye(3)[[2, 0, 1, 1, 0]] * 0.9 + 0.05
    test = _test_frame({str(c): p[:, i] for i, c in enumerate(classes)})
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, ["3", "5", "7"], test,
                      _sample("target"))
    sub = _submit(run, tmp_path)
    assert sub["target"].tolist() == _by_sample(np.array([7, 3, 5, 5, 3])).tolist()


def test_multiclass_one_column_per_class_in_sample_order(tmp_path: Path) -> None:
    classes = ["bird", "cat", "dog"]
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=5)
    test = _test_frame({c: p[:, i] for i, c in enumerate(classes)})
    sample = _sample("dog", "bird", "cat")
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, classes, test, sample)
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", "dog", "bird", "cat"]
    assert sub["id"].tolist() == IDS
    for i, c in enumerate(classes):
        np.testing.assert_allclose(sub[c], _by_sample(p[:, i]))
    np.testing.assert_allclose(sub[["dog", "bird", "cat"]].sum(axis=1), 1.0)


def test_multiclass_probability_columns_sum_to_one_in_float64(tmp_path: Path) -> None:
    """Predictions are stored as float32 (rows off 1 by ~1e-7: scikit-learn's log_loss
    warned 'do not sum to one' on a probe's submission); each submitted row sums to 1."""
    classes = [f"c{k}" for k in range(12)]
    p = np.random.default_rng(3).dirichlet(np.full(12, 0.3), size=5).astype(np.float32)
    assert np.abs(p.astype(np.float64).sum(axis=1) - 1).max() > 1e-9  # as stored
    test = _test_frame({c: p[:, i] for i, c in enumerate(classes)})
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, classes, test,
                      _sample(*classes[::-1]))
    sub = _submit(run, tmp_path)
    np.testing.assert_allclose(sub[classes].sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sub[classes].to_numpy(), _by_sample(p), rtol=1e-6)


def _binary(tmp_path: Path, metric: str,
            sample: pd.DataFrame | None = None) -> tuple[Path, np.ndarray]:
    p = np.array([0.2, 0.7, 0.5, 0.9, 0.1])
    run = _run_folder(tmp_path, "binary", metric, ["no", "yes"], ["target"],
                      _test_frame({"target": p}), _sample("target") if sample is None else sample)
    return run, p


def test_binary_label_metric_writes_train_labels(tmp_path: Path) -> None:
    run, p = _binary(tmp_path, "accuracy")
    sub = _submit(run, tmp_path)
    expected = np.where(p >= 0.5, "yes", "no")
    assert sub["target"].tolist() == _by_sample(expected).tolist()


def test_binary_tuned_threshold_is_applied(tmp_path: Path) -> None:
    run, p = _binary(tmp_path, "f1")
    write_json(run / "postprocess.json", {"task": "binary", "metric": "f1",
                                          "thresholds": [0.8], "class_weights": []})
    sub = _submit(run, tmp_path)
    expected = np.where(p >= 0.8, "yes", "no")
    assert sub["target"].tolist() == _by_sample(expected).tolist()


def test_binary_probability_metric_writes_probabilities(tmp_path: Path) -> None:
    run, p = _binary(tmp_path, "roc_auc")
    sub = _submit(run, tmp_path)
    np.testing.assert_allclose(sub["target"], _by_sample(p))


def test_binary_one_column_per_class_gets_both_probabilities(tmp_path: Path) -> None:
    # a sample laid out as [id, yes, no] used to be refused after training
    run, p = _binary(tmp_path, "log_loss", sample=_sample("yes", "no"))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", "yes", "no"]
    np.testing.assert_allclose(sub["yes"], _by_sample(p))
    np.testing.assert_allclose(sub["no"], 1 - _by_sample(p))


def test_multilabel_probabilities_and_labels(tmp_path: Path) -> None:
    p = np.array([[0.9, 0.2], [0.4, 0.6], [0.5, 0.5], [0.1, 0.3], [0.7, 0.8]])
    for metric, expected in (("roc_auc", p), ("f1_macro", (p >= 0.5).astype(int))):
        root = tmp_path / metric
        run = _run_folder(root, "multilabel", metric, [], ["a", "b"],
                          _test_frame({"a": p[:, 0], "b": p[:, 1]}), _sample("a", "b"),
                          target_columns=["a", "b"])
        sub = _submit(run, root)
        assert list(sub.columns) == ["id", "a", "b"]
        np.testing.assert_allclose(sub[["a", "b"]].to_numpy(), _by_sample(expected))


@pytest.mark.parametrize(("task", "metric"), [
    ("regression", "rmse"), ("multilabel", "roc_auc"), ("multilabel", "f1_macro")])
def test_target_columns_in_another_order_are_filled_by_name(tmp_path: Path, task: str,
                                                           metric: str) -> None:
    # a sample listing the targets in another order than the config was refused, at load and
    # at submit, though scorers read the columns by name
    p = np.array([[0.9, 0.2, 0.6], [0.4, 0.6, 0.1], [0.5, 0.3, 0.7], [0.1, 0.3, 0.2],
                  [0.7, 0.8, 0.9]])
    run = _run_folder(tmp_path, task, metric, [], ["a", "b", "c"],
                      _test_frame({c: p[:, i] for i, c in enumerate("abc")}),
                      _sample("c", "a", "b"), target_columns=["a", "b", "c"])
    if metric == "f1_macro":  # tuned thresholds, one per target in the config's order
        write_json(run / "postprocess.json", {"task": task, "metric": metric,
                                              "thresholds": [0.85, 0.25, 0.65],
                                              "class_weights": []})
        p = (p >= [0.85, 0.25, 0.65]).astype(int)
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", "c", "a", "b"] and sub["id"].tolist() == IDS
    for i, c in enumerate("abc"):
        np.testing.assert_allclose(sub[c], _by_sample(p[:, i]))


def test_sample_columns_that_are_not_the_targets_are_named(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, "regression", "rmse", [], ["a", "b"],
                      _test_frame({"a": np.zeros(5), "b": np.zeros(5)}), _sample("a", "z"),
                      target_columns=["a", "b"])
    with pytest.raises(DataError, match=r"columns \['a', 'z'\] are not the target columns "
                       r"\['a', 'b'\]$"):
        submit.run(run, "sub", tmp_path / "submissions")


def test_rmsle_submission_clips_negative_predictions_as_the_metric_does(tmp_path: Path) -> None:
    test = _test_frame({"target": np.array([-0.5, 2.0, -3.0, 0.0, 1.5])})
    run = _run_folder(tmp_path, "regression", "rmsle", [], ["target"], test, _sample("target"))
    sub = _submit(run, tmp_path)
    np.testing.assert_allclose(sub["target"], _by_sample(np.array([0.0, 2.0, 0.0, 0.0, 1.5])))


def test_integer_ids_kept(tmp_path: Path) -> None:
    ids = [30, 10, 20]
    test = pd.DataFrame({"id": [10, 20, 30], "target": [1.0, 2.0, 3.0]})
    sample = pd.DataFrame({"id": ids, "target": 0.0})
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"], test, sample)
    sub = _submit(run, tmp_path)
    assert sub["id"].tolist() == ids and sub["target"].tolist() == [3.0, 1.0, 2.0]


def test_zero_padded_ids_kept(tmp_path: Path) -> None:
    ids = ["0030", "0010", "0020"]
    test = pd.DataFrame({"id": ["0010", "0020", "0030"], "target": [1.0, 2.0, 3.0]})
    sample = pd.DataFrame({"id": ids, "target": 0.0})
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"], test, sample)
    sub = pd.read_csv(submit.run(run, "sub", tmp_path / "submissions"), dtype=str)
    assert sub["id"].tolist() == ids  # not 30, 10, 20


# --- refusals ------------------------------------------------------------------------------


def _regression_test(values: np.ndarray | None = None,
                     ids: list[str] | None = None) -> pd.DataFrame:
    ids = ids or sorted(IDS)
    return pd.DataFrame({"id": ids, "target": np.arange(len(ids), dtype=float)
                         if values is None else values})


REFUSALS: dict[str, tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]] = {
    "nan": (_regression_test(np.array([1.0, np.nan, 2.0, 3.0, 4.0])), _sample("target"),
            ("NaN/inf", "s01", "runs/exp")),
    "inf": (_regression_test(np.array([1.0, 2.0, np.inf, 3.0, 4.0])), _sample("target"),
            ("NaN/inf", "s02")),
    "missing id": (_regression_test(ids=sorted(IDS)[:-1]), _sample("target"),
                   ("sample_submission.csv", "1 missing", "s04")),
    "extra id": (_regression_test(ids=[*sorted(IDS), "s99"]), _sample("target"),
                 ("sample_submission.csv", "0 missing", "1 extra")),
    "duplicate test id": (_regression_test(ids=[*sorted(IDS), sorted(IDS)[0]]), _sample("target"),
                          ("test.parquet", "duplicate ids", sorted(IDS)[0])),
    # (one column of another name is the one target's: see the test above)
    "wrong sample columns": (_regression_test(), _sample("prediction", "score"),
                             ("sample_submission.csv", "['prediction', 'score']", "['target']")),
    "extra sample column": (_regression_test(), _sample("target", "other"),
                            ("sample_submission.csv", "['target', 'other']")),
    "sample without id column": (_regression_test(), _sample("target").rename(
        columns={"id": "key"}), ("sample_submission.csv", "id column 'id'")),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_predictions_are_refused(tmp_path: Path, case: str) -> None:
    test, sample, needles = REFUSALS[case]
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"], test, sample)
    with pytest.raises(DataError) as info:
        submit.run(run, "sub", tmp_path / "submissions")
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert not (tmp_path / "submissions").exists() or not any(
        (tmp_path / "submissions").iterdir())


def test_multiclass_sample_with_unknown_class_columns_refused(tmp_path: Path) -> None:
    classes = ["bird", "cat", "dog"]
    test = _test_frame({c: np.full(5, 1 / 3) for c in classes})
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, classes, test,
                      _sample("bird", "cat", "fish"))
    with pytest.raises(DataError, match=r"sample_submission\.csv") as info:
        submit.run(run, "sub", tmp_path / "submissions")
    assert "['bird', 'cat', 'dog']" in str(info.value)
    assert not (tmp_path / "submissions" / "sub.csv").exists()


def test_a_sample_class_column_no_train_row_holds_is_named(tmp_path: Path) -> None:
    """A sample listing a class train lacks (12 classes + 'other', a probe's listings) was
    refused as matching 'neither the target columns nor the classes', naming all 13
    columns; the refusal names the one column that is no class."""
    classes = [f"c{k:02d}" for k in range(12)]
    test = _test_frame({c: np.full(5, 1 / 12) for c in classes})
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, classes, test,
                      _sample(*classes, "other"))
    with pytest.raises(DataError) as info:
        submit.run(run, "sub", tmp_path / "submissions")
    message = str(info.value)
    assert "column(s) ['other'] name no class of train's 'target'" in message
    assert "have no column" not in message and "\n" not in message
    # spelt '<target>_<class>', the prefix is found the same way
    sample = _sample(*(f"target_{c}" for c in classes[:-1]), "target_zzz")
    run = _run_folder(tmp_path / "b", "multiclass", "log_loss", classes, classes, test, sample)
    with pytest.raises(DataError, match=r"\['target_zzz'\] name no class.*class\(es\) "
                                        r"\['c11'\] have no column"):
        submit.run(run, "sub", tmp_path / "b" / "submissions")
    assert not (tmp_path / "submissions" / "sub.csv").exists()


def test_missing_sample_submission_refused(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"], _regression_test(),
                      _sample("target"))
    sample_path = tmp_path / "comp" / "sample_submission.csv"
    sample_path.unlink()
    with pytest.raises(DataError, match="not found") as info:
        submit.run(run, "sub", tmp_path / "submissions")
    assert str(sample_path) in str(info.value)


def test_refusal_keeps_an_earlier_submission(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"],
                      _regression_test(np.array([np.nan, 1, 2, 3, 4])), _sample("target"))
    old = tmp_path / "submissions" / "sub.csv"
    old.parent.mkdir()
    old.write_text("id,target\nold,1\n")
    with pytest.raises(DataError):
        submit.run(run, "sub", tmp_path / "submissions")
    assert old.read_text() == "id,target\nold,1\n"
    assert [p.name for p in old.parent.iterdir()] == ["sub.csv"]


def test_test_parquet_without_prediction_column_refused(tmp_path: Path) -> None:
    test = _regression_test().rename(columns={"target": "pred"})
    run = _run_folder(tmp_path, "regression", "rmse", [], ["target"], test, _sample("target"))
    with pytest.raises(DataError, match=r"test\.parquet"):
        submit.run(run, "sub", tmp_path / "submissions")


# --- issue 12 item 3: ranking metrics list the k best labels --------------------------------


def test_map_at_3_label_column_lists_the_three_best_labels(tmp_path: Path) -> None:
    """issue 12 item 3: under map@3 a single label column gets the top 3 labels, best first,
    separated by spaces, in the train set's own (string) label values."""
    classes = ["ant", "bee", "cat", "dog"]
    p = np.array([[0.1, 0.5, 0.3, 0.1 - 1e-3],   # by sorted id: s00 .. s04
                  [0.4, 0.1, 0.2, 0.3],
                  [0.05, 0.15, 0.3, 0.5],
                  [0.3, 0.25, 0.05, 0.4],
                  [0.7, 0.2, 0.04, 0.06]])
    test = _test_frame({c: p[:, i] for i, c in enumerate(classes)})
    run = _run_folder(tmp_path, "multiclass", "map@3", classes, classes, test,
                      _sample("target"))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", "target"] and sub["id"].tolist() == IDS
    expected = np.array(["bee cat ant", "ant dog cat", "dog cat bee", "dog ant bee",
                         "ant bee dog"])
    assert sub["target"].tolist() == _by_sample(expected).tolist()


@pytest.mark.parametrize(("metric", "k"), [("map@5", 5), ("map@2", 2), ("map@1", 1)])
def test_map_at_k_label_column_lists_k_integer_labels(tmp_path: Path, metric: str,
                                                      k: int) -> None:
    """issue 12 item 3: a generic map@k writes the k best of the train set's integer labels
    (not the column names, not class indices), best first."""
    classes = [10, 20, 30, 40, 50, 60]
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=5)  # no ties: continuous draws
    test = _test_frame({str(c): p[:, i] for i, c in enumerate(classes)})
    run = _run_folder(tmp_path, "multiclass", metric, classes, [str(c) for c in classes],
                      test, _sample("target"))
    sub = pd.read_csv(submit.run(run, "sub", tmp_path / "submissions"), dtype=str)
    order = np.argsort(-p, axis=1)[:, :k]
    expected = np.array([" ".join(str(classes[j]) for j in row) for row in order])
    assert sub["target"].tolist() == _by_sample(expected).tolist()
    assert all(len(row.split(" ")) == k for row in sub["target"])


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_one_column_per_class_named_target_underscore_class(tmp_path: Path, task: str) -> None:
    """Kaggle samples often name their class columns '<target>_<class>' ('Status_C',
    'Status_CL', 'Status_D' for target 'Status'): they were refused as matching neither the
    target nor the classes. Each is filled with its class's probability."""
    if task == "binary":
        classes, p = ["no", "yes"], np.array([[0.2], [0.7], [0.5], [0.9], [0.1]])
        per_class = np.column_stack([1 - p[:, 0], p[:, 0]])
    else:
        classes = ["C", "CL", "D"]
        per_class = np.random.default_rng(1).dirichlet(np.ones(3), size=5)
        p = per_class
    pred_columns = ["target"] if task == "binary" else classes
    test = _test_frame({c: p[:, i] for i, c in enumerate(pred_columns)})
    columns = [f"target_{c}" for c in classes][::-1]
    run = _run_folder(tmp_path, task, "log_loss", classes, pred_columns, test,
                      _sample(*columns))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", *columns] and sub["id"].tolist() == IDS
    for i, c in enumerate(classes):
        np.testing.assert_allclose(sub[f"target_{c}"], _by_sample(per_class[:, i]))


@pytest.mark.parametrize(("classes", "columns"), [
    ([0, 1, 2], ["Class_2", "Class_0", "Class_1"]),  # labels 0..2, columns 'Class_0'..
    ([10, 11, 12], ["c10", "c12", "c11"]),  # the shared 'c1' cut back to 'c'
    (["cat", "dog", "eel"], ["prob_dog", "prob_cat", "prob_eel"]),
])
def test_one_column_per_class_under_any_shared_prefix(tmp_path: Path, classes: list[Any],
                                                      columns: list[str]) -> None:
    """A sample naming its class columns by a prefix of its own and the class was refused
    as matching neither the target nor the classes."""
    per_class = np.random.default_rng(2).dirichlet(np.ones(3), size=5)
    names = [str(c) for c in classes]
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, names,
                      _test_frame({c: per_class[:, i] for i, c in enumerate(names)}),
                      _sample(*columns))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", *columns]
    for column in columns:
        k = next(i for i, c in enumerate(names) if column.endswith(c))
        np.testing.assert_allclose(sub[column], _by_sample(per_class[:, k]))


def test_one_column_per_class_in_other_letter_case(tmp_path: Path) -> None:
    """A sample naming its class columns 'class_3', 'class_1', ... for labels 'Class_1'..
    was refused after load (target columns already matched in any letter case); each is
    filled with its own class's probability, in the sample's order and spelling."""
    from pipeline.targets import per_class_columns

    classes = ["Class_1", "Class_2", "Class_3"]
    per_class = np.random.default_rng(3).dirichlet(np.ones(3), size=5)
    columns = ["class_3", "class_1", "class_2"]
    run = _run_folder(tmp_path, "multiclass", "log_loss", classes, classes,
                      _test_frame({c: per_class[:, i] for i, c in enumerate(classes)}),
                      _sample(*columns))
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", *columns]
    for column, k in zip(columns, [2, 0, 1], strict=True):
        np.testing.assert_allclose(sub[column], _by_sample(per_class[:, k]))
    # classes alike but for letter case cannot be told apart by such a sample
    assert per_class_columns(["a", "A"], "binary", ["target"], ["a", "A"]) == [0, 1]
    assert per_class_columns(["a", "b"], "binary", ["target"], ["A", "a"]) is None


def test_columns_keep_the_sample_order_when_the_id_is_not_first(tmp_path: Path) -> None:
    """A sample laid out as [target, id] got [id, target]: its columns come in its order."""
    p = np.array([0.2, 0.7, 0.5, 0.9, 0.1])
    sample = _sample("target")[["target", "id"]]
    run = _run_folder(tmp_path, "binary", "roc_auc", ["no", "yes"], ["target"],
                      _test_frame({"target": p}), sample)
    path = submit.run(run, "sub", tmp_path / "submissions")
    assert path.read_text().splitlines()[0] == "target,id"
    sub = pd.read_csv(path)
    assert sub["id"].tolist() == IDS
    np.testing.assert_allclose(sub["target"], _by_sample(p))


@pytest.mark.parametrize("targets, sample_columns", [
    (["y"], ["prediction"]),  # one target, one column: whatever it is called
    (["a", "b"], ["B", "A"]),  # the targets in other letter case and order
])
def test_sample_columns_spelt_otherwise_are_filled_from_their_targets(
        tmp_path: Path, targets: list[str], sample_columns: list[str]) -> None:
    p = np.arange(5 * len(targets), dtype=float).reshape(5, len(targets))
    run = _run_folder(tmp_path, "regression", "rmse", [], targets,
                      _test_frame({t: p[:, i] for i, t in enumerate(targets)}),
                      _sample(*sample_columns), target_columns=targets)
    sub = _submit(run, tmp_path)
    assert list(sub.columns) == ["id", *sample_columns]
    for column in sample_columns:
        target = next(i for i, t in enumerate(targets) if t.lower() in (column.lower(), "y"))
        np.testing.assert_allclose(sub[column], _by_sample(p[:, target]))

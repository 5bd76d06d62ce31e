"""The folds stage (pipeline/folds.py): writes folds/<name>.csv (id, fold) once, keeps a valid
file, and refuses (through the CLI, writing nothing) a file made for other ids or columns.
The splitting itself is tested in tests/data/test_splits.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import folds as folds_stage
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data.splits import make_folds, read_folds
from pipeline.errors import DataError
from tests.test_competition import cli_config, expect_failure


def _experiment(factory: Any, **folds: Any) -> Any:
    data = factory("tabular", "multiclass", n_train=60)
    data["folds"].update(folds)
    return build_config(data)


def test_stage_writes_id_fold_csv_and_keeps_it(competition_factory) -> None:
    cfg = _experiment(competition_factory, n_splits=3, seed=5)
    path = folds_stage.run(cfg)
    assert path == cfg.folds_file
    assert path == Path(cfg.folds_dir) / "tabular_multiclass_stratified_k3_s5.csv"
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["id", "fold"]
    comp = load_competition(cfg.competition)
    assert frame["id"].tolist() == comp.train["id"].tolist()  # train.csv order
    assert frame["id"].is_unique and set(frame["fold"]) == {0, 1, 2}
    np.testing.assert_array_equal(frame["fold"].to_numpy(), make_folds(comp, cfg.folds))
    np.testing.assert_array_equal(read_folds(path, comp), frame["fold"].to_numpy())
    stat = path.stat()
    assert folds_stage.run(cfg) == path
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_same_seed_same_file_other_seed_other_folds(competition_factory, tmp_path: Path) -> None:
    cfg = _experiment(competition_factory, seed=1, scheme="kfold")
    first = folds_stage.run(cfg).read_bytes()
    folds_stage.run(cfg).unlink()
    assert folds_stage.run(cfg).read_bytes() == first
    other = folds_stage.run(_experiment(competition_factory, seed=2, scheme="kfold"))
    assert other.name.endswith("_s2.csv") and other != cfg.folds_file
    assert pd.read_csv(other)["fold"].tolist() != pd.read_csv(cfg.folds_file)["fold"].tolist()


def test_folds_name_sets_the_file(competition_factory) -> None:
    cfg = _experiment(competition_factory, name="shared")
    assert folds_stage.run(cfg) == Path(cfg.folds_dir) / "shared.csv"


def test_folds_file_for_other_ids_is_refused_and_kept(competition_factory, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    folds_file = build_config(cfg).folds_file
    folds_file.parent.mkdir(parents=True)
    foreign = pd.DataFrame({"id": [f"other{i}" for i in range(48)], "fold": [0, 1] * 24})
    foreign.to_csv(folds_file, index=False)
    before = folds_file.read_bytes(), folds_file.stat().st_mtime_ns
    expect_failure(cfg, tmp_path, capsys, f"folds file {folds_file}", "built for other ids",
                   "48 train id(s) missing")
    assert (folds_file.read_bytes(), folds_file.stat().st_mtime_ns) == before


def test_folds_file_with_wrong_columns(competition_factory, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    folds_file = build_config(cfg).folds_file
    folds_file.parent.mkdir(parents=True)
    folds_file.write_text("row,k\nr0000,0\n")
    expect_failure(cfg, tmp_path, capsys, str(folds_file), "['id', 'fold']")


# --- issue 12 item 5: the sidecar that records what shaped a folds file --------------------------


def _grouped(factory: Any, **changes: Any) -> Any:
    """A binary competition with a 'site' (6 groups) and a 'zone' (3 groups) column, folds
    made by the group scheme under one shared name, with ``changes`` to the config."""
    data = factory("tabular", "binary", n_train=48)
    root = Path(data["competition"]["dir"])
    train = pd.read_csv(root / "train.csv")
    train["site"] = [f"s{i % 6}" for i in range(len(train))]
    train["zone"] = [f"z{i % 3}" for i in range(len(train))]
    train["other"] = train["target"].iloc[::-1].to_numpy()  # a second possible target
    train.to_csv(root / "train.csv", index=False)
    data["competition"].update(group_column="site")
    data["folds"].update(scheme="group", n_splits=2, name="shared")
    for key, value in changes.items():
        section, field = key.split("__")
        data[section][field] = value
    sample = root / "sample_submission.csv"  # the submission of the chosen target
    pd.read_csv(sample)[["id"]].assign(
        **dict.fromkeys(data["competition"]["target_columns"], 0)).to_csv(sample, index=False)
    return build_config(data)


def test_stage_writes_the_spec_beside_the_folds_file(competition_factory) -> None:
    """issue 12 item 5: folds/<name>.json records everything that shaped folds/<name>.csv."""
    cfg = _grouped(competition_factory)
    path = folds_stage.run(cfg)
    sidecar = path.with_suffix(".json")
    assert sidecar == Path(cfg.folds_dir) / "shared.json"
    assert json.loads(sidecar.read_text()) == {
        "scheme": "group", "n_splits": 2, "seed": 0, "task": "binary",
        "target_columns": ["target"], "group_column": "site", "train_file": "train.csv"}
    folds = pd.read_csv(path)["fold"].to_numpy()
    sites = load_competition(cfg.competition).train["site"].to_numpy()
    assert (pd.Series(folds).groupby(sites).nunique() == 1).all()  # groups whole
    stat = path.stat(), sidecar.stat()
    assert folds_stage.run(cfg) == path  # same settings: both files kept as they are
    assert (path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == (
        stat[0].st_mtime_ns, stat[1].st_mtime_ns)


@pytest.mark.parametrize(("changes", "shown"), [
    ({"competition__group_column": "zone"}, "group_column 'site' (now 'zone')"),
    ({"competition__target_columns": ["other"]},
     "target_columns ['target'] (now ['other'])"),
    ({"folds__seed": 3}, "seed 0 (now 3)"),
], ids=["group_column", "target", "seed"])
def test_stage_refuses_a_folds_file_made_for_other_settings(
        competition_factory, changes: dict[str, Any], shown: str) -> None:
    """issue 12 item 5: under the same folds name, a changed group column or target (or seed)
    would have reused folds made for the old one (the ids still match); the stage refuses,
    naming what differs, and leaves both files alone."""
    path = folds_stage.run(_grouped(competition_factory))
    sidecar = path.with_suffix(".json")
    before = path.read_bytes(), sidecar.read_bytes()
    changed = _grouped(competition_factory, **changes)
    assert changed.folds_file == path
    with pytest.raises(DataError, match="was made for other settings") as info:
        folds_stage.run(changed)
    message = str(info.value)
    assert shown in message and str(path) in message and "shared.json" in message
    assert (path.read_bytes(), sidecar.read_bytes()) == before


def test_folds_file_without_a_sidecar_is_kept_when_ids_and_groups_fit(
        competition_factory) -> None:
    """issue 12 item 5: a folds file from an older release has no sidecar; it is still used when
    its ids match and no group spans two folds, and refused when one does."""
    cfg = _grouped(competition_factory)
    path = folds_stage.run(cfg)
    path.with_suffix(".json").unlink()
    before = path.read_bytes()
    assert folds_stage.run(cfg) == path and path.read_bytes() == before
    np.testing.assert_array_equal(read_folds(path, load_competition(cfg.competition)),
                                  pd.read_csv(path)["fold"].to_numpy())
    # an old row-by-row file (no sidecar) for a competition that now has a group column
    frame = pd.read_csv(path)
    frame["fold"] = (np.arange(len(frame)) // 6) % 2  # every site (row % 6) in both folds
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"6 group\(s\) of column 'site' span several folds"):
        folds_stage.run(cfg)


# --- train rows whose inputs repeat in another fold: the CV overstates (a leak the folds make) --


def _with_copies(factory: Any, n_copies: int, same_target: bool = True) -> dict[str, Any]:
    """A table whose last ``n_copies`` train rows repeat earlier rows' inputs (new ids), with
    the copied row's target or (``same_target`` False) another one, and an entity column."""
    data = factory("tabular", "binary", n_train=80)
    path = Path(data["competition"]["dir"]) / "train.csv"
    train = pd.read_csv(path)
    train["entity"] = np.arange(len(train))
    copies = train.iloc[:n_copies].copy()
    copies["id"] = [f"c{i:04d}" for i in range(n_copies)]
    if not same_target:
        copies["target"] = np.where(copies["target"] == "yes", "no", "yes")
    pd.concat([train, copies]).to_csv(path, index=False)
    test_path = Path(data["competition"]["dir"]) / "test.csv"
    test = pd.read_csv(test_path)
    test["entity"] = np.arange(len(test)) + 10_000
    test.to_csv(test_path, index=False)
    return data


def test_rows_repeating_inputs_in_another_fold_are_named(competition_factory, caplog) -> None:
    data = _with_copies(competition_factory, 20)
    data["competition"]["feature_columns"] = ["x1", "x2", "color"]  # not the entity
    cfg = build_config(data)
    with caplog.at_level("WARNING"):
        folds_stage.run(cfg)
    frame = pd.read_csv(cfg.folds_file)
    originals = frame["fold"].iloc[:20].to_numpy()
    spread = int((originals != frame["fold"].iloc[-20:].to_numpy()).sum())
    assert spread > 0  # the copies landed in other folds than their originals
    warning = [r.getMessage() for r in caplog.records if "repeat the inputs" in r.getMessage()]
    assert len(warning) == 1
    assert warning[0].startswith(f"folds: {2 * spread} train rows ({2 * spread / 100:.1%}) "
                                 f"repeat the inputs (x1, x2, color) of a row in another fold, "
                                 f"{2 * spread} of them with its target too")
    assert "'competition.group_column'" in warning[0]
    caplog.clear()  # a kept folds file says nothing again
    with caplog.at_level("WARNING"):
        folds_stage.run(cfg)
    assert not [r for r in caplog.records if "repeat the inputs" in r.getMessage()]


def _repeat_warnings(data: dict[str, Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    """The repeated-rows warnings the folds stage gives for ``data`` (the log cleared first)."""
    caplog.clear()
    with caplog.at_level("WARNING"):
        folds_stage.run(build_config(data))
    return [r.getMessage() for r in caplog.records if "repeat the inputs" in r.getMessage()]


def test_copies_with_another_target_and_copies_held_together(competition_factory,
                                                             caplog) -> None:
    data = _with_copies(competition_factory, 20, same_target=False)
    data["competition"]["feature_columns"] = ["x1", "x2", "color"]
    with caplog.at_level("WARNING"):
        folds_stage.run(build_config(data))
    warning = [r.getMessage() for r in caplog.records if "repeat the inputs" in r.getMessage()]
    assert len(warning) == 1 and ", 0 of them with its target too" in warning[0]
    # the copies' entity as the group column: each copy sits in its original's fold
    data = _with_copies(competition_factory, 20)
    data["competition"].update(group_column="entity", feature_columns=["x1", "x2", "color"])
    data["folds"].update(scheme="group", name="grouped")
    frame = pd.read_csv(data["competition"]["dir"] + "/train.csv")
    frame.loc[frame["id"].str.startswith("c"), "entity"] = np.arange(20)
    frame.to_csv(data["competition"]["dir"] + "/train.csv", index=False)
    caplog.clear()
    assert not _repeat_warnings(data, caplog)
    # no copies, no warning (the factory's table has none)
    caplog.clear()
    plain = competition_factory("tabular", "regression", n_train=60)
    with caplog.at_level("WARNING"):
        folds_stage.run(build_config(plain))
    assert not [r for r in caplog.records if "repeat the inputs" in r.getMessage()]


def test_rows_of_other_images_under_one_metadata_do_not_repeat(competition_factory,
                                                                caplog) -> None:
    """Images named by an 'image_path' template have no image column: rows with the same
    metadata (PetFinder's 12 flags) but their own images were said to repeat each other;
    two rows of one image file and one metadata still do."""
    data = competition_factory("image", "binary", n_train=40)
    folder = Path(data["competition"]["dir"])
    for split in ("train", "test"):
        frame = pd.read_csv(folder / f"{split}.csv")
        frame["num"] = frame.pop("image").str.extract(r"(\d+)\.png$", expand=False)
        frame["flag"] = 1
        frame.to_csv(folder / f"{split}.csv", index=False)
    data["competition"].update(image_column=None, image_path="images/{num}.png",
                               feature_columns=["flag"])
    assert not _repeat_warnings(data, caplog)
    train = pd.read_csv(folder / "train.csv", dtype={"num": str})
    train.loc[:9, "num"] = train.loc[10:19, "num"].to_numpy()  # rows 0-9: images of 10-19
    train.to_csv(folder / "train.csv", index=False)
    data["folds"]["name"] = "copies"
    warning = _repeat_warnings(data, caplog)
    assert len(warning) == 1 and "repeat the inputs (flag, the image file)" in warning[0]


def test_rows_whose_text_is_empty_do_not_repeat(competition_factory, caplog) -> None:
    """A text competition's empty text cells (2% of Rotten Tomatoes probe rows) were all
    said to repeat one another, with a group column as the remedy; a text written twice
    still repeats."""
    data = competition_factory("text", "binary", n_train=60)
    path = Path(data["competition"]["dir"]) / "train.csv"
    train = pd.read_csv(path)
    train.loc[:9, "text"] = ["", "  ", *[None] * 8]  # blank texts, both classes
    train.to_csv(path, index=False)
    data["competition"]["feature_columns"] = []
    assert not _repeat_warnings(data, caplog)
    train.loc[10:19, "text"] = "the same words written twice"
    train.to_csv(path, index=False)
    data["folds"]["name"] = "twice"
    warning = _repeat_warnings(data, caplog)
    assert len(warning) == 1 and "repeat the inputs (text)" in warning[0]


def test_copies_of_an_image_under_other_names_repeat_their_rows(competition_factory,
                                                                caplog) -> None:
    """Byte copies of one image under other file names (a rare class padded, a photo
    uploaded twice) were keyed by their names: 200 copies among 1,000 digits gave no
    warning. They are keyed by what the files hold."""
    import shutil

    from pipeline.data.repeated_rows import image_key

    data = competition_factory("image", "binary", n_train=40)
    folder = Path(data["competition"]["dir"])
    train = pd.read_csv(folder / "train.csv")
    assert not _repeat_warnings(data, caplog)
    for row in range(10):  # rows 0-9 hold copies of the images of rows 10-19
        shutil.copyfile(folder / train.loc[row + 10, "image"], folder / train.loc[row, "image"])
    data["folds"]["name"] = "copies"
    warning = _repeat_warnings(data, caplog)
    assert len(warning) == 1 and "repeat the inputs (image)" in warning[0]
    one = folder / train.loc[0, "image"]
    assert image_key(one) == image_key(folder / train.loc[10, "image"])
    assert image_key(one) != image_key(folder / train.loc[1, "image"])
    assert image_key(folder / "gone.png") == f"name:{folder / 'gone.png'}"


def test_a_test_period_after_every_train_date_is_said(competition_factory, caplog) -> None:
    """Random folds on a forecasting split (test rows later than every train row) gave an
    optimistic CV and no hint of it; the folds stage now names the date column."""
    data = competition_factory("tabular", "regression", n_train=60, n_test=20)
    folder = Path(data["competition"]["dir"])
    for split, start in (("train", "2020-01-01"), ("test", "2020-03-01")):
        frame = pd.read_csv(folder / f"{split}.csv")
        frame["date"] = pd.date_range(start, periods=len(frame)).strftime("%Y-%m-%d")
        frame.to_csv(folder / f"{split}.csv", index=False)

    def warned(name: str, **folds: Any) -> list[str]:
        data["folds"].update(name=name, **folds)
        caplog.clear()
        with caplog.at_level("WARNING"):
            folds_stage.run(build_config(data))
        return [r.getMessage() for r in caplog.records if "after the last train date" in
                r.getMessage()]

    said = warned("later")
    assert said == [said[0]] and "100% of the test rows come after the last train date in "\
        "column 'date' (train up to 2020-02-29, test from 2020-03-01)" in said[0]
    assert "set 'competition.time_column: date' with 'folds.scheme: time'" in said[0]
    # the folds ordered in time by that column: nothing to say
    data["competition"]["time_column"] = "date"
    assert warned("timed", scheme="time") == []
    data["competition"]["time_column"] = None
    # the periods held out whole (a group column): nothing to say
    for split in ("train", "test"):
        frame = pd.read_csv(folder / f"{split}.csv")
        frame["month"] = frame["date"].str[:7]
        frame.to_csv(folder / f"{split}.csv", index=False)
    data["competition"]["group_column"] = "month"
    assert warned("grouped", scheme="group") == []
    # test dates among the train dates (a random split): nothing either
    data["competition"]["group_column"] = None
    test = pd.read_csv(folder / "test.csv")
    test["date"] = pd.date_range("2020-01-15", periods=len(test)).strftime("%Y-%m-%d")
    test.to_csv(folder / "test.csv", index=False)
    assert warned("among", scheme="kfold") == []


def test_a_label_column_of_one_value_is_said_when_the_folds_are_made(competition_factory,
                                                                     caplog) -> None:
    """A Jigsaw-style label no train row carries: every model predicts 0 for it, and ROC AUC
    averaged over the labels with both values left it out of the CV without a word, while
    the leaderboard scores it (at chance)."""
    data = competition_factory("tabular", "multilabel", n_train=40)
    train = Path(data["competition"]["dir"]) / "train.csv"
    pd.read_csv(train).assign(b=0).to_csv(train, index=False)
    cfg = build_config(data)
    with caplog.at_level("WARNING"):
        folds_stage.run(cfg)
    said = [r.getMessage() for r in caplog.records if "hold one value" in r.getMessage()]
    assert said == ["folds: label column(s) 'b' (0) hold one value in every train row: every "
                    "model predicts that value, nothing is learnt of them; roc_auc averages "
                    "over the labels that hold both values, so the CV leaves them out, where a "
                    "leaderboard that averages every column scores each at chance"]
    caplog.clear()  # a kept folds file says nothing again; both labels held: nothing said
    data["folds"]["name"] = "both"
    pd.read_csv(train).assign(b=np.arange(40) % 2).to_csv(train, index=False)
    with caplog.at_level("WARNING"):
        folds_stage.run(cfg)
        folds_stage.run(build_config(data))
    assert not [r for r in caplog.records if "hold one value" in r.getMessage()]


def test_flags_the_test_rows_repeat_as_often_are_no_leak(competition_factory, caplog) -> None:
    """A metadata-only member of an image competition (PetFinder's 12 0/1 flags): most rows
    share their flags with a row of another fold, and so do most test rows with a train row.
    The CV's repeats are the test's, so it overstates nothing: no warning (it said 55% of the
    rows leaked and named a group column). Copies the test rows do not share still warn."""
    data = competition_factory("tabular", "regression", n_train=200)
    folder = Path(data["competition"]["dir"])
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        frame = pd.read_csv(folder / f"{split}.csv")
        for k in range(3):
            frame[f"flag{k}"] = rng.integers(0, 2, len(frame))
        if split == "test":  # an empty cell: the test column reads as floats, 1.0 for 1
            frame["flag0"] = frame["flag0"].astype(float)
            frame.loc[0, "flag0"] = np.nan
        frame.to_csv(folder / f"{split}.csv", index=False)
    data["competition"]["feature_columns"] = ["flag0", "flag1", "flag2"]
    assert not _repeat_warnings(data, caplog)
    test = pd.read_csv(folder / "test.csv")
    test[["flag0", "flag1", "flag2"]] = 2 + rng.integers(0, 2, (len(test), 3))  # unseen flags
    test.to_csv(folder / "test.csv", index=False)
    data["folds"]["name"] = "unseen"
    warning = _repeat_warnings(data, caplog)
    assert len(warning) == 1 and "repeat the inputs (flag0, flag1, flag2)" in warning[0]

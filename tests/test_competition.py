"""The competition spec (pipeline/competition.py): bad inputs end in one clear error naming
the file, column or key, exit code 2 through the CLI, and no artifact half-written or
overwritten.

``cli_config``, ``edit_csv``, ``run_cli`` and ``expect_failure`` are shared with the test files
of the other parts whose refusals reach the CLI (folds, encoders, scikit-learn models).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import folds as folds_stage
from pipeline.cli import main
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data.splits import read_folds
from pipeline.errors import ConfigError, DataError

SKLEARN = {
    "binary": "sklearn:sklearn.linear_model.LogisticRegression",
    "multiclass": "sklearn:sklearn.linear_model.LogisticRegression",
    "multilabel": "sklearn:sklearn.linear_model.LogisticRegression",
    "regression": "sklearn:sklearn.linear_model.Ridge",
}
STALE = "id,target\nstale,0\n"

Edit = Callable[[Path, dict[str, Any]], None]  # (competition dir, config dict) -> None


def cli_config(factory: Callable[..., dict[str, Any]], modality: str, task: str) -> dict[str, Any]:
    """The factory's competition config; tabular ones with a scikit-learn model (fast)."""
    cfg = factory(modality, task)
    if modality == "tabular":
        cfg["model"] = {"encoders": [{"name": SKLEARN[task]}]}
    return cfg


def edit_csv(path: Path, fn: Callable[[pd.DataFrame], pd.DataFrame | None]) -> None:
    """Rewrite a CSV through ``fn`` (which edits the frame in place or returns a new one)."""
    frame = pd.read_csv(path)
    out = fn(frame)
    (frame if out is None else out).to_csv(path, index=False)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(cfg: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
            ) -> tuple[int, str, Path]:
    """``pipeline run`` on ``cfg``: exit code, stderr and the config file's path."""
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        code = main(["run", str(path)])
    finally:
        # the CLI adds a FileHandler for the run's log.txt to the root logger: remove ours
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
                handler.close()
    return code, capsys.readouterr().err, path


def expect_failure(cfg: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   *needles: str) -> str:
    """Run the CLI on a bad input: exit 2, stderr names every needle, no artifact written."""
    subs = Path(cfg["submissions_dir"])
    subs.mkdir(parents=True, exist_ok=True)
    (subs / f"{cfg['name']}.csv").write_text(STALE)  # an earlier submission must survive
    folds_before, subs_before = _snapshot(Path(cfg["folds_dir"])), _snapshot(subs)
    code, err, config_path = run_cli(cfg, tmp_path, capsys)
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle.replace("{config}", str(config_path)) in err, (needle, err)
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    assert not list(run_dir.rglob("*.parquet")), "prediction artifacts were written"
    assert not (run_dir / "run.json").exists()
    assert _snapshot(Path(cfg["folds_dir"])) == folds_before
    assert _snapshot(subs) == subs_before
    return err


def test_good_competition_runs_end_to_end(competition_factory, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Control: the unedited competition succeeds, so each failure below is the edit's."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")
    sample = pd.read_csv(Path(cfg["competition"]["dir"]) / "sample_submission.csv")
    assert sub["id"].tolist() == sample["id"].tolist()
    assert sub["target"].between(0, 1).all()
    assert (Path(cfg["output_dir"]) / cfg["name"] / "oof.parquet").is_file()


# --- missing files and columns -------------------------------------------------------------


@pytest.mark.parametrize(("filename", "what"), [
    ("train.csv", "train file"),
    ("test.csv", "test file"),
    ("sample_submission.csv", "sample submission file"),
])
def test_missing_file(competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      filename: str, what: str) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    path = Path(cfg["competition"]["dir"]) / filename
    path.unlink()
    expect_failure(cfg, tmp_path, capsys, f"{what} {path} not found")


def test_missing_competition_dir(competition_factory, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["dir"] = str(tmp_path / "nowhere")
    expect_failure(cfg, tmp_path, capsys, str(tmp_path / "nowhere"), "'competition.dir'")


@pytest.mark.parametrize("filename", ["train.csv", "test.csv", "sample_submission.csv"])
def test_missing_id_column(competition_factory, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str], filename: str) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    path = Path(cfg["competition"]["dir"]) / filename
    edit_csv(path, lambda f: f.rename(columns={"id": "ID"}))
    expect_failure(cfg, tmp_path, capsys, str(path), "['id']", "'competition.id_column'")


def test_missing_target_column(competition_factory, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["target_columns"] = ["label"]
    expect_failure(cfg, tmp_path, capsys, "train.csv", "['label']",
                   "'competition.target_columns'")


def test_missing_feature_column(competition_factory, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["feature_columns"] = ["x1", "x9"]
    expect_failure(cfg, tmp_path, capsys, "train.csv", "['x9']",
                   "'competition.feature_columns'")


def test_misspelt_categorical_column_is_refused(competition_factory, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A name in 'categorical_columns' that no column has ('x9', a typo for 'x1') was
    ignored, leaving the column it meant numeric with no word said."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["categorical_columns"] = ["x9"]
    expect_failure(cfg, tmp_path, capsys, "train.csv", "['x9']",
                   "'competition.categorical_columns'")


def test_feature_column_missing_from_test_only(competition_factory, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["feature_columns"] = ["x1", "x2"]
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.drop(columns=["x2"]))
    expect_failure(cfg, tmp_path, capsys, str(test), "['x2']")


def test_missing_group_column(competition_factory, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["group_column"] = "patient"
    cfg["folds"]["scheme"] = "group"
    expect_failure(cfg, tmp_path, capsys, "train.csv", "['patient']",
                   "'competition.group_column'")


def test_empty_group_values_are_refused(competition_factory, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A row without a group stopped the folds stage with scikit-learn's traceback ('Input
    groups contains NaN')."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["group_column"] = "patient"
    cfg["folds"]["scheme"] = "group"
    edit_csv(Path(cfg["competition"]["dir"]) / "train.csv", lambda f: f.assign(
        patient=[None if i in (3, 7) else i % 6 for i in range(len(f))]))
    expect_failure(cfg, tmp_path, capsys, "train.csv", "'patient'", "2 empty value(s)",
                   "lines [5, 9]")


def test_missing_text_column(competition_factory, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = competition_factory("text", "binary")
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.rename(columns={"text": "review"}))
    expect_failure(cfg, tmp_path, capsys, str(test), "['text']", "'competition.text_columns'")


def test_missing_image_column(competition_factory, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = competition_factory("image", "binary")
    cfg["competition"]["image_column"] = "picture"
    expect_failure(cfg, tmp_path, capsys, "train.csv", "['picture']",
                   "'competition.image_column'")


def test_missing_image_file(competition_factory, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = competition_factory("image", "binary")
    train = Path(cfg["competition"]["dir"]) / "train.csv"

    def break_path(frame: pd.DataFrame) -> None:
        frame.loc[5, "image"] = "images/gone.png"

    edit_csv(train, break_path)
    expect_failure(cfg, tmp_path, capsys, str(train), "1 image file(s)", "'image'",
                   "images/gone.png")


def test_image_names_without_extension_say_which_file_is_there(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a column of image ids ('ISIC_0015719' for ISIC_0015719.jpg) was refused as files not
    # found, without a word on the files beside them or on how to name them
    cfg = competition_factory("image", "binary")
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    edit_csv(train, lambda f: f.assign(image=f["image"].str.removesuffix(".png")))
    first = pd.read_csv(train)["image"].iloc[0]
    expect_failure(cfg, tmp_path, capsys, str(train), "image file(s) from column 'image'",
                   f"'{first}.png' is there: the names lack the file extension",
                   "'competition.image_path: \"{image}.png\"'")
    cfg["competition"].pop("image_column")
    cfg["competition"]["image_path"] = "{image}"  # a template without the extension
    with pytest.raises(DataError, match=r"'image_path' '\{image\}' not found under .*; "
                       r"'images/\w+\.png' is there: .* 'competition.image_path' ending in "
                       r"'\.png'"):
        load_competition(build_config(cfg).competition)


def test_image_paths_written_on_windows_find_their_files(competition_factory) -> None:
    """An image column written with backslashes (images\\a.png, a CSV made on Windows) named
    files that exist nowhere on another system: every row was refused as not found."""
    from pipeline.competition import IMAGE_PATH

    cfg = competition_factory("image", "binary")
    root = Path(cfg["competition"]["dir"])
    (root / "images" / "sub").mkdir()
    first = pd.read_csv(root / "train.csv")["image"].iloc[0]
    (root / first).rename(root / "images" / "sub" / Path(first).name)

    def backslashes(frame: pd.DataFrame) -> None:
        frame["image"] = frame["image"].str.replace("/", "\\")
        frame.loc[0, "image"] = f"images\\sub\\{Path(first).name}"

    edit_csv(root / "train.csv", backslashes)
    edit_csv(root / "test.csv", backslashes)
    comp = load_competition(build_config(cfg).competition)
    assert comp.train[IMAGE_PATH].iloc[0] == f"images/sub/{Path(first).name}"
    assert all((root / p).is_file() for p in [*comp.train[IMAGE_PATH], *comp.test[IMAGE_PATH]])


@pytest.mark.parametrize(("filename", "row", "damage"), [
    ("test.csv", 3, lambda data: b"<html>404 not found</html>"),  # no image at all
    ("train.csv", 5, lambda data: data[: len(data) // 2]),  # its pixels cut short
])
def test_unreadable_image_file_is_refused_before_anything_is_written(
    competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], filename: str,
    row: int, damage: Callable[[bytes], bytes],
) -> None:
    # found at the first fold's read, after the folds file and the run folder were written
    cfg = competition_factory("image", "binary")
    comp_dir = Path(cfg["competition"]["dir"])
    image = comp_dir / pd.read_csv(comp_dir / filename)["image"][row]
    image.write_bytes(damage(image.read_bytes()))
    expect_failure(cfg, tmp_path, capsys, str(image), "could not be read as an image")
    assert not (Path(cfg["output_dir"]) / cfg["name"] / "config.yaml").exists()


def test_empty_image_path(competition_factory, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    # an empty cell was a float NaN joined to the folder: a TypeError traceback
    cfg = competition_factory("image", "binary")
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.assign(image=f["image"].mask(f.index.isin([2, 4]))))
    expect_failure(cfg, tmp_path, capsys, str(test), "column 'image'", "2 empty value(s)",
                   "lines [4, 6]")


# --- ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["train.csv", "test.csv", "sample_submission.csv"])
def test_duplicate_ids(competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       filename: str) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    path = Path(cfg["competition"]["dir"]) / filename

    def duplicate(frame: pd.DataFrame) -> None:
        frame.loc[1, "id"] = frame.loc[0, "id"]

    edit_csv(path, duplicate)
    expect_failure(cfg, tmp_path, capsys, str(path), "1 duplicate id(s)", "'id'")


def test_empty_id(competition_factory, tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    path = Path(cfg["competition"]["dir"]) / "train.csv"

    def blank(frame: pd.DataFrame) -> None:
        frame.loc[2, "id"] = np.nan

    edit_csv(path, blank)
    expect_failure(cfg, tmp_path, capsys, str(path), "1 empty id(s)")


def test_test_ids_differ_from_sample_submission(competition_factory, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    comp = Path(cfg["competition"]["dir"])

    def rename(frame: pd.DataFrame) -> None:
        frame.loc[0, "id"] = "zz999"

    edit_csv(comp / "sample_submission.csv", rename)
    expect_failure(cfg, tmp_path, capsys, str(comp / "test.csv"),
                    str(comp / "sample_submission.csv"), "1 only in test", "zz999")


# --- targets ---------------------------------------------------------------------------------


def test_nan_in_target(competition_factory, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "regression")
    train = Path(cfg["competition"]["dir"]) / "train.csv"

    def hole(frame: pd.DataFrame) -> None:
        frame.loc[[3, 7], "y"] = np.nan

    edit_csv(train, hole)
    # issue 15 item 10: file line numbers (header = line 1), not 0-based row positions
    expect_failure(cfg, tmp_path, capsys, str(train), "['y']", "2 of 48 row(s) have an empty "
                   "target", "lines [5, 9]", "'competition.unlabelled_train_rows'")


def _set_column(column: str, values: Callable[[int], list[Any]]) -> Edit:
    def edit(comp_dir: Path, cfg: dict[str, Any]) -> None:
        edit_csv(comp_dir / "train.csv", lambda f: f.assign(**{column: values(len(f))}))

    return edit


WRONG_TARGETS: dict[str, tuple[str, Edit, tuple[str, ...]]] = {
    "strings for regression": (
        "regression", _set_column("y", lambda n: ["low", "high"] * (n // 2)),
        ("'y'", "must be numeric for task 'regression'"),
    ),
    "one string among numbers for regression": (  # the message quotes the string, not a float
        "regression", _set_column("y", lambda n: [1.5] * (n - 1) + ["unknown"]),
        ("'y'", "1 value(s) that are not numbers, e.g. 'unknown'"),
    ),
    "thousands separators in a regression target": (  # the keys to set were not named
        "regression", _set_column("y", lambda n: ["24,000", "1,500"] * (n // 2)),
        ("'y'", "e.g. '24,000'", "'competition.thousands'", "'competition.decimal'"),
    ),
    "negative target under rmsle": (  # used to score nan, silently
        "regression", lambda comp_dir, cfg: (
            cfg["competition"].update(metric="rmsle"),
            _set_column("y", lambda n: [2.0, 0.5, -3.0] * (n // 3))(comp_dir, cfg)),
        ("'y'", "16 value(s) below 0", "metric 'rmsle' cannot score", "minimum -3.0", "line 4"),
    ),
    "labels with spaces under map@3": (  # were written "big cat dog bird": unreadable
        "multiclass", lambda comp_dir, cfg: (
            cfg["competition"].update(metric="map@3"),
            _set_column("target", lambda n: ["big cat", "dog", "sea bird"] * (n // 3))(
                comp_dir, cfg)),
        ("'map@3'", "2 label(s) of column 'target' hold spaces", "['big cat', 'sea bird']"),
    ),
    "text labels under qwk": (  # sorted as text ("high" < "low" < "mid"): no rating order
        "multiclass", lambda comp_dir, cfg: (
            cfg["competition"].update(metric="qwk"),
            _set_column("target", lambda n: ["low", "mid", "high"] * (n // 3))(comp_dir, cfg)),
        ("'qwk'", "column 'target' must hold numbers", "['high', 'low', 'mid']"),
    ),
    "header only": (
        "binary", lambda comp_dir, cfg: edit_csv(comp_dir / "train.csv", lambda f: f.iloc[:0]),
        ("no rows under the header",),
    ),
    "3 classes for binary": (
        "binary", _set_column("target", lambda n: ["no", "yes", "maybe"] * (n // 3)),
        ("'target'", "exactly 2 classes for task 'binary'", "Got 3"),
    ),
    "non-integer floats for multiclass": (
        "multiclass", _set_column("target", lambda n: list(np.linspace(0, 2, n))),
        ("'target'", "non-integer floats", "'multiclass'"),
    ),
    "non-integer floats for binary": (  # names the first fraction, not the first value
        "binary", _set_column("target", lambda n: [0.0, 0.5] * (n // 2)),
        ("'target'", "non-integer floats", "'binary'", "(e.g. 0.5, line 3)"),
    ),
    "2 for multilabel": (
        "multilabel", _set_column("b", lambda n: [0, 1, 2] * (n // 3)),
        ("'b'", "must hold 0/1 for task 'multilabel'", "'2'"),
    ),
    "strings for multilabel": (
        "multilabel", _set_column("a", lambda n: ["y", "n"] * (n // 2)),
        ("'a'", "must hold 0/1 for task 'multilabel'"),
    ),
    "single class for multiclass": (
        "multiclass", _set_column("target", lambda n: [1] * n),
        ("'target'", "single class [1]"),  # not [np.int64(1)]
    ),
}


@pytest.mark.parametrize("case", list(WRONG_TARGETS))
def test_target_of_wrong_type(competition_factory, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], case: str) -> None:
    task, edit, needles = WRONG_TARGETS[case]
    cfg = cli_config(competition_factory, "tabular", task)
    comp_dir = Path(cfg["competition"]["dir"])
    edit(comp_dir, cfg)
    expect_failure(cfg, tmp_path, capsys, str(comp_dir / "train.csv"), *needles)


# --- config ----------------------------------------------------------------------------------


def test_unknown_metric(competition_factory, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["metric"] = "roc_acu"
    expect_failure(cfg, tmp_path, capsys, "{config}", "'roc_acu'", "Did you mean 'roc_auc'",
                   "Known:", "log_loss")


def test_load_competition_raises_data_error(competition_factory) -> None:
    """The library call (no CLI) raises DataError with the same message content."""
    cfg = build_config(cli_config(competition_factory, "tabular", "binary"))
    train = Path(cfg.competition.dir) / "train.csv"
    edit_csv(train, lambda f: f.assign(target=np.nan))
    with pytest.raises(DataError, match="empty target") as info:
        load_competition(cfg.competition)
    assert str(train) in str(info.value) and "'target'" in str(info.value)


def test_image_path_template_resolves_files_per_split(competition_factory) -> None:
    import shutil

    from pipeline.competition import IMAGE_PATH

    data = competition_factory("image", "binary")
    root = Path(data["competition"]["dir"])
    for split in ("train", "test"):
        frame = pd.read_csv(root / f"{split}.csv")
        (root / f"{split}_images").mkdir()
        for rid, rel in zip(frame["id"], frame["image"], strict=True):
            shutil.copy(root / rel, root / f"{split}_images" / f"{rid}.png")
        frame.drop(columns="image").to_csv(root / f"{split}.csv", index=False)
    data["competition"].pop("image_column")
    data["competition"]["image_path"] = "{split}_images/{id}.png"
    comp = load_competition(build_config(data).competition)
    assert comp.test[IMAGE_PATH].iloc[0] == f"test_images/{comp.test['id'].iloc[0]}.png"
    assert IMAGE_PATH not in comp.feature_columns
    data["competition"]["image_path"] = "{split}_images/{image_id}.png"
    with pytest.raises(DataError, match="image_id"):
        load_competition(build_config(data).competition)
    for template in ("{split}_images/{id:05d}.png", "{split}_images/{}.png",
                     "{split}_images/{id.stem}.png", "{split}_images/{id"):  # ids are text
        data["competition"]["image_path"] = template
        with pytest.raises(DataError, match=r"'competition.image_path' .* cannot be filled"):
            load_competition(build_config(data).competition)


def test_image_path_split_is_the_split_beside_a_split_column(competition_factory) -> None:
    # a file with its own 'split' column (train/val marks) made str.format raise TypeError
    # ('multiple values for keyword argument') as a traceback
    import shutil

    from pipeline.competition import IMAGE_PATH

    data = competition_factory("image", "binary")
    root = Path(data["competition"]["dir"])
    for split in ("train", "test"):
        frame = pd.read_csv(root / f"{split}.csv")
        (root / split).mkdir()
        for rid, rel in zip(frame["id"], frame["image"], strict=True):
            shutil.copy(root / rel, root / split / f"{rid}.png")
        frame.drop(columns="image").assign(split="val").to_csv(root / f"{split}.csv",
                                                               index=False)
    data["competition"].pop("image_column")
    data["competition"]["image_path"] = "{split}/{id}.png"
    comp = load_competition(build_config(data).competition)
    assert comp.train[IMAGE_PATH].iloc[0] == f"train/{comp.train['id'].iloc[0]}.png"
    assert comp.test[IMAGE_PATH].iloc[0] == f"test/{comp.test['id'].iloc[0]}.png"


def test_zero_padded_ids_stay_text_and_plain_integer_ids_numbers(competition_factory) -> None:
    # '00012' read as the number 12 named no image file and wrote 12 into the submission
    data = competition_factory("image", "binary")
    root = Path(data["competition"]["dir"])
    offsets = {"train": 0, "test": 100, "sample_submission": 100}
    for split, at in offsets.items():
        edit_csv(root / f"{split}.csv", lambda f, at=at: f.assign(id=[f"{k + at:05d}"
                                                                        for k in f.index]))
    for split in ("train", "test"):
        frame = pd.read_csv(root / f"{split}.csv", dtype={"id": str})
        for rid, rel in zip(frame["id"], frame["image"], strict=True):
            (root / rel).rename(root / "images" / f"{rid}.png")
    data["competition"].pop("image_column")
    data["competition"]["image_path"] = "images/{id}.png"
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    assert comp.train["id"].iloc[3] == "00003" and comp.sample_submission["id"].iloc[0] == "00100"
    folds = read_folds(folds_stage.run(cfg, comp), comp, cfg.folds.n_splits)  # read back
    assert len(folds) == len(comp.train)
    data["competition"]["image_path"] = "images/{id:05d}.png"  # needs integer ids
    for split, at in offsets.items():
        edit_csv(root / f"{split}.csv", lambda f, at=at: f.assign(id=f.index + at))
    comp = load_competition(build_config(data).competition)
    assert comp.train["id"].dtype == np.int64 and comp.test["id"].iloc[0] == 100


def test_zero_padded_names_a_template_fills_in_stay_as_written(competition_factory) -> None:
    """A column an 'image_path' template names was read as numbers: '00003' filled in as 3
    named no image file (the id column alone kept its zeros)."""
    from pipeline.competition import IMAGE_PATH

    data = competition_factory("image", "binary")
    root = Path(data["competition"]["dir"])
    for split, at in (("train", 0), ("test", 100)):
        frame = pd.read_csv(root / f"{split}.csv")
        frame["name"] = [f"{k + at:05d}" for k in range(len(frame))]
        frame["plain"] = np.arange(len(frame)) + 1  # written plainly: stays a number
        for name, rel in zip(frame["name"], frame.pop("image"), strict=True):
            (root / rel).rename(root / "images" / f"{name}.png")
        frame.to_csv(root / f"{split}.csv", index=False)
    data["competition"].pop("image_column")
    data["competition"]["image_path"] = "images/{name}.png"
    comp = load_competition(build_config(data).competition)
    assert comp.train[IMAGE_PATH].iloc[3] == "images/00003.png"
    assert comp.test["name"].iloc[0] == "00100"
    assert comp.train["plain"].dtype == np.int64  # written plainly: a number, as before
    # the test images' digest reads the same files ('00100.png', not the missing '100.png'):
    # one rewritten in place changes it
    from pipeline.data_files import data_digests

    cfg = build_config(data)
    before = data_digests(cfg)["test_images"]
    (root / "images" / "00100.png").write_bytes((root / "images" / "00000.png").read_bytes())
    assert data_digests(cfg)["test_images"] != before


# --- feature columns the test file lacks (issue 15 item 1) ----------------------------------


def test_train_only_feature_column_is_refused_naming_it(competition_factory, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """A column in train but not in test was silently left out of the features; now the run
    refuses it (before writing anything) and says how to go on."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    test = Path(cfg["competition"]["dir"]) / "test.csv"
    edit_csv(test, lambda f: f.drop(columns=["x2"]))
    expect_failure(cfg, tmp_path, capsys, str(test), "['x2']", "drop_train_only_columns")


def test_train_only_columns_can_be_dropped_on_request(competition_factory, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["drop_train_only_columns"] = True
    edit_csv(Path(cfg["competition"]["dir"]) / "test.csv", lambda f: f.drop(columns=["x2"]))
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "dropped train-only column(s) ['x2']" in caplog.text
    # the features the model read are logged, categories named
    assert "numeric ['x1']" in caplog.text and "categorical ['color']" in caplog.text


def test_a_column_empty_in_every_train_row_is_left_out(competition_factory, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """HistGradientBoosting, which keeps NaN, crashed binning such a column (a traceback:
    'window shape cannot be larger than input array shape'); no model can learn from it."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["model"]["encoders"] = [{"name": "sklearn:sklearn.ensemble.HistGradientBoostingClassifier",
                                 "params": {"max_iter": 5}}]
    folder = Path(cfg["competition"]["dir"])
    edit_csv(folder / "train.csv", lambda f: f.assign(empty=np.nan))
    edit_csv(folder / "test.csv", lambda f: f.assign(empty=1.0))
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "left out column(s) ['empty']: empty in every train row" in caplog.text
    assert "numeric ['x1', 'x2']" in caplog.text


def test_a_column_empty_in_every_test_row_is_left_out(competition_factory, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A column with values in train and none in test was a feature, silently: the model
    leaned on it in CV and predicted every test row from its missing-value fill."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    folder = Path(cfg["competition"]["dir"])
    edit_csv(folder / "test.csv", lambda f: f.assign(x1=np.nan))
    with caplog.at_level(logging.INFO):
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert "left out column(s) ['x1']: empty in every test row" in caplog.text
    assert "numeric ['x2']" in caplog.text


def test_numbers_written_with_percent_signs_or_thousands_separators_are_numbers(
        competition_factory) -> None:
    """'12.5%', '1,234.5' and '2021-03-04 13:00:00' were read as text, so as categories whose
    test values train never shows: the model lost the feature (one 'unknown' code for 95% of
    the test rows, every row for test dates later than train's)."""
    data = cli_config(competition_factory, "tabular", "binary")
    folder = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        edit_csv(folder / name, lambda f: f.assign(
            share=[f"{v:.1f}%" for v in 100 * f["x1"]], x2=f["x2"] * 1e4,
            count=[f"{v:,}" if i % 2 else str(v) for i, v in enumerate(1000 + f.index)],
            code=[f"{i},500" for i in range(len(f))],  # a category: '1,500' parsed below
            day=[str(pd.Timestamp(2021, 3, 1) + pd.Timedelta(hours=13 * i + 100 * len(f)))
                 for i in range(len(f))]))  # test days: later than any train day
    data["competition"]["categorical_columns"] = ["code"]
    comp = load_competition(build_config(data).competition)
    assert comp.written_numbers == ["share", "count", "day"]
    assert comp.categorical_columns == ["color", "code"]
    raw = pd.read_csv(folder / "test.csv")
    assert comp.test["share"].to_numpy() == pytest.approx(
        [float(v.rstrip("%")) / 100 for v in raw["share"]])
    assert comp.test["count"].tolist() == (1000 + raw.index).tolist()
    days = pd.to_datetime(raw["day"]) - pd.Timestamp(0)
    assert comp.test["day"].to_numpy() == pytest.approx(days / pd.Timedelta(days=1))
    assert comp.train["code"].iloc[1] == "1,500"
    # in a ';'-separated file ',' is the decimal mark: '1,500' may be 1.5, so it stays text
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        pd.read_csv(folder / name).to_csv(folder / name, sep=";", index=False)
    data["competition"]["sep"] = ";"
    comp = load_competition(build_config(data).competition)
    assert comp.written_numbers == ["share", "day"] and "count" in comp.categorical_columns


def test_numbers_with_a_few_text_cells_are_numbers_with_those_missing(competition_factory,
                                                                       caplog) -> None:
    """One 'unknown' cell made train's strongest column text, so categories that the test
    rows never matched (a float seldom repeats): held-out accuracy 0.81 -> 0.53, with no
    word but the unseen-categories share. A few text cells are now missing values, named in
    a warning; a column with many (a ticket code) or listed as categorical stays text."""
    data = cli_config(competition_factory, "tabular", "binary")
    folder = Path(data["competition"]["dir"])
    edit_csv(folder / "train.csv", lambda f: f.assign(
        x1=f["x1"].astype(object).where(f.index != 3, "unknown"),
        kept=f["x2"].astype(object).where(f.index != 5, "?"),
        ticket=[f"PC {i}" if i % 3 == 0 else str(1000 + i) for i in range(len(f))]))
    edit_csv(folder / "test.csv", lambda f: f.assign(
        x2=f["x2"].astype(object).where(f.index != 0, "#DIV/0!"), kept=f["x2"],
        ticket=[str(2000 + i) for i in range(len(f))]))
    data["competition"]["categorical_columns"] = ["kept"]
    with caplog.at_level(logging.WARNING):
        comp = load_competition(build_config(data).competition)
    assert comp.categorical_columns == ["color", "kept", "ticket"]
    assert {"x1", "x2"} <= set(comp.numeric_columns) and comp.written_numbers == []
    raw = pd.read_csv(folder / "train.csv")
    assert np.isnan(comp.train["x1"].iloc[3]) and comp.train["x1"].dtype == np.float64
    assert comp.train["x1"].drop(index=3).to_numpy() == pytest.approx(
        raw["x1"].drop(index=3).astype(float))
    assert np.isnan(comp.test["x2"].iloc[0]) and comp.train["kept"].iloc[5] == "?"
    assert "column 'x1': 1 of 64 cells are text among numbers (['unknown'])" in caplog.text
    assert "cells are text among numbers (['#DIV/0!'])" in caplog.text
    assert "'ticket'" not in caplog.text and "'kept'" not in caplog.text



def test_spreadsheet_numbers_with_a_few_text_cells_are_numbers(competition_factory,
                                                               caplog) -> None:
    """'$1,250.00' or '12%' with one '-' cell stayed text (each value a category, test values
    unseen) where the same column without it, or plain numbers with it, are numbers."""
    data = cli_config(competition_factory, "tabular", "binary")
    folder = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        edit_csv(folder / name, lambda f: f.assign(
            price=[f"${v:,.2f}" if i != 2 else "-" for i, v in enumerate(1000 * f.index + 0.5)],
            share=[f"{i}%" if i != 1 else "n.a." for i in range(len(f))]))
    with caplog.at_level(logging.WARNING):
        comp = load_competition(build_config(data).competition)
    assert {"price", "share"} <= set(comp.numeric_columns)
    assert comp.train["price"].iloc[1] == pytest.approx(1000.5)
    assert np.isnan(comp.train["price"].iloc[2]) and np.isnan(comp.test["share"].iloc[1])
    assert comp.train["share"].iloc[3] == pytest.approx(0.03)
    assert "cells are text among numbers (['-'])" in caplog.text

def test_numbers_with_a_money_sign_or_one_shared_unit_are_numbers(competition_factory) -> None:
    """'$1,250.00' (Airbnb's prices) and '12 kg' were categories, nearly every test value
    unseen in train: the model lost the feature. Units that differ ('12 kg', '3 g') or
    codes ('12A', '13B') stay text."""
    data = cli_config(competition_factory, "tabular", "binary")
    folder = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        edit_csv(folder / name, lambda f: f.assign(
            price=[f"${v:,.2f}" for v in 1000 * f.index + 0.5],
            weight=[f"{v:.1f} kg" if i % 2 else f"{v:.1f}kg" for i, v in enumerate(f["x1"])],
            speed=[f"{i} km/h" for i in range(len(f))],
            mass=[f"{i} {'kg' if i % 2 else 'g'}" for i in range(len(f))],
            code=[f"{i}{'AB'[i % 2]}" for i in range(len(f))]))
    comp = load_competition(build_config(data).competition)
    assert comp.written_numbers == ["price", "weight", "speed"]
    assert comp.categorical_columns == ["color", "mass", "code"]
    raw = pd.read_csv(folder / "test.csv")
    assert comp.test["price"].tolist() == (1000 * raw.index + 0.5).tolist()
    assert comp.test["weight"].to_numpy() == pytest.approx(raw["x1"].round(1))
    assert comp.test["speed"].tolist() == list(range(len(raw)))


def test_text_columns_are_read_as_written(competition_factory) -> None:
    """A text column of numbers with an empty cell was read as floats: the tokenizer read
    '12.0' for '12' and '7.0' for '007' (and pandas warns that filling a float column with
    '' will raise)."""
    data = competition_factory("text", "binary")
    folder = Path(data["competition"]["dir"])
    written = ["12", "007", "1e3", ""]
    for name in ("train.csv", "test.csv"):
        edit_csv(folder / name, lambda f: f.assign(
            text=[written[i % 4] for i in range(len(f))]))
    comp = load_competition(build_config(data).competition)
    for frame in (comp.train, comp.test):
        assert frame["text"].fillna("").tolist() == [written[i % 4] for i in range(len(frame))]


def test_text_cells_that_are_pandas_missing_words_are_texts(competition_factory) -> None:
    """An answer 'None', a comment 'null' or 'N/A' is a text: pandas' words for a missing
    cell turned it into the blank text (the tokenizer read [CLS] [SEP]). An empty cell and
    'competition.na_values' still mark a missing text."""
    data = competition_factory("text", "binary")
    folder = Path(data["competition"]["dir"])
    written = ["None", "null", "N/A", "NA", "nan", "", "?", "fine"]
    for name in ("train.csv", "test.csv"):
        edit_csv(folder / name, lambda f: f.assign(
            text=[written[i % 8] for i in range(len(f))]))
    data["competition"]["na_values"] = ["?"]
    comp = load_competition(build_config(data).competition)
    for frame in (comp.train, comp.test):
        expected = [written[i % 8] for i in range(len(frame))]
        assert frame["text"].fillna("").tolist() == ["" if t == "?" else t for t in expected]
        assert frame["text"].isna().sum() == sum(t in ("", "?") for t in expected)


@pytest.mark.parametrize("columns, said", [
    (["text", "text"], "'text_columns' names column(s) ['text'] more than once"),
    (["text", "id"], "'text_columns' ['id'] are also the 'id_column' or 'target_columns'"),
    (["target", "text"], "'text_columns' ['target'] are also the 'id_column' or "
                         "'target_columns'"),
])
def test_text_columns_that_repeat_or_name_the_id_or_a_target_are_refused(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        columns: list[str], said: str) -> None:
    """A text column named twice stopped the run with a traceback (narwhals' DuplicateError)
    and left its run folder; the id as a text column trained on the ids' words, silently; a
    target as a text column was refused as a target that 'must hold 0/1' holding 0 and 1."""
    cfg = competition_factory("text", "binary")
    cfg["competition"]["text_columns"] = columns
    expect_failure(cfg, tmp_path, capsys, said)
    assert not (Path(cfg["output_dir"]) / cfg["name"]).exists()
    cfg["competition"].update(text_columns=["text"], task="regression", metric="rmse",
                              target_columns=["target", "target"])
    with pytest.raises(ConfigError, match=r"'target_columns' names column\(s\) "
                                          r"\['target'\] more than once"):
        build_config(cfg)


def test_na_values_mark_missing_cells_of_numeric_columns(competition_factory) -> None:
    """A numeric column with '?' for its missing cells (UCI's way) was read as text, so as
    categories no test value of which train shows; 'competition.na_values' names them."""
    data = cli_config(competition_factory, "tabular", "binary")
    folder = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        edit_csv(folder / name, lambda f: f.assign(
            x2=[v if i % 5 else "?" for i, v in enumerate(f["x2"].astype(str))]))
    assert "x2" in load_competition(build_config(data).competition).categorical_columns
    data["competition"]["na_values"] = ["?"]
    comp = load_competition(build_config(data).competition)
    assert comp.numeric_columns == ["x1", "x2"]
    assert comp.train["x2"].isna().sum() >= len(comp.train) // 5


def test_semicolon_latin1_files_are_read_with_sep_and_encoding(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15 item 9: competition files that are not comma-separated UTF-8 need
    'competition.sep' and 'competition.encoding'; the submission stays a plain CSV."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    folder = Path(cfg["competition"]["dir"])
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        frame = pd.read_csv(folder / name)
        if "color" in frame.columns:
            frame["color"] = frame["color"].map({"red": "rouge", "blue": "bleu é"})
        frame.to_csv(folder / name, sep=";", encoding="latin-1", index=False)
    cfg["competition"].update(sep=";")
    expect_failure(cfg, tmp_path, capsys, "train.csv", "could not be read as utf-8 text",
                   "'competition.encoding'")  # the key to set was not named
    cfg["competition"].update(sep=";", encoding="latin-1")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    submission = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")
    assert list(submission.columns) == ["id", "target"] and len(submission) > 0
    cfg["competition"]["encoding"] = "no-such-codec"
    cfg["name"] = "bad-encoding"
    expect_failure(cfg, tmp_path, capsys, "unknown encoding 'no-such-codec'")


def test_decimal_commas_are_read_with_decimal_and_thousands(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ';'-separated file writing 1.234,5 had its number columns read as text (features
    as categories, a regression target refused as 'not numbers'), with no key to say how
    numbers are written; 'competition.decimal' and 'thousands' say it, for the target a
    later stage reads back too."""
    from pipeline.artifacts import load_predictions
    from pipeline.run_targets import targets_for_meta

    cfg = cli_config(competition_factory, "tabular", "regression")
    folder = Path(cfg["competition"]["dir"])
    european = str.maketrans(",.", ".,")  # 12,345.6 -> 12.345,6
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        frame = pd.read_csv(folder / name)
        if "x1" in frame.columns:
            frame["x1"] = [f"{v:,.2f}".translate(european) for v in 1e4 * frame["x1"]]
        frame.to_csv(folder / name, sep=";", decimal=",", index=False)
    assert "." in pd.read_csv(folder / "train.csv", sep=";")["x1"].iloc[0]
    cfg["competition"].update(sep=";", decimal=",", thousands=".")
    comp = load_competition(build_config(cfg).competition)
    assert comp.numeric_columns == ["x1", "x2"] and comp.categorical_columns == ["color"]
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    meta = load_predictions(Path(cfg["output_dir"]) / cfg["name"]).meta
    np.testing.assert_allclose(targets_for_meta(meta), comp.targets)


def test_a_target_written_with_a_point_under_decimal_comma_is_one_line(
        competition_factory) -> None:
    """'0.5' read as text under 'decimal: ","' is a number to pd.to_numeric: the error
    looked for a value that is not one, found none and raised an IndexError."""
    data = competition_factory("tabular", "regression")
    folder = Path(data["competition"]["dir"])
    for name in ("train.csv", "test.csv"):
        pd.read_csv(folder / name).to_csv(folder / name, sep=";", index=False)
    data["competition"].update(sep=";", decimal=",")
    with pytest.raises(DataError, match=r"target column 'y' must be numeric .* e\.g\. '-?\d"
                                        r"\.\d+' \(line 2\)\. Say how .*'competition\.decimal'"):
        load_competition(build_config(data).competition)


def test_ids_with_leading_zeros_reach_the_submission_as_written(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ids such as 000123 were read as the number 123 and written back as 123: a submission
    whose ids a scorer comparing text finds none of. They are read as text in every file."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    folder = Path(cfg["competition"]["dir"])
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        edit_csv(folder / name, lambda f: f.assign(id=f["id"].str.replace("r", "00")))
    sample_ids = (folder / "sample_submission.csv").read_text().splitlines()[1].split(",")[0]
    assert sample_ids.startswith("00")
    for _ in range(2):  # the second run reads the folds file and the finished folds back
        code, err, _ = run_cli(cfg, tmp_path, capsys)
        assert code == 0, err
        lines = (Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv").read_text().splitlines()
        expected = (folder / "sample_submission.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in lines] == [r.split(",")[0] for r in expected]


def test_class_labels_with_leading_zeros_reach_the_submission_as_written(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Class labels such as '01' were read as the number 1, and a submission of labels wrote
    1: a class no scorer knows. They are read as text, as integers only when plain."""
    cfg = cli_config(competition_factory, "tabular", "multiclass")
    folder = Path(cfg["competition"]["dir"])
    edit_csv(folder / "train.csv", lambda f: f.assign(target=f["target"].map("{:02d}".format)))
    edit_csv(folder / "sample_submission.csv", lambda f: f.assign(target="00"))
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    submission = Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv"
    written = set(pd.read_csv(submission, dtype=str)["target"])
    assert written and written <= {"00", "01", "02"}, written
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == ["00", "01", "02"]


def test_class_labels_written_as_floats_reach_the_submission_as_integers(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A multiclass column saved as floats ('2.0': an integer column with a gap, written by
    pandas) was read as float classes, and a submission of labels wrote '2.0' beside a
    sample of '0's: a scorer comparing text counts every row wrong. They are the integers."""
    cfg = cli_config(competition_factory, "tabular", "multiclass")
    cfg["competition"]["metric"] = "accuracy"
    folder = Path(cfg["competition"]["dir"])
    edit_csv(folder / "train.csv", lambda f: f.assign(target=f["target"].map("{:.1f}".format)))
    assert "2.0" in (folder / "train.csv").read_text()
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    submission = Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv"
    written = set(pd.read_csv(submission, dtype=str)["target"])
    assert written and written <= {"0", "1", "2"}, written
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == [0, 1, 2] and all(type(c) is int for c in comp.classes)


@pytest.mark.parametrize("encoder", [{"name": "lightgbm", "params": {"n_estimators": 20}},
                                     {"name": "mlp", "params": {"hidden": [8]}}])
def test_a_run_trained_on_float_labels_is_redone_not_a_traceback(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        encoder: dict[str, Any]) -> None:
    """A run trained before '2.0' labels were read as integers has prediction columns '0.0',
    '1.0', '2.0'; its folds are complete under the same config, and gathering them raised a
    KeyError traceback. Each fold trains again, and the submission writes integer labels."""
    from pipeline import competition_files

    cfg = cli_config(competition_factory, "tabular", "multiclass")
    cfg["model"]["encoders"] = [encoder]
    folder = Path(cfg["competition"]["dir"])
    edit_csv(folder / "train.csv", lambda f: f.assign(target=f["target"].map("{:.1f}".format)))
    with monkeypatch.context() as old:  # the reader before: float classes
        old.setattr(competition_files, "_labels", lambda values: pd.to_numeric(values))
        code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    run_dir = Path(cfg["output_dir"]) / cfg["name"]
    assert "2.0" in pd.read_parquet(run_dir / "oof.parquet").columns
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert caplog.text.count("the competition's are now ['0', '1', '2']; it is trained "
                             "again") == cfg["folds"]["n_splits"]
    assert {"0", "1", "2"} <= set(pd.read_parquet(run_dir / "oof.parquet").columns)
    submission = Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv"
    assert set(pd.read_csv(submission, dtype=str)["target"]) <= {"0", "1", "2"}


def test_sample_submission_columns_are_checked_before_training(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sample whose columns are neither the targets nor the classes was refused by submit,
    after every fold had trained; now at load, with nothing written."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    sample = Path(cfg["competition"]["dir"]) / "sample_submission.csv"
    # two columns for one target (one of another name is filled from the target)
    edit_csv(sample, lambda f: f.rename(columns={"target": "prediction"}).assign(score=0))
    expect_failure(cfg, tmp_path, capsys, str(sample), "['prediction', 'score']", "['target']",
                   "nor the classes ['no', 'yes']")


def _rewrite(path: Path, fn: Callable[[str], str]) -> None:
    path.write_text(fn(path.read_text()))


def test_ids_and_labels_spelled_like_missing_values_are_read_as_written(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ids and class labels such as 'NA' (North America), 'None' or 'null' are pandas' words
    for a missing cell: the ids were refused as empty and the labels as NaN targets. They are
    read as written, through the folds file too, and reach the submission so."""
    cfg = cli_config(competition_factory, "tabular", "multiclass")
    cfg["competition"]["metric"] = "accuracy"
    folder = Path(cfg["competition"]["dir"])
    names = {"r0000": "NA", "r0001": "None", "r0050": "null", "r0051": "nan", "r0052": "N/A"}
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        _rewrite(folder / name, lambda text: "\n".join(
            names.get(line.split(",")[0], line.split(",")[0]) + line[line.index(","):]
            for line in text.splitlines()) + "\n")
    train = pd.read_csv(folder / "train.csv", keep_default_na=False, dtype=str)
    label = {"0": "NA", "1": "EU", "2": "AS"}
    train["target"] = train["target"].map(label)
    train.to_csv(folder / "train.csv", index=False)
    comp = load_competition(build_config(cfg).competition)
    assert comp.classes == ["AS", "EU", "NA"]
    assert {"NA", "None"} <= set(comp.train["id"]) and {"null", "nan"} <= set(comp.test["id"])
    for _ in range(2):  # the second run reads the folds file and the finished folds back
        code, err, _ = run_cli(cfg, tmp_path, capsys)
        assert code == 0, err
        path = Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv"
        lines = path.read_text().splitlines()
        expected = (folder / "sample_submission.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in lines] == [r.split(",")[0] for r in expected]
        written = set(pd.read_csv(path, keep_default_na=False, dtype=str)["target"])
        assert written and written <= {"NA", "EU", "AS"}, written


@pytest.mark.parametrize("spelling", [("true", "false"), ("TRUE", "FALSE"), ("True", "False")])
def test_boolean_labels_reach_the_submission_as_the_train_file_spells_them(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        spelling: tuple[str, str]) -> None:
    """Labels 'true'/'false' (or 'TRUE'/'FALSE') were read as booleans and written back as
    'True'/'False', words a scorer comparing text does not know."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["metric"] = "accuracy"
    train = Path(cfg["competition"]["dir"]) / "train.csv"
    edit_csv(train, lambda f: f.assign(target=f["target"].map(
        {"yes": spelling[0], "no": spelling[1]})))
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    path = Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv"
    written = set(pd.read_csv(path, dtype=str)["target"])
    assert written and written <= set(spelling), written
    comp = load_competition(build_config(cfg).competition)
    assert [str(c) for c in comp.classes] == [spelling[1], spelling[0]]  # positive: true


def test_sample_columns_named_target_underscore_class_are_accepted(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cli_config(competition_factory, "tabular", "binary")
    cfg["competition"]["metric"] = "log_loss"
    sample = Path(cfg["competition"]["dir"]) / "sample_submission.csv"
    edit_csv(sample, lambda f: f.drop(columns="target").assign(target_yes=0.5, target_no=0.5))
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")
    assert list(sub.columns) == ["id", "target_yes", "target_no"]
    np.testing.assert_allclose(sub["target_yes"] + sub["target_no"], 1.0)


def test_positive_class_names_the_label_whose_probability_is_submitted(
        competition_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The larger label ('yes' of no/yes) was always the positive class: a competition that
    scores the probability of 'bad' among good/bad got P(good), and F1 scored the other class."""
    cfg = cli_config(competition_factory, "tabular", "binary")
    submissions = {}
    for positive in (None, "no"):
        cfg["competition"]["positive_class"] = positive
        cfg["name"] = f"positive-{positive}"
        code, err, _ = run_cli(cfg, tmp_path, capsys)
        assert code == 0, err
        submissions[positive] = pd.read_csv(Path(cfg["submissions_dir"]) / f"{cfg['name']}.csv")
        run = yaml.safe_load((Path(cfg["output_dir"]) / cfg["name"] / "run.json").read_text())
        assert run["classes"] == (["no", "yes"] if positive is None else ["yes", "no"])
    np.testing.assert_allclose(submissions[None]["target"] + submissions["no"]["target"], 1.0,
                               atol=1e-6)
    cfg["name"] = "positive-bad"
    cfg["competition"]["positive_class"] = "maybe"
    expect_failure(cfg, tmp_path, capsys, "'competition.positive_class' 'maybe' is not a label",
                   "['no', 'yes']")


def test_image_path_template_columns_are_no_features(competition_factory) -> None:
    # a file-name column filled into the template was read as a category of one row each,
    # which the mlp beside the image encoder memorised (PetFinder-like: RMSE 5.24 -> 6.37)
    import shutil

    data = competition_factory("image", "binary")
    root = Path(data["competition"]["dir"])
    for split in ("train", "test"):
        frame = pd.read_csv(root / f"{split}.csv")
        (root / split / "a").mkdir(parents=True)
        for rid, rel in zip(frame["id"], frame["image"], strict=True):
            shutil.copy(root / rel, root / split / "a" / f"{rid}.png")
        frame.drop(columns="image").assign(
            folder="a", file=frame["id"].astype(str) + ".png", age=np.arange(len(frame)),
        ).to_csv(root / f"{split}.csv", index=False)
    data["competition"].pop("image_column")
    data["competition"]["image_path"] = "{split}/{folder}/{file}"
    comp = load_competition(build_config(data).competition)
    assert comp.feature_columns == ["age"]
    assert comp.categorical_columns == []
    data["competition"]["feature_columns"] = ["age", "folder"]  # listed: read as given
    assert load_competition(build_config(data).competition).feature_columns == ["age", "folder"]

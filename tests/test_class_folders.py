"""A train set given as one folder per class (``train/<class>/<image>``, Kaggle's Plant
Seedlings): ``competition.train_file`` names the folder (pipeline/class_folders.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.artifacts import load_predictions
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data_files import file_digest
from pipeline.errors import DataError
from pipeline.run_targets import targets_for_meta
from tests.test_competition import run_cli

CLASSES = ["Black-grass", "Charlock", "Maize"]


def _image(rng: np.random.Generator, c: int) -> Image.Image:
    """A class's image: a bright band in its third of the width."""
    pixels = np.full((24, 24, 3), 40.0)
    pixels[:, c * 8:(c + 1) * 8] = 200
    return Image.fromarray(np.clip(pixels + rng.normal(0, 25, pixels.shape), 0, 255
                                   ).astype(np.uint8))


def _competition(root: Path, classes: list[str] = CLASSES, n_train: int = 60,
                 n_test: int = 24) -> tuple[dict[str, Any], list[str]]:
    """The folders, test/ and sample_submission.csv (no test.csv), a config; the test
    rows' true classes."""
    rng = np.random.default_rng(0)
    for i in range(n_train):
        folder = root / "train" / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        _image(rng, i % len(classes)).save(folder / f"{i:05x}.png")
    (root / "test").mkdir()
    truth = [int(c) for c in rng.integers(0, len(classes), n_test)]
    for i, c in enumerate(truth):
        _image(rng, c).save(root / "test" / f"t{i:04d}.png")
    pd.DataFrame({"file": [f"t{i:04d}.png" for i in range(n_test)],
                  "species": classes[0]}).to_csv(root / "sample_submission.csv", index=False)
    return {
        "name": "seedlings", "output_dir": str(root / "runs"), "folds_dir": str(root / "folds"),
        "submissions_dir": str(root / "submissions"),
        "competition": {"dir": str(root), "id_column": "file", "target_columns": ["species"],
                        "task": "multiclass", "metric": "f1_micro", "modality": "image",
                        "image_path": "{split}/{file}", "train_file": "train",
                        "test_file": "sample_submission.csv"},
        "folds": {"scheme": "stratified", "n_splits": 2, "seed": 0},
        "model": {"encoders": [{"name": "timm:test_resnet"}], "image_size": 32},
        "train": {"epochs": 4, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3}},
    }, [classes[c] for c in truth]


def test_each_image_is_a_row_labelled_by_its_folder(tmp_path: Path) -> None:
    cfg, _ = _competition(tmp_path, ["0", "1", "2"])
    (tmp_path / "train" / "README.txt").write_text("not an image")
    (tmp_path / "train" / "1" / ".DS_Store").write_bytes(b"\0")
    comp = load_competition(build_config(cfg).competition)
    assert len(comp.train) == 60 and comp.classes == [0, 1, 2]  # integer names as labels
    first = comp.train.iloc[0]
    assert first["file"] == "0/00000.png" and first["species"] == 0
    assert first["_image_path"] == "train/0/00000.png"
    assert comp.train["species"].value_counts().tolist() == [20, 20, 20]
    assert comp.test["_image_path"].iloc[0] == "test/t0000.png"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda root: _image(np.random.default_rng(0), 0).save(root / "train" / "loose.png"),
     r"1 image file\(s\) outside a class folder \(e.g. \['loose.png'\]\)"),
    (lambda root: (root / "train" / "Empty").mkdir(),
     r"class folder\(s\) \['Empty'\] hold no image files"),
])
def test_a_folder_that_is_no_class_set_is_refused(tmp_path: Path, edit, message: str) -> None:
    cfg, _ = _competition(tmp_path)
    edit(tmp_path)
    with pytest.raises(DataError, match=message):
        load_competition(build_config(cfg).competition)


def test_one_class_folder_and_a_tabular_or_regression_config_are_refused(
        tmp_path: Path) -> None:
    cfg, _ = _competition(tmp_path, ["only"])
    with pytest.raises(DataError, match=r"1 class folder\(s\) \['only'\]; a class set needs"):
        load_competition(build_config(cfg).competition)
    cfg["competition"]["task"], cfg["competition"]["metric"] = "regression", "rmse"
    with pytest.raises(DataError, match="needs task 'binary' or 'multiclass'"):
        load_competition(build_config(cfg).competition)
    cfg["competition"].update(modality="tabular", image_path=None)
    with pytest.raises(DataError, match="gives image files as rows: it needs 'modality: image'"):
        load_competition(build_config(cfg).competition)


def test_an_added_image_changes_the_train_digest(tmp_path: Path) -> None:
    _competition(tmp_path)
    before = file_digest(tmp_path / "train")
    assert before == file_digest(tmp_path / "train")
    _image(np.random.default_rng(1), 2).save(tmp_path / "train" / "Maize" / "new.png")
    assert file_digest(tmp_path / "train") != before


def test_the_digest_keeps_its_format_so_finished_runs_stay_current(tmp_path: Path) -> None:
    """The digest is a run's record of its train folder: SHA-256 over each image's path
    inside it, size and modification time, in the order of the paths' parts ('a/b' before
    'a-b'), hidden files, other files and symlinked folders left out. A faster walk must give
    the same value, or every finished class-folder run would retrain."""
    import hashlib
    import os

    root = tmp_path / "train"
    for name in ("a-b/1.png", "a/b/2.PNG", "a/3.jpg", "x/7.webp", "x/a.png", "x/a-b.png",
                 "x/a/z.png", "x/.hidden.png", "x/notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * len(name))
    os.symlink(root / "x", root / "a" / "link")
    expected = hashlib.sha256()
    for name in ("a/3.jpg", "a/b/2.PNG", "a-b/1.png", "x/7.webp", "x/a/z.png", "x/a-b.png",
                 "x/a.png"):
        stat = (root / name).stat()
        expected.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    assert file_digest(root) == expected.hexdigest()
    os.utime(root / "x" / "a.png", ns=(1, 2))  # an image rewritten in place changes it too
    assert file_digest(root) != expected.hexdigest()


def test_pipeline_run_trains_on_the_folders_and_submits(tmp_path: Path, capsys) -> None:
    cfg, truth = _competition(tmp_path / "comp")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "comp" / "submissions" / "seedlings.csv")
    assert list(sub.columns) == ["file", "species"]
    assert (sub["species"] == truth).mean() > 0.9
    run = tmp_path / "comp" / "runs" / "seedlings"
    oof = pd.read_parquet(run / "oof.parquet")
    assert oof["file"].str.match(r"(Black-grass|Charlock|Maize)/[0-9a-f]{5}\.png").all()
    # a later stage (blend, report) reads the targets back from the folders, in train order
    train = load_competition(build_config(cfg).competition).train
    np.testing.assert_array_equal(targets_for_meta(load_predictions(run).meta),
                                  [CLASSES.index(f.split("/")[0]) for f in train["file"]])


def test_a_copied_train_folder_keeps_its_folds(tmp_path: Path, capsys) -> None:
    """A folder of class folders copied elsewhere (a notebook's /kaggle/input, another disk)
    gets new modification times: every fold was trained again. Names and sizes as recorded,
    its images are the same; an image of another size still trains the folds again."""
    import shutil

    cfg, _ = _competition(tmp_path / "comp", n_train=30, n_test=6)
    cfg["train"]["epochs"] = 1
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    metrics = Path(cfg["output_dir"]) / "seedlings" / "seed0" / "fold0" / "metrics.json"
    trained = metrics.read_bytes()
    moved = tmp_path / "kaggle" / "comp"
    shutil.copytree(tmp_path / "comp", moved, copy_function=shutil.copy, ignore=lambda d, n: [
        x for x in n if x in ("runs", "folds", "submissions")])
    cfg["competition"]["dir"] = str(moved)
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert metrics.read_bytes() == trained
    _image(np.random.default_rng(5), 0).resize((30, 30)).save(
        moved / "train" / CLASSES[0] / "00000.png")
    code, err, _ = run_cli(cfg, tmp_path, capsys)
    assert code == 0, err
    assert metrics.read_bytes() != trained

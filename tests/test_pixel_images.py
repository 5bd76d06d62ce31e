"""Images given as pixel values in the CSV files (``competition.pixels``): written once as PNG
files the image path reads, in the right places, at the right grey levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from pipeline.competition import IMAGE_PATH, CompetitionConfig, load_competition
from pipeline.errors import DataError
from pipeline.pixel_images import gray_levels


def _write(root: Path, train: pd.DataFrame, test: pd.DataFrame) -> Path:
    comp = root / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    train.to_csv(comp / "train.csv", index=False)
    test.to_csv(comp / "test.csv", index=False)
    test[["id"]].assign(label=0).to_csv(comp / "sample_submission.csv", index=False)
    return comp


def _mnist_like(root: Path, rows: int = 12, side: int = 4, high: int = 255,
                seed: int = 0) -> tuple[Path, np.ndarray]:
    """train/test with ``pixel0..`` columns (MNIST's layout: label first, row-major pixels)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, high + 1, size=(rows, side * side))
    values[0, 0], values[1, 1] = 0, high  # the set spans its range
    frame = pd.DataFrame(values, columns=[f"pixel{i}" for i in range(side * side)])
    frame.insert(0, "id", [f"r{i}" for i in range(rows)])
    frame.insert(1, "label", np.arange(rows) % 2)
    frame["other"] = rng.normal(size=rows)
    half = rows // 2
    return _write(root, frame.iloc[:half], frame.iloc[half:].drop(columns="label")), values


def _config(comp: Path, tmp_path: Path, **pixels: Any) -> CompetitionConfig:
    return CompetitionConfig(
        dir=str(comp), target_columns=["label"], task="binary", metric="accuracy",
        modality="image", pixels={"cache_dir": str(tmp_path / "cache"), **pixels})


def _read(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_pixel_columns_become_the_images_the_run_reads(tmp_path: Path) -> None:
    comp_dir, values = _mnist_like(tmp_path)
    comp = load_competition(_config(comp_dir, tmp_path, prefix="pixel"))
    # the pixel columns are the images, not 16 features beside them; the other column stays
    assert comp.feature_columns == ["other"]
    assert not [c for c in comp.train.columns if c.startswith("pixel")]
    paths = [*comp.train[IMAGE_PATH], *comp.test[IMAGE_PATH]]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    # row-major, 8-bit values as written (MNIST's 0..255 stay), train and test alike
    for path, row in zip(paths, values, strict=True):
        assert np.array_equal(_read(path), row.reshape(4, 4).astype(np.uint8))
    # a second load (another stage, a later run) finds them written and writes nothing
    stamps = {p: Path(p).stat().st_mtime_ns for p in paths}
    again = load_competition(_config(comp_dir, tmp_path, prefix="pixel"))
    assert list(again.train[IMAGE_PATH]) == list(comp.train[IMAGE_PATH])
    assert {p: Path(p).stat().st_mtime_ns for p in paths} == stamps
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_cached_pixel_images_that_are_gone_are_written_again(tmp_path: Path) -> None:
    # the PNG files are the toolkit's cache: a file removed from it (a disk clean-up, a
    # partial copy) was refused as "not found from 'image_path' None" by every later stage
    comp_dir, values = _mnist_like(tmp_path)
    first = load_competition(_config(comp_dir, tmp_path, prefix="pixel"))
    gone = [Path(first.train[IMAGE_PATH].iloc[1]), Path(first.test[IMAGE_PATH].iloc[2])]
    for path in gone:
        path.unlink()
    again = load_competition(_config(comp_dir, tmp_path, prefix="pixel"))
    assert list(again.test[IMAGE_PATH]) == list(first.test[IMAGE_PATH])
    assert np.array_equal(_read(str(gone[0])), values[1].reshape(4, 4).astype(np.uint8))
    assert np.array_equal(_read(str(gone[1])), values[6 + 2].reshape(4, 4).astype(np.uint8))
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_grey_levels_are_one_linear_map_over_the_set() -> None:
    # sklearn's digits (0..16) are stretched, not kept near black; [0, 1] floats scaled by
    # 255; 8-bit values kept; standardised values from their lowest to their highest
    assert gray_levels(np.array([[0, 8, 16]])).tolist() == [[0, 128, 255]]
    assert gray_levels(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
    assert gray_levels(np.array([[0, 100, 255]])).tolist() == [[0, 100, 255]]
    assert gray_levels(np.array([[-1.0, 0.0, 1.0]])).tolist() == [[0, 128, 255]]
    assert gray_levels(np.zeros((1, 3))).tolist() == [[0, 0, 0]]


def test_small_integer_levels_are_scaled_alike_in_train_and_test(tmp_path: Path) -> None:
    comp_dir, values = _mnist_like(tmp_path, high=16)
    comp = load_competition(_config(comp_dir, tmp_path, prefix="pixel"))
    first_test = _read(comp.test[IMAGE_PATH].iloc[0]).astype(int)
    expected = np.rint(values[6].reshape(4, 4) * 255 / 16).astype(int)
    assert np.array_equal(first_test, expected)


@pytest.mark.parametrize("order", ["hwc", "chw"])
def test_one_column_of_spaced_values_in_colour(tmp_path: Path, order: str) -> None:
    # FER2013 ships each image as one cell of space-separated values
    image = np.arange(2 * 3 * 3).reshape(2, 3, 3) * 10  # height 2, width 3, RGB
    flat = image.ravel() if order == "hwc" else image.transpose(2, 0, 1).ravel()
    cell = " ".join(map(str, flat))
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [0, 1, 0, 1],
                          "pixels": [cell] * 4})
    comp_dir = _write(tmp_path, frame.iloc[:2], frame.iloc[2:].drop(columns="label"))
    comp = load_competition(_config(comp_dir, tmp_path, column="pixels", shape=[2, 3, 3],
                                    order=order))
    read = _read(comp.test[IMAGE_PATH].iloc[0])
    assert read.shape == (2, 3, 3)
    assert np.array_equal(read, np.rint(image * 255 / 170).astype(np.uint8))


@pytest.mark.parametrize("change, settings, message", [
    ("drop test column", {"prefix": "pixel"}, "lacks 1 pixel column"),
    ("empty cell", {"prefix": "pixel"}, "empty or infinite pixel values"),
    ("text cell", {"prefix": "pixel"}, "not numbers"),
    (None, {"prefix": "nope"}, "no column starts with 'nope'"),
    (None, {"prefix": "pixel", "shape": [3, 5]}, "holds 15 values, but the rows have 16"),
    ("drop last pixel", {"prefix": "pixel"}, "15 pixel values a row are not a square"),
])
def test_bad_pixels_are_refused_in_one_line(tmp_path: Path, change: str | None,
                                            settings: dict[str, Any], message: str) -> None:
    comp_dir, _ = _mnist_like(tmp_path)
    train, test = (pd.read_csv(comp_dir / f) for f in ("train.csv", "test.csv"))
    if change == "drop test column":
        test = test.drop(columns="pixel3")
    elif change == "empty cell":
        train.loc[2, "pixel5"] = np.nan
    elif change == "text cell":
        test["pixel5"] = test["pixel5"].astype(str)
        test.loc[0, "pixel5"] = "x"
    elif change == "drop last pixel":
        train, test = train.drop(columns="pixel15"), test.drop(columns="pixel15")
    _write(tmp_path, train, test)
    with pytest.raises(DataError, match=message):
        load_competition(_config(comp_dir, tmp_path, **settings))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_spaced_rows_of_another_length_name_their_lines(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [0, 1, 0, 1],
                          "pixels": ["1 2 3 4", "1 2 3 4", "1 2 3", "1 2 3 4"]})
    comp_dir = _write(tmp_path, frame.iloc[:3], frame.iloc[3:].drop(columns="label"))
    with pytest.raises(DataError, match=r"1 row\(s\) differ \(lines \[4\]\)"):
        load_competition(_config(comp_dir, tmp_path, column="pixels"))


@pytest.mark.parametrize("pixels, extra, message", [
    ({}, {}, "give 'prefix'"),
    ({"prefix": "p", "column": "c"}, {}, "give 'prefix'"),
    ({"prefix": "p", "shape": [4, 4, 2]}, {}, "must be 1 or 3"),
    ({"prefix": "p", "shape": [0, 4]}, {}, "must be positive"),
    ({"prefix": "p"}, {"image_column": "image"}, "not 2"),
])
def test_config_mistakes_are_refused(pixels: dict[str, Any], extra: dict[str, Any],
                                     message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CompetitionConfig(dir="x", target_columns=["label"], task="binary", metric="accuracy",
                          modality="image", pixels=pixels, **extra)
    with pytest.raises(ValidationError, match="'image_column', 'image_path' or 'pixels'"):
        CompetitionConfig(dir="x", target_columns=["label"], task="binary", metric="accuracy",
                          modality="image")


def test_a_run_trains_on_pixel_columns(tmp_path: Path, one_thread: None) -> None:
    from pipeline import train
    from pipeline.config import build_config

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    # class 1: a bright left half; class 0: a bright right half (8 x 8)
    images = rng.integers(0, 60, size=(40, 8, 8))
    for i, y in enumerate(labels):
        images[i, :, :4] += 180 * y
        images[i, :, 4:] += 180 * (1 - y)
    frame = pd.DataFrame(images.reshape(40, 64), columns=[f"px{i}" for i in range(64)])
    frame.insert(0, "id", range(40))
    frame.insert(1, "label", labels)
    comp_dir = _write(tmp_path, frame.iloc[:32], frame.iloc[32:].drop(columns="label"))
    score = train.run(build_config({
        "name": "px", "output_dir": str(tmp_path / "runs"), "folds_dir": str(tmp_path / "f"),
        "submissions_dir": str(tmp_path / "subs"),
        "competition": {"dir": str(comp_dir), "target_columns": ["label"], "task": "binary",
                        "metric": "accuracy", "modality": "image",
                        "pixels": {"prefix": "px", "cache_dir": str(tmp_path / "cache")}},
        "folds": {"scheme": "stratified", "n_splits": 2, "seed": 0},
        "model": {"encoders": [{"name": "timm:test_resnet"}], "image_size": 16},
        "train": {"seeds": [0], "epochs": 3, "batch_size": 8,
                  "optimizer": {"name": "adamw", "lr": 3e-3}}}))
    assert score >= 0.9


def test_simclr_pretrains_on_pixel_rows_and_an_extra_pixel_file(tmp_path: Path,
                                                                 one_thread: None) -> None:
    from pipeline import pretraining

    comp_dir, values = _mnist_like(tmp_path, rows=16, side=8)
    extra = pd.DataFrame(values[:6], columns=[f"pixel{i}" for i in range(64)])
    extra.to_csv(tmp_path / "extra.csv", index=False)
    competition = _config(comp_dir, tmp_path, prefix="pixel").model_dump()
    cfg = pretraining.build_pretrain_config({
        "name": "enc", "pretrained_dir": str(tmp_path / "pretrained"), "device": "cpu",
        "competition": competition, "extra_unlabelled": str(tmp_path / "extra.csv"),
        "objective": {"kind": "simclr", "arch": "test_resnet", "image_size": 16, "epochs": 1,
                      "batch_size": 8}})
    record = pretraining.read_record(pretraining.run(cfg))
    assert record["sources"] == {"train": 8, "test": 8, "extra": 6}
    # one folder of PNG files per split: train 8, test 8, extra 6
    written = sorted((tmp_path / "cache").iterdir())
    assert len(written) == 3 and all(len(list(f.iterdir())) in (6, 8) for f in written)

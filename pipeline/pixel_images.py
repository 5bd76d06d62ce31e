"""Images given as pixel values in the CSV files (MNIST-style ``pixel0..pixel783`` columns, or
one column of space-separated values as FER2013 ships them) written once as PNG files, so
every image path of the toolkit (decoding, augmentation, held images, TTA, pretraining)
reads them as it reads any image competition's files.

The files go to ``<pixels.cache_dir>/<digest>/`` (relative to where ``pipeline`` runs, like
``runs/``), one folder per set of pixels, named by a digest of the pixels and their shape:
a later run, another stage or a second process on the same files finds them written and
writes nothing (a folder appears whole, by one rename, or not at all), but the files gone
from it since, which it writes again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import Field, model_validator

from pipeline.errors import DataError
from pipeline.schema import Section
from pipeline.targets import file_lines

log = logging.getLogger(__name__)


class PixelsConfig(Section):
    """Where a competition's images sit in its CSV files (``competition.pixels``)."""

    # every column whose name starts with this, in the train file's order (pixel0..pixel783)
    prefix: str | None = Field(None, min_length=1)
    # or one column whose cells hold all of a row's values, separated by spaces
    column: str | None = Field(None, min_length=1)
    # [height, width] or with channels [height, width, 3]; none: a square grayscale image
    shape: list[int] | None = Field(None, min_length=2, max_length=3)
    # how a row's values run when the shape has channels: hwc (R, G, B of the first pixel,
    # then the next pixel's) or chw (every red value, then every green, then every blue)
    order: Literal["hwc", "chw"] = "hwc"
    cache_dir: str = "pixel_images"

    @model_validator(mode="after")
    def _check(self) -> PixelsConfig:
        if (self.prefix is None) == (self.column is None):
            raise ValueError("give 'prefix' (one column per value) or 'column' (the values "
                             "in one cell, space-separated), one of them")
        if self.shape is not None:
            if any(s < 1 for s in self.shape):
                raise ValueError(f"'shape' {self.shape}: every size must be positive")
            if len(self.shape) == 3 and self.shape[2] not in (1, 3):
                raise ValueError(f"'shape' {self.shape}: the channels (third) must be 1 or 3")
        return self


def gray_levels(values: np.ndarray) -> np.ndarray:
    """Pixel values as 0..255, by one linear map over the whole set: from min(0, lowest) to
    the highest value. 8-bit pixels (0..255) stay as written, values in [0, 1] are scaled by
    255, small integer levels (sklearn's digits: 0..16) are stretched rather than kept near
    black, and standardised values (negative) map from their lowest to their highest. One map
    for every row and split keeps a value the same grey everywhere."""
    low, high = min(float(values.min()), 0.0), float(values.max())
    if np.issubdtype(values.dtype, np.integer) and low == 0.0 and high == 255.0:
        return values.astype(np.uint8)  # 8-bit already: no float copy of the whole set
    scaled = (values - low) * (255.0 / ((high - low) or 1.0))  # all zeros: black
    return np.rint(scaled).clip(0, 255).astype(np.uint8)



def pixel_columns(frame: pd.DataFrame, cfg: PixelsConfig, path: Path) -> list[str]:
    """The columns of ``frame`` that hold its pixels."""
    if cfg.column is not None:
        if cfg.column not in frame.columns:
            raise DataError(f"{path}: column {cfg.column!r} named by 'competition.pixels."
                            f"column' not found. Columns: {list(frame.columns)[:20]}")
        return [cfg.column]
    columns = [c for c in frame.columns if str(c).startswith(str(cfg.prefix))]
    if not columns:
        raise DataError(f"{path}: no column starts with {cfg.prefix!r} ('competition.pixels."
                        f"prefix'). Columns: {list(frame.columns)[:20]}")
    return columns


def write_pixel_images(frames: dict[str, tuple[pd.DataFrame, Path]], columns: list[str],
                       cfg: PixelsConfig) -> dict[str, list[str]]:
    """Each split's images as PNG files; returns their absolute paths per split, in row
    order. The scaling to 0..255 is chosen over every split together, so a value means the
    same grey in train and test."""
    values = {split: _values(frame, columns, cfg, path) for split, (frame, path) in
              frames.items()}
    widths = {split: v.shape[1] for split, v in values.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"pixel rows differ in length between the files: {widths} values")
    width = next(iter(widths.values()))
    shape = _shape(width, cfg)
    scaled = gray_levels(np.concatenate(list(values.values())))
    out, start = {}, 0
    for split, rows in values.items():
        pixels = scaled[start:start + len(rows)]
        start += len(rows)
        out[split] = _write(_images(pixels, shape, cfg.order), Path(cfg.cache_dir))
    return out


def _values(frame: pd.DataFrame, columns: list[str], cfg: PixelsConfig,
            path: Path) -> np.ndarray:
    """``frame``'s pixel values as a (rows, values) float array."""
    if cfg.column is not None:
        cells = frame[cfg.column]
        empty = cells.isna()
        if empty.any():
            raise DataError(f"{path}: column {cfg.column!r} ('competition.pixels.column') has "
                            f"{int(empty.sum())} empty cell(s) (lines "
                            f"{file_lines(frame.index[empty][:3])})")
        rows = [str(c).split() for c in cells]
        lengths = pd.Series([len(r) for r in rows], index=frame.index)
        odd = lengths != lengths.mode().iloc[0]
        if odd.any():
            raise DataError(f"{path}: column {cfg.column!r} holds {lengths.mode().iloc[0]} "
                            f"values a row but {int(odd.sum())} row(s) differ (lines "
                            f"{file_lines(frame.index[odd][:3])})")
        try:
            return np.array(rows, dtype=np.float64).reshape(len(rows), -1)
        except ValueError as err:
            raise DataError(f"{path}: column {cfg.column!r} holds a value that is not a "
                            f"number: {err}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: lacks {len(missing)} pixel column(s) of the train file, "
                        f"e.g. {missing[:3]}")
    block = frame[columns]
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(block[c])]
    if text:
        raise DataError(f"{path}: pixel column(s) {text[:3]} hold values that are not numbers")
    array = block.to_numpy()  # integers stay integers (pandas reads 0..255 as int64)
    if array.dtype.kind not in "iu":
        array = array.astype(np.float64)
    empty = ~np.isfinite(array).all(axis=1) if array.dtype.kind == "f" else np.zeros(0, bool)
    if empty.any():
        raise DataError(f"{path}: {int(empty.sum())} row(s) have empty or infinite pixel "
                        f"values (lines {file_lines(frame.index[empty][:3])})")
    return array


def _shape(width: int, cfg: PixelsConfig) -> tuple[int, int, int]:
    """(height, width, channels) of ``width`` values a row."""
    if cfg.shape is not None:
        shape = (*cfg.shape, 1)[:3]
        if math.prod(shape) != width:
            raise DataError(f"'competition.pixels.shape' {cfg.shape} holds {math.prod(shape)} "
                            f"values, but the rows have {width}")
        return (shape[0], shape[1], shape[2])
    side = math.isqrt(width)
    if side * side != width:
        raise DataError(f"{width} pixel values a row are not a square image: give "
                        "'competition.pixels.shape' ([height, width] or [height, width, 3])")
    return (side, side, 1)


def _images(pixels: np.ndarray, shape: tuple[int, int, int], order: str) -> np.ndarray:
    """(rows, height, width, channels) uint8 from (rows, values)."""
    height, width, channels = shape
    if order == "chw":
        return pixels.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return pixels.reshape(-1, height, width, channels)


def _write(images: np.ndarray, root: Path) -> list[str]:
    """The images as ``root/<digest>/<row>.png``, written unless already there."""
    digest = hashlib.sha256(repr(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    folder = (root / digest.hexdigest()[:16]).resolve()
    names = [str(folder / f"{i:07d}.png") for i in range(len(images))]

    def save(i: int, into: Path) -> None:
        image = images[i, :, :, 0] if images.shape[3] == 1 else images[i]
        Image.fromarray(np.ascontiguousarray(image)).save(into / f"{i:07d}.png",
                                                          compress_level=1)

    if folder.is_dir():
        _restore(folder, names, save)
        return names
    work = folder.with_name(f".{folder.name}.{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    try:
        # PIL's encoder and the file writes leave the GIL: threads write several at once
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(save, range(len(images)), [work] * len(images), chunksize=256))
        try:
            work.rename(folder)
        except OSError:  # another process wrote the same folder first: theirs is the same
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return names


def _restore(folder: Path, names: list[str], save: Callable[[int, Path], None]) -> None:
    """Write again the files of a written ``folder`` that are gone (a disk clean-up, a
    partial copy of the cache): they are the toolkit's own cache, not the competition's
    files, so a run rebuilds them rather than refusing the competition for an image file
    its CSV never named. Each goes to a temporary name first and is renamed into place."""
    gone = [i for i, name in enumerate(names) if not os.path.isfile(name)]
    if not gone:
        return
    log.warning("%s: %d cached pixel image(s) missing; written again", folder, len(gone))
    work = folder.with_name(f".{folder.name}.{os.getpid()}")
    work.mkdir(exist_ok=True)
    try:
        for i in gone:
            save(i, work)
            os.replace(work / f"{i:07d}.png", names[i])
    finally:
        shutil.rmtree(work, ignore_errors=True)

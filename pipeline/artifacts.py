"""Run folders and atomic file writes: the contract between stages.

Layout of a run (``<output_dir>/<name>/``)::

    config.yaml          resolved config; its hash is the run's identity
    run.json             RunMeta: task, metric, target columns, classes, prediction columns
    seed{s}/fold{k}/     best.pt, last.pt (resume state), metrics.json, oof.parquet, test.parquet
    oof.parquet          id, fold, one column per prediction (mean over seeds)
    test.parquet         id, one column per prediction (mean over seeds and the folds
                         that predict: under time folds all but the last; with
                         train.full_fit the full models too)
    test_folds.parquet   seed, fold, id, predictions: every fold model's test predictions
    scores.json          score of every (seed, fold) and of the whole OOF

A blend folder (``blends/<name>/``) holds the same ``run.json``, ``oof.parquet`` and
``test.parquet``, so every later stage reads runs and blends alike.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.errors import DataError, MissingArtifactError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; written artifacts get the mode a plain open() would give them
_FILE_MODE = 0o666 & ~_umask()


def _file_above(path: Path) -> Path:
    """The nearest parent of ``path`` that exists as something other than a folder."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):  # a file where a folder must be (a
        # --submissions-dir or --weights path under a file): a traceback before
        raise DataError(f"cannot write {path}: {_file_above(path)} is a file, not a folder; "
                        "move it or write elsewhere") from None
    except OSError as err:  # a read-only mount (a Kaggle dataset) as well as a folder's mode
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        why = (err.strerror or "not writable").lower()
        raise DataError(f"cannot write {path}: {why} on {path.parent} (choose writable "
                        "'output_dir', 'folds_dir', 'submissions_dir')") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        try:
            os.replace(tmp, path)
        except IsADirectoryError:  # '--csv runs' (a folder) was a traceback
            raise DataError(f"cannot write {path}: it is a folder; give a file path") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None: JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys); a non-finite number (the score of a constant
    prediction under a correlation metric) is written as null."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False, default=str)
    write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a cut-off or damaged one is a one-line DataError (a ValueError, as
    json's own error is, for the callers that retrain what it recorded)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} could not be read as JSON ({err}); it was cut off or "
                        "damaged: rerun the stage that wrote it") from None


def write_yaml(path: str | Path, obj: Any) -> None:
    """Write YAML atomically, keys in the order given."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a parquet file atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a parquet artifact; a truncated or corrupt one is a one-line DataError."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path} could not be read ({str(err).splitlines()[0]}); it was cut "
                        "off or damaged: rerun the stage that wrote it") from None


def read_fold_rows(path: Path, id_column: str, ids: np.ndarray, seed: int, fold: int,
                   rows: str) -> pd.DataFrame:
    """A fold's predictions at ``path``, which must be of ``ids`` in their order, with the
    fold's ``seed`` and ``fold`` first; refused in one line where they are of other rows
    (``rows``, the file those ids come from, changed since the fold predicted)."""
    part = read_parquet(path)
    if not np.array_equal(part[id_column].astype(str).to_numpy(), ids):
        raise DataError(f"{path} predicts other ids than {rows}: the file changed since the "
                        "fold predicted; train the run again (--overwrite)")
    part.insert(0, "fold", fold)
    part.insert(0, "seed", seed)
    return part


def id_positions(ids: pd.Series, wanted: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``wanted`` is in ``ids`` (-1: not there), both compared as text (an id
    column read as numbers in one file matches its text in the other), and ``wanted`` as
    text. One hash lookup for all rows, none when both are in the same order (the usual
    case): a row-by-row dict or pandas' ``isin`` on text goes value by value (seconds on
    200,000 ids). ``ids`` must be unique."""
    known = ids.astype(str).to_numpy(dtype=object)
    text = wanted.astype(str).to_numpy(dtype=object)
    if np.array_equal(known, text):
        return np.arange(len(text)), text
    return pd.Index(known, dtype=object).get_indexer(text), text


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a CSV file atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


@dataclass(frozen=True)
class RunMeta:
    """What a reader of a run or blend needs to interpret its prediction columns."""

    name: str
    task: str
    metric: str
    id_column: str
    target_columns: list[str]
    classes: list[Any]  # label values in prediction order (multiclass), [neg, pos] (binary)
    pred_columns: list[str]
    folds_file: str
    competition_dir: str
    train_file: str
    config_hash: str  # train hash of a run; hash of the members and method for a blend
    sample_submission_file: str = "sample_submission.csv"
    # trained on pseudo-labels that leak validation labels (its CV is optimistic); a later
    # round that uses this run as its source inherits the leak
    leaky: bool = False
    csv_sep: str = ","  # how the competition's CSV files are read (competition.sep/encoding)
    csv_encoding: str = "utf-8"
    csv_quoting: str = "minimal"  # competition.quoting
    csv_decimal: str = "."  # competition.decimal/thousands: the train file's targets
    csv_thousands: str | None = None
    # competition.na_values: a target cell so written is empty, as the run read it
    csv_na_values: list[str] = field(default_factory=list)
    # the test file its test predictions were made from, and its SHA-256 ('': not recorded,
    # a run from before it was): a submission of predictions of another test file is refused
    test_file: str = "test.csv"
    test_digest: str = ""
    test_images_digest: str = ""  # of the image files it lists (names, sizes, times), if any
    label_separator: str = " "  # what joins a tags column's labels (' ': whitespace)
    # 'competition.missing_targets': 'mask' keeps rows with some targets empty (NaN cells)
    missing_targets: str = "row"
    # a regression's ratings under QWK: its predictions are scored and submitted as these
    ratings: list[Any] = field(default_factory=list)
    # binary: 'competition.positive_class' as set (None: the label that sorts last)
    positive_class: Any = None
    # the folder this run.json was written in, resolved (set by write_meta; '': from before
    # it was kept): one read elsewhere was copied or moved since it predicted. Where the
    # folder lies, not what it predicts: left out of comparisons
    written_in: str = field(default="", compare=False)
    # 'train.full_fit_combine' of a run whose test predictions take in its full models
    # ('' : the fold models' mean alone); how it predicts, not what: left out of comparisons
    full_fit: str = field(default="", compare=False)

    @property
    def scored_values(self) -> list[Any]:
        """What the metric reads a prediction's columns as: the classes, or a regression's
        ratings under QWK."""
        return self.classes or self.ratings

    def to_json(self) -> dict[str, Any]:
        """Plain dict for run.json."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        """Inverse of :meth:`to_json`."""
        return cls(**data)


def write_meta(folder: str | Path, meta: RunMeta) -> None:
    """Write ``run.json``, the folder it lies in recorded (``written_in``)."""
    write_json(Path(folder) / "run.json",
               {**meta.to_json(), "written_in": str(Path(folder).resolve())})


def read_meta(folder: str | Path) -> RunMeta:
    """Read ``run.json`` of a run or blend folder, with an error naming a missing file."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        raise MissingArtifactError(f"{path} not found: {folder} is not a finished run or blend")
    try:
        return RunMeta.from_json(read_json(path))
    except (ValueError, TypeError) as err:
        raise DataError(f"{path} could not be read ({err}); rerun the stage that wrote "
                        f"{folder}") from None


@dataclass(frozen=True)
class Predictions:
    """A finished run's (or blend's) OOF and test predictions, aligned by id."""

    meta: RunMeta
    oof: pd.DataFrame  # id, fold, pred columns; rows in train.csv order
    test: pd.DataFrame  # id, pred columns; rows in test.csv order

    @property
    def oof_matrix(self) -> np.ndarray:
        """``(n_train, c)`` OOF prediction matrix."""
        return self.oof[self.meta.pred_columns].to_numpy(dtype=np.float64)

    @property
    def test_matrix(self) -> np.ndarray:
        """``(n_test, c)`` test prediction matrix."""
        return self.test[self.meta.pred_columns].to_numpy(dtype=np.float64)


def load_predictions(folder: str | Path) -> Predictions:
    """Read ``run.json``, ``oof.parquet`` and ``test.parquet`` of a run or blend folder."""
    folder = Path(folder)
    meta = read_meta(folder)
    frames = {}
    for part in ("oof", "test"):
        path = folder / f"{part}.parquet"
        if not path.is_file():
            raise MissingArtifactError(
                f"{path} not found: run the train stage for {folder} first")
        frames[part] = read_parquet(path)
    return Predictions(meta, frames["oof"], frames["test"])

"""Train rows whose inputs repeat another train row's in another fold: a leak the folds make.

Kaggle train files repeat rows more often than one expects: a patient measured twice, the same
text posted by two users, a table built by joining a log to its users, a dataset padded with
copies of its rare class. Where the copies fall in different folds, the fold model has trained
on the very inputs it is validated on, and the CV overstates what the model scores on new
rows (the more the model memorises: a GBDT or a network fits a repeated row's target to the
digit). The competitor who knows the copies are one entity keeps them in one fold with a group
column; the one who does not gets no hint from the scores. The folds stage therefore says so
when it writes the folds: how many rows, how many of them carry their copy's target, and
what keeps them together.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.competition import IMAGE_PATH, Competition

_SHOWN = 4  # input columns named in the warning
_ENDS = 1 << 16  # bytes read from each end of an image file for its content key
_AS_OFTEN = 0.8  # test rows repeating train inputs this often relative to the folds' rows: no leak


def image_key(path: Path) -> str:
    """What an image file holds, as a key: its size and a digest of its first and last 64
    KiB (the whole of most files; two images of one size that agree there are copies).
    Copies of one image under other names (a rare class padded, a photo uploaded twice)
    repeat their rows' inputs as one file named twice does; an unreadable file keys by its
    name."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            data = handle.read(_ENDS)
            if size > _ENDS:
                handle.seek(max(_ENDS, size - _ENDS))
                data += handle.read(_ENDS)
    except OSError:
        return f"name:{path}"
    return f"{size}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"


def input_columns(comp: Competition) -> list[str]:
    """The columns a model reads: tabular features, text columns, the image file (its
    resolved path, which every image competition's rows get at load: under an
    ``image_path`` template no column names it, and rows of one metadata but other images,
    PetFinder's 12 flags, were said to repeat). Pixel images from the CSV files are left
    out: each row's values are written to a file of its own, which never repeats."""
    cfg = comp.cfg
    image = [IMAGE_PATH] if IMAGE_PATH in comp.train.columns and not cfg.pixels else []
    return [*comp.feature_columns, *cfg.text_columns, *image]


def _blank(frame: pd.DataFrame) -> np.ndarray:
    """Whether each row's every input is missing or empty text."""
    empty = [frame[c].isna() | (frame[c].astype(str).str.strip() == "")
             if not pd.api.types.is_numeric_dtype(frame[c]) else frame[c].isna()
             for c in frame.columns]
    return np.logical_and.reduce([e.to_numpy(dtype=bool) for e in empty])


def _keys(comp: Competition, frame: pd.DataFrame, columns: list[str],
          read_images: bool = True) -> np.ndarray:
    """One hash per row of what its inputs hold (an image file by its content, or by its path
    where not ``read_images``). Numbers hash as floats: a test column with an empty cell
    reads as floats, its 1.0 the train's 1."""
    inputs = frame[columns]
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(inputs[c])
               and not pd.api.types.is_bool_dtype(inputs[c])]
    if numeric:
        inputs = inputs.astype(dict.fromkeys(numeric, np.float64))
    if IMAGE_PATH in columns and read_images:
        root = Path(comp.cfg.dir)
        inputs = inputs.assign(**{IMAGE_PATH: [image_key(root / str(p))
                                               for p in inputs[IMAGE_PATH]]})
    return pd.util.hash_pandas_object(inputs, index=False).to_numpy().copy()


def _test_repeats(comp: Competition, columns: list[str], train_keys: np.ndarray) -> float:
    """The share of test rows whose inputs repeat a train row's. Where inputs take few values
    (PetFinder's 12 0/1 flags: a metadata-only member) the new rows repeat train rows as
    often as the folds' rows repeat one another, so the CV's repeats are the test's too and
    overstate nothing; the warning is for copies the test rows do not share (55% of such
    train rows were said to leak, while 64% of the test rows repeated a train row)."""
    test = comp.test
    if len(test) == 0 or any(c not in test.columns for c in columns):
        return 0.0
    repeats = np.isin(_keys(comp, test, columns), train_keys)
    if repeats.any():
        repeats[repeats] = ~_blank(test[columns][repeats])
    return float(repeats.mean())


def input_keys(comp: Competition, read_images: bool = True) -> np.ndarray:
    """One key per train row: equal for rows whose inputs (:func:`input_columns`; an image by
    its content, :func:`image_key`, or by its path where not ``read_images``) are equal,
    distinct for every other row. A row whose every input is missing or empty text (a blank
    text) keys by its position: blank rows share no content, nothing of one is learnt from
    the other, and no grouping remedies them."""
    columns = input_columns(comp)
    if not columns:
        return np.arange(len(comp.train), dtype=np.uint64)
    keys = _keys(comp, comp.train, columns, read_images)
    repeated = pd.Series(keys).duplicated(keep=False).to_numpy()
    if repeated.any():  # read on the repeating rows alone: a large table's text cells are many
        blank = np.flatnonzero(repeated)[_blank(comp.train[columns][repeated])]
        # a key no hash takes in practice: the position, counted down from the top of uint64
        keys[blank] = np.iinfo(np.uint64).max - blank.astype(np.uint64)
    return keys


def repeated_rows_warning(comp: Competition, folds: pd.Series | list[int],
                          uses_groups: bool) -> str | None:
    """The warning for rows whose inputs repeat another row's in another fold, or None.

    Args:
        comp: The competition (its train rows, in the folds' order).
        folds: The fold of each train row.
        uses_groups: Whether the folds already keep a group column's rows together (the
            copies then belong to different groups: the hint names the group column).
    """
    columns = input_columns(comp)
    if not columns or len(comp.train) < 2:
        return None
    keys = input_keys(comp)
    frame = pd.DataFrame({"key": keys, "fold": list(folds)})
    leaking = (frame.groupby("key")["fold"].transform("nunique") > 1).to_numpy()
    count = int(leaking.sum())
    # 'as often' within a margin: the test rows' share is a sample's (16 rows in a test)
    test_share = _test_repeats(comp, columns, keys) if count else 0.0
    if not count or test_share >= _AS_OFTEN * count / len(frame):
        return None
    targets = pd.util.hash_pandas_object(comp.train[comp.cfg.target_columns],
                                         index=False).to_numpy()
    frame["target"] = targets
    same = int((frame.groupby(["key", "target"])["fold"].transform("nunique") > 1)
               .to_numpy()[leaking].sum())
    names = [comp.cfg.image_column or "the image file" if c == IMAGE_PATH else c
             for c in columns]
    shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more"
                                        if len(names) > _SHOWN else "")
    hint = ("the group column does not hold these copies together: is it the entity they "
            "share?" if uses_groups else
            "where the test rows hardly repeat train rows, 'folds.copies: together' keeps "
            "each row's copies in its fold (or, if the copies are one entity, a patient or a "
            "user, name a column that marks it as 'competition.group_column' with "
            "folds.scheme: group)")
    return (f"folds: {count} train rows ({count / len(frame):.1%}) repeat the inputs "
            f"({shown}) of a row in another fold, {same} of them with its target too (and "
            f"{test_share:.1%} of the test rows repeat a train row's): a fold "
            f"model validated on them has trained on their copies, so the CV overstates its "
            f"score on new rows; {hint}")

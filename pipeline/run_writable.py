"""Whether a command may write in its run folder, checked before it writes anything.

A run folder attached to a Kaggle notebook as a dataset lies on a read-only file system
(``/kaggle/input``). `pipeline predict` there ended in a traceback as it opened the run's
``log.txt``; a folder copied with its read-only file modes failed the same way, or halfway
through its folds. The stages that write into the run folder (train, predict, pseudo, run)
refuse it in one line saying what to do; those that only read it (submit --config, folds)
leave its log out.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import DataError


def _unwritable(run_dir: Path) -> Path | None:
    """The first folder of ``run_dir`` (itself, a folder in it; where it does not exist yet,
    the folder it would be made in) that this process cannot write in; None if none."""
    if not run_dir.exists():
        parent = next((p for p in run_dir.absolute().parents if p.exists()), None)
        return parent if parent is not None and not os.access(parent, os.W_OK) else None
    folders = [run_dir, *sorted(p for p in run_dir.rglob("*") if p.is_dir())]
    # os.access: a read-only mount refuses even root, a folder's mode only other users
    return next((p for p in folders if not os.access(p, os.W_OK | os.X_OK)), None)


def writable(folder: Path, what: str, how: str) -> Path:
    """``folder``, refused in one line where this process cannot write in it (or in a folder
    in it). ``what``: what the command writes there; ``how``: the key or option that names
    another place.

    Raises:
        DataError: A folder of ``folder`` cannot be written in.
    """
    bad = _unwritable(folder)
    if bad is None:
        return folder
    top = folder.absolute().parent.name  # the folder of runs (of blends) a dataset holds
    raise DataError(
        f"cannot write in {bad} (a read-only file system or folder mode): this stage writes "
        f"{what} into {folder}. Copy it somewhere writable (e.g. cp -r /kaggle/input/<dataset>/"
        f"{top} /kaggle/working/{top}, then chmod -R u+w on the copy) and set {how} to the "
        "folder holding the copy")


def run_log(run_dir: Path, writes: bool) -> Path | None:
    """The run's ``log.txt`` for a command on ``run_dir``. ``writes``: the command writes
    into the run folder, refused here where it cannot; otherwise an unwritable folder is
    read without a log (None).

    Raises:
        DataError: ``writes`` and a folder of the run cannot be written in.
    """
    if writes:
        return writable(run_dir, "the run's predictions and log", "output_dir") / "log.txt"
    return None if _unwritable(run_dir) else run_dir / "log.txt"

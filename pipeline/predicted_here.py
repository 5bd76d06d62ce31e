"""Whether a run's or blend's test predictions are those of the competition it is submitted
for, where no config names that competition (``submit --run``, ``submit --blend``, a blend's
members).

Such a folder knows only the competition folder it predicted from (``run.json``). A run
trained on one machine and copied into a Kaggle notebook, not predicted there, still names
the first machine's folder: where that folder is gone the submission failed on its sample
file without saying what to run, and where it is still there (a rehearsal of the notebook on
the machine that trained it) the old test set's predictions were submitted without a word,
while on Kaggle the hidden test set replaces it. ``run.json`` records the folder it was
written in (:func:`pipeline.artifacts.write_meta`); one read elsewhere was copied or moved
since it last predicted, and is predicted where it lies (or, a blend, made again) first.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NoReturn

from pipeline.artifacts import RunMeta, read_json, write_meta
from pipeline.data_files import check_test_file
from pipeline.errors import DataError


def moved_since(meta: RunMeta, folder: Path) -> bool:
    """Whether ``folder``'s ``run.json`` (read as ``meta``) was written in another folder: the
    folder was copied or moved since (a run.json from before the folder was recorded: no).

    The recorded folder is this one where it still leads here (the same folder on disk),
    whatever its spelling: a case-insensitive disk (macOS: ``Runs/exp`` for ``runs/exp``),
    a second mount of one disk, or a runs folder moved with a link left at its old place
    were refused as copies, and a network run told to predict every fold again."""
    if not meta.written_in or meta.written_in == str(Path(folder).resolve()):
        return False
    try:
        recorded, here = os.stat(meta.written_in), os.stat(folder)
    except OSError:  # the recorded folder is gone (moved) or cannot be read
        return True
    # a file system without file ids (0: FAT on Windows) would take every folder for one
    return not (recorded.st_ino and os.path.samestat(recorded, here))


def _run_of(folder: Path) -> Path:
    """The run folder holding ``folder``: itself, or the run whose ``seed<s>/`` (or member
    of it) it is; the config that predicts it is the run's."""
    return next((p for p in (folder, *folder.parents[:2]) if (p / "config.yaml").is_file()),
                folder)


def _predict_command(folder: Path, moved: bool) -> str:
    """``pipeline predict`` of the run holding ``folder``, where it lies now."""
    run = _run_of(folder)
    command = "pipeline predict --config CONFIG"
    if moved:
        command += f" --set output_dir={run.parent}"
        name = read_json(run / "run.json").get("name") if (run / "run.json").is_file() else None
        if name != run.name:  # copied under another name: the config's is the folder's
            command += f" --set name={run.name}"
    return f"{command} --set competition.dir=<the competition's folder>"


def _refuse(meta: RunMeta, folder: Path, what: str) -> NoReturn:
    if (folder / "blend.json").is_file():
        raise DataError(f"{what}: its test predictions are of that test set. Predict each "
                        "member where it lies now (pipeline predict --config CONFIG --set "
                        "competition.dir=<the competition's folder>), then make the blend again:"
                        f" pipeline blend --runs <members> --name {folder.name} --blends-dir "
                        f"{folder.parent}")
    raise DataError(f"{what}: its test predictions are of that test set. Predict it where it "
                    f"lies now first: {_predict_command(folder, moved_since(meta, folder))}")


def check_predicted_here(meta: RunMeta, folder: Path) -> None:
    """Refuse a run or blend ``folder`` (its ``run.json`` read as ``meta``) copied or moved
    since it predicted, in one line naming what to run first.

    Raises:
        DataError: ``folder``'s run.json was written in another folder.
    """
    if moved_since(meta, folder):
        _refuse(meta, folder, f"{folder} predicted {Path(meta.competition_dir) / meta.test_file}"
                f" as {meta.written_in} and was copied or moved since")


def check_competition_found(meta: RunMeta, folder: Path) -> None:
    """Refuse a run or blend ``folder`` whose competition folder is gone (it predicted on
    another machine, or the competition moved), naming what to run first: a submission read
    the sample file there, and said no more than that it is not found.

    Raises:
        DataError: ``meta.competition_dir`` is not a folder.
    """
    if not Path(meta.competition_dir).is_dir():
        _refuse(meta, folder, f"{folder} predicted {Path(meta.competition_dir) / meta.test_file}"
                f", and {meta.competition_dir} is not found")


def check_member(meta: RunMeta, folder: Path) -> None:
    """The checks of a blend's member ``folder`` by its own record: made where it lies
    (:func:`check_predicted_here`), from the test file its competition holds now
    (:func:`pipeline.data_files.check_test_file`)."""
    check_predicted_here(meta, folder)
    check_test_file(meta, folder)


def record_here(meta: RunMeta, folder: Path, competition_dir: str) -> None:
    """Record an up-to-date blend ``folder`` (its ``run.json`` read as ``meta``) as made
    where it lies, from ``competition_dir`` (its members': predicted from the competition's
    new folder): the blend made again after its members predicted, copied or not, is then
    submitted."""
    if meta.competition_dir != competition_dir or moved_since(meta, folder):
        write_meta(folder, dataclasses.replace(meta, competition_dir=competition_dir))

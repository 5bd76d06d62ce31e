"""The folders a config's stages write into (``output_dir`` and its run folder,
``folds_dir``, ``submissions_dir``), checked when the config loads: one that is a file, or
lies under a file, was a traceback from the first write into it (NotADirectoryError,
FileExistsError), the submissions folder's only after every fold had trained."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import ConfigError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a run's 'name' has the same


def check_name(name: str, option: str) -> None:
    """Refuse a ``--name`` that is not a plain file or folder name: '../x' wrote outside
    the folder it names a file or folder in, 'a/b' into a folder of its own."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(f"{option} {name!r} must be a plain name (letters, digits, '_', "
                          "'.', '-'; no '/')")


def folder_problem(folder: Path, key: str) -> str | None:
    """Why ``folder`` (the config's ``key``) cannot hold what a stage writes, or None: it,
    or the nearest of its parents that exists, is a file."""
    for place in (folder, *folder.parents):
        if place.is_dir():
            return None
        if place.exists():
            where = "is a file" if place == folder else f"lies under {place}, a file"
            return f"{key} {folder} {where}, not a folder: move it, or set {key} to a folder"
    return None


def check_output_folders(folders: dict[str, Path]) -> None:
    """Refuse in one line the first of ``folders`` (its config key, quoted -> path) that
    cannot be written."""
    for key, folder in folders.items():
        if problem := folder_problem(Path(folder), key):
            raise ConfigError(problem)

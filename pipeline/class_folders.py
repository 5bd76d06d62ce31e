"""A train set given as one folder per class (``train/<class>/<image>``: Kaggle's Plant
Seedlings, and most image sets published as torchvision's ``ImageFolder``), read as the train
table a CSV would have given: one row per image file, its id the file's path inside the folder
(``Black-grass/0050f38b3.png``), its target the folder's name.

``competition.train_file`` names the folder; the test rows still come from a CSV (the sample
submission where there is no test.csv) with ``image_path``/``image_column`` for their files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "folder_digest", "read_class_folders"]

# what PIL reads; other files in a class folder (a README, .DS_Store) are no rows
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def _image_files(folder: Path) -> list[tuple[str, os.DirEntry[str]]]:
    """The image files under ``folder`` (at any depth), each as its posix path inside it and
    its directory entry, in the order of those paths' parts. Through ``os.scandir``: a file
    costs one stat (pathlib's walk, ``is_file`` and a second stat cost ~10x as much: seconds
    for every check of a 20,000-image set)."""
    found: list[tuple[list[str], os.DirEntry[str]]] = []
    pending: list[tuple[str, list[str]]] = [(str(folder), [])]
    while pending:
        directory, parts = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, [*parts, entry.name]))
                elif (entry.is_file() and not entry.name.startswith(".")
                      and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES):
                    found.append(([*parts, entry.name], entry))
    found.sort(key=lambda item: item[0])
    return [("/".join(parts), entry) for parts, entry in found]


def read_class_folders(path: Path, id_column: str | None,
                       labels: Sequence[str]) -> pd.DataFrame:
    """The rows of a train folder of class folders: ``id_column`` the image's path inside
    ``path`` (posix), the one ``labels`` column its class folder's name, as text
    (:func:`pipeline.competition_files.read_csv` types it as a CSV's labels)."""
    if not id_column or len(labels) != 1:
        raise DataError(f"train folder {path}: a folder per class gives one class label a "
                        "row: it needs task 'binary' or 'multiclass' with one target column")
    loose = sorted(p.name for p in path.iterdir() if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise DataError(f"train folder {path}: {len(loose)} image file(s) outside a class "
                        f"folder (e.g. {loose[:3]}): each image belongs in <class>/<file>")
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    rows = [(f"{folder.name}/{name}", folder.name)
            for folder in classes for name, _ in _image_files(folder)]
    empty = [f.name for f in classes if not any(r[1] == f.name for r in rows)]
    if empty:
        raise DataError(f"train folder {path}: class folder(s) {empty[:5]} hold no image files "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(classes) < 2:
        raise DataError(f"train folder {path}: {len(classes)} class folder(s) "
                        f"{[f.name for f in classes]}; a class set needs at least 2")
    return pd.DataFrame(rows, columns=[id_column, labels[0]])


def folder_digest(path: Path, times: bool = True) -> str:
    """SHA-256 over the folder's image files' paths, sizes and modification times: a changed,
    added, moved or removed image changes it, without reading every image's bytes.
    ``times=False``: over paths and sizes alone (what a copied folder keeps)."""
    digest = hashlib.sha256()
    for name, entry in _image_files(path):
        stat = entry.stat()
        stamp = f"\0{stat.st_mtime_ns}" if times else ""
        digest.update(f"{name}\0{stat.st_size}{stamp}\n".encode())
    return digest.hexdigest()

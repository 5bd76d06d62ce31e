"""Which train and test files a fold was trained and predicted on: a digest of each, kept in
the fold's ``metrics.json`` and ``predictions.json``. The run's config alone does not say
it: a test file corrected under the same config, or the hidden test set a code competition
swaps in, left the fold's old test predictions in the submission (same ids: silently; new
ids: a traceback), and a train file relabelled under the same config left the old models."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import RunMeta
from pipeline.class_folders import folder_digest
from pipeline.errors import DataError

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, once per process for a given size and modification time (every
    fold of a run asks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file at ``path`` (of a train folder of class folders: over its
    images' names, sizes and times); None when there is none."""
    if path.is_dir():
        return folder_digest(path)
    try:
        stat = path.stat()
    except OSError:  # refused when the competition loads; nothing to compare here
        return None
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def data_digests(cfg: ExperimentConfig) -> dict[str, str]:
    """``{'train': ..., 'test': ...}``: SHA-256 of the competition's train and test files."""
    comp = cfg.competition
    digests = {}
    for part, name in (("train", comp.train_file), ("test", comp.test_file)):
        digest = file_digest(Path(comp.dir) / name)
        if digest is not None:
            digests[part] = digest
    return digests


def check_test_file(meta: RunMeta, folder: Path) -> None:
    """Refuse the predictions of a run or blend ``folder`` when the competition's test file
    is no longer the one they were made from (``meta.test_digest``; a folder from before
    digests were kept is not checked): its submission would hold another test set's
    predictions under the same ids, or miss the new ones."""
    path = Path(meta.competition_dir) / meta.test_file
    if meta.test_digest and file_digest(path) not in (None, meta.test_digest):
        raise DataError(f"{path} changed since {folder} predicted it: run the train stage "
                        "(or, for a network, predict) again before submitting or blending it")


def changed_files(recorded: Any, cfg: ExperimentConfig, parts: Sequence[str]) -> list[str]:
    """Those of ``parts`` ('train', 'test') whose file is no longer the one a fold's record
    (``recorded``: its ``data`` entry) was made from. A record from before digests were
    kept vouches for nothing and is taken as current, so no finished run is orphaned."""
    if not isinstance(recorded, dict):
        return []
    now = data_digests(cfg)
    return [part for part in parts if part in recorded and recorded[part] != now.get(part)]

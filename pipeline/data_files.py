"""Which train and test files a fold was trained and predicted on: a digest of each, kept in
the fold's ``metrics.json`` and ``predictions.json``. The run's config alone does not say
it: a test file corrected under the same config, or the hidden test set a code competition
swaps in, left the fold's old test predictions in the submission (same ids: silently; new
ids: a traceback), and a train file relabelled under the same config left the old models.
The files an encoder loads (a transformers folder, a tokenizer, a timm weights file) count
with the train file: weights replaced in place under the same path left the old models too."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.artifacts import (
    Predictions,
    RunMeta,
    load_predictions,
    read_json,
    read_meta,
)
from pipeline.class_folders import folder_digest
from pipeline.errors import DataError

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig

log = logging.getLogger(__name__)


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
    """``{'train': ..., 'test': ...}``: SHA-256 of the competition's train and test files,
    and, where a file lists image files (``image_column`` / ``image_path``), of those images
    (``train_images``, ``test_images``)."""
    comp = cfg.competition
    digests = {}
    for part, name in (("train", comp.train_file), ("test", comp.test_file)):
        path = Path(comp.dir) / name
        digest = file_digest(path)
        if digest is not None:
            digests[part] = digest
            if path.is_dir():  # class folders: their images' names and sizes, see below
                digests[f"{part}_folder_sizes"] = folder_digest(path, times=False)
            images = _images_digest(cfg, part, digest)
            if images is not None:
                digests[f"{part}_images"], digests[f"{part}_image_sizes"] = images
    weights = _weights_digest(cfg)
    if weights is not None:
        digests["train_weights"] = weights
    return digests


def _weights_digest(cfg: ExperimentConfig) -> str | None:
    """SHA-256 over the contents of the files the encoders load from disk: an ``hf:`` or
    ``rows_text:`` folder, a ``tokenizer`` folder, a timm ``pretrained`` file. The config
    names only their paths, so weights re-saved there (further pretraining, another
    checkpoint copied over) left every fold standing, trained on the old ones. Contents,
    not times: a copy of the same weights retrains nothing. None where no encoder loads any."""
    paths = []
    for enc in cfg.model.encoders:
        kind, _, target = enc.name.partition(":")
        if kind in ("hf", "rows_text") and target:
            paths.append(Path(target))
        paths += [Path(p) for p in (enc.tokenizer, enc.pretrained) if isinstance(p, str)]
    if not paths:
        return None
    stats = []
    for root in paths:
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for path in files:
            # named within its folder: the same files elsewhere (a copy, a new mount) are
            # the same weights
            name = path.relative_to(root).as_posix() if root.is_dir() else path.name
            try:
                stat = path.stat()
                stats.append((name, str(path.resolve()), stat.st_size, stat.st_mtime_ns))
            except OSError:  # refused where the encoder loads
                stats.append((name, str(path), -1, -1))
    return _contents_digest(tuple(stats))


@functools.lru_cache(maxsize=8)
def _contents_digest(stats: tuple[tuple[str, str, int, int], ...]) -> str:
    """SHA-256 over the names and contents of the files ``stats`` lists (name, path, size,
    time): once per process for the same files unchanged (every fold asks, and a model
    folder may hold more files than the per-file cache keeps)."""
    digest = hashlib.sha256()
    for name, path, size, mtime_ns in stats:
        content = _digest(path, size, mtime_ns) if size >= 0 else "missing"
        digest.update(f"{name}\0{content}\n".encode())
    return digest.hexdigest()


def _images_digest(cfg: ExperimentConfig, part: str, csv_digest: str
                   ) -> tuple[str, str] | None:
    """SHA-256 over the names, sizes and modification times of the image files ``part``'s
    file lists: images rewritten in place under the same file (cropped, re-exported, another
    test set's) left the fold's models and predictions standing, and the submission held the
    old images' predictions. With it, the SHA-256 over their names and sizes alone (what
    copied or re-extracted images keep: :func:`changed_files`). None where the file lists no
    image files."""
    return _listed_images_digests(cfg.competition.model_dump_json(), part, csv_digest)


def _listed_images_digest(section: str, part: str, csv_digest: str) -> str | None:
    """:func:`_images_digest` of the competition section ``section`` (its JSON): the digest
    with the files' times."""
    digests = _listed_images_digests(section, part, csv_digest)
    return None if digests is None else digests[0]


def _listed_images_digests(section: str, part: str, csv_digest: str) -> tuple[str, str] | None:
    comp = json.loads(section)
    if not (comp.get("image_column") or comp.get("image_path")) or comp.get("pixels"):
        return None
    if part == "train" and (Path(comp["dir"]) / comp["train_file"]).is_dir():
        return None  # class folders: the folder's digest covers its images
    paths = _listed_images(section, part, csv_digest)
    if paths is None:
        return None
    timed, sized = hashlib.sha256(), hashlib.sha256()
    for rel in paths:  # os.stat on joined strings: a third of pathlib's cost a file
        try:
            stat = os.stat(os.path.join(comp["dir"], rel))
            timed.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            sized.update(f"{rel}\0{stat.st_size}\n".encode())
        except OSError:  # refused where the competition loads
            timed.update(f"{rel}\0missing\n".encode())
            sized.update(f"{rel}\0missing\n".encode())
    return timed.hexdigest(), sized.hexdigest()


@functools.lru_cache(maxsize=8)
def _listed_images(section: str, part: str, csv_digest: str) -> tuple[str, ...] | None:
    """The image paths the competition's ``part`` file lists (read once per file content:
    ``csv_digest`` is its SHA-256, the cache's key)."""
    from pipeline.competition import CompetitionConfig
    from pipeline.competition_checks import image_paths
    from pipeline.competition_files import read_csv, template_columns

    comp = CompetitionConfig.model_validate_json(section)
    path = Path(comp.dir) / (comp.train_file if part == "train" else comp.test_file)
    try:  # the template's columns as the competition reads them ('00012' as written)
        frame = read_csv(path, part, comp.sep, comp.encoding, comp.id_column,
                         decimal=comp.decimal, thousands=comp.thousands, quoting=comp.quoting,
                         keys=template_columns(comp.image_path))
        return tuple(image_paths(frame, comp, part, path))
    except DataError:  # a file the competition refuses when it loads, in one line
        return None


def check_test_file(meta: RunMeta, folder: Path) -> None:
    """Refuse the predictions of a run or blend ``folder`` when the competition's test file
    is no longer the one they were made from (``meta.test_digest``; a folder from before
    digests were kept is not checked): its submission would hold another test set's
    predictions under the same ids, or miss the new ones. Test images the file lists count
    too (``meta.test_images_digest``): the hidden test set a code competition swaps in
    under the same file names, test.csv unchanged, left the old images' predictions."""
    path = Path(meta.competition_dir) / meta.test_file
    csv_digest = file_digest(path)
    if meta.test_digest and csv_digest not in (None, meta.test_digest):
        if (folder / "blend.json").is_file():  # a blend is made again, after its members
            raise DataError(f"{path} changed since {folder} blended its predictions: run the "
                            "train stage (or, for a network, predict) of its members again, "
                            "then pipeline blend again with the same --runs and --name")
        raise DataError(f"{path} changed since {folder} predicted it: run the train stage "
                        "(or, for a network, predict) again before submitting, blending or "
                        "pseudo-labelling from it")
    if meta.test_images_digest and csv_digest is not None:
        for run_dir in _runs_of(folder):
            _check_test_images(run_dir, csv_digest)


def _runs_of(folder: Path) -> list[Path]:
    """The run folders whose predictions ``folder`` holds: itself for a run, its members
    (those still there, a blend's followed to its runs) for a blend."""
    if (folder / "config.yaml").is_file():
        return [folder]
    path = folder / "blend.json"
    members = read_json(path).get("member_predictions") if path.is_file() else None
    return [run for member in (members or {}) if (Path(member) / "run.json").is_file()
            for run in _runs_of(Path(member))]


def _check_test_images(run_dir: Path, csv_digest: str) -> None:
    meta = read_meta(run_dir)
    section = _competition_section(run_dir, meta.competition_dir)
    if not meta.test_images_digest or section is None:
        return  # a run from before images were recorded, or of no image files
    now = _listed_images_digest(section, "test", csv_digest)
    if now is not None and now != meta.test_images_digest:
        raise DataError(f"test images listed in {meta.test_file} changed since {run_dir} "
                        "predicted them (same names, other files): run the train stage (or, "
                        "for a network, predict) again before submitting, blending or "
                        "pseudo-labelling from it")


def _competition_section(run_dir: Path, where: str) -> str | None:
    """The competition section of the config ``run_dir`` was trained under, its files in the
    folder ``where`` (the one it last predicted from), as JSON (None where its
    ``config.yaml`` cannot be read as one)."""
    import yaml

    from pipeline.competition import CompetitionConfig

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
        section = {**data["competition"], "dir": where or data["competition"]["dir"]}
        return CompetitionConfig.model_validate(section).model_dump_json()
    except Exception:  # an old or hand-edited snapshot: nothing to compare
        return None


def fold_digests(cfg: ExperimentConfig, fold: int) -> dict[str, str]:
    """:func:`data_digests` plus the ids fold ``fold`` validates on (``folds``), and, for a
    run with a ``pseudo`` section, the SHA-256 of fold
    ``fold``'s pseudo-labels (``pseudo``): train writes them again from the source run each
    time, and a source retrained since (other params, other data) gives other labels, which
    the fold's model, trained on the old ones, would silently keep."""
    digests = data_digests(cfg)
    if cfg.pseudo is not None:
        digest = file_digest(cfg.run_dir / "pseudo" / f"fold{fold}.parquet")
        if digest is not None:
            digests["pseudo"] = digest
    folds_digest = file_digest(Path(cfg.folds_file))
    if folds_digest is not None:
        digest = _fold_rows(str(cfg.folds_file), folds_digest).get(fold)
        if digest is not None:
            digests["folds"] = digest
    return digests


@functools.lru_cache(maxsize=8)
def _fold_rows(path: str, file_sha: str) -> dict[int, str]:
    """SHA-256 of the ids each fold of the folds file at ``path`` validates on (read once per
    file content, ``file_sha``). A folds file rewritten under the same name (edited by hand,
    ``pipeline adversarial --valid-fold NAME --overwrite``) moves rows between folds: a fold
    trained before would validate, and be scored, on rows it trained on. Only the fold's own
    rows count: its training rows are the rest, so rows moved among other folds leave it."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] != 2 or "fold" not in frame.columns:
        return {}  # refused where the folds are read
    ids = frame.drop(columns="fold").iloc[:, 0]
    out = {}
    for value, rows in ids.groupby(frame["fold"]):
        if value.lstrip("-").isdigit():
            out[int(value)] = hashlib.sha256("\0".join(sorted(rows)).encode()).hexdigest()
    return out


def predictions_digest(preds: Predictions) -> str:
    """SHA-256 of a run's or blend's predictions (OOF, folds, test rows and ids): what a blend
    of it was made from."""
    digest = hashlib.sha256()
    for part in (preds.oof_matrix, preds.oof["fold"].to_numpy(dtype=np.int64),
                 preds.test_matrix):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update("\0".join(preds.test[preds.meta.id_column].astype(str)).encode())
    return digest.hexdigest()


def check_blend_members(folder: Path) -> None:
    """Refuse a blend ``folder`` whose members predict otherwise than when it was made (one
    retrained or predicted again since, the blend not rerun): its submission would be the old
    members' blend while the member runs, their CV and their submissions are the new ones.
    A member folder removed since leaves the blend as it is (its files are its own); a blend
    from before the digests were kept is not checked."""
    path = folder / "blend.json"
    recorded = read_json(path).get("member_predictions") if path.is_file() else None
    for member, digest in (recorded or {}).items():
        member_dir = Path(member)
        if not (member_dir / "run.json").is_file():
            continue
        if predictions_digest(load_predictions(member_dir)) != digest:
            raise DataError(f"{member_dir} predicts otherwise than when {folder} blended it "
                            "(trained or predicted again since): run pipeline blend again "
                            "with the same --runs and --name before submitting it")


def changed_files(recorded: Any, cfg: ExperimentConfig, parts: Sequence[str],
                  fold: int | None = None) -> list[str]:
    """Those of ``parts`` ('train', 'test', 'pseudo': then give ``fold``) whose file is no
    longer the one a fold's record (``recorded``: its ``data`` entry) was made from. A record
    from before digests were kept vouches for nothing and is taken as current, so no finished
    run is orphaned."""
    if not isinstance(recorded, dict):
        return []
    now = data_digests(cfg) if fold is None else fold_digests(cfg, fold)
    # a part's images count as the part; a record without them (older) vouches for them
    changed = [part for part in parts if _differs(recorded, now, part, f"{part}_folder_sizes")
               or _differs(recorded, now, f"{part}_images", f"{part}_image_sizes")]
    weights = "train" in parts and "train" not in changed and recorded.get(
        "train_weights", now.get("train_weights")) != now.get("train_weights")
    return [*changed, "encoder weights"] if weights else changed


_RETIMED: set[str] = set()  # competitions whose retimed train images were said, once a process


def _differs(recorded: dict[str, Any], now: dict[str, str], key: str, sizes: str) -> bool:
    """Whether the record ``key`` differs (a file, or the image files it lists; a record
    without the key vouches for it). Train images whose names and sizes (record ``sizes``)
    are the ones recorded, the files a train file lists or a train folder of class folders,
    their times alone changed, count as the same images: a
    competition copied to another disk, re-extracted from its archive or uploaded as a
    Kaggle dataset gets new times, and its every fold was trained again, or, asked to
    predict, refused (retraining is what a code competition's notebook cannot afford). Test
    images keep their times: a hidden test set swaps in files of the same names, and
    predicting them again costs little."""
    if recorded.get(key, now.get(key)) == now.get(key):
        return False
    if not key.startswith("train") or sizes not in recorded or recorded[sizes] != now.get(sizes):
        return True
    if now[key] not in _RETIMED:
        _RETIMED.add(now[key])
        log.warning("train images: their modification times changed since the folds trained, "
                    "their names and sizes did not; taken as the same images (copied or "
                    "re-extracted). If you edited them in place, train again with --overwrite")
    return False

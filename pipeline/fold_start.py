"""What a network fold started from: a fold cut off mid-way resumes from its last resume point
(``last.pt``) and its fitted preprocessing, but only on the inputs it started on.

A fold killed mid-way, then run again after its train file changed (a corrected label, a
re-exported CSV), resumed the weights and the preprocessing of the old rows and finished as
no fresh run would have (a probe: OOF probabilities 0.13 apart). Each start records the
fold's input digests (those :func:`pipeline.runs.fold_complete` compares); a resume on other
inputs starts the fold afresh instead.
"""

from __future__ import annotations

import logging

from pipeline.artifacts import read_json, write_json
from pipeline.config import ExperimentConfig
from pipeline.data_files import changed_files, fold_digests
from pipeline.runs import RESTART_FILES, fold_dir, fold_label, trained_on
from pipeline.train_hash import train_hashes

log = logging.getLogger(__name__)

START_FILE = "started.json"


def start_fold(cfg: ExperimentConfig, seed: int, fold: int) -> None:
    """Before a fold trains: drop a resume point made from other inputs or under another
    config, then record the inputs this start trains on."""
    folder = fold_dir(cfg, seed, fold)
    path = folder / START_FILE
    try:
        record = read_json(path) if path.is_file() else None
    except ValueError:  # damaged: nothing vouches for the resume point
        record = {}
    if record is not None and any((folder / name).exists() for name in RESTART_FILES):
        changed = changed_files(record.get("data"), cfg, trained_on(cfg), fold)
        other = record.get("config_hash") not in train_hashes(cfg)
        if changed or other:
            log.warning("%s: %s since it started; it starts again instead of resuming",
                        fold_label(cfg, seed, fold),
                        f"the {' and '.join(changed)} file changed" if changed
                        else "its config changed")
            for name in RESTART_FILES:
                (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, {"config_hash": cfg.train_hash(), "data": fold_digests(cfg, fold)})

"""Who owns ``blends/<name>/``: the members and method that made it, and a reused name.

A blend records its members, method and parameters in ``blend.json``. A later blend under
the same name with the same members and method is the same blend, resumed or redone (its
Optuna study continues). One of other members or another method is refused, as
``pipeline train`` refuses a run folder of another config: ``overwrite`` replaces it,
``new_version`` writes ``<name>-v2`` (the first free, or the one already holding this blend).
Whenever a complete blend is replaced, a ``submissions/<name>.csv`` that holds exactly its
predictions would claim to be current while it is not: it is removed, and the caller writes it
again from the new blend.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.artifacts import load_predictions, read_json, write_json
from pipeline.data_files import predictions_digest
from pipeline.errors import ConfigError
from pipeline.run_writable import writable

logger = logging.getLogger("pipeline.blend")

IDENTITY_FILE = "blend.json"


def write_identity(folder: Path, names: Sequence[str], paths: Sequence[str | Path],
                   method: str, params: dict[str, Any]) -> None:
    """Record what made the blend in ``<folder>/blend.json``, with a digest of each member's
    predictions (``submit`` refuses the blend once a member predicts otherwise)."""
    resolved = [str(Path(p).resolve()) for p in paths]
    write_json(folder / IDENTITY_FILE, {
        "members": list(names),
        "paths": resolved,
        "method": method,
        "params": params,
        "member_predictions": {p: predictions_digest(load_predictions(p)) for p in resolved},
    })


def recorded_identity(folder: Path) -> dict[str, Any] | None:
    """Members and method of the blend in ``folder``; None when none was completed there.
    A blend written before ``blend.json`` existed is read from its ``cv.json``."""
    if (folder / IDENTITY_FILE).is_file():
        return read_json(folder / IDENTITY_FILE)
    if (folder / "cv.json").is_file():
        cv = read_json(folder / "cv.json")
        return {"members": list(cv.get("members", {})), "method": cv.get("method"), "params": {}}
    return None


def _same(recorded: dict[str, Any] | None, names: Sequence[str], method: str) -> bool:
    """Same members (in any order: the order changes no weight) and the same method."""
    if recorded is None:
        return True
    return sorted(recorded["members"]) == sorted(names) and recorded["method"] == method


def next_free_name(blends_dir: Path, name: str, names: Sequence[str], method: str) -> str:
    """The first of ``name``, ``<name>-v2``, ``-v3``, ... whose folder is free or holds this
    very blend (so a rerun with ``new_version`` resumes it instead of starting another), as
    :func:`pipeline.runs.next_version` does for runs."""
    base = re.sub(r"-v\d+$", "", name)
    for candidate in [name] + [f"{base}-v{k}" for k in range(2, 1000)]:
        if _same(recorded_identity(blends_dir / candidate), names, method):
            return candidate
    raise ConfigError(f"no free version of blend name {name!r} under {blends_dir}")


def claim_name(blends_dir: Path, name: str, names: Sequence[str], method: str,
               overwrite: bool = False, new_version: bool = False) -> tuple[str, bool]:
    """The name this blend is written under, and whether its folder's old blend must be
    cleared first (another blend, replaced by ``overwrite``).

    Raises:
        ConfigError: ``blends_dir/name`` holds a blend of other members or another method,
            and neither ``overwrite`` nor ``new_version`` is given; the message names both
            member lists and the next free name.
    """
    recorded = recorded_identity(blends_dir / name)
    if _same(recorded, names, method):
        return name, False
    assert recorded is not None  # _same is True for an empty folder
    if new_version:
        free = next_free_name(blends_dir, name, names, method)
        logger.info("blend %s holds other members (%s); this blend is written as %s",
                    blends_dir / name, recorded["members"], free)
        return free, False
    if overwrite:
        logger.info("blend %s: replacing the blend of %s (%s) with one of %s (%s) "
                    "(overwrite)", blends_dir / name, recorded["members"], recorded["method"],
                    list(names), method)
        return name, True
    free = next_free_name(blends_dir, name, names, method)
    raise ConfigError(
        f"{blends_dir / name} holds a blend of {recorded['members']} ({recorded['method']}); "
        f"this one is of {list(names)} ({method}). Pass --overwrite to replace it, "
        f"--new-version to write it as {free!r}, or choose another --name"
    )


def clear(folder: Path) -> None:
    """Remove everything in ``folder`` (the blend being overwritten; its study included)."""
    for item in folder.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def for_writing(folder: Path) -> Path:
    """``folder``, refused in one line before a blend writes or clears anything there where
    it cannot be written in (a blends folder attached read-only to a Kaggle notebook)."""
    return writable(folder, "the blend", "--blends-dir")

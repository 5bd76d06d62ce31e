"""What a run records of its files: their SHA-256 by name, and which recorded ones changed
since (a truncated copy, a full disk, a file edited by hand)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digests(folder: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` matching ``patterns``, by name."""
    digests = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(block)
            digests[path.name] = digest.hexdigest()
    return digests


def damaged_files(folder: Path, recorded: dict[str, str], patterns: tuple[str, ...]) -> list[str]:
    """The names in ``recorded`` (name -> SHA-256) whose file in ``folder`` is missing or
    differs now."""
    now = file_digests(folder, patterns)
    return sorted(name for name, digest in recorded.items() if now.get(name) != digest)

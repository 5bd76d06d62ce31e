"""Images decoded once per process: every fold, epoch and prediction of a run reads the same
files, and decoding a PNG or JPEG costs more than training on it at small sizes.

Decoded pixels (uint8, RGB, as stored) are kept until they would take more than
``PIPELINE_DECODE_CACHE_GB`` (default: a quarter of the machine's memory); past that, images
are decoded from disk each time they are read, and the log says so once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

_cache: dict[str, np.ndarray] = {}
_state = {"bytes": 0, "full": False}


def cache_budget() -> int:
    """Bytes the decoded images may take."""
    env = os.environ.get("PIPELINE_DECODE_CACHE_GB")
    if env:
        return int(float(env) * 2**30)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError):  # not every platform reports its memory
        return 4 * 2**30


def decode_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as a read-only H x W x 3 uint8 array (from the cache if held)."""
    key = str(path)
    pixels = _cache.get(key)
    if pixels is not None:
        return pixels
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"))
    pixels.setflags(write=False)  # shared by every reader: augmentations must copy
    if _state["bytes"] + pixels.nbytes <= cache_budget():
        _cache[key] = pixels
        _state["bytes"] += pixels.nbytes
    elif not _state["full"]:
        _state["full"] = True
        log.info("decoded images fill the %.1f GB cache (PIPELINE_DECODE_CACHE_GB): the rest "
                 "are decoded from disk each time they are read", cache_budget() / 2**30)
    return pixels


def clear_cache() -> None:
    """Forget every decoded image (tests; a process that moves to other data)."""
    _cache.clear()
    _state.update(bytes=0, full=False)

"""What a resume point is made of: the random generators' states and checkpoints written so
that a kill never leaves half a file."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.artifacts import atomic_path
from pipeline.engine.distributed import is_main


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state (python, numpy, torch CPU and GPUs), for a resume point."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file, so a kill never leaves half a checkpoint (by
    rank 0 alone in a multi-process launch)."""
    if not is_main():
        return
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class CheckpointWriter:
    """Writes checkpoints in a background thread, in the order they were handed over.

    :meth:`submit` serialises the state at once (so training may go on changing the live
    tensors) and leaves the disk write, the slow part, to the thread; each file still appears
    whole or not at all (:func:`save_checkpoint`'s rename). :meth:`wait` blocks until every
    handed-over file is on disk and raises the first write error, if any.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, files: list[tuple[Path, dict[str, Any]]], serialise_here: bool = True,
               ) -> None:
        """Serialise ``files`` now (or, ``serialise_here=False``, in the thread: for states
        nothing changes any more); write them, in order, after the previous batch."""
        payloads: list[tuple[Path, Any]] = []
        for path, state in files:
            if not serialise_here:
                payloads.append((path, state))
                continue
            buffer = io.BytesIO()
            torch.save(state, buffer)
            payloads.append((path, buffer.getbuffer()))
        self.wait()  # one batch in flight: files land in the order they were submitted
        self._thread = threading.Thread(target=self._write, args=(payloads,), daemon=True)
        self._thread.start()

    def _write(self, payloads: list[tuple[Path, Any]]) -> None:
        try:
            for path, data in payloads:
                with atomic_path(path) as tmp:
                    if isinstance(data, memoryview):
                        tmp.write_bytes(data)
                    else:
                        torch.save(data, tmp)
        except BaseException as err:  # re-raised on the training thread by wait()
            self._error = err

    def wait(self) -> None:
        """Block until the files handed over are written; re-raise a failed write."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

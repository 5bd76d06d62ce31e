"""When a fit's chosen weights (``best.pt``) and its resume point (``last.pt``) reach the disk.

Writing both after every epoch costs a GPU run dearly (a copy of the weights and optimizer
state, then a file write, every few seconds), so a resume point is written at most every
``every`` seconds and always after the last epoch; the best weights wait in memory (a device
copy) until the next resume point and are written just before it, so the two files on disk
always describe the same moment. A run killed between resume points replays the epochs since
the last one and, being deterministic, ends with the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.engine.distributed import is_main
from pipeline.engine.state import CheckpointWriter
from pipeline.errors import DataError


class ResumePoints:
    """The pending best weights and the resume-point clock of one fit."""

    def __init__(self, every: float = 0.0) -> None:
        self.every = every
        self._writer = CheckpointWriter()
        self._last = time.monotonic()
        self._best: tuple[dict[str, Any], int, float] | None = None

    def restart_clock(self) -> None:
        """Count the interval from now (the start of a fit, after any resume)."""
        self._last = time.monotonic()

    def keep_best(self, weights: dict[str, Any], epoch: int, score: float,
                  copy: bool = True) -> None:
        """Keep ``weights`` (a state dict) as the best so far; written with the next point.
        ``copy=False`` keeps the live tensors, for a caller that hands over newer weights
        every epoch (checkpoint 'last'): they are written before training changes them, or
        replaced first (no device copy of the model every epoch)."""
        if not is_main():  # only rank 0 of a multi-process launch writes files
            return
        if copy:
            weights = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                       for k, v in weights.items()}
        self._best = (weights, epoch, score)

    def save(self, directory: Path, state: Callable[[], dict[str, Any]], force: bool,
             final: bool = False) -> bool:
        """Hand ``best.pt`` (when it changed) and ``last.pt`` (``state()``) to the writer
        thread when a point is due or ``force``; returns whether one was. ``final``: nothing
        will change these tensors any more (the fit is over), so the thread serialises them
        too, while the caller goes on (e.g. predicting with the same weights)."""
        now = time.monotonic()
        if not is_main() or (not force and now - self._last < self.every):
            return False
        files: list[tuple[Path, dict[str, Any]]] = []
        if self._best is not None:
            weights, epoch, score = self._best
            files.append((directory / "best.pt",
                          {"model": weights, "epoch": epoch, "score": score}))
            self._best = None
        files.append((directory / "last.pt", state()))
        # best.pt first: a resume point never outruns its best
        self._writer.submit(files, serialise_here=not final)
        self._last = now
        return True

    def wait(self) -> None:
        """Block until every handed-over file is on disk (re-raising a failed write)."""
        self._writer.wait()


def load_optimizer_state(optimizer: Any, state: dict[str, Any], directory: Path) -> None:
    """Restore a resume point's optimizer state; one written with other parameter groups (by
    a version that kept an encoder's and a head's at one rate apart) is a one-line error."""
    try:
        optimizer.load_state_dict(state)
    except ValueError as err:
        raise DataError(
            f"{directory / 'last.pt'} cannot resume this fold: its optimizer state does not "
            f"fit the model's ({str(err).splitlines()[0]}); it was written by an older "
            "version or another config: delete it to train the fold from the start") from None

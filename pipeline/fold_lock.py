"""One (seed, fold) job at a time: the operating-system lock two processes training one
config share their folds by."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.config import ExperimentConfig
from pipeline.errors import PipelineError
from pipeline.runs import fold_dir


class FoldBusy(PipelineError):
    """Another process holds a fold this stage needs."""


@contextlib.contextmanager
def fold_lock(cfg: ExperimentConfig, seed: int, fold: int) -> Iterator[str | None]:
    """Hold the (seed, fold) job's lock while it trains or predicts. Yields None when this
    process holds it, or who does ("pid 123 on host h since 10:02:03") when another does: two
    ``pipeline train`` processes on one config then share the folds instead of both doing all
    of them. An operating-system lock: it is gone when its holder dies, even by SIGKILL."""
    folder = fold_dir(cfg, seed, fold)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock", timeout=0)
    owner = folder / ".lock.owner"
    try:
        lock.acquire()
    except Timeout:
        yield owner.read_text().strip() if owner.is_file() else "another process"
        return
    try:
        owner.write_text(f"pid {os.getpid()} on host {socket.gethostname()} since "
                         f"{time.strftime('%H:%M:%S')}\n")
        yield None
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def fold_holders(run_dir: Path) -> list[str]:
    """Who holds a fold lock under ``run_dir`` now (another process training or predicting
    that fold): ``seed0/fold1: pid 123 on host h since 10:02:03``. Replacing the folder under
    such a process (``--overwrite``) deleted its lock file, so the next command locked a new
    one and trained the fold alongside it, and the old config's weights landed in the new
    run."""
    held = []
    # seed<s>/full: a full model ('train.full_fit')
    for path in sorted([*run_dir.glob("seed*/fold*/.lock"), *run_dir.glob("seed*/full/.lock")]):
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            owner = path.with_name(".lock.owner")
            who = owner.read_text().strip() if owner.is_file() else "another process"
            held.append(f"{path.parent.relative_to(run_dir)}: {who}")
            continue
        lock.release()
    return held

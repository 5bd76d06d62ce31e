"""The terminal's log and a run's ``log.txt``, for one command of the ``pipeline`` CLI.

A command on a run (train, predict, ...) attaches its run's ``log.txt`` to the root logger;
:func:`detach` takes it off when the command ends. A notebook calls ``pipeline.cli.main``
once per stage in one process: the handler left attached after ``train`` wrote every later
command that works on no run of its own (``submit --run`` or ``blend`` of other runs,
``submit --config`` of a run read-only) into the trained run's log.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# a fold that trained: its run folder holds work a refusal must not remove
TRAINED_FILES = ("metrics.json", "last.pt", "best.pt")


@dataclass
class _RunLog:
    handler: logging.FileHandler
    made: list[Path] = field(default_factory=list)  # folders made to hold it, outermost first
    is_new: bool = False  # this command made the log file (an earlier one's is kept)


_current: _RunLog | None = None  # the running command's


def setup_logging(log_file: Path | None = None) -> None:
    """The terminal's handler (once a process), and ``log_file`` as the command's run log in
    place of any other."""
    root = logging.getLogger()
    if not root.handlers:
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(terminal)
        root.setLevel(logging.INFO)
        for noisy in ("optuna", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_file is None:
        return
    global _current
    detach()  # one run log at a time
    # absolute, as the handler's baseFilename is: a relative output_dir ('runs') was
    # never found among them, and a refused first start left its run folder behind
    made = [Path(os.path.abspath(d)) for d in reversed(log_file.parents) if not d.exists()]
    is_new = not log_file.exists()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    root.addHandler(handler)
    _current = _RunLog(handler, made, is_new)


def quiet_terminal() -> Callable[[], None]:
    """``--quiet`` for one command: no progress bars, and the terminal gets warnings only
    (the run's log.txt still gets everything). Returns what puts both back when the command
    ends: a notebook's later command without ``--quiet`` stayed quiet."""
    progress = os.environ.get("PIPELINE_PROGRESS")
    os.environ["PIPELINE_PROGRESS"] = "0"
    terminals = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    levels = [h.level for h in terminals]
    for handler in terminals:
        handler.setLevel(logging.WARNING)

    def restore() -> None:
        if progress is None:
            os.environ.pop("PIPELINE_PROGRESS", None)
        else:
            os.environ["PIPELINE_PROGRESS"] = progress
        for handler, level in zip(terminals, levels, strict=True):
            handler.setLevel(level)

    return restore


def detach() -> None:
    """Take the command's run log off the root logger and close it (none: nothing to do)."""
    global _current
    if _current is not None:
        logging.getLogger().removeHandler(_current.handler)
        _current.handler.close()
        _current = None


def close_refused(line: str) -> None:
    """A refused command's end for its run's log: where this command made the log and the
    run folder holds nothing else, or nothing but what this command wrote into the folder it
    made before any fold trained (a config snapshot, a fold's preprocessing, then an unknown
    timm model or a missing weights file), the log goes and with it the folders made for it
    (a refusal writes nothing); else the refusal is the log's last line."""
    if _current is None:
        return
    path = Path(_current.handler.baseFilename)
    ours = _current.is_new and path.parent in _current.made and not any(
        p.name in TRAINED_FILES for p in path.parent.rglob("*"))
    if not ours and (not _current.is_new or any(
            p.is_file() and p != path for p in path.parent.rglob("*"))):
        _current.handler.handle(logging.LogRecord("pipeline", logging.ERROR, "", 0,
                                                  "error: %s", (line,), None))
        return
    made = _current.made
    detach()
    path.unlink(missing_ok=True)
    if ours:
        shutil.rmtree(path.parent, ignore_errors=True)
    for folder in [path.parent, *reversed(made)]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

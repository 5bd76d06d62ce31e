"""Errors a user can fix: the CLI prints them in one line and exits non-zero."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of the errors caused by input (config, data files, artifacts), not by bugs."""


class ConfigError(PipelineError, ValueError):
    """A config that cannot be used; the message names the file and the dotted key."""


class DataError(PipelineError, ValueError):
    """A data file or artifact that cannot be used; the message names the file and column."""


class OtherConfigRun(ConfigError):
    """A run folder holds a run of another config (``diff``: the keys that differ); the
    message says how ``pipeline train`` replaces it, a caller with other options re-words it."""

    def __init__(self, message: str, run_dir: object, diff: str) -> None:
        super().__init__(message)
        self.run_dir, self.diff = run_dir, diff


class MissingArtifactError(DataError, FileNotFoundError):
    """A file an earlier stage should have written is not there (a run that never finished,
    a misspelt folder); still a FileNotFoundError for callers that test for that."""


def error_line(err: PipelineError) -> str:
    """The message the CLI prints for ``err``. One raised in a DataLoader worker (an image
    file that cannot be read) comes back from torch with the worker's traceback as its
    message; its last line holds the original message."""
    text = str(err)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        return text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text

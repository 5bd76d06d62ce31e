"""Which field separator a competition CSV file is read with.

``competition.sep`` names the train and test files' separator, but Kaggle ships tab-separated
tables beside a comma-separated sample submission (Mercari's ``train.tsv`` / ``test.tsv`` and
``sample_submission.csv``; Movie Review Sentiment's ``sampleSubmission.csv``): the sample
read with the tables' separator was one column, and no config could read all three. A
header line tells: the sample submission is read with the one common separator its header
holds when it lacks the configured one; a train or test file whose header lacks the
configured separator but holds another is refused in one line naming the key to set (read
so it was one column, and the error named a missing target instead).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.errors import DataError

log = logging.getLogger(__name__)

SEPARATORS = (",", ";", "\t", "|")


def _header(path: Path, encoding: str) -> str:
    try:
        with open(path, encoding=encoding, newline="") as handle:
            return handle.readline()
    except (OSError, UnicodeError, LookupError):  # the CSV reader says what is wrong
        return ""


def file_separator(path: Path, what: str, sep: str, encoding: str = "utf-8") -> str:
    """The separator to read ``path`` (the competition's ``what`` file) with: ``sep``, or
    for the sample submission the one other common separator its header holds where it
    holds no ``sep``.

    Raises:
        DataError: a train or test file whose header holds no ``sep`` but exactly one other
            common separator (naming it and 'competition.sep').
    """
    header = _header(path, encoding)
    if len(sep) != 1 or sep in header:  # a pattern ('\s+') is the user's own rule
        return sep
    found = [s for s in SEPARATORS if s in header]
    if len(found) != 1:
        return sep
    if what == "sample submission":
        log.info("%s: read with %s, the separator its header holds (not %s, "
                 "'competition.sep')", path, json.dumps(found[0]), json.dumps(sep))
        return found[0]
    if what in ("train", "test"):
        raise DataError(f"{what} file {path}: its header holds no {json.dumps(sep)} "
                        f"('competition.sep') but {json.dumps(found[0])}: set "
                        f"'competition.sep: {json.dumps(found[0])}'")
    return sep

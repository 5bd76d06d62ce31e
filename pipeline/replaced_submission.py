"""A submission left behind by a run or blend that is being replaced.

``submissions/<name>.csv`` holding exactly the predictions of the run or blend now in
``<folder>`` would, once that folder is retrained or re-blended under other settings, claim to
be its current submission while it is not (and ``pipeline lb`` would pair its public score
with the new folder's CV). It is removed before the folder is replaced; a file of other
content (another source under that name, an edited file) is left alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.artifacts import load_predictions
from pipeline.competition_files import read_csv
from pipeline.errors import PipelineError
from pipeline.submit import format_submission, regression_clip

logger = logging.getLogger("pipeline.submit")


def pop_own_submission(folder: Path, submissions_dir: str | Path, kind: str = "blend",
                       name: str | None = None) -> Path | None:
    """Remove ``<submissions_dir>/<name or folder name>.csv`` if it holds exactly the
    submission of the finished ``kind`` (run or blend) now in ``folder``, about to be
    replaced; return its path, else None."""
    path = Path(submissions_dir) / f"{name or folder.name}.csv"
    if not path.is_file() or not (folder / "run.json").is_file():
        return None
    if not (folder / "test.parquet").is_file():  # a run that never finished wrote none
        return None
    try:
        preds = load_predictions(folder)
        meta = preds.meta
        sample = read_csv(Path(meta.competition_dir) / meta.sample_submission_file,
                          "sample submission", meta.csv_sep, meta.csv_encoding, meta.id_column)
        # the submission as written clipped or not (submit --clip): either is its own
        decision = regression_clip(preds, "on")
        made = {format_submission(meta, preds.test, sample, folder, clip).to_csv(index=False)
                for clip in (None, decision)}
    except (OSError, PipelineError) as err:
        logger.warning("%s may hold the predictions of the %s being replaced in %s, but "
                       "that could not be checked (%s); it is left as is", path, kind, folder,
                       err)
        return None
    if path.read_text(encoding="utf-8") not in made:
        logger.info("%s is not the submission of the %s being replaced; left as is", path,
                    kind)
        return None
    path.unlink()
    logger.info("%s held the submission of the %s being replaced in %s: removed", path, kind,
                folder)
    return path

"""``pipeline adversarial``'s options, refused before the classifier trains or anything is
written."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pipeline.config import ExperimentConfig
from pipeline.errors import PipelineError
from pipeline.output_folders import folder_problem

FOLD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_options(args: argparse.Namespace, cfg: ExperimentConfig,
                  share: float) -> tuple[Path | None, Path | None]:
    """Refuse bad options before the classifier trains; return the weights and folds paths."""
    if args.n_splits < 2:
        raise PipelineError(f"--n-splits must be an integer >= 2. Got {args.n_splits}.")
    if args.text_features < 1:
        raise PipelineError(f"--text-features must be >= 1. Got {args.text_features}.")
    if args.max_weight <= 1:
        raise PipelineError(f"--max-weight must be > 1 (weights have mean 1). "
                            f"Got {args.max_weight}.")
    if getattr(args, "valid_share_given", False) and not args.valid_fold:
        raise PipelineError("--valid-share needs --valid-fold NAME (the folds file to write)")
    if not 0 < share < 1:
        raise PipelineError(f"--valid-share must be a fraction in (0, 1). Got {share}.")
    weights = Path(args.weights) if args.weights else None
    folds = None
    if args.valid_fold:
        if not FOLD_NAME.match(args.valid_fold):
            raise PipelineError(f"--valid-fold must be a file stem of letters, digits, '_', "
                                f"'.' and '-'. Got {args.valid_fold!r}.")
        folds = Path(cfg.folds_dir) / f"{args.valid_fold}.csv"
    for path, flag in ((weights, "--weights"), (folds, "--valid-fold")):
        if path is not None and path.is_dir():  # --overwrite then failed after the report
            raise PipelineError(f"{path} ({flag}) is a folder; give a file path")
        if path is not None and path.exists() and not args.overwrite:
            raise PipelineError(f"{path} ({flag}) exists; pass --overwrite to replace it")
        # under a file: refused by the write, after the report's scores.csv was written
        if path is not None and (problem := folder_problem(path.parent, f"{flag}'s folder")):
            raise PipelineError(problem)
    return weights, folds

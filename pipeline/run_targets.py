"""The targets a finished run (or blend) is scored against, read back from its competition's
train file: what blends, the diversity report and the CLI's scores compare OOF rows with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import RunMeta
from pipeline.competition_checks import require_columns
from pipeline.competition_files import class_labels, labels_typed, read_csv
from pipeline.task_outputs import encode_targets


def targets_for_meta(meta: RunMeta) -> np.ndarray:
    """Encoded targets of a run's OOF rows (train.csv order), read from its competition; under
    'competition.missing_targets: mask' a row's empty targets are NaN cells."""
    path = Path(meta.competition_dir) / meta.train_file
    train = read_csv(path, "train", meta.csv_sep, meta.csv_encoding, meta.id_column,
                     class_labels(meta.task, meta.target_columns), decimal=meta.csv_decimal,
                     thousands=meta.csv_thousands, na_values=meta.csv_na_values,
                     number_rows=True, quoting=meta.csv_quoting)
    require_columns(train, [meta.id_column, *meta.target_columns], path, "target_columns")
    # the run's OOF rows are the labelled ones: a row with an empty target (with masked
    # targets: with every target empty) was left out ('competition.unlabelled_train_rows'),
    # or refused, so no run has it
    present = train[meta.target_columns].notna()
    kept = present.any(axis=1) if meta.missing_targets == "mask" else present.all(axis=1)
    return encode_targets(labels_typed(train[kept], meta.target_columns), meta.task,
                          meta.target_columns, meta.classes, meta.label_separator)

"""The competition spec: reads train/test/sample_submission and checks them against the config.

Everything a later stage relies on is checked here, once, with errors that name the file
and column: missing files and columns, duplicate ids, NaN targets, targets of the wrong type
for the task, test ids that differ from the sample submission's, missing image files.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pipeline.competition_checks import (
    check_aux,
    check_fold_columns,
    check_ids,
    column_roles_problem,
    give_ids,
    image_paths,
    missing_images_error,
    require_columns,
)
from pipeline.competition_files import (
    class_labels,
    labels_typed,
    parse_written_numbers,
    read_csv,
    template_columns,
)
from pipeline.csv_quotes import Quoting
from pipeline.errors import DataError
from pipeline.metrics import METRICS
from pipeline.pixel_images import PixelsConfig, pixel_columns, write_pixel_images
from pipeline.schema import Section
from pipeline.targets import (
    check_sample_columns,
    labelled_rows,
    masking_problem,
    target_classes,
    target_overlap,
    target_ratings,
)
from pipeline.task_outputs import (
    WHITESPACE,
    encode_targets,
    n_outputs,
    prediction_columns,
    tag_separator,
)

Task = Literal["binary", "multiclass", "multilabel", "regression"]
Modality = Literal["image", "text", "tabular"]
CLASSIFICATION = ("binary", "multiclass", "multilabel")
log = logging.getLogger(__name__)


class AuxTargetConfig(Section):
    """A train-only column learned beside the targets by its own head (multi-task), never
    predicted into the artifacts (:mod:`pipeline.models.multitask`)."""

    column: str
    task: Literal["binary", "multiclass", "regression"] = "regression"
    weight: float = Field(0.3, gt=0)  # of its loss, beside the main loss's 1


class CompetitionConfig(Section):
    """Where the competition lives and what it asks for."""

    dir: str
    id_column: str = "id"
    target_columns: list[str] = Field(min_length=1)
    task: Task
    metric: str
    # binary: the label whose probability is predicted (None: the larger, 1 of 0/1, 'yes')
    positive_class: str | int | bool | None = None
    modality: Modality
    image_column: str | None = None  # column holding image paths relative to dir
    # or a template of the path, with {split} (train/test) and any column, e.g.
    # "{split}_images/{image_id}.jpg"
    image_path: str | None = None
    # or the pixels themselves, in the CSV files (MNIST's pixel0..pixel783 columns)
    pixels: PixelsConfig | None = None
    text_columns: list[str] = Field(default_factory=list)
    feature_columns: list[str] | None = None  # tabular inputs; None: every other column
    # with feature_columns None, a train column missing from test is refused (a model cannot
    # use it at prediction time); true drops such columns, with a warning naming them
    drop_train_only_columns: bool = False
    categorical_columns: list[str] = Field(default_factory=list)  # besides non-numeric ones
    group_column: str | None = None
    # orders the rows in time for 'folds.scheme: time' (dates or numbers); still a feature
    time_column: str | None = None
    train_file: str = "train.csv"
    test_file: str = "test.csv"
    sample_submission_file: str = "sample_submission.csv"
    sep: str = Field(",", min_length=1)  # field separator of the three files (e.g. ";" or "\t")
    encoding: str = "utf-8"  # their text encoding (e.g. latin-1)
    # how their numbers are written: a ';'-separated file often writes 1.234,5
    # (decimal: ",", thousands: "."); else such a column is read as text, so as categories
    decimal: str = Field(".", min_length=1, max_length=1)
    thousands: str | None = Field(None, min_length=1, max_length=1)
    quoting: Quoting = "minimal"  # none: a quote is a character of its text (csv_quotes.py)
    # cell values that mean 'missing' besides pandas' own ('', 'NA', 'NaN', 'null', ...),
    # e.g. ["?", "-"]: else a numeric column holding them is read as text, so as categories
    na_values: list[str] = Field(default_factory=list)
    # extra train columns learned as auxiliary tasks; never features (absent from test)
    aux_targets: list[AuxTargetConfig] = Field(default_factory=list)
    # train rows with an empty target (any of target_columns): refused ('error'), left out of
    # folds, training, OOF and scores ('drop'), or left out and also given to consistency
    # training and pretraining as unlabelled rows beside the test rows ('unlabelled')
    unlabelled_train_rows: Literal["error", "drop", "unlabelled"] = "error"
    # what joins the labels of a multilabel target written as one column: null finds it (',',
    # '|' or ';' when the cells hold exactly one of them, else whitespace); ' ' for whitespace
    label_separator: str | None = Field(None, min_length=1)
    # a row of several targets (multilabel columns, multi-target regression) with some of
    # them empty: unlabelled as a whole, as above ('row'), or kept, each target learning and
    # scored on the rows that have it ('mask'); a row with none is unlabelled either way
    missing_targets: Literal["row", "mask"] = "row"

    @model_validator(mode="after")
    def _check(self) -> CompetitionConfig:
        if self.thousands == self.decimal:
            raise ValueError(f"'thousands' and 'decimal' are both {self.decimal!r}")
        if self.metric not in METRICS:
            raise ValueError(f"'metric': {METRICS.unknown_message(self.metric)}")
        metric = METRICS.get(self.metric)
        if self.task not in metric.tasks:
            raise ValueError(
                f"'metric' {self.metric!r} is not defined for task {self.task!r}; "
                f"it applies to {', '.join(metric.tasks)}. Metrics for {self.task}: "
                f"{', '.join(n for n in METRICS if self.task in METRICS.get(n).tasks)}"
            )
        if self.missing_targets == "mask" and (problem := masking_problem(
                self.task, self.target_columns, metric)):
            raise ValueError(problem)
        if self.task in ("binary", "multiclass") and len(self.target_columns) != 1:
            raise ValueError(
                f"'target_columns' must hold one column for task {self.task!r}. "
                f"Got {self.target_columns}."
            )
        given = [k for k in ("image_column", "image_path", "pixels") if getattr(self, k)]
        if self.modality == "image" and not given:
            raise ValueError("'image_column', 'image_path' or 'pixels' is required when "
                             "'modality' is 'image'")
        if len(given) > 1:
            raise ValueError(f"give one of {given}, not {len(given)}")
        if self.modality == "text" and not self.text_columns:
            raise ValueError("'text_columns' is required when 'modality' is 'text'")
        if problem := (column_roles_problem(self.id_column, self.target_columns,
                                            self.text_columns, self.feature_columns,
                                            [a.column for a in self.aux_targets])
                       or target_overlap(self.target_columns, self.id_column,
                                         self.feature_columns)):
            raise ValueError(problem)
        return self


@dataclass(frozen=True)
class Competition:
    """A loaded and validated competition."""

    cfg: CompetitionConfig
    train: pd.DataFrame
    test: pd.DataFrame
    sample_submission: pd.DataFrame
    classes: list[Any]  # label values in prediction-column order (binary: [neg, pos])
    # feature columns read as numbers from text such as '12.5%', '1,234.5' or '2021-03-04'
    written_numbers: list[str] = dataclasses.field(default_factory=list)
    # the files without an id column: 'train' rows numbered from 1, 'test' rows given the
    # sample submission's ids in order
    numbered_ids: list[str] = dataclasses.field(default_factory=list)
    # train rows with an empty target, kept under 'unlabelled_train_rows: unlabelled' (else
    # None); never in ``train``, so never in folds, OOF or scores
    unlabelled: pd.DataFrame | None = None
    # what joins a tags column's labels, in train and in the submission (whitespace: ' ')
    label_separator: str = WHITESPACE
    # a regression's ratings under QWK (its target's values, sorted): what the metric rounds to
    ratings: list[Any] = dataclasses.field(default_factory=list)

    @property
    def dir(self) -> Path:
        """The competition folder."""
        return Path(self.cfg.dir)

    @property
    def scored_values(self) -> list[Any]:
        """What the metric reads a prediction's columns as: the classes, or a regression's
        ratings under QWK (:meth:`pipeline.metric_base.Metric.for_classes`)."""
        return self.classes or self.ratings

    @property
    def n_outputs(self) -> int:
        """Width of a network's output for this competition."""
        return n_outputs(self.cfg.task, self.cfg.target_columns, self.classes)

    @property
    def pred_columns(self) -> list[str]:
        """Names of the prediction columns of OOF and test artifacts."""
        return prediction_columns(self.cfg.task, self.cfg.target_columns, self.classes)

    @property
    def unlabelled_pool(self) -> pd.DataFrame:
        """The rows semi-supervised training learns from without labels: the test rows, then
        the train rows with an empty target when they are kept."""
        if self.unlabelled is None:
            return self.test
        rows = self.unlabelled.drop(columns=self.cfg.target_columns)
        return pd.concat([self.test, rows], ignore_index=True)

    @functools.cached_property
    def targets(self) -> np.ndarray:
        """Encoded targets of the train rows (see :mod:`pipeline.metrics` for the layout)."""
        return encode_targets(self.train, self.cfg.task, self.cfg.target_columns, self.classes,
                              self.label_separator)

    @property
    def feature_columns(self) -> list[str]:
        """Tabular input columns: the configured ones, or every non-id, non-target column
        of both files that holds a value in train."""
        if self.cfg.feature_columns is not None:
            return list(self.cfg.feature_columns)
        empty = {*self.empty_columns, *self.test_empty_columns}
        return [c for c in self._candidate_features if c in self.test.columns and c not in empty]

    @functools.cached_property
    def empty_columns(self) -> list[str]:
        """Would-be features without a single value in train: nothing to learn from, and
        scikit-learn's histogram trees cannot bin them (left out unless listed in
        'competition.feature_columns')."""
        if self.cfg.feature_columns is not None:
            return []
        return _without_values(self.train, self._candidate_features)

    @functools.cached_property
    def test_empty_columns(self) -> list[str]:
        """Would-be features with values in train but none in test (left out unless listed
        in 'competition.feature_columns'): a model fitted on them predicts every test row
        from the missing-value branch or fill it never learned from, and CV, on train rows
        that hold them, cannot show what that costs."""
        if self.cfg.feature_columns is not None:
            return []
        empty = set(self.empty_columns)
        return _without_values(self.test, [c for c in self._candidate_features
                                           if c in self.test.columns and c not in empty])

    @property
    def train_only_columns(self) -> list[str]:
        """Columns that would be features but are missing from the test file."""
        if self.cfg.feature_columns is not None:
            return []
        return [c for c in self._candidate_features if c not in self.test.columns]

    @property
    def _candidate_features(self) -> list[str]:
        skip = {self.cfg.id_column, *self.cfg.target_columns, self.cfg.group_column}
        skip |= {a.column for a in self.cfg.aux_targets}
        skip |= {self.cfg.image_column, IMAGE_PATH, *self.cfg.text_columns,
                 *template_columns(self.cfg.image_path)}  # they name the file: no features
        return [c for c in self.train.columns if c not in skip]

    @property
    def categorical_columns(self) -> list[str]:
        """Feature columns treated as categories: configured ones and non-numeric ones."""
        cols = self.feature_columns
        return [
            c for c in cols
            if c in self.cfg.categorical_columns or not pd.api.types.is_numeric_dtype(self.train[c])
        ]

    @property
    def numeric_columns(self) -> list[str]:
        """Feature columns treated as numbers."""
        cats = set(self.categorical_columns)
        return [c for c in self.feature_columns if c not in cats]


def _without_values(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Those of ``columns`` empty in every row of ``frame``."""
    present = frame[columns].notna().any()
    return [c for c in columns if not present[c]]


IMAGE_PATH = "_image_path"  # resolved image path column added to train and test at load


def _check_inputs(comp: Competition) -> None:
    cfg = comp.cfg
    paths = {"train": comp.dir / cfg.train_file, "test": comp.dir / cfg.test_file}
    for part, frame in (("train", comp.train), ("test", comp.test), ("train", comp.unlabelled)):
        if frame is None:
            continue
        if IMAGE_PATH in frame.columns:
            files = frame[IMAGE_PATH]
            missing = [f for f in files if not (comp.dir / f).is_file()]
            if missing:
                raise missing_images_error(missing, comp.dir, cfg.image_column,
                                           cfg.image_path, paths[part])
        if cfg.text_columns:
            require_columns(frame, cfg.text_columns, paths[part], "text_columns")
        if cfg.feature_columns is not None:
            require_columns(frame, cfg.feature_columns, paths[part], "feature_columns")
    # a misspelt name ('MSSubclass') left its column numeric, silently
    require_columns(comp.train, cfg.categorical_columns, paths["train"], "categorical_columns")
    if cfg.modality == "tabular" and not comp.feature_columns and not cfg.text_columns:
        raise DataError(f"{paths['train']}: no feature columns left besides id and targets")


def load_competition(cfg: CompetitionConfig, check_files: bool = True) -> Competition:
    """Read and validate a competition folder against its config section."""
    root = Path(cfg.dir)
    if not root.is_dir():
        raise DataError(f"competition folder {root} ('competition.dir') not found")
    train_path = root / cfg.train_file
    test_path = root / cfg.test_file
    sub_path = root / cfg.sample_submission_file
    csv = {"sep": cfg.sep, "encoding": cfg.encoding, "id_column": cfg.id_column,
           "decimal": cfg.decimal, "thousands": cfg.thousands, "quoting": cfg.quoting}
    cells = {"texts": cfg.text_columns, "na_values": cfg.na_values,
             "keys": template_columns(cfg.image_path)}
    sample = read_csv(sub_path, "sample submission", **csv)
    require_columns(sample, [cfg.id_column], sub_path, "id_column")  # it names the id
    if train_path.is_dir() and (cfg.modality != "image" or cfg.pixels):
        raise DataError(f"train folder {train_path} ('competition.train_file') gives image "
                        "files as rows: it needs 'modality: image' with 'image_path' or "
                        "'image_column' for the test rows' files")
    train = read_csv(train_path, "train", **csv, labels=class_labels(cfg.task, cfg.target_columns),
                     **cells)
    if not test_path.is_file():  # image competitions often list their test rows only there
        raise DataError(f"test file {test_path} not found; where the sample submission lists "
                        "the test rows, set 'competition.test_file: "
                        f"{cfg.sample_submission_file}'")
    test = read_csv(test_path, "test", **csv, **cells)
    numbered = give_ids(train, test, sample, cfg.id_column, (train_path, test_path, sub_path))
    for frame, path in ((train, train_path), (test, test_path), (sample, sub_path)):
        require_columns(frame, [cfg.id_column], path, "id_column")
        check_ids(frame, cfg.id_column, path)
    require_columns(train, cfg.target_columns, train_path, "target_columns")
    # the rows every later stage sees; checked on their own (an unlabelled row's group or
    # auxiliary target matters to nothing), with the file's line numbers
    labelled = labels_typed(train[labelled_rows(train, cfg.target_columns,
                                                cfg.unlabelled_train_rows, train_path,
                                                cfg.missing_targets)], cfg.target_columns)
    require_columns(train, [a.column for a in cfg.aux_targets], train_path, "aux_targets")
    check_aux(labelled, cfg.aux_targets, train_path)
    check_fold_columns(train, labelled, cfg.group_column, cfg.time_column, train_path)
    # through object arrays: iterating a pandas text column yields its values one call each
    test_ids, sample_ids = (set(f[cfg.id_column].to_numpy(dtype=object)) for f in (test, sample))
    if test_ids != sample_ids:
        only_test = sorted(map(str, test_ids - sample_ids))[:3]
        only_sample = sorted(map(str, sample_ids - test_ids))[:3]
        raise DataError(
            f"ids in {test_path} differ from {sub_path}: {len(test_ids - sample_ids)} only in "
            f"test (e.g. {only_test}), {len(sample_ids - test_ids)} only in the sample "
            f"submission (e.g. {only_sample})"
        )
    separator = (tag_separator(labelled[cfg.target_columns[0]], cfg.label_separator)
                 if cfg.task == "multilabel" and len(cfg.target_columns) == 1 else WHITESPACE)
    classes = target_classes(labelled, cfg.task, cfg.metric, cfg.target_columns, train_path,
                             cfg.positive_class, separator,
                             masked=cfg.missing_targets == "mask")
    # checked before any fold trains, not when the submission is written at the end
    check_sample_columns([c for c in sample.columns if c != cfg.id_column], cfg.task,
                         cfg.metric, cfg.target_columns, classes, sub_path, train_path)
    for split, frame, path in (("train", train, train_path), ("test", test, test_path)):
        # the column is the loader's own: one a file brings (a feature export written before
        # exports left it out) would otherwise be checked and read as this run's images
        frame.drop(columns=[IMAGE_PATH], errors="ignore", inplace=True)
        if split == "train" and train_path.is_dir():  # the ids are the paths in the folder
            frame[IMAGE_PATH] = [(Path(cfg.train_file) / i).as_posix()
                                 for i in frame[cfg.id_column]]
        elif cfg.image_column or cfg.image_path:
            frame[IMAGE_PATH] = image_paths(frame, cfg, split, path)
    if cfg.pixels:
        columns = pixel_columns(train, cfg.pixels, train_path)
        written = write_pixel_images({"train": (train, train_path), "test": (test, test_path)},
                                     columns, cfg.pixels)
        # the images replace their values: 784 columns are no features beside them
        train.drop(columns=columns, inplace=True)
        test.drop(columns=columns, inplace=True)
        train[IMAGE_PATH], test[IMAGE_PATH] = written["train"], written["test"]
    comp = Competition(cfg, train, test, sample, classes, numbered_ids=numbered,
                       label_separator=separator, ratings=target_ratings(
                           labelled, cfg.task, cfg.metric, cfg.target_columns, train_path))
    # after the candidates are known, before any encoder sees the columns; a column the
    # config names as categorical stays as written
    written = parse_written_numbers(
        (train, test), [c for c in comp._candidate_features if c not in cfg.categorical_columns
                        and (cfg.feature_columns is None or c in cfg.feature_columns)],
        cfg.sep, cfg.decimal, cfg.thousands)
    comp = dataclasses.replace(comp, written_numbers=written,
                               **_split_unlabelled(train, labelled.index, cfg))
    if check_files:
        _check_inputs(comp)
    return comp


def _split_unlabelled(train: pd.DataFrame, labelled: pd.Index,
                      cfg: CompetitionConfig) -> dict[str, Any]:
    """The train rows with a target as ``train`` (numbered 0..n-1 like a file without such
    rows: folds, OOF and scores index them so) and, under 'unlabelled', the others as
    ``unlabelled``; every image path and written number is resolved on both by now."""
    if len(labelled) == len(train):
        return {}
    rest = train.drop(index=labelled).reset_index(drop=True)
    log.info("%s: %d train row(s) with an empty target left out of folds, training and "
             "scores ('competition.unlabelled_train_rows: %s'); %d labelled rows remain",
             Path(cfg.dir) / cfg.train_file, len(rest), cfg.unlabelled_train_rows,
             len(labelled))
    kept = labels_typed(train.loc[labelled].reset_index(drop=True), cfg.target_columns)
    return {"train": kept,
            "unlabelled": rest if cfg.unlabelled_train_rows == "unlabelled" else None}

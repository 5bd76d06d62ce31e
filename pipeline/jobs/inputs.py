"""What a fold fits on its own training rows before training (the tabular encoder, the
regression target transform and scale), kept in ``preprocess.json`` and ``tabular.joblib`` so that
prediction rebuilds the same inputs, and the fold's training datasets (with pseudo-labelled
rows when configured)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from torch import nn

from pipeline.artifacts import atomic_path, read_json, write_json
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import CombinedDataset, CompetitionDataset, ModelInputs
from pipeline.data.tabular import TabularEncoder
from pipeline.data.target_transform import TargetTransform
from pipeline.data.text_features import TfidfColumns
from pipeline.engine.member_ensemble import build_members
from pipeline.errors import DataError
from pipeline.models.multitask import task_specs
from pipeline.models.network import build_model
from pipeline.runs import FOLD_FORMAT
from pipeline.task_outputs import to_predictions

PREP_FILE = "preprocess.json"
TABULAR_FILE = "tabular.joblib"  # the fitted column encoder (scikit-learn objects pickle)


@dataclass(frozen=True)
class FoldPrep:
    """The preprocessing a fold fitted on its training rows."""

    tabular: TabularEncoder
    target_mean: list[float]  # regression targets are standardised per fold (identity else)
    target_std: list[float]
    # regression: 'model.target_transform', applied before the standardisation
    target: TargetTransform = field(default_factory=TargetTransform)
    # a bounded regression ('bce'): mean/std hold the training range's low end and width,
    # and the outputs are logits
    bounded: bool = False

    def standardise(self, task: str, y: np.ndarray) -> np.ndarray:
        """Encoded targets as the network trains on them (regression: transformed, then
        standardised)."""
        if task == "regression":
            y = self.target.transform(y)
            y = (y - np.array(self.target_mean)) / np.array(self.target_std)
            if self.bounded:  # BCE's targets (a pseudo-label may lie outside the range)
                y = np.clip(y, 0.0, 1.0)
        return y.astype(np.int64 if task == "multiclass" else np.float32)

    def predictions(self, task: str, outputs: np.ndarray) -> np.ndarray:
        """Network outputs -> artifact predictions (probabilities or regression values, in
        the targets' units)."""
        if task == "regression" and self.bounded:
            outputs = 1.0 / (1.0 + np.exp(-outputs))
        pred = to_predictions(task, outputs, self.target_mean, self.target_std)
        return self.target.inverse_transform(pred) if task == "regression" else pred


def _fit_prep(comp: Competition, rows: np.ndarray, target_transform: str,
              text: TfidfColumns | None, bounded: bool = False) -> FoldPrep:
    tab = TabularEncoder(comp.numeric_columns, comp.categorical_columns,
                         texts=tuple(comp.cfg.text_columns) if text is not None else (),
                         text=text)
    tab.fit(comp.train.iloc[rows])
    k = comp.n_outputs
    if comp.cfg.task != "regression":
        return FoldPrep(tab, [0.0] * k, [1.0] * k)
    target = TargetTransform(target_transform, tuple(comp.cfg.target_columns))
    target.check(comp.targets)  # the whole column, so every fold agrees
    y = target.fit(comp.targets[rows]).transform(comp.targets[rows])
    gaps = np.isnan(y).any()  # a target a row lacks ('competition.missing_targets: mask')
    if bounded:  # scaled into [0, 1] by the fold's training range
        low, high = (np.nanmin, np.nanmax) if gaps else (np.min, np.max)
        return FoldPrep(tab, low(y, axis=0).tolist(),
                        (high(y, axis=0) - low(y, axis=0) + 1e-12).tolist(), target, True)
    mean, std = (np.nanmean, np.nanstd) if gaps else (np.mean, np.std)
    return FoldPrep(tab, mean(y, axis=0).tolist(), (std(y, axis=0) + 1e-12).tolist(), target)


def fold_prep(fold_dir: Path, comp: Competition | None = None,
              rows: np.ndarray | None = None, target_transform: str = "none",
              text: TfidfColumns | None = None, bounded: bool = False) -> FoldPrep:
    """The fold's preprocessing: read from ``preprocess.json`` and ``tabular.joblib``, or
    fitted on ``rows`` of ``comp`` (regression targets through ``target_transform``, the
    text columns through ``text`` when given) and written there first. Always read back
    from the files, so a fresh fold, a resumed one and the predict stage see the same (JSON
    round-tripped) values.

    A fold prepared by an older release (another format) is prepared again, and its resume
    point, trained on the old inputs, is dropped.
    """
    path, tab_path = fold_dir / PREP_FILE, fold_dir / TABULAR_FILE
    stored = read_json(path) if path.is_file() else {}
    current = (stored.get("format") == FOLD_FORMAT and (
        comp is None or (stored.get("target_transform", {}).get("kind", "none")
                         == (target_transform if comp.cfg.task == "regression" else "none")
                         and stored.get("bounded", False) == bounded)))
    if not current or not tab_path.is_file():
        if comp is None or rows is None:
            raise FileNotFoundError(f"{path} (format {FOLD_FORMAT}) not found: train the fold")
        (fold_dir / "last.pt").unlink(missing_ok=True)
        prep = _fit_prep(comp, rows, target_transform, text, bounded)
        with atomic_path(tab_path) as tmp:
            joblib.dump(prep.tabular, tmp)
        data = {"format": FOLD_FORMAT, "target_mean": prep.target_mean,
                "target_std": prep.target_std}
        if prep.target.kind != "none":  # absent: none (as a fold from before transforms)
            data["target_transform"] = prep.target.state()
        if prep.bounded:  # absent: a standardised regression
            data["bounded"] = True
        write_json(path, data)
    data = read_json(path)
    # a fold prepared before target transforms: 'none'
    target = TargetTransform.from_state(data.get("target_transform", {"kind": "none"}))
    return FoldPrep(joblib.load(tab_path), data["target_mean"], data["target_std"], target,
                    bool(data.get("bounded", False)))


def predicted_frames(comp: Competition,
                     valid_rows: np.ndarray | None) -> dict[str, pd.DataFrame]:
    """The rows a fold predicts, by the name of their file in the fold folder: its held-out
    rows (``oof``), the test rows and, under 'competition.unlabelled_train_rows: unlabelled',
    the train rows without a target (``unlabelled``: a pseudo-label source labels them as it
    labels the test rows, so they are predicted the same way: every fold model, TTA).
    ``valid_rows`` None: a full model (``train.full_fit``), which predicts the test rows
    alone (it has no held-out rows, and pseudo-labels come from the folds)."""
    if valid_rows is None:
        return {"test": comp.test}
    frames = {"oof": comp.train.iloc[valid_rows], "test": comp.test}
    if comp.unlabelled is not None:
        frames["unlabelled"] = comp.unlabelled.drop(columns=comp.cfg.target_columns)
    return frames


def pseudo_rows(comp: Competition, pseudo: pd.DataFrame) -> pd.DataFrame:
    """The input rows of a fold's pseudo-labels (``pseudo``, as :mod:`pipeline.pseudo`
    writes it), in its order: test rows, and train rows kept without a target, told apart by
    ``part`` (a train row and a test row may share an id)."""
    id_col = comp.cfg.id_column
    pool = {"test": comp.test}
    if comp.unlabelled is not None:
        pool["unlabelled"] = comp.unlabelled.drop(columns=comp.cfg.target_columns)
    keys = pd.MultiIndex.from_arrays([pseudo["part"].astype(str), pseudo[id_col].astype(str)])
    table = pd.concat(pool.values(), ignore_index=True)
    table.index = pd.MultiIndex.from_arrays([
        np.repeat(list(pool), [len(f) for f in pool.values()]),
        table[id_col].astype(str)])
    missing = keys.difference(table.index)
    if len(missing):  # the pseudo file of another competition config: written again by train
        part, row_id = missing[0]
        raise DataError(f"pseudo-labels name {len(missing)} row(s) this competition has not, "
                        f"such as {part} row {row_id!r}: run the pseudo stage again")
    return table.loc[keys].reset_index(drop=True)


def with_pseudo_rows(
    comp: Competition, pseudo: pd.DataFrame, inputs: ModelInputs, y_train: np.ndarray,
    train_rows: np.ndarray, prep: FoldPrep, augment: AugmentConfig | None,
) -> CombinedDataset:
    """The fold's training rows plus its pseudo-labelled rows (with their weight).

    Multiclass labels become one-hot rows so hard and soft pseudo-labels share a layout. A
    fold none of whose rows passed the selection trains on its own rows alone (an empty
    part would reach the column encoders with no rows, which refuse it).
    """
    ccfg = comp.cfg
    if ccfg.task == "multiclass":
        y_train = np.eye(len(comp.classes), dtype=np.float32)[y_train]
    real = CompetitionDataset(comp.train.iloc[train_rows], inputs, y_train, augment,
                              np.ones(len(train_rows), dtype=np.float32))
    if pseudo.empty:
        return CombinedDataset([real])
    cols = comp.pred_columns
    rows = pseudo_rows(comp, pseudo)
    labels = pseudo[cols].to_numpy(dtype=np.float32)
    if ccfg.task == "regression":  # in the targets' units: transformed, then standardised
        labels = prep.standardise(ccfg.task, prep.target.in_domain(labels))
    extra = CompetitionDataset(rows, inputs, labels.astype(np.float32), augment,
                               pseudo["weight"].to_numpy(dtype=np.float32))
    return CombinedDataset([real, extra])


def build_fold_network(cfg: ExperimentConfig, comp: Competition, tabular: TabularEncoder | None,
                       seed: int) -> nn.Module:
    """The fold's network as training and prediction both build it: the configured model with
    its task heads, or ``train.ensemble``'s members of it (seeded from ``seed``)."""
    tasks = task_specs(comp, cfg.model.multitask)
    return build_members(lambda: build_model(cfg.model, comp.n_outputs, tabular, tasks),
                         cfg.train.ensemble, cfg.competition.task, seed)

"""Predict stage: fold checkpoints x test-time augmentation -> OOF and test predictions.

The same TTA is applied to the held-out fold and to the test set, so the blender sees on
the OOF what the test set will get. Reruns only what the ``predict`` section changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from pipeline.artifacts import read_json, write_json, write_parquet
from pipeline.callbacks import snapshot_paths
from pipeline.competition import Competition, load_competition
from pipeline.config import ExperimentConfig
from pipeline.data import CompetitionDataset, TabularEncoder, build_loader, model_inputs
from pipeline.engine import Trainer
from pipeline.errors import DataError
from pipeline.models import build_model, build_tokenizer
from pipeline.tta import reduce_predictions, tta_transforms

log = logging.getLogger(__name__)


def prediction_hash(cfg: ExperimentConfig) -> str:
    """Identity of the predictions: the trained weights' hash plus the predict section."""
    data = {"train": cfg.train_hash(), "predict": cfg.predict.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def predict_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any,
) -> None:
    """Predict the held-out rows and the test set with the fold's best weights and TTA.

    Writes ``oof.parquet`` and ``test.parquet`` (mean over transforms) and
    ``tta_oof.parquet``/``tta_test.parquet`` with every transform's predictions. With
    snapshots, every prediction is the mean over the fold's snapshot checkpoints.
    """
    from pipeline.train import fold_dir, n_outputs, to_predictions

    out = fold_dir(cfg, seed, fold)
    checkpoints = snapshot_paths(out) if cfg.train.snapshots else [out / "best.pt"]
    if not checkpoints or not checkpoints[0].is_file():
        raise DataError(f"no checkpoint in {out}: train seed {seed} fold {fold} first")
    prep = read_json(out / "preprocess.json")
    tab = TabularEncoder.from_state_dict(prep["tabular"])
    model = build_model(cfg.model, n_outputs(comp), tab)
    inputs = model_inputs(comp, cfg.model, tokenizer, tab)
    batch_size = cfg.predict.batch_size or 2 * cfg.train.batch_size
    trainer = Trainer(model, accelerator)
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    valid_rows = np.flatnonzero(folds == fold)
    frames = {"oof": comp.train.iloc[valid_rows], "test": comp.test}
    transforms = tta_transforms(cfg.predict.tta)
    loaders = {
        (part, name): build_loader(
            CompetitionDataset(frame, dataclasses.replace(inputs, **tta.inputs)), batch_size,
            False, cfg.train.num_workers)
        for part, frame in frames.items() for name, tta in transforms
    }
    sums: dict[tuple[str, str], np.ndarray] = {}
    for checkpoint in checkpoints:  # snapshot ensembles average their members' predictions
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
        trainer.unwrapped.load_state_dict(state)
        for part in frames:
            for name, tta in transforms:
                raw = trainer.predict(loaders[part, name], tta.batch, model=trainer.model)
                pred = to_predictions(cfg.competition.task, raw, prep) / len(checkpoints)
                sums[part, name] = sums.get((part, name), 0) + pred
    for part, frame in frames.items():
        ids = frame[id_col].to_numpy()
        per_tta = []
        for name, _ in transforms:
            table = pd.DataFrame(sums[part, name], columns=cols)
            table.insert(0, id_col, ids)
            table.insert(0, "tta", name)
            per_tta.append(table)
        write_parquet(out / f"tta_{part}.parquet", pd.concat(per_tta, ignore_index=True))
        stack = np.stack([sums[part, name] for name, _ in transforms])
        merged = reduce_predictions(stack, cfg.predict.tta_reduce, cfg.competition.task)
        table = pd.DataFrame(merged, columns=cols)
        table.insert(0, id_col, ids)
        write_parquet(out / f"{part}.parquet", table)
    write_json(out / "predictions.json", {"hash": prediction_hash(cfg), "tta": cfg.predict.tta})
    accelerator.free_memory()


def run(cfg: ExperimentConfig, comp: Competition | None = None) -> float:
    """Refresh every fold's predictions for the current ``predict`` section and regather."""
    from pipeline import train

    comp = comp or load_competition(cfg.competition)
    folds = train.load_folds(cfg, comp)
    for seed in cfg.train.seeds:
        for fold in range(cfg.folds.n_splits):
            if not train.fold_complete(cfg, seed, fold):
                raise DataError(
                    f"{train.fold_dir(cfg, seed, fold)} is not trained under this config: "
                    "run the train stage first"
                )
    if cfg.model.is_sklearn:
        log.info("%s: a scikit-learn model has no TTA; predictions come from training", cfg.name)
        return train.gather(cfg, comp, folds)
    accelerator = train.build_accelerator(cfg)
    tokenizer = build_tokenizer(cfg.model)
    for seed in cfg.train.seeds:
        for fold in range(cfg.folds.n_splits):
            train.run_fold(cfg, comp, folds, seed, fold, accelerator, tokenizer)
    return train.gather(cfg, comp, folds)

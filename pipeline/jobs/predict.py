"""Predict one fold's held-out rows and the test set with its checkpoint(s) and every TTA
transform; the same transforms on both, so the blender sees on the OOF what the test gets."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from pipeline.artifacts import write_json, write_parquet
from pipeline.competition import Competition
from pipeline.config import ExperimentConfig
from pipeline.data.datasets import CompetitionDataset, ModelInputs
from pipeline.data.memory_loader import build_fold_loader
from pipeline.data_files import data_digests
from pipeline.engine.auto_batch import eval_batch_size
from pipeline.engine.callbacks.averaging import snapshot_paths
from pipeline.engine.distributed import is_main
from pipeline.engine.member_ensemble import MemberEnsemble, split_members
from pipeline.engine.trainer import Trainer
from pipeline.errors import DataError
from pipeline.file_digests import file_digests
from pipeline.jobs.inputs import FoldPrep, build_fold_network, fold_prep, predicted_frames
from pipeline.jobs.network import TrainedFold
from pipeline.models.network import model_inputs
from pipeline.prediction_state import predict_keys, prediction_hash
from pipeline.runs import FULL_FIT, PREDICTION_FILES, fold_dir
from pipeline.tta import reduce_predictions, tta_transforms


def predict_fold(
    cfg: ExperimentConfig, comp: Competition, folds: np.ndarray, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any, trained: TrainedFold | None = None,
    parts: Collection[str] | None = None,
) -> None:
    """Predict the held-out rows and the test set with the fold's best weights and TTA.

    Writes ``oof.parquet`` and ``test.parquet`` (the transforms merged by the configured
    reduction) and ``tta_oof.parquet``/``tta_test.parquet`` with every transform's
    predictions; the train rows kept without a target get ``unlabelled.parquet`` the same
    way (:func:`predicted_frames`). With snapshots, every prediction is the mean over the
    fold's snapshot checkpoints. ``trained``: the fold's network as its fit just left it in
    this process; it predicts in place, and the held-out rows' untransformed outputs are its
    last validation's (the same weights, rows and batches: the same numbers). ``parts``: the
    rows to predict (``oof``, ``test``, ``unlabelled``; default all), the others' files kept
    (:func:`pipeline.prediction_state.stale_parts`).
    """
    out = fold_dir(cfg, seed, fold)
    task = cfg.competition.task
    if trained is None:
        trainer, prep, inputs, checkpoints = _load_fold(cfg, comp, out, seed, fold,
                                                        accelerator, tokenizer)
    else:
        trainer, prep, inputs, checkpoints = trained.trainer, trained.prep, trained.inputs, [None]
    batch_size = cfg.predict.batch_size or eval_batch_size(cfg.train.batch_size)
    id_col, cols = cfg.competition.id_column, comp.pred_columns
    valid_rows = None if fold == FULL_FIT else np.flatnonzero(folds == fold)
    frames = {part: frame for part, frame in predicted_frames(comp, valid_rows).items()
              if parts is None or part in parts}
    transforms = tta_transforms(cfg.predict.tta)
    known = {("oof", "none"): trained.oof_outputs} if trained is not None else {}
    loaders = {
        (part, name): build_fold_loader(
            CompetitionDataset(frame, dataclasses.replace(inputs, **tta.inputs)), batch_size,
            False, cfg.train.num_workers, None, cfg.train.loader, accelerator.device)
        for part, frame in frames.items() for name, tta in transforms
        if (part, name) not in known
    }
    sums: dict[tuple[str, str], np.ndarray] = {}
    member_sums: dict[tuple[str, str, int], np.ndarray] = {}
    for checkpoint in checkpoints:  # snapshot ensembles average their members' predictions
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
            trainer.unwrapped.load_state_dict(state)
        for part in frames:
            for name, tta in transforms:
                raw = (known[part, name] if (part, name) in known
                       else trainer.predict(loaders[part, name], tta.batch))
                pred, members = split_members(raw, lambda r: prep.predictions(task, r))
                sums[part, name] = sums.get((part, name), 0) + pred / len(checkpoints)
                for m, member in enumerate(members):
                    key = (part, name, m)
                    member_sums[key] = member_sums.get(key, 0) + member / len(checkpoints)
    if not is_main():  # every rank holds the gathered predictions; rank 0 writes them
        accelerator.free_memory()
        return
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
        merged = reduce_predictions(stack, cfg.predict.tta_reduce, task)
        n_members = len({m for _, _, m in member_sums})
        if n_members:  # each member's TTA merged alone; the fold predicts their mean
            merged_members = [reduce_predictions(
                np.stack([member_sums[part, name, m] for name, _ in transforms]),
                cfg.predict.tta_reduce, task) for m in range(n_members)]
            for m, values in enumerate(merged_members):
                member_table = pd.DataFrame(values, columns=cols)
                member_table.insert(0, id_col, ids)
                write_parquet(out / f"member{m}_{part}.parquet", member_table)
            merged = np.mean(merged_members, axis=0)
        table = pd.DataFrame(merged, columns=cols)
        table.insert(0, id_col, ids)
        write_parquet(out / f"{part}.parquet", table)
    write_json(out / "predictions.json", {"hash": prediction_hash(cfg), "tta": cfg.predict.tta,
                                          "predict": predict_keys(cfg),
                                          "data": data_digests(cfg),
                                          "files": file_digests(out, PREDICTION_FILES)})
    accelerator.free_memory()


def _load_fold(
    cfg: ExperimentConfig, comp: Competition, out: Path, seed: int, fold: int,
    accelerator: Accelerator, tokenizer: Any,
) -> tuple[Trainer, FoldPrep, ModelInputs, list[Path]]:
    """The fold's network rebuilt (weights loaded per checkpoint), its preprocessing, its
    inputs and its checkpoints: best.pt, or the snapshots."""
    checkpoints = snapshot_paths(out) if cfg.train.snapshots else [out / "best.pt"]
    if not checkpoints or not checkpoints[0].is_file():
        raise DataError(f"no checkpoint in {out}: train seed {seed} fold {fold} first")
    prep = fold_prep(out)
    model = build_fold_network(cfg, comp, prep.tabular, seed)
    inputs = model_inputs(comp, cfg.model, tokenizer, prep.tabular)
    if cfg.train.compile:
        model.compile()
    if isinstance(model, MemberEnsemble):
        model.stacked = True  # every member's outputs, each written as a member of its own
    trainer = Trainer(model, accelerator, channels_last=cfg.train.channels_last)
    return trainer, prep, inputs, checkpoints

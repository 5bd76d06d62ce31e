"""What a task's model outputs and its artifacts hold: the output width, the output transform,
the prediction columns and the targets in the metrics layout.

A multilabel task comes in two shapes: one 0/1 column per label, or one column of labels
separated by spaces (Kaggle's Planet and Human Protein Atlas: ``tags`` = "haze primary") or by
another character (Freesound's ``labels`` = "Bark,Dog", genres as "Comedy|Drama"). The
second is read into one 0/1 column per label, named by the label (its ``classes``), so every
part past the loader sees the first shape.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

__all__ = ["Outputs", "encode_targets", "n_outputs", "prediction_columns", "probabilities",
           "split_tags", "tag_separator", "tag_vocabulary", "to_predictions"]

WHITESPACE = " "  # a separator of one or more spaces or tabs; joined by one space
# the characters a tags column may join its labels with instead (each label written as is)
TAG_SEPARATORS = (",", "|", ";")


def tag_separator(values: pd.Series, given: str | None) -> str:
    """The separator of a tags column: ``given`` ('competition.label_separator'), else the
    one of :data:`TAG_SEPARATORS` its cells hold, when exactly one occurs (labels may then
    hold spaces: "Drum kit,Bass guitar"), else whitespace."""
    if given is not None:
        return given if given.strip() else WHITESPACE
    text = values.astype(str)
    found = [s for s in TAG_SEPARATORS if text.str.contains(s, regex=False).any()]
    return found[0] if len(found) == 1 else WHITESPACE


def split_tags(values: pd.Series, separator: str = WHITESPACE) -> list[list[str]]:
    """Each cell's labels: its text split on ``separator``, each label stripped (an integer
    cell is one label; an empty piece, of "a,,b" or a trailing separator, is none)."""
    if separator == WHITESPACE:
        return [str(v).split() for v in values]
    return [[t for t in (p.strip() for p in str(v).split(separator)) if t] for v in values]


def tag_vocabulary(tags: list[list[str]]) -> list[str]:
    """The labels of a tags column, sorted: as numbers when all are integers (Human Protein
    Atlas's 0..27: 2 before 10), else as text."""
    labels = {t for row in tags for t in row}
    if all(t.lstrip("-").isdigit() for t in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def n_outputs(task: str, target_columns: list[str], classes: list[Any]) -> int:
    """Width of a network's output: one per class (multiclass) or label of a tags column
    (multilabel), 1 for binary, else one per target column."""
    if task == "multiclass" or (task == "multilabel" and classes):
        return len(classes)
    return 1 if task == "binary" else len(target_columns)


Outputs = TypeVar("Outputs", np.ndarray, torch.Tensor)


def probabilities(task: str, outputs: Outputs) -> Outputs:
    """The task's output transform, the one place it is written: softmax over classes
    (multiclass), sigmoid per cell (binary, multilabel), the values themselves (regression).

    NumPy arrays (predictions written to disk) and torch tensors (losses inside a training
    step, in float32) alike.
    """
    if isinstance(outputs, torch.Tensor):
        logits = outputs.float()
        if task == "multiclass":
            return logits.softmax(dim=1)
        return logits.sigmoid() if task in ("binary", "multilabel") else logits
    if task == "multiclass":
        e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if task in ("binary", "multilabel"):
        return 1.0 / (1.0 + np.exp(-outputs))
    return outputs


def to_predictions(task: str, outputs: np.ndarray, target_mean: list[float],
                   target_std: list[float]) -> np.ndarray:
    """Network outputs -> artifact predictions: probabilities, or regression values with
    the fold's target standardisation undone."""
    if task == "regression":
        return outputs * np.array(target_std) + np.array(target_mean)
    return probabilities(task, outputs)


def prediction_columns(task: str, target_columns: list[str], classes: list[Any]) -> list[str]:
    """One column per class (multiclass) or label of a tags column (multilabel), else one
    per target column."""
    if task == "multiclass" or (task == "multilabel" and classes):
        return [str(c) for c in classes]
    return list(target_columns)


def encode_targets(
    frame: pd.DataFrame, task: str, target_columns: list[str], classes: list[Any],
    separator: str = WHITESPACE,
) -> np.ndarray:
    """Targets in the metrics layout: class indices (multiclass) or an (n, k) float matrix
    (a tags column: one 0/1 column per label, in ``classes`` order, split on ``separator``)."""
    if task == "multiclass":
        index = {c: i for i, c in enumerate(classes)}
        return frame[target_columns[0]].map(index).to_numpy(dtype=np.int64)
    if task == "binary":
        return (frame[target_columns[0]] == classes[1]).to_numpy(dtype=np.float64)[:, None]
    if task == "multilabel" and classes:
        index = {str(c): j for j, c in enumerate(classes)}
        hot = np.zeros((len(frame), len(classes)), dtype=np.float64)
        for i, row in enumerate(split_tags(frame[target_columns[0]], separator)):
            hot[i, [index[t] for t in row]] = 1.0
        return hot
    return frame[target_columns].to_numpy(dtype=np.float64)

"""Datasets and loaders for every modality: images, text, tabular features, or a mix.

A batch is a dict of tensors; each encoder reads its own keys (``image``; ``input_ids`` and
``attention_mask``; ``num`` and ``cat``) and the loss reads ``target``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.competition import Competition

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TabularEncoder:
    """Numeric scaling and category vocabularies, fitted on the training rows of a fold.

    Numbers: median fill, standardisation, and a missing-value indicator for each column with
    NaN in training. Categories: index 0 is unseen or missing, 1.. the training values.
    """

    numeric: list[str]
    categorical: list[str]
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    nan_columns: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        """Learn fills, scales and vocabularies from ``frame``."""
        for col in self.numeric:
            values = pd.to_numeric(frame[col], errors="coerce").astype(float)
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            self.medians[col] = median
            self.means[col] = float(filled.mean())
            self.stds[col] = float(filled.std(ddof=0)) or 1.0
            if values.isna().any():
                self.nan_columns.append(col)
        for col in self.categorical:
            self.vocab[col] = sorted(frame[col].dropna().astype(str).unique().tolist())
        return self

    @property
    def n_numeric(self) -> int:
        """Width of the ``num`` input."""
        return len(self.numeric) + len(self.nan_columns)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes of the ``cat`` input (unknown index included)."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def transform(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """``num`` (float32) and ``cat`` (int64) arrays for ``frame``."""
        num = [
            (pd.to_numeric(frame[c], errors="coerce").astype(float).fillna(self.medians[c])
             - self.means[c]) / self.stds[c]
            for c in self.numeric
        ]
        num += [frame[c].isna().astype(float) for c in self.nan_columns]
        cat = []
        for col in self.categorical:
            index = {v: i + 1 for i, v in enumerate(self.vocab[col])}
            cat.append(frame[col].astype(str).map(index).fillna(0).astype(np.int64))
        n = len(frame)
        return {
            "num": (np.stack(num, axis=1).astype(np.float32) if num
                    else np.zeros((n, 0), np.float32)),
            "cat": np.stack(cat, axis=1).astype(np.int64) if cat else np.zeros((n, 0), np.int64),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints."""
        return dict(self.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TabularEncoder:
        """Inverse of :meth:`state_dict`."""
        return cls(**state)


def image_transform(size: int) -> A.Compose:
    """Resize to a square and normalise with ImageNet statistics."""
    return A.Compose([A.Resize(size, size), A.Normalize(IMAGENET_MEAN, IMAGENET_STD), ToTensorV2()])


class CompetitionDataset(Dataset[dict[str, torch.Tensor]]):
    """Rows of a competition frame as dicts of tensors for the encoders that need them."""

    def __init__(
        self,
        frame: pd.DataFrame,
        inputs: ModelInputs,
        targets: np.ndarray | None = None,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.images: list[Path] = []
        if inputs.image_size:
            root = inputs.image_root
            self.images = [root / str(p) for p in frame[inputs.image_column]]
            self.transform = image_transform(inputs.image_size)
        self.tokens: dict[str, list[list[int]]] = {}
        if inputs.tokenizer is not None:
            texts = [frame[c].fillna("").astype(str).tolist() for c in inputs.text_columns]
            pair = texts[1] if len(texts) == 2 else None
            first = texts[0] if len(texts) <= 2 else [
                f" {inputs.tokenizer.sep_token} ".join(parts) for parts in zip(*texts, strict=True)
            ]
            enc = inputs.tokenizer(first, pair, truncation=True, max_length=inputs.max_length)
            self.tokens = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        self.tabular = inputs.tabular.transform(frame) if inputs.tabular is not None else None
        self.length = len(frame)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item: dict[str, torch.Tensor] = {}
        if self.images:
            with Image.open(self.images[i]) as img:
                pixels = np.asarray(img.convert("RGB"))
            item["image"] = self.transform(image=pixels)["image"]
        for key, values in self.tokens.items():
            item[key] = torch.tensor(values[i], dtype=torch.long)
        if self.tabular is not None:
            item["num"] = torch.from_numpy(self.tabular["num"][i])
            item["cat"] = torch.from_numpy(self.tabular["cat"][i])
        if self.targets is not None:
            item["target"] = torch.as_tensor(self.targets[i])
        return item


@dataclass
class ModelInputs:
    """What the model's encoders read, and how to make it from a frame."""

    image_root: Path = Path(".")
    image_column: str | None = None
    image_size: int = 0  # 0: no image input
    text_columns: list[str] = field(default_factory=list)
    tokenizer: Any = None  # a transformers tokenizer, or None: no text input
    max_length: int = 256
    tabular: TabularEncoder | None = None


def collate(items: list[dict[str, torch.Tensor]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack items; token sequences are right-padded to the longest in the batch."""
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key in ("input_ids", "attention_mask"):
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True,
                                                         padding_value=fill)
        else:
            batch[key] = torch.stack(values)
    return batch


def build_loader(
    dataset: CompetitionDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    generator: torch.Generator | None = None,
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader with the padding collate; shuffled loaders draw order from ``generator``."""
    tok = dataset.inputs.tokenizer
    pad_id = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, pad_id=pad_id),
        generator=generator,
        drop_last=False,
        persistent_workers=False,
    )


def model_inputs(comp: Competition, model_cfg: Any, tokenizer: Any,
                 tabular: TabularEncoder | None) -> ModelInputs:
    """The inputs the configured encoders need."""
    kinds = {e.kind for e in model_cfg.encoders}
    cfg = comp.cfg
    return ModelInputs(
        image_root=Path(cfg.dir),
        image_column=cfg.image_column,
        image_size=model_cfg.image_size if "timm" in kinds else 0,
        text_columns=list(cfg.text_columns),
        tokenizer=tokenizer if "hf" in kinds else None,
        max_length=model_cfg.max_length,
        tabular=tabular if "mlp" in kinds else None,
    )

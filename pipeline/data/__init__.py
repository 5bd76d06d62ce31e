"""Data parts: tabular encoding, datasets and loaders for every modality, augmentation, fold
splitting and pseudo-label selection. Nothing here knows about models or training."""

from __future__ import annotations

from pipeline.data.augment import AugmentConfig, TabularNoiseConfig, TextNoiseConfig
from pipeline.data.batching import collate
from pipeline.data.datasets import (
    Batch,
    CombinedDataset,
    CompetitionDataset,
    ModelInputs,
    ViewsDataset,
    build_loader,
    view_of,
)
from pipeline.data.tabular import TabularEncoder
from pipeline.data.text_tokens import encode_rows, encode_texts

__all__ = [
    "AugmentConfig",
    "Batch",
    "CombinedDataset",
    "CompetitionDataset",
    "ModelInputs",
    "TabularEncoder",
    "TabularNoiseConfig",
    "TextNoiseConfig",
    "ViewsDataset",
    "build_loader",
    "collate",
    "encode_rows",
    "encode_texts",
    "view_of",
]

"""Models: encoders by kind (timm, transformers, MLP, scikit-learn), the network that
concatenates them under one head, and each one's config."""

from __future__ import annotations

from pipeline.models.encoders import (
    ENCODERS,
    EncoderConfig,
    EncoderKind,
    HFEncoder,
    MLPEncoder,
    TimmEncoder,
)
from pipeline.models.network import (
    CompetitionModel,
    HeadConfig,
    ModelConfig,
    build_model,
    build_tokenizer,
    embedding_noise,
    model_inputs,
)

__all__ = [
    "ENCODERS",
    "CompetitionModel",
    "EncoderConfig",
    "EncoderKind",
    "HFEncoder",
    "HeadConfig",
    "MLPEncoder",
    "ModelConfig",
    "TimmEncoder",
    "build_model",
    "build_tokenizer",
    "embedding_noise",
    "model_inputs",
]

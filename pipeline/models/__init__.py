"""Models: encoders by kind (timm, transformers, MLP; scikit-learn, LightGBM, XGBoost and
CatBoost as whole models), the network that concatenates them under one head, and each
one's config."""

from __future__ import annotations

from pipeline.models.encoders import (
    ENCODERS,
    EncoderConfig,
    EncoderKind,
    HFEncoder,
    MLPEncoder,
    TimmEncoder,
)
from pipeline.models.gbdt import LIBRARIES as GBDT_LIBRARIES
from pipeline.models.gbdt import GBDTModel, GBDTSettings, TreeFeatures, gbdt_settings
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
    "GBDT_LIBRARIES",
    "CompetitionModel",
    "EncoderConfig",
    "EncoderKind",
    "GBDTModel",
    "GBDTSettings",
    "HFEncoder",
    "HeadConfig",
    "MLPEncoder",
    "ModelConfig",
    "TimmEncoder",
    "TreeFeatures",
    "build_model",
    "build_tokenizer",
    "embedding_noise",
    "gbdt_settings",
    "model_inputs",
]

"""The strong view of an unlabelled row, as FixMatch and UDA configure it
(``train.consistency.strong``)."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from pipeline.data.augment import TabularNoiseConfig, TextNoiseConfig, build_image_augment
from pipeline.schema import Section

__all__ = ["StrongAugmentConfig"]


class StrongAugmentConfig(Section):
    """The strong view of an unlabelled row (FixMatch, UDA): ``image`` albumentations
    transforms (None: RandAugment-like, :data:`pipeline.data.augment.STRONG_IMAGE`), ``text``
    token noise, ``tabular`` swap/Gaussian noise on rows."""

    image: list[dict[str, Any]] | None = None
    text: TextNoiseConfig = TextNoiseConfig(mask=0.15, delete=0.05, swap=0.05)
    tabular: TabularNoiseConfig = TabularNoiseConfig()

    @field_validator("image")
    @classmethod
    def _albumentations(cls, items: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if items is not None:
            build_image_augment(items)
        return items

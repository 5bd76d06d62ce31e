"""The input size of timm models built for one image size (ViT, DeiT, Swin, BEiT, EVA,
MaxViT, CoAtNet, LeViT: their position tables and windows are made for one size)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.models.encoders import EncoderConfig


def sized_for(enc: EncoderConfig, image_size: int) -> EncoderConfig:
    """``enc`` with ``params.img_size: image_size`` where it is a timm model of a fixed input
    size other than ``image_size`` and its params name none. Built at its own size (224 for
    vit_tiny_patch16_224), such a model refused every batch of another 'model.image_size'
    with an AssertionError traceback in fold 0; built at the run's size it reads them, and
    its pretrained weights' position table is resampled to it as timm loads them."""
    if image_size <= 0 or enc.kind != "timm" or "img_size" in enc.params:
        return enc
    from timm.models import get_pretrained_cfg

    pretrained = get_pretrained_cfg(enc.target)
    if pretrained is None or not getattr(pretrained, "fixed_input_size", False):
        return enc
    if tuple(pretrained.input_size[1:]) == (image_size, image_size):
        return enc
    resolved = enc.resolved()
    return resolved.model_copy(update={"params": {**resolved.params, "img_size": image_size}})

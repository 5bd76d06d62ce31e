"""Masked-image modelling for timm Vision Transformers (SimMIM, Xie et al. 2022): a random
share of the patches is replaced by a learned mask token and a one-layer head reconstructs
their pixels from the encoder's output tokens (L1 loss on the masked patches only).

SimMIM's finding is that this simple recipe (random masking, a linear head, raw pixels)
matches heavier ones. Masks here are one model patch each (SimMIM masks 32 px blocks; at
competition image sizes a patch is already a large share of the image). Only the ViT is
kept, as a timm state dict like :mod:`pipeline.pretrain.simclr` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pipeline.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData
from pipeline.pretrain.simclr import (
    WEIGHTS_FILE,
    ImageRefineConfig,
    Views,
    fit_images,
    image_features,
    image_paths,
)
from pipeline.schema import Section

if TYPE_CHECKING:
    import albumentations as A


class MaskedImageConfig(ImageRefineConfig):
    """SimMIM refinement of a timm Vision Transformer: reconstruct masked patches."""

    kind: Literal["masked_image"] = "masked_image"
    mask_ratio: float = Field(0.6, gt=0, lt=1)  # SimMIM's best share at 32 px masks
    crop_scale: tuple[float, float] = (0.67, 1.0)  # SimMIM's mild crops

    @model_validator(mode="after")
    def _vit(self) -> MaskedImageConfig:
        import timm
        from timm.models.vision_transformer import VisionTransformer

        body = timm.create_model(self.arch, pretrained=False, num_classes=0, **self.params)
        if not isinstance(body, VisionTransformer):
            raise ValueError(f"'arch' of masked_image must be a timm VisionTransformer (vit_*, "
                             f"deit_*, ...). Got {self.arch!r} ({type(body).__name__}); "
                             "use simclr for other encoders")
        patch = int(body.patch_embed.patch_size[0])
        if self.image_size % patch:
            raise ValueError(f"'image_size' must be a multiple of {self.arch}'s {patch} px "
                             f"patches. Got {self.image_size}")
        size = tuple(body.patch_embed.img_size or ())
        if not body.dynamic_img_size and size != (self.image_size, self.image_size):
            raise ValueError(f"'image_size' {self.image_size} differs from {self.arch}'s "
                             f"{size}: set params: {{img_size: {self.image_size}}} (and the "
                             "same in the training config)")
        return self


def mim_transform(cfg: MaskedImageConfig) -> A.Compose:
    """Mild crops and flips, then ImageNet normalisation."""
    import albumentations as A  # here: importing the stage never imports it
    from albumentations.pytorch import ToTensorV2

    return A.Compose([
        A.RandomResizedCrop((cfg.image_size, cfg.image_size), scale=cfg.crop_scale),
        A.HorizontalFlip(p=0.5),
        A.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ToTensorV2(),
    ], seed=0)


class MaskedImageModel(nn.Module):
    """A timm ViT (inside a :class:`~pipeline.models.encoders.TimmEncoder`), a mask token
    and the linear pixel head."""

    def __init__(self, cfg: MaskedImageConfig) -> None:
        super().__init__()
        self.encoder = cfg.encoder()
        vit = self.encoder.body
        self.patch = int(vit.patch_embed.patch_size[0])
        self.mask_ratio = cfg.mask_ratio
        self.mask_token = nn.Parameter(torch.zeros(vit.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(vit.embed_dim, self.patch * self.patch * 3)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """L1 reconstruction loss of the masked patches of ``(batch, 1, 3, S, S)`` images."""
        image = views[:, 0]
        enc, vit = self.encoder, self.encoder.body
        x = image * enc.input_scale + enc.input_shift if enc.renormalise else image
        tokens = vit.patch_embed(x)  # (B, N, D), or (B, H, W, D) with dynamic image sizes
        grid = tokens.shape[:-1]
        mask = torch.rand(grid, device=tokens.device) < self.mask_ratio  # global generator
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        # the rest of timm's forward_features, step by step (masking sits before positions)
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))
        tokens = vit.norm(vit.blocks(tokens))[:, vit.num_prefix_tokens:]
        pred = self.head(tokens)  # (B, N, p*p*3)
        target = F.unfold(image, self.patch, stride=self.patch).transpose(1, 2)  # (B, N, p*p*3)
        masked = mask.reshape(len(image), -1)
        if not masked.any():  # a draw with nothing masked: nothing to reconstruct
            return pred.sum() * 0.0
        return F.l1_loss(pred[masked].float(), target[masked].float())


def fit_masked_image(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
                     seed: int) -> dict[str, Any]:
    """Refine a timm ViT by masked-image modelling on the rows' images; save its state dict
    as ``out_dir / model.pth``."""
    assert isinstance(cfg, MaskedImageConfig)
    paths = image_paths(data, cfg.kind)
    torch.manual_seed(seed)  # mask token and head drawn the same way on every run
    model = MaskedImageModel(cfg).to(device)
    views = Views(paths, mim_transform(cfg), seed, n_views=1)
    losses = fit_images(cfg, model, model, views, device, out_dir, seed)
    return {"losses": losses, "rows": len(paths), "arch": cfg.arch, "params": cfg.params,
            "weights": WEIGHTS_FILE}


OBJECTIVES.add("masked_image", Objective(MaskedImageConfig, "image", fit_masked_image, "timm",
                                         image_features),
               "SimMIM masked-image modelling refinement of a timm Vision Transformer")

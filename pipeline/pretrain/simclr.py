"""SimCLR (Chen et al. 2020): self-supervised refinement of a timm encoder on the
competition's images, train and test alike.

Two random views of each image (albumentations: resized crop, flip, colour jitter, grey) go
through the encoder and a small projection head; the NT-Xent loss pulls each image's two
views together and pushes the other images of the batch away. NT-Xent is the supervised
contrastive loss of :mod:`pipeline.engine.contrastive` with each image its own class.
Only the encoder is kept: its state dict, loadable as a timm encoder's local weights
(``{name: "timm:<arch>", pretrained: <folder>/model.pth}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.artifacts import atomic_path
from pipeline.competition import IMAGE_PATH
from pipeline.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from pipeline.data.decoded import decode_rgb
from pipeline.engine.contrastive import supervised_contrastive
from pipeline.errors import ConfigError
from pipeline.models.encoders import EncoderConfig, TimmEncoder
from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData, fit_epochs
from pipeline.pretrain.masked_lm import autocast
from pipeline.schema import Section

if TYPE_CHECKING:
    import albumentations as A

WEIGHTS_FILE = "model.pth"  # the encoder's state dict inside the output folder


class ImageRefineConfig(Section):
    """Settings every image refinement objective shares: the timm encoder and its training."""

    arch: str  # a timm architecture, e.g. resnet18
    weights: str | None = None  # local weights file to start from (None: random init)
    params: dict[str, Any] = Field(default_factory=dict)  # passed to timm.create_model
    image_size: int = Field(224, ge=8)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(3e-4, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # share of the image a crop keeps
    num_workers: int = Field(0, ge=0)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        import timm

        if not timm.is_model(arch):
            raise ValueError(f"'arch' must be a timm architecture (e.g. resnet18). Got {arch!r}")
        return arch

    @model_validator(mode="after")
    def _check(self) -> ImageRefineConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"'crop_scale' must be (low, high) with 0 < low <= high <= 1. "
                             f"Got {self.crop_scale}")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"'weights' must be a local weights file. Got {self.weights!r}, "
                             "which is not a file")
        return self

    def encoder(self) -> TimmEncoder:
        """The timm encoder to refine, built as a training config's would be."""
        return TimmEncoder(EncoderConfig(name=f"timm:{self.arch}", pretrained=self.weights,
                                         params=self.params))


class SimCLRConfig(ImageRefineConfig):
    """Contrastive refinement of a timm encoder on two augmented views of every image."""

    kind: Literal["simclr"] = "simclr"
    # batch_size: the other images of a batch are each image's negatives
    temperature: float = Field(0.2, gt=0)
    projection_dim: int = Field(128, ge=2)
    color_jitter: float = Field(0.4, ge=0)  # strength of brightness/contrast/saturation


def view_transform(cfg: SimCLRConfig) -> A.Compose:
    """SimCLR's augmentations (without blur: competition images are often small), then
    ImageNet normalisation as the training data gets."""
    import albumentations as A  # here: importing the stage never imports it
    from albumentations.pytorch import ToTensorV2

    s = cfg.color_jitter
    return A.Compose([
        A.RandomResizedCrop((cfg.image_size, cfg.image_size), scale=cfg.crop_scale),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s,
                      p=0.8),
        A.ToGray(p=0.2),
        A.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ToTensorV2(),
    ], seed=0)


class Views(Dataset[torch.Tensor]):
    """``n_views`` augmented views of each image, stacked ``(n_views, 3, S, S)``.

    Each item's draws are seeded by (run seed, epoch, row): the same views in a resumed
    run, with or without loader workers.
    """

    def __init__(self, paths: list[Path], transform: A.Compose, seed: int,
                 n_views: int = 2) -> None:
        self.paths, self.transform, self.seed, self.n_views = paths, transform, seed, n_views
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        seq = np.random.SeedSequence([self.seed, self.epoch, i])
        self.transform.set_random_seed(int(seq.generate_state(1)[0]))
        pixels = decode_rgb(self.paths[i])
        return torch.stack([self.transform(image=pixels)["image"]
                            for _ in range(self.n_views)])


class SimCLR(nn.Module):
    """A timm encoder and the projection head the loss is computed on."""

    def __init__(self, cfg: SimCLRConfig) -> None:
        super().__init__()
        self.encoder = cfg.encoder()
        width = self.encoder.out_dim
        # the loss acts on the projection; the features before it keep more of the image
        # (SimCLR's finding), and only they are kept
        self.projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                       nn.Linear(width, cfg.projection_dim))

    def forward(self, views: torch.Tensor, temperature: float) -> torch.Tensor:
        """NT-Xent loss of a batch of view pairs ``(batch, 2, 3, S, S)``."""
        n = views.shape[0]
        images = views.transpose(0, 1).reshape(2 * n, *views.shape[2:])  # view 1s, view 2s
        z = self.projector(self.encoder({"image": images}))
        rows = torch.arange(n, device=views.device).repeat(2)  # each image is its own class
        return supervised_contrastive(z, rows, temperature)


def image_paths(data: PretrainData, kind: str) -> list[Path]:
    """The image file of every row that has one."""
    if IMAGE_PATH not in data.frame.columns:
        raise ConfigError(f"pretrain objective {kind!r} needs images: set "
                          "'competition.image_column', 'competition.image_path' or "
                          "'competition.pixels'")
    paths = [data.comp.dir / str(p) for p in data.frame[IMAGE_PATH].dropna()]
    if len(paths) < 2:
        raise ConfigError(f"pretrain objective {kind!r} needs at least 2 images; found "
                          f"{len(paths)}")
    return paths


def fit_images(cfg: ImageRefineConfig, model: nn.Module,
               step_loss: Callable[[torch.Tensor], torch.Tensor], views: Views,
               device: torch.device, out_dir: Path, seed: int) -> list[float]:
    """Train ``model`` on ``step_loss`` of batches of ``views`` (AdamW, cosine decay per
    step), resumably; then save ``model.encoder``'s timm body as ``out_dir / model.pth``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(views) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, per_epoch * cfg.epochs)

    def run_epoch(epoch: int) -> float:
        views.epoch = epoch
        order = torch.randperm(len(views)).tolist()  # global generator: restored on resume
        loader = DataLoader(views, batch_size=cfg.batch_size, sampler=order,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        losses = []
        for batch in loader:
            with autocast(device):
                loss = step_loss(batch.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        return sum(losses) / len(losses)

    losses = fit_epochs(model, optimizer, cfg.epochs, run_epoch, out_dir, seed,
                        scheduler=scheduler)
    encoder = model.encoder
    assert isinstance(encoder, TimmEncoder)
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        torch.save(encoder.body.state_dict(), tmp)
    return losses


def fit_simclr(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
               seed: int) -> dict[str, Any]:
    """Refine a timm encoder with SimCLR on the rows' images; save its state dict as
    ``out_dir / model.pth``."""
    assert isinstance(cfg, SimCLRConfig)
    paths = image_paths(data, cfg.kind)
    torch.manual_seed(seed)  # the projection head is drawn the same way on every run
    model = SimCLR(cfg).to(device)
    views = Views(paths, view_transform(cfg), seed, n_views=2)
    losses = fit_images(cfg, model, lambda batch: model(batch, cfg.temperature), views,
                        device, out_dir, seed)
    return {"losses": losses, "rows": len(paths), "arch": cfg.arch, "params": cfg.params,
            "weights": WEIGHTS_FILE}


def image_features(folder: Path, frame: pd.DataFrame, device: torch.device) -> np.ndarray:
    """The refined encoder's pooled features of each row's image ``(rows, width)``, at the
    pretraining's size (from the folder's config.yaml), for scikit-learn and GBDT members."""
    import yaml

    from pipeline.data.datasets import image_transform

    cfg = yaml.safe_load((Path(folder) / "config.yaml").read_text())
    objective, root = cfg["objective"], Path(cfg["competition"]["dir"])
    encoder = TimmEncoder(EncoderConfig(
        name=f"timm:{objective['arch']}", pretrained=str(Path(folder) / WEIGHTS_FILE),
        params=objective["params"])).to(device).eval()
    transform = image_transform(objective["image_size"])
    paths = [root / str(p) for p in frame[IMAGE_PATH]]
    out = []
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(paths), 64):
            images = torch.stack([transform(image=decode_rgb(p))["image"]
                                  for p in paths[start:start + 64]])
            out.append(encoder({"image": images.to(device)}).float().cpu())
    return torch.cat(out).numpy()


OBJECTIVES.add("simclr", Objective(SimCLRConfig, "image", fit_simclr, "timm", image_features),
               "SimCLR contrastive refinement of a timm encoder on the competition's images")

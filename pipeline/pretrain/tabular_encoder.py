"""A pretrained tabular encoder (DAE or VAE) as a network encoder: ``{name:
"pretrained:<name>"}`` in a training config, alone or beside other encoders, fine-tuned at its
own ``lr`` (or frozen with ``params: {freeze: true}``).

It reads the fold's ``num``/``cat`` batch like the ``mlp`` encoder and maps it back into the
space it was pretrained in (:class:`~pipeline.pretrain._tabular.FoldAdapter`), so the data
pipeline needs nothing of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.data.tabular import TabularEncoder
from pipeline.engine.plan import ALWAYS_FROZEN
from pipeline.errors import ConfigError
from pipeline.pretrain._tabular import ENCODER_FILE, FoldAdapter, load_tabular

PARAMS = ("freeze",)


class PretrainedTabular(nn.Module):
    """The pretrained features (DAE: hidden activations; VAE: posterior means) of a batch."""

    def __init__(self, folder: Path, fold: TabularEncoder, params: dict[str, Any]) -> None:
        super().__init__()
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise ConfigError(f"encoder 'pretrained:{folder.name}': unknown params {unknown}. "
                              f"Known: {', '.join(PARAMS)}")
        if not (folder / ENCODER_FILE).is_file():
            raise ConfigError(f"encoder 'pretrained:{folder.name}': {folder / ENCODER_FILE} "
                              "not found; its objective is not a tabular one")
        self.model, space = load_tabular(folder)
        for unused in ("head", "decoder"):  # the reconstruction side: no gradient reaches it
            if hasattr(self.model, unused):
                delattr(self.model, unused)
        self.adapter = FoldAdapter(space, fold)
        self.out_dim = int(self.model.out_dim)
        if params.get("freeze", False):  # every stage's freezing keeps it (train.freeze too)
            self.model.requires_grad_(False)
            setattr(self.model, ALWAYS_FROZEN, True)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raw, codes = self.adapter(batch["num"], batch["cat"])
        return self.model.features(raw, codes)  # type: ignore[operator]

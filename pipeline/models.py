"""Encoders (timm, transformers, tabular MLP), the head, and their concatenation.

Every encoder maps a batch dict to pooled features ``(batch, out_dim)``; a model
concatenates the features of all its encoders and puts one head on top.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from pipeline.config import EncoderConfig, ModelConfig
from pipeline.data import TabularEncoder
from pipeline.errors import ConfigError
from pipeline.registry import Registry

Batch = dict[str, torch.Tensor]
ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")


class TimmEncoder(nn.Module):
    """Any timm model by name, without its classifier; weights only from a local file."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        weights = cfg.pretrained if isinstance(cfg.pretrained, str) else None
        if cfg.pretrained is True:
            raise ConfigError(
                f"encoder {cfg.name!r}: 'pretrained: true' would download weights; give the "
                "path of a local weights file instead (e.g. from a Kaggle dataset)"
            )
        if weights is not None and not Path(weights).is_file():
            raise ConfigError(f"encoder {cfg.name!r}: weights file {weights} not found")
        kwargs: dict[str, Any] = {"num_classes": 0, **cfg.params}
        if weights is not None:
            kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
        try:
            self.body = timm.create_model(cfg.target, **kwargs)
        except RuntimeError as err:
            if "Unknown model" not in str(err):
                raise
            raise ConfigError(f"encoder {cfg.name!r}: {err}") from None
        self.out_dim = int(self.body.num_features)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.body(batch["image"])


class HFEncoder(nn.Module):
    """A transformers encoder from a local directory or a config, mean-pooled over tokens."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if cfg.target:
            if not Path(cfg.target).is_dir():
                raise ConfigError(f"encoder {cfg.name!r}: directory {cfg.target} not found")
            if cfg.pretrained is False:
                config = AutoConfig.from_pretrained(cfg.target, **cfg.params)
                self.body = AutoModel.from_config(config)
            else:
                self.body = AutoModel.from_pretrained(cfg.target, **cfg.params)
        else:
            hf = dict(cfg.hf_config or {})
            self.body = AutoModel.from_config(AutoConfig.for_model(hf.pop("model_type"), **hf))
        self.out_dim = int(self.body.config.hidden_size)

    def forward(self, batch: Batch) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden = self.body(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MLPEncoder(nn.Module):
    """Numeric features plus one embedding per categorical column, through an MLP."""

    def __init__(self, cfg: EncoderConfig, tabular: TabularEncoder) -> None:
        super().__init__()
        params = {"hidden": [256, 128], "dropout": 0.1, "embedding_noise": 0.0, **cfg.params}
        unknown = set(params) - {"hidden", "dropout", "embedding_noise"}
        if unknown:
            raise ConfigError(
                f"encoder 'mlp': unknown params {sorted(unknown)}. "
                "Known: hidden, dropout, embedding_noise"
            )
        self.embedding_noise = float(params["embedding_noise"])
        self.view_noise = 0.0  # set by :func:`embedding_noise`
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, min(32, (card + 1) // 2 + 1)) for card in tabular.cardinalities
        )
        width = tabular.n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for size in params["hidden"]:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.SiLU(),
                       nn.Dropout(params["dropout"])]
            width = size
        self.mlp = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, batch: Batch) -> torch.Tensor:
        embedded = [emb(batch["cat"][:, i]) for i, emb in enumerate(self.embeddings)]
        if self.training and self.embedding_noise:  # noise after the embedding layer
            embedded = [e + self.embedding_noise * torch.randn_like(e) for e in embedded]
        num = batch["num"]
        if self.view_noise:  # a noisy view of the row (consistency regularization)
            num = num + self.view_noise * torch.randn_like(num)
            embedded = [e + self.view_noise * emb.weight.detach().std() * torch.randn_like(e)
                        for e, emb in zip(embedded, self.embeddings, strict=True)]
        return self.mlp(torch.cat([num, *embedded], dim=1))


ENCODERS.add("timm", lambda cfg, tabular: TimmEncoder(cfg), "any timm model")
ENCODERS.add("hf", lambda cfg, tabular: HFEncoder(cfg), "any transformers encoder")
ENCODERS.add("mlp", MLPEncoder, "MLP over numeric and categorical columns")


class CompetitionModel(nn.Module):
    """Encoders whose pooled features are concatenated into one head."""

    def __init__(self, encoders: list[nn.Module], n_outputs: int, dropout: float,
                 hidden: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.features: torch.Tensor | None = None
        self.encoders = nn.ModuleList(encoders)
        width = sum(int(e.out_dim) for e in encoders)
        head: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            head += [nn.Linear(width, hidden), nn.SiLU(), nn.Dropout(dropout)]
            width = hidden
        head.append(nn.Linear(width, n_outputs))
        self.head = nn.Sequential(*head)

    def encode(self, batch: Batch) -> torch.Tensor:
        """The concatenated pooled features of every encoder (kept in ``self.features``, which
        auxiliary losses read)."""
        features = [enc(batch) for enc in self.encoders]
        pooled = torch.cat(features, dim=1) if len(features) > 1 else features[0]
        self.features = pooled
        return pooled

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head's outputs for pooled features, divided by the temperature."""
        return self.head(pooled) / self.temperature

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classify(self.encode(batch))


@contextmanager
def embedding_noise(model: nn.Module, std: float) -> Iterator[None]:
    """Within the block, add Gaussian noise after the embedding layer of every 'mlp' encoder
    (category embeddings and the standardised numeric inputs) and 'hf' encoder (word
    embeddings); ``std`` is a fraction of each embedding table's own std."""
    if not std:
        yield
        return
    hooks = []
    mlps = [m for m in model.modules() if isinstance(m, MLPEncoder)]
    for module in model.modules():
        if isinstance(module, HFEncoder):
            table = module.body.get_input_embeddings()

            def noisy(mod: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
                scale = std * mod.weight.detach().std()  # type: ignore[operator]
                return out + scale * torch.randn_like(out)

            hooks.append(table.register_forward_hook(noisy))
    for mlp in mlps:
        mlp.view_noise = std
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for mlp in mlps:
            mlp.view_noise = 0.0


def build_model(
    cfg: ModelConfig, n_outputs: int, tabular: TabularEncoder | None
) -> CompetitionModel:
    """The configured network with ``n_outputs`` logits (or values)."""
    encoders = [ENCODERS.get(e.kind)(e, tabular) for e in cfg.encoders]
    return CompetitionModel(encoders, n_outputs, cfg.head.dropout, cfg.head.hidden,
                            cfg.head.temperature)


def build_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer of the first transformers encoder, or None."""
    from transformers import AutoTokenizer

    for enc in cfg.encoders:
        if enc.kind == "hf":
            source = enc.tokenizer or enc.target
            if not Path(source).is_dir():
                raise ConfigError(f"encoder {enc.name!r}: tokenizer directory {source} not found")
            return AutoTokenizer.from_pretrained(source)
    return None

"""Encoders by kind (timm, transformers, tabular MLP, or a whole scikit-learn model) and the
config of one encoder.

Every network encoder maps a batch dict to pooled features ``(batch, out_dim)``;
:mod:`pipeline.models.network` concatenates them under one head. An encoder kind's registry
entry (:class:`EncoderKind`) says what it reads, so the data, the adversarial methods and the
config checks ask it instead of keeping maps of their own.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from pipeline.data.datasets import IMAGENET_MEAN, IMAGENET_STD, Batch
from pipeline.data.tabular import TabularEncoder
from pipeline.errors import ConfigError
from pipeline.models.gbdt import LIBRARIES as GBDT_LIBRARIES
from pipeline.models.gbdt import gbdt_settings
from pipeline.models.hf_folder import folder_config, hf_folder
from pipeline.models.sklearn import import_estimator
from pipeline.models.timm_names import timm_arch_problem
from pipeline.registry import Registry
from pipeline.schema import Section


class EncoderConfig(Section):
    """One encoder: ``timm:<arch>``, ``hf:<local dir>``, ``hf`` (from ``hf_config``), ``mlp``,
    ``pretrained:<name>`` (what `pipeline pretrain` wrote in ``pretrained/<name>``), or a
    whole model: scikit-learn's ``sklearn:<import.path.Estimator>``, or ``lightgbm``,
    ``xgboost``, ``catboost`` (:mod:`pipeline.models.gbdt`)."""

    name: str
    # timm: a local weights file (never a hub download); hf:<dir> loads the dir's weights
    # unless pretrained is false (random init from the dir's config)
    pretrained: bool | str | None = None
    params: dict[str, Any] = Field(default_factory=dict)  # passed to the model factory
    hf_config: dict[str, Any] | None = None  # build a transformers model from this config
    tokenizer: str | None = None  # local tokenizer dir (default: the model dir)
    lr: float | None = Field(None, gt=0)  # own learning rate (default: train.optimizer.lr)

    @field_validator("name")
    @classmethod
    def _known_kind(cls, name: str) -> str:
        kind = name.split(":", 1)[0]
        if kind not in ENCODERS:
            known = ENCODERS.list()
            close = difflib.get_close_matches(kind, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown encoder kind {kind!r} in {name!r}.{hint} "
                f"Known: {', '.join(known)} (as 'timm:resnet18', 'hf:/path', 'mlp', "
                "'sklearn:sklearn.ensemble.HistGradientBoostingClassifier')"
            )
        if ENCODERS.get(kind).names_target and kind != name and not name.split(":", 1)[1]:
            raise ValueError(f"encoder {name!r} names no model after {kind!r}:")
        return name

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.name in ("hf", "rows_text") and not (self.hf_config and self.tokenizer):
            raise ValueError(
                f"encoder {self.name!r} without a directory needs 'hf_config' (with "
                "'model_type') and 'tokenizer' (a local tokenizer dir); or name a local model "
                f"as '{self.name}:<dir>'"
            )
        if self.hf_config is not None and "model_type" not in self.hf_config:
            raise ValueError("'hf_config' needs 'model_type' (e.g. bert)")
        if not self.info.takes_pretrained and self.pretrained:
            raise ValueError(f"encoder {self.name!r} takes no 'pretrained' weights")
        if self.kind == "timm" and (problem := timm_arch_problem(self.target)):
            raise ValueError(f"encoder {self.name!r}: {problem}")
        if self.kind == "sklearn":
            import_estimator(self.target)
        if self.kind in GBDT_LIBRARIES:
            gbdt_settings(self.kind, self.params)  # unknown params refused at load
        if self.kind == "mlp":
            problem = mlp_params_problem(self.params)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def info(self) -> EncoderKind:
        """The registry entry of this encoder's kind."""
        return ENCODERS.get(self.kind)

    @property
    def kind(self) -> str:
        """timm, hf, mlp, sklearn, lightgbm, xgboost or catboost (a ``pretrained:`` encoder:
        the kind of what it holds, see :meth:`resolved`)."""
        return self.resolved().name.split(":", 1)[0]

    @property
    def target(self) -> str:
        """What follows the kind: architecture, directory or import path."""
        name = self.resolved().name
        return name.split(":", 1)[1] if ":" in name else ""

    def resolved(self) -> EncoderConfig:
        """A ``pretrained:<name>`` encoder as what `pipeline pretrain` wrote: ``hf:<folder>``
        for a transformers model, ``timm:<arch>`` with the folder's weights for a timm one;
        itself otherwise (a tabular DAE/VAE is the ``pretrained`` kind)."""
        if not self.name.startswith("pretrained:"):
            return self
        name = self.name.split(":", 1)[1]
        if not (pretrained_folder(name) / "record.json").is_file():
            return self  # not made yet: the experiment config says so (config.py)
        folder, record = pretrained_folder(name), pretrained_record(name)
        if record.get("encoder") == "hf":
            return self.model_copy(update={"name": f"hf:{folder}"})
        if record.get("encoder") == "timm":
            return self.model_copy(update={
                "name": f"timm:{record['arch']}", "pretrained": str(folder / "model.pth"),
                "params": {**record.get("params", {}), **self.params}})
        return self



def _timm() -> Any:
    """timm, imported on first use: with torchvision it costs ~1 s, which a run without a
    timm encoder (tables, texts) need not pay."""
    import timm

    return timm


def _unloadable(cfg: EncoderConfig, weights: str, err: Exception) -> ConfigError:
    """A weights file timm cannot load (another architecture's, not weights at all), in one
    line: a state dict's mismatches are one line each, so the first two and a count."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return ConfigError(f"encoder {cfg.name!r}: weights file {weights} could not be loaded into "
                       f"{cfg.target!r}: {' '.join(lines[:2])}{more}")


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
            self.body = _timm().create_model(cfg.target, **kwargs)
        except Exception as err:  # torch's, safetensors' and pickle's errors on a bad file
            if isinstance(err, RuntimeError) and "Unknown model" in str(err):
                raise ConfigError(f"encoder {cfg.name!r}: {err}") from None
            if weights is None:
                raise
            raise _unloadable(cfg, weights, err) from None
        # the width of the pooled pre-logits: larger than num_features for models with a
        # conv head after pooling (MobileNetV3, GhostNet, HGNetV2)
        self.out_dim = int(getattr(self.body, "head_hidden_size", None)
                           or self.body.num_features)
        # Batches arrive normalised with ImageNet statistics (shared by every encoder of a
        # concatenation); a model trained with others (ViT augreg and Inception: 0.5, CLIP)
        # gets its own, from its pretrained config: x_own = (x * std_in + mean_in - m) / s.
        data = _timm().data.resolve_model_data_config(self.body)
        mean, std = tuple(data["mean"]), tuple(data["std"])
        self.renormalise = (mean, std) != (IMAGENET_MEAN, IMAGENET_STD)
        if self.renormalise:
            scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
            shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
            self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
            self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        image = batch["image"]
        if self.renormalise:
            image = image * self.input_scale + self.input_shift
        return self.body(image)


def hf_model_config(cfg: EncoderConfig) -> Any:
    """The transformers config of an 'hf' or 'rows_text' encoder: its folder's, or one
    built from ``hf_config``."""
    from transformers import AutoConfig

    if cfg.target:
        return folder_config(cfg.name, cfg.target, cfg.params)
    hf = dict(cfg.hf_config or {})
    return AutoConfig.for_model(hf.pop("model_type"), **hf)


def token_positions(cfg: EncoderConfig) -> int | None:
    """How many tokens an 'hf' or 'rows_text' encoder can read at once, or None when no
    absolute position table bounds it (DeBERTa's relative positions). Read from the
    model's own position-embedding table, built on the meta device (no memory, no
    weights): a RoBERTa-style table starts counting after its padding index, so it holds
    two rows fewer than ``max_position_embeddings`` says (514 -> 512)."""
    from transformers import AutoModel

    with torch.device("meta"):
        body = AutoModel.from_config(hf_model_config(cfg))
    limits = [m.num_embeddings - (m.padding_idx + 1 if m.padding_idx is not None else 0)
              for name, m in body.named_modules()
              if isinstance(m, nn.Embedding) and name.endswith("position_embeddings")]
    return min(limits) if limits else None


class HFEncoder(nn.Module):
    """A transformers encoder from a local directory or a config, mean-pooled over tokens."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel

        if cfg.target and cfg.pretrained is not False:
            hf_folder(cfg.name, cfg.target)
            self.body = AutoModel.from_pretrained(cfg.target, **cfg.params)
        else:
            self.body = AutoModel.from_config(hf_model_config(cfg))
        self.out_dim = int(self.body.config.hidden_size)
        # a pair's segment ids go in only where they mean something: a segment-embedding
        # table of 2+ rows (BERT, ELECTRA, MiniLM); RoBERTa's one row, DeBERTa-v3's none and
        # DistilBERT's forward without the argument read the texts as one stream
        self.segments = (int(getattr(self.body.config, "type_vocab_size", 0) or 0) > 1 and
                         "token_type_ids" in inspect.signature(self.body.forward).parameters)

    def forward(self, batch: Batch) -> torch.Tensor:
        mask = batch["attention_mask"]
        if mask.dim() == 3:  # rows x options x tokens: each option a sequence of its own
            flat = {k: batch[k].flatten(0, 1) for k in
                    ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            return self.forward(flat).unflatten(0, mask.shape[:2])
        extra = ({"token_type_ids": batch["token_type_ids"]}
                 if self.segments and "token_type_ids" in batch else {})
        hidden = self.body(input_ids=batch["input_ids"], attention_mask=mask,
                           **extra).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


_MLP_PARAMS = ("hidden", "dropout", "embedding_noise", "pretrained_embeddings")


def mlp_params_problem(params: dict[str, Any]) -> str | None:
    """Why ``params`` cannot build an 'mlp' encoder (checked at load, not halfway through a
    fold), or None."""
    unknown = sorted(set(params) - set(_MLP_PARAMS))
    if unknown:
        return f"encoder 'mlp': unknown params {unknown}. Known: {', '.join(_MLP_PARAMS)}"
    hidden = params.get("hidden", [])
    if not isinstance(hidden, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        return (f"encoder 'mlp': 'hidden' must be a list of layer widths, each an int >= 1 "
                f"(e.g. [256, 128]; [] for none). Got {hidden!r}.")
    for key in ("dropout", "embedding_noise"):
        value = params.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value < 1 if key == "dropout" else value >= 0
        ):
            allowed = "a float in [0, 1)" if key == "dropout" else "a float >= 0"
            return f"encoder 'mlp': {key!r} must be {allowed}. Got {value!r}."
    if not isinstance(params.get("pretrained_embeddings", {}), dict):
        return ("encoder 'mlp': 'pretrained_embeddings' must map columns to pretraining "
                f"names. Got {params['pretrained_embeddings']!r}.")
    return None


class MLPEncoder(nn.Module):
    """Numeric features plus one embedding per categorical column, through an MLP."""

    def __init__(self, cfg: EncoderConfig, tabular: TabularEncoder) -> None:
        super().__init__()
        params = {"hidden": [256, 128], "dropout": 0.1, "embedding_noise": 0.0,
                  "pretrained_embeddings": {}, **cfg.params}
        problem = mlp_params_problem(params)  # (EncoderConfig refuses them at load)
        if problem:
            raise ConfigError(problem)
        self.embedding_noise = float(params["embedding_noise"])
        self.view_noise = 0.0  # set by :func:`embedding_noise`
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, min(32, (card + 1) // 2 + 1)) for card in tabular.cardinalities
        )
        # {column: <pretraining name>}: that column's table starts from skip-gram/DeepWalk vectors
        for column, name in dict(params["pretrained_embeddings"]).items():
            from pipeline.pretrain.skipgram import pretrained_embedding  # pretrain imports us

            table = pretrained_embedding(pretrained_folder(name), tabular, column)  # checks it
            self.embeddings[tabular.categorical.index(column)] = table
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
        # numbers alone go in as they are: a one-tensor cat would copy them every step
        return self.mlp(torch.cat([num, *embedded], dim=1) if embedded else num)


@dataclass(frozen=True)
class EncoderKind:
    """What an encoder kind is: how to build it, which modality and batch keys it reads, and
    which config keys it accepts. The one place these facts live."""

    description: str
    modality: str  # image | text | tabular: the input it reads
    inputs: tuple[str, ...]  # the batch keys it reads
    # (encoder config, fitted tabular encoder) -> module; None: not a network (scikit-learn)
    build: Callable[[EncoderConfig, TabularEncoder | None], nn.Module] | None
    takes_pretrained: bool = True
    names_target: bool = True  # 'kind:<target>' (architecture, directory or import path)


ENCODERS: Registry[EncoderKind] = Registry("encoder kind")
for _kind, _info in {
    "timm": EncoderKind("any timm model", "image", ("image",),
                        lambda cfg, tabular: TimmEncoder(cfg)),
    "hf": EncoderKind("any transformers encoder", "text", ("input_ids", "attention_mask"),
                      lambda cfg, tabular: HFEncoder(cfg)),
    # the feature columns written "column: value; ..." and read as text
    # (pipeline.data.rows_text): concatenates with 'mlp', 'timm:'; not with 'hf:' (one
    # token stream per batch)
    "rows_text": EncoderKind("a transformers encoder over each row written as text", "tabular",
                             ("input_ids", "attention_mask"), lambda cfg, tabular: HFEncoder(cfg)),
    "mlp": EncoderKind("MLP over numeric and categorical columns", "tabular", ("num", "cat"),
                       lambda cfg, tabular: MLPEncoder(cfg, _fitted(tabular)),
                       takes_pretrained=False, names_target=False),
    # `pipeline pretrain`'s tabular DAE/VAE, fine-tuned on the fold's num/cat inputs
    "pretrained": EncoderKind("an encoder written by `pipeline pretrain` (pretrained/<name>)",
                              "tabular", ("num", "cat"),
                              lambda cfg, tabular: _pretrained_tabular(cfg, _fitted(tabular)),
                              takes_pretrained=False),
    "sklearn": EncoderKind("a scikit-learn estimator as a whole model (tabular)", "tabular",
                           ("num", "cat"), None, takes_pretrained=False),
    # gradient-boosted trees as whole models: {name: lightgbm, params: {...}}
    **{library: EncoderKind(f"{library} gradient-boosted trees as a whole model (tabular)",
                            "tabular", ("num", "cat"), None, takes_pretrained=False,
                            names_target=False)
       for library in GBDT_LIBRARIES},
}.items():
    ENCODERS.add(_kind, _info, _info.description)


def _fitted(tabular: TabularEncoder | None) -> TabularEncoder:
    if tabular is None:
        raise ValueError("an 'mlp' encoder needs the fold's fitted tabular encoder")
    return tabular


PRETRAINED_DIR = "pretrained"  # where `pipeline pretrain` writes, beside runs/


def pretrained_folder(name: str) -> Path:
    """``pretrained:<name>`` -> ``pretrained/<name>``; a name with a slash is a path."""
    return Path(name) if "/" in name or "\\" in name else Path(PRETRAINED_DIR) / name


def pretrained_record(name: str) -> dict[str, Any]:
    """``record.json`` of the pretraining ``name``, or a ConfigError saying how to make it."""
    path = pretrained_folder(name) / "record.json"
    if not path.is_file():
        raise ConfigError(f"encoder 'pretrained:{name}': {path} not found; run `pipeline "
                          f"pretrain` with 'name: {name}' first (or give the folder's path)")
    return _read_record(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_record(path: str, mtime_ns: int) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def _pretrained_tabular(cfg: EncoderConfig, tabular: TabularEncoder) -> nn.Module:
    # imported here: pipeline.pretrain's image objective builds on this module's TimmEncoder
    from pipeline.pretrain.tabular_encoder import PretrainedTabular

    pretrained_record(cfg.target)  # a missing folder: say how to make it
    return PretrainedTabular(pretrained_folder(cfg.target), tabular, cfg.params)


def build_encoder(cfg: EncoderConfig, tabular: TabularEncoder | None) -> nn.Module:
    """The network module of one encoder config."""
    cfg = cfg.resolved()
    build = ENCODERS.get(cfg.kind).build
    if build is None:
        raise ConfigError(f"encoder {cfg.name!r} is a whole model, not a network encoder")
    return build(cfg, tabular)

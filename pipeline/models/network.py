"""The network: encoders whose pooled features are concatenated under one head, the config
of the whole model, and the inputs a dataset must make for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.competition import Competition
from pipeline.data.datasets import Batch, ModelInputs
from pipeline.data.encodings import TabularConfig
from pipeline.data.tabular import TabularEncoder
from pipeline.errors import ConfigError
from pipeline.models.encoders import (
    EncoderConfig,
    HFEncoder,
    MLPEncoder,
    build_encoder,
    hf_model_config,
    token_positions,
)
from pipeline.models.multitask import AuxEncoder, MultitaskConfig, MultitaskHead, TaskSpec
from pipeline.models.timm_sizes import sized_for
from pipeline.multiple_choice import ordered_options
from pipeline.schema import Section

TOKEN_KINDS = ("hf", "rows_text")  # encoder kinds that read the batch's token ids


class HeadConfig(Section):
    """The head on the (concatenated) pooled features."""

    dropout: float = Field(0.1, ge=0, lt=1)
    hidden: int = Field(0, ge=0)  # 0: a single linear layer
    temperature: float = Field(1.0, gt=0)  # logits are divided by it, in training and inference


class ModelConfig(Section):
    """Encoders (concatenated when several) and the head."""

    encoders: list[EncoderConfig] = Field(min_length=1)
    head: HeadConfig = HeadConfig()
    image_size: int = Field(224, ge=8)
    max_length: int = Field(256, ge=8)
    # which tokens a long text keeps: the first, the last, or a quarter head + the tail
    truncation: Literal["head", "tail", "head_tail"] = "head"
    # category encodings added as columns (scikit-learn and GBDT members), fitted per fold
    tabular: TabularConfig = TabularConfig()
    # regression only: fitted on the fold's training targets, inverted on the predictions
    target_transform: Literal["none", "log1p", "standardize", "box-cox", "yeo-johnson"] = "none"
    # one head per task (targets, competition.aux_targets), shared hard, soft or by experts
    multitask: MultitaskConfig | None = None
    # multiple choice: the text columns that are the answer options, each read after the
    # other text columns as a sequence of its own and scored by one head (a class each)
    option_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        whole = [e.name for e in self.encoders if e.info.build is None]
        if whole and len(self.encoders) > 1:
            raise ValueError(f"a whole model ({whole[0]!r}) stands alone: it cannot share "
                             "'encoders'")
        tokens = [e.name for e in self.encoders if e.kind in TOKEN_KINDS]
        # one token stream per batch: text columns (several 'hf:' may share it) or rows
        if len(tokens) > 1 and any(e.kind == "rows_text" for e in self.encoders):
            raise ValueError(f"'encoders' {tokens} would both read the batch's token ids: "
                             "keep one 'hf:' or 'rows_text:' encoder")
        if whole and self.multitask is not None:
            raise ValueError(f"'multitask' needs a network; {whole[0]!r} is a whole model")
        return self

    @property
    def modalities(self) -> set[str]:
        """The inputs the encoders read: image, text and/or tabular."""
        return {e.info.modality for e in self.encoders}

    @property
    def reads_tfidf(self) -> bool:
        """Whether 'competition.text_columns' reach this model as TF-IDF features
        (:mod:`pipeline.data.text_features`): a whole tabular model, or a network whose MLP
        reads the table, alone or beside image encoders (a PetFinder-like table of
        images, columns and a description; a text encoder reads the text itself, and a
        pretrained tabular encoder was fitted on inputs without it)."""
        kinds = {e.kind for e in self.encoders}
        return self.is_sklearn or ("mlp" in kinds and kinds <= {"mlp", "timm"})

    @property
    def is_sklearn(self) -> bool:
        """Whether the model is a whole scikit-learn(-API) estimator ('sklearn:', lightgbm,
        xgboost, catboost) rather than a torch network."""
        return self.encoders[0].info.build is None


def _dropout(p: float) -> nn.Module:
    """Dropout, or a stand-in that passes its input on where ``p`` is 0 (same place in the
    head, so checkpoints keep their keys; a zero-rate Dropout still costs a call a step)."""
    return nn.Dropout(p) if p else nn.Identity()


class CompetitionModel(nn.Module):
    """Encoders whose pooled features are concatenated into one head."""

    def __init__(self, encoders: list[nn.Module], n_outputs: int, dropout: float,
                 hidden: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.features: torch.Tensor | None = None
        self.encoders = nn.ModuleList(encoders)
        width = sum(int(e.out_dim) for e in encoders)
        head: list[nn.Module] = [_dropout(dropout)]
        if hidden:
            head += [nn.Linear(width, hidden), nn.SiLU(), _dropout(dropout)]
            width = hidden
        head.append(nn.Linear(width, n_outputs))
        self.head: nn.Module = nn.Sequential(*head)  # or a MultitaskHead (build_model)

    def encode(self, batch: Batch) -> torch.Tensor:
        """The concatenated pooled features of every encoder (kept in ``self.features``, which
        auxiliary losses read)."""
        features = [enc(batch) for enc in self.encoders]
        pooled = torch.cat(features, dim=1) if len(features) > 1 else features[0]
        self.features = pooled
        return pooled

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head's outputs for pooled features, divided by the temperature; of options x
        features (multiple choice), each option's one score."""
        outputs = self.head(pooled)
        if pooled.dim() == 3:  # rows x options x 1: the options' scores are the logits
            outputs = outputs.squeeze(-1)
        # a division by 1 changes nothing but costs a kernel and an autograd node a step
        return outputs if self.temperature == 1 else outputs / self.temperature

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classify(self.encode(batch))


def takes_embedding_noise(model: nn.Module) -> bool:
    """Whether :func:`embedding_noise` has anything to act on: an 'mlp' or 'hf' encoder."""
    return any(isinstance(m, (MLPEncoder, HFEncoder)) for m in model.modules())


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
    cfg: ModelConfig, n_outputs: int, tabular: TabularEncoder | None,
    tasks: list[TaskSpec] | None = None,
) -> CompetitionModel:
    """The configured network with ``n_outputs`` logits (or values); with ``tasks``
    (:func:`pipeline.models.multitask.task_specs`), a head per task."""
    encoders = [build_encoder(sized_for(e, cfg.image_size), tabular) for e in cfg.encoders]
    # multiple choice: one score an option, the same head for each
    model = CompetitionModel(encoders, 1 if cfg.option_columns else n_outputs,
                             cfg.head.dropout, cfg.head.hidden, cfg.head.temperature)
    if tasks is not None:
        width = sum(int(getattr(e, "out_dim")) for e in encoders)  # noqa: B009
        model.head = MultitaskHead(width, tasks, cfg.multitask or MultitaskConfig())
    return model


def tokenizer_dir(cfg: ModelConfig) -> str | None:
    """The tokenizer directory of the first transformers encoder (refused when missing), or
    None: checked before a run writes anything, without loading the tokenizer."""
    for enc in cfg.encoders:
        if enc.kind in TOKEN_KINDS:
            source = str(enc.tokenizer or enc.target)
            if not Path(source).is_dir():
                raise ConfigError(f"encoder {enc.name!r}: tokenizer directory {source} not found")
            return source
    return None


def build_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer of the first transformers encoder, or None."""
    source = tokenizer_dir(cfg)
    if source is None:
        return None
    # imported here: transformers takes ~1-2 s to import, which image and table runs need
    # not pay
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def check_max_length(cfg: ModelConfig, key: str = "model.max_length") -> None:
    """Refuse a ``max_length`` longer than a token encoder's position table: the first
    batch of long texts would stop training with a tensor-shape error deep in transformers
    (refused before the run folder is written, naming both numbers)."""
    for i, enc in enumerate(cfg.encoders):
        if enc.kind not in TOKEN_KINDS:
            continue
        limit = token_positions(enc)
        if limit is not None and cfg.max_length > limit:
            raise ConfigError(
                f"'{key}' is {cfg.max_length}, but encoder {enc.name!r} "
                f"(model.encoders.{i}) reads at most {limit} tokens (its position "
                f"embeddings). Set '{key}' to {limit} or less; 'model.truncation' chooses "
                "which tokens a longer text keeps")


def check_vocab(cfg: ModelConfig, tokenizer: Any) -> None:
    """Refuse a tokenizer with more ids than a token encoder's embedding table (an
    ``hf_config`` with a smaller ``vocab_size``, a ``tokenizer`` folder of another model):
    the first batch holding such an id stopped training with an IndexError deep in torch."""
    if tokenizer is None:
        return
    from transformers import AutoModel

    for i, enc in enumerate(cfg.encoders):
        if enc.kind not in TOKEN_KINDS:
            continue
        with torch.device("meta"):  # the table's size without memory or weights
            rows = AutoModel.from_config(hf_model_config(enc)).get_input_embeddings()
        if len(tokenizer) > rows.num_embeddings:
            raise ConfigError(
                f"encoder {enc.name!r} (model.encoders.{i}) embeds {rows.num_embeddings} "
                f"token ids, but its tokenizer {tokenizer_dir(cfg)} makes {len(tokenizer)}: "
                "give the model's own tokenizer, or a 'vocab_size' of at least "
                f"{len(tokenizer)} in 'hf_config'")


# mixed case, accents, digits, punctuation and a pair: a tokenizer with the first's vocabulary
# but other casing or special tokens still makes other ids of it
_PROBE = ("The Movie: Hello WORLD, naïve café 3.14 isn't 42!", "A second text.")


def check_tokenizers(cfg: ModelConfig, tokenizer: Any) -> None:
    """Refuse token encoders whose tokenizer makes other ids than the first's (``tokenizer``).
    A batch carries one token stream, made by the first transformers encoder's tokenizer
    (:func:`build_tokenizer`); a second encoder of another model family read those ids as
    other words of its own vocabulary, silently (MiniLM read a small BERT's ids as its
    '[unused5]' tokens). Encoders of one tokenizer (a model and its further pretrained
    copy, two heads on one checkpoint) pass."""
    if tokenizer is None:
        return
    from transformers import AutoTokenizer

    token_encoders = [(i, e) for i, e in enumerate(cfg.encoders) if e.kind in TOKEN_KINDS]
    first_at, first = token_encoders[0]
    first_dir = Path(str(first.tokenizer or first.target)).resolve()
    for i, enc in token_encoders[1:]:
        source = Path(str(enc.tokenizer or enc.target))
        if source.resolve() == first_dir:
            continue
        if not source.is_dir():
            raise ConfigError(f"encoder {enc.name!r}: tokenizer directory {source} not found")
        other = AutoTokenizer.from_pretrained(str(source))
        if (other.get_vocab() == tokenizer.get_vocab()
                and other(*_PROBE)["input_ids"] == tokenizer(*_PROBE)["input_ids"]):
            continue
        raise ConfigError(
            f"encoders {first.name!r} (model.encoders.{first_at}) and {enc.name!r} "
            f"(model.encoders.{i}) tokenize texts differently ({first_dir} and {source}): one "
            "network reads one token stream, the first encoder's, and the other model would "
            "read its ids as other words. Train each in a config of its own and blend the "
            "runs (pipeline blend), or give both one 'tokenizer'")


def model_inputs(comp: Competition, cfg: ModelConfig, tokenizer: Any,
                 tabular: TabularEncoder | None) -> ModelInputs:
    """The inputs the configured encoders read, made from the competition's frames."""
    modalities = cfg.modalities
    ccfg = comp.cfg
    rows_text = any(e.kind == "rows_text" for e in cfg.encoders)
    return ModelInputs(
        image_root=Path(ccfg.dir),
        image_size=cfg.image_size if "image" in modalities else 0,
        text_columns=list(ccfg.text_columns),
        tokenizer=tokenizer if "text" in modalities or rows_text else None,
        max_length=cfg.max_length,
        truncation=cfg.truncation,
        tabular=tabular if "tabular" in modalities and not cfg.is_sklearn else None,
        row_columns=comp.feature_columns if rows_text else [],
        option_columns=ordered_options(cfg.option_columns, comp.classes),
        aux=AuxEncoder(comp.train, ccfg.aux_targets)
        if ccfg.aux_targets and not cfg.is_sklearn else None,
    )

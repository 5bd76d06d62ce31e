"""Masked-LM refinement: a transformers encoder keeps learning its own objective on the
competition's text (train + test + extra rows) before it is fine-tuned on the target.

The model starts from a local transformers folder (weights + tokenizer); masking is
transformers' :class:`~transformers.DataCollatorForLanguageModeling`. The result is saved
with its tokenizer by ``save_pretrained``, so ``hf:<folder>`` (or ``pretrained:<name>``)
loads it like any local model. A few epochs adapt the encoder to the domain's words; many
more overfit a small corpus and wipe out what the encoder knew (hence the warning past
:data:`SAFE_EPOCHS`).

:func:`fit_text` is the loop shared with :mod:`pipeline.pretrain.electra`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from pipeline.data.text_tokens import encode_texts
from pipeline.errors import ConfigError
from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData, fit_epochs
from pipeline.schema import Section

log = logging.getLogger(__name__)

SAFE_EPOCHS = 3  # more epochs of refinement on a small corpus start to erase the pretraining


class TextRefineConfig(Section):
    """Settings every text refinement objective shares."""

    model: str  # local transformers folder: weights + tokenizer (never a hub name)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-5, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)  # linear warm-up, then linear decay to 0
    max_length: int = Field(128, ge=8)
    truncation: Literal["head", "tail", "head_tail"] = "head"  # as the training data does
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    # share of the steps that train only the freshly initialised head(s), the encoder
    # frozen: a random head's first gradients would otherwise scramble the encoder
    head_warmup_ratio: float = Field(0.1, ge=0, lt=1)

    @field_validator("model")
    @classmethod
    def _local_folder(cls, model: str) -> str:
        if not Path(model).is_dir():
            raise ValueError(
                f"'model' must be a local transformers folder (weights + tokenizer). Got "
                f"{model!r}, which is not a directory"
            )
        return model

    @model_validator(mode="after")
    def _fits_positions(self) -> TextRefineConfig:
        # a longer max_length lets the first batch of long texts stop the run with a
        # tensor-shape error deep in transformers: refused at load, as training does
        from pipeline.models.encoders import EncoderConfig, token_positions

        limit = token_positions(EncoderConfig(name=f"hf:{self.model}"))
        if limit is not None and self.max_length > limit:
            raise ValueError(
                f"'max_length' is {self.max_length}, but 'model' {self.model!r} reads at most "
                f"{limit} tokens (its position embeddings). Set 'max_length' to {limit} or "
                "less; 'truncation' chooses which tokens a longer text keeps")
        return self


class MaskedLMConfig(TextRefineConfig):
    """Masked-LM refinement of a transformers encoder on the competition's text."""

    kind: Literal["masked_lm"] = "masked_lm"


def load_tokenizer(folder: str) -> Any:
    """The tokenizer saved in ``folder``; it needs a mask token to mask with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.mask_token is None or tokenizer.pad_token is None:
        raise ConfigError(
            f"'model' {folder!r}: its tokenizer has no mask or pad token, which masked "
            "language modelling needs"
        )
    return tokenizer


def corpus_ids(data: PretrainData, tokenizer: Any, max_length: int,
               truncation: str, kind: str) -> list[list[int]]:
    """Token ids of every row's text, encoded as the training data encodes them; rows with
    no text (only special tokens) are left out: they have nothing to mask."""
    columns = data.comp.cfg.text_columns
    if not columns:
        raise ConfigError(
            f"pretrain objective {kind!r} needs text: 'competition.text_columns' is empty"
        )
    texts = [data.frame[c].fillna("").astype(str).tolist() for c in columns]
    special = set(tokenizer.all_special_ids)
    ids = [row for row in encode_texts(tokenizer, texts, max_length, truncation)
           if any(t not in special for t in row)]
    if not ids:
        raise ConfigError(f"pretrain objective {kind!r}: every row's text is empty")
    return ids


def batches(ids: list[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    """The rows in a random order drawn from torch's global generator (restored on resume)."""
    order = torch.randperm(len(ids)).tolist()
    for start in range(0, len(order), batch_size):
        yield [ids[i] for i in order[start:start + batch_size]]


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bfloat16 autocast on a GPU (half the memory traffic), full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def fit_text(
    cfg: TextRefineConfig,
    model: nn.Module,
    body: list[nn.Parameter],
    ids: list[list[int]],
    step_loss: Callable[[list[list[int]]], torch.Tensor | None],
    out_dir: Path,
    seed: int,
) -> list[float]:
    """Train ``model`` on ``step_loss`` over shuffled batches of ``ids``, resumably.

    Args:
        cfg: the objective's settings (epochs, batch size, optimizer, schedule).
        model: every trained module (saved and restored by :func:`fit_epochs`).
        body: the pretrained encoder's parameters, frozen during the head warm-up.
        ids: token ids per row.
        step_loss: a batch of rows -> its loss, or None when the batch has nothing to learn
            from (no token drawn for masking).
        out_dir: the work folder (resume point).
        seed: the run's seed.

    Returns:
        The mean loss of each epoch.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    frozen_steps = int(cfg.head_warmup_ratio * total)

    def run_epoch(epoch: int) -> float:
        losses = []
        for step, rows in enumerate(batches(ids, cfg.batch_size), start=epoch * per_epoch):
            for p in body:  # computed per step, so a resumed run freezes the same steps
                p.requires_grad_(step >= frozen_steps)
            loss = step_loss(rows)
            if loss is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(float(loss.detach()))
            scheduler.step()
        return sum(losses) / max(len(losses), 1)

    try:
        return fit_epochs(model, optimizer, cfg.epochs, run_epoch, out_dir, seed,
                          scheduler=scheduler)
    finally:
        for p in body:
            p.requires_grad_(True)


def warn_epochs(cfg: TextRefineConfig) -> None:
    """Refinement past :data:`SAFE_EPOCHS` tends to forget the original pretraining."""
    if cfg.epochs > SAFE_EPOCHS:
        log.warning(
            "pretrain %s: %d epochs of refinement; past %d the encoder tends to overfit the "
            "corpus and forget what it knew (1-3 is the usual range)",
            getattr(cfg, "kind", "text"), cfg.epochs, SAFE_EPOCHS,
        )


def fit_masked_lm(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
                  seed: int) -> dict[str, Any]:
    """Refine ``cfg.model`` by masked language modelling on the rows' text; save it (with its
    MLM head, which ``hf:<folder>`` ignores) and its tokenizer into ``out_dir``."""
    assert isinstance(cfg, MaskedLMConfig)
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    warn_epochs(cfg)
    tokenizer = load_tokenizer(cfg.model)
    ids = corpus_ids(data, tokenizer, cfg.max_length, cfg.truncation, cfg.kind)
    torch.manual_seed(seed)  # a fresh head is drawn the same way on every run
    model, info = AutoModelForMaskedLM.from_pretrained(cfg.model, output_loading_info=True)
    model.to(device)
    # a sentence-embedding folder (all-MiniLM-L6-v2) holds no MLM head: it starts random
    fresh_head = any(not k.startswith(model.base_model_prefix) for k in info["missing_keys"])
    body = list(model.base_model.parameters()) if fresh_head else []
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)

    def step_loss(rows: list[list[int]]) -> torch.Tensor | None:
        batch = collator([{"input_ids": r} for r in rows])
        if not (batch["labels"] != -100).any():
            return None
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            return model(**batch).loss  # type: ignore[no-any-return]

    losses = fit_text(cfg, model, body, ids, step_loss, out_dir, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"losses": losses, "rows": len(ids), "tokens": sum(map(len, ids)),
            "fresh_head": fresh_head}


def text_features(folder: Path, frame: pd.DataFrame, device: torch.device) -> np.ndarray:
    """The refined encoder's mean-pooled token states of each row's text ``(rows, hidden)``,
    encoded as the pretraining saw it (columns and length from the folder's config.yaml),
    for scikit-learn and GBDT members."""
    import yaml
    from transformers import AutoTokenizer

    from pipeline.data.batching import collate
    from pipeline.models.encoders import EncoderConfig, HFEncoder

    cfg = yaml.safe_load((Path(folder) / "config.yaml").read_text())
    objective = cfg["objective"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [frame[c].fillna("").astype(str).tolist()
             for c in cfg["competition"]["text_columns"]]
    ids = encode_texts(tokenizer, texts, objective["max_length"], objective["truncation"])
    encoder = HFEncoder(EncoderConfig(name=f"hf:{folder}")).to(device).eval()
    out = []
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(ids), 64):
            rows = [{"input_ids": torch.tensor(r),
                     "attention_mask": torch.ones(len(r), dtype=torch.long)}
                    for r in ids[start:start + 64]]
            batch = collate(rows, tokenizer.pad_token_id)
            out.append(encoder({k: v.to(device) for k, v in batch.items()}).float().cpu())
    return torch.cat(out).numpy()


OBJECTIVES.add("masked_lm", Objective(MaskedLMConfig, "text", fit_masked_lm, "hf",
                                      text_features),
               "masked-LM refinement of a transformers encoder on the competition's text")

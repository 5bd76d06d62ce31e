"""Train texts their tokenizer cannot read: checked before a run writes anything.

A model folder without its tokenizer files (``model.save_pretrained`` without
``tokenizer.save_pretrained``; weights and tokenizer in two Kaggle datasets) still loads a
tokenizer in transformers 5: one of the model type with an empty vocabulary, which reads
every word as the unknown token. The run trained and submitted without a word, at chance
(a Rotten Tomatoes probe: CV ROC AUC 0.505 where the model's own tokenizer gave 0.68). A
tokenizer of another language or model reads most tokens as unknown too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_ROWS = 200  # train rows tokenised for the check, spread over the file
REFUSED_SHARE = 0.9  # of the tokens unknown: the tokenizer reads nothing of the texts
WARNED_SHARE = 0.25


def unknown_share(tokenizer: Any, texts: Sequence[str]) -> float | None:
    """The share of ``texts``' tokens the tokenizer reads as its unknown token, or None when
    it has none (byte-level BPE reads everything) or the texts hold no token."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None or not texts:
        return None
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=256,
                    verbose=False)["input_ids"]
    total = sum(len(row) for row in ids)
    return sum(row.count(unknown) for row in ids) / total if total else None


def check_unknown_tokens(tokenizer: Any, train: pd.DataFrame, text_columns: Sequence[str],
                         encoder: str, folder: str) -> None:
    """Refuse a tokenizer that reads nearly every token of the train texts as unknown; warn
    when it reads many so."""
    if tokenizer is None or not text_columns:
        return
    step = max(1, len(train) // SAMPLE_ROWS)
    texts = [str(t) for c in text_columns for t in train[c].iloc[::step].dropna()
             if str(t).strip()]
    share = unknown_share(tokenizer, texts)
    if share is None or share < WARNED_SHARE:
        return
    said = (f"the tokenizer of encoder {encoder!r} ({folder}) reads {share:.0%} of the train "
            f"texts' tokens as unknown ({tokenizer.unk_token})")
    if share >= REFUSED_SHARE:
        raise ConfigError(
            f"{said}: the model would learn nothing from them. A folder without the model's "
            "tokenizer files (tokenizer.json, vocab.txt, ...) gives an empty vocabulary: "
            "save the tokenizer there, or name its folder as the encoder's 'tokenizer'")
    log.warning("%s: is it the model's own tokenizer, for this language?", said)

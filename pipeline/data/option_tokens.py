"""Multiple-choice rows (``model.option_columns``): each answer option is encoded with the
row's other texts (the question, a context) as a sequence of its own, so one head scores
every option by its text, wherever it stands (LLM Science Exam, SWAG, RACE; what
transformers' ``AutoModelForMultipleChoice`` reads). A row's token inputs are options x
tokens; the options' scores are the class logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.data.augment import TextNoiseConfig, noisy_segments, noisy_tokens
from pipeline.data.text_tokens import encode_rows

# a row's token ids (or segment ids): one list per option
OptionRows = list[list[list[int]]]


def encode_options(tokenizer: Any, frame: pd.DataFrame, context: list[str],
                   options: list[str], max_length: int,
                   truncation: str) -> tuple[OptionRows, OptionRows | None]:
    """Per row, the token ids of each option read after the ``context`` columns' texts (a
    pair with one context column: segment ids where the tokenizer makes them; joined with
    more), and their segment ids (None where the tokenizer makes none)."""
    texts = [frame[c].fillna("").astype(str).tolist() for c in context]
    encoded = [encode_rows(tokenizer, [*texts, frame[c].fillna("").astype(str).tolist()],
                           max_length, truncation) for c in options]
    ids = [list(row) for row in zip(*(e[0] for e in encoded), strict=True)]
    if any(e[1] is None for e in encoded):
        return ids, None
    return ids, [list(row) for row in zip(*(e[1] for e in encoded), strict=True)]


def option_item(ids: list[list[int]], types: list[list[int]] | None, pad_id: int,
                noise: TextNoiseConfig | None, rng: np.random.Generator | None,
                special: set[int], mask_id: int) -> dict[str, torch.Tensor]:
    """One row's options x tokens inputs (right-padded to its longest option, the mask 0
    there), each option through the text noise with the row's draws."""
    if rng is not None and noise is not None:
        if types is not None:
            pairs = [noisy_segments(i, t, noise, rng, special, mask_id)
                     for i, t in zip(ids, types, strict=True)]
            ids, types = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            ids = [noisy_tokens(i, noise, rng, special, mask_id) for i in ids]
    return _padded([ids], types if types is None else [types], pad_id)


def option_tensors(ids: OptionRows, types: OptionRows | None,
                   pad_id: int) -> dict[str, torch.Tensor]:
    """Every row's options x tokens inputs at once (rows x options x tokens, padded to the
    longest option of all), with each row's ``length``: its longest option."""
    out = _padded(ids, types, pad_id, squeeze=False)
    out["length"] = torch.tensor([max(len(o) for o in row) for row in ids], dtype=torch.long)
    return out


def _padded(rows: OptionRows, types: OptionRows | None, pad_id: int,
            squeeze: bool = True) -> dict[str, torch.Tensor]:
    n_options = len(rows[0])
    width = max(len(o) for row in rows for o in row)
    ids = torch.full((len(rows), n_options, width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    segments = torch.zeros_like(ids) if types is not None else None
    for r, row in enumerate(rows):
        for j, option in enumerate(row):
            ids[r, j, : len(option)] = torch.tensor(option, dtype=torch.long)
            mask[r, j, : len(option)] = 1
            if segments is not None and types is not None:
                segments[r, j, : len(option)] = torch.tensor(types[r][j], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if segments is not None:
        out["token_type_ids"] = segments
    return {k: v[0] for k, v in out.items()} if squeeze else out

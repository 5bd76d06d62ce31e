"""How a loader's items become batches: the padding collate (a row's tokens, or a multiple-
choice row's options x tokens, padded to the batch's longest), and the rule that keeps a
training epoch from ending on a batch of one row."""

from __future__ import annotations

import torch

# the per-token inputs: padded to a batch's longest row (segment ids and mask with 0)
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def collate(items: list[dict[str, torch.Tensor]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack items; token sequences are right-padded to the longest in the batch."""
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        name = key.rsplit("/", 1)[-1]  # views are keyed <view>/<input>
        if name in TOKEN_KEYS:
            fill = pad_id if name == "input_ids" else 0
            options = values[0].dim() == 2  # options x tokens: pad the tokens, not the options
            batch[key] = torch.nn.utils.rnn.pad_sequence(
                [v.T for v in values] if options else values, batch_first=True,
                padding_value=fill)
            if options:
                batch[key] = batch[key].transpose(1, 2)
        else:
            batch[key] = torch.stack(values)
    return batch


def drops_lone_row(rows: int, batch_size: int, shuffle: bool) -> bool:
    """Whether a shuffled (training) epoch leaves out its last batch, one row alone: BatchNorm
    cannot train on one row (33 rows at batch 16 crashed); another row sits out each epoch."""
    return shuffle and rows > batch_size and rows % batch_size == 1

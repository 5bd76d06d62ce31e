"""``train.batch_size: auto``: a tabular MLP's batch grown with the rows a fold trains on.

The config cannot know the rows when it is read (folds, pseudo-labelled rows), so ``auto``
is kept in the config (and its train hash) and turned into a number per stage when the fold's
loader is built (:func:`stage_batch`), AdamW's lr grown with it (:func:`stage_optimizer`).
:mod:`pipeline.config_defaults` fills it in for a network whose encoders are all ``mlp`` on a
tabular competition, and refuses it elsewhere.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import PlainValidator

from pipeline.data.batching import drops_lone_row
from pipeline.engine.optim import OptimizerConfig


def _batch_size(value: object) -> int | Literal["auto"]:
    # one message for both forms (a union would say one per branch)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and value >= 1):
        return value  # type: ignore[return-value]
    raise ValueError("must be an int >= 1 or 'auto'")


# a batch size, or 'auto' (resolved by stage_batch)
BatchSize = Annotated[int | Literal["auto"], PlainValidator(_batch_size)]

# The schema's batch, measured as the default on small tables: a smaller one lost on wine,
# breast cancer, digits and Benefits (docs/benchmarks.md, "The tabular MLP's default recipe")
AUTO_BATCH_MIN = 32
AUTO_BATCH_MAX = 512
# the fewest optimizer updates an epoch a batch above the minimum may leave
AUTO_BATCH_UPDATES = 100
# AdamW's lr, given for a batch of AUTO_BATCH_MIN, grows with the batch's square root up to
# this: at lr 3e-3 throughout, batch 512 lost on 128,000 rows (log loss 0.147 against 0.143 at
# 32); at 1e-2 it won (0.139), as 128 at 6e-3 on 12,800 rows did (docs/benchmarks.md)
AUTO_LR_MAX = 1.0e-2


def epoch_updates(rows: int, batch_size: int, grad_accum_steps: int = 1) -> int:
    """Optimizer updates in a training epoch of ``rows`` rows (a lone last row sits out)."""
    batches = math.ceil(rows / batch_size) - drops_lone_row(rows, batch_size, shuffle=True)
    return math.ceil(batches / grad_accum_steps)


def auto_batch_size(rows: int, grad_accum_steps: int = 1) -> int:
    """The largest power of two in [``AUTO_BATCH_MIN``, ``AUTO_BATCH_MAX``] that leaves at
    least ``AUTO_BATCH_UPDATES`` optimizer updates an epoch of ``rows`` rows (the minimum
    when none does).

    >>> [auto_batch_size(n) for n in (1_000, 6_400, 12_800, 34_000, 1_000_000)]
    [32, 64, 128, 256, 512]
    >>> auto_batch_size(12_800, grad_accum_steps=2)
    64
    """
    size = AUTO_BATCH_MAX
    while size > AUTO_BATCH_MIN and epoch_updates(rows, size, grad_accum_steps) < \
            AUTO_BATCH_UPDATES:
        size //= 2
    return size


def stage_batch(batch_size: int | str, rows: int, grad_accum_steps: int) -> int:
    """A stage's batch size for a fold that trains on ``rows`` rows: ``auto`` resolved."""
    if batch_size == "auto":
        return auto_batch_size(rows, grad_accum_steps)
    assert isinstance(batch_size, int), f"{batch_size=}"
    return batch_size


def auto_lr(lr: float, batch_size: int) -> float:
    """``lr``, the rate for a batch of ``AUTO_BATCH_MIN``, for a batch of ``batch_size``:
    times the square root of their ratio, at most ``AUTO_LR_MAX`` (a higher ``lr`` is kept).

    >>> [round(auto_lr(3e-3, b), 5) for b in (32, 64, 128, 256, 512)]
    [0.003, 0.00424, 0.006, 0.00849, 0.01]
    """
    return max(lr, min(AUTO_LR_MAX, lr * math.sqrt(batch_size / AUTO_BATCH_MIN)))


def stage_optimizer(optimizer: OptimizerConfig, batch_size: int | str,
                    size: int) -> OptimizerConfig:
    """A stage's optimizer trained at batch ``size``: an AdamW stage whose batch is ``auto``
    gets :func:`auto_lr`; a given batch, or another optimizer (not measured), keeps its lr."""
    if batch_size != "auto" or optimizer.name != "adamw":
        return optimizer
    return optimizer.model_copy(update={"lr": auto_lr(optimizer.lr, size)})


def eval_batch_size(batch_size: int | str) -> int:
    """The default batch of validation and prediction (``predict.batch_size`` left out):
    twice the training batch; for ``auto`` twice the largest, whatever the rows, so a fold
    predicted again after a restart batches its rows as its first run did."""
    return 2 * (AUTO_BATCH_MAX if batch_size == "auto" else int(batch_size))


def auto_batch_note(rows: int, grad_accum_steps: int, optimizer: OptimizerConfig) -> str:
    """Why ``auto`` chose its batch (and lr) for ``rows`` rows, for the log."""
    size = auto_batch_size(rows, grad_accum_steps)
    accum = f" of {grad_accum_steps} batches" if grad_accum_steps > 1 else ""
    lr = stage_optimizer(optimizer, "auto", size).lr
    grown = (f", {optimizer.name}'s lr {optimizer.lr:g} -> {lr:g} (times the square root of "
             f"{size}/{AUTO_BATCH_MIN}, at most {AUTO_LR_MAX:g})" if lr != optimizer.lr else "")
    return (f"batch {size} ('train.batch_size' auto: the largest power of two in "
            f"[{AUTO_BATCH_MIN}, {AUTO_BATCH_MAX}] that leaves at least {AUTO_BATCH_UPDATES} "
            f"updates{accum} an epoch of {rows:,} training rows{grown})")

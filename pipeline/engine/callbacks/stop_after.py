"""Stop a fit after a given number of epochs, the schedule left as the recipe sets it: a
full model (``train.full_fit``) trains the recipe the folds trained and stops at the epoch
they chose, so its learning rate at that epoch is theirs."""

from __future__ import annotations

from typing import Any

from pipeline.engine.trainer import Callback


class StopAfter(Callback):
    """Stop once ``epochs`` epochs are done (over every stage)."""

    order = 40

    def __init__(self, epochs: int) -> None:
        if epochs < 1:
            raise ValueError(f"{epochs=} must be >= 1")
        self.epochs = epochs

    def on_epoch_end(self, trainer: Any) -> None:
        if trainer.epoch >= self.epochs:
            trainer.should_stop = True

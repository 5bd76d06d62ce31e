"""``train.consistency.epoch_over: unlabelled``: an epoch is one pass over the unlabelled rows.

At the default (``labelled``) an epoch is a pass over the fold's training rows, and the
unlabelled rows go round as often as that takes: with 267 labelled and 4,000 unlabelled rows
at ratio 3, an epoch of 9 steps sees 864 of them. Under ``unlabelled`` an epoch has
ceil(unlabelled rows / (batch x ``ratio``)) steps (42 there), every unlabelled row is seen
once, and the labelled loader is cycled to fill the steps: the lr schedule, validation,
checkpoints and the warm-up (supervised epochs first) count these epochs. In a recipe with
stages, the stages that end before the method starts keep their epochs over the labelled rows:
a supervised stage of 30 epochs stays 30 passes over the labelled rows, and only the stages
where the unlabelled rows are used count their passes. Each further pass
over the labelled rows within an epoch draws its own order and augmentations from the
epoch's seeds, so a resumed run sees the same batches.

The stage the default shape appends (:mod:`.consistency_stage`) counts its epochs this way
whatever ``epoch_over`` says, each cut to its share of the stage's budget.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.data.datasets import Batch
from pipeline.engine.plan import StagePlan

if TYPE_CHECKING:
    from pipeline.engine.callbacks.consistency_methods import ConsistencyConfig

__all__ = ["CycledLoader", "over_unlabelled", "unlabelled_steps"]

CYCLE_STRIDE = 1_000_003  # seed offset between the passes over the labelled rows of an epoch


def unlabelled_steps(n_unlabelled: int, batch_size: int, ratio: int) -> int:
    """Steps of one pass over ``n_unlabelled`` rows at ``ratio`` x ``batch_size`` a step."""
    return max(1, math.ceil(n_unlabelled / (batch_size * ratio)))


class CycledLoader:
    """``loader``'s batches for exactly ``steps`` steps, starting over when it runs out; every
    other attribute (dataset, batch_size, generator, ...) is the loader's."""

    def __init__(self, loader: Any, steps: int) -> None:
        self.loader = loader
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Batch]:
        if len(self.loader) == 0:
            return
        generator = getattr(self.loader, "generator", None)
        dataset = self.loader.dataset
        order_seed = generator.initial_seed() if generator is not None else None
        draw_seed = getattr(dataset, "epoch_seed", None)
        done, cycle = 0, 0
        while done < self.steps:
            if cycle:  # a further pass: its own order and draws, derived from the epoch's
                if order_seed is not None:
                    generator.manual_seed(order_seed + CYCLE_STRIDE * cycle)
                if draw_seed is not None:
                    dataset.set_epoch(draw_seed + CYCLE_STRIDE * cycle)
            for batch in self.loader:
                yield batch
                done += 1
                if done == self.steps:
                    break
            cycle += 1
        if cycle > 1 and draw_seed is not None:
            dataset.set_epoch(draw_seed)  # as the trainer left it for this epoch


def over_unlabelled(plans: list[StagePlan], cfg: ConsistencyConfig | None,
                    n_unlabelled: int, first_epoch: int = 1,
                    appended: bool = False) -> list[StagePlan]:
    """``plans`` with epochs of one pass over ``n_unlabelled`` rows when ``cfg`` counts
    epochs over the unlabelled rows, in every stage that reaches ``first_epoch`` (1-based,
    the method's first); else ``plans`` unchanged. ``appended``: the last plan is the stage
    :mod:`.consistency_stage` appends, whose epochs are passes (within its budget)
    whatever ``epoch_over`` says."""
    if cfg is None or (cfg.epoch_over == "labelled" and not appended):
        return plans
    ratio = cfg.option("ratio")
    # a stage ending before first_epoch is supervised: the unlabelled rows are unused there
    ends = list(itertools.accumulate(plan.epochs for plan in plans))
    steps = [unlabelled_steps(n_unlabelled, plan.loader.batch_size or 1, ratio) for plan in plans]
    if appended:  # the stage's steps at most its budget x the supervised stages'
        supervised = sum(len(plan.loader) * plan.epochs
                         for plan, end in zip(plans, ends, strict=True) if end < first_epoch)
        # the 1e-9 keeps a product like 0.7 x 300 / 5 = 42.000000000000004 at 42
        cap = int(cfg.stage.budget * supervised / plans[-1].epochs + 1e-9)
        steps[-1] = max(1, min(steps[-1], cap))
    return [plan if end < first_epoch else dataclasses.replace(
        plan, loader=CycledLoader(plan.loader, n))  # type: ignore[arg-type]
        for plan, end, n in zip(plans, ends, steps, strict=True)]

"""Batch-norm statistics recomputed for given weights ("precise BN", Wu and Johnson 2021,
"Rethinking 'Batch' in BatchNorm"; what SWA's ``update_bn`` does for averaged weights).

The running averages a BN layer keeps while training lag its weights: with few updates per
epoch and a high learning rate (a small competition, LAMB, a stage switch to SGD) they
describe weights long gone, and eval-mode predictions collapse while the training loss looks
fine. Recomputing them with the weights being evaluated removes the lag.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from pipeline.data.batching import drops_lone_row
from pipeline.data.datasets import Batch
from pipeline.engine.distributed import bare
from pipeline.engine.state import rng_state, set_rng_state


def sample_batches(loader: Any, n_batches: int, epoch: int) -> Iterable[Batch]:
    """``n_batches`` batches of training rows drawn from ``loader``'s dataset: the same rows
    for the same epoch (a resumed run agrees); from the device when the loader holds them."""
    dataset, size = loader.dataset, loader.batch_size or 1
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(epoch))
    rows = order[: n_batches * size]
    # a last batch of one row: BatchNorm cannot take the mean of one row in training mode
    rows = rows[: len(rows) - drops_lone_row(len(rows), size, shuffle=True)]
    if hasattr(loader, "batches_of"):  # a MemoryLoader: sliced (and augmented) on the device
        return loader.batches_of(rows, epoch)  # type: ignore[no-any-return]
    return DataLoader(Subset(dataset, rows.tolist()), batch_size=size, shuffle=False,
                      collate_fn=loader.collate_fn)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch-norm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def module_names(model: nn.Module, modules: list[nn.Module]) -> list[str]:
    """The dotted names of ``modules`` inside ``model``."""
    wanted = {id(m) for m in modules}
    return [name for name, m in model.named_modules() if id(m) in wanted]


def recompute_batch_norm(batches: Iterable[Batch], model: nn.Module,
                         frozen: list[str]) -> None:
    """Recompute the batch-norm statistics of ``model`` as the mean over ``batches`` (what
    ``torch.optim.swa_utils.update_bn`` does), except inside the modules named in
    ``frozen``: a frozen part keeps its statistics, as it does during training."""
    skip = {id(m) for name in frozen for m in model.get_submodule(name).modules()}
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean over every batch
    was_training = model.training
    model.train()
    for name in frozen:
        model.get_submodule(name).eval()
    # dropout draws during these passes must not shift the training run's random stream
    saved = rng_state()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    set_rng_state(saved)
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.train(was_training)


def precise_batch_norm(trainer: Any, loader: Any, n_batches: int) -> None:
    """Precise BN before a validation of ``trainer`` (a :class:`~pipeline.engine.trainer.
    Trainer`, which imports this module): the evaluated weights' batch-norm statistics,
    recomputed on ``n_batches`` of ``loader``'s training rows (the same sample for the same
    epoch, so a resumed run agrees). Training-mode passes never read these statistics, so
    training is unchanged."""
    model = bare(trainer.eval_model())
    if not has_batch_norm(model):
        return
    batches = sample_batches(loader, n_batches, trainer.epoch)
    frozen = module_names(trainer.unwrapped, trainer.frozen)
    saved = rng_state()  # a loader's iterator draws its seed from the global stream
    recompute_batch_norm((trainer._to_device(b) for b in batches), model, frozen)
    set_rng_state(saved)

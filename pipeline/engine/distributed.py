"""The ranks of a multi-process launch (``torchrun`` / ``accelerate launch``): who writes,
where the ranks wait for each other, and how a step's batch and a prediction pass are split.

One process is the default and every helper here is then the identity (no copy, no sync), so a
single-process run is exactly what it was. With N processes:

- the configured ``batch_size`` stays the GLOBAL batch: every rank draws the same batches in
  the same order (same seeds) and trains on its contiguous share of each
  (:func:`local_rows`), scaled so that DDP's mean over the ranks is the one-process loss;
- prediction passes are split by batches and gathered in row order on every rank
  (:func:`own_batches`, :func:`gather_outputs`), so every rank scores the full OOF;
- rank 0 alone writes files; a value it decides or computes after writing (a fold is
  complete, its score) reaches the others through :func:`agree`, which also carries its
  errors, so every rank stops with the same one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes the launcher started (its WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def launch_rank() -> int:
    """This process's rank in the launch (0 without a launcher)."""
    return int(os.environ.get("RANK") or 0)


def is_main() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return launch_rank() == 0


def on_cpu() -> bool:
    """Whether the ranks train on CPUs: no GPU, or told so (``ACCELERATE_USE_CPU``)."""
    told = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return told or not torch.cuda.is_available()


def join() -> None:
    """Join the launch's process group (gloo on CPUs, where Accelerate would not join by
    itself; NCCL on GPUs); a no-op for one process."""
    if launched_processes() == 1 or torch.distributed.is_initialized():
        return
    from accelerate.state import PartialState

    PartialState(cpu=on_cpu())


def _multi() -> bool:
    return launched_processes() > 1


def barrier() -> None:
    """Wait here until every rank arrives (a no-op for one process)."""
    if _multi():
        join()
        torch.distributed.barrier()


def _broadcast(value: Any) -> Any:
    join()
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0, device=_object_device())
    return box[0]


def _object_device() -> torch.device | None:
    # NCCL moves pickled objects through the rank's GPU; gloo through the host
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


def agree(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run by rank 0 alone, its result (or the error it raised)
    handed to every rank. For what rank 0 writes or decides from files it may be writing:
    the other ranks wait here until it is done."""
    if not _multi():
        return fn(*args, **kwargs)
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, fn(*args, **kwargs))
        except Exception as err:  # every rank stops with rank 0's error, not a hang
            outcome = (False, err)
    ok, value = _broadcast(outcome)
    if not ok:
        raise value
    return value


@contextmanager
def held_by_main(factory: Callable[[], AbstractContextManager[T]]) -> Iterator[T]:
    """Enter ``factory()`` on rank 0 only (a lock); every rank gets what it yields."""
    if not _multi():
        with factory() as value:
            yield value
        return
    if not is_main():
        yield _broadcast(None)
        return
    with factory() as value:
        yield _broadcast(value)


def local_rows(batch: dict[str, torch.Tensor], processes: int | None = None,
               rank: int | None = None,
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor | float | None]:
    """This rank's contiguous share of a global training batch, and the factor that makes
    DDP's mean over the ranks of its (scaled) loss the mean loss of the whole batch.

    A share's loss is a mean over its rows (weighted by ``batch["weight"]`` when there), so
    rank r's loss counts ``N * (its rows' weight) / (the batch's weight)``. A batch too small
    to give every rank two rows (an epoch's last; BatchNorm cannot train on one row) is
    rank 0's alone: the other ranks train on two stand-in rows with factor 0, so each still
    runs the backward pass DDP waits for (their BatchNorm statistics are replaced by rank 0's
    at the next forward and before predicting). The factor is None where it is 1 (one
    process; an even share of unweighted rows).
    """
    processes = launched_processes() if processes is None else processes
    rank = launch_rank() if rank is None else rank
    if processes == 1:
        return batch, None
    n = len(next(iter(batch.values())))
    if n < 2 * processes:
        if rank > 0:
            return {k: torch.cat([v[:1], v[:1]]) if n == 1 else v[:2]
                    for k, v in batch.items()}, 0.0
        start, stop = 0, n
    else:
        start, stop = rank * n // processes, (rank + 1) * n // processes
    local = {k: v[start:stop] for k, v in batch.items()}
    weight = batch.get("weight")
    if weight is not None:
        return local, processes * local["weight"].sum() / weight.sum().clamp(min=1e-12)
    factor = processes * (stop - start) / n
    return local, None if factor == 1.0 else factor


def own_batches(loader: Any) -> Iterator[Any]:
    """The batches of ``loader`` this rank predicts: a contiguous block of them (the whole
    loader for one process). The loader is still started on every rank, so its draws from
    the global random stream stay the same as in one process."""
    if not _multi():
        yield from loader
        return
    processes, rank, total = launched_processes(), launch_rank(), len(loader)
    first, stop = rank * total // processes, (rank + 1) * total // processes
    for i, batch in enumerate(loader):
        if i >= stop:
            break
        if i >= first:
            yield batch


def gather_outputs(outputs: list[torch.Tensor], loss_sum: Any,
                   ) -> tuple[np.ndarray, float]:
    """Every rank's outputs of :func:`own_batches`, concatenated in rank order (the rows'
    order), as float64 on every rank, with the loss sums added up."""
    local = torch.cat(outputs).cpu().numpy() if outputs else None
    loss = float(loss_sum) if loss_sum is not None else 0.0
    join()
    parts: list[Any] = [None] * launched_processes()
    torch.distributed.all_gather_object(parts, (local, loss))
    arrays = [a for a, _ in parts if a is not None]
    if not arrays:
        raise ValueError("no rows to predict")
    return np.concatenate(arrays).astype(np.float64), sum(s for _, s in parts)


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (itself for one process)."""
    if not _multi():
        return value
    value = value.clone()
    torch.distributed.all_reduce(value)
    return value / launched_processes()


def bare(model: nn.Module) -> nn.Module:
    """``model`` without its DDP wrapper: a prediction pass runs per rank, and DDP's forward
    would wait for the other ranks' forwards (buffer broadcast)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def seed_rank_streams(seed: int) -> None:
    """In a multi-process launch, give each rank its own random stream for the epoch (dropout
    masks, mixing draws), derived from ``seed``, so ranks do not draw the same masks for
    their shares and a resumed epoch draws what it drew before. One process: untouched."""
    if _multi():
        torch.manual_seed((seed * 7919 + launch_rank() * 104729) % (2**63))


def sync_gradients(model: nn.Module, sync: bool) -> None:
    """Whether the coming step's backward all-reduces the gradients across the ranks: only an
    accumulation window's last micro-batch needs to, the others add to the rank's own
    gradients (what DDP's ``no_sync`` does). A no-op for a model not wrapped by DDP."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model.require_backward_grad_sync = sync


def share_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) in every rank's copy of ``model``
    before a prediction pass. DDP keeps the weights equal, but each rank's last training
    step (and precise BN's dropout draws) moved its statistics by its own rows: without this
    each rank would predict its share of the rows with slightly different weights from the
    ones rank 0 writes. A no-op for one process."""
    if not _multi():
        return
    join()
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)

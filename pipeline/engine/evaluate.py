"""The prediction pass of the training engine: raw outputs for every row of a loader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data.datasets import Batch
from pipeline.engine.distributed import (
    bare,
    gather_outputs,
    launched_processes,
    own_batches,
    share_buffers,
)
from pipeline.engine.losses import LossFn
from pipeline.engine.steps import autocast


@torch.no_grad()
def predict_rows(
    model: nn.Module, loader: DataLoader[Batch], accelerator: Accelerator,
    to_device: Callable[[Batch], Batch], transform: Callable[[Batch], Batch] | None = None,
    loss_fn: LossFn | None = None,
) -> tuple[np.ndarray, float | None]:
    """Raw outputs of ``model`` for every row, as float64, in the rows' order (a loader that
    visits them in another order, e.g. by length, says which in ``row_order``), and their
    mean loss under ``loss_fn`` (None without one). In a multi-process launch each rank
    predicts a block of the batches and every rank gets all rows."""
    model = bare(model)  # DDP's forward would wait for the other ranks' forwards
    share_buffers(model)  # every rank predicts with rank 0's BatchNorm statistics
    model.eval()
    outputs: list[torch.Tensor] = []
    loss: Any = torch.zeros((), device=accelerator.device)
    for batch in own_batches(loader):
        batch = to_device(batch)
        if transform is not None:
            batch = transform(batch)
        with autocast(accelerator):
            out = model(batch)
            if loss_fn is not None:
                loss += loss_fn(out, batch).float() * len(out)
        outputs.append(out.float())  # stays on the device: one copy back at the end
    if launched_processes() > 1:
        result, loss = gather_outputs(outputs, loss)
    elif not outputs:
        raise ValueError("no rows to predict")
    else:
        result = torch.cat(outputs).cpu().numpy().astype(np.float64)
    mean_loss = float(loss) / len(result) if loss_fn is not None else None
    if (order := getattr(loader, "row_order", None)) is not None:
        result[np.asarray(order)] = result.copy()
    return result, mean_loss

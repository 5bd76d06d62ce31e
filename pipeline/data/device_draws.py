"""The random draws of the device augmentations (pipeline.data.device_augment): made on the
CPU from the caller's generator (the same batch on CPU and GPU for one seed), then sent to the
images' device without making the host wait for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Generator, Tensor

_F64 = torch.float64


def uniform(gen: Generator, shape: Sequence[int], lo: float, hi: float) -> Tensor:
    """Uniform draws on [lo, hi) in float64 on the CPU."""
    return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=_F64)


def randint(gen: Generator, shape: Sequence[int], lo: int, hi: int) -> Tensor:
    """Integers in [lo, hi] (inclusive, like ``random.randint``) as float64 on the CPU."""
    return lo + torch.floor(torch.rand(*shape, generator=gen, dtype=_F64) * (hi - lo + 1))


def to_device(values: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """CPU draws on ``device`` without waiting: a copy from pageable memory to a GPU waits
    until the GPU has run everything queued before it, so a few such copies per batch keep
    the host from queueing the next steps ahead (a launch-bound step then costs host time
    plus GPU time instead of the larger of them); from pinned memory it is queued like a
    kernel. The same values either way."""
    if dtype is not None:
        values = values.to(dtype)
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def row_mask(mask: Tensor, device: torch.device) -> Tensor:
    """A CPU row mask as an N x 1 x 1 x 1 mask on ``device``, to broadcast over images."""
    return to_device(mask, device).view(-1, 1, 1, 1)


def fill_tensor(fill: Any) -> Tensor:
    """A number or per-channel tuple as a 1 x C x 1 x 1 (or 1 x 1 x 1 x 1) float tensor."""
    values = [float(fill)] if isinstance(fill, int | float) else [float(v) for v in fill]
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

"""The base of every batched device transform (pipeline.data.device_augment and
pipeline.data.device_colour): a per-row ``p`` draw, then a whole-batch ``apply`` that draws a
fixed count of random numbers whatever the outcome."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Generator, Tensor

from pipeline.data.device_draws import to_device


class DeviceOp(ABC):
    """One transform: decides per row whether it applies (``p``), then transforms the batch."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, images: Tensor, active: Tensor, gen: Generator, force: bool) -> Tensor:
        """Apply to the ``active`` rows (CPU bool mask) that pass ``p`` (all of them if
        ``force``, as albumentations' ``force_apply`` inside ``OneOf``)."""
        passed = torch.rand(images.shape[0], generator=gen, dtype=torch.float64) < self.p
        return self.apply(images, active & (passed | force), gen)

    @abstractmethod
    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        """The batch with the ``chosen`` rows transformed; draws the same count either way."""


def on_rows(images: Tensor, chosen: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """The batch with its ``chosen`` rows (a CPU mask) replaced by ``fn`` of them: only those
    rows are computed (inside a SomeOf each op gets a fraction of them), and the rest are
    copied, which on a CPU costs a fraction of a row-masked ``torch.where``. ``fn`` picks its
    per-row draws with ``chosen``."""
    if bool(chosen.all()):
        return fn(images).to(images.dtype)
    rows = to_device(chosen.nonzero().squeeze(1), images.device)
    return images.index_copy(0, rows, fn(images.index_select(0, rows)).to(images.dtype))


def unsupported(t: Any, argument: str) -> str:
    """The one-line reason a transform's ``argument`` value keeps it off the device."""
    value = getattr(t, argument)
    return f"{type(t).__name__!r} argument {argument}={value!r} has no device version"

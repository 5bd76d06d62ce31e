"""A training step's autocast, backward pass and optimizer update, as a hand-written loop
makes them.

Accelerate's wrappers (``Accelerator.backward``, ``AcceleratedOptimizer``) matter for a loss
scaler (fp16) and for engines this package does not use (DeepSpeed, XLA, LOMO); otherwise
they only add per-step costs, which a launch-bound step (a small model on a GPU) pays in
full: they are bypassed then.
"""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import get_mixed_precision_context_manager


def update(optimizer: Any) -> None:
    """One optimizer update, then the gradients cleared. Without a loss scaler (fp16),
    Accelerate's optimizer wrapper adds nothing but per-call costs (it asks the file system
    twice whether 'lomo_optim' is installed: 10 stat calls, ~0.4 ms, more on slow file
    systems; an ``inspect.signature`` per ``zero_grad``): the wrapped optimizer steps."""
    inner = getattr(optimizer, "optimizer", None)
    target = inner if inner is not None and optimizer.scaler is None else optimizer
    target.step()
    target.zero_grad(set_to_none=True)


def clip_gradients(accelerator: Accelerator, optimizer: Any, parameters: Any,
                   max_norm: float) -> None:
    """Clip the gradient norm of ``parameters`` to ``max_norm``, the loss scale (fp16) taken
    out of the gradients of ``optimizer`` alone first. ``Accelerator.clip_grad_norm_`` unscales
    those of every optimizer it ever prepared: in a later stage the earlier stages' optimizers
    hold the same parameters, so their gradients were divided by the scale once per stage (a
    second stage's updates 65,536 times too small)."""
    accelerator.unscale_gradients(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def backward(accelerator: Accelerator, loss: torch.Tensor) -> None:
    """The backward pass. Accelerate's divides the loss by its accumulation steps (always 1
    here: the loop accumulates; one more kernel and autograd node a step) before its own
    call; without a loss scaler, the loss's backward is all there is to it."""
    if accelerator.scaler is not None:
        accelerator.backward(loss)
    else:
        loss.backward()


class _ReusedAutocast:
    """``accelerator.autocast()``'s context, built once and entered again and again. Building
    a torch.autocast for bf16 on CUDA asks the driver whether the device supports bf16 (~0.5
    ms a step on the machine measured: as much as a small model's whole step); an instance
    may be entered again once exited, so the loop keeps a few (one per nesting level)."""

    def __init__(self, accelerator: Accelerator) -> None:
        self._accelerator = accelerator
        self._free: list[AbstractContextManager[Any]] = []
        self._used: list[AbstractContextManager[Any]] = []

    def __enter__(self) -> None:
        acc = self._accelerator
        context = (self._free.pop() if self._free
                   else get_mixed_precision_context_manager(acc.native_amp,
                                                            acc.autocast_handler))
        self._used.append(context)
        context.__enter__()

    def __exit__(self, *exc: object) -> None:
        context = self._used.pop()
        context.__exit__(*exc)
        self._free.append(context)


_AUTOCASTS: weakref.WeakKeyDictionary[Accelerator, _ReusedAutocast] = \
    weakref.WeakKeyDictionary()


def autocast(accelerator: Accelerator) -> _ReusedAutocast:
    """The mixed-precision context of ``accelerator`` (as ``accelerator.autocast()``), one
    reused object per accelerator."""
    context = _AUTOCASTS.get(accelerator)
    if context is None:
        context = _AUTOCASTS[accelerator] = _ReusedAutocast(accelerator)
    return context

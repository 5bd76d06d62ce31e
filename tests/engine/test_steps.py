"""The training step's autocast, as the loop reuses it (pipeline/engine/steps.py): built once
per accelerator, the same precision as ``accelerator.autocast()``, safe to nest."""

from __future__ import annotations

import torch
from accelerate import Accelerator

from pipeline.engine import steps


def test_the_reused_autocast_is_built_once_and_casts_like_accelerates(monkeypatch) -> None:
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    built = []
    real = steps.get_mixed_precision_context_manager
    monkeypatch.setattr(steps, "get_mixed_precision_context_manager",
                        lambda *a: built.append(1) or real(*a))
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with accelerator.autocast():
        expected = a @ b
    assert expected.dtype == torch.bfloat16
    context = steps.autocast(accelerator)
    assert steps.autocast(accelerator) is context  # one per accelerator
    for _ in range(3):  # entered again and again: one torch.autocast built
        with context:
            out = a @ b
        assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
        assert (a @ b).dtype == torch.float32  # left: autocast off again
    assert len(built) == 1
    with context:  # nested: the inner level gets an instance of its own
        with context:
            assert (a @ b).dtype == torch.bfloat16
        assert (a @ b).dtype == torch.bfloat16  # the outer level is still on
    assert (a @ b).dtype == torch.float32
    assert len(built) == 2


def test_without_mixed_precision_the_reused_autocast_changes_nothing() -> None:
    accelerator = Accelerator(mixed_precision="no", cpu=True)
    a = torch.randn(3, 3)
    with steps.autocast(accelerator):
        assert (a @ a).dtype == torch.float32

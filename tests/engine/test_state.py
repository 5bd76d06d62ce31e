"""pipeline.engine.state: seeding, the random generators' state of a resume point, and
checkpoints written through a temporary file."""

from __future__ import annotations

import random

import numpy as np
import torch

from pipeline.engine.state import rng_state, save_checkpoint, seed_everything, set_rng_state


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


def test_a_restored_rng_state_repeats_the_draws_that_followed_it():
    seed_everything(3)
    _draws()
    state = rng_state()
    expected = [_draws() for _ in range(3)]
    seed_everything(99)  # anything in between: the restore must undo it
    set_rng_state(state)
    assert [_draws() for _ in range(3)] == expected


def test_save_checkpoint_writes_a_loadable_file_and_no_temporary(tmp_path):
    path = tmp_path / "fold0" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"epoch": 2, "weights": torch.arange(4.0)})
    save_checkpoint(path, {"epoch": 3, "weights": torch.arange(5.0)})  # replaces it whole
    state = torch.load(path, weights_only=False)
    assert state["epoch"] == 3
    assert torch.equal(state["weights"], torch.arange(5.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]

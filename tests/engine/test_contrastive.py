"""pipeline.engine.contrastive: every auxiliary loss (finite, backpropagates, zero without
pairs), hand-computed supervised contrastive and batch-hard triplet values, and training with
them end to end."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipeline import train
from pipeline.config import build_config
from pipeline.engine.contrastive import (
    AUX_LOSSES,
    AuxLossConfig,
    batch_hard_triplet,
    supervised_contrastive,
)
from pipeline.errors import ConfigError


@pytest.mark.parametrize("name", AUX_LOSSES.list())
def test_every_aux_loss_is_a_finite_scalar_that_backpropagates(name):
    torch.manual_seed(0)
    features = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    loss = AUX_LOSSES.get(name)(features, labels)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0


@pytest.mark.parametrize("name", AUX_LOSSES.list())
def test_every_aux_loss_is_zero_and_differentiable_without_positives(name):
    features = torch.randn(5, 3, requires_grad=True)
    loss = AUX_LOSSES.get(name)(features, torch.arange(5))  # every row its own class
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()  # still part of the graph: the task loss beside it backpropagates
    assert features.grad is not None and torch.equal(features.grad, torch.zeros(5, 3))


@pytest.mark.parametrize("name", AUX_LOSSES.list())
def test_every_aux_loss_config_takes_its_own_params_only(name):
    own = list(inspect.signature(AUX_LOSSES.get(name)).parameters)[2:]
    assert own  # temperature, margin, ...
    assert AuxLossConfig(name=name, params=dict.fromkeys(own, 0.5)).params == dict.fromkeys(
        own, 0.5)
    with pytest.raises(ValidationError, match=r"has no parameter\(s\) \['gamma'\]"):
        AuxLossConfig(name=name, params={"gamma": 1.0})


def test_supervised_contrastive_matches_a_hand_computation():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    t = 0.5
    z = f / f.norm(dim=1, keepdim=True)
    sim = (z @ z.T).numpy() / t
    # anchors 0 and 1 have one positive each (each other); anchor 2 has none: left out
    terms = []
    for a, pos in ((0, 1), (1, 0)):
        others = [j for j in range(3) if j != a]
        denom = math.log(sum(math.exp(sim[a, j]) for j in others))
        terms.append(-(sim[a, pos] - denom))
    expected = sum(terms) / 2
    got = supervised_contrastive(f, labels, temperature=t).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_batch_hard_triplet_matches_a_hand_computation():
    f = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    margin = 0.5
    # anchor 0: farthest positive 3 (row 1), nearest negative 1 (row 2) -> 3 - 1 + .5
    # anchor 1: positive 3, nearest negative 2 (row 2)                  -> 3 - 2 + .5
    # anchor 2: positive |(1,0)-(0,2)| = sqrt 5, nearest negative 1    -> sqrt5 - 1 + .5
    # anchor 3: positive sqrt 5, nearest negative 2 (row 0)            -> sqrt5 - 2 + .5
    s5 = math.sqrt(5)
    expected = np.mean([2.5, 1.5, s5 - 0.5, s5 - 1.5])
    assert batch_hard_triplet(f, labels, margin).item() == pytest.approx(expected, rel=1e-5)


def test_losses_skip_anchors_without_pairs_and_pull_classes_apart():
    f = torch.randn(4, 3, requires_grad=True)
    single = torch.tensor([0, 1, 2, 3])
    assert supervised_contrastive(f, single).item() == 0.0
    assert batch_hard_triplet(f, single).item() == 0.0
    torch.manual_seed(0)
    x = torch.randn(16, 4, requires_grad=True)
    labels = torch.arange(16) % 2
    opt = torch.optim.SGD([x], lr=0.5)
    first = batch_hard_triplet(x, labels).item()
    for _ in range(50):
        loss = supervised_contrastive(x, labels) + batch_hard_triplet(x, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert batch_hard_triplet(x, labels).item() < first


@pytest.mark.parametrize("modality", ["image", "text"])
def test_aux_losses_train_end_to_end(competition_factory, modality):
    data = competition_factory(modality, "multiclass")
    data["train"]["aux_losses"] = [{"name": "supcon", "weight": 0.2},
                                   {"name": "triplet", "weight": 0.2,
                                    "params": {"margin": 0.5}}]
    assert np.isfinite(train.run(build_config(data)))


def test_aux_losses_need_classes(competition_factory):
    data = competition_factory("tabular", "regression")
    data["train"]["aux_losses"] = [{"name": "triplet"}]
    with pytest.raises(ConfigError, match="aux_losses"):
        build_config(data)

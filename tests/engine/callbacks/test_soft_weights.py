"""SoftMatch's Gaussian weights (``train.consistency.thresholds: soft``): the weights' maths,
their running state, FixMatch's loss with them, and the settings they refuse."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import build_config
from pipeline.engine.callbacks.consistency_methods import ConsistencyConfig, FixMatch
from pipeline.engine.callbacks.consistency_thresholds import SoftWeights
from pipeline.errors import ConfigError
from tests.engine.callbacks.test_consistency_methods import CE, _fixed_batches, _Spy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rows_under_the_mean_confidence_weigh_by_a_gaussian_and_the_rest_weigh_one():
    w = SoftWeights(momentum=0.9)
    w.update(torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.8, 0.2]]))  # top 0.9, 0.7, 0.8
    assert w.mu == pytest.approx(0.8) and w.var == pytest.approx(0.01)  # from the first batch
    rows = torch.tensor([[0.95, 0.05], [0.8, 0.2], [0.75, 0.25], [0.6, 0.4]])
    weights = w.mask(rows).squeeze(1).tolist()
    # at 2 sigma: exp(-(c - mu)^2 x 4 / (2 var)); 0.6 is 2 sd under: exp(-8) < the 0.05 floor
    assert weights == pytest.approx([1.0, 1.0, math.exp(-0.5), 0.0])
    w.update(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))  # then an exponential moving average
    assert w.mu == pytest.approx(0.9 * 0.8 + 0.1 * 0.5)
    assert w.var == pytest.approx(0.9 * 0.01)
    again = SoftWeights(momentum=0.9)
    again.load_state_dict(w.state_dict())  # a resumed run weighs the same
    assert again.mask(rows).tolist() == w.mask(rows).tolist()


def test_fixmatch_with_soft_weights_weighs_each_rows_loss():
    model, labelled, weak, strong = _fixed_batches()
    cfg = ConsistencyConfig(method="fixmatch", thresholds="soft", alignment=False)
    method = FixMatch(cfg, "multiclass", 3, False)
    assert isinstance(method.adaptive, SoftWeights)
    loss, step = method.loss(model, labelled, {"weak/x": weak, "strong/x": strong}, CE, 2.0)
    with torch.no_grad():
        probs = (weak @ model.weight).softmax(1)
    weights = SoftWeights(cfg.momentum)
    weights.update(probs)
    expected_w = weights.mask(probs).squeeze(1)
    # the two confident rows weigh 1, the two unsure ones (top 0.38, 0.35) a quarter or less
    assert expected_w.tolist() == pytest.approx([1.0, 0.2503, 1.0, 0.1985], abs=1e-4)
    per_row = F.cross_entropy(strong @ model.weight, probs.argmax(1), reduction="none")
    expected = CE(model(labelled), labelled) + 2.0 * (per_row * expected_w).sum() / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert float(step.trusted) == pytest.approx(float(expected_w.mean()))
    assert float(step.threshold) == pytest.approx(weights.mu)  # the log's threshold: mu
    assert set(method.state_dict()) == {"adaptive"}  # the resume point holds mu and var


def test_soft_weights_refuse_a_fixed_threshold_and_tasks_without_softmax_classes(
        competition_factory):
    with pytest.raises(ValueError, match="'thresholds: soft' sets its own"):
        ConsistencyConfig(method="fixmatch", thresholds="soft", threshold=0.9)
    data = competition_factory("tabular", "binary", n_train=16, n_test=8)
    data["train"]["consistency"] = {"method": "fixmatch", "thresholds": "soft"}
    with pytest.raises(ConfigError, match="'soft' and 'alignment' need softmax classes"):
        build_config(data)


def test_the_strong_pass_skips_the_rows_under_the_weights_floor():
    _, labelled, _, _ = _fixed_batches()
    model = _Spy(torch.tensor([[3.0, 0.0, -3.0], [0.0, 0.2, 0.0]]))
    # four confident rows (top 0.998) and an unsure one (0.38): 6.4 variances under the mean
    weak = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [2.0, 1.0], [-2.0, 1.0], [0.0, 1.0]])
    cfg = ConsistencyConfig(method="fixmatch", thresholds="soft", alignment=False)
    _, step = FixMatch(cfg, "multiclass", 3, False).loss(
        model, labelled, {"weak/x": weak, "strong/x": weak + 0.1}, CE, 1.0)
    assert model.rows == [5, 4, 4]  # the teacher's 5 rows, the labelled 4, the strong 4
    assert float(step.trusted) == pytest.approx(0.8)

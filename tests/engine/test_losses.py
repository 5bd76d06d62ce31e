"""pipeline.engine.losses: every registered loss on every task it fits (a finite scalar that
backpropagates, row weights), parameter checks, and hand-computed values."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from pydantic import ValidationError

from pipeline.engine.losses import LOSSES, LossConfig, build_loss
from pipeline.models import EncoderConfig, ModelConfig, build_model

LOSS_TASKS = [(name, task) for name in LOSSES.list() for task in LOSSES.get(name).tasks]


def _outputs_and_target(task: str, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Random model outputs and targets laid out as the task's batches are."""
    g = torch.Generator().manual_seed(0)
    if task == "multiclass":
        return torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)
    if task == "binary":
        return torch.randn(n, 1, generator=g), torch.randint(0, 2, (n, 1), generator=g).float()
    if task == "multilabel":
        return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n, 3), generator=g).float()
    assert task == "regression"
    return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)


def test_the_loss_loop_covers_every_task():
    assert {task for _, task in LOSS_TASKS} == {"binary", "multiclass", "multilabel",
                                                 "regression"}
    assert all(LOSSES.get(name).tasks for name in LOSSES)


@pytest.mark.parametrize(("name", "task"), LOSS_TASKS)
def test_every_loss_gives_a_finite_scalar_with_finite_gradients(name, task):
    outputs, target = _outputs_and_target(task)
    outputs.requires_grad_(True)
    loss = build_loss(name, task)(outputs, {"target": target})
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()
    assert outputs.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "task"), LOSS_TASKS)
def test_a_row_of_weight_zero_does_not_change_the_loss(name, task):
    outputs, target = _outputs_and_target(task)
    weight = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.5, 1.0])
    loss_fn = build_loss(name, task)
    weighted = loss_fn(outputs, {"target": target, "weight": weight})
    # row 0 changed beyond recognition: its weight 0 keeps it out of the loss
    moved_out, moved_target = outputs.clone(), target.clone()
    moved_out[0] = 25.0
    if task == "multiclass":
        moved_target[0] = (target[0] + 1) % 4
    elif task == "regression":
        moved_target[0] = -30.0
    else:
        moved_target[0] = 1 - target[0]
    moved = loss_fn(moved_out, {"target": moved_target, "weight": weight})
    assert moved.item() == pytest.approx(weighted.item(), rel=1e-6)
    # and the weights are a weighted mean of the rows: the others without row 0 agree
    rest = loss_fn(outputs[1:], {"target": target[1:], "weight": weight[1:]})
    assert weighted.item() == pytest.approx(rest.item(), rel=1e-6)
    # while unit weights are the plain mean
    plain = loss_fn(outputs, {"target": target})
    ones = loss_fn(outputs, {"target": target, "weight": torch.ones(6)})
    assert ones.item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize(("name", "task", "params", "soft"), [
    ("cross_entropy", "multiclass", {}, False),
    ("cross_entropy", "multiclass", {"smoothing": 0.1}, False),
    ("cross_entropy", "multiclass", {"smoothing": 0.1}, True),  # probabilities as targets
    ("bce", "binary", {}, False), ("bce", "multilabel", {"smoothing": 0.2}, False)])
def test_an_unweighted_batch_takes_the_mean_inside_with_the_weighted_value_and_gradient(
        name, task, params, soft):
    """Without row or class weights the loss asks torch for its mean (fewer kernels a step,
    issue 11); its value and gradient are those of the weighted path at unit weights."""
    outputs, target = _outputs_and_target(task)
    if soft:
        target = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), 1)
    loss_fn = build_loss(name, task, params)
    grads = []
    for batch in ({"target": target}, {"target": target, "weight": torch.ones(6)}):
        leaf = outputs.clone().requires_grad_(True)
        loss = loss_fn(leaf, batch)
        loss.backward()
        grads.append((loss.detach(), leaf.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", LOSSES.list())
def test_every_loss_config_refuses_unknown_params_and_takes_its_own(name):
    with pytest.raises(ValidationError, match=rf"loss '{name}' has no parameter\(s\) \['gamme'\]"):
        LossConfig(name=name, params={"gamme": 2.0})
    # every parameter of the factory, at its default, is accepted and builds a working loss
    defaults = {p.name: p.default
                for p in inspect.signature(LOSSES.get(name).factory).parameters.values()}
    cfg = LossConfig(name=name, params=defaults)
    task = LOSSES.get(name).tasks[0]
    outputs, target = _outputs_and_target(task)
    by_default = build_loss(name, task)(outputs, {"target": target})
    by_params = build_loss(cfg.name, task, cfg.params)(outputs, {"target": target})
    assert math.isfinite(by_params.item())
    assert by_params.item() == pytest.approx(by_default.item(), rel=1e-6)


def test_loss_config_names_and_refusals():
    assert LossConfig().names() == ["auto"]
    cfg = LossConfig(name="sum", terms=[{"name": "focal", "params": {"gamma": 1.0}},
                                        {"name": "cross_entropy", "weight": 0.5}])
    assert cfg.names() == ["focal", "cross_entropy"]
    with pytest.raises(ValidationError, match="Did you mean 'focal'"):
        LossConfig(name="focl")
    with pytest.raises(ValidationError, match="needs 'terms'"):
        LossConfig(name="sum")
    with pytest.raises(ValidationError, match="takes no 'params'"):
        LossConfig(params={"smoothing": 0.1})
    with pytest.raises(ValidationError, match=r"has no parameter\(s\) \['margin'\]"):
        LossConfig(name="sum", terms=[{"name": "mse", "params": {"margin": 1.0}}])


def test_focal_with_gamma_zero_equals_cross_entropy_and_bce():
    torch.manual_seed(0)
    logits = torch.randn(16, 4)
    target = torch.randint(0, 4, (16,))
    ce = build_loss("cross_entropy", "multiclass")(logits, {"target": target})
    focal0 = build_loss("focal", "multiclass", {"gamma": 0.0})(logits, {"target": target})
    assert focal0.item() == pytest.approx(ce.item(), rel=1e-6)
    focal2 = build_loss("focal", "multiclass", {"gamma": 2.0})(logits, {"target": target})
    assert focal2.item() < ce.item()
    bl, bt = torch.randn(16, 3), torch.randint(0, 2, (16, 3)).float()
    bce = build_loss("bce", "multilabel")(bl, {"target": bt})
    f0 = build_loss("focal", "multilabel", {"gamma": 0.0})(bl, {"target": bt})
    assert f0.item() == pytest.approx(bce.item(), rel=1e-6)


def test_label_smoothing_and_temperature_match_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    eps = 0.1
    logp = torch.log_softmax(logits, dim=1)[0]
    soft = torch.tensor([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -(soft * logp).sum().item()
    got = build_loss("cross_entropy", "multiclass", {"smoothing": eps})(logits, {"target": target})
    assert got.item() == pytest.approx(expected, rel=1e-6)
    bce = build_loss("bce", "binary", {"smoothing": 0.2})(torch.tensor([[0.0]]),
                                                          {"target": torch.tensor([[1.0]])})
    assert bce.item() == pytest.approx(math.log(2), rel=1e-6)  # p=0.5 for any target
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="timm:test_resnet")],
                                    head={"temperature": 2.0}), 3, None)
    model.eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = model.head(model.encoders[0]({"image": image}))
        scaled = model({"image": image})
    torch.testing.assert_close(scaled, raw / 2.0)
    hand = -torch.log_softmax(raw / 2.0, dim=1)[0, 1].item()
    with torch.no_grad():
        got_t = build_loss("cross_entropy", "multiclass")(scaled[:1], {"target": torch.tensor([1])})
    assert got_t.item() == pytest.approx(hand, rel=1e-5)


def test_weighted_sum_of_losses():
    logits, target = torch.randn(8, 3), torch.randint(0, 3, (8,))
    batch = {"target": target}
    total = build_loss("sum", "multiclass", terms=[
        ("cross_entropy", 0.3, {}), ("focal", 0.7, {"gamma": 2.0})])(logits, batch)
    ce = build_loss("cross_entropy", "multiclass")(logits, batch)
    fo = build_loss("focal", "multiclass", {"gamma": 2.0})(logits, batch)
    assert total.item() == pytest.approx(0.3 * ce.item() + 0.7 * fo.item(), rel=1e-6)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_focal_softmax_alpha_list_weights_each_class_term():
    """issue 12 item 18: with softmax a per-class alpha list weighs each row's term by its
    class's alpha (hand-computed on 3 rows); a scalar alpha only rescales, as before."""
    logits = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.5], [-0.5, 0.2, 1.5]]
    target = [0, 1, 2]
    alpha = [0.25, 0.5, 2.0]
    terms = []
    for row, y in zip(logits, target, strict=True):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        terms.append(-alpha[y] * (1 - p) ** 2 * math.log(p))
    batch = {"target": torch.tensor(target)}
    got = build_loss("focal", "multiclass", {"gamma": 2.0, "alpha": alpha})(
        torch.tensor(logits), batch)
    assert got.item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    plain = build_loss("focal", "multiclass", {"gamma": 2.0})(torch.tensor(logits), batch)
    scalar = build_loss("focal", "multiclass", {"gamma": 2.0, "alpha": 0.25})(
        torch.tensor(logits), batch)
    assert scalar.item() == pytest.approx(0.25 * plain.item(), rel=1e-6)
    with pytest.raises(ValueError, match="lists 2 weights for 3 output columns"):
        build_loss("focal", "multiclass", {"alpha": [1.0, 2.0]})(torch.tensor(logits), batch)


def test_focal_sigmoid_alpha_list_gives_each_label_its_alpha():
    """issue 12 item 18: with sigmoids an alpha list gives label j its own alpha_j
    (positives weighed by alpha_j, negatives by 1 - alpha_j); a list of one repeated value
    equals the scalar alpha (torchvision's sigmoid_focal_loss)."""
    logits = [[1.0, -0.5], [-2.0, 0.3], [0.4, 2.5]]
    target = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    alpha = [0.25, 0.9]
    rows = []
    for row, ys in zip(logits, target, strict=True):
        cells = []
        for j, (z, t) in enumerate(zip(row, ys, strict=True)):
            p_t = _sigmoid(z) if t == 1 else 1 - _sigmoid(z)
            a_t = alpha[j] if t == 1 else 1 - alpha[j]
            cells.append(-a_t * (1 - p_t) ** 2 * math.log(p_t))
        rows.append(sum(cells) / len(cells))
    batch = {"target": torch.tensor(target)}
    got = build_loss("focal", "multilabel", {"gamma": 2.0, "alpha": alpha})(
        torch.tensor(logits), batch)
    assert got.item() == pytest.approx(sum(rows) / 3, rel=1e-5)
    same = build_loss("focal", "multilabel", {"gamma": 2.0, "alpha": [0.3, 0.3]})(
        torch.tensor(logits), batch)
    scalar = build_loss("focal", "multilabel", {"gamma": 2.0, "alpha": 0.3})(
        torch.tensor(logits), batch)
    assert same.item() == pytest.approx(scalar.item(), rel=1e-6)
    assert same.item() != pytest.approx(got.item(), rel=1e-3)


def test_class_weights_written_as_integers_weigh_like_floats():
    """``class_weights: [1, 2]`` (YAML integers) made a Long weight tensor, and every step
    stopped with "expected scalar type Float but found Long"; they now weigh as [1.0, 2.0]."""
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    batch = {"target": torch.tensor([0, 1, 1])}
    as_ints = build_loss("cross_entropy", "multiclass", {"class_weights": [1, 2]})
    as_floats = build_loss("cross_entropy", "multiclass", {"class_weights": [1.0, 2.0]})
    torch.testing.assert_close(as_ints(logits, batch), as_floats(logits, batch))

"""pipeline.engine.optim: every timm optimizer through our parameter groups, every schedule
in SCHEDULERS (values, warmup, resume state), and the per-encoder / layer-decay groups."""

from __future__ import annotations

import importlib.util
import io
import math

import numpy as np
import pytest
import timm.optim.kron
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from timm.optim import list_optimizers
from torch import nn

from pipeline.engine.callbacks.averaging import cycle_end_epochs
from pipeline.engine.optim import (
    SCHEDULERS,
    OptimizerConfig,
    SchedulerConfig,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)
from pipeline.models import EncoderConfig, ModelConfig, build_model

OPTIMIZERS = [
    ("momentum", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adamw", {}), ("radam", {}), ("lars", {}), ("lamb", {}),
    ("lookahead_adamw", {}), ("lookahead_sgd", {"momentum": 0.9}),
]

# Optimizers that cannot take a plain step here, and why. Each is skipped with its reason.
_CUDA_ONLY = "needs CUDA and {package} (timm asserts CUDA before building it)"
CANNOT_STEP_HERE: dict[str, str] = {
    # second order: its step reads Hessian-vector products, so the backward pass must keep
    # the graph (loss.backward(create_graph=True)); Trainer.train_epoch does a plain backward,
    # so OptimizerConfig refuses it (test_a_second_order_optimizer_is_refused_saying_why)
    "adahessian": "refused by OptimizerConfig: needs loss.backward(create_graph=True)",
}
if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
    CANNOT_STEP_HERE.update({n: _CUDA_ONLY.format(package="bitsandbytes")
                             for n in list_optimizers() if n.startswith("bnb")})
if not torch.cuda.is_available() or importlib.util.find_spec("apex") is None:
    CANNOT_STEP_HERE.update({n: _CUDA_ONLY.format(package="apex")
                             for n in list_optimizers() if n.startswith("fused")})

# Per-optimizer settings, only where the shared ones (lr 0.05, defaults) cannot show progress
# in a few steps.
OPTIMIZER_OVERRIDES: dict[str, tuple[float, dict[str, float]]] = {
    # Adadelta's step starts at ~lr * sqrt(eps) and grows with the updates it has made; at its
    # usual lr (1.0) and eps 1e-6 it barely moves in 30 steps, so give it a larger eps.
    "adadelta": (1.0, {"eps": 1e-4}),
}


def test_the_skip_list_and_overrides_name_existing_optimizers():
    # the skip list and the overrides name real optimizers, and the runnable set is not empty
    known = set(list_optimizers())
    assert set(CANNOT_STEP_HERE) <= known
    assert set(OPTIMIZER_OVERRIDES) <= known
    assert len(known - set(CANNOT_STEP_HERE)) > 50


@pytest.mark.parametrize(("name", "params"), OPTIMIZERS)
@pytest.mark.usefixtures("one_thread")
def test_every_optimizer_lowers_the_loss(name, params, make_toy, toy_model_config):
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    model = make_toy()
    cfg = OptimizerConfig(name=name, lr=0.05 if "sgd" in name or name == "momentum" else 0.01,
                          weight_decay=0.0, params=params)
    opt = build_optimizer(parameter_groups(model, toy_model_config, cfg), cfg)  # type: ignore[arg-type]
    first = F.mse_loss(model({"num": x}), y).item()
    for _ in range(150):
        loss = F.mse_loss(model({"num": x}), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert F.mse_loss(model({"num": x}), y).item() < 0.5 * first


class _Linear(nn.Module):
    """Least squares on a linear head: a convex loss with a 2-d weight (Muon orthogonalises
    matrices) and a 1-d bias (no weight decay group)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([nn.Identity()])
        self.head = nn.Linear(8, 4)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["num"])


def _convex_descent(name: str, steps: int, toy_model_config) -> tuple[float, float, object]:
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = x[:, :4] * 2 - x[:, 4:]
    model = _Linear()
    lr, params = OPTIMIZER_OVERRIDES.get(name.removeprefix("lookahead_"), (0.05, {}))
    cfg = OptimizerConfig(name=name, lr=lr, weight_decay=0.0, params=params)
    opt = build_optimizer(parameter_groups(model, toy_model_config, cfg), cfg)  # type: ignore[arg-type]
    first = F.mse_loss(model({"num": x}), y).item()
    for _ in range(steps):
        loss = F.mse_loss(model({"num": x}), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, F.mse_loss(model({"num": x}), y).item(), opt


@pytest.mark.parametrize("name", list_optimizers())
@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore:It is highly recommended to have 'opt_einsum'")  # kron
def test_every_timm_optimizer_lowers_a_convex_loss(name, toy_model_config, monkeypatch):
    if name in CANNOT_STEP_HERE:
        pytest.skip(CANNOT_STEP_HERE[name])
    # Kron torch.compiles its preconditioner maths on first use (over a minute on a CPU);
    # the eager functions compute the same thing.
    monkeypatch.setattr(timm.optim.kron, "has_dynamo", False)
    first, last, _ = _convex_descent(name, 30, toy_model_config)
    assert math.isfinite(last)
    assert last < 0.75 * first, (name, first, last)
    # the same optimizer inside Lookahead (its default k=6: one slow-weight sync in 6 steps)
    first, last, opt = _convex_descent(f"lookahead_{name}", 6, toy_model_config)
    assert type(opt).__name__ == "Lookahead"
    assert last < first, (name, first, last)


def test_a_misspelt_optimizer_is_refused_with_a_hint():
    with pytest.raises(ValidationError, match=r"'adamx'\. Did you mean 'adamax'"):
        OptimizerConfig(name="adamx")
    with pytest.raises(ValidationError, match="lookahead_"):
        OptimizerConfig(name="lookahead_nonesuch")


def _lrs(sched_cfg: SchedulerConfig, epochs: int, per_epoch: int, scores=None) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [param], "lr": 1.0}], lr=1.0)
    schedule = build_scheduler(opt, sched_cfg, epochs, per_epoch, greater_is_better=True)
    lrs = []
    for epoch in range(epochs):
        for update in range(1, per_epoch + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.after_update(epoch * per_epoch + update)
        schedule.after_epoch(epoch + 1, scores[epoch] if scores else 0.0)
    lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_cosine_with_warmup_gives_the_expected_lr():
    lrs = _lrs(SchedulerConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.0), 5, 10)
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(0.5)  # half-way through a linear warmup
    assert lrs[10] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 50)))
    assert lrs[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 50)))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_linear_constant_and_onecycle_schedules():
    lin = _lrs(SchedulerConfig(name="linear", min_lr_ratio=0.0), 2, 10)
    assert lin[10] == pytest.approx(0.5)
    const = _lrs(SchedulerConfig(name="constant"), 2, 10)
    assert set(const) == {1.0}
    one = _lrs(SchedulerConfig(name="onecycle", pct_start=0.25), 4, 10)
    assert int(np.argmax(one)) == pytest.approx(10, abs=1)  # peak at 25% of 40 updates
    assert max(one) == pytest.approx(1.0, rel=1e-3)
    assert one[0] < 0.1 and one[-1] < 1e-3


def test_warm_restarts_return_to_the_peak_each_cycle():
    lrs = _lrs(SchedulerConfig(name="restarts", cycle_epochs=2, min_lr_ratio=0.0), 6, 10)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[19] < 0.01  # end of the first cycle
    assert lrs[20] == pytest.approx(1.0)  # restart
    assert lrs[40] == pytest.approx(1.0)
    assert cycle_end_epochs([6], [(2.0, 1.0)]) == [2, 4, 6]
    assert cycle_end_epochs([3, 7], [None, (1.0, 2.0)]) == [4, 6, 10]


def test_plateau_cuts_the_lr_after_patience_epochs_without_gain():
    cfg = SchedulerConfig(name="plateau", patience=1, factor=0.5, min_lr_ratio=0.0)
    lrs = _lrs(cfg, 5, 2, scores=[0.5, 0.6, 0.6, 0.6, 0.6])
    per_epoch = lrs[::2]  # lr during epochs 1..5, then after the last
    # best 0.6 at epoch 2; epochs 3 and 4 bring no gain: more than `patience` -> halve
    assert per_epoch == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5])


@pytest.mark.parametrize("name", SCHEDULERS.list())
def test_every_schedule_stays_finite_and_warms_up_to_the_peak(name):
    lrs = _lrs(SchedulerConfig(name=name, warmup_epochs=1), 3, 10)
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs), lrs
    assert max(lrs) <= 1.0 + 1e-9  # never above the configured lr
    if name == "plateau":
        # per epoch, on the validation score: no warmup, starts at the peak
        assert lrs[0] == max(lrs) == 1.0
    else:
        # warmup (onecycle: its own ramp over pct_start) starts below the peak and rises
        assert lrs[0] < 0.5 * max(lrs)
        assert lrs[0] < lrs[1] < lrs[2] < lrs[3]


def _driven(name: str) -> tuple[torch.optim.Optimizer, object]:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [param], "lr": 1.0}], lr=1.0)
    cfg = SchedulerConfig(name=name, warmup_epochs=1, patience=1, factor=0.5)
    return opt, build_scheduler(opt, cfg, 4, 5, greater_is_better=True)


def _drive(opt, schedule, epochs: range, per_epoch: int, scores: list[float]) -> list[float]:
    lrs = []
    for epoch in epochs:
        for update in range(1, per_epoch + 1):
            opt.step()
            schedule.after_update(epoch * per_epoch + update)
            lrs.append(opt.param_groups[0]["lr"])
        schedule.after_epoch(epoch + 1, scores[epoch])
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("name", SCHEDULERS.list())
def test_every_schedule_resumes_from_its_state_dict(name):
    # A resume point restores the optimizer, then the schedule, into freshly built ones
    # (Trainer._load_resume_state); the rest of the run must see the same learning rates.
    # Scores: best at epoch 1, no gain after: with patience 1 plateau cuts after epoch 3,
    # which a resume after epoch 2 only reproduces if the epochs without gain carry over.
    scores = [0.6, 0.6, 0.6, 0.6]
    opt, schedule = _driven(name)
    _drive(opt, schedule, range(2), 5, scores)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "schedule": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    expected = _drive(opt, schedule, range(2, 4), 5, scores)

    opt2, schedule2 = _driven(name)
    opt2.load_state_dict(saved["optimizer"])
    schedule2.load_state_dict(saved["schedule"])
    assert _drive(opt2, schedule2, range(2, 4), 5, scores) == pytest.approx(expected)
    if name == "plateau":
        assert expected[-1] == pytest.approx(0.5)  # the cut happened after the resume point


def test_a_misspelt_scheduler_is_refused_naming_the_close_one():
    with pytest.raises(ValidationError, match="Did you mean 'cosine'"):
        SchedulerConfig(name="cosin")


def test_discriminative_rates_layer_decay_and_no_decay_groups(make_two_encoder_model):
    model, cfg = make_two_encoder_model()
    optim = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    groups = parameter_groups(model, cfg, optim)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    head_w = model.head[-1].weight
    assert lr_of[id(head_w)] == (1e-3, 0.05)
    assert lr_of[id(model.head[-1].bias)] == (1e-3, 0.0)
    body = model.encoders[0].body
    first, last = body.conv1[0].weight, body.layer4[-1].conv2.weight
    depths = sorted({lr for p in model.encoders[0].parameters() for lr in [lr_of[id(p)][0]]})
    assert lr_of[id(last)][0] == pytest.approx(1e-4)  # the top block keeps the encoder's lr
    assert lr_of[id(first)][0] == pytest.approx(1e-4 * 0.5 ** (len(depths) - 1))
    assert all(lr_of[id(p)][1] == 0.0 for n, p in body.named_parameters() if p.ndim == 1)
    effnet_lrs = {lr_of[id(p)][0] for p in model.encoders[1].parameters()}
    assert max(effnet_lrs) == pytest.approx(1e-3)  # second encoder: the optimizer's lr


@pytest.mark.parametrize("name", ["adahessian", "lookahead_adahessian"])
def test_a_second_order_optimizer_is_refused_saying_why(name):
    """issue 12 (small): AdaHessian needs a backward pass with create_graph, which the loop
    never makes; its config is refused up front instead of failing at the first step."""
    with pytest.raises(ValidationError, match=r"'adahessian' needs second-order gradients"):
        OptimizerConfig(name=name)
    # and it is not offered as a near miss of a misspelling
    with pytest.raises(ValidationError) as err:
        OptimizerConfig(name="adahesian")
    assert "'adahessian'" not in str(err.value)


@pytest.mark.parametrize("name", SCHEDULERS.list())
def test_a_schedule_loads_the_older_bare_state_of_its_scheduler(name):
    """issue 12 (plateau resume): a resume point written before the schedule state was
    wrapped holds timm's bare state dict; it still loads."""
    scores = [0.6, 0.6, 0.6, 0.6]
    opt, schedule = _driven(name)
    _drive(opt, schedule, range(2), 5, scores)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(),
                "schedule": schedule.scheduler.state_dict()}, buffer)  # the old layout
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    expected = _drive(opt, schedule, range(2, 4), 5, scores)

    opt2, schedule2 = _driven(name)
    opt2.load_state_dict(saved["optimizer"])
    schedule2.load_state_dict(saved["schedule"])
    if name == "plateau":
        # the old layout never held the epochs without gain: only the best score carries
        assert schedule2.scheduler.lr_scheduler.best == pytest.approx(0.6)
    else:
        assert _drive(opt2, schedule2, range(2, 4), 5, scores) == pytest.approx(expected)


@pytest.fixture(scope="module")
def tiny_vit() -> tuple[nn.Module, ModelConfig]:
    """A randomly initialised ViT-Tiny on 32-px images (built once: its init takes seconds)."""
    cfg = ModelConfig(encoders=[EncoderConfig(
        name="timm:vit_tiny_patch16_224", pretrained=False,
        params={"img_size": 32, "patch_size": 8})])
    return build_model(cfg, 3, None), cfg


@pytest.mark.parametrize("layer_decay", [None, 0.75])
def test_a_vit_position_embedding_and_class_token_get_no_weight_decay(tiny_vit, layer_decay):
    """issue 12 (small): what a timm model lists in no_weight_decay() (a ViT's pos_embed and
    cls_token) gets no weight decay; its other 2-d weights keep it, with layer decay too."""
    model, cfg = tiny_vit
    optim = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, layer_decay=layer_decay)
    groups = parameter_groups(model, cfg, optim)  # type: ignore[arg-type]
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert params["encoders.0.body.pos_embed"].ndim == 3  # a plain ndim rule would decay it
    assert decay_of[id(params["encoders.0.body.pos_embed"])] == 0.0
    assert decay_of[id(params["encoders.0.body.cls_token"])] == 0.0
    for name in ("encoders.0.body.patch_embed.proj.weight",
                 "encoders.0.body.blocks.0.attn.qkv.weight",
                 "encoders.0.body.blocks.11.mlp.fc2.weight", "head.1.weight"):
        assert decay_of[id(params[name])] == 0.05, name
    assert decay_of[id(params["encoders.0.body.blocks.0.norm1.weight"])] == 0.0
    # every trainable parameter is in exactly one group
    assert sorted(decay_of) == sorted(id(p) for p in model.parameters())
    assert sum(len(g["params"]) for g in groups) == len(params)


@pytest.mark.parametrize(("name", "params", "fused"), [
    ("adamw", {}, True), ("adam", {}, True),
    ("adamw", {"foreach": True}, None),  # the config's choice wins
    ("adamw", {"fused": False}, False), ("sgd", {}, None),
])
def test_adam_and_adamw_take_the_fused_kernel_on_the_cpu(name, params, fused):
    """The fused kernel makes a resnet18 AdamW step ~2.5x faster on one CPU thread; its
    update is Adam's (same values as the loop kernel up to rounding)."""
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(8, 4))
    start = weight.detach().clone()
    opt = build_optimizer([{"params": [weight]}], OptimizerConfig(name=name, lr=0.1,
                                                                  params=params))
    assert opt.defaults.get("fused") == fused
    if fused:
        loop = nn.Parameter(weight.detach().clone())
        reference = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(
            [loop], lr=0.1, weight_decay=OptimizerConfig(name=name).weight_decay, foreach=False)
        for o, w in ((opt, weight), (reference, loop)):
            for _ in range(3):
                o.zero_grad()
                (w ** 2).sum().backward()
                o.step()
        assert (weight.detach() - start).abs().min() > 0.1  # 3 steps of lr 0.1 moved each
        torch.testing.assert_close(weight.detach(), loop.detach(), rtol=1e-5, atol=1e-6)


def test_groups_with_the_same_settings_are_one_and_update_as_before(make_two_encoder_model):
    """issue 11: each optimizer group launches its own kernels; groups whose settings match
    (an encoder and a head at one rate) are merged, and the update is the same."""
    model, cfg = make_two_encoder_model()
    optim = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05)
    groups = parameter_groups(model, cfg, optim)
    assert len(groups) == 24  # per encoder block (its depth) and head, with and without decay
    merged = build_optimizer(groups, optim)
    # the first encoder at its own rate; the second and the head at the optimizer's share
    assert [(g["lr"], g["weight_decay"]) for g in merged.param_groups] == [
        (1e-4, 0.05), (1e-4, 0.0), (1e-3, 0.05), (1e-3, 0.0)]
    assert sum(len(g["params"]) for g in merged.param_groups) == len(list(model.parameters()))
    apart = torch.optim.AdamW(groups, lr=1e-3, fused=True)  # one group per source group
    start = {k: v.clone() for k, v in model.state_dict().items()}
    updated = []
    for opt in (merged, apart):
        model.load_state_dict(start)
        draws = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=draws)
        opt.step()
        updated.append([p.detach().clone() for p in model.parameters()])
    for once, apart_ in zip(*updated, strict=True):
        assert torch.equal(once, apart_)
    assert not torch.equal(updated[0][0], start["encoders.0.body.conv1.0.weight"])  # it moved
    # distinct rates (layer decay down an encoder) keep their own groups
    decayed = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    sources = parameter_groups(model, cfg, decayed)
    kept = [(g["lr"], g["weight_decay"])
            for g in build_optimizer(sources, decayed).param_groups]
    assert len(kept) == len(set(kept)) == len({(g["lr"], g["weight_decay"]) for g in sources})
    assert len(kept) > 4

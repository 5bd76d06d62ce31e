"""pipeline/engine/callbacks/adversarial.py: every ADVERSARIAL method on every encoder kind it
attacks (image attacks within the epsilon ball, FGM/AWP restoring the weights), the start
epoch, ``mismatch`` and the ``alpha`` rule, the config refusals and full training runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from torch import nn

from pipeline import train
from pipeline.config import build_config
from pipeline.data import Batch, TabularEncoder
from pipeline.engine import Trainer
from pipeline.engine.callbacks import AdversarialConfig
from pipeline.engine.callbacks.adversarial import ADVERSARIAL, build_adversarial, mismatch
from pipeline.engine.losses import build_loss
from pipeline.engine.trainer import Callback
from pipeline.errors import ConfigError
from pipeline.models import EncoderConfig, ModelConfig, build_model
from pipeline.models.encoders import ENCODERS

# tiny models and runs: one torch thread (tests/engine/conftest.py) is several times faster
# on a busy machine, where extra threads only spin-wait
pytestmark = pytest.mark.usefixtures("one_thread")
LOSS = build_loss("cross_entropy", "multiclass")
IMAGE_METHODS = ["fgsm", "pgd", "fast_fgsm"]
TEXT_ENCODER = {"name": "hf", "tokenizer": "unused",
                "hf_config": {"model_type": "bert", "vocab_size": 40, "hidden_size": 16,
                              "num_hidden_layers": 1, "num_attention_heads": 2,
                              "intermediate_size": 32, "max_position_embeddings": 64}}


def _image_setup() -> tuple[Trainer, Batch]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="timm:test_resnet")]), 3, None)
    batch = {"image": torch.randn(4, 3, 16, 16), "target": torch.randint(0, 3, (4,))}
    return Trainer(model, Accelerator(cpu=True)), batch


def fitted_tabular(categories: list[str]) -> TabularEncoder:
    """Numeric columns 'a' and 'b' and a categorical 'c' taking ``categories``, fitted on a few
    rows: a ``num`` input of width 2 and one embedding table of len(categories) + 1 codes."""
    n = len(categories)
    frame = pd.DataFrame({"a": np.arange(n, dtype=float), "b": -np.arange(n, dtype=float),
                          "c": categories})
    return TabularEncoder(["a", "b"], ["c"]).fit(frame)


def _embedding_setup(modality: str) -> tuple[Trainer, Batch, list[str]]:
    """A tiny text or tabular network with a batch, and its encoder kinds."""
    torch.manual_seed(0)
    if modality == "text":
        model = build_model(ModelConfig(encoders=[EncoderConfig.model_validate(TEXT_ENCODER)]),
                            3, None)
        batch = {"input_ids": torch.randint(5, 40, (8, 12)),
                 "attention_mask": torch.ones(8, 12, dtype=torch.long)}
        kinds = ["hf"]
    else:
        tab = fitted_tabular(["x", "y", "z"])
        model = build_model(ModelConfig(encoders=[EncoderConfig(name="mlp")]), 3, tab)
        batch = {"num": torch.randn(8, 2), "cat": torch.randint(0, 4, (8, 1))}
        kinds = ["mlp"]
    batch["target"] = torch.randint(0, 3, (8,))
    return Trainer(model, Accelerator(cpu=True)), batch, kinds


# a tiny model and batch per encoder kind: a method registered for a kind missing here fails
# the registry loops below with a KeyError, so a new kind cannot go untested
SETUPS: dict[str, Callable[[], tuple[Trainer, Batch]]] = {
    "timm": _image_setup,
    "hf": lambda: _embedding_setup("text")[:2],
    "mlp": lambda: _embedding_setup("tabular")[:2],
}
CASES = [(name, kind) for name in ADVERSARIAL for kind in ADVERSARIAL.get(name).encoder_kinds]


def _loss(trainer: Trainer, batch: Batch) -> float:
    with torch.no_grad():
        return LOSS(trainer.model(batch), batch).item()


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _acts_after_backward(adv: Callback) -> bool:
    """Whether the method works in ``on_after_backward`` (weights, embeddings) rather than
    only in ``transform_batch`` (inputs)."""
    return type(adv).on_after_backward is not Callback.on_after_backward


def _clean_step(adv, trainer: Trainer, batch: Batch) -> Batch:
    """What the engine does before ``on_after_backward``."""
    batch = adv.transform_batch(trainer, batch, LOSS)
    loss = LOSS(trainer.model(batch), batch)
    adv.on_before_backward(trainer, loss)
    trainer.accelerator.backward(loss)
    return batch


def test_the_registry_loops_cover_every_method_and_the_hooks_split_them():
    assert {name for name, _ in CASES} == set(ADVERSARIAL.list())
    assert {kind for _, kind in CASES} <= set(SETUPS)
    hooks = {name: _acts_after_backward(build_adversarial(AdversarialConfig(method=name), [kind]))
             for name, kind in CASES}
    assert {n for n, after in hooks.items() if not after} == set(IMAGE_METHODS)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_every_method_keeps_its_promise_on_every_kind_it_attacks(name, kind):
    trainer, batch = SETUPS[kind]()
    model = trainer.model
    model.eval()  # deterministic forwards: a changed gradient comes from the method alone
    adv = build_adversarial(AdversarialConfig(method=name), [kind])
    epsilon = ADVERSARIAL.get(name).epsilon
    assert adv.epsilon == epsilon  # type: ignore[attr-defined]
    LOSS(model(batch), batch).backward()
    clean = _grads(model)
    weights = _weights(model)
    if not _acts_after_backward(adv):
        # an input attack: a new image within the L-inf ball, the gradients left alone
        image = batch["image"].clone()
        out = adv.transform_batch(trainer, batch, LOSS)
        assert torch.equal(batch["image"], image)
        delta = (out["image"] - image).abs().max().item()
        assert 0.0 < delta <= epsilon + 1e-6
        assert torch.equal(out["target"], batch["target"])
        after = _grads(model)
        assert after.keys() == clean.keys()
        assert all(torch.equal(clean[n], after[n]) for n in clean)
    else:
        # a weight or embedding attack: the step's gradient changes, the weights come back
        model.zero_grad(set_to_none=True)
        step_batch = _clean_step(adv, trainer, batch)
        assert all(torch.equal(clean[n], g) for n, g in _grads(model).items())
        adv.on_after_backward(trainer, step_batch, LOSS)
        after = _grads(model)
        assert after.keys() == clean.keys()
        assert all(torch.isfinite(g).all() for g in after.values())
        assert any(not torch.equal(clean[n], after[n]) for n in clean)
    for n, param in model.named_parameters():
        assert torch.equal(weights[n], param), n


@pytest.mark.parametrize("name", ADVERSARIAL.list())
def test_mismatch_accepts_the_methods_kinds_and_names_the_fitting_methods_otherwise(name):
    method = ADVERSARIAL.get(name)
    assert mismatch(name, method.encoder_kinds) is None
    others = [k for k in ENCODERS if k not in method.encoder_kinds]
    assert others  # 'sklearn' at least: no method attacks a scikit-learn model
    for kind in method.encoder_kinds:
        assert mismatch(name, [kind]) is None
        assert mismatch(name, [kind, *others]) is None  # one attackable encoder is enough
    for kind in others:
        message = mismatch(name, [kind])
        assert message is not None
        assert method.perturbs in message
        assert f"reads {ENCODERS.get(kind).modality} inputs" in message
        fits = [m for m in ADVERSARIAL if kind in ADVERSARIAL.get(m).encoder_kinds]
        assert message.split("Methods for it: ")[1].split(", ") == (fits or ["none"])
        with pytest.raises(ConfigError) as refused:
            build_adversarial(AdversarialConfig(method=name), [kind])
        assert str(refused.value) == message


@pytest.mark.parametrize("name", ADVERSARIAL.list())
def test_alpha_is_refused_exactly_by_the_methods_that_take_none(name):
    method = ADVERSARIAL.get(name)
    if not method.takes_alpha:
        with pytest.raises(ValueError, match=f"method '{name}' takes no 'alpha'"):
            AdversarialConfig(method=name, alpha=0.1)
        return
    adv = build_adversarial(AdversarialConfig(method=name, alpha=0.1), method.encoder_kinds)
    assert adv.alpha == 0.1  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_image_attack_raises_the_loss_within_the_ball_and_leaves_gradients(method):
    trainer, batch = _image_setup()
    model = trainer.model
    model.eval()  # a fixed function: no dropout, no batch-norm updates
    LOSS(model(batch), batch).backward()
    grads = _grads(model)
    clean = batch["image"].clone()
    eps = 0.05
    adv = build_adversarial(AdversarialConfig(method=method, epsilon=eps), ["timm"])
    out = adv.transform_batch(trainer, batch, LOSS)
    assert torch.equal(batch["image"], clean)  # the clean batch is left as it was
    assert (out["image"] - clean).abs().max().item() <= eps + 1e-6
    assert not out["image"].requires_grad
    assert _loss(trainer, out) > _loss(trainer, batch)
    assert not model.training
    after = _grads(model)
    assert after.keys() == grads.keys()
    assert all(torch.equal(grads[n], after[n]) for n in grads)
    model.train()
    adv.transform_batch(trainer, batch, LOSS)
    assert model.training


@pytest.mark.parametrize("modality", ["text", "tabular"])
@pytest.mark.parametrize("method", ["fgm", "awp"])
def test_fgm_and_awp_restore_the_weights_and_change_the_gradient(method, modality):
    trainer, batch, kinds = _embedding_setup(modality)
    model = trainer.model
    adv = build_adversarial(AdversarialConfig(method=method), kinds)
    batch = _clean_step(adv, trainer, batch)
    clean = _grads(model)
    weights = _weights(model)
    adv.on_after_backward(trainer, batch, LOSS)
    for name, param in model.named_parameters():
        assert torch.equal(weights[name], param), name
    after = _grads(model)
    embeddings = [n for n in clean if "word_embeddings" in n or n.startswith("encoders.0.embed")]
    assert embeddings
    assert any(not torch.equal(clean[n], after[n]) for n in embeddings)
    if modality == "tabular" and method == "fgm":
        assert batch["num"].grad is not None  # the numeric input is attacked too


def _attacked_grads(adv: Any, trainer: Any, batch: Any) -> tuple[dict[str, Any], ...]:
    """The gradients after one attacked step on top of those already held (``combined``),
    then after the same step from zero (``alone``)."""
    model = trainer.model
    batch = _clean_step(adv, trainer, batch)
    adv.on_after_backward(trainer, batch, LOSS)
    combined = _grads(model)
    model.zero_grad(set_to_none=True)
    _clean_step(adv, trainer, batch)
    adv.on_after_backward(trainer, batch, LOSS)
    return combined, _grads(model)


def test_awp_keeps_the_gradient_of_earlier_micro_batches():
    trainer, batch, kinds = _embedding_setup("tabular")
    model = trainer.model
    model.eval()  # deterministic forwards
    adv = build_adversarial(AdversarialConfig(method="awp", epsilon=1e-3), kinds)
    LOSS(model(batch), batch).backward()  # an earlier micro-batch of the same update
    earlier = _grads(model)
    combined, alone = _attacked_grads(adv, trainer, batch)
    for name, grad in earlier.items():
        torch.testing.assert_close(combined[name], grad + alone[name])


@pytest.mark.parametrize("method", ["fgm", "awp"])
def test_the_attack_follows_its_own_batch_not_the_earlier_micro_batches(method):
    # under grad_accum_steps the parameters hold the window's earlier gradients when a batch's
    # backward ends; the perturbation is this batch's, whatever came before it. An earlier
    # micro-batch with the opposite, 100x larger gradient would flip it otherwise
    trainer, batch, kinds = _embedding_setup("tabular")
    model = trainer.model
    model.eval()  # deterministic forwards
    adv = build_adversarial(AdversarialConfig(method=method, epsilon=0.05), kinds)
    (-100 * LOSS(model(batch), batch)).backward()  # an earlier micro-batch of the update
    earlier = _grads(model)
    combined, alone = _attacked_grads(adv, trainer, batch)
    for name, grad in earlier.items():
        torch.testing.assert_close(combined[name], grad + alone[name], rtol=1e-4, atol=1e-4)


# every (method, kind) pair of the registry; the original three cases are among them
@pytest.mark.parametrize(("method", "kind"), CASES)
def test_no_perturbation_before_the_start_epoch(method, kind):
    trainer, batch = SETUPS[kind]()
    model = trainer.model
    model.eval()
    adv = build_adversarial(AdversarialConfig(method=method, start_epoch=2), [kind])
    assert adv.transform_batch(trainer, batch, LOSS) is batch
    step_batch = _clean_step(adv, trainer, batch)
    clean = _grads(model)
    adv.on_after_backward(trainer, step_batch, LOSS)
    after = _grads(model)
    assert all(torch.equal(clean[n], after[n]) for n in clean)
    trainer.epoch = 1  # epoch 2 in progress
    model.zero_grad(set_to_none=True)
    step_batch = _clean_step(adv, trainer, batch)
    clean = _grads(model)
    adv.on_after_backward(trainer, step_batch, LOSS)
    after = _grads(model)
    changed = step_batch is not batch or any(not torch.equal(clean[n], after[n]) for n in clean)
    assert changed


def test_config_refuses_methods_that_do_not_fit_the_model(competition_factory):
    image = competition_factory("image", "binary")
    image["train"]["adversarial"] = {"method": "fgm"}
    with pytest.raises(ConfigError, match=r"train\.adversarial\.method.*reads image inputs"):
        build_config(image)
    tabular = competition_factory("tabular", "binary")
    tabular["train"]["adversarial"] = {"method": "fgsm"}
    with pytest.raises(ConfigError, match=r"train\.adversarial\.method.*reads tabular inputs"):
        build_config(tabular)
    tabular["train"]["adversarial"] = {"method": "fgm", "alpha": 0.1}
    with pytest.raises(ConfigError, match="takes no 'alpha'"):
        build_config(tabular)
    tabular["train"]["adversarial"] = {"method": "awp", "start_epoch": 3}
    with pytest.raises(ConfigError, match="after the last epoch"):
        build_config(tabular)
    image["train"]["adversarial"] = {"method": "fast_fgsm", "epsilon": 0.03, "alpha": None,
                                     "steps": 3, "start_epoch": 2}
    assert build_config(image).train.adversarial.method == "fast_fgsm"


def test_awp_replaces_the_whole_gradient_so_the_config_refuses_it_with_consistency(
        competition_factory):
    # AWP's update is the task loss's gradient at the moved weights alone: an unlabelled term
    # in the batch's loss (what train.consistency adds) leaves no trace in it
    trainer, batch, kinds = _embedding_setup("tabular")
    model = trainer.model
    model.eval()
    grads = []
    for weight in (0.0, 1000.0):
        model.zero_grad(set_to_none=True)
        adv = build_adversarial(AdversarialConfig(method="awp", epsilon=1e-2), kinds)
        outputs = model(batch)
        loss = LOSS(outputs, batch) + weight * outputs.pow(2).mean()
        adv.on_before_backward(trainer, loss)
        loss.backward()
        adv.on_after_backward(trainer, batch, LOSS)
        grads.append(torch.cat([g.flatten() for g in _grads(model).values()]))
    assert (grads[0] - grads[1]).norm() < 0.1 * grads[0].norm()  # weight 1000 changes ~nothing
    data = competition_factory("tabular", "multiclass")
    data["train"].update(adversarial={"method": "awp"}, consistency={"method": "fixmatch"})
    with pytest.raises(ConfigError, match=r"awp cannot be combined with 'train\.consistency'"):
        build_config(data)
    data["train"]["adversarial"] = {"method": "fgm"}  # adds its gradient: the term stays
    assert build_config(data).train.adversarial.method == "fgm"


@pytest.mark.parametrize(("modality", "method"), [
    ("image", "fast_fgsm"), ("image", "pgd"), ("text", "fgm"), ("text", "awp"),
    ("tabular", "fgm"), ("tabular", "awp"),
])
def test_training_with_each_method_writes_finite_oof(competition_factory, modality, method):
    data = competition_factory(modality, "binary", n_train=32, n_test=8)
    data["train"].update(epochs=1, adversarial={"method": method})
    if modality == "image":
        data["model"]["image_size"] = 16
    cfg = build_config(data)
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    values = oof.drop(columns=["id", "fold"]).to_numpy(dtype=np.float64)
    assert values.size and np.isfinite(values).all()

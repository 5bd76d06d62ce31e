"""pipeline/engine/callbacks/consistency_methods.py: the maths of each method on tiny tensors
(sharpen, cell_confidence, soft cross-entropy, FixMatch/UDA/MixMatch losses), every
CONSISTENCY method over every task it lists on a tiny network, and ConsistencyConfig
(defaults, validation, task rules)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from pipeline.config import build_config
from pipeline.data import CompetitionDataset, TabularEncoder, collate
from pipeline.data.datasets import ModelInputs
from pipeline.engine.callbacks import ConsistencyConfig
from pipeline.engine.callbacks.consistency import unlabelled_views
from pipeline.engine.callbacks.consistency_losses import cell_confidence as confidence
from pipeline.engine.callbacks.consistency_losses import (
    encoded_targets,
    joint_inputs,
    sharpen,
    soft_cross_entropy,
    trusted_rows,
)
from pipeline.engine.callbacks.consistency_methods import CONSISTENCY, UDA, FixMatch
from pipeline.engine.callbacks.consistency_mixmatch import MixMatch
from pipeline.engine.losses import build_loss
from pipeline.errors import ConfigError
from pipeline.metrics import TASKS
from pipeline.models import EncoderConfig, ModelConfig, build_model, embedding_noise
from pipeline.task_outputs import n_outputs
from tests.engine.callbacks.test_adversarial import TEXT_ENCODER, fitted_tabular

# tiny models and runs: one torch thread (tests/engine/conftest.py) is several times faster
# on a busy machine, where extra threads only spin-wait
pytestmark = pytest.mark.usefixtures("one_thread")
CE = build_loss("cross_entropy", "multiclass")
KEYS = ("weight", "threshold", "temperature")
CASES = [(name, task) for name in CONSISTENCY for task in CONSISTENCY.get(name).tasks]


class Linear(nn.Module):
    """A fixed linear map of ``batch["x"]``: a model whose outputs the test can compute."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["x"]

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled @ self.weight

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(self.encode(batch))


def test_sharpen_and_confidence_match_hand_values():
    p = torch.tensor([[0.6, 0.4]])
    assert torch.allclose(sharpen("multiclass", p, 0.5), torch.tensor([[0.36, 0.16]]) / 0.52)
    assert torch.allclose(sharpen("binary", torch.tensor([[0.8]]), 0.5),
                          torch.tensor([[0.64 / 0.68]]))
    assert torch.allclose(sharpen("multiclass", p, 1.0), p)
    assert torch.equal(confidence("multiclass", p), torch.tensor([[0.6]]))
    assert torch.allclose(confidence("multilabel", torch.tensor([[0.1, 0.7]])),
                          torch.tensor([[0.9, 0.7]]))


def test_sharpen_leaves_regression_values_alone():
    values = torch.tensor([[-1.5], [2.0]])
    assert torch.equal(sharpen("regression", values, 0.5), values)


def test_soft_cross_entropy_matches_the_hard_label_losses_on_one_hot_targets():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2])
    per_row = soft_cross_entropy("multiclass", logits, F.one_hot(labels, 3).float())
    assert per_row.shape == (2, 1)  # one value per row: the mask of multiclass is per row
    torch.testing.assert_close(per_row[:, 0], F.cross_entropy(logits, labels, reduction="none"))
    cells = torch.tensor([[1.0, -2.0]])
    target = torch.tensor([[1.0, 0.25]])
    expected = -(target * F.logsigmoid(cells) + (1 - target) * F.logsigmoid(-cells))
    torch.testing.assert_close(soft_cross_entropy("multilabel", cells, target), expected)


def test_encoded_targets_one_hot_class_indices_and_reshape_the_rest():
    assert torch.equal(encoded_targets("multiclass", torch.tensor([2, 0]), 3),
                       torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert encoded_targets("regression", torch.tensor([1.5, 2.5]), 1).shape == (2, 1)


def _fixed_batches():
    torch.manual_seed(0)
    model = Linear(torch.tensor([[3.0, 0.0, -3.0], [0.0, 0.2, 0.0]]))
    labelled = {"x": torch.randn(4, 2), "target": torch.tensor([0, 1, 2, 0])}
    # weak rows: two confident (x0 = +-2), two not (x0 = 0); strong rows are other points
    weak = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]])
    strong = torch.tensor([[0.5, 0.0], [1.0, 1.0], [-0.3, 2.0], [0.2, 0.0]])
    return model, labelled, weak, strong


def test_fixmatch_loss_is_masked_hard_label_cross_entropy():
    model, labelled, weak, strong = _fixed_batches()
    cfg = ConsistencyConfig(method="fixmatch", threshold=0.9)
    loss, step = FixMatch(cfg, "multiclass", 3, False).loss(
        model, labelled, {"weak/x": weak, "strong/x": strong}, CE, weight=2.0)
    probs = (weak @ model.weight).softmax(1)
    mask = probs.max(1).values >= 0.9
    assert mask.tolist() == [True, False, True, False]
    per_row = F.cross_entropy(strong @ model.weight, probs.argmax(1), reduction="none")
    expected = CE(model(labelled), labelled) + 2.0 * (per_row * mask).sum() / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert step.mask_rate == 0.5
    loss.backward()  # the weak (teacher) pass carries no gradient, the strong pass does
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_uda_loss_is_kl_to_sharpened_clean_prediction_over_confident_rows():
    model, labelled, clean, strong = _fixed_batches()
    cfg = ConsistencyConfig(method="uda", threshold=0.6, temperature=0.5)
    loss, step = UDA(cfg, "multiclass", 3, False).loss(
        model, labelled, {"clean/x": clean, "strong/x": strong}, CE, weight=1.0)
    probs = (clean @ model.weight).softmax(1)
    target = probs**2 / (probs**2).sum(1, keepdim=True)
    log_q = (strong @ model.weight).log_softmax(1)
    kl = (target * (target.log() - log_q)).sum(1)
    mask = probs.max(1).values >= 0.6
    expected = CE(model(labelled), labelled) + (kl * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert step.mask_rate == pytest.approx(mask.float().mean().item())


def test_trusted_rows_skips_untrusted_rows_but_keeps_two_for_batch_norm():
    rows = trusted_rows(torch.tensor([[1.0], [0.0], [1.0], [0.0]]))
    assert rows is not None and rows.tolist() == [0, 2]
    # per cell (sigmoid tasks): a row counts when any of its cells is trusted
    cells = trusted_rows(torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))
    assert cells is not None and cells.tolist() == [0, 2]
    one = trusted_rows(torch.tensor([[0.0], [0.0], [1.0]]))
    assert one is not None and one.tolist() == [0, 2]  # the first untrusted row fills in
    none = trusted_rows(torch.zeros(5, 1))
    assert none is not None and none.tolist() == [0, 1]
    assert trusted_rows(torch.ones(3, 1)) is None  # nothing to skip: no copy
    assert trusted_rows(torch.tensor([[0.0], [1.0]])) is None  # two rows are the least


class _Spy(Linear):
    """A :class:`Linear` that records how many rows each forward pass saw."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight)
        self.rows: list[int] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.rows.append(len(batch["x"]))
        return super().forward(batch)


# rows each forward saw: the teacher's, then (joint) labelled + strong together or
# (separate) labelled, then strong; 2 of the 4 unlabelled rows are trusted
PASSES = {(True, "trusted"): [4, 6], (True, "all"): [4, 8],
          (False, "trusted"): [4, 4, 2], (False, "all"): [4, 4, 4]}


@pytest.mark.parametrize(("name", "views"), [("fixmatch", ("weak", "strong")),
                                             ("uda", ("clean", "strong"))])
def test_the_strong_pass_trains_the_trusted_rows_alone_with_the_same_loss(name, views):
    """Skipping the untrusted rows' strong pass, or running the labelled and strong rows in
    one forward, changes neither the loss nor its gradient (no batch norm here);
    ``strong_rows: all`` still runs the whole batch, ``joint_pass: false`` two passes."""
    _, labelled, teacher_rows, strong_rows = _fixed_batches()
    unlabelled = {f"{views[0]}/x": teacher_rows, f"{views[1]}/x": strong_rows}
    threshold = 0.9 if name == "fixmatch" else 0.6  # two of the four rows trusted either way
    results = {}
    for joint, rows in PASSES:
        model = _Spy(torch.tensor([[3.0, 0.0, -3.0], [0.0, 0.2, 0.0]]))
        cfg = ConsistencyConfig(method=name, threshold=threshold, strong_rows=rows,
                                joint_pass=joint)
        loss, step = CONSISTENCY.get(name)(cfg, "multiclass", 3, False).loss(
            model, labelled, unlabelled, CE, weight=2.0)
        loss.backward()
        assert step.mask_rate == 0.5
        assert model.rows == PASSES[joint, rows]
        results[joint, rows] = (loss.item(), model.weight.grad.clone())
    reference = results[False, "all"]
    for loss, grad in results.values():
        assert loss == pytest.approx(reference[0], rel=1e-6)
        torch.testing.assert_close(grad, reference[1])


def test_joint_inputs_stack_the_labelled_rows_first_or_refuse_what_does_not_stack():
    model = Linear(torch.zeros(2, 3))
    labelled = {"x": torch.ones(3, 2), "target": torch.zeros(3)}
    view = {"x": torch.zeros(2, 2)}
    joint = joint_inputs(model, labelled, view)
    assert joint is not None and set(joint) == {"x"}  # the view's inputs, not the targets
    assert joint["x"][:, 0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert joint_inputs(model, labelled, {"x": torch.zeros(2, 3)}) is None  # other shape
    assert joint_inputs(model, labelled, {"x": torch.zeros(2, 2, dtype=torch.float64)}) is None
    assert joint_inputs(model, labelled, {"y": torch.zeros(2, 2)}) is None  # not labelled
    model.aux_outputs = []  # a multi-task head: its auxiliary losses read the labelled rows
    assert joint_inputs(model, labelled, view) is None


@pytest.mark.parametrize(("noise", "passes"), [(0.1, [8, 4, 8]), (0.0, [8, 12])])
def test_embedding_noise_keeps_the_labelled_rows_out_of_the_strong_pass(noise, passes):
    """The noise belongs to the student's view: where the model takes it (an 'mlp' encoder)
    the labelled rows go through a pass of their own; without noise, one joint pass."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="mlp")]), 3,
                        fitted_tabular(["x", "y"]))
    rows = {"num": torch.randn(8, 2), "cat": torch.randint(0, 3, (8, 1))}
    unlabelled = {f"{view}/{key}": value for view in ("weak", "strong")
                  for key, value in rows.items()}
    labelled = {key: value[:4] for key, value in rows.items()} | {
        "target": torch.tensor([0, 1, 2, 0])}
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0]["num"])))
    cfg = ConsistencyConfig(method="fixmatch", embedding_noise=noise, strong_rows="all",
                            joint_pass=True)
    FixMatch(cfg, "multiclass", 3, False).loss(model, labelled, unlabelled, CE, 1.0)
    assert seen == passes


def test_a_joint_pass_gives_auxiliary_losses_the_labelled_rows_features_alone():
    """train.aux_losses read the pooled features of the pass beside the labelled targets: a
    joint pass keeps only the labelled rows' (it stopped the run with a shape error)."""
    from pipeline.engine.contrastive import supervised_contrastive, with_aux_losses

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="mlp")]), 3,
                        fitted_tabular(["x", "y"]))
    model.eval()  # deterministic: the joint pass and the reference see the same weights
    rows = {"num": torch.randn(10, 2), "cat": torch.randint(0, 3, (10, 1))}
    unlabelled = {f"{view}/{key}": value[4:] for view in ("weak", "strong")
                  for key, value in rows.items()}
    labelled = {key: value[:4] for key, value in rows.items()} | {
        "target": torch.tensor([0, 0, 1, 1])}
    loss_fn = with_aux_losses(CE, model, [("supcon", 0.5, {})])
    cfg = ConsistencyConfig(method="fixmatch", embedding_noise=0.0, strong_rows="all",
                            joint_pass=True, thresholds="fixed", threshold=0.99,
                            alignment=False)
    total, step = FixMatch(cfg, "multiclass", 3, False).loss(model, labelled, unlabelled,
                                                             loss_fn, 1.0)
    assert float(step.trusted) == 0.0  # nothing trusted: the total is the supervised loss
    outputs = model(labelled)
    expected = CE(outputs, labelled) + 0.5 * supervised_contrastive(model.features,
                                                                    labelled["target"])
    torch.testing.assert_close(total, expected)
    assert len(model.features) == 4


def test_uda_for_regression_is_mean_squared_difference():
    model = Linear(torch.tensor([[1.0], [2.0]]))
    labelled = {"x": torch.ones(2, 2), "target": torch.zeros(2, 1)}
    clean, strong = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mse = build_loss("mse", "regression")
    loss, _ = UDA(ConsistencyConfig(method="uda"), "regression", 1, False).loss(
        model, labelled, {"clean/x": clean, "strong/x": strong}, mse, weight=3.0)
    assert loss.item() == pytest.approx(9.0 + 3.0 * (2.0 - 1.0) ** 2)


def test_mixmatch_guesses_sharpened_mean_labels_and_mixes_rows():
    model, labelled, weak0, weak1 = _fixed_batches()
    cfg = ConsistencyConfig(method="mixmatch", temperature=0.5)
    method = MixMatch(cfg, "multiclass", n_outputs=3, image_only=False)
    # lambda drawn as 1 (no mixing): the loss separates into its two known parts
    method.beta = SimpleNamespace(sample=lambda: torch.tensor(1.0))
    loss, _ = method.loss(model, labelled, {"weak0/x": weak0, "weak1/x": weak1}, CE,
                          weight=10.0)
    mean = ((weak0 @ model.weight).softmax(1) + (weak1 @ model.weight).softmax(1)) / 2
    guess = mean**2 / (mean**2).sum(1, keepdim=True)
    u_probs = torch.cat([weak0, weak1]) @ model.weight
    expected = (CE(model(labelled), labelled)
                + 10.0 * F.mse_loss(u_probs.softmax(1), guess.repeat(2, 1)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixmatch_mixes_each_row_with_lambda_at_least_half():
    model, labelled, weak0, weak1 = _fixed_batches()
    method = MixMatch(ConsistencyConfig(method="mixmatch"), "multiclass", 3, False)
    method.beta = SimpleNamespace(sample=lambda: torch.tensor(0.3))  # lambda becomes 0.7
    seen = []
    original = model.classify

    def spy(pooled: torch.Tensor) -> torch.Tensor:
        seen.append(pooled.detach())
        return original(pooled)

    model.classify = spy  # type: ignore[method-assign]
    method.loss(model, labelled, {"weak0/x": weak0, "weak1/x": weak1}, CE, weight=1.0)
    rows = torch.cat([labelled["x"], weak0, weak1])
    mixed = next(m for m in seen if len(m) == len(rows))
    partners = (mixed - 0.7 * rows) / 0.3  # each must be one of the rows
    assert torch.cdist(partners, rows).min(dim=1).values.max() < 1e-4


@pytest.mark.parametrize("kind", ["mlp", "hf"])
def test_embedding_noise_changes_outputs_only_inside_the_block(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        tab = fitted_tabular(["x", "y"])
        model = build_model(build_config({
            "name": "t", "competition": {"dir": ".", "id_column": "id", "task": "binary",
                                         "target_columns": ["y"], "metric": "roc_auc",
                                         "modality": "tabular"},
            "model": {"encoders": [{"name": "mlp"}]}}).model, 1, tab)
        batch = {"num": torch.randn(6, 2), "cat": torch.randint(0, 3, (6, 1))}
    else:
        model = build_model(ModelConfig(encoders=[EncoderConfig.model_validate(TEXT_ENCODER)]),
                            1, None)
        batch = {"input_ids": torch.randint(5, 40, (6, 10)),
                 "attention_mask": torch.ones(6, 10, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        before = model(batch)
        with embedding_noise(model, 0.5):
            noisy = model(batch)
        after = model(batch)
    assert torch.equal(before, after)
    assert not torch.allclose(before, noisy)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_mixmatch_views_of_tabular_rows_differ_by_embedding_noise(noise):
    torch.manual_seed(0)
    tab = fitted_tabular(["x", "y"])
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="mlp")]), 3, tab)
    model.eval()  # no dropout: identical rows give identical outputs unless noise is added
    rows = {"num": torch.randn(5, 2), "cat": torch.randint(0, 3, (5, 1))}
    unlabelled = {f"{view}/{key}": value for view in ("weak0", "weak1")
                  for key, value in rows.items()}
    labelled = {**rows, "target": torch.tensor([0, 1, 2, 0, 1])}
    guesses = []
    original = model.forward

    def spy(batch):
        out = original(batch)
        if not torch.is_grad_enabled():
            guesses.append(out)
        return out

    model.forward = spy  # type: ignore[method-assign]
    cfg = ConsistencyConfig(method="mixmatch", embedding_noise=noise)
    MixMatch(cfg, "multiclass", 3, False).loss(model, labelled, unlabelled, CE, weight=1.0)
    assert len(guesses) == 2
    assert torch.equal(guesses[0], guesses[1]) == (noise == 0.0)


def _tabular_rows(task: str, n: int = 12, seed: int = 0):
    """A tiny tabular network for ``task``, a labelled batch, and its unlabelled rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=2 * n), "b": rng.normal(size=2 * n),
                          "c": rng.choice(["x", "y", "z"], size=2 * n)})
    tab = TabularEncoder(["a", "b"], ["c"]).fit(frame.iloc[:n])
    width = n_outputs(task, ["p", "q"] if task == "multilabel" else ["p"], [0, 1, 2])
    targets = {
        "binary": rng.integers(0, 2, (n, 1)).astype(np.float32),
        "multiclass": rng.integers(0, 3, n),
        "multilabel": rng.integers(0, 2, (n, width)).astype(np.float32),
        "regression": rng.normal(size=(n, 1)).astype(np.float32),
    }[task]
    inputs = ModelInputs(tabular=tab)
    labelled = collate([CompetitionDataset(frame.iloc[:n], inputs, targets)[i] for i in range(n)])
    torch.manual_seed(seed)
    model = build_model(ModelConfig(encoders=[EncoderConfig(name="mlp")]), width, tab)
    return model, width, labelled, CompetitionDataset(frame.iloc[n:], inputs)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_method_gives_a_finite_loss_that_backpropagates_for_each_of_its_tasks(name, task):
    model, width, labelled, rows = _tabular_rows(task)
    cfg = ConsistencyConfig(method=name)
    method = CONSISTENCY.get(name)(cfg, task, width, False)
    # the unlabelled batch the callback hands over: the method's views, keyed <view>/<input>
    views = unlabelled_views(rows, name, cfg, None)
    views.set_epoch(0)
    unlabelled = collate([views[i] for i in range(len(views))])
    assert set(unlabelled) == {f"{v}/{k}" for v in method.views for k in ("num", "cat")}
    loss_fn = build_loss("auto", task)
    torch.manual_seed(1)  # the same noise and mixing draws in both calls below
    loss, step = method.loss(model, labelled, unlabelled, loss_fn, weight=2.0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert step.loss.ndim == 0 and torch.isfinite(step.loss) and step.loss >= -1e-6
    assert 0.0 <= step.mask_rate <= 1.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # the weight multiplies the unlabelled loss and nothing else
    torch.manual_seed(1)
    with torch.no_grad():
        supervised, _ = method.loss(model, labelled, unlabelled, loss_fn, weight=0.0)
    assert loss.item() == pytest.approx(supervised.item() + 2.0 * step.loss.item(),
                                        rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", CONSISTENCY.list())
def test_config_resolves_the_defaults_of_each_method(name):
    defaults = CONSISTENCY.get(name).defaults
    assert set(defaults) == set(KEYS)
    assert defaults["weight"] is not None  # every method weighs its unlabelled loss
    cfg = ConsistencyConfig(method=name)
    for key, default in defaults.items():
        if default is None:
            with pytest.raises(ValueError, match=f"method '{name}' takes no '{key}'"):
                ConsistencyConfig(method=name, **{key: 0.5})
            continue
        assert cfg.resolved(key) == default
        assert ConsistencyConfig(method=name, **{key: 0.5}).resolved(key) == 0.5


@pytest.mark.parametrize("name", CONSISTENCY.list())
def test_config_ramps_over_the_methods_fraction_of_its_epochs_unless_told(name):
    fraction = CONSISTENCY.get(name).ramp_fraction
    assert 0.0 <= fraction <= 1.0  # the full weight is reached before the method stops
    assert ConsistencyConfig(method=name).ramp(10) == pytest.approx(fraction * 10)
    assert ConsistencyConfig(method=name, ramp_epochs=3.0).ramp(10) == 3.0
    assert ConsistencyConfig(method=name, ramp_epochs=0.0).ramp(10) == 0.0


@pytest.mark.parametrize("name", CONSISTENCY.list())
def test_mismatch_refuses_tasks_outside_the_method_and_names_the_fitting_ones(name):
    method = CONSISTENCY.get(name)
    cfg = ConsistencyConfig(method=name)
    assert method.tasks and set(method.tasks) <= set(TASKS)
    for task in TASKS:
        if task in method.tasks:
            assert cfg.mismatch(task, aux_losses=False) is None
            # mixed rows have no class of their own for supcon/triplet
            assert (cfg.mismatch(task, aux_losses=True) is not None) == method.mixes_rows
            continue
        message = cfg.mismatch(task, aux_losses=False)
        assert message is not None and f"method' {name} needs class confidences" in message
        fits = [m for m in CONSISTENCY if task in CONSISTENCY.get(m).tasks]
        assert fits and message.split(f"for {task} use ")[1].split(" or ") == fits


@pytest.mark.parametrize(("patch", "message"), [
    ({"method": "fixmatch", "temperature": 0.5}, "takes no 'temperature'"),
    ({"method": "mixmatch", "threshold": 0.9}, "takes no 'threshold'"),
    ({"method": "uda", "alpha": 0.5}, "belong to method 'mixmatch'"),
    ({"method": "mixmatch", "strong": {"text": {"mask": 0.2}}}, "weak views only"),
    ({"method": "uda", "start_epoch": 2, "start_stage": 1}, "not both"),
    ({"method": "uda", "start_stage": 3}, r"start_stage' 3: the recipe has 2 stage"),
    ({"method": "uda", "start_epoch": 9}, r"start_epoch' 9 is after the last epoch \(3\)"),
    ({"method": "mixmatch", "strong_rows": "all"}, "belong to methods 'fixmatch' and 'uda'"),
    ({"method": "mixmatch", "joint_pass": True}, "belong to methods 'fixmatch' and 'uda'"),
    ({"method": "uda", "strong": {"image": [{"name": "Blurr"}]}}, "not an albumentations"),
])
def test_bad_consistency_configs_name_the_key(competition_factory, patch, message):
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=2, stages=[{"epochs": 1}], consistency=patch)
    with pytest.raises(ConfigError, match=message):
        build_config(data)


@pytest.mark.parametrize("patch", [
    {"method": "fixmatch"}, {"method": "uda", "warmup": 0.34}, {"method": "mixmatch"},
    {"method": "fixmatch", "start_epoch": 2, "joint_pass": True, "strong_rows": "all"},
])
def test_a_resolved_consistency_config_loads_again(competition_factory, patch):
    """A run's config.yaml writes every default out (``alpha`` for fixmatch, ``strong`` for
    mixmatch, ``start_epoch: null`` beside a ``warmup``): it loads again as the same config."""
    data = competition_factory("tabular", "multiclass")
    data["train"].update(epochs=3, consistency=patch)
    cfg = build_config(data)
    written = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    assert written["train"]["consistency"]["alpha"] == 0.75  # the defaults are written out
    assert build_config(written) == cfg


def test_consistency_config_rules_by_task(competition_factory):
    data = competition_factory("tabular", "regression")
    data["train"]["consistency"] = {"method": "fixmatch"}
    with pytest.raises(ConfigError, match="fixmatch needs class confidences"):
        build_config(data)
    data = competition_factory("tabular", "binary")
    data["train"].update(consistency={"method": "mixmatch"},
                         aux_losses=[{"name": "supcon"}])
    with pytest.raises(ConfigError, match="no class per row"):
        build_config(data)
    cons = ConsistencyConfig(method="uda")
    assert (cons.resolved("threshold"), cons.resolved("temperature")) == (0.8, 0.4)
    assert ConsistencyConfig(method="mixmatch").resolved("weight") == 75.0

"""Consistency regularization: the maths of each method on tiny tensors, the views of the
unlabelled rows, the config rules, and full runs for every modality."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import train
from pipeline.competition import load_competition
from pipeline.config import (
    AugmentConfig,
    ConsistencyConfig,
    EncoderConfig,
    ModelConfig,
    build_config,
)
from pipeline.consistency import (
    UDA,
    FixMatch,
    MixMatch,
    confidence,
    sharpen,
    unlabelled_views,
)
from pipeline.data import CompetitionDataset, TabularEncoder, collate, model_inputs, view_of
from pipeline.errors import ConfigError
from pipeline.losses import build_loss
from pipeline.models import build_model, build_tokenizer, embedding_noise
from tests.test_adversarial import TEXT_ENCODER

CE = build_loss("cross_entropy", "multiclass")


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
    loss, step = FixMatch(cfg, "multiclass").loss(
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
    loss, step = UDA(cfg, "multiclass").loss(
        model, labelled, {"clean/x": clean, "strong/x": strong}, CE, weight=1.0)
    probs = (clean @ model.weight).softmax(1)
    target = probs**2 / (probs**2).sum(1, keepdim=True)
    log_q = (strong @ model.weight).log_softmax(1)
    kl = (target * (target.log() - log_q)).sum(1)
    mask = probs.max(1).values >= 0.6
    expected = CE(model(labelled), labelled) + (kl * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert step.mask_rate == pytest.approx(mask.float().mean().item())


def test_uda_for_regression_is_mean_squared_difference():
    model = Linear(torch.tensor([[1.0], [2.0]]))
    labelled = {"x": torch.ones(2, 2), "target": torch.zeros(2, 1)}
    clean, strong = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mse = build_loss("mse", "regression")
    loss, _ = UDA(ConsistencyConfig(method="uda"), "regression").loss(
        model, labelled, {"clean/x": clean, "strong/x": strong}, mse, weight=3.0)
    assert loss.item() == pytest.approx(9.0 + 3.0 * (2.0 - 1.0) ** 2)


def test_mixmatch_guesses_sharpened_mean_labels_and_mixes_rows():
    model, labelled, weak0, weak1 = _fixed_batches()
    cfg = ConsistencyConfig(method="mixmatch", temperature=0.5)
    method = MixMatch(cfg, "multiclass", mix_inputs=False, n_outputs=3)
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
    method = MixMatch(ConsistencyConfig(method="mixmatch"), "multiclass", False, 3)
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


def _image_views(competition_factory, method: str, augment: dict | None = None):
    data = competition_factory("image", "multiclass", n_train=8, n_test=6)
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    inputs = model_inputs(comp, cfg.model, None, None)
    dataset = CompetitionDataset(comp.test, inputs)
    weak = AugmentConfig.model_validate(augment) if augment else None
    return unlabelled_views(dataset, method, ConsistencyConfig(method=method), weak)


def test_fixmatch_views_are_weak_and_strong_images(competition_factory):
    views = _image_views(competition_factory, "fixmatch")
    views.set_epoch(3)
    item = views[0]
    assert set(item) == {"weak/image", "strong/image"}
    clean = views.views["weak"][0]["image"]  # no train.augment: the weak view is the row
    assert torch.equal(item["weak/image"], clean)
    assert not torch.equal(item["strong/image"], clean)


def test_mixmatch_views_draw_their_own_augmentations(competition_factory):
    shift = {"name": "Affine", "translate_percent": (-0.2, 0.2), "p": 1.0}
    views = _image_views(competition_factory, "mixmatch", {"image": [shift]})
    views.set_epoch(0)
    items = [views[i] for i in range(len(views))]
    assert set(items[0]) == {"weak0/image", "weak1/image"}
    assert any(not torch.equal(it["weak0/image"], it["weak1/image"]) for it in items)
    views.set_epoch(0)  # the same epoch seed gives the same draws (resume)
    again = [views[i] for i in range(len(views))]
    assert all(torch.equal(a["weak0/image"], b["weak0/image"])
               for a, b in zip(items, again, strict=True))


def test_text_strong_view_is_token_noise(competition_factory):
    data = competition_factory("text", "binary", n_train=8, n_test=20)
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    inputs = model_inputs(comp, cfg.model, build_tokenizer(cfg.model), None)
    views = unlabelled_views(CompetitionDataset(comp.test, inputs), "uda",
                             ConsistencyConfig(method="uda"), None)
    views.set_epoch(0)
    items = [views[i] for i in range(len(views))]
    changed = [not torch.equal(it["clean/input_ids"], it["strong/input_ids"]) for it in items]
    assert any(changed)
    collated = collate(items)  # each view padded to its own longest row
    for name in ("clean", "strong"):
        ids = view_of(collated, name)["input_ids"]
        assert ids.shape == (len(items), max(len(it[f"{name}/input_ids"]) for it in items))


@pytest.mark.parametrize("kind", ["mlp", "hf"])
def test_embedding_noise_changes_outputs_only_inside_the_block(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        tab = TabularEncoder(["a", "b"], ["c"], vocab={"c": ["x", "y"]})
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


@pytest.mark.parametrize(("patch", "message"), [
    ({"method": "fixmatch", "temperature": 0.5}, "takes no 'temperature'"),
    ({"method": "mixmatch", "threshold": 0.9}, "takes no 'threshold'"),
    ({"method": "uda", "alpha": 0.5}, "belong to method 'mixmatch'"),
    ({"method": "mixmatch", "strong": {"text": {"mask": 0.2}}}, "weak views only"),
    ({"method": "uda", "start_epoch": 2, "start_stage": 1}, "not both"),
    ({"method": "uda", "start_stage": 3}, r"start_stage' 3: the recipe has 2 stage"),
    ({"method": "uda", "start_epoch": 9}, r"start_epoch' 9 is after the last epoch \(3\)"),
    ({"method": "uda", "strong": {"image": [{"name": "Blurr"}]}}, "not an albumentations"),
])
def test_bad_consistency_configs_name_the_key(competition_factory, patch, message):
    data = competition_factory("tabular", "binary")
    data["train"].update(epochs=2, stages=[{"epochs": 1}], consistency=patch)
    with pytest.raises(ConfigError, match=message):
        build_config(data)


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


def test_start_stage_resolves_to_the_first_epoch_of_that_stage(competition_factory):
    data = competition_factory("image", "binary")
    data["train"].update(epochs=2, stages=[{"epochs": 3}, {"epochs": 1}],
                         adversarial={"method": "fast_fgsm", "start_stage": 3})
    cfg = build_config(data)
    assert cfg.train.first_epoch(None, 3) == 6
    assert cfg.train.first_epoch(None, 2) == 3
    assert cfg.train.first_epoch(4, None) == 4
    callbacks = train.build_callbacks(cfg, True)
    assert callbacks[0].start_epoch == 6  # type: ignore[attr-defined]


@pytest.mark.parametrize(("modality", "task", "method"), [
    ("image", "multiclass", "fixmatch"), ("text", "binary", "fixmatch"),
    ("tabular", "multilabel", "fixmatch"),
    ("image", "binary", "uda"), ("text", "multiclass", "uda"), ("tabular", "regression", "uda"),
    ("image", "multiclass", "mixmatch"), ("text", "binary", "mixmatch"),
    ("tabular", "regression", "mixmatch"),
])
def test_each_method_trains_every_modality(competition_factory, modality, task, method):
    data = competition_factory(modality, task, n_train=24, n_test=20)
    cons = {"method": method, "start_epoch": 2, "ratio": 2}
    if method != "mixmatch":
        cons["threshold"] = 0.5
    data["train"].update(epochs=2, batch_size=8, consistency=cons)
    if modality == "image":
        data["model"]["image_size"] = 16
        data["train"]["augment"] = {"image": [{"name": "HorizontalFlip", "p": 0.5}]}
    cfg = build_config(data)
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    values = oof.drop(columns=["id", "fold"]).to_numpy(dtype=np.float64)
    assert values.size and np.isfinite(values).all()
    history = train.read_json(cfg.run_dir / "seed0" / "fold0" / "metrics.json")["epochs"]
    assert "unlabelled_loss" not in history[0]  # off before start_epoch
    assert math.isfinite(history[1]["unlabelled_loss"])
    assert 0.0 <= history[1]["unlabelled_mask_rate"] <= 1.0


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_mixmatch_views_of_tabular_rows_differ_by_embedding_noise(noise):
    torch.manual_seed(0)
    tab = TabularEncoder(["a", "b"], ["c"], vocab={"c": ["x", "y"]})
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
    MixMatch(cfg, "multiclass", False, 3).loss(model, labelled, unlabelled, CE, weight=1.0)
    assert len(guesses) == 2
    assert torch.equal(guesses[0], guesses[1]) == (noise == 0.0)


def test_a_resumed_run_repeats_the_unlabelled_batches(competition_factory, monkeypatch):
    def run(name: str, crash_in_epoch: int | None) -> np.ndarray:
        """Each epoch's training and unlabelled loss, both folds."""
        data = competition_factory("tabular", "multiclass", n_train=24, n_test=20)
        data["name"] = name
        data["folds"]["n_splits"] = 2
        data["train"].update(epochs=3, batch_size=8, consistency={"method": "mixmatch"})
        cfg = build_config(data)
        if crash_in_epoch is not None:
            original = train.Trainer.train_epoch

            def crash(self, *args, **kwargs):
                if self.epoch + 1 == crash_in_epoch:
                    raise KeyboardInterrupt("killed")
                return original(self, *args, **kwargs)

            with monkeypatch.context() as patch:
                patch.setattr(train.Trainer, "train_epoch", crash)
                with pytest.raises(KeyboardInterrupt):
                    train.run(cfg)
        train.run(cfg)  # resumes from last.pt after the crash
        losses = []
        for fold in (0, 1):
            epochs = train.read_json(cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json")
            losses += [(e["train_loss"], e["unlabelled_loss"]) for e in epochs["epochs"]]
        return np.array(losses)

    whole, resumed = run("whole", None), run("resumed", 3)
    assert whole.shape == (6, 2)
    np.testing.assert_array_equal(whole, resumed)

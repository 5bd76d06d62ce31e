"""Test-time augmentation (pipeline/tta.py): every registered transform on a batch of every
modality, the exact image ops, the reductions, and PredictConfig's refusals."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from pipeline.data.datasets import IMAGENET_MEAN, IMAGENET_STD, ModelInputs
from pipeline.data.text_tokens import encode_texts
from pipeline.models.encoders import ENCODERS
from pipeline.tta import (
    TTA,
    PredictConfig,
    brightness,
    reduce_predictions,
    tta_transforms,
    zoom,
)
from tests.conftest import write_tokenizer

MODALITIES = ("image", "text", "tabular")
# The batch keys of each modality, as the encoder kinds that read it declare them.
MODALITY_KEYS: dict[str, set[str]] = {m: set() for m in MODALITIES}
for _kind in ENCODERS:
    MODALITY_KEYS[ENCODERS.get(_kind).modality] |= set(ENCODERS.get(_kind).inputs)


def _batch(n: int = 3, size: int = 8) -> dict[str, torch.Tensor]:
    """One batch holding every modality's keys (and a target), as a loader makes them."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(n, 3, size, size, generator=g)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return {
        "image": (pixels - mean) / std,
        "num": torch.randn(n, 4, generator=g),
        "cat": torch.randint(0, 5, (n, 2), generator=g),
        "input_ids": torch.randint(5, 30, (n, 7), generator=g),
        "attention_mask": torch.ones(n, 7, dtype=torch.long),
        "target": torch.rand(n, 1, generator=g),
    }


def test_every_modality_has_batch_keys() -> None:
    """Control for the loop below: each modality names the keys its transforms may change."""
    assert all(MODALITY_KEYS[m] for m in MODALITIES)
    assert set(_batch()) == set().union(*MODALITY_KEYS.values()) | {"target"}


@pytest.mark.parametrize("name", TTA.list())
def test_every_transform_keeps_layout_is_deterministic_and_stays_in_its_modality(
        name: str) -> None:
    transform = TTA.get(name)
    assert transform.modalities and transform.modalities <= set(MODALITIES)
    assert transform.batch is not None or transform.inputs, "a transform that does nothing"
    if transform.batch is None:
        return  # input-side transforms are checked by the text test below
    batch = _batch()
    before = {k: v.clone() for k, v in batch.items()}
    out = transform.batch(batch)
    again = transform.batch(batch)
    assert set(out) == set(batch)
    own = set().union(*(MODALITY_KEYS[m] for m in transform.modalities))
    for key, value in out.items():
        assert value.shape == before[key].shape and value.dtype == before[key].dtype, key
        torch.testing.assert_close(value, again[key], rtol=0, atol=0)  # same output twice
        torch.testing.assert_close(batch[key], before[key], rtol=0, atol=0)  # input kept
        if key not in own:
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert any(not torch.equal(out[k], before[k]) for k in own), "changed nothing"


@pytest.mark.parametrize("name", [n for n in TTA if TTA.get(n).inputs])
def test_every_input_transform_changes_how_long_texts_are_encoded(tmp_path, name: str) -> None:
    from transformers import AutoTokenizer

    transform = TTA.get(name)
    assert transform.modalities == {"text"}
    assert all(hasattr(ModelInputs(), key) for key in transform.inputs)
    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    texts = [["the movie was a plot and very film it story", "good fun"]]
    head = encode_texts(tok, texts, 6, "head")
    changed = encode_texts(tok, texts, 6, transform.inputs["truncation"])
    assert [len(r) for r in changed] == [len(r) for r in head] == [6, 4]
    assert changed[0] != head[0] and changed[1] == head[1]  # only the long text differs


@pytest.mark.parametrize("name", TTA.list())
@pytest.mark.parametrize("modality", MODALITIES)
def test_predict_config_refuses_a_transform_for_a_model_without_its_modality(
        name: str, modality: str) -> None:
    cfg = PredictConfig(tta=[name])
    why = cfg.mismatch("binary", {modality})
    if modality in TTA.get(name).modalities:
        assert why is None
    else:
        assert why is not None and repr(name) in why and modality in why
    # a model reading every modality takes every transform
    assert cfg.mismatch("binary", set(MODALITIES)) is None


def test_predict_config_refuses_unknown_names_and_gmean_for_regression() -> None:
    with pytest.raises(pydantic.ValidationError, match="Did you mean 'hflip'"):
        PredictConfig(tta=["hflp"])
    gmean = PredictConfig(tta_reduce="gmean")
    assert "regression" in (gmean.mismatch("regression", {"tabular"}) or "")
    assert gmean.mismatch("binary", {"tabular"}) is None
    assert PredictConfig(tta_reduce="median").mismatch("regression", {"tabular"}) is None


def test_predict_config_refuses_a_view_named_twice() -> None:
    # [hflip, hflip] averaged the flipped view in twice (2/3 of the mean) without a word
    with pytest.raises(pydantic.ValidationError, match=r"\['hflip'\] more than once"):
        PredictConfig(tta=["hflip", "vflip", "hflip"])
    assert PredictConfig(tta=["hflip", "vflip"]).tta == ["hflip", "vflip"]


def test_identity_comes_first_then_the_named_transforms() -> None:
    names = [n for n, _ in tta_transforms(["vflip", "noise"])]
    assert names == ["none", "vflip", "noise"]
    identity = tta_transforms([])[0][1]
    assert identity.batch is None and identity.inputs == {}


def test_image_tta_transforms_are_exact_and_invertible():
    x = torch.randn(2, 3, 8, 8)
    batch = {"image": x, "num": torch.zeros(2, 1)}
    hflip = TTA.get("hflip").batch
    assert hflip is not None
    torch.testing.assert_close(hflip(hflip(batch))["image"], x)
    rot = TTA.get("rot90").batch
    assert rot is not None
    out = batch
    for _ in range(4):
        out = rot(out)
    torch.testing.assert_close(out["image"], x)
    torch.testing.assert_close(TTA.get("transpose").batch(batch)["image"], x.transpose(-1, -2))
    assert TTA.get("vflip").batch(batch)["num"] is batch["num"]  # other inputs untouched
    torch.testing.assert_close(zoom(x, 1.0), x)
    pixels = torch.rand(1, 3, 4, 4) * 0.5
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    brighter = brightness((pixels - mean) / std, 1.1) * std + mean
    torch.testing.assert_close(brighter, pixels * 1.1)


def test_tabular_noise_tta_is_small_and_repeatable():
    noise = TTA.get("noise").batch
    assert noise is not None
    batch = {"num": torch.zeros(4, 3)}
    a, b = noise(batch)["num"], noise(batch)["num"]
    torch.testing.assert_close(a, b)
    assert 0 < a.abs().max() < 0.5


def test_reductions_are_exact_on_known_inputs():
    stack = np.array([[[0.2, 0.8]], [[0.5, 0.5]], [[0.8, 0.2]]])
    np.testing.assert_allclose(reduce_predictions(stack, "mean", "multiclass"), [[0.5, 0.5]])
    np.testing.assert_allclose(reduce_predictions(stack, "median", "multiclass"), [[0.5, 0.5]])
    g = np.array([(0.2 * 0.5 * 0.8) ** (1 / 3), (0.8 * 0.5 * 0.2) ** (1 / 3)])
    np.testing.assert_allclose(reduce_predictions(stack, "gmean", "multiclass"), [g / g.sum()])
    # sigmoid outputs: gmean is the mean of the logits, so a probability and its complement
    # are treated alike (0.2, 0.5, 0.8 -> logits -a, 0, a -> 0.5)
    np.testing.assert_allclose(reduce_predictions(stack[:, :, :1], "gmean", "binary"), [[0.5]])
    logit = np.log(np.array([0.9, 0.6]) / np.array([0.1, 0.4])).mean()
    np.testing.assert_allclose(
        reduce_predictions(np.array([[[0.9]], [[0.6]]]), "gmean", "multilabel"),
        [[1 / (1 + np.exp(-logit))]])


def test_multiclass_median_is_renormalised_and_others_are_not() -> None:
    stack = np.array([[[0.6, 0.3, 0.1]], [[0.2, 0.2, 0.6]], [[0.3, 0.5, 0.2]]])
    median = np.array([[0.3, 0.3, 0.2]])  # per-class medians sum to 0.8
    np.testing.assert_allclose(reduce_predictions(stack, "median", "multiclass"),
                               median / 0.8)
    np.testing.assert_allclose(reduce_predictions(stack, "median", "multilabel"), median)
    np.testing.assert_allclose(reduce_predictions(stack, "mean", "regression"),
                               stack.mean(axis=0))


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_sigmoid_gmean_merges_a_probability_and_its_complement_to_one_half(task: str) -> None:
    """issue 12 item 17: for sigmoid outputs gmean is the mean of the logits: 0.2 and 0.8 give
    0.5 (the geometric mean of the probabilities gave 0.4, pulling every label towards 0),
    and complements are treated alike: p -> r implies 1 - p -> 1 - r."""
    width = 1 if task == "binary" else 3
    stack = np.stack([np.full((2, width), 0.2), np.full((2, width), 0.8)])
    np.testing.assert_allclose(reduce_predictions(stack, "gmean", task), 0.5)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, size=(4, 6, width))
    merged = reduce_predictions(p, "gmean", task)
    assert merged.shape == (6, width) and ((merged > 0) & (merged < 1)).all()
    np.testing.assert_allclose(reduce_predictions(1 - p, "gmean", task), 1 - merged)
    logits = np.log(p / (1 - p)).mean(axis=0)
    np.testing.assert_allclose(merged, 1 / (1 + np.exp(-logits)))
    # one transform: the prediction itself; saturated 1 and 0 are clipped, so they stay
    # finite and merge to about 0.5 (1 - 1e-12 is not exact in float64: 3e-6 off)
    np.testing.assert_allclose(reduce_predictions(p[:1], "gmean", task), p[0])
    edge = reduce_predictions(np.stack([np.ones((1, width)), np.zeros((1, width))]), "gmean",
                              task)
    np.testing.assert_allclose(edge, 0.5, atol=1e-5)


@pytest.mark.parametrize("how", ["mean", "median", "gmean"])
def test_every_multiclass_reduction_gives_rows_that_sum_to_one(how: str) -> None:
    """issue 12 items 8 and 17: merged multiclass predictions stay probabilities (the per-class
    median of three rows summing to one need not sum to one; gmean is renormalised)."""
    rng = np.random.default_rng(1)
    stack = rng.dirichlet(np.ones(4), size=(5, 7))  # (transforms, rows, classes)
    merged = reduce_predictions(stack, how, "multiclass")
    assert merged.shape == (7, 4) and (merged >= 0).all()
    np.testing.assert_allclose(merged.sum(axis=1), 1.0)
    if how == "median":
        raw = np.median(stack, axis=0)
        assert np.abs(raw.sum(axis=1) - 1).max() > 0.01  # control: the raw median does not
        np.testing.assert_allclose(merged, raw / raw.sum(axis=1, keepdims=True))

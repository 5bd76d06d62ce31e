"""Encoder concatenation, augmentation, TTA, multi-seed members and diversity."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import train
from pipeline.artifacts import read_meta
from pipeline.augment import noisy_row, noisy_tokens
from pipeline.blend import load_members
from pipeline.config import TabularNoiseConfig, TextNoiseConfig, build_config
from pipeline.data import encode_texts
from pipeline.diversity import diversity_report, expand_pairs
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric
from pipeline.tta import TTA, brightness, reduce_predictions, zoom
from tests.conftest import write_tokenizer

TINY_BERT = {"model_type": "bert", "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64}


def _with_numeric_column(data: dict) -> dict:
    comp_dir = data["competition"]["dir"]
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(f"{comp_dir}/{name}")
        frame["extra"] = np.arange(len(frame)) % 7
        frame.to_csv(f"{comp_dir}/{name}", index=False)
    data["competition"]["feature_columns"] = ["extra"]
    return data


def _pairing(competition_factory, tmp_path, pairing: str) -> dict:
    if pairing == "two timm backbones":
        data = competition_factory("image", "multiclass")
        data["model"]["encoders"] = [{"name": "timm:test_resnet", "lr": 1e-3},
                                     {"name": "timm:test_efficientnet"}]
    elif pairing == "image + tabular columns":
        data = _with_numeric_column(competition_factory("image", "binary"))
        data["model"]["encoders"].append({"name": "mlp", "params": {"hidden": [8]}})
    elif pairing == "text + tabular columns":
        data = _with_numeric_column(competition_factory("text", "regression"))
        data["model"]["encoders"].append({"name": "mlp", "params": {"hidden": [8]}})
    else:
        data = competition_factory("text", "binary")
        tok = str(write_tokenizer(tmp_path / "tokenizer"))
        bert2 = {**TINY_BERT, "hidden_size": 8, "intermediate_size": 16}
        data["model"]["encoders"] = [
            {"name": "hf", "hf_config": TINY_BERT, "tokenizer": tok, "lr": 5e-4},
            {"name": "hf", "hf_config": bert2, "tokenizer": tok},
        ]
    return data


@pytest.mark.parametrize("pairing", ["two timm backbones", "image + tabular columns",
                                     "text + tabular columns", "two transformers"])
def test_concatenated_encoders_train_and_predict(competition_factory, tmp_path, pairing):
    cfg = build_config(_pairing(competition_factory, tmp_path, pairing))
    score = train.run(cfg)
    assert np.isfinite(score)
    state = torch.load(cfg.run_dir / "seed0" / "fold0" / "best.pt", weights_only=False)["model"]
    assert {k.split(".")[1] for k in state if k.startswith("encoders.")} == {"0", "1"}
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert np.isfinite(test.drop(columns="id").to_numpy()).all()


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
    np.testing.assert_allclose(reduce_predictions(stack[:, :, :1], "gmean", "binary"),
                               [[(0.2 * 0.5 * 0.8) ** (1 / 3)]])


def test_text_truncation_keeps_head_tail_or_both(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    text = [["the movie was a plot and very film it story"]]  # 10 known words
    words = tok(text[0], add_special_tokens=False)["input_ids"][0]
    head = encode_texts(tok, text, 6, "head")[0]
    tail = encode_texts(tok, text, 6, "tail")[0]
    both = encode_texts(tok, text, 10, "head_tail")[0]
    assert head[1:-1] == words[:4] and tail[1:-1] == words[-4:]
    assert both[1:-1] == words[:2] + words[-6:]
    assert head[0] == tok.cls_token_id and tail[-1] == tok.sep_token_id


def test_text_noise_masks_deletes_and_swaps_only_ordinary_tokens():
    ids, special = [101, 5, 6, 7, 8, 102], {101, 102}
    rng = np.random.default_rng(0)
    masked = noisy_tokens(ids, TextNoiseConfig(mask=0.999), rng, special, mask_id=103)
    assert masked == [101, 103, 103, 103, 103, 102]
    swapped = noisy_tokens(ids, TextNoiseConfig(swap=0.999), rng, special, mask_id=103)
    assert swapped[0] == 101 and swapped[-1] == 102 and sorted(swapped) == sorted(ids)
    assert swapped != ids
    deleted = noisy_tokens(ids, TextNoiseConfig(delete=0.5), np.random.default_rng(3),
                           special, mask_id=103)
    assert deleted[0] == 101 and deleted[-1] == 102 and len(deleted) < len(ids)
    assert set(deleted) <= set(ids)


def test_tabular_noise_swaps_cells_from_other_rows_and_adds_gaussian():
    pool_num = np.arange(20, dtype=np.float32).reshape(10, 2)
    pool_cat = np.arange(10, dtype=np.int64).reshape(10, 1) + 100
    rng = np.random.default_rng(0)
    num, cat = noisy_row(pool_num[0], pool_cat[0], pool_num, pool_cat,
                         TabularNoiseConfig(swap=0.999), rng)
    assert num.tolist() in pool_num.tolist() and cat[0] in pool_cat.ravel()
    noisy, _ = noisy_row(pool_num[0], pool_cat[0], pool_num, pool_cat,
                         TabularNoiseConfig(gaussian=0.1), rng)
    assert 0 < np.abs(noisy - pool_num[0]).max() < 1.0


def test_augmented_training_is_repeatable_and_changes_the_model(competition_factory, tmp_path):
    data = competition_factory("image", "binary")
    plain = build_config(data)
    train.run(plain)
    data["name"] = "augmented"
    data["train"]["augment"] = {"image": [{"name": "HorizontalFlip", "p": 0.5},
                                          {"name": "RandomBrightnessContrast", "p": 0.5}]}
    first = build_config(data)
    train.run(first)
    again = build_config({**copy.deepcopy(data), "output_dir": str(tmp_path / "again")})
    train.run(again)
    a = pd.read_parquet(first.run_dir / "oof.parquet")
    b = pd.read_parquet(again.run_dir / "oof.parquet")
    pd.testing.assert_frame_equal(a, b)
    p = pd.read_parquet(plain.run_dir / "oof.parquet")
    assert not np.allclose(a["target"], p["target"])


def test_unknown_augmentation_is_a_config_error(competition_factory):
    data = competition_factory("image", "binary")
    data["train"]["augment"] = {"image": [{"name": "HorizontalFlap"}]}
    with pytest.raises(ConfigError, match=r"train\.augment\.image.*HorizontalFlap"):
        build_config(data)


def test_three_seeds_write_three_members_and_their_average(competition_factory):
    data = competition_factory("tabular", "binary")
    data["train"]["seeds"] = [0, 1, 2]
    cfg = build_config(data)
    train.run(cfg)
    folders = [cfg.run_dir / f"seed{s}" for s in (0, 1, 2)]
    assert [read_meta(f).name for f in folders] == [f"{cfg.name}-seed{s}" for s in (0, 1, 2)]
    members = load_members(folders)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")["target"].to_numpy()
    np.testing.assert_allclose(oof, members.oof.mean(axis=0)[:, 0])
    test = pd.read_parquet(cfg.run_dir / "test.parquet")["target"].to_numpy()
    np.testing.assert_allclose(test, members.test.mean(axis=0)[:, 0])


def test_diversity_report_scores_and_correlations():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 1)).astype(float)
    good = np.clip(y + rng.normal(0, 0.3, size=y.shape), 0, 1)
    noise = rng.random(size=y.shape)
    report = diversity_report(["a", "b", "c"], np.stack([good, good, noise]), y,
                              get_metric("roc_auc"))
    corr = report["correlation"]
    assert corr["a"]["b"] == pytest.approx(1.0)
    assert abs(corr["a"]["c"]) < 0.2
    assert report["scores"]["a"] > 0.9 > 0.7 > report["scores"]["c"]


def test_pairs_expand_every_encoder_pair(competition_factory, tmp_path):
    data = competition_factory("image", "multiclass")
    data["model"]["encoders"] = [{"name": "timm:test_resnet"}, {"name": "timm:test_efficientnet"},
                                 {"name": "timm:test_convnext"}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    written = expand_pairs(path, tmp_path / "pairs")
    assert len(written) == 3
    pairs = [yaml.safe_load(p.read_text()) for p in written]
    assert len({p["name"] for p in pairs}) == 3
    assert all(len(p["model"]["encoders"]) == 2 for p in pairs)
    assert pairs[0]["name"] == "image-multiclass--test_resnet--test_efficientnet"

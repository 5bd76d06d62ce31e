"""Training-time augmentation (pipeline/data/augment.py): albumentations pipelines from YAML
(STRONG_IMAGE included), token noise, tabular swap and Gaussian noise, and augmented training
that repeats exactly and changes the model."""

from __future__ import annotations

import copy

import albumentations as A
import numpy as np
import pandas as pd
import pytest

from pipeline import train
from pipeline.config import build_config
from pipeline.data import TabularNoiseConfig, TextNoiseConfig
from pipeline.data.augment import STRONG_IMAGE, build_image_augment, noisy_row, noisy_tokens
from pipeline.errors import ConfigError


def test_strong_image_pipeline_builds_and_keeps_the_image_size() -> None:
    steps = build_image_augment(STRONG_IMAGE)
    assert [type(t).__name__ for t in steps] == ["SomeOf", "CoarseDropout"]
    assert len(steps[0].transforms) == len(STRONG_IMAGE[0]["transforms"])
    pipeline = A.Compose(steps, seed=0)
    image = np.random.default_rng(0).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    out = pipeline(image=image)["image"]
    assert out.shape == image.shape and out.dtype == image.dtype
    assert not np.array_equal(out, image)  # two ops and a cutout always change it


@pytest.mark.parametrize(("items", "message"), [
    ([{"name": "HorizontalFlap"}], "item 0: 'HorizontalFlap' is not an albumentations"),
    ([{"name": "Compose"}, {"p": 0.5}], "item 1: None is not"),
    ([{"name": "HorizontalFlip", "p": 2}], r"item 0 \(HorizontalFlip\): bad arguments"),
    ([{"name": "OneOf", "transforms": [{"name": "Blurr"}]}],
     r"item 0 \(OneOf\) transforms: item 0: 'Blurr'"),
])
def test_bad_image_augment_items_name_the_item(items, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_image_augment(items)


def test_bad_augment_arguments_are_one_line_naming_the_argument(competition_factory) -> None:
    # albumentations 1's height/width for RandomResizedCrop: pydantic's three-line message
    # (field, problem, help link) split the CLI's error over lines
    data = competition_factory("image", "binary")
    data["train"]["augment"] = {"image": [{"name": "RandomResizedCrop", "height": 32,
                                           "width": 32}]}
    with pytest.raises(ConfigError) as info:
        build_config(data)
    problem = str(info.value).splitlines()[1:]
    assert len(problem) == 1, str(info.value)
    assert "item 0 (RandomResizedCrop)" in problem[0] and "size: Field required" in problem[0]


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


def test_text_noise_is_seeded_and_never_deletes_every_ordinary_token() -> None:
    ids, special = [101, 5, 6, 7, 8, 102], {101, 102}
    cfg = TextNoiseConfig(mask=0.3, delete=0.3, swap=0.3)
    first = noisy_tokens(ids, cfg, np.random.default_rng(5), special, mask_id=103)
    assert first == noisy_tokens(ids, cfg, np.random.default_rng(5), special, mask_id=103)
    assert noisy_tokens(ids, TextNoiseConfig(), np.random.default_rng(5), special, 103) == ids
    for seed in range(20):  # deleting everything would leave only [CLS] [SEP]: kept whole
        out = noisy_tokens(ids, TextNoiseConfig(delete=0.99), np.random.default_rng(seed),
                           special, mask_id=103)
        assert len(set(out) - special) > 0


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


def test_tabular_noise_keeps_dtypes_and_leaves_the_pool_alone() -> None:
    pool_num = np.arange(20, dtype=np.float32).reshape(10, 2)
    pool_cat = np.arange(10, dtype=np.int64).reshape(10, 1)
    before = pool_num.copy(), pool_cat.copy()
    cfg = TabularNoiseConfig(swap=0.5, gaussian=0.1)
    num, cat = noisy_row(pool_num[3], pool_cat[3], pool_num, pool_cat, cfg,
                         np.random.default_rng(1))
    assert num.dtype == np.float32 and cat.dtype == np.int64
    np.testing.assert_array_equal(pool_num, before[0])  # the row is a copy, not a view
    np.testing.assert_array_equal(pool_cat, before[1])


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

"""Batched on-device augmentation (pipeline/data/device_augment.py): each transform against
albumentations 2.0.8 on fixed parameters, row probabilities, seeding, and the reason strings
for what has no device version."""

from __future__ import annotations

import math
import warnings
from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch

from pipeline.data.device_augment import DeviceImageAugment


def _images(n: int = 4, c: int = 3, h: int = 16, w: int = 20, seed: int = 0) -> torch.Tensor:
    """Random uint8-valued float images, N x C x H x W."""
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.integers(0, 256, (n, c, h, w)), dtype=torch.float32)


def _build(items: list[dict[str, Any]]) -> DeviceImageAugment:
    aug = DeviceImageAugment.build(items)
    assert isinstance(aug, DeviceImageAugment), aug
    return aug


def _run(items: list[dict[str, Any]], images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return _build(items)(images, torch.Generator().manual_seed(seed))


def _albumentations(item: dict[str, Any], images: torch.Tensor) -> torch.Tensor:
    """The same single transform through albumentations, row by row on uint8 HWC arrays."""
    args = {k: v for k, v in item.items() if k != "name"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ShiftScaleRotate: "use Affine"
        transform = getattr(A, item["name"])(**args)
    rows = [transform(image=np.ascontiguousarray(x.permute(1, 2, 0).numpy().astype(np.uint8)))
            ["image"] for x in images]
    return torch.tensor(np.stack(rows)).permute(0, 3, 1, 2).float()


def test_empty_list_returns_the_input_and_draws_nothing() -> None:
    images, gen = _images(), torch.Generator().manual_seed(3)
    state = gen.get_state()
    assert _build([])(images, gen) is images
    assert torch.equal(gen.get_state(), state)


@pytest.mark.parametrize(("name", "flipped"), [
    ("HorizontalFlip", lambda x: x.flip(-1)), ("VerticalFlip", lambda x: x.flip(-2)),
])
def test_flips_are_exact_at_p1_and_identity_at_p0(name, flipped) -> None:
    images = _images()
    assert torch.equal(_run([{"name": name, "p": 1.0}], images), flipped(images))
    assert torch.equal(_run([{"name": name, "p": 1.0}], images),
                       _albumentations({"name": name, "p": 1.0}, images))
    assert torch.equal(_run([{"name": name, "p": 0.0}], images), images)


def test_integer_translate_px_is_the_exact_shift_albumentations_gives() -> None:
    images = _images()
    item = {"name": "Affine", "translate_px": {"x": (2, 2), "y": (-1, -1)}, "p": 1.0}
    out = _run([item], images)
    assert torch.equal(out, _albumentations(item, images))
    # +x moves content right, -y moves it up; the uncovered border takes fill (0)
    assert torch.equal(out[..., :-1, 2:], images[..., 1:, :-2])
    assert (out[..., :2] == 0).all() and (out[..., -1, :] == 0).all()
    filled = _run([{**item, "fill": 90}], images)
    assert (filled[..., :2] == 90).all() and torch.equal(filled[..., :-1, 2:], out[..., :-1, 2:])


@pytest.mark.parametrize("item", [
    {"name": "Affine", "rotate": (30, 30)},
    {"name": "Affine", "rotate": (-75, -75), "fill": 100},
    {"name": "Affine", "shear": {"x": (12, 12), "y": (0, 0)}},
    {"name": "Affine", "shear": {"x": (0, 0), "y": (-15, -15)}},
    {"name": "Affine", "scale": {"x": (1.25, 1.25), "y": (0.8, 0.8)}, "fill": (10, 20, 30)},
    {"name": "Affine", "scale": (0.7, 0.7), "keep_ratio": True, "translate_px": (3, 3)},
    {"name": "Affine", "translate_percent": {"x": (0.23, 0.23), "y": (-0.1, -0.1)}},
    {"name": "Affine", "rotate": (20, 20), "border_mode": 1},  # replicate
    {"name": "Affine", "rotate": (20, 20), "scale": (0.6, 0.6), "border_mode": 2},  # reflect
    {"name": "Affine", "rotate": (90, 90), "interpolation": 0},
    {"name": "Affine", "rotate": (10, 10), "shear": (5, 5), "scale": (1.1, 1.1),
     "translate_px": {"x": (-3, -3), "y": (2, 2)}, "fill": 255},
    {"name": "ShiftScaleRotate", "shift_limit": (0.1, 0.1), "scale_limit": (0.2, 0.2),
     "rotate_limit": (15, 15)},
])
def test_affine_matches_albumentations_within_rounding(item) -> None:
    # square and non-square images: the centre and normalisation differ per axis
    for images in (_images(h=16, w=20), _images(n=2, c=1, h=24, w=24, seed=1)):
        out = _run([{**item, "p": 1.0}], images)
        ref = _albumentations({**item, "p": 1.0}, images)
        diff = (out - ref).abs()
        # albumentations rounds to uint8 (<= 0.5); a sign or centre error is off by tens
        assert diff.max() <= 1.0, (item, diff.max())
        assert diff.mean() < 0.35


def test_balanced_scale_picks_below_and_above_one_evenly() -> None:
    aug = _build([{"name": "Affine", "scale": (0.5, 2.0), "balanced_scale": True, "p": 1.0}])
    scales = aug.ops[0].matrices(torch.Generator().manual_seed(0), 4000, 8, 8)[:, 0, 0]
    assert scales.min() >= 0.5 and scales.max() <= 2.0
    assert abs((scales < 1).double().mean().item() - 0.5) < 0.05  # unbalanced: 1/3 below


@pytest.mark.parametrize("args", [
    {"brightness_limit": (0.2, 0.2), "contrast_limit": (0.3, 0.3)},
    {"brightness_limit": (-0.25, -0.25), "contrast_limit": (-0.4, -0.4)},
    {"brightness_limit": (0.1, 0.1), "contrast_limit": (0.0, 0.0), "brightness_by_max": False},
    {"brightness_limit": (-0.3, -0.3), "contrast_limit": (0.2, 0.2), "brightness_by_max": False},
    {"brightness_limit": (0.3, 0.3), "contrast_limit": (0.3, 0.3), "ensure_safe_range": True},
])
def test_brightness_contrast_matches_albumentations_within_one_grey_level(args) -> None:
    images = _images()
    item = {"name": "RandomBrightnessContrast", **args, "p": 1.0}
    out, ref = _run([item], images), _albumentations(item, images)
    # albumentations truncates to uint8 after the clip to 0..255; we keep the float
    assert ((out - ref) >= 0).all() and ((out - ref) < 1).all()
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize(("holes", "size", "pixels"), [
    ({"hole_height_range": (3, 3), "hole_width_range": (5, 5)}, (3, 5), 15),  # pixels
    ({"hole_height_range": (0.25, 0.25), "hole_width_range": (0.5, 0.5)}, (4, 10), 40),
])
def test_coarse_dropout_paints_one_rectangle_per_hole_like_albumentations(holes, size,
                                                                          pixels) -> None:
    images = torch.full((64, 3, 16, 20), 200.0)
    item = {"name": "CoarseDropout", "num_holes_range": (1, 1), **holes, "fill": 7, "p": 1.0}
    out = _run([item], images)
    ref = _albumentations(item, images[:4])
    assert ((ref == 7).sum(dim=(1, 2, 3)) == 3 * pixels).all()
    assert set(out.unique().tolist()) == {7.0, 200.0}
    hole = out[:, 0] == 7
    assert (hole.sum(dim=(1, 2)) == pixels).all()
    rows, cols = hole.any(2), hole.any(1)  # the hole is a full h x w box
    assert (rows.sum(1) == size[0]).all() and (cols.sum(1) == size[1]).all()
    assert torch.equal(hole[:, None].expand(-1, 3, -1, -1), out == 7)  # all channels
    # positions span the whole image, both edges included (inclusive integer ranges)
    top, left = rows.float().argmax(1), cols.float().argmax(1)
    assert top.min() == 0 and top.max() == 16 - size[0]
    assert left.min() == 0 and left.max() == 20 - size[1]


def test_coarse_dropout_pixel_sizes_cover_the_inclusive_range() -> None:
    images = torch.full((300, 1, 12, 12), 200.0)
    item = {"name": "CoarseDropout", "num_holes_range": (1, 1), "hole_height_range": (1, 3),
            "hole_width_range": (2, 30), "p": 1.0}  # widths beyond the image stop at 12
    hole = _run([item], images)[:, 0] == 0
    assert set(hole.any(2).sum(1).tolist()) == {1, 2, 3}
    assert set(hole.any(1).sum(1).tolist()) == set(range(2, 13))


def test_coarse_dropout_hole_count_and_per_channel_fill() -> None:
    images = torch.full((200, 3, 32, 32), 200.0)
    item = {"name": "CoarseDropout", "num_holes_range": (1, 3), "hole_height_range": (1, 1),
            "hole_width_range": (1, 1), "fill": (1, 2, 3), "p": 1.0}
    out = _run([item], images)
    for channel, value in enumerate((1, 2, 3)):
        assert torch.equal(out[:, channel] == value, out[:, 0] == 1)
    counts = (out[:, 0] == 1).sum(dim=(1, 2))  # 1x1 holes: overlaps are rare
    assert counts.min() == 1 and counts.max() == 3
    assert 1.8 < counts.float().mean() < 2.2


@pytest.mark.parametrize("item", [
    {"name": "HorizontalFlip"},
    {"name": "Affine", "translate_px": (1, 1)},
    {"name": "RandomBrightnessContrast", "brightness_limit": (0.2, 0.2)},
    {"name": "CoarseDropout", "hole_height_range": (2, 2), "hole_width_range": (2, 2)},
])
def test_p_half_changes_about_half_of_a_large_batch(item) -> None:
    n = 2000
    images = _images(n=n, c=1, h=6, w=6)
    changed = (_run([{**item, "p": 0.5}], images) != images).flatten(1).any(1)
    bound = 4 * math.sqrt(0.25 / n)  # 4 binomial standard deviations
    assert abs(changed.float().mean().item() - 0.5) < bound
    assert torch.equal(_run([{**item, "p": 0.0}], images), images)


def test_one_of_picks_one_child_per_row_weighted_by_their_p() -> None:
    images = _images(n=2000, c=1, h=4, w=4)
    item = {"name": "OneOf", "p": 1.0, "transforms": [
        {"name": "HorizontalFlip", "p": 0.2}, {"name": "VerticalFlip", "p": 0.6}]}
    out = _run([item], images)  # children forced: 0.2 and 0.6 are weights 1/4 and 3/4
    horizontal = (out == images.flip(-1)).flatten(1).all(1)
    vertical = (out == images.flip(-2)).flatten(1).all(1)
    assert (horizontal ^ vertical).all()
    assert abs(horizontal.float().mean().item() - 0.25) < 0.04


def test_some_of_applies_n_distinct_children_in_order() -> None:
    images = _images(n=2000, c=1, h=4, w=4)
    item = {"name": "SomeOf", "n": 1, "p": 1.0, "transforms": [
        {"name": "HorizontalFlip", "p": 1.0}, {"name": "VerticalFlip", "p": 1.0}]}
    out = _run([item], images)
    horizontal = (out == images.flip(-1)).flatten(1).all(1)
    vertical = (out == images.flip(-2)).flatten(1).all(1)
    assert (horizontal ^ vertical).all()
    assert abs(horizontal.float().mean().item() - 0.5) < 0.05
    both = _run([{**item, "n": 2}], images)
    assert torch.equal(both, images.flip(-1).flip(-2))


MIXED = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "Affine", "rotate": (-20, 20), "scale": (0.8, 1.2), "translate_percent": (-0.1, 0.1),
     "shear": {"x": (-10, 10), "y": (-5, 5)}, "p": 0.8},
    {"name": "RandomBrightnessContrast", "p": 0.8},
    {"name": "OneOf", "p": 0.5, "transforms": [{"name": "VerticalFlip"},
                                              {"name": "CoarseDropout", "fill": 127}]},
    {"name": "CoarseDropout", "num_holes_range": (1, 4), "p": 0.5},
]


def test_same_seed_same_batch_other_seed_another_and_shape_kept() -> None:
    images = _images(n=16)
    aug = _build(MIXED)
    first = aug(images, torch.Generator().manual_seed(7))
    assert torch.equal(first, aug(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, aug(images, torch.Generator().manual_seed(8)))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert first.device == images.device
    assert first.min() >= 0 and first.max() <= 255


def test_draws_do_not_depend_on_whether_a_transform_applied() -> None:
    # an identity Affine at p=1 or p=0 must leave the next transform's holes where they were
    images = _images(n=8)
    dropout = {"name": "CoarseDropout", "num_holes_range": (2, 2), "fill": 0, "p": 1.0}
    applied = _run([{"name": "Affine", "p": 1.0}, dropout], images)
    skipped = _run([{"name": "Affine", "p": 0.0}, dropout], images)
    assert torch.equal(applied, skipped)


@pytest.mark.parametrize(("items", "reason"), [
    ([{"name": "GaussNoise"}], "item 0: 'GaussNoise' has no device version"),
    ([{"name": "HorizontalFlip"}, {"name": "Affine", "fit_output": True}],
     "item 1: 'Affine' argument fit_output=True has no device version"),
    ([{"name": "Affine", "interpolation": 2}], "'Affine' argument interpolation=2"),
    ([{"name": "Affine", "border_mode": 4}], "'Affine' argument border_mode=4"),
    ([{"name": "CoarseDropout", "fill": "random"}], "'CoarseDropout' argument fill='random'"),
    ([{"name": "OneOf", "transforms": [{"name": "HorizontalFlip"}, {"name": "Blur"}]}],
     "item 0: OneOf transforms: 'Blur' has no device version"),
    ([{"name": "SomeOf", "n": 2, "replace": True, "transforms": [{"name": "VerticalFlip"}]}],
     "'SomeOf' argument replace=True"),
    ([{"name": "RandomOrder", "transforms": [{"name": "VerticalFlip"}]}],
     "'RandomOrder' has no device version"),
])
def test_unsupported_transforms_and_arguments_give_a_reason(items, reason) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = DeviceImageAugment.build(items)
    assert isinstance(result, str) and reason in result and "\n" not in result


def test_invalid_items_raise_like_the_albumentations_builder() -> None:
    with pytest.raises(ValueError, match="HorizontalFlap"):
        DeviceImageAugment.build([{"name": "HorizontalFlap"}])
    with pytest.raises(ValueError, match="N x C x H x W"):
        _build([])(torch.zeros(3, 4, 4), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_gpu_give_the_same_batch_for_the_same_seed() -> None:
    images = _images(n=32, h=32, w=32)
    aug = _build(MIXED)
    cpu = aug(images, torch.Generator().manual_seed(5))
    gpu = aug(images.cuda(), torch.Generator().manual_seed(5))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    # the same draws; only float rounding (FMA, reduction order) may differ
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)


@pytest.mark.parametrize("shift", [{"x": (2, 2), "y": (-1, -1)}, {"x": (-3, -3), "y": (0, 0)}])
def test_the_whole_pixel_shift_path_equals_the_warp(shift) -> None:
    """A translation-only Affine takes a padded gather; it must give the warp's pixels."""
    images = torch.rand(6, 3, 9, 11, generator=torch.Generator().manual_seed(3)) * 255
    item = {"name": "Affine", "translate_px": shift, "fill": 7, "p": 1.0}
    fast = DeviceImageAugment.build([item])
    warp = DeviceImageAugment.build([item])
    assert isinstance(fast, DeviceImageAugment) and isinstance(warp, DeviceImageAugment)
    assert fast.ops[0].shift_only
    warp.ops[0].shift_only = False
    out = fast(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, warp(images, torch.Generator().manual_seed(0)),
                               atol=1e-4, rtol=0)
    assert (out[:, :, :, : max(shift["x"][0], 0)] == 7).all()  # the uncovered side is fill

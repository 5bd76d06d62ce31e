"""Device pixel-value transforms (pipeline/data/device_colour.py): each against albumentations
2.0.8 on fixed parameters, on colour, equal-channel and one-channel images; p=0, fixed draw
counts, the reasons for what stays on the CPU, and FixMatch's strong view built on the device."""

from __future__ import annotations

import warnings
from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch

from pipeline.data.augment import STRONG_IMAGE
from pipeline.data.device_augment import DeviceImageAugment

# fixed parameters (degenerate ranges), so albumentations' draws and ours give the same image
EXACT = [
    {"name": "ColorJitter", "brightness": 0, "contrast": 0, "saturation": (0.7, 0.7), "hue": 0},
    {"name": "ColorJitter", "brightness": 0, "contrast": 0, "saturation": (1.45, 1.45),
     "hue": 0},
    {"name": "ColorJitter", "brightness": (1.3, 1.3), "contrast": 0, "saturation": 0, "hue": 0},
    {"name": "ColorJitter", "brightness": 0, "contrast": (0.6, 0.6), "saturation": 0, "hue": 0},
    {"name": "ColorJitter", "brightness": 0, "contrast": (1.6, 1.6), "saturation": 0, "hue": 0},
    {"name": "ColorJitter", "brightness": 0, "contrast": (0.0, 0.0), "saturation": 0, "hue": 0},
    {"name": "Sharpen", "alpha": (0.3, 0.3), "lightness": (0.7, 0.7)},
    {"name": "Sharpen", "alpha": (0.41, 0.41), "lightness": (0.93, 0.93)},
    {"name": "AutoContrast"},
    {"name": "AutoContrast", "method": "pil"},
    {"name": "Equalize"},
    {"name": "Equalize", "mode": "pil"},
    {"name": "Posterize", "num_bits": (5, 5)},
    {"name": "Posterize", "num_bits": (1, 1)},
    {"name": "Solarize", "threshold_range": (0.7, 0.7)},
    {"name": "Solarize", "threshold_range": (0.2, 0.2)},  # 51: on a whole level, >= counts
]
# steps computed by OpenCV with float32 fused multiply-adds: exact here, but another build of
# cv2 (no FMA) may round a rare pixel the other way
FMA = {"ColorJitter", "Sharpen"}


def _images(kind: str, n: int = 12, h: int = 16, w: int = 20, seed: int = 0) -> torch.Tensor:
    """Random uint8-valued float images: "rgb", "gray3" (equal channels, as the pipeline holds
    grayscale), "gray1" (one channel) or "narrow" (levels 60..124, to stretch)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 1 if kind == "gray1" else 3, h, w))
    if kind == "gray3":
        x[:, 1:] = x[:, :1]
    if kind == "narrow":
        x = x // 4 + 60
    return torch.tensor(x, dtype=torch.float32)


def _build(items: list[dict[str, Any]]) -> DeviceImageAugment:
    aug = DeviceImageAugment.build(items)
    assert isinstance(aug, DeviceImageAugment), aug
    return aug


def _albumentations(item: dict[str, Any], images: torch.Tensor) -> torch.Tensor:
    """The same transform at p=1 through albumentations, row by row on uint8 HWC arrays."""
    transform = getattr(A, item["name"])(**{k: v for k, v in item.items() if k != "name"},
                                         p=1.0)
    out = [transform(image=np.ascontiguousarray(x.permute(1, 2, 0).numpy().astype(np.uint8)))
           ["image"] for x in images]
    return torch.tensor(np.stack(out)).reshape(*images.shape[:1], *images.shape[2:], -1
                                               ).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("kind", ["rgb", "gray3", "gray1", "narrow"])
@pytest.mark.parametrize("item", EXACT, ids=lambda i: "-".join(map(str, i.values())))
def test_each_op_matches_albumentations_on_fixed_parameters(item, kind) -> None:
    images = _images(kind)
    out = _build([{**item, "p": 1.0}])(images, torch.Generator().manual_seed(0))
    expected = _albumentations(item, images)
    diff = (out - expected).abs()
    if item["name"] in FMA:
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    else:
        assert torch.equal(out, expected)
    assert out.dtype == images.dtype and out.shape == images.shape


def test_per_channel_posterize_bits_match_albumentations() -> None:
    item = {"name": "Posterize", "num_bits": [(2, 2), (5, 5), (7, 7)]}
    images = _images("rgb")
    out = _build([{**item, "p": 1.0}])(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, _albumentations(item, images))
    assert torch.equal(out[:, 0] % 64, torch.zeros_like(out[:, 0]))  # 2 bits kept: x64 steps


def test_fractional_inputs_are_rounded_to_the_levels_albumentations_would_see() -> None:
    images = _images("rgb")
    aug = _build([{"name": "Equalize", "p": 1.0}])
    shifted = (images + 0.3).clamp(max=255)
    assert torch.equal(aug(shifted, torch.Generator()), aug(images, torch.Generator()))


def test_colour_jitter_with_several_steps_applies_them_in_a_per_row_order() -> None:
    images = _images("rgb", n=32)
    both = {"name": "ColorJitter", "brightness": (1.4, 1.4), "contrast": (0.5, 0.5),
            "saturation": 0, "hue": 0, "p": 1.0}
    bright = {**both, "contrast": 0}
    contrast = {**both, "brightness": 0}
    out = _build([both])(images, torch.Generator().manual_seed(1))
    gen = torch.Generator()
    first_b = _build([contrast])(_build([bright])(images, gen), gen)
    first_c = _build([bright])(_build([contrast])(images, gen), gen)
    is_b = (out == first_b).flatten(1).all(1)
    is_c = (out == first_c).flatten(1).all(1)
    assert bool((is_b | is_c).all())  # every row is one of the two orders
    assert 0 < int(is_b.sum()) < 32 and 0 < int(is_c.sum()) < 32  # and both orders occur


@pytest.mark.parametrize("item", [
    {"name": "ColorJitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.6, "hue": 0},
    {"name": "Sharpen"}, {"name": "AutoContrast"}, {"name": "Equalize"},
    {"name": "Posterize", "num_bits": (4, 8)}, {"name": "Solarize", "threshold_range": (0.5, 1)},
], ids=lambda i: i["name"])
def test_p0_is_identity_and_the_draw_count_does_not_depend_on_p(item) -> None:
    images = _images("rgb") + 0.25  # fractions too: untouched rows keep them
    states = []
    for p in (0.0, 1.0):
        gen = torch.Generator().manual_seed(7)
        out = _build([{**item, "p": p}])(images, gen)
        if p == 0:
            assert torch.equal(out, images)
        else:
            assert not torch.equal(out, images)
        states.append(gen.get_state())
    assert torch.equal(states[0], states[1])  # a following op sees the same random numbers


@pytest.mark.parametrize(("item", "reason"), [
    ({"name": "ColorJitter"}, "'ColorJitter' argument hue=(-0.5, 0.5)"),
    ({"name": "Sharpen", "method": "gaussian"}, "'Sharpen' argument method='gaussian'"),
    ({"name": "AutoContrast", "cutoff": 2}, "'AutoContrast' argument cutoff=2"),
    ({"name": "AutoContrast", "ignore": 0}, "'AutoContrast' argument ignore=0"),
    ({"name": "Equalize", "by_channels": False}, "'Equalize' argument by_channels=False"),
    ({"name": "Equalize", "mask": np.ones((4, 4), np.uint8)}, "'Equalize' argument mask (ndarray)"),
])
def test_arguments_without_a_device_version_give_a_reason(item, reason) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = DeviceImageAugment.build([item])
    assert isinstance(result, str) and reason in result and "\n" not in result


def test_strong_view_builds_keeps_shape_and_is_deterministic_per_seed() -> None:
    images = _images("rgb", n=16, h=32, w=32)
    aug = _build(STRONG_IMAGE)
    first = aug(images, torch.Generator().manual_seed(3))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, aug(images, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, aug(images, torch.Generator().manual_seed(4)))
    assert float(first.min()) >= 0 and float(first.max()) <= 255


def test_strong_view_applies_two_of_thirteen_per_row_then_dropout() -> None:
    aug = _build(STRONG_IMAGE)
    some_of, dropout = aug.ops
    chosen: list[torch.Tensor] = []

    def recorder(op: Any) -> Any:
        apply = op.apply

        def record(images: torch.Tensor, rows: torch.Tensor, gen: torch.Generator) -> Any:
            chosen.append(rows.clone())
            return apply(images, rows, gen)
        return record

    for op in [*some_of.children, dropout]:
        op.apply = recorder(op)
    aug(_images("rgb", n=256, h=8, w=8), torch.Generator().manual_seed(0))
    per_op = torch.stack(chosen[:-1])  # 13 x 256
    assert per_op.shape == (13, 256)
    assert bool((per_op.sum(0) == 2).all())  # exactly two transforms per row
    rates = per_op.float().mean(1)  # each 2/13 ~ 0.154; 256 rows: sd ~ 0.023
    assert bool(((rates > 0.06) & (rates < 0.26)).all()), rates
    assert bool(chosen[-1].all())  # CoarseDropout at p=1 on every row


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_colour_ops_give_the_same_batch_on_gpu() -> None:
    items = [{**item, "p": 0.5} for item in EXACT if item["name"] != "Sharpen"]
    images = _images("rgb", n=32)
    aug = _build(items)
    cpu = aug(images, torch.Generator().manual_seed(5))
    gpu = aug(images.cuda(), torch.Generator().manual_seed(5))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1, rtol=0)


def test_ops_on_some_rows_change_only_those_rows() -> None:
    """Ops compute only their chosen rows (index_select / index_copy): at p=0.5 the whole-pixel
    shift must give the warp's batch, and the rows it skips stay as they were."""
    images = _images("rgb", n=24) + 0.5
    # fixed shifts: the two paths draw different counts, the same rows (p is drawn first)
    item = {"name": "Affine", "translate_px": {"x": (2, 2), "y": (-1, -1)}, "p": 0.5}
    fast, warp = _build([item]), _build([item])
    assert fast.ops[0].shift_only
    warp.ops[0].shift_only = False
    out = fast(images, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, warp(images, torch.Generator().manual_seed(2)),
                               atol=1e-4, rtol=0)
    same = (out == images).flatten(1).all(1)
    assert 0 < int(same.sum()) < 24
    solarized = _build([{"name": "Solarize", "threshold_range": (0.5, 0.5), "p": 0.5}])(
        images, torch.Generator().manual_seed(2))
    kept = (solarized == images).flatten(1).all(1)
    assert 0 < int(kept.sum()) < 24  # untouched rows keep their fractions; others are levels
    assert torch.equal(solarized[~kept], solarized[~kept].round())

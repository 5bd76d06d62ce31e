"""Training-time augmentation: albumentations pipelines for images, token noise for text,
Gaussian and swap noise for tabular rows. Every draw comes from a generator seeded with the
epoch and the row, so a resumed run sees the same augmented batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from pipeline.schema import Section

if TYPE_CHECKING:  # imported where used: a run that never needs it skips ~1 s
    import albumentations as A

# The strong view of FixMatch/UDA for images: RandAugment-like (two random ops per row, each
# at a random strength) followed by cutout, as in FixMatch's RandAugment + Cutout.
STRONG_IMAGE: list[dict[str, Any]] = [
    {"name": "SomeOf", "n": 2, "transforms": [
        {"name": "Affine", "rotate": (-30, 30), "p": 1.0},
        {"name": "Affine", "shear": {"x": (-20, 20), "y": (0, 0)}, "p": 1.0},
        {"name": "Affine", "shear": {"x": (0, 0), "y": (-20, 20)}, "p": 1.0},
        {"name": "Affine", "translate_percent": {"x": (-0.3, 0.3), "y": (0, 0)}, "p": 1.0},
        {"name": "Affine", "translate_percent": {"x": (0, 0), "y": (-0.3, 0.3)}, "p": 1.0},
        {"name": "RandomBrightnessContrast", "brightness_limit": 0.4, "contrast_limit": 0.0,
         "p": 1.0},
        {"name": "RandomBrightnessContrast", "brightness_limit": 0.0, "contrast_limit": 0.4,
         "p": 1.0},
        {"name": "ColorJitter", "brightness": 0, "contrast": 0, "saturation": 0.6, "hue": 0,
         "p": 1.0},
        {"name": "Sharpen", "p": 1.0},
        {"name": "AutoContrast", "p": 1.0},
        {"name": "Equalize", "p": 1.0},
        {"name": "Posterize", "num_bits": (4, 8), "p": 1.0},
        {"name": "Solarize", "threshold_range": (0.5, 1.0), "p": 1.0},
    ]},
    {"name": "CoarseDropout", "num_holes_range": (1, 1), "hole_height_range": (0.1, 0.5),
     "hole_width_range": (0.1, 0.5), "fill": 127, "p": 1.0},
]


def build_image_augment(items: list[dict[str, Any]]) -> list[A.BasicTransform]:
    """Albumentations transforms from ``[{name: <class>, **arguments}, ...]``; compositions
    (``OneOf``, ``SomeOf``, ...) take their ``transforms`` as such a list too.

    >>> [type(t).__name__ for t in build_image_augment([{"name": "HorizontalFlip", "p": 0.5}])]
    ['HorizontalFlip']
    """
    import albumentations as A  # here: a run without image augmentation never imports it

    transforms = []
    for i, item in enumerate(items):
        args = dict(item)
        name = args.pop("name", None)
        cls = getattr(A, str(name), None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform | A.BaseCompose):
            raise ValueError(
                f"item {i}: {name!r} is not an albumentations transform "
                "(e.g. HorizontalFlip, Affine, RandomBrightnessContrast, CoarseDropout, OneOf)"
            )
        if issubclass(cls, A.BaseCompose):
            try:
                args["transforms"] = build_image_augment(args.get("transforms") or [])
            except ValueError as err:
                raise ValueError(f"item {i} ({name}) transforms: {err}") from None
        try:
            transforms.append(cls(**args))
        except (TypeError, ValueError) as err:
            raise ValueError(f"item {i} ({name}): bad arguments {args}: {_problems(err)}"
                             ) from None
    return transforms


def _problems(err: Exception) -> str:
    """``err`` in one line. Albumentations checks its arguments with pydantic, whose message
    spans lines (the field, its problem, a help link): printed as is it broke the CLI's
    one-line error into fragments that named no argument on the error's own line. It raises
    a ValueError from pydantic's error, which holds the problems by field."""
    errors = getattr(err.__cause__ or err, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                         for e in errors())
    return " ".join(str(err).split())


class TextNoiseConfig(Section):
    """Token-level noise on training texts (special tokens are never touched)."""

    mask: float = Field(0.0, ge=0, lt=1)  # replace with the mask (or unknown) token
    delete: float = Field(0.0, ge=0, lt=1)
    swap: float = Field(0.0, ge=0, lt=1)  # swap with the next token


class TabularNoiseConfig(Section):
    """Noise on training rows of tabular inputs."""

    gaussian: float = Field(0.0, ge=0)  # std of noise on standardised numeric features
    swap: float = Field(0.0, ge=0, lt=1)  # chance a cell takes another row's value


class AugmentConfig(Section):
    """Training-time augmentation per input kind."""

    # albumentations transforms by class name with their arguments, applied before the
    # resize and normalisation, e.g. [{name: HorizontalFlip, p: 0.5}, {name: Affine, ...}]
    image: list[dict[str, Any]] = Field(default_factory=list)
    text: TextNoiseConfig | None = None
    tabular: TabularNoiseConfig | None = None

    @field_validator("image")
    @classmethod
    def _albumentations(cls, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        build_image_augment(items)
        return items



def noisy_tokens(
    ids: list[int], cfg: TextNoiseConfig, rng: np.random.Generator, special: set[int],
    mask_id: int,
) -> list[int]:
    """Mask, delete and swap ordinary tokens with the configured probabilities."""
    return _noisy(ids, cfg, rng, special, mask_id)[0]


def noisy_segments(
    ids: list[int], types: list[int], cfg: TextNoiseConfig, rng: np.random.Generator,
    special: set[int], mask_id: int,
) -> tuple[list[int], list[int]]:
    """:func:`noisy_tokens` of a pair, with each token's segment id following the token (a
    deleted token's id goes with it); the same draws as :func:`noisy_tokens`."""
    out, source = _noisy(ids, cfg, rng, special, mask_id)
    return out, [types[i] for i in source]


def _noisy(
    ids: list[int], cfg: TextNoiseConfig, rng: np.random.Generator, special: set[int],
    mask_id: int,
) -> tuple[list[int], list[int]]:
    """The noisy tokens, and the position in ``ids`` each came from."""
    out, source = list(ids), list(range(len(ids)))
    positions = [i for i, t in enumerate(out) if t not in special]
    for i in positions:
        if rng.random() < cfg.mask:
            out[i] = mask_id
    for j in range(len(positions) - 1):
        a, b = positions[j], positions[j + 1]
        if b == a + 1 and rng.random() < cfg.swap:
            out[a], out[b] = out[b], out[a]
            source[a], source[b] = source[b], source[a]
    keep = [not (i in positions and rng.random() < cfg.delete) for i in range(len(out))]
    kept = [i for i, k in enumerate(keep) if k]
    if len(kept) > len(special & {out[i] for i in kept}):
        return [out[i] for i in kept], [source[i] for i in kept]
    return out, source


def noisy_row(
    num: np.ndarray, cat: np.ndarray, pool_num: np.ndarray, pool_cat: np.ndarray,
    cfg: TabularNoiseConfig, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Swap noise (cells take the value of a random training row) then Gaussian noise."""
    num, cat = num.copy(), cat.copy()
    if cfg.swap:
        donor = rng.integers(len(pool_num))
        swap_num = rng.random(num.shape) < cfg.swap
        num[swap_num] = pool_num[donor][swap_num]
        swap_cat = rng.random(cat.shape) < cfg.swap
        cat[swap_cat] = pool_cat[donor][swap_cat]
    if cfg.gaussian:
        num = num + rng.normal(0.0, cfg.gaussian, size=num.shape).astype(num.dtype)
    return num, cat

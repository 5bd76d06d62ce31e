"""Batched, on-device equivalents of albumentations' pixel-value transforms (ColorJitter,
Sharpen, AutoContrast, Equalize, Posterize, Solarize), as pipeline.data.device_augment runs them.

albumentations applies these to uint8 images, so each op first rounds its input to whole grey
levels in 0..255 (the device batch may hold fractions after an earlier warp) and then follows
albumentations 2.0.8 and OpenCV step for step: the same lookup-table formulas, float32 where
they compute in float32, truncation where they cast to uint8 and rounding where OpenCV
saturates. Histograms are counted for every image and channel at once (one fixed-size scatter over
offset indices), so no op loops over rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

from pipeline.data.device_draws import row_mask, to_device, uniform
from pipeline.data.device_op import DeviceOp, on_rows, unsupported

if TYPE_CHECKING:
    import albumentations as A

_MAX = 255.0
_LEVELS = 256
# cv2.COLOR_RGB2GRAY on uint8 in fixed point: (R * 9798 + G * 19235 + B * 3735 + 2^14) >> 15
# (equal to cv2 on every pixel of a random 400 x 400 image; float weights are one level off
# on ~0.5% of them)
_GRAY = (9798.0, 19235.0, 3735.0)


def _quantise(images: Tensor) -> Tensor:
    """The uint8 image albumentations would see: clipped to 0..255, rounded to whole levels."""
    return images.clamp(0, _MAX).round()


def _per_row(values: Tensor, like: Tensor) -> Tensor:
    """Per-row CPU values as an N x 1 x 1 x 1 tensor on ``like``'s device (dtype kept)."""
    return to_device(values, like.device).view(-1, 1, 1, 1)


def _on_chosen(images: Tensor, chosen: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``on_rows`` with the chosen rows quantised first, as albumentations sees them."""
    return on_rows(images, chosen, lambda x: fn(_quantise(x)))


def _gray(q: Tensor) -> Tensor:
    """``cv2.cvtColor(img, COLOR_RGB2GRAY)`` of whole-level RGB images, N x 1 x H x W (exact
    in float32: the weighted sum stays below 2^24)."""
    r, g, b = q[:, 0:1], q[:, 1:2], q[:, 2:3]
    total = r * _GRAY[0] + g * _GRAY[1] + b * _GRAY[2] + 16384.0
    return torch.floor(total / 32768.0)


def _histograms(q: Tensor) -> Tensor:
    """Per image and channel counts of each grey level, (N * C) x 256 int64."""
    n, c = q.shape[:2]
    offsets = torch.arange(n * c, device=q.device)[:, None] * _LEVELS
    index = (q.reshape(n * c, -1).long() + offsets).flatten()
    # a fixed-size scatter, not bincount: on a GPU bincount reads the largest index back to
    # the host to size its output, a sync per op and batch
    counts = torch.zeros(n * c * _LEVELS, dtype=torch.long, device=q.device)
    return counts.scatter_add_(0, index, torch.ones_like(index)).view(n * c, _LEVELS)


def _apply_lut(q: Tensor, lut: Tensor) -> Tensor:
    """Each image channel's (N * C) x 256 lookup table applied to its pixels."""
    n, c = q.shape[:2]
    return lut.gather(1, q.reshape(n * c, -1).long()).view_as(q)


def _first(mask: Tensor) -> Tensor:
    """Index of the first True per row of a 2-D bool mask (0 for a row with none)."""
    return mask.int().argmax(1, keepdim=True)


class _ColorJitter(DeviceOp):
    """``A.ColorJitter`` without hue: brightness, contrast and saturation (torchvision
    semantics, as albumentations computes them on uint8) in a random order per image."""

    def __init__(self, t: A.ColorJitter) -> None:
        super().__init__(t.p)
        self.ranges = [tuple(t.brightness), tuple(t.contrast), tuple(t.saturation), tuple(t.hue)]
        # factor 1 is an exact no-op in albumentations, so such a step can be left out
        self.live = [j for j in range(3) if self.ranges[j] != (1.0, 1.0)]

    @staticmethod
    def _brightness(x: Tensor, f: Tensor) -> Tensor:
        # albucore's multiply LUT: float32 product, clipped, truncated by the uint8 cast
        return torch.floor((x * f.float()).clamp(0, _MAX))

    @staticmethod
    def _contrast(x: Tensor, f: Tensor) -> Tensor:
        gray = _gray(x) if x.shape[1] == 3 else x
        mean = gray.double().mean(dim=(1, 2, 3), keepdim=True)
        # multiply_add LUT in float32: x * f + mean * (1 - f), clipped, truncated
        out = torch.floor((x * f.float() + (mean * (1 - f)).float()).clamp(0, _MAX))
        # factor 0 fills the image with the rounded mean instead
        return torch.where(f == 0, torch.floor(mean + 0.5).float(), out)

    @staticmethod
    def _saturation(x: Tensor, f: Tensor) -> Tensor:
        if x.shape[1] != 3:  # one channel: albumentations returns it as is
            return x
        # cv2.addWeighted(img, f, gray, 1 - f, 0): one float32 fused multiply-add,
        # fma(x, f, gray * (1 - f)), rounded to nearest and saturated; float64 holds the
        # product exactly, so one cast to float32 rounds once, as the fma does
        weighted = (_gray(x) * (1 - f).float()).double()
        fused = torch.addcmul(weighted, x.double(), f.float().double()).float()
        return fused.round().clamp(0, _MAX)

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        n = images.shape[0]
        factors = [uniform(gen, (n,), *r) for r in self.ranges]
        keys = torch.rand(n, 4, generator=gen)  # albumentations shuffles the four steps
        if not chosen.any() or not self.live:
            return images
        if images.shape[1] not in (1, 3):
            raise ValueError(f"ColorJitter needs 1 or 3 channels. Got {images.shape[1]}.")
        steps = (self._brightness, self._contrast, self._saturation)
        f = [_per_row(v[chosen], images) for v in factors[:3]]
        order = keys[chosen].argsort(1)

        def jitter(out: Tensor) -> Tensor:
            if len(self.live) == 1:  # one step: its place in the order does not matter
                return steps[self.live[0]](out, f[self.live[0]])
            for k in range(4):
                for j in self.live:
                    rows = order[:, k] == j
                    if rows.any():
                        out = torch.where(row_mask(rows, out.device), steps[j](out, f[j]), out)
            return out

        return _on_chosen(images, chosen, jitter)


class _Sharpen(DeviceOp):
    """``A.Sharpen`` (method "kernel"): cv2.filter2D with the per-image 3 x 3 kernel
    ``(1 - alpha) * identity + alpha * [[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]]``,
    reflect-101 borders, rounded and saturated to 0..255."""

    def __init__(self, t: A.Sharpen) -> None:
        super().__init__(t.p)
        self.alpha, self.lightness = t.alpha, t.lightness

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        n = images.shape[0]
        alpha = uniform(gen, (n,), *self.alpha)
        lightness = uniform(gen, (n,), *self.lightness)
        if not chosen.any():
            return images
        # the kernel's float32 entries, as albumentations builds them
        centre = (1 - alpha).float() + alpha.float() * (8 + lightness).float()
        centre = _per_row(centre[chosen].double(), images)
        edge = _per_row(-alpha[chosen].float().double(), images)

        def sharpen(x: Tensor) -> Tensor:
            h, w = x.shape[2:]
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect").double()  # BORDER_REFLECT_101
            # cv2.filter2D on uint8 adds the nine taps in row-major order, each a float32
            # fused multiply-add; float64 holds each step exactly, so one cast per step
            # rounds as the fma does
            acc = torch.zeros_like(x)
            for dy in range(3):
                for dx in range(3):
                    tap = centre if (dy, dx) == (1, 1) else edge
                    window = padded[:, :, dy:dy + h, dx:dx + w]
                    acc = torch.addcmul(acc.double(), window, tap).float()
            return acc.round().clamp(0, _MAX)

        return _on_chosen(images, chosen, sharpen)


class _AutoContrast(DeviceOp):
    """``A.AutoContrast`` with ``cutoff=0`` and no ``ignore``: per image and channel, levels
    between the darkest and brightest present spread to 0..255 through the histogram's
    cumulative counts ("cdf") or linearly ("pil"). As cv2.calcHist over [0, 255) counts
    them, level 255 is left out of the histogram (it maps to 255)."""

    def __init__(self, t: A.AutoContrast) -> None:
        super().__init__(t.p)
        self.method = t.method

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        return images if not chosen.any() else _on_chosen(images, chosen, self._stretch)

    def _stretch(self, q: Tensor) -> Tensor:
        hist = _histograms(q)
        hist[:, -1] = 0
        present = hist > 0
        lo = _first(present)
        hi = _LEVELS - 1 - _first(present.flip(1))
        levels = torch.arange(_LEVELS, device=q.device)
        if self.method == "cdf":
            cum = hist.cumsum(1).float()  # float32 as cv2's histogram; exact below 2^24
            span = cum.gather(1, hi) - cum.gather(1, lo)
            mid = ((cum - cum.gather(1, lo)) * _MAX / span).round().clamp(0, _MAX)
        else:
            scale = _MAX / (hi - lo).double()
            mid = ((levels - lo).double() * scale).round().clamp(0, _MAX).float()
        lut = torch.where(levels < lo, 0.0, torch.where(levels > hi, _MAX, mid))
        # no level present, or a single one: the channel is left as it is
        lut = torch.where(hi > lo, lut, levels.float())
        return _apply_lut(q, lut.to(q.dtype))


class _Equalize(DeviceOp):
    """``A.Equalize`` per channel without a mask: cv2.equalizeHist ("cv") or albumentations'
    Pillow-style table ("pil")."""

    def __init__(self, t: A.Equalize) -> None:
        super().__init__(t.p)
        self.mode = t.mode

    @staticmethod
    def _cv(hist: Tensor, total: int) -> Tensor:
        # equalizeHist: lut[v] = round(float32(sum of counts in (first, v]) * 255.f / (total
        # - count[first])), a constant channel is kept
        first = _first(hist > 0)
        count = hist.gather(1, first)
        cum = hist.cumsum(1)
        scale = torch.tensor(_MAX, dtype=torch.float32) / (total - count).float()
        lut = ((cum - cum.gather(1, first)).float() * scale).round().clamp(0, _MAX)
        return torch.where(count == total, torch.arange(_LEVELS, device=hist.device).float(), lut)

    @staticmethod
    def _pil(hist: Tensor, total: int) -> Tensor:
        # lut[v] = min((cumsum[v] + step // 2) // step, 255) with step = (pixels not at the
        # highest present level) // 255; kept as is when step is 0 or one level is present
        last = _LEVELS - 1 - _first((hist > 0).flip(1))
        step = (total - hist.gather(1, last)) // 255
        lut = ((hist.cumsum(1) + step // 2) // step.clamp(min=1)).clamp(max=255)
        keep = (step == 0) | ((hist > 0).sum(1, keepdim=True) <= 1)
        return torch.where(keep, torch.arange(_LEVELS, device=hist.device), lut).float()

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        equalize = self._cv if self.mode == "cv" else self._pil

        def apply_lut(q: Tensor) -> Tensor:
            lut = equalize(_histograms(q), q.shape[2] * q.shape[3])
            return _apply_lut(q, lut.to(q.dtype))

        return images if not chosen.any() else _on_chosen(images, chosen, apply_lut)


class _Posterize(DeviceOp):
    """``A.Posterize``: keeps the top ``num_bits`` bits (drawn per image, or per channel when
    ``num_bits`` is a list of ranges) of every level."""

    def __init__(self, t: A.Posterize) -> None:
        super().__init__(t.p)
        ranges = t.num_bits if isinstance(t.num_bits, list) else [t.num_bits]
        self.lo = torch.tensor([float(r[0]) for r in ranges], dtype=torch.float64)
        self.hi = torch.tensor([float(r[1]) for r in ranges], dtype=torch.float64)
        self.per_channel = isinstance(t.num_bits, list)

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        n, c = images.shape[:2]
        u = torch.rand(n, len(self.lo), generator=gen, dtype=torch.float64)
        bits = self.lo + torch.floor(u * (self.hi - self.lo + 1))  # inclusive, as randint
        if not chosen.any():
            return images
        if self.per_channel and len(self.lo) != c:
            raise ValueError(f"Posterize has {len(self.lo)} num_bits ranges for {c} channels.")
        step = to_device(2.0 ** (8 - bits[chosen]), images.device, images.dtype)
        step = step.view(step.shape[0], -1, 1, 1)
        # exact: the step is a power of two
        return _on_chosen(images, chosen, lambda q: torch.floor(q / step) * step)


class _Solarize(DeviceOp):
    """``A.Solarize``: levels ``>= threshold * 255`` become ``255 - level``, with the
    threshold drawn per image from ``threshold_range``."""

    def __init__(self, t: A.Solarize) -> None:
        super().__init__(t.p)
        self.range = t.threshold_range

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        threshold = uniform(gen, (images.shape[0],), *self.range)
        if not chosen.any():
            return images
        # level >= t * 255 (float64) holds exactly for the whole levels >= ceil(t * 255)
        lowest = _per_row(torch.ceil(threshold[chosen] * _MAX).to(images.dtype), images)
        return _on_chosen(images, chosen, lambda q: torch.where(q >= lowest, _MAX - q, q))


def _color_jitter(t: Any) -> DeviceOp | str:
    if tuple(t.hue) != (0.0, 0.0):  # an HSV round trip through cv2's uint8 hue
        return unsupported(t, "hue")
    return _ColorJitter(t)


def _sharpen(t: Any) -> DeviceOp | str:
    return unsupported(t, "method") if t.method != "kernel" else _Sharpen(t)


def _auto_contrast(t: Any) -> DeviceOp | str:
    if t.cutoff:
        return unsupported(t, "cutoff")
    return unsupported(t, "ignore") if t.ignore is not None else _AutoContrast(t)


def _equalize(t: Any) -> DeviceOp | str:
    if t.mask is not None:  # an array's repr would span lines
        return f"'Equalize' argument mask ({type(t.mask).__name__}) has no device version"
    return unsupported(t, "by_channels") if not t.by_channels else _Equalize(t)


# albumentations class name -> converter, merged into device_augment's table
COLOUR_CONVERTERS: dict[str, Callable[[Any], DeviceOp | str]] = {
    "ColorJitter": _color_jitter,
    "Sharpen": _sharpen,
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Posterize": _Posterize,
    "Solarize": _Solarize,
}

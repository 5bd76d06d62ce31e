"""Batched, on-device equivalents of the albumentations image transforms most configs use.

Each configured transform becomes a few whole-batch torch ops on the images held on the
device (no CPU call per row) with albumentations 2.0.8 semantics (its own ``p`` per image,
list order, parameter ranges and quirks), its arguments parsed by albumentations itself.
Every random number is drawn on the CPU from the caller's ``Generator``, a fixed count per
transform whatever the outcome, then moved to the images' device: the same seed gives the
same batch on CPU and GPU, and one transform's draws never shift the next one's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

from pipeline.data.augment import build_image_augment
from pipeline.data.device_colour import COLOUR_CONVERTERS
from pipeline.data.device_draws import fill_tensor, randint, to_device, uniform
from pipeline.data.device_op import DeviceOp, on_rows, unsupported

if TYPE_CHECKING:  # imported where used: a run that never needs it skips ~1 s
    import albumentations as A

_F64 = torch.float64
_MAX_VALUE = 255.0  # images arrive as 0..255 (uint8 range), as albumentations' clip assumes
_OFFSET = 256.0  # added while warping, so that integer results come back exactly (_Affine)
# cv2 flags albumentations takes, mapped to grid_sample's names. BORDER_REFLECT (2) mirrors
# about the pixel edge, which is what grid_sample's "reflection" does with align_corners=False.
_INTERPOLATION = {0: "nearest", 1: "bilinear"}
_BORDER = {0: "zeros", 1: "border", 2: "reflection"}


class _Flip(DeviceOp):
    """``A.HorizontalFlip`` (dim -1) or ``A.VerticalFlip`` (dim -2)."""

    def __init__(self, p: float, dim: int) -> None:
        super().__init__(p)
        self.dim = dim

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        if not chosen.any():
            return images
        return on_rows(images, chosen, lambda x: x.flip(self.dim))


def _matrix(rows: list[list[Tensor | float]], n: int) -> Tensor:
    """N x 3 x 3 float64 matrices from a 3 x 3 layout of per-row tensors or constants (one
    write per non-zero entry: on the host, stacking them costs several times as many ops)."""
    out = torch.zeros(n, 3, 3, dtype=_F64)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if isinstance(v, Tensor) or v != 0:
                out[:, i, j] = v
    return out


def _grid(theta: Tensor, h: int, w: int) -> Tensor:
    """``F.affine_grid(theta, (n, c, h, w), align_corners=False)`` without its batched matrix
    product, which runs as a slow float64 GEMM on GPUs: two broadcast multiply-adds."""
    n, device = theta.shape[0], theta.device
    xs = (torch.arange(w, dtype=_F64, device=device) * 2 + 1) / w - 1  # pixel centres in
    ys = (torch.arange(h, dtype=_F64, device=device) * 2 + 1) / h - 1  # [-1, 1] coordinates
    grid = torch.empty(n, h, w, 2, dtype=_F64, device=device)
    for k in range(2):  # output coordinate k = theta[k] . (x, y, 1); the y part is per row
        per_row = theta[:, k, 1, None, None] * ys[:, None] + theta[:, k, 2, None, None]
        torch.addcmul(per_row, theta[:, k, 0, None, None], xs, out=grid[..., k])
    return grid


class _Affine(DeviceOp):
    """``A.Affine`` (and ``A.ShiftScaleRotate``, a special case) as one ``grid_sample``."""

    def __init__(self, t: A.Affine) -> None:
        super().__init__(t.p)
        self.scale, self.rotate, self.shear = t.scale, t.rotate, t.shear
        self.translate_px, self.translate_percent = t.translate_px, t.translate_percent
        self.keep_ratio, self.balanced_scale = t.keep_ratio, t.balanced_scale
        self.mode, self.padding = _INTERPOLATION[t.interpolation], _BORDER[t.border_mode]
        self.fill = fill_tensor(t.fill)
        # whole-pixel shifts alone (a common "+-k px"): a padded gather, not a float64 warp
        self.shift_only = (
            all(tuple(self.scale[k]) == (1.0, 1.0) and tuple(self.shear[k]) == (0.0, 0.0)
                for k in ("x", "y"))
            and tuple(self.rotate) == (0.0, 0.0) and self.padding == "zeros"
            and bool((self.fill == self.fill.flatten()[0]).all()))

    def _scale(self, gen: Generator, n: int) -> list[Tensor]:
        """Per-axis scales as ``Affine._get_scale``: uniform in the range, or with
        ``balanced_scale`` uniform in the part below or above 1 picked by a coin flip."""
        out = []
        for key in ("x", "y"):
            lo, hi = self.scale[key]
            coin, u = torch.rand(2, n, generator=gen, dtype=_F64)
            if not self.balanced_scale:
                out.append(lo + (hi - lo) * u)
                continue
            low = (lo, 1.0) if lo < 1 else None
            high = (1.0, hi) if hi > 1 else None
            # the coin picks a row of (low, high); with one part only both rows are it
            parts = torch.tensor([low or high or (1.0, 1.0), high or low or (1.0, 1.0)],
                                 dtype=_F64)
            a, b = parts[(coin >= 0.5).long()].unbind(-1)
            out.append(a + (b - a) * u)
        if self.keep_ratio:
            out[1] = out[0]
        return out

    def _translate(self, gen: Generator, n: int, h: int, w: int) -> list[Tensor]:
        """Pixel shifts as ``Affine._get_translate_params``: integers in the inclusive pixel
        range, or fractions of the side truncated to whole pixels."""
        if self.translate_px is not None:
            return [randint(gen, (n,), int(self.translate_px[k][0]), int(self.translate_px[k][1]))
                    for k in ("x", "y")]
        return [torch.trunc(uniform(gen, (n,), *self.translate_percent[k]) * side)
                for k, side in (("x", w), ("y", h))]

    def matrices(self, gen: Generator, n: int, h: int, w: int) -> Tensor:
        """Forward pixel-space matrices (output = M @ input), built as albumentations'
        ``create_affine_transformation_matrix`` about the centre (w/2 - 0.5, h/2 - 0.5)."""
        sx, sy = self._scale(gen, n)
        tx, ty = self._translate(gen, n, h, w)
        # albumentations negates the sampled shear (its _get_shear_params)
        shx, shy = (-uniform(gen, (n,), *self.shear[k]) for k in ("x", "y"))
        angle = torch.deg2rad(uniform(gen, (n,), *self.rotate))
        cos, sin = angle.cos(), angle.sin()
        cx, cy = w / 2 - 0.5, h / 2 - 0.5
        to_origin = _matrix([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], n)
        scale = _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n)
        rotate = _matrix([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]], n)
        shear = _matrix([[1, torch.tan(torch.deg2rad(shx)), 0],
                         [torch.tan(torch.deg2rad(shy)), 1, 0], [0, 0, 1]], n)
        back = _matrix([[1, 0, tx + cx], [0, 1, ty + cy], [0, 0, 1]], n)
        return back @ shear @ rotate @ scale @ to_origin

    def _shift(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        """Whole-pixel shifts: output (y, x) is input (y - ty, x - tx), ``fill`` outside."""
        n, c, h, w = images.shape
        tx, ty = (t[chosen].long() for t in self._translate(gen, n, h, w))
        m = int(max(tx.abs().max(), ty.abs().max())) if len(tx) else 0  # host: no sync
        if m == 0:
            return images
        shifts = to_device(torch.stack([ty, tx]), images.device)  # one copy for both

        def shift(x: Tensor) -> Tensor:
            k, device = x.shape[0], x.device
            padded = F.pad(x, (m, m, m, m), value=float(self.fill.flatten()[0]))
            rows = torch.arange(h, device=device) + m - shifts[0, :, None]
            cols = torch.arange(w, device=device) + m - shifts[1, :, None]
            index = (rows[:, :, None] * (w + 2 * m) + cols[:, None, :]).view(k, 1, h * w)
            return padded.flatten(2).gather(2, index.expand(k, c, h * w)).view(k, c, h, w)

        return on_rows(images, chosen, shift)  # only the chosen rows are padded and gathered

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        if self.shift_only:
            return self._shift(images, chosen, gen)
        n, c, h, w = images.shape
        matrices = self.matrices(gen, n, h, w)
        if not chosen.any():
            return images
        # grid_sample maps each output pixel to a source point: the inverse matrix, moved from
        # pixel coordinates to its [-1, 1] ones (align_corners=False: pixel i is at (2i+1)/w-1).
        to_pixels = torch.tensor([[w / 2, 0, w / 2 - 0.5], [0, h / 2, h / 2 - 0.5], [0, 0, 1]],
                                 dtype=_F64)
        theta = torch.linalg.inv(to_pixels) @ torch.linalg.inv(matrices[chosen]) @ to_pixels
        rows = to_device(chosen.nonzero().squeeze(1), images.device)
        src = images if bool(chosen.all()) else images.index_select(0, rows)
        # Sampled in float64: grid_sample's float32 unnormalisation puts a whole-pixel shift up
        # to 1e-4 px off (~0.02 grey off the exact shift cv2 gives). Values are offset by 256
        # so the float64 -> float32 cast rounds the ~1e-13 residues away (exact shifts stay
        # exact, also for 0-valued pixels); a ones channel, warped alongside when the border
        # is constant, says how much of each output pixel came from inside the image.
        extra = int(self.padding == "zeros")
        buf = torch.empty(src.shape[0], c + extra, h, w, dtype=_F64, device=images.device)
        torch.add(src, _OFFSET, out=buf[:, :c])
        buf[:, c:].fill_(1.0)
        grid = _grid(to_device(theta[:, :2], images.device), h, w)
        warped = F.grid_sample(buf, grid, mode=self.mode, padding_mode=self.padding,
                               align_corners=False).to(images.dtype)
        if extra:
            # cv2's BORDER_CONSTANT: the outside part of each pixel takes ``fill``; like its
            # borderValue, a per-channel fill longer than C uses its first C values
            fill = to_device(self.fill[:, :c], images.device, images.dtype)
            out = torch.addcmul(warped[:, :c], 1 - warped[:, c:], fill + _OFFSET).sub_(_OFFSET)
        else:
            out = warped.sub_(_OFFSET)
        return out if src is images else images.index_copy(0, rows, out)


class _BrightnessContrast(DeviceOp):
    """``A.RandomBrightnessContrast``: ``clip(x * alpha + beta, 0, 255)`` with
    ``alpha = 1 + U(contrast_limit)`` and ``beta = U(brightness_limit)`` times 255
    (``brightness_by_max``) or times the image's mean (as albucore's ``multiply_add``)."""

    def __init__(self, t: A.RandomBrightnessContrast) -> None:
        super().__init__(t.p)
        self.contrast, self.brightness = t.contrast_limit, t.brightness_limit
        self.by_max, self.safe = t.brightness_by_max, t.ensure_safe_range

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        n, device = images.shape[0], images.device
        alpha = 1 + uniform(gen, (n,), *self.contrast)
        beta = uniform(gen, (n,), *self.brightness)
        if not chosen.any():
            return images
        alpha, beta = (to_device(v[chosen], device, images.dtype) for v in (alpha, beta))
        return on_rows(images, chosen, lambda x: self._adjust(x, alpha, beta))

    def _adjust(self, x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        beta = beta * (_MAX_VALUE if self.by_max else x.mean(dim=(1, 2, 3)))
        if self.safe:  # fpixel.get_safe_brightness_contrast_params, row-wise
            pos = alpha > 0
            beta = torch.where(pos, beta.clamp(0, _MAX_VALUE), beta.clamp(max=_MAX_VALUE))
            alpha = torch.where(pos, torch.minimum(alpha, (_MAX_VALUE - beta) / _MAX_VALUE),
                                torch.maximum(alpha, -beta / _MAX_VALUE))
        return (x * alpha.view(-1, 1, 1, 1) + beta.view(-1, 1, 1, 1)).clamp(0, _MAX_VALUE)


class _CoarseDropout(DeviceOp):
    """``A.CoarseDropout``: up to ``num_holes_range[1]`` rectangles per image, drawn for every
    row at once and painted through one batched matrix product of row and column masks."""

    def __init__(self, t: A.CoarseDropout) -> None:
        super().__init__(t.p)
        self.holes, self.fill = t.num_holes_range, fill_tensor(t.fill)
        self.height, self.width = t.hole_height_range, t.hole_width_range

    def _sizes(self, gen: Generator, n: int, h: int, w: int) -> list[Tensor]:
        """Hole heights and widths as ``calculate_hole_dimensions``: pixels when the height
        range reaches 1 (both axes, as albumentations decides), otherwise truncated fractions."""
        k = self.holes[1]
        if self.height[1] >= 1:
            return [randint(gen, (n, k), int(lo), int(min(hi, side) + 1) - 1)
                    for (lo, hi), side in ((self.height, h), (self.width, w))]
        return [torch.trunc(side * uniform(gen, (n, k), lo, hi))
                for (lo, hi), side in ((self.height, h), (self.width, w))]

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        n, _, h, w = images.shape
        count = randint(gen, (n,), *self.holes)
        hole_h, hole_w = self._sizes(gen, n, h, w)
        top = torch.floor(torch.rand(hole_h.shape, generator=gen, dtype=_F64) * (h - hole_h + 1))
        left = torch.floor(torch.rand(hole_w.shape, generator=gen, dtype=_F64) * (w - hole_w + 1))
        if not chosen.any():
            return images
        # holes k >= the row's count (and every hole of rows not chosen) get zero rows
        live = (torch.arange(self.holes[1]) < count[:, None]) & chosen[:, None]
        device = images.device
        ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
        top, left, hole_h, hole_w, live = (to_device(v, device)
                                           for v in (top, left, hole_h, hole_w, live))
        in_rows = (ys >= top[..., None]) & (ys < (top + hole_h)[..., None]) & live[..., None]
        in_cols = (xs >= left[..., None]) & (xs < (left + hole_w)[..., None])
        # (N x H x K) @ (N x K x W): a pixel is dropped when any hole covers its row and column
        covered = torch.bmm(in_rows.transpose(1, 2).float(), in_cols.float()) > 0
        fill = to_device(self.fill, device, images.dtype)
        return torch.where(covered[:, None], fill, images)


class _OneOf(DeviceOp):
    """``A.OneOf``: with probability ``p`` one child per row, picked with weights
    proportional to the children's ``p``, applied regardless of its own ``p``."""

    def __init__(self, t: A.OneOf, children: list[DeviceOp]) -> None:
        super().__init__(t.p)
        self.children = children
        self.edges = torch.tensor(t.transforms_ps, dtype=_F64).cumsum(0)

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        u = torch.rand(images.shape[0], generator=gen, dtype=_F64) * self.edges[-1]
        pick = torch.searchsorted(self.edges, u, right=True).clamp(max=len(self.children) - 1)
        for j, child in enumerate(self.children):
            images = child(images, chosen & (pick == j), gen, force=True)
        return images


class _SomeOf(DeviceOp):
    """``A.SomeOf`` without replacement: with probability ``p`` (never forced, as in 2.0.8)
    ``n`` distinct children per row, applied in list order, each with its own ``p``."""

    def __init__(self, t: A.SomeOf, children: list[DeviceOp]) -> None:
        super().__init__(t.p)
        self.children, self.n = children, t.n

    def __call__(self, images: Tensor, active: Tensor, gen: Generator, force: bool) -> Tensor:
        return super().__call__(images, active, gen, force=False)

    def apply(self, images: Tensor, chosen: Tensor, gen: Generator) -> Tensor:
        keys = torch.rand(images.shape[0], len(self.children), generator=gen)
        picked = keys.argsort(1).argsort(1) < self.n  # the n smallest keys: a uniform subset
        for j, child in enumerate(self.children):
            images = child(images, chosen & picked[:, j], gen, force=False)
        return images


def _affine(t: Any) -> DeviceOp | str:
    if t.fit_output:  # the output size would vary per row
        return unsupported(t, "fit_output")
    if t.interpolation not in _INTERPOLATION:
        return unsupported(t, "interpolation")
    if t.border_mode not in _BORDER:
        return unsupported(t, "border_mode")
    return _Affine(t)


def _coarse_dropout(t: Any) -> DeviceOp | str:
    if isinstance(t.fill, str):  # "random", "random_uniform", inpainting
        return unsupported(t, "fill")
    return _CoarseDropout(t)


def _composition(t: Any) -> DeviceOp | str:
    children = []
    for child in t.transforms:
        op = _from_albumentations(child)
        if isinstance(op, str):
            return f"{type(t).__name__} transforms: {op}"
        children.append(op)
    if type(t).__name__ == "OneOf":
        return _OneOf(t, children)
    if t.replace:
        return unsupported(t, "replace")
    return _SomeOf(t, children)


# albumentations class name -> converter; a class missing here has no device version. Exact
# names, not isinstance: subclasses (RandomOrder is a SomeOf) behave differently.
_CONVERTERS: dict[str, Callable[[Any], DeviceOp | str]] = {
    "HorizontalFlip": lambda t: _Flip(t.p, dim=-1),
    "VerticalFlip": lambda t: _Flip(t.p, dim=-2),
    "Affine": _affine,
    "ShiftScaleRotate": _affine,
    "RandomBrightnessContrast": _BrightnessContrast,
    "CoarseDropout": _coarse_dropout,
    "OneOf": _composition,
    "SomeOf": _composition,
    **COLOUR_CONVERTERS,  # ColorJitter, Sharpen, AutoContrast, Equalize, Posterize, Solarize
}


def _from_albumentations(t: Any) -> DeviceOp | str:
    convert = _CONVERTERS.get(type(t).__name__)
    if convert is None:
        return f"{type(t).__name__!r} has no device version"
    return convert(t)


class DeviceImageAugment:
    """Batched, on-device equivalents of a list of albumentations transforms.

    >>> aug = DeviceImageAugment.build([{"name": "HorizontalFlip", "p": 1.0}])
    >>> aug(torch.arange(4.0).view(1, 1, 1, 4), torch.Generator().manual_seed(0)).flatten()
    tensor([3., 2., 1., 0.])
    >>> DeviceImageAugment.build([{"name": "Blur"}])
    "item 0: 'Blur' has no device version"
    """

    def __init__(self, ops: list[DeviceOp]) -> None:
        self.ops = ops

    @classmethod
    def build(cls, items: list[dict[str, Any]]) -> DeviceImageAugment | str:
        """The device pipeline for ``items`` (as ``AugmentConfig.image``), or a one-line
        reason naming the first transform or argument with no device version.

        Raises:
            ValueError: ``items`` is not a valid albumentations list (``build_image_augment``).
        """
        with warnings.catch_warnings():  # ShiftScaleRotate's "use Affine" warning
            warnings.simplefilter("ignore", UserWarning)
            transforms = build_image_augment(items)
        ops = []
        for i, t in enumerate(transforms):
            op = _from_albumentations(t)
            if isinstance(op, str):
                return f"item {i}: {op}"
            ops.append(op)
        return cls(ops)

    def __call__(self, images: Tensor, generator: Generator) -> Tensor:
        """Augment ``images`` (float N x C x H x W, values 0..255, any device); returns a
        batch of the same shape, dtype and device. Draws come from ``generator`` (CPU)."""
        if images.ndim != 4:
            raise ValueError(f"images must be N x C x H x W. Got shape {tuple(images.shape)}.")
        active = torch.ones(images.shape[0], dtype=torch.bool)
        for op in self.ops:
            images = op(images, active, generator, force=False)
        return images

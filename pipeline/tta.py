"""Test-time augmentation: named transforms and the reductions that merge their outputs.

A transform either maps a model-input batch (a dict of tensors) to an augmented copy
(image flips, rotations, zoom, brightness; tabular noise) or changes how inputs are made
(text truncation). Classification and regression outputs are invariant to these transforms,
so there is nothing to de-augment; the predictions of all transforms (the identity
included) are merged by a reduction: ``mean``, ``gmean`` (geometric mean of class
probabilities, or mean of logits for sigmoid outputs) or ``median`` (renormalised per row
for multiclass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from pipeline.data.datasets import Batch
from pipeline.registry import Registry
from pipeline.schema import Section


@dataclass(frozen=True)
class TTATransform:
    """A batch transform and/or changes to how inputs are built (e.g. text truncation), and
    the input modalities it applies to."""

    batch: Callable[[Batch], Batch] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    modalities: frozenset[str] = frozenset({"image", "text", "tabular"})


TTA: Registry[TTATransform] = Registry("tta transform")
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _on(key: str, modality: str, op: Callable[[torch.Tensor], torch.Tensor]) -> TTATransform:
    return TTATransform(batch=lambda b: {k: op(v) if k == key else v for k, v in b.items()},
                        modalities=frozenset({modality}))


def zoom(x: torch.Tensor, scale: float = 0.9) -> torch.Tensor:
    """Centre crop to ``scale`` of each side, resized back to the input size."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale pixel intensities of an ImageNet-normalised batch by ``factor``."""
    mean, std = _MEAN.to(x), _STD.to(x)
    return ((x * std + mean) * factor).clamp(0, 1).sub(mean).div(std)


def _tabular_noise(num: torch.Tensor) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(0)  # the same noise on every call
    return num + 0.05 * torch.randn(num.shape, generator=g).to(num)


for _name, _op, _text in (
    ("hflip", lambda x: x.flip(-1), "mirror left-right"),
    ("vflip", lambda x: x.flip(-2), "mirror top-bottom"),
    ("transpose", lambda x: x.transpose(-1, -2), "swap height and width"),
    ("rot90", lambda x: torch.rot90(x, 1, (-2, -1)), "rotate 90 degrees"),
    ("rot180", lambda x: torch.rot90(x, 2, (-2, -1)), "rotate 180 degrees"),
    ("rot270", lambda x: torch.rot90(x, 3, (-2, -1)), "rotate 270 degrees"),
    ("zoom", zoom, "centre crop 90% and resize back"),
    ("brighter", lambda x: brightness(x, 1.1), "pixel intensities x 1.1"),
    ("darker", lambda x: brightness(x, 0.9), "pixel intensities x 0.9"),
):
    TTA.add(_name, _on("image", "image", _op), _text)
TTA.add("noise", _on("num", "tabular", _tabular_noise),
        "Gaussian noise (std 0.05) on numeric features")
TTA.add("tail", TTATransform(inputs={"truncation": "tail"}, modalities=frozenset({"text"})),
        "keep the end of long texts")
TTA.add("head_tail", TTATransform(inputs={"truncation": "head_tail"},
                                  modalities=frozenset({"text"})),
        "keep a quarter head and the tail of long texts")


class PredictConfig(Section):
    """Inference: test-time augmentation, batch size, and the labels a label metric scores."""

    tta: list[str] = Field(default_factory=list)
    tta_reduce: Literal["mean", "gmean", "median"] = "mean"
    batch_size: int | None = Field(None, ge=1)  # default: 2 x train.batch_size
    # label metrics: thresholds / class weights tuned on the run's OOF, as the blend's
    # --postprocess (pipeline.run_postprocess); not part of the prediction hash
    postprocess: Literal["auto", "on", "off"] = "auto"
    # regression: the submission held to the train target's range where the OOF, clipped fold
    # by fold to its training rows' range, scores better (pipeline.clip_range); not hashed
    clip: Literal["auto", "on", "off"] = "auto"

    @field_validator("postprocess", "clip", mode="before")
    @classmethod
    def _on_off(cls, mode: object) -> object:
        # YAML 1.1 reads a bare on / off as true / false: the competitor meant the mode
        return ("on" if mode else "off") if isinstance(mode, bool) else mode

    @field_validator("tta")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in TTA:
                raise ValueError(TTA.unknown_message(name))
        # a view named twice is averaged in twice: it silently outweighs the others, and its
        # per-view predictions (tta_oof.parquet) hold one column for both
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"names {twice} more than once; each view is averaged once")
        return names


    def mismatch(self, task: str, modalities: set[str]) -> str | None:
        """Why these transforms or this reduction do not fit a model reading ``modalities``
        for ``task``, or None when they do."""
        for name in self.tta:
            fits = TTA.get(name).modalities
            if not fits & modalities:
                return (f"'predict.tta' {name!r} does not apply to "
                        f"{'/'.join(sorted(modalities))} inputs; it applies to "
                        f"{'/'.join(sorted(fits))} inputs")
        if self.tta_reduce == "gmean" and task == "regression":
            return "'predict.tta_reduce' gmean needs probabilities, not regression"
        return None


def tta_transforms(names: list[str]) -> list[tuple[str, TTATransform]]:
    """The identity followed by the named transforms."""
    return [("none", TTATransform()), *((n, TTA.get(n)) for n in names)]


def reduce_predictions(stack: np.ndarray, how: str, task: str) -> np.ndarray:
    """Merge ``(transforms, rows, columns)`` predictions into ``(rows, columns)``.

    ``gmean`` is the geometric mean of class probabilities renormalised per row for
    multiclass, and the mean of the logits for sigmoid outputs (binary, multilabel), so a
    label's probability and its complement are treated alike: 0.2 and 0.8 merge to 0.5.
    ``median`` rows are renormalised for multiclass, so probabilities still sum to one.

    >>> reduce_predictions(np.array([[[0.2]], [[0.8]]]), "gmean", "binary").round(2).tolist()
    [[0.5]]
    """
    if how == "mean":
        return stack.mean(axis=0)
    if how == "median":
        merged = np.median(stack, axis=0)
        return _renormalised(merged) if task == "multiclass" else merged
    clipped = np.clip(stack, 1e-12, 1 - 1e-12)
    if task == "multiclass":
        return _renormalised(np.exp(np.log(clipped).mean(axis=0)))
    logits = (np.log(clipped) - np.log1p(-clipped)).mean(axis=0)
    return 1.0 / (1.0 + np.exp(-logits))


def _renormalised(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)

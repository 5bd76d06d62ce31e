"""Test-time augmentation: named input transforms and the reductions that merge their outputs.

A transform maps a model-input batch (a dict of tensors) to an augmented copy. Classification
and regression outputs are invariant to these transforms, so no de-augmentation is needed;
the predictions of all transforms (the identity included) are merged by a reduction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.registry import Registry

Batch = dict[str, torch.Tensor]
TTA: Registry[Callable[[Batch], Batch]] = Registry("tta transform")


def _image_op(op: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Batch], Batch]:
    def transform(batch: Batch) -> Batch:
        return {k: op(v) if k == "image" else v for k, v in batch.items()}

    return transform


TTA.add("hflip", _image_op(lambda x: x.flip(-1)), "mirror left-right", modalities=("image",))
TTA.add("vflip", _image_op(lambda x: x.flip(-2)), "mirror top-bottom", modalities=("image",))
TTA.add(
    "transpose", _image_op(lambda x: x.transpose(-1, -2)), "swap height and width",
    modalities=("image",),
)
TTA.add(
    "rot90", _image_op(lambda x: torch.rot90(x, 1, (-2, -1))), "rotate 90 degrees",
    modalities=("image",),
)
TTA.add(
    "rot180", _image_op(lambda x: torch.rot90(x, 2, (-2, -1))), "rotate 180 degrees",
    modalities=("image",),
)
TTA.add(
    "rot270", _image_op(lambda x: torch.rot90(x, 3, (-2, -1))), "rotate 270 degrees",
    modalities=("image",),
)


def tta_transforms(names: list[str]) -> list[tuple[str, Callable[[Batch], Batch]]]:
    """The identity followed by the named transforms."""
    return [("none", lambda b: b)] + [(n, TTA.get(n)) for n in names]

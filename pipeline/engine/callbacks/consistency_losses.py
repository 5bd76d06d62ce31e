"""The tensor math of consistency methods, per task: sharpening, confidence, soft
cross-entropy against target probabilities, one-hot targets, the stacked inputs of a joint
pass, and :class:`Step` (what one unlabelled batch contributed). Confidence and sharpening
work per row for multiclass (softmax) and per cell for binary and multilabel (sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.datasets import Batch

__all__ = ["Step", "cell_confidence", "encoded_targets", "entropy", "joint_inputs", "sharpen",
           "soft_cross_entropy", "split_joint", "trusted_rows"]


def sharpen(task: str, probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Raise each class probability to 1/T and renormalise (per cell for sigmoid tasks)."""
    if task == "regression":
        return probs
    if task == "multiclass":
        powered = probs.pow(1.0 / temperature)
        return powered / powered.sum(dim=1, keepdim=True)
    up, down = probs.pow(1.0 / temperature), (1 - probs).pow(1.0 / temperature)
    return up / (up + down).clamp_min(1e-12)


def cell_confidence(task: str, probs: torch.Tensor) -> torch.Tensor:
    """What a confidence threshold masks: the top class probability per row (multiclass,
    shape (n, 1)), or each cell's max(p, 1 - p) for sigmoid tasks."""
    if task == "multiclass":
        return probs.max(dim=1, keepdim=True).values
    return torch.maximum(probs, 1 - probs)


def soft_cross_entropy(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target probabilities: per row (n, 1) for multiclass, per cell
    for sigmoid tasks."""
    logits = logits.float()
    if task == "multiclass":
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def entropy(task: str, target: torch.Tensor) -> torch.Tensor:
    """Entropy of target probabilities, laid out like :func:`soft_cross_entropy`."""
    t = target.clamp_min(1e-12)
    if task == "multiclass":
        return -(target * t.log()).sum(dim=1, keepdim=True)
    u = (1 - target).clamp_min(1e-12)
    return -(target * t.log() + (1 - target) * u.log())


def trusted_rows(mask: torch.Tensor, least: int = 2) -> torch.Tensor | None:
    """The indices, in order, of the rows where ``mask`` (per row or per cell) trusts
    something, at least ``least`` of them: batch norm in training mode needs two rows, so
    untrusted ones (whose loss weight is zero) fill up to that. None when every row is
    trusted (nothing to skip, no copy). Counting the rows reads the mask on the host: one
    sync a step on a GPU, paid for by the skipped rows' forward and backward."""
    keep = mask.reshape(len(mask), -1).amax(dim=1) > 0
    count = int(keep.sum())
    if count == len(keep):
        return None
    if count < least:
        keep = keep.clone()
        keep[(~keep).nonzero().squeeze(1)[: least - count]] = True
        if bool(keep.all()):
            return None
    return keep.nonzero().squeeze(1)


def encoded_targets(task: str, target: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Training targets as float rows like the outputs: one-hot for class indices."""
    if task == "multiclass" and target.ndim == 1:
        return F.one_hot(target.long(), n_outputs).float()
    return target.float().reshape(len(target), -1)


@dataclass
class Step:
    """What one unlabelled batch contributed: its loss and the fraction of it trusted, kept
    on the device (read once an epoch, not once a step)."""

    loss: torch.Tensor
    trusted: torch.Tensor
    # the threshold in force (mean over classes when adaptive, a device tensor); None: the
    # method has none
    threshold: torch.Tensor | float | None = None

    @property
    def mask_rate(self) -> float:
        """The fraction of the unlabelled rows (cells) the loss used."""
        return float(self.trusted)


def joint_inputs(model: nn.Module, batch: Batch, view: Batch) -> Batch | None:
    """The labelled batch's inputs with the view's rows after them, for one forward over
    both; None where they do not stack (an input the labelled batch lacks, another shape or
    type: texts padded to other lengths) or the model keeps per-row outputs besides the one
    it returns (a multi-task head's auxiliary tasks, whose losses read the labelled rows)."""
    if any(getattr(module, "aux_outputs", None) is not None for module in model.modules()):
        return None
    for key, value in view.items():
        mine = batch.get(key)
        if (not isinstance(mine, torch.Tensor) or mine.shape[1:] != value.shape[1:]
                or mine.dtype != value.dtype):
            return None
    return {key: torch.cat([batch[key], value]) for key, value in view.items()}


def split_joint(model: nn.Module, outputs: torch.Tensor, n_view: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A joint pass's outputs as (the labelled rows', the view's last ``n_view`` rows'). The
    pooled features the model keeps (``CompetitionModel.features``, which auxiliary losses
    read beside the labelled rows' targets) are cut to the labelled rows too."""
    n = len(outputs) - n_view
    core = getattr(model, "module", model)  # under any DDP wrapper
    features = getattr(core, "features", None)
    if isinstance(features, torch.Tensor) and len(features) == len(outputs):
        core.features = features[:n]
    return outputs[:n], outputs[n:]

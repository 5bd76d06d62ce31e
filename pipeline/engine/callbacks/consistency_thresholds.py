"""What shapes a teacher's targets in a short consistency run: self-adaptive class thresholds
(FreeMatch, Wang et al. 2023, as USB has them), distribution alignment (ReMixMatch, Berthelot
et al. 2020) and a teacher that is an exponential moving average of the student (Mean
Teacher, Tarvainen & Valpola 2017).

Why they matter on few labels and few steps: FixMatch's fixed 0.95 threshold rarely fires
while a model trained for a few hundred steps is still unsure, so the unlabelled rows sit
idle; a threshold that follows the model's own confidence (low early, rising as it learns,
lower for classes it finds hard) puts them to work from the start, distribution alignment
keeps the pseudo-labels from collapsing onto the easy classes, and an EMA teacher gives
steadier labels than the weights of the last step.

Each piece is a small stateful object whose state round-trips through ``state_dict`` (the
callback saves it in the resume point, so a resumed run ends with the same weights).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["AdaptiveThresholds", "DistributionAlignment", "EMATeacher", "SoftWeights"]


class AdaptiveThresholds:
    """FreeMatch's self-adaptive thresholds over ``n_classes`` softmax classes.

    A global threshold ``tau`` follows the mean top-class confidence of the unlabelled rows
    and a class profile ``p`` their mean class probabilities, both as exponential moving
    averages with ``momentum``; class ``c`` is trusted from ``tau * p[c] / max(p)``.

    FreeMatch starts both at ``1 / n_classes`` (``start='uniform'``): right for a model
    trained from its first step, but after a supervised warm-up the model is already
    confident, and a threshold climbing from 0.1 at momentum 0.99 trusts nearly every row
    (wrong ones too) for hundreds of steps. ``start='first'`` (the default) takes both from
    the first batch the thresholds see instead.

    >>> t = AdaptiveThresholds(2, momentum=0.5, start="uniform")
    >>> t.update(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))
    >>> round(t.tau, 3), [round(v, 3) for v in t.class_thresholds().tolist()]
    (0.65, [0.65, 0.35])
    """

    def __init__(self, n_classes: int, momentum: float, start: str = "first") -> None:
        self.momentum = momentum
        self.tau = 1.0 / n_classes
        self.profile = torch.full((n_classes,), 1.0 / n_classes)
        self.seen = start == "uniform"  # whether tau and the profile hold a starting point

    def update(self, probs: torch.Tensor) -> None:
        """Move ``tau`` and the class profile toward this batch's probabilities (n, C)."""
        probs = probs.detach().float()
        m = self.momentum if self.seen else 0.0
        self.tau = m * self.tau + (1 - m) * float(probs.max(dim=1).values.mean())
        self.profile = m * self.profile + (1 - m) * probs.mean(dim=0).cpu()
        self.seen = True

    def class_thresholds(self) -> torch.Tensor:
        """The threshold of each class (C,): ``tau`` scaled by the class's share of the
        largest class profile (FreeMatch's MaxNorm)."""
        return self.tau * self.profile / self.profile.max()

    def applied(self) -> torch.Tensor:
        """The mean class threshold, for the log."""
        return self.class_thresholds().mean()

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """(n, 1) float: 1 where the row's top probability reaches its class's threshold."""
        top, label = probs.max(dim=1)
        thresholds = self.class_thresholds().to(probs.device)[label]
        return (top >= thresholds).float().unsqueeze(1)

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "profile": self.profile.clone(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau, self.profile = float(state["tau"]), state["profile"].clone()
        self.seen = bool(state["seen"])


class SoftWeights:
    """SoftMatch's weights (Chen et al. 2023, as USB has them): instead of a threshold, each
    unlabelled row weighs ``exp(-(c - mu)^2 / (2 var / n_sigma^2))`` where its top confidence
    ``c`` is below ``mu``, and 1 above it; ``mu`` and ``var`` follow the mean and variance of
    the rows' top confidence as exponential moving averages (``momentum``), from the first
    batch (after a supervised recipe the model is already confident; see
    :class:`AdaptiveThresholds`). A threshold trades quantity (many rows, some wrong) against
    quality; the Gaussian keeps both: the unsure rows still teach, a little.

    Weights under ``floor`` count as 0, so the strong view's pass can skip those rows
    (``strong_rows: trusted``): at 2 sigma a row 1.22 standard deviations under the mean
    weighs 0.05.

    >>> w = SoftWeights(momentum=0.5)
    >>> w.update(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))
    >>> rows = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.55, 0.45]])  # mu 0.8, sd 0.14
    >>> [round(v, 3) for v in w.mask(rows).squeeze(1).tolist()]
    [1.0, 0.368, 0.0]
    """

    def __init__(self, momentum: float, n_sigma: float = 2.0, floor: float = 0.05) -> None:
        self.momentum = momentum
        self.n_sigma = n_sigma
        self.floor = floor
        self.mu = 1.0
        self.var = 1.0
        self.seen = False

    def update(self, probs: torch.Tensor) -> None:
        """Move ``mu`` and ``var`` toward this batch's top confidences (n, C)."""
        top = probs.detach().float().max(dim=1).values
        m = self.momentum if self.seen else 0.0
        self.mu = m * self.mu + (1 - m) * float(top.mean())
        if len(top) > 1:  # one row has no variance: keep the running one
            self.var = m * self.var + (1 - m) * float(top.var())
        self.seen = True

    def applied(self) -> torch.Tensor:
        """Where full weight starts (``mu``), for the log's threshold column."""
        return torch.tensor(self.mu)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """(n, 1) float weights in [0, 1]."""
        top = probs.max(dim=1).values.float()
        below = (top - self.mu).clamp(max=0.0)
        weights = torch.exp(-below.square() * self.n_sigma**2 / (2 * max(self.var, 1e-8)))
        return torch.where(weights >= self.floor, weights, torch.zeros_like(weights)).unsqueeze(1)

    def state_dict(self) -> dict[str, Any]:
        return {"mu": self.mu, "var": self.var, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mu, self.var = float(state["mu"]), float(state["var"])
        self.seen = bool(state["seen"])


class DistributionAlignment:
    """ReMixMatch's distribution alignment: each unlabelled prediction is multiplied by the
    labelled class distribution over the model's running mean prediction, then renormalised,
    so the pseudo-labels keep the labelled rows' class balance. Both distributions are
    exponential moving averages (``momentum``) from uniform.

    >>> da = DistributionAlignment(2, momentum=0.0)
    >>> da.observe_labels(torch.tensor([0, 1]))
    >>> [round(v, 3) for v in da(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))[0].tolist()]
    [0.632, 0.368]
    """

    def __init__(self, n_classes: int, momentum: float) -> None:
        self.momentum = momentum
        self.n_classes = n_classes
        self.target = torch.full((n_classes,), 1.0 / n_classes)
        self.model = torch.full((n_classes,), 1.0 / n_classes)

    def observe_labels(self, labels: torch.Tensor) -> None:
        """Move the labelled distribution toward a batch of class indices (or rows of class
        probabilities)."""
        labels = labels.detach()
        if labels.ndim == 1:
            freq = torch.bincount(labels.long().cpu(), minlength=self.n_classes).float()
            freq = freq / freq.sum().clamp_min(1.0)
        else:
            freq = labels.float().mean(dim=0).cpu()
        self.target = self.momentum * self.target + (1 - self.momentum) * freq

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """Update the running mean prediction with ``probs`` (n, C), return them aligned."""
        probs = probs.detach().float()
        self.model = self.momentum * self.model + (1 - self.momentum) * probs.mean(dim=0).cpu()
        ratio = (self.target / self.model.clamp_min(1e-6)).to(probs.device)
        aligned = probs * ratio
        return aligned / aligned.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.clone(), "model": self.model.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target, self.model = state["target"].clone(), state["model"].clone()


class EMATeacher:
    """A copy of the student whose weights follow it, ``decay`` per optimizer step (buffers,
    e.g. batch-norm statistics, too); it labels the unlabelled rows in eval mode.

    The copy is made before training (:meth:`attach`) and takes the student's weights at the
    first step that needs it (the method may start late), or a resume point's saved weights.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.model: nn.Module | None = None
        self.started = False
        self._pending: dict[str, torch.Tensor] | None = None  # loaded before attach

    def attach(self, student: nn.Module) -> None:
        """Make the teacher's copy of ``student`` (once), with any loaded weights."""
        if self.model is None:
            # a model may keep its last forward's tensors (CompetitionModel.features), which
            # deepcopy refuses mid-step: the copy gets None in their place
            memo: dict[int, Any] = {id(v): None for m in student.modules()
                                    for v in vars(m).values()
                                    if isinstance(v, torch.Tensor) and not v.is_leaf}
            self.model = copy.deepcopy(student, memo)
            self.model.requires_grad_(False)
        if self._pending is not None:
            self.model.load_state_dict(self._pending)
            self._pending = None

    def get(self, student: nn.Module) -> nn.Module:
        """The teacher, holding the student's weights when first asked."""
        self.attach(student)
        assert self.model is not None
        if not self.started:
            self.model.load_state_dict(student.state_dict())
            self.started = True
        self.model.eval()
        return self.model

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step toward ``student`` (no-op before the teacher's first use)."""
        if self.model is None or not self.started:
            return
        theirs = student.state_dict()
        for name, mine in self.model.state_dict().items():
            value = theirs[name].detach()
            if mine.is_floating_point():
                mine.lerp_(value.to(mine.dtype), 1 - self.decay)
            else:
                mine.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        if self.model is None or not self.started:
            return {"weights": self._pending}
        return {"weights": {k: v.detach().cpu().clone()
                            for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore saved weights (applied at :meth:`attach` when not attached yet)."""
        weights = state.get("weights")
        self.started = weights is not None
        self._pending = weights
        if self.model is not None:
            self.attach(self.model)

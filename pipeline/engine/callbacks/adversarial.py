"""Adversarial training as engine callbacks, from ``train.adversarial.start_epoch`` (or the
first epoch of ``start_stage``) on.

Images (``transform_batch``, the model then trains on the adversarial batch only):

- ``fgsm``: x + epsilon * sign(input gradient) (Goodfellow et al. 2015).
- ``pgd``: random start in the epsilon ball, ``steps`` signed steps of ``alpha``, each projected
  back into the ball (Madry et al. 2018).
- ``fast_fgsm``: random start, one signed step of ``alpha`` = 1.25 x epsilon, clipped to the
  ball (Wong, Rice and Kolter 2020).

The perturbation lives in the normalised input space the model reads (epsilon 0.03 there is
about 2/255 of the pixel range under ImageNet statistics) and is not clipped to the valid pixel
range, which the normalisation of each encoder would have to supply. The input gradients come
from ``torch.autograd.grad``, so the parameter gradients stay untouched.

Embeddings and weights (``on_after_backward``, after the clean backward pass):

- ``fgm``: move the word embeddings of 'hf' encoders and the categorical tables of 'mlp'
  encoders by epsilon * grad / ||grad|| (the numeric input of 'mlp', which has no embedding, by
  epsilon along its per-row normalised gradient), add the gradient of the loss there, restore
  (Miyato et al. 2017, the Kaggle FGM).
- ``awp``: move every weight matrix and kernel (parameters with ndim > 1, the head included) by
  alpha * grad / ||grad|| * ||w||, clamped to w +- epsilon * |w|; the update then follows the
  gradient of the loss at the moved weights, as in Wu et al. 2020 and the Kaggle AWP, and the
  weights are restored. Biases and normalisation scales stay put: a relative move of a scale
  rescales a whole layer.

The extra forward passes run in the model's current (training) mode, as in the reference
implementations, so batch-norm statistics also see them, and dropout draws new masks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from pipeline.data.datasets import Batch
from pipeline.engine.losses import LossFn
from pipeline.engine.steps import autocast, backward
from pipeline.engine.trainer import Callback, Trainer
from pipeline.errors import ConfigError
from pipeline.models.encoders import ENCODERS, HFEncoder, MLPEncoder
from pipeline.registry import Registry
from pipeline.schema import Section


class AdversarialConfig(Section):
    """Adversarial training from ``start_epoch`` (1-based: early adversarial training hurts).

    Images, in the normalised input space (epsilon default 0.03): ``fgsm``, ``pgd`` (``steps``
    steps of ``alpha``, default 2.5 x epsilon / steps) and ``fast_fgsm`` (random start, one step
    of ``alpha``, default 1.25 x epsilon). Text/tabular embeddings: ``fgm`` (embeddings moved
    by epsilon along the normalised gradient, default 1.0). Weights of any network: ``awp``
    (relative bound epsilon, default 0.01; step ``alpha``, default 1.0). See
    :mod:`pipeline.adversarial`.
    """

    method: str = "fast_fgsm"  # a name in ADVERSARIAL
    epsilon: float | None = Field(None, gt=0)  # None: the method's default
    alpha: float | None = Field(None, gt=0)  # step of pgd, fast_fgsm and awp
    steps: int = Field(3, ge=1)  # pgd only
    start_epoch: int | None = Field(None, ge=1)  # None: from the first epoch
    start_stage: int | None = Field(None, ge=1)  # or from the first epoch of this stage

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        if method not in ADVERSARIAL:
            raise ValueError(ADVERSARIAL.unknown_message(method))
        return method

    @model_validator(mode="after")
    def _check(self) -> AdversarialConfig:
        if self.alpha is not None and not ADVERSARIAL.get(self.method).takes_alpha:
            raise ValueError(f"method {self.method!r} takes no 'alpha': its step is 'epsilon'")
        if self.start_epoch is not None and self.start_stage is not None:
            raise ValueError("give 'start_epoch' or 'start_stage', not both")
        return self


@dataclass(frozen=True)
class AdversarialMethod:
    """A registered adversarial method: what it perturbs, the encoder kinds it can attack,
    its default epsilon, whether it takes a step ``alpha``, and how to build its callback
    from (epsilon, 1-based start epoch, config)."""

    perturbs: str
    encoder_kinds: tuple[str, ...]
    epsilon: float  # default epsilon
    takes_alpha: bool
    build: Callable[[float, int, AdversarialConfig], Callback]


ADVERSARIAL: Registry[AdversarialMethod] = Registry("adversarial method")


def mismatch(method: str, encoder_kinds: Collection[str]) -> str | None:
    """Why ``method`` cannot train a model with these encoder kinds, or None when it can."""
    if set(ADVERSARIAL.get(method).encoder_kinds) & set(encoder_kinds):
        return None
    reads = "/".join(sorted({ENCODERS.get(k).modality for k in encoder_kinds}))
    fits = [m for m in ADVERSARIAL if set(ADVERSARIAL.get(m).encoder_kinds) & set(encoder_kinds)]
    return (f"'train.adversarial.method' {method!r} perturbs "
            f"{ADVERSARIAL.get(method).perturbs}; the model reads {reads} inputs. "
            f"Methods for it: {', '.join(fits) or 'none'}")


class _Adversary(Callback):
    """Shared by every method: the epsilon, and silence before ``start_epoch`` (1-based)."""

    order = 50  # after any other batch transform: attack the batch the model trains on

    def __init__(self, epsilon: float, start_epoch: int) -> None:
        self.epsilon = epsilon
        self.start_epoch = start_epoch

    def active(self, trainer: Trainer) -> bool:
        """Whether the epoch in progress is at or after ``start_epoch``."""
        return trainer.epoch + 1 >= self.start_epoch


class PGD(_Adversary):
    """Projected gradient descent on images: random start in the L-inf epsilon ball, then
    ``steps`` signed gradient steps of ``alpha`` (default 2.5 x epsilon / steps), each
    projected back into the ball."""

    def __init__(self, epsilon: float, start_epoch: int, alpha: float | None = None,
                 steps: int = 3, random_start: bool = True) -> None:
        super().__init__(epsilon, start_epoch)
        self.alpha = alpha if alpha is not None else 2.5 * epsilon / steps
        self.steps = steps
        self.random_start = random_start

    def transform_batch(self, trainer: Trainer, batch: Batch, loss_fn: LossFn) -> Batch:
        if not self.active(trainer):
            return batch
        image = batch["image"].detach()
        delta = torch.zeros_like(image)
        if self.random_start:
            delta.uniform_(-self.epsilon, self.epsilon)
        for _ in range(self.steps):
            grad = self._input_grad(trainer, batch, loss_fn, image, delta)
            delta = (delta + self.alpha * grad.sign()).clamp(-self.epsilon, self.epsilon)
        return {**batch, "image": image + delta}

    @staticmethod
    def _input_grad(trainer: Trainer, batch: Batch, loss_fn: LossFn, image: torch.Tensor,
                    delta: torch.Tensor) -> torch.Tensor:
        """Gradient of the loss at ``image + delta`` with respect to ``delta`` alone."""
        delta = delta.detach().requires_grad_(True)
        with autocast(trainer.accelerator):
            loss = loss_fn(trainer.model({**batch, "image": image + delta}), batch)
        scaler = trainer.accelerator.scaler
        if scaler is not None:  # scaled like the fp16 backward, so small gradients keep a sign
            loss = scaler.scale(loss)
        return torch.autograd.grad(loss, delta)[0].detach()


class FGSM(PGD):
    """Fast gradient sign method: one step of epsilon along the sign of the input gradient,
    from the clean image."""

    def __init__(self, epsilon: float, start_epoch: int) -> None:
        super().__init__(epsilon, start_epoch, alpha=epsilon, steps=1, random_start=False)


class FastFGSM(PGD):
    """Fast adversarial training (Wong et al. 2020): random start in the epsilon ball, one
    signed step of ``alpha`` (default 1.25 x epsilon), clipped to the ball."""

    def __init__(self, epsilon: float, start_epoch: int, alpha: float | None = None) -> None:
        super().__init__(epsilon, start_epoch, alpha=1.25 * epsilon if alpha is None else alpha,
                         steps=1)


def _embedding_targets(model: nn.Module) -> tuple[list[torch.Tensor], bool]:
    """The embedding weights FGM moves, and whether the model reads a numeric input."""
    weights: list[torch.Tensor] = []
    reads_num = False
    for module in model.modules():
        if isinstance(module, HFEncoder):
            weights.append(module.body.get_input_embeddings().weight)
        elif isinstance(module, MLPEncoder):
            weights.extend(module.embeddings.parameters())  # one table per column
            reads_num = True
    return weights, reads_num


def _adversarial_backward(trainer: Trainer, batch: Batch, loss_fn: LossFn) -> None:
    """Forward and backward ``batch`` like the engine: its precision, gradients accumulate."""
    with autocast(trainer.accelerator):
        loss = loss_fn(trainer.model(batch), batch)
    backward(trainer.accelerator, loss / trainer.grad_accum_steps)


def _earlier_gradients(params: list[torch.Tensor]) -> dict[torch.Tensor, torch.Tensor]:
    """The gradients ``params`` hold before a batch's backward: those of the earlier
    micro-batches of an accumulated update (none at a window's first batch)."""
    return {p: p.grad.clone() for p in params if p.grad is not None}


def _own_gradient(param: torch.Tensor, earlier: dict[torch.Tensor, torch.Tensor]
                  ) -> torch.Tensor:
    """This batch's gradient of ``param``: what its backward added to the accumulated one.
    The attack moves along it, not along the window's sum (under ``grad_accum_steps``)."""
    assert param.grad is not None
    return param.grad - earlier[param] if param in earlier else param.grad


class FGM(_Adversary):
    """Fast gradient method on embeddings: add the gradient of the loss with the embedding
    tables moved by epsilon * grad / ||grad|| (and the numeric input by epsilon along its
    row-normalised gradient), then restore the tables."""

    def __init__(self, epsilon: float, start_epoch: int) -> None:
        super().__init__(epsilon, start_epoch)
        self._earlier: dict[torch.Tensor, torch.Tensor] = {}

    def on_before_backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        if self.active(trainer):  # the tables' gradients of earlier micro-batches, if any
            self._earlier = _earlier_gradients(_embedding_targets(trainer.unwrapped)[0])

    def transform_batch(self, trainer: Trainer, batch: Batch, loss_fn: LossFn) -> Batch:
        # the clean backward then leaves the gradient of the numeric input in its .grad
        if self.active(trainer) and "num" in batch and _embedding_targets(trainer.unwrapped)[1]:
            return {**batch, "num": batch["num"].detach().requires_grad_(True)}
        return batch

    def on_after_backward(self, trainer: Trainer, batch: Batch, loss_fn: LossFn) -> None:
        if not self.active(trainer):
            return
        weights, _ = _embedding_targets(trainer.unwrapped)
        weights = [w for w in weights if w.requires_grad and w.grad is not None]
        num = batch.get("num")
        moved_num = num is not None and num.grad is not None and num.numel() > 0
        if not weights and not moved_num:
            return
        backup = [w.detach().clone() for w in weights]
        with torch.no_grad():
            for w in weights:
                grad = _own_gradient(w, self._earlier)
                w.add_(self.epsilon * grad / grad.norm().clamp_min(1e-12))
        self._earlier = {}
        adversarial = dict(batch)
        if moved_num:
            assert num is not None and num.grad is not None
            grad = num.grad
            adversarial["num"] = num.detach() + self.epsilon * grad / grad.norm(
                dim=1, keepdim=True).clamp_min(1e-12)
        _adversarial_backward(trainer, adversarial, loss_fn)
        with torch.no_grad():
            for w, saved in zip(weights, backup, strict=True):
                w.copy_(saved)


class AWP(_Adversary):
    """Adversarial weight perturbation: move each weight matrix by
    ``alpha * grad / ||grad|| * ||w||`` within ``w +- epsilon * |w|``, replace this batch's
    gradient by that of the loss at the moved weights, restore the weights. ``alpha``
    (Kaggle's adv_lr) defaults to 1.0, so the clamp to the epsilon box bounds the move."""

    def __init__(self, epsilon: float, start_epoch: int, alpha: float | None = None) -> None:
        super().__init__(epsilon, start_epoch)
        self.alpha = 1.0 if alpha is None else alpha
        self._earlier: dict[torch.Tensor, torch.Tensor] = {}

    def on_before_backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        # gradients of earlier micro-batches of an accumulated update, kept when this batch's
        # clean gradient is replaced by the adversarial one
        if self.active(trainer):
            self._earlier = _earlier_gradients(list(trainer.unwrapped.parameters()))

    def on_after_backward(self, trainer: Trainer, batch: Batch, loss_fn: LossFn) -> None:
        if not self.active(trainer):
            return
        params = list(trainer.unwrapped.parameters())
        moved = [p for p in params if p.requires_grad and p.ndim > 1 and p.grad is not None]
        if not moved:
            return
        backup = [p.detach().clone() for p in moved]
        with torch.no_grad():
            for p, w in zip(moved, backup, strict=True):
                grad = _own_gradient(p, self._earlier)
                p.add_(self.alpha * grad / (grad.norm() + 1e-12) * w.norm())
                bound = self.epsilon * w.abs()
                p.copy_(torch.clamp(p, w - bound, w + bound))
        for p in params:
            p.grad = self._earlier.get(p)
        self._earlier = {}
        _adversarial_backward(trainer, batch, loss_fn)
        with torch.no_grad():
            for p, w in zip(moved, backup, strict=True):
                p.copy_(w)


_IMAGES = "image inputs ('timm:' encoders)"
for _name, _method in {
    "fgsm": AdversarialMethod(_IMAGES, ("timm",), 0.03, False,
                              lambda eps, start, cfg: FGSM(eps, start)),
    "pgd": AdversarialMethod(_IMAGES, ("timm",), 0.03, True,
                             lambda eps, start, cfg: PGD(eps, start, cfg.alpha, cfg.steps)),
    "fast_fgsm": AdversarialMethod(_IMAGES, ("timm",), 0.03, True,
                                   lambda eps, start, cfg: FastFGSM(eps, start, cfg.alpha)),
    "fgm": AdversarialMethod("the embeddings of text ('hf') or tabular ('mlp') encoders",
                             ("hf", "mlp"), 1.0, False, lambda eps, start, cfg: FGM(eps, start)),
    "awp": AdversarialMethod("the weights of a network ('timm:', 'hf' or 'mlp' encoders)",
                             ("timm", "hf", "mlp"), 0.01, True,
                             lambda eps, start, cfg: AWP(eps, start, cfg.alpha)),
}.items():
    ADVERSARIAL.add(_name, _method, _method.perturbs)


def build_adversarial(cfg: AdversarialConfig, encoder_kinds: Collection[str],
                      start_epoch: int | None = None) -> Callback:
    """The callback of ``cfg.method`` (epsilon defaulting per method, see :data:`ADVERSARIAL`)
    for a model with these encoder kinds (timm, hf, mlp), active from ``start_epoch``
    (1-based; default ``cfg.start_epoch`` or 1)."""
    problem = mismatch(cfg.method, encoder_kinds)
    if problem is not None:
        raise ConfigError(problem)
    method = ADVERSARIAL.get(cfg.method)
    epsilon = cfg.epsilon if cfg.epsilon is not None else method.epsilon
    start = start_epoch if start_epoch is not None else cfg.start_epoch or 1
    return method.build(epsilon, start, cfg)

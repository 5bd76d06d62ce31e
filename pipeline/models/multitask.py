"""Multi-task heads: the competition's targets and auxiliary train-only columns, each a task
with its own head and loss weight, over the encoders' shared (concatenated) features.

Three ways to share, the last two being the usual answers to negative transfer (a task
that pulls the shared weights away from what another needs):

- ``hard``: one tower (hidden layer + output) per task on the shared features.
- ``soft``: the same towers, tied by an L2 penalty between corresponding tower weights
  (Duong et al. 2015): each task may drift from the others as far as the penalty allows.
- ``moe``: a mixture of expert MLPs between the features and the task outputs; each task's
  router sends each row to its top-1 expert, scaled by the router's probability (Switch,
  Fedus et al. 2021), with the load-balancing loss ``alpha * N * sum_i f_i * P_i`` (f_i: the
  share of rows sent to expert i, P_i: the mean router probability of expert i) so that no
  expert starves. Experts are small, so every expert runs on every row and the routing
  selects; no capacity factor is needed.

The head returns the main tasks' outputs (what the loss, the metric and the artifacts read);
auxiliary outputs and the sharing penalty wait on the head until :func:`with_task_losses`
adds them to the loss the trainer minimises. Validation scores the main loss alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.competition import AuxTargetConfig, Competition
from pipeline.data.datasets import Batch
from pipeline.errors import ConfigError
from pipeline.schema import Section

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


class MultitaskConfig(Section):
    """How the tasks (the targets, and ``competition.aux_targets``) share the features."""

    sharing: Literal["hard", "soft", "moe"] = "hard"
    # multilabel / multi-output regression: each target column its own task and tower
    split_targets: bool = True
    target_weights: list[float] | None = None  # one per target column (default 1 each)
    hidden: int = Field(64, ge=1)  # width of each task's tower, or of each expert
    dropout: float = Field(0.1, ge=0, lt=1)
    soft_penalty: float = Field(1e-3, ge=0)  # soft: weight of the L2 between towers
    experts: int = Field(4, ge=2)  # moe
    balance_alpha: float = Field(0.01, ge=0)  # moe: Switch load-balancing weight

    def mismatch(self, task: str, columns: list[str],
                 loss_params: list[dict[str, Any]]) -> str | None:
        """Why ``target_weights`` do not fit the targets or the loss, or None."""
        if self.target_weights is None:
            return None
        if task not in ("multilabel", "regression") or not self.split_targets:
            return (f"'model.multitask.target_weights' weigh the columns of a split "
                    f"multilabel or regression target; task {task!r} has one task")
        if len(self.target_weights) != len(columns):
            return (f"'model.multitask.target_weights' must hold one weight per target column "
                    f"({len(columns)}). Got {self.target_weights}.")
        listed = sorted({k for params in loss_params for k, v in params.items()
                         if isinstance(v, list)})
        if listed:  # a per-column parameter cannot follow one column's slice
            return (f"'model.multitask.target_weights' cannot be combined with loss "
                    f"parameter(s) {listed} listed per column")
        return None


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name, kind, output width, loss weight, and where its labels are
    (main: columns of the batch's ``target``; auxiliary: a column of ``aux``)."""

    name: str
    task: str
    width: int
    weight: float
    main: bool
    index: int  # main: first target column (-1: the whole target); auxiliary: aux column


class AuxEncoder:
    """Auxiliary columns as the float matrix the batch carries under ``aux``: regression
    standardised, binary 0/1, multiclass class indices; missing values (and columns a frame
    lacks, e.g. pseudo-labelled test rows) are NaN and left out of the loss.

    Fitted on every train row, so every fold and the predict stage agree without storing
    it: a column's mean, spread and classes say next to nothing about one fold's targets.
    """

    def __init__(self, train: pd.DataFrame, aux: list[AuxTargetConfig]) -> None:
        self.aux = list(aux)
        self.stats: list[tuple[float, float]] = []
        self.classes: list[list[Any]] = []
        for a in self.aux:  # the values were checked at load (pipeline.competition)
            values = train[a.column].dropna()
            classes = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
            regression = a.task == "regression"
            # regression labels standardised, so a weight means the same for every column
            self.stats.append((float(values.mean()), float(values.std() or 1.0))
                              if regression else (0.0, 1.0))
            self.classes.append([] if regression else classes)

    def widths(self) -> list[int]:
        """Output width of each auxiliary task's head."""
        return [len(c) if a.task == "multiclass" else 1
                for a, c in zip(self.aux, self.classes, strict=True)]

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.full((len(frame), len(self.aux)), np.nan, dtype=np.float32)
        for j, (a, (mean, std), classes) in enumerate(
                zip(self.aux, self.stats, self.classes, strict=True)):
            if a.column not in frame.columns:
                continue
            col = frame[a.column]
            if a.task == "regression":
                out[:, j] = (pd.to_numeric(col, errors="coerce").to_numpy() - mean) / std
            else:
                index = {c: float(i) for i, c in enumerate(classes)}
                out[:, j] = col.map(index).to_numpy(dtype=np.float64, na_value=np.nan)
        return out


def task_specs(comp: Competition, cfg: MultitaskConfig | None) -> list[TaskSpec] | None:
    """The tasks of a multi-task model, or None for the plain single-head network (no
    ``model.multitask`` and no ``competition.aux_targets``)."""
    aux = comp.cfg.aux_targets
    if cfg is None and not aux:
        return None
    cfg = cfg or MultitaskConfig()
    task, columns = comp.cfg.task, comp.cfg.target_columns
    if (problem := cfg.mismatch(task, columns, [])) is not None:
        raise ConfigError(problem)
    weights = cfg.target_weights or [1.0] * len(columns)
    if cfg.split_targets and task in ("multilabel", "regression") and len(columns) > 1:
        specs = [TaskSpec(c, task, 1, w, True, j)
                 for j, (c, w) in enumerate(zip(columns, weights, strict=True))]
    else:
        specs = [TaskSpec("target", task, comp.n_outputs, 1.0, True, -1)]
    widths = AuxEncoder(comp.train, aux).widths() if aux else []
    return specs + [TaskSpec(a.column, a.task, w, a.weight, False, j)
                    for j, (a, w) in enumerate(zip(aux, widths, strict=True))]


def _tower(width: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.SiLU(),
                         nn.Dropout(dropout))


class MultitaskHead(nn.Module):
    """Per-task towers (hard / soft) or routed experts (moe) over the shared features.

    ``forward`` returns the main tasks' outputs side by side; ``aux_outputs`` and
    ``penalty`` hold the same pass's auxiliary outputs and sharing loss.
    """

    def __init__(self, width: int, tasks: list[TaskSpec], cfg: MultitaskConfig) -> None:
        super().__init__()
        self.tasks, self.sharing = tasks, cfg.sharing
        self.soft_penalty, self.balance_alpha = cfg.soft_penalty, cfg.balance_alpha
        n = len(tasks)
        if cfg.sharing == "moe":
            self.experts = nn.ModuleList(_tower(width, cfg.hidden, cfg.dropout)
                                         for _ in range(cfg.experts))
            self.routers = nn.ModuleList(nn.Linear(width, cfg.experts) for _ in range(n))
        else:
            self.towers = nn.ModuleList(_tower(width, cfg.hidden, cfg.dropout) for _ in range(n))
        self.outputs = nn.ModuleList(nn.Linear(cfg.hidden, t.width) for t in tasks)
        self.aux_outputs: list[torch.Tensor] = []
        self.penalty: torch.Tensor | None = None
        self.routed: list[torch.Tensor] = []  # moe: each task's expert per row, last pass

    def __getstate__(self) -> dict[str, Any]:
        # the last pass's tensors are no state, and deepcopy (EMA, SWA, a teacher) refuses
        # them mid-step: copies and pickles start without them
        return {**self.__dict__, "aux_outputs": [], "penalty": None, "routed": []}

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = self._moe(pooled) if self.sharing == "moe" else [
            tower(pooled) for tower in self.towers]
        if self.sharing == "soft" and self.training:
            self.penalty = self.soft_penalty * tower_distance(list(self.towers))
        outs = [head(h) for head, h in zip(self.outputs, hidden, strict=True)]
        self.aux_outputs = [o for o, t in zip(outs, self.tasks, strict=True) if not t.main]
        main = [o for o, t in zip(outs, self.tasks, strict=True) if t.main]
        return torch.cat(main, dim=1) if len(main) > 1 else main[0]

    def _moe(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        expert_out = torch.stack([e(pooled) for e in self.experts], dim=1)  # B x N x H
        n = len(self.experts)
        hidden, balance, self.routed = [], pooled.new_zeros((), dtype=torch.float32), []
        for router in self.routers:
            probs = router(pooled).float().softmax(dim=1)
            gate, chosen = probs.max(dim=1)
            picked = expert_out[torch.arange(len(pooled), device=pooled.device), chosen]
            hidden.append(picked * gate.unsqueeze(1).to(picked.dtype))
            share = F.one_hot(chosen, n).float().mean(dim=0)  # f_i: not differentiable
            balance = balance + n * (share * probs.mean(dim=0)).sum()
            self.routed.append(chosen.detach())
        self.penalty = self.balance_alpha * balance / len(self.routers)
        return hidden


def tower_distance(towers: list[nn.Module]) -> torch.Tensor:
    """Sum over corresponding tower weights of each tower's squared L2 distance to their
    mean (the pairwise squared distances over the number of towers)."""
    params = [list(t.parameters()) for t in towers]
    total = params[0][0].new_zeros(())
    if len(towers) < 2:
        return total
    for same in zip(*params, strict=True):
        stack = torch.stack(same)
        total = total + (stack - stack.mean(dim=0, keepdim=True)).pow(2).sum()
    return total


def _aux_loss(spec: TaskSpec, out: torch.Tensor, labels: torch.Tensor,
              weight: torch.Tensor | None) -> torch.Tensor:
    """One auxiliary task's loss over its labelled rows (NaN labels are left out)."""
    known = ~torch.isnan(labels)
    if not bool(known.any()):
        return out.sum() * 0.0
    out, y = out[known].float(), labels[known]
    if spec.task == "multiclass":
        per_row = F.cross_entropy(out, y.long(), reduction="none")
    elif spec.task == "binary":
        per_row = F.binary_cross_entropy_with_logits(out[:, 0], y, reduction="none")
    else:
        per_row = F.mse_loss(out[:, 0], y, reduction="none")
    if weight is None:
        return per_row.mean()
    w = weight[known].to(per_row)
    return (per_row * w).sum() / w.sum().clamp(min=1e-12)


def _column(batch: Batch, j: int) -> Batch:
    return {**batch, "target": batch["target"][:, j:j + 1]}


def _heads(model: nn.Module) -> list[MultitaskHead]:
    """The multi-task heads of a network, or of every member of a member ensemble."""
    members = getattr(model, "members", None)
    nets = list(members) if isinstance(members, nn.ModuleList) else [model]
    return [h for net in nets if isinstance(h := getattr(net, "head", None), MultitaskHead)]


def _extra_terms(head: MultitaskHead, batch: Batch, rows: int) -> torch.Tensor | float:
    """A head's weighted auxiliary losses and sharing penalty from its last forward pass."""
    total: torch.Tensor | float = 0.0
    aux = [t for t in head.tasks if not t.main]
    outs = head.aux_outputs
    # auxiliary labels only where the outputs are this batch's rows (a method that mixes
    # labelled and unlabelled rows in one pass keeps the main loss alone)
    if aux and "aux" in batch and outs and len(outs[0]) == len(batch["aux"]) == rows:
        for spec, out in zip(aux, outs, strict=True):
            total = total + spec.weight * _aux_loss(spec, out, batch["aux"][:, spec.index],
                                                    batch.get("weight"))
    if head.penalty is not None and head.training:
        total = total + head.penalty
    return total


def with_task_losses(loss_fn: LossFn, model: nn.Module) -> LossFn:
    """``loss_fn`` on the main outputs (per target column with its weight when the weights
    are set), plus each auxiliary task's weighted loss and the sharing penalty of the same
    forward pass (summed over the members of a member ensemble, as their losses are). A
    model without a :class:`MultitaskHead` keeps ``loss_fn`` as it is."""
    heads = _heads(model)
    if not heads:
        return loss_fn
    mains = [t for t in heads[0].tasks if t.main]
    weighted = any(t.weight != 1.0 for t in mains)
    if weighted and heads[0] is not getattr(model, "head", None):
        raise ConfigError("'model.multitask.target_weights' cannot weigh the targets of a "
                          "member ensemble ('train.ensemble'); leave them out")

    def loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        if weighted:  # mean over columns of weight x column loss
            total = sum(t.weight * loss_fn(outputs[:, t.index:t.index + 1],
                                           _column(batch, t.index))
                        for t in mains) / len(mains)
        else:
            total = loss_fn(outputs, batch)
        for head in heads:
            total = total + _extra_terms(head, batch, len(outputs))
        return total  # type: ignore[return-value]

    loss.main = getattr(loss_fn, "main", loss_fn)  # type: ignore[attr-defined]
    return loss


def with_task_plans(plans: list[Any], model: nn.Module) -> list[Any]:
    """The stage plans with :func:`with_task_losses` around each stage's loss."""
    return [dataclasses.replace(p, loss_fn=with_task_losses(p.loss_fn, model)) for p in plans]

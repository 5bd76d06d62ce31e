"""What the tabular objectives (denoising and variational autoencoders) share: the input space
they learn in, fitted on every unlabelled row, the swap noise of the Porto Seguro solution,
the reconstruction loss, and the adapter that lets a trained encoder read a fold's batches.

The input space: each numeric column rank-gaussianised (its quantiles, ties averaged, mapped
through the normal inverse CDF), a missing flag for each numeric column with missing values,
and each categorical column one-hot (code 0: missing or unseen). The gaussianisation is a
torch module (piecewise-linear in the column's quantiles), so the exported feature table and
the network encoder go through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from pipeline.artifacts import atomic_path
from pipeline.data.encodings import normalise_categories
from pipeline.data.tabular import TabularEncoder
from pipeline.errors import DataError
from pipeline.pretrain._base import OBJECTIVES, PretrainData, fit_epochs
from pipeline.schema import Section

ENCODER_FILE = "encoder.pt"  # the trained tabular encoder inside pretrained/<name>/
# objective kind -> module class (space, config) -> nn.Module with features(num, cat), out_dim
BUILDERS: dict[str, Any] = {}


class TabularObjectiveConfig(Section):
    """Training settings every tabular objective shares."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0)
    hidden: list[PositiveInt] = Field(default_factory=lambda: [1500, 1500, 1500], min_length=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    n_quantiles: int = Field(1000, ge=2)  # knots of each numeric column's rank-gauss map


@dataclass(frozen=True)
class TabularSpace:
    """The columns an encoder reads and how their values enter it, fitted on all rows."""

    numeric: list[str]
    categorical: list[str]
    knots: list[list[float]]  # per numeric column: its distinct quantiles, increasing
    ranks: list[list[float]]  # the uniform rank of each knot (ties averaged)
    missing: list[int]  # numeric columns (indices) that get a missing flag
    categories: list[list[str]]  # per categorical column: its values; code = position + 1

    @property
    def width(self) -> int:
        """Width of the input vector (and of the reconstruction)."""
        return len(self.numeric) + len(self.missing) + sum(len(c) + 1 for c in self.categories)

    def to_json(self) -> dict[str, Any]:
        """Plain data, saved with the encoder."""
        return asdict(self)

    def raw(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Numbers (NaN where missing) and category codes of ``frame``'s rows."""
        absent = [c for c in [*self.numeric, *self.categorical] if c not in frame.columns]
        if absent:
            raise DataError(f"the pretrained encoder reads columns {absent}, which the rows "
                            "given lack")
        num = np.array(frame[self.numeric].apply(pd.to_numeric, errors="coerce"), np.float32)
        codes = np.zeros((len(frame), len(self.categorical)), np.int64)
        values = normalise_categories(frame[self.categorical]) if self.categorical else None
        for i, col in enumerate(self.categorical):
            lookup = {v: k + 1 for k, v in enumerate(self.categories[i])}
            codes[:, i] = values[col].map(lookup).fillna(0).to_numpy(np.int64)  # type: ignore[index]
        return torch.from_numpy(num), torch.from_numpy(codes)


def fit_space(frame: pd.DataFrame, numeric: list[str], categorical: list[str],
              n_quantiles: int) -> TabularSpace:
    """Quantiles, missing flags and category values of the unlabelled rows."""
    knots, ranks, missing = [], [], []
    levels = np.linspace(0.0, 1.0, n_quantiles)
    for i, col in enumerate(numeric):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        present = values[~np.isnan(values)]
        if len(present) < len(values):
            missing.append(i)
        if not len(present):
            knots.append([0.0])
            ranks.append([0.5])
            continue
        quantiles = np.quantile(present, levels)
        # a value repeated over many quantiles (a binary column) takes their middle rank
        unique, inverse = np.unique(quantiles, return_inverse=True)
        mid = np.bincount(inverse, levels) / np.bincount(inverse)
        knots.append(unique.tolist())
        ranks.append(mid.tolist())
    cats = normalise_categories(frame[categorical]) if categorical else pd.DataFrame()
    categories = [sorted(map(str, cats[c].dropna().unique())) for c in categorical]
    return TabularSpace(list(numeric), list(categorical), knots, ranks, missing, categories)


class TabularInput(nn.Module):
    """Raw numbers and category codes -> the parts of the input vector, and the vector."""

    def __init__(self, space: TabularSpace) -> None:
        super().__init__()
        size = max((len(k) for k in space.knots), default=1)
        # pad every column's knots to one length by repeating its last knot
        knots = [k + [k[-1]] * (size - len(k)) for k in space.knots]
        ranks = [r + [r[-1]] * (size - len(r)) for r in space.ranks]
        self.register_buffer("knots", torch.tensor(knots, dtype=torch.float32).view(-1, size))
        self.register_buffer("ranks", torch.tensor(ranks, dtype=torch.float32).view(-1, size))
        self.register_buffer("missing", torch.tensor(space.missing, dtype=torch.long))
        self.cardinalities = [len(c) + 1 for c in space.categories]
        self.n_numeric = len(space.numeric)

    def parts(self, num: torch.Tensor, cat: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gaussianised numbers (0 where missing), missing flags, category codes."""
        if not self.n_numeric:
            empty = num.new_zeros((num.shape[0], 0))
            return empty, empty, cat
        absent = torch.isnan(num)
        x = torch.nan_to_num(num).T.contiguous()  # (columns, rows) for a batched search
        upper = torch.searchsorted(self.knots, x).clamp(1, self.knots.shape[1] - 1)
        lower = upper - 1
        x0, x1 = self.knots.gather(1, lower), self.knots.gather(1, upper)
        r0, r1 = self.ranks.gather(1, lower), self.ranks.gather(1, upper)
        step = torch.where(x1 > x0, x1 - x0, torch.ones_like(x1))
        t = ((x - x0) / step).clamp(0.0, 1.0)
        rank = torch.where(x1 > x0, r0 + t * (r1 - r0), torch.where(x >= x1, r1, r0))
        gauss = torch.special.ndtri(rank.clamp(1e-3, 1 - 1e-3)).T
        gauss = torch.where(absent, torch.zeros_like(gauss), gauss)
        return gauss, absent[:, self.missing].to(gauss.dtype), cat

    def vector(self, gauss: torch.Tensor, flags: torch.Tensor, cat: torch.Tensor
               ) -> torch.Tensor:
        """The input vector: numbers, flags, one-hot categories."""
        onehots = [F.one_hot(cat[:, i], k).to(gauss.dtype)
                   for i, k in enumerate(self.cardinalities)]
        return torch.cat([gauss, flags, *onehots], dim=1)


def swap_noise(gauss: torch.Tensor, flags: torch.Tensor, cat: torch.Tensor,
               num_p: torch.Tensor, cat_p: torch.Tensor, missing: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each cell, with its column's probability, by the same column's value in a
    random row (a number keeps its missing flag). Draws from the global torch generator."""
    n = gauss.shape[0]

    def swap(values: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
        mask = torch.rand(values.shape, device=values.device) < p
        rows = torch.randint(0, n, values.shape, device=values.device)
        return torch.where(mask, values.gather(0, rows), values), mask, rows

    new_gauss, mask, rows = swap(gauss, num_p)
    if flags.shape[1]:  # the flag travels with its number
        pick = flags.gather(0, rows[:, missing])
        flags = torch.where(mask[:, missing], pick, flags)
    new_cat, _, _ = swap(cat, cat_p)
    return new_gauss, flags, new_cat


def column_probabilities(space: TabularSpace, p: float, per_column: Mapping[str, float],
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap probability of every numeric and categorical column (``per_column`` overrides)."""
    unknown = sorted(set(per_column) - {*space.numeric, *space.categorical})
    if unknown:
        raise DataError(f"'objective.swap_columns' names columns the encoder does not read: "
                        f"{unknown}. Known: {space.numeric + space.categorical}")
    num = [per_column.get(c, p) for c in space.numeric]
    cat = [per_column.get(c, p) for c in space.categorical]
    return (torch.tensor(num, device=device).view(1, -1),
            torch.tensor(cat, device=device).view(1, -1))


class ReconstructionHead(nn.Module):
    """Hidden state -> numbers and flags (squared error) and category logits (cross-entropy),
    each column weighing the same in the loss."""

    def __init__(self, width: int, inputs: TabularInput) -> None:
        super().__init__()
        self.n_dense = inputs.n_numeric + int(inputs.missing.numel())
        self.cardinalities = inputs.cardinalities
        self.out = nn.Linear(width, self.n_dense + sum(self.cardinalities))

    def loss(self, hidden: torch.Tensor, gauss: torch.Tensor, flags: torch.Tensor,
             cat: torch.Tensor) -> torch.Tensor:
        """Mean loss per column of the clean row given the hidden state."""
        out = self.out(hidden)
        dense = torch.cat([gauss, flags], dim=1)
        total = F.mse_loss(out[:, :self.n_dense], dense, reduction="sum") / len(out)
        start = self.n_dense
        for i, k in enumerate(self.cardinalities):
            total = total + F.cross_entropy(out[:, start:start + k], cat[:, i])
            start += k
        return total / max(1, self.n_dense + len(self.cardinalities))


def mlp(width: int, hidden: list[int], dropout: float) -> nn.ModuleList:
    """One block (linear, ReLU, dropout) per hidden width; the features are their outputs."""
    blocks = nn.ModuleList()
    for size in hidden:
        blocks.append(nn.Sequential(nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)))
        width = size
    return blocks


def unlabelled_space(cfg: TabularObjectiveConfig, data: PretrainData) -> TabularSpace:
    """The input space of the competition's feature columns over every unlabelled row."""
    comp = data.comp
    return fit_space(data.frame, comp.numeric_columns, comp.categorical_columns,
                     cfg.n_quantiles)


def train_batches(
    model: nn.Module,
    cfg: TabularObjectiveConfig,
    tensors: tuple[torch.Tensor, torch.Tensor],
    step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    out_dir: Any,
    seed: int,
) -> list[float]:
    """Shuffled minibatches of the raw ``(num, cat)`` tensors for ``cfg.epochs`` epochs,
    resumable (:func:`fit_epochs`); ``step_loss(num, cat)`` is the objective's loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    num, cat = tensors
    n = len(num)

    def run_epoch(epoch: int) -> float:
        order = torch.randperm(n)
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # a batch of one has no other row to swap with
                continue
            loss = step_loss(num[idx], cat[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return total / max(1, count)

    return fit_epochs(model, optimizer, cfg.epochs, run_epoch, out_dir, seed)


class FoldAdapter(nn.Module):
    """Maps a fold's network batch (``num``: the fold's standardised numbers then missing
    flags; ``cat``: the fold's category codes) back to raw numbers and this space's codes.

    The fold's scaler and imputer undo exactly; a value missing in a column the fold saw
    missing comes back as NaN, and a fold category code becomes this space's code of the same
    value (0 when the space never saw it).
    """

    def __init__(self, space: TabularSpace, fold: TabularEncoder) -> None:
        super().__init__()
        absent = [c for c in [*space.numeric, *space.categorical]
                  if c not in [*fold.numeric, *fold.categorical]]
        moved = [c for c in space.numeric if c in fold.categorical]
        moved += [c for c in space.categorical if c in fold.numeric]
        if absent or moved:
            raise DataError(f"the pretrained encoder reads columns {absent or moved} that the "
                            "training config's features lack or type differently")
        index = [fold.numeric.index(c) for c in space.numeric]
        mean = np.zeros(len(fold.numeric))
        scale = np.ones(len(fold.numeric))
        flag_of = {}
        if fold.encoder is not None and fold.numeric:
            steps = fold.encoder.named_transformers_["num"].named_steps
            mean, scale = steps["scale"].mean_, steps["scale"].scale_
            if "missing" in fold.encoder.named_transformers_:
                flagged = fold.encoder.named_transformers_["missing"].named_steps["flag"]
                flag_of = {int(j): len(fold.numeric) + k for k, j in enumerate(flagged.features_)}
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))
        self.register_buffer("mean", torch.tensor(mean[index], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale[index], dtype=torch.float32))
        flags = [flag_of.get(j, -1) for j in index]
        self.register_buffer("flag", torch.tensor(flags, dtype=torch.long))
        self.cat_index: list[int] = []  # the fold's column of each space column
        for col, values in zip(space.categorical, space.categories, strict=True):
            lookup = {v: k + 1 for k, v in enumerate(values)}
            fold_values = fold_categories(fold, col)
            table = torch.tensor([0] + [lookup.get(v, 0) for v in fold_values], dtype=torch.long)
            self.register_buffer(f"table{len(self.cat_index)}", table, persistent=False)
            self.cat_index.append(fold.categorical.index(col))

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
        raw = num[:, self.index] * self.scale + self.mean
        has_flag = self.flag >= 0
        if bool(has_flag.any()):
            flags = num[:, self.flag.clamp(min=0)] > 0.5
            raw = torch.where(flags & has_flag, torch.full_like(raw, float("nan")), raw)
        codes = [getattr(self, f"table{i}")[cat[:, j]] for i, j in enumerate(self.cat_index)]
        own = torch.stack(codes, dim=1) if codes else cat.new_zeros((len(cat), 0))
        return raw, own


def fold_categories(fold: TabularEncoder, col: str) -> list[str]:
    """The fold's values of ``col`` in code order (code k + 1 is value k)."""
    assert fold.encoder is not None
    codes = fold.encoder.named_transformers_["cat"].named_steps["codes"]
    values = codes.categories_[fold.categorical.index(col)]
    return [str(v) for v in values if pd.notna(v)]


def save_tabular(out_dir: Path, kind: str, space: TabularSpace, cfg: Section,
                 model: nn.Module) -> None:
    """``encoder.pt``: what :func:`load_tabular` needs to rebuild the trained encoder."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(Path(out_dir) / ENCODER_FILE) as tmp:
        torch.save({"kind": kind, "space": space.to_json(), "config": cfg.model_dump(),
                    "state": state}, tmp)


def load_tabular(folder: Path) -> tuple[nn.Module, TabularSpace]:
    """The trained DAE or VAE saved in ``folder`` (eval mode, on the CPU) and its space."""
    saved = torch.load(Path(folder) / ENCODER_FILE, map_location="cpu", weights_only=False)
    space = TabularSpace(**saved["space"])
    cfg = OBJECTIVES.get(saved["kind"]).config.model_validate(saved["config"])
    model = BUILDERS[saved["kind"]](space, cfg)
    model.load_state_dict(saved["state"])
    return model.eval(), space


def tabular_features(folder: Path, frame: pd.DataFrame, device: torch.device) -> np.ndarray:
    """The trained encoder's features of ``frame``'s rows, ``(rows, out_dim)``."""
    model, space = load_tabular(folder)
    model = model.to(device)
    num, cat = space.raw(frame)
    out = []
    with torch.no_grad():
        for start in range(0, len(num), 4096):
            out.append(model.features(num[start:start + 4096].to(device),  # type: ignore[operator]
                                      cat[start:start + 4096].to(device)).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, int(model.out_dim)), np.float32)

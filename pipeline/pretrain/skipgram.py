"""Token embeddings by skip-gram with negative sampling (word2vec), over categorical sequences
(``skipgram``: a column holding a sequence of tokens, or rows of events grouped by an id and
ordered by time) or over random walks on a graph given as an edge list (``deepwalk``).

The vectors become features (a row: its token's vector, or the mean over its sequence or its
group's events), exported like the tabular objectives' features, or initialise an ``mlp``
encoder's embedding table of a categorical column (``params: {pretrained_embeddings:
{column: <name>}}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pipeline.artifacts import atomic_path, write_parquet
from pipeline.competition_files import read_csv
from pipeline.data.encodings import normalise_categories
from pipeline.data.tabular import TabularEncoder
from pipeline.errors import ConfigError, DataError
from pipeline.pretrain._base import OBJECTIVES, Objective, PretrainData, fit_epochs
from pipeline.pretrain._tabular import fold_categories
from pipeline.schema import Section

VECTORS_FILE = "embeddings.pt"  # tokens, vectors and how a row maps to them


class EmbeddingTrainConfig(Section):
    """Skip-gram settings shared by sequences and graph walks."""

    dim: int = Field(32, ge=1)
    window: int = Field(5, ge=1)  # the largest distance of a context token (drawn 1..window)
    negatives: int = Field(5, ge=1)  # noise tokens per pair, drawn from unigram^0.75
    min_count: int = Field(1, ge=1)  # rarer tokens are dropped
    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0, allow_inf_nan=False)
    batch_size: int = Field(4096, ge=1)


class EventsConfig(Section):
    """Rows of events: grouped by ``group_column``, ordered by ``order_column``."""

    file: str | None = None  # a CSV of events; None: the unlabelled rows themselves
    group_column: str
    order_column: str
    token_column: str


class SkipGramConfig(EmbeddingTrainConfig):
    """``objective: {kind: skipgram, sequence_column: pages}`` or ``{kind: skipgram, events:
    {group_column: user, order_column: time, token_column: item}}``."""

    kind: Literal["skipgram"] = "skipgram"
    sequence_column: str | None = None
    separator: str | None = None  # between the tokens of sequence_column; None: whitespace
    events: EventsConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> SkipGramConfig:
        if (self.sequence_column is None) == (self.events is None):
            raise ValueError("give one of 'sequence_column' (a column of token sequences) or "
                             "'events' (rows grouped by an id, ordered by time)")
        return self


class DeepWalkConfig(EmbeddingTrainConfig):
    """``objective: {kind: deepwalk, edges: data/edges.csv, node_column: user}``."""

    kind: Literal["deepwalk"] = "deepwalk"
    edges: str  # CSV with one edge per line
    source_column: str = "source"
    target_column: str = "target"
    directed: bool = False
    walk_length: int = Field(20, ge=2)
    walks_per_node: int = Field(10, ge=1)
    node_column: str | None = None  # the rows' column naming their node (for features)


class SkipGram(nn.Module):
    """Centre and context tables; the centre vectors are the embeddings."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.centre = nn.Embedding(vocab, dim)
        self.context = nn.Embedding(vocab, dim)
        nn.init.uniform_(self.centre.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def loss(self, centre: torch.Tensor, context: torch.Tensor, noise: torch.Tensor
             ) -> torch.Tensor:
        """Negative-sampling loss: pull true pairs together, push noise tokens away."""
        u = self.centre(centre)
        pos = (u * self.context(context)).sum(-1)
        neg = torch.bmm(self.context(noise), u.unsqueeze(-1)).squeeze(-1)
        return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


def _vocabulary(sequences: list[list[str]], min_count: int
                ) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    counts = pd.Series([t for s in sequences for t in s], dtype=object).value_counts()
    counts = counts[counts >= min_count]
    tokens = sorted(map(str, counts.index))
    if not tokens:
        raise DataError(f"no token occurs {min_count}+ times ('objective.min_count')")
    index = {t: i for i, t in enumerate(tokens)}
    coded = [np.array([index[t] for t in s if t in index], np.int64) for s in sequences]
    freq = np.array([counts[t] for t in tokens], np.float64)
    return tokens, coded, freq


def skipgram_pairs(coded: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre, context) pairs within a window drawn 1..``window`` per centre token (word2vec's
    dynamic window), never across sequences. Draws from numpy's global generator."""
    lengths = np.array([len(s) for s in coded])
    flat = np.concatenate(coded) if len(coded) else np.zeros(0, np.int64)
    seq = np.repeat(np.arange(len(coded)), lengths)
    reach = np.random.randint(1, window + 1, size=len(flat))
    centres, contexts = [], []
    for d in range(1, min(window, max(len(flat) - 1, 1)) + 1):
        same = seq[:-d] == seq[d:]
        forward = same & (reach[:-d] >= d)
        backward = same & (reach[d:] >= d)
        centres += [flat[:-d][forward], flat[d:][backward]]
        contexts += [flat[d:][forward], flat[:-d][backward]]
    if not centres:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(centres), np.concatenate(contexts)


def train_skipgram(cfg: EmbeddingTrainConfig, coded: list[np.ndarray], freq: np.ndarray,
                   out_dir: Path, device: torch.device, seed: int) -> tuple[np.ndarray,
                                                                          list[float]]:
    """Vectors of the vocabulary (``(len(freq), dim)``) and the loss of every epoch."""
    torch.manual_seed(seed)
    model = SkipGram(len(freq), cfg.dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    noise = torch.tensor(freq ** 0.75, dtype=torch.float32, device=device)

    def run_epoch(epoch: int) -> float:
        centre, context = skipgram_pairs(coded, cfg.window)
        if not len(centre):
            raise DataError("no (token, context) pair: every sequence holds one token")
        order = torch.randperm(len(centre))
        centre_t = torch.from_numpy(centre)[order].to(device)
        context_t = torch.from_numpy(context)[order].to(device)
        total = 0.0
        for start in range(0, len(centre_t), cfg.batch_size):
            c, o = centre_t[start:start + cfg.batch_size], context_t[start:start + cfg.batch_size]
            drawn = torch.multinomial(noise, len(c) * cfg.negatives, replacement=True)
            loss = model.loss(c, o, drawn.view(len(c), cfg.negatives))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(c)
        return total / len(centre_t)

    losses = fit_epochs(model, optimizer, cfg.epochs, run_epoch, out_dir, seed)
    return model.centre.weight.detach().cpu().numpy(), losses


def _sequences(cfg: SkipGramConfig, data: PretrainData) -> tuple[list[list[str]], dict[str, Any]]:
    """Token sequences and how a row maps to them (for features)."""
    if cfg.sequence_column is not None:
        if cfg.sequence_column not in data.frame.columns:
            raise DataError(f"'objective.sequence_column' {cfg.sequence_column!r} is not a column "
                            f"of the rows. Columns: {list(data.frame.columns)}")
        texts = data.frame[cfg.sequence_column].fillna("").astype(str)
        seqs = [t.split(cfg.separator) for t in texts]
        return seqs, {"mode": "sequence", "column": cfg.sequence_column, "sep": cfg.separator}
    ev = cfg.events
    assert ev is not None
    frame = data.frame if ev.file is None else read_csv(Path(ev.file), "events")
    absent = [c for c in (ev.group_column, ev.order_column, ev.token_column)
              if c not in frame.columns]
    if absent:
        raise DataError(f"'objective.events' columns {absent} are not in "
                        f"{ev.file or 'the unlabelled rows'}. Columns: {list(frame.columns)}")
    frame = frame.sort_values([ev.group_column, ev.order_column], kind="stable")
    tokens = normalise_categories(frame[[ev.token_column]])[ev.token_column].fillna("<na>")
    groups = normalise_categories(frame[[ev.group_column]])[ev.group_column]
    grouped = tokens.groupby(groups, sort=False).agg(list)
    return [list(map(str, s)) for s in grouped], {
        "mode": "group", "column": ev.group_column, "groups": list(map(str, grouped.index))}


def _save(out_dir: Path, tokens: list[str], vectors: np.ndarray, rows: dict[str, Any],
          coded: list[np.ndarray] | None = None) -> None:
    if rows["mode"] == "group" and coded is not None:  # a group's vector: its events' mean
        rows["group_vectors"] = np.stack([vectors[c].mean(0) if len(c) else
                                          np.zeros(vectors.shape[1]) for c in coded])
    with atomic_path(Path(out_dir) / VECTORS_FILE) as tmp:
        torch.save({"tokens": tokens, "vectors": torch.from_numpy(vectors), "rows": rows}, tmp)
    table = pd.DataFrame(vectors, columns=[f"v{i}" for i in range(vectors.shape[1])])
    write_parquet(Path(out_dir) / "embeddings.parquet", table.assign(token=tokens))


def fit_skipgram(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
                 seed: int) -> dict[str, Any]:
    """Skip-gram on the rows' token sequences (or event groups); write ``embeddings.pt``."""
    assert isinstance(cfg, SkipGramConfig)
    seqs, rows = _sequences(cfg, data)
    tokens, coded, freq = _vocabulary(seqs, cfg.min_count)
    vectors, losses = train_skipgram(cfg, coded, freq, out_dir, device, seed)
    _save(out_dir, tokens, vectors, rows, coded)
    return {"losses": losses, "vocabulary": len(tokens), "sequences": len(seqs)}


def random_walks(edges: pd.DataFrame, cfg: DeepWalkConfig, seed: int
                 ) -> tuple[list[str], list[np.ndarray]]:
    """Nodes and ``walks_per_node`` uniform random walks from every node (DeepWalk); a node
    without out-edges ends its walk."""
    src = normalise_categories(edges[[cfg.source_column]])[cfg.source_column].astype(str)
    dst = normalise_categories(edges[[cfg.target_column]])[cfg.target_column].astype(str)
    nodes = sorted(set(src) | set(dst))
    index = {n: i for i, n in enumerate(nodes)}
    a, b = src.map(index).to_numpy(), dst.map(index).to_numpy()
    if not cfg.directed:
        a, b = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.argsort(a, kind="stable")
    targets = b[order]
    degree = np.bincount(a, minlength=len(nodes))
    start = np.concatenate([[0], np.cumsum(degree)[:-1]])
    rng = np.random.default_rng(seed)  # walks fixed by the seed: a resumed run sees the same
    walks = []
    for _ in range(cfg.walks_per_node):
        here = rng.permutation(len(nodes))
        path, alive = [here], np.ones(len(nodes), bool)
        for _ in range(cfg.walk_length - 1):
            safe = np.maximum(here, 0)  # -1: a walk that has ended
            alive &= degree[safe] > 0
            step = start[safe] + (rng.random(len(here)) * np.maximum(degree[safe], 1)).astype(int)
            here = np.where(alive, targets[np.minimum(step, len(targets) - 1)], -1)
            path.append(here)
        matrix = np.stack(path, axis=1)
        walks += [row[row >= 0] for row in matrix]
    return nodes, walks


def fit_deepwalk(cfg: Section, data: PretrainData, out_dir: Path, device: torch.device,
                 seed: int) -> dict[str, Any]:
    """Skip-gram over random walks on the edge list; write ``embeddings.pt``."""
    assert isinstance(cfg, DeepWalkConfig)
    path = Path(cfg.edges)
    if not path.is_file():
        raise DataError(f"edge list {path} ('objective.edges') not found")
    edges = read_csv(path, "edge list")
    absent = [c for c in (cfg.source_column, cfg.target_column) if c not in edges.columns]
    if absent:
        raise DataError(f"edge list {path} lacks columns {absent} ('objective.source_column', "
                        f"'objective.target_column'). Columns: {list(edges.columns)}")
    nodes, walks = random_walks(edges, cfg, seed)
    tokens, coded, freq = _vocabulary([[nodes[i] for i in w] for w in walks], cfg.min_count)
    vectors, losses = train_skipgram(cfg, coded, freq, out_dir, device, seed)
    _save(out_dir, tokens, vectors, {"mode": "token", "column": cfg.node_column})
    return {"losses": losses, "vocabulary": len(tokens), "walks": len(walks),
            "edges": len(edges)}


def load_vectors(folder: Path) -> dict[str, Any]:
    """``embeddings.pt``: tokens, vectors and the row mapping."""
    return dict(torch.load(Path(folder) / VECTORS_FILE, map_location="cpu", weights_only=False))


def embedding_features(folder: Path, frame: pd.DataFrame, device: torch.device) -> np.ndarray:
    """A row's vector: its token's (graph node), its sequence's mean, or its group's mean;
    zeros for what the vocabulary never saw."""
    saved = load_vectors(folder)
    vectors, rows = saved["vectors"].numpy(), saved["rows"]
    column = rows.get("column")
    if column is None or column not in frame.columns:
        raise DataError(f"{folder}: the rows need column {column!r} for these embeddings "
                        "(deepwalk: set 'objective.node_column')")
    out = np.zeros((len(frame), vectors.shape[1]), np.float32)
    if rows["mode"] == "sequence":
        index = {t: i for i, t in enumerate(saved["tokens"])}
        for r, text in enumerate(frame[column].fillna("").astype(str)):
            found = [index[t] for t in text.split(rows["sep"]) if t in index]
            if found:
                out[r] = vectors[found].mean(0)
        return out
    keys = saved["tokens"] if rows["mode"] == "token" else rows["groups"]
    table = vectors if rows["mode"] == "token" else rows["group_vectors"]
    index = {t: i for i, t in enumerate(keys)}
    values = normalise_categories(frame[[column]])[column].map(index)
    hit = values.notna().to_numpy()
    out[hit] = table[values[hit].astype(int).to_numpy()]
    return out


def pretrained_embedding(folder: Path, fold: TabularEncoder, column: str) -> nn.Embedding:
    """An ``mlp`` encoder's embedding table of ``column`` initialised from the vectors in
    ``folder``: the fold's code k + 1 gets its value's vector, code 0 (unseen or missing) and
    values the vocabulary lacks start at zero; trained on from there."""
    if column not in fold.categorical:
        raise ConfigError(f"'pretrained_embeddings' names {column!r}, which is not a "
                          f"categorical feature. Categorical: {fold.categorical}")
    saved = load_vectors(folder)
    vectors = saved["vectors"]
    index = {t: i for i, t in enumerate(saved["tokens"])}
    table = torch.zeros(len(fold_categories(fold, column)) + 1, vectors.shape[1])
    for k, value in enumerate(fold_categories(fold, column)):
        if value in index:
            table[k + 1] = vectors[index[value]]
    return nn.Embedding.from_pretrained(table, freeze=False)


OBJECTIVES.add("skipgram", Objective(SkipGramConfig, "sequence", fit_skipgram, "embeddings",
                                     embedding_features),
               "skip-gram with negative sampling over token sequences or event groups")
OBJECTIVES.add("deepwalk", Objective(DeepWalkConfig, "sequence", fit_deepwalk, "embeddings",
                                     embedding_features),
               "DeepWalk: skip-gram over random walks on an edge list")

"""Pretraining parts: the resumable epoch loop, the tabular input space and swap noise, the
DAE and VAE, the adapter from a fold's batch, and skip-gram / DeepWalk embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.competition import CompetitionConfig, load_competition
from pipeline.data.tabular import TabularEncoder
from pipeline.errors import DataError
from pipeline.pretrain import OBJECTIVES, PretrainData, fit_epochs
from pipeline.pretrain._base import RESUME_FILE
from pipeline.pretrain._tabular import (
    FoldAdapter,
    TabularInput,
    TabularSpace,
    fit_space,
    load_tabular,
    swap_noise,
)
from pipeline.pretrain.skipgram import (
    DeepWalkConfig,
    SkipGramConfig,
    embedding_features,
    load_vectors,
    pretrained_embedding,
    skipgram_pairs,
)
from pipeline.pretrain.tabular_dae import DAEConfig
from pipeline.pretrain.tabular_encoder import PretrainedTabular
from pipeline.pretrain.tabular_vae import TabularVAE, VAEConfig
from tests.conftest import make_competition


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _toy_fit(out_dir: Path, epochs: int, stop_after: int | None = None) -> tuple[nn.Module,
                                                                                   list[float]]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))

    def run_epoch(epoch: int) -> float:
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt  # a kill between epochs
        noisy = x + float(np.random.normal()) * torch.randn_like(x)  # numpy and torch draws
        loss = model(noisy).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return model, fit_epochs(model, optimizer, epochs, run_epoch, out_dir, seed=3)


def test_fit_epochs_resumes_to_the_same_weights(tmp_path: Path) -> None:
    whole, losses = _toy_fit(tmp_path / "a", 5)
    with pytest.raises(KeyboardInterrupt):
        _toy_fit(tmp_path / "b", 5, stop_after=2)
    state = torch.load(tmp_path / "b" / RESUME_FILE, weights_only=False)
    assert len(state["losses"]) == 2
    resumed, resumed_losses = _toy_fit(tmp_path / "b", 5)
    assert resumed_losses == losses
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a finished loop called again trains no more
    again, again_losses = _toy_fit(tmp_path / "a", 5, stop_after=0)
    assert again_losses == losses
    assert torch.equal(again[0].weight, whole[0].weight)


def _space_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    x[:20] = np.nan
    return pd.DataFrame({"x": x, "b": rng.integers(0, 2, 200),
                         "c": rng.choice(["u", "v", "w"], 200)})


def test_rank_gauss_space_is_monotone_and_flags_missing() -> None:
    frame = _space_frame()
    space = fit_space(frame, ["x", "b"], ["c"], n_quantiles=100)
    assert space.missing == [0] and space.categories == [["u", "v", "w"]]
    assert space.width == 2 + 1 + 4
    inputs = TabularInput(space)
    probe = pd.DataFrame({"x": [-3.0, -0.5, 0.0, 0.5, 3.0, np.nan], "b": [0, 1, 0, 1, 0, 1],
                          "c": ["u", "v", "w", "zz", None, "u"]})
    gauss, flags, codes = inputs.parts(*space.raw(probe))
    g = gauss[:, 0].numpy()
    assert np.all(np.diff(g[:5]) > 0) and abs(g[2]) < 0.2  # order kept, median near 0
    assert g[5] == 0.0 and flags[:, 0].tolist() == [0, 0, 0, 0, 0, 1]
    assert len(set(gauss[:, 1].tolist())) == 2  # a binary column: two values
    assert codes[:, 0].tolist() == [1, 2, 3, 0, 0, 1]  # unseen and missing: code 0


def test_swap_noise_takes_values_from_the_same_column() -> None:
    torch.manual_seed(0)
    n = 400
    gauss = torch.stack([torch.arange(n) * 1.0, -torch.arange(n) * 1.0], dim=1)
    flags = (torch.arange(n) % 2).float().view(-1, 1)  # the flag of column 1
    cat = torch.stack([torch.arange(n) % 7, torch.arange(n) % 5], dim=1)
    p_num, p_cat = torch.tensor([[0.0, 0.5]]), torch.tensor([[1.0, 0.0]])
    new_g, new_f, new_c = swap_noise(gauss, flags, cat, p_num, p_cat, torch.tensor([1]))
    assert torch.equal(new_g[:, 0], gauss[:, 0]) and torch.equal(new_c[:, 1], cat[:, 1])
    changed = (new_g[:, 1] != gauss[:, 1]).float().mean()
    assert 0.4 < changed < 0.6
    assert set(new_g[:, 1].tolist()) <= set(gauss[:, 1].tolist())  # same column's values
    rows = (-new_g[:, 1]).long()  # the row each value came from: its flag came along
    assert torch.equal(new_f[:, 0], flags[rows, 0])
    assert (new_c[:, 0] != cat[:, 0]).float().mean() > 0.7


@pytest.fixture(scope="module")
def tabular_data(tmp_path_factory: pytest.TempPathFactory) -> PretrainData:
    root = tmp_path_factory.mktemp("tab")
    comp = load_competition(CompetitionConfig(**make_competition(root, "tabular", "binary",
                                                                 n_train=96)["competition"]))
    frame = pd.concat([comp.train.drop(columns=["target"]), comp.test], ignore_index=True)
    return PretrainData(frame, comp, {"train": len(comp.train), "test": len(comp.test)})


@pytest.mark.parametrize("kind", ["dae", "vae"])
def test_tabular_objective_learns_and_exports(kind: str, tabular_data: PretrainData,
                                              tmp_path: Path) -> None:
    objective = OBJECTIVES.get(kind)
    cfg = objective.config(epochs=12, hidden=[32, 16], batch_size=32, lr=3e-3)
    record = objective.fit(cfg, tabular_data, tmp_path, torch.device("cpu"), 0)
    losses = record["losses"]
    assert len(losses) == 12 and losses[-1] < losses[0]
    width = 48 if kind == "dae" else cfg.latent
    assert record["feature_width"] == width
    assert objective.features is not None
    feats = objective.features(tmp_path, tabular_data.comp.test, torch.device("cpu"))
    assert feats.shape == (len(tabular_data.comp.test), width) and np.isfinite(feats).all()
    again = objective.features(tmp_path, tabular_data.comp.test, torch.device("cpu"))
    np.testing.assert_array_equal(feats, again)  # eval mode: no noise in the features


def test_dae_features_are_the_chosen_hidden_layers(tabular_data: PretrainData,
                                                   tmp_path: Path) -> None:
    cfg = DAEConfig(epochs=1, hidden=[8, 6, 4], feature_layers=[0, 2], swap_p=0.2,
                    swap_columns={"x1": 0.0}, gaussian_std=0.1)
    OBJECTIVES.get("dae").fit(cfg, tabular_data, tmp_path, torch.device("cpu"), 0)
    model, _ = load_tabular(tmp_path)
    num, cat = torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.long)
    hidden = model.hidden(model.inputs.vector(*model.inputs.parts(num, cat)))
    torch.testing.assert_close(model.features(num, cat), torch.cat([hidden[0], hidden[2]], 1))
    with pytest.raises(ValueError, match="feature_layers"):
        DAEConfig(hidden=[8], feature_layers=[1])


def test_vae_kl_term_is_weighted_by_beta(tabular_data: PretrainData) -> None:
    space = fit_space(tabular_data.frame, ["x1", "x2"], ["color"], 50)
    model = TabularVAE(space, VAEConfig(hidden=[8], latent=3))
    num, cat = space.raw(tabular_data.frame)
    losses = []
    for beta in (0.0, 1.0, 2.0):
        torch.manual_seed(0)
        with torch.no_grad():
            losses.append(float(model.elbo_loss(num, cat, beta)))
    kl = losses[1] - losses[0]
    assert kl > 0 and losses[2] - losses[0] == pytest.approx(2 * kl, rel=1e-4)


def test_network_encoder_matches_the_exported_features(tabular_data: PretrainData,
                                                       tmp_path: Path) -> None:
    """A fold's batch mapped back into the pretraining space gives the export's features."""
    cfg = DAEConfig(epochs=1, hidden=[8])
    OBJECTIVES.get("dae").fit(cfg, tabular_data, tmp_path, torch.device("cpu"), 0)
    comp = tabular_data.comp
    fold = TabularEncoder(comp.numeric_columns, comp.categorical_columns)
    fold.fit(comp.train.iloc[:60])  # fitted on part of the rows, as a fold is
    encoder = PretrainedTabular(tmp_path, fold, {"freeze": True}).eval()
    batch = {k: torch.from_numpy(v) for k, v in fold.transform(comp.train).items()}
    with torch.no_grad():
        net = encoder(batch).numpy()
    export = OBJECTIVES.get("dae").features(tmp_path, comp.train, torch.device("cpu"))
    np.testing.assert_allclose(net, export, atol=1e-4)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_a_frozen_encoder_stays_frozen_in_every_stage(tabular_data: PretrainData,
                                                     tmp_path: Path) -> None:
    """``params: {freeze: true}`` froze the DAE when it was built, but each training stage's
    freezing (``train.freeze``, empty by default) unfroze every parameter first, so the
    "frozen" encoder trained on. It now stays frozen (and in eval mode) in every stage; an
    encoder without the param follows ``train.freeze`` as before."""
    from pipeline.engine import apply_freeze

    OBJECTIVES.get("dae").fit(DAEConfig(epochs=1, hidden=[8]), tabular_data, tmp_path,
                              torch.device("cpu"), 0)
    comp = tabular_data.comp
    fold = TabularEncoder(comp.numeric_columns, comp.categorical_columns).fit(comp.train)
    model = nn.ModuleDict({"encoders": nn.ModuleList([
        PretrainedTabular(tmp_path, fold, {"freeze": True}),
        PretrainedTabular(tmp_path, fold, {})]), "head": nn.Linear(8, 1)})
    for paths in ([], ["head"]):
        frozen = apply_freeze(model, paths)
        assert not any(p.requires_grad for p in model["encoders"][0].parameters()), paths
        assert model["encoders"][0].model in frozen
        assert all(p.requires_grad for p in model["encoders"][1].parameters()), paths
    assert apply_freeze(model, ["encoders.1"])[1] is model["encoders"][1]


def test_fold_adapter_refuses_missing_columns(tabular_data: PretrainData) -> None:
    space = fit_space(tabular_data.frame, ["x1", "x2"], ["color"], 10)
    fold = TabularEncoder(["x1"], ["color"]).fit(tabular_data.frame)
    with pytest.raises(DataError, match="x2"):
        FoldAdapter(space, fold)


def test_skipgram_pairs_stay_inside_sequences() -> None:
    np.random.seed(0)
    centre, context = skipgram_pairs([np.array([0, 1, 2]), np.array([3, 4])], window=1)
    pairs = set(zip(centre.tolist(), context.tolist(), strict=True))
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}


def _cosine(v: np.ndarray, a: int, b: int) -> float:
    return float(v[a] @ v[b] / (np.linalg.norm(v[a]) * np.linalg.norm(v[b])))


def test_skipgram_places_co_occurring_tokens_together(tabular_data: PretrainData,
                                                      tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seqs = [" ".join(rng.choice(list("abcd") if i % 2 else list("wxyz"), 8)) for i in range(200)]
    data = PretrainData(pd.DataFrame({"pages": seqs}), tabular_data.comp, {"train": 200})
    cfg = SkipGramConfig(sequence_column="pages", dim=8, window=2, epochs=6, lr=0.05,
                         batch_size=256)
    record = OBJECTIVES.get("skipgram").fit(cfg, data, tmp_path, torch.device("cpu"), 0)
    assert record["vocabulary"] == 8 and record["losses"][-1] < record["losses"][0]
    saved = load_vectors(tmp_path)
    v, index = saved["vectors"].numpy(), {t: i for i, t in enumerate(saved["tokens"])}
    same = _cosine(v, index["a"], index["b"])
    other = _cosine(v, index["a"], index["w"])
    assert same > other + 0.5
    feats = embedding_features(tmp_path, pd.DataFrame({"pages": ["a b", "q"]}),
                               torch.device("cpu"))
    np.testing.assert_allclose(feats[0], v[[index["a"], index["b"]]].mean(0), rtol=1e-5)
    assert not feats[1].any()  # unseen tokens: zeros


def test_skipgram_over_events_gives_each_group_a_vector(tabular_data: PretrainData,
                                                        tmp_path: Path) -> None:
    events = pd.DataFrame({"user": [1, 1, 1, 2, 2, 2], "t": [3, 1, 2, 1, 2, 3],
                           "item": ["c", "a", "b", "x", "y", "z"]})
    data = PretrainData(events, tabular_data.comp, {"train": 6})
    cfg = SkipGramConfig(events={"group_column": "user", "order_column": "t",
                                 "token_column": "item"}, dim=4, epochs=1)
    OBJECTIVES.get("skipgram").fit(cfg, data, tmp_path, torch.device("cpu"), 0)
    saved = load_vectors(tmp_path)
    v, index = saved["vectors"].numpy(), {t: i for i, t in enumerate(saved["tokens"])}
    feats = embedding_features(tmp_path, pd.DataFrame({"user": [2, 9]}), torch.device("cpu"))
    np.testing.assert_allclose(feats[0], v[[index[t] for t in "xyz"]].mean(0), rtol=1e-5)
    assert not feats[1].any()
    with pytest.raises(ValueError, match="sequence_column"):
        SkipGramConfig()


def test_deepwalk_separates_two_cliques(tabular_data: PretrainData, tmp_path: Path) -> None:
    left = [(a, b) for a in range(5) for b in range(a + 1, 5)]
    right = [(a + 5, b + 5) for a, b in left]
    edges = pd.DataFrame(left + right + [(4, 5)], columns=["source", "target"])
    edges.to_csv(tmp_path / "edges.csv", index=False)
    cfg = DeepWalkConfig(edges=str(tmp_path / "edges.csv"), node_column="node", dim=8,
                         window=3, walks_per_node=20, walk_length=10, epochs=4, lr=0.05,
                         batch_size=512)
    out = tmp_path / "out"
    out.mkdir()
    OBJECTIVES.get("deepwalk").fit(cfg, PretrainData(pd.DataFrame(), tabular_data.comp, {}),
                                   out, torch.device("cpu"), 0)
    saved = load_vectors(out)
    v, index = saved["vectors"].numpy(), {t: i for i, t in enumerate(saved["tokens"])}
    within = np.mean([_cosine(v, index[str(a)], index[str(b)]) for a, b in left[:6]])
    across = np.mean([_cosine(v, index[str(a)], index[str(a + 5)]) for a in range(4)])
    assert within > across + 0.3
    fold = TabularEncoder([], ["node"]).fit(pd.DataFrame({"node": [0, 1, 7, 42]}))
    table = pretrained_embedding(out, fold, "node").weight.detach().numpy()
    # fold codes: 0 unseen, then "0", "1", "42", "7" (sorted as text); 42 is no node
    assert table.shape == (5, 8) and not table[0].any() and not table[3].any()
    np.testing.assert_allclose(table[4], v[index["7"]])


def test_space_round_trips_through_json(tabular_data: PretrainData) -> None:
    space = fit_space(tabular_data.frame, ["x1", "x2"], ["color"], 10)
    assert TabularSpace(**space.to_json()) == space

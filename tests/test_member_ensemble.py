"""Ensembles trained to differ (pipeline/engine/member_ensemble.py): the config, the penalties'
arithmetic, the member-mean output, and a run whose members land as run folders of their own."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from pipeline import blend, train
from pipeline.artifacts import read_json
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.engine.losses import build_loss
from pipeline.engine.member_ensemble import (
    EnsembleConfig,
    MemberEnsemble,
    build_members,
    combine,
    ensemble_loss,
    linear_cka,
    mean_pairwise_correlation,
    member_groups,
    member_paths,
    weight_similarity,
)
from pipeline.engine.plan import apply_freeze
from pipeline.errors import ConfigError
from pipeline.metrics import get_metric

pytestmark = pytest.mark.usefixtures("one_thread")


class Linear(nn.Module):
    """A member with pooled features, like CompetitionModel."""

    def __init__(self, n_in: int = 4, n_out: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(n_in, 8)
        self.head = nn.Linear(8, n_out)
        self.features: torch.Tensor | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.features = torch.tanh(self.body(batch["x"]))
        return self.head(self.features)


def test_lambda_is_spelt_lambda_and_one_member_is_the_plain_network(competition_factory):
    data = competition_factory("tabular", "binary")
    plain = build_config(data)
    data["train"]["ensemble"] = {"members": 3, "method": "ncl", "lambda": 0.3}
    cfg = build_config(data)
    assert cfg.train.ensemble is not None and cfg.train.ensemble.strength == 0.3
    dumped = cfg.to_dict()["train"]["ensemble"]
    assert dumped["lambda"] == 0.3 and "lam" not in dumped
    assert build_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg  # round trip
    assert cfg.train_hash() != plain.train_hash()
    # one member is the network itself: same config, same hash, so the same weights
    data["train"]["ensemble"] = {"members": 1, "method": "ncl"}
    one = build_config(data)
    assert one.train.ensemble is None and one.train_hash() == plain.train_hash()
    assert EnsembleConfig(method="weight_repulsion").space == "features"


@pytest.mark.parametrize(("ensemble", "extra", "says"), [
    ({"method": "independent", "lambda": 0.5}, {}, "must be 0"),
    ({"method": "ncl", "lambda": 1.5}, {}, "in [0, 1]"),
    ({"method": "ncl", "repel": "weights"}, {}, "'weight_repulsion' only"),
    ({"method": "ncl", "lamda": 0.5}, {}, "lamda"),
    ({"method": "ncl"}, {"consistency": {"method": "fixmatch"}}, "train.consistency"),
])
def test_bad_ensembles_are_refused_at_load(competition_factory, ensemble, extra, says):
    data = competition_factory("tabular", "binary")
    data["train"].update(ensemble=ensemble, **extra)
    with pytest.raises(ConfigError, match=r"ensemble") as err:
        build_config(data)
    assert says in str(err.value)


def test_a_scikit_learn_model_refuses_an_ensemble(competition_factory):
    data = competition_factory("tabular", "binary")
    data["model"] = {"encoders": [{"name": "sklearn:sklearn.linear_model.LogisticRegression"}]}
    data["train"]["ensemble"] = {"members": 2}
    with pytest.raises(ConfigError, match=r"'train\.ensemble' needs a network"):
        build_config(data)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_the_eval_output_predicts_the_members_mean(task):
    torch.manual_seed(0)
    stacked = torch.randn(5, 3, 4) * 4
    out = combine(stacked, task)
    if task == "multiclass":
        expected, got = stacked.softmax(dim=2).mean(dim=1), out.softmax(dim=1)
    elif task == "regression":
        expected, got = stacked.mean(dim=1), out
    else:
        expected, got = stacked.sigmoid().mean(dim=1), out.sigmoid()
    torch.testing.assert_close(got, expected)


def test_ncl_at_lambda_one_trains_the_ensemble_as_one_model():
    """Ambiguity decomposition: sum_i (f_i - y)^2 - (f_i - mean)^2 = M (mean - y)^2."""
    model = MemberEnsemble([Linear(n_out=2) for _ in range(3)], "regression")
    batch = {"x": torch.randn(6, 4), "target": torch.randn(6, 2)}
    outputs = model.train()(batch)
    mse = build_loss("mse", "regression")

    def at(lam: float) -> torch.Tensor:
        cfg = EnsembleConfig(members=3, method="ncl", **{"lambda": lam})
        return ensemble_loss(model, cfg, lambda m: build_loss("mse", "regression"))(
            outputs, batch)

    together = 3 * mse(outputs.mean(dim=1), batch)
    torch.testing.assert_close(at(1.0), together)
    alone = sum(mse(outputs[:, m], batch) for m in range(3))
    torch.testing.assert_close(at(0.0), alone)
    assert at(0.5) < alone  # disagreement is rewarded


def test_ncl_on_classes_rewards_probability_disagreement_and_scores_the_mean():
    model = MemberEnsemble([Linear() for _ in range(2)], "multiclass")
    batch = {"x": torch.randn(8, 4), "target": torch.randint(0, 3, (8,))}
    outputs = model.train()(batch)
    ce = build_loss("cross_entropy", "multiclass")
    cfg = EnsembleConfig(members=2, method="ncl", **{"lambda": 0.5})
    loss_fn = ensemble_loss(model, cfg, lambda m: build_loss("cross_entropy", "multiclass"))
    probs = outputs.softmax(dim=2)
    spread = ((probs - probs.mean(dim=1, keepdim=True)) ** 2).sum(dim=2).sum(dim=1).mean()
    expected = ce(outputs[:, 0], batch) + ce(outputs[:, 1], batch) - 0.5 * spread
    torch.testing.assert_close(loss_fn(outputs, batch), expected)
    # validation: the eval-mode output (the members' mean) through the task loss
    mean_out = model.eval()(batch)
    mean_probs = model.train()(batch).softmax(dim=2).mean(dim=1)
    torch.testing.assert_close(loss_fn.main(mean_out, batch),  # type: ignore[attr-defined]
                               nn.functional.nll_loss(mean_probs.log(), batch["target"]))


def test_linear_cka_sees_a_rotated_copy_as_the_same_features():
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6))
    assert linear_cka(x, 3 * x @ rotation).item() == pytest.approx(1.0, abs=1e-5)
    assert linear_cka(x, torch.randn(64, 6)).item() < 0.3


def test_weight_repulsion_pushes_identical_members_apart():
    torch.manual_seed(0)
    first = Linear()
    second = Linear()
    second.load_state_dict(first.state_dict())
    model = MemberEnsemble([first, second], "multiclass")
    assert weight_similarity(model).item() == pytest.approx(1.0)
    with torch.no_grad():  # exactly parallel weights are a stationary point: nudge them
        for p in second.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = weight_similarity(model).item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        weight_similarity(model).backward()
        optimizer.step()
    assert weight_similarity(model).item() < before - 0.05


def test_members_differ_and_share_the_config_paths():
    torch.manual_seed(3)
    cfg = EnsembleConfig(members=3)
    model = build_members(Linear, cfg, "multiclass", seed=7)
    assert isinstance(model, MemberEnsemble)
    torch.manual_seed(3)
    assert torch.equal(model.members[0].body.weight, Linear().body.weight)  # member 0: as alone
    assert not torch.equal(model.members[0].body.weight, model.members[1].body.weight)
    assert build_members(Linear, None, "multiclass", seed=7).__class__ is Linear
    assert member_paths(model, ["body"]) == ["members.0.body", "members.1.body",
                                             "members.2.body"]
    frozen = apply_freeze(model, member_paths(model, ["body"]))
    assert len(frozen) == 3
    assert not any(p.requires_grad for m in model.members for p in m.body.parameters())
    assert all(p.requires_grad for m in model.members for p in m.head.parameters())
    groups = member_groups(model, lambda m: [{"params": list(m.parameters())}])
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(
        id(p) for p in model.parameters())
    assert mean_pairwise_correlation([np.arange(5.0), np.arange(5.0) * 2]) == pytest.approx(1)


def _ensemble_run(competition_factory, name: str, **train_keys):
    data = competition_factory("image", "multiclass", n_train=36, n_test=8)
    data["name"] = name
    data["predict"] = {"tta": ["hflip"]}
    data["train"].update(epochs=2, ema={"decay": 0.5}, resume_every=0,
                         ensemble={"members": 2, "method": "ncl", "lambda": 0.5}, **train_keys)
    return build_config(data)


def test_a_run_writes_each_member_as_a_run_and_predicts_their_mean(competition_factory):
    cfg = _ensemble_run(competition_factory, "ens",
                        stages=[{"epochs": 1, "freeze": ["encoders.0"]}])
    score = train.run(cfg)
    comp = load_competition(cfg.competition)
    cols, run = comp.pred_columns, cfg.run_dir
    members = [run / "seed0" / f"member{m}" for m in range(2)]
    oofs = [pd.read_parquet(f / "oof.parquet") for f in members]
    tests = [pd.read_parquet(f / "test.parquet") for f in members]
    np.testing.assert_allclose(np.mean([o[cols] for o in oofs], axis=0),
                               pd.read_parquet(run / "oof.parquet")[cols], atol=1e-12)
    np.testing.assert_allclose(np.mean([t[cols] for t in tests], axis=0),
                               pd.read_parquet(run / "test.parquet")[cols], atol=1e-12)
    assert not np.allclose(oofs[0][cols], oofs[1][cols])  # two networks, not one twice
    scores = read_json(run / "scores.json")["scores"]
    metric = get_metric(cfg.competition.metric)
    assert scores["seed0/member1"] == pytest.approx(metric(comp.targets, oofs[1][cols]))
    assert scores["oof"] == pytest.approx(score)
    vouched = read_json(run / "seed0" / "fold0" / "predictions.json")["files"]
    assert {"member0_oof.parquet", "member1_test.parquet"} <= set(vouched)
    # the blend takes the members like any run
    loaded = blend.load_members(members)
    assert loaded.oof.shape == (2, len(comp.train), len(cols))
    best = torch.load(run / "seed0" / "fold0" / "best.pt", weights_only=False)["model"]
    assert any(k.startswith("members.1.encoders.0.") for k in best)


@pytest.mark.parametrize(("modality", "repel"), [("tabular", "features"), ("text", "weights")])
def test_weight_repulsion_trains_a_regression_ensemble(competition_factory, modality, repel):
    data = competition_factory(modality, "regression")
    data["train"].update(epochs=2, swa={"start_epoch": 2},
                         ensemble={"members": 3, "method": "weight_repulsion", "lambda": 0.5,
                                   "repel": repel})
    cfg = build_config(data)
    score = train.run(cfg)
    assert math.isfinite(score)
    epochs = read_json(cfg.run_dir / "seed0" / "fold0" / "metrics.json")["epochs"]
    trained = [e for e in epochs if not e.get("swa")]
    assert len(trained) == 2 and epochs[-1]["swa"]  # SWA averaged the whole ensemble
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["valid_loss"])
               for e in trained)
    assert math.isfinite(epochs[-1]["score"])
    oofs = [pd.read_parquet(cfg.run_dir / "seed0" / f"member{m}" / "oof.parquet")["y"]
            for m in range(3)]
    assert mean_pairwise_correlation([o.to_numpy() for o in oofs]) < 1 - 1e-6


def test_a_killed_ensemble_resumes_to_the_same_weights(competition_factory,
                                                       train_killed_in_epoch):
    def run(name: str, crash_in_epoch: int | None) -> dict[str, torch.Tensor]:
        cfg = _ensemble_run(competition_factory, name)
        if crash_in_epoch is not None:
            train_killed_in_epoch(cfg, crash_in_epoch)
            assert (cfg.run_dir / "seed0" / "fold0" / "last.pt").is_file()
        train.run(cfg)
        return torch.load(cfg.run_dir / "seed0" / "fold0" / "best.pt",
                          weights_only=False)["model"]

    whole, resumed = run("whole", None), run("resumed", 2)
    assert whole.keys() == resumed.keys()
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
    assert math.isfinite(float(next(iter(whole.values())).float().sum()))


def test_an_ensemble_feeds_pseudo_labels_and_trains_on_them_adversarially(competition_factory):
    data = competition_factory("tabular", "multiclass", n_train=60, n_test=30)
    data["train"]["ensemble"] = {"members": 2, "method": "ncl"}
    source = build_config({**data, "name": "round0"})
    train.run(source)
    # soft labels (weighted rows) from the ensemble's mean; FGM on the members' embeddings
    round1 = build_config({**data, "name": "round1", "train": {
        **data["train"], "adversarial": {"method": "fgm", "epsilon": 0.1}},
        "pseudo": {"source": str(source.run_dir), "labels": "soft", "weight": 0.5}})
    score = train.run(round1)
    assert math.isfinite(score)
    labels = pd.read_parquet(round1.run_dir / "pseudo" / "fold0.parquet").set_index("id")
    per_fold = pd.read_parquet(source.run_dir / "test_folds.parquet")
    made_by = per_fold[per_fold["fold"] == 0].set_index("id").loc[labels.index, ["0", "1", "2"]]
    np.testing.assert_allclose(labels[["0", "1", "2"]].to_numpy(), made_by.to_numpy())
    members = [pd.read_parquet(round1.run_dir / "seed0" / f"member{m}" / "test.parquet")
               for m in range(2)]
    np.testing.assert_allclose(np.mean([m[["0", "1", "2"]] for m in members], axis=0),
                               pd.read_parquet(round1.run_dir / "test.parquet")[["0", "1", "2"]])

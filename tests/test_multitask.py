"""Multi-task heads (pipeline/models/multitask.py): auxiliary train-only columns and split
targets, each with its own head and loss weight, shared hard, soft or through routed experts;
their losses reach the training loss, never the artifacts; no config changes nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline import train
from pipeline.competition import CompetitionConfig, load_competition
from pipeline.config import build_config
from pipeline.data.datasets import CompetitionDataset
from pipeline.errors import ConfigError, DataError
from pipeline.models.multitask import (
    MultitaskConfig,
    MultitaskHead,
    TaskSpec,
    task_specs,
    tower_distance,
    with_task_losses,
    with_task_plans,
)
from pipeline.models.network import build_model, model_inputs

AUX = [{"column": "aux_r", "weight": 0.5}, {"column": "aux_b", "task": "binary"},
       {"column": "aux_m", "task": "multiclass", "weight": 0.2}]


def _with_aux(cfg: dict[str, Any], sharing: str | None = "hard") -> dict[str, Any]:
    """Add three auxiliary columns (regression with gaps, binary, multiclass) to train.csv."""
    path = Path(cfg["competition"]["dir"]) / "train.csv"
    frame = pd.read_csv(path)
    rng = np.random.default_rng(1)
    frame["aux_r"] = frame["x1"] * 3 + rng.normal(size=len(frame))
    frame.loc[::4, "aux_r"] = np.nan
    frame["aux_b"] = np.where(frame["x1"] > frame["x1"].median(), "hi", "lo")
    frame["aux_m"] = rng.integers(0, 3, size=len(frame))
    frame.to_csv(path, index=False)
    cfg["competition"]["aux_targets"] = AUX
    if sharing is not None:
        cfg["model"]["multitask"] = {"sharing": sharing, "hidden": 8}
    return cfg


@pytest.mark.parametrize("sharing", ["hard", "soft", "moe"])
def test_aux_targets_train_end_to_end_and_never_reach_the_artifacts(
        competition_factory, one_thread, sharing):
    cfg = build_config(_with_aux(competition_factory("tabular", "regression"), sharing))
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    test = pd.read_parquet(cfg.run_dir / "test.parquet")
    assert list(oof.columns) == ["id", "fold", "y"] and list(test.columns) == ["id", "y"]
    assert np.isfinite(oof["y"]).all()
    best = cfg.run_dir / "seed0" / "fold0" / "best.pt"
    state = torch.load(best, weights_only=False)["model"]
    # one output layer per task: the target and the three auxiliary columns (3 classes)
    widths = [state[f"head.outputs.{i}.weight"].shape[0] for i in range(4)]
    assert widths == [1, 1, 1, 3]
    assert ("head.routers.3.weight" in state) == (sharing == "moe")


def test_aux_columns_are_never_features(competition_factory):
    cfg = build_config(_with_aux(competition_factory("tabular", "regression")))
    comp = load_competition(cfg.competition)
    assert comp.feature_columns == ["x1", "x2", "color"]
    assert comp.train_only_columns == []  # not refused as train-only columns either


def test_bad_aux_targets_are_refused_with_one_line(competition_factory):
    raw = _with_aux(competition_factory("tabular", "regression"))
    with pytest.raises(ValueError, match=r"'aux_targets' column\(s\) \['x1'\] are also in "
                                         "'feature_columns'"):
        CompetitionConfig(**{**raw["competition"], "feature_columns": ["x1", "x2"],
                             "aux_targets": [{"column": "x1"}]})
    with pytest.raises(DataError, match=r"\['nope'\] named by 'competition.aux_targets'"):
        load_competition(CompetitionConfig(**{**raw["competition"],
                                              "aux_targets": [{"column": "nope"}]}))
    path = Path(raw["competition"]["dir"]) / "train.csv"
    pd.read_csv(path).assign(one=1).to_csv(path, index=False)
    bad = {"aux_m": ("binary", r"must hold 2 distinct values. Got 3: \['0', '1', '2'\]"),
           "aux_b": ("regression", r"must be numeric. Got \w+ values"),
           "one": ("multiclass", r"must hold at least 2 distinct values. Got 1: \['1'\]")}
    for column, (task, message) in bad.items():
        with pytest.raises(DataError, match=rf"'aux_targets' column '{column}' \(task "
                                            rf"'{task}'\) {message}"):
            load_competition(CompetitionConfig(**{**raw["competition"], "aux_targets": [
                {"column": column, "task": task}]}))


def test_target_weights_are_checked_against_targets_and_loss(competition_factory):
    raw = competition_factory("tabular", "multilabel")
    raw["model"]["multitask"] = {"target_weights": [1.0]}
    with pytest.raises(ConfigError, match="one weight per target column \\(2\\)"):
        build_config(raw)
    raw["model"]["multitask"] = {"target_weights": [1.0, 2.0]}
    raw["train"]["loss"] = {"name": "bce", "params": {"pos_weight": [1.0, 3.0]}}
    with pytest.raises(ConfigError, match=r"loss parameter\(s\) \['pos_weight'\] listed"):
        build_config(raw)
    del raw["train"]["loss"]
    raw["model"]["head"] = {"hidden": 32}
    with pytest.raises(ConfigError, match=r"'model\.head\.hidden' has no effect"):
        build_config(raw)


def _head(sharing: str, **kw: Any) -> MultitaskHead:
    tasks = [TaskSpec("target", "binary", 1, 1.0, True, -1),
             TaskSpec("r", "regression", 1, 0.5, False, 0),
             TaskSpec("m", "multiclass", 3, 0.2, False, 1)]
    return MultitaskHead(6, tasks, MultitaskConfig(sharing=sharing, hidden=4, dropout=0.0, **kw))


class _Net(torch.nn.Module):
    def __init__(self, head: MultitaskHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["x"])


def test_the_training_loss_adds_each_aux_loss_with_its_weight_and_skips_missing_labels():
    torch.manual_seed(0)
    net = _Net(_head("hard")).train()
    batch = {"x": torch.randn(5, 6), "target": torch.rand(5, 1).round(),
             "aux": torch.tensor([[0.3, 2.0], [float("nan"), 0.0], [-1.0, 1.0],
                                  [0.5, float("nan")], [1.5, 2.0]])}

    def main(outputs: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, b["target"])

    loss_fn = with_task_losses(main, net)
    outputs = net(batch)
    total = loss_fn(outputs, batch)
    r_out, m_out = net.head.aux_outputs
    known_r = [0, 2, 3, 4]
    expected = (main(outputs, batch)
                + 0.5 * F.mse_loss(r_out[known_r, 0], batch["aux"][known_r, 0])
                + 0.2 * F.cross_entropy(m_out[[0, 1, 2, 4]], torch.tensor([2, 0, 1, 2])))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss_fn.main is main  # validation scores the main loss alone
    total.backward()
    assert net.head.outputs[2].weight.grad.abs().sum() > 0  # the aux head learns


def test_soft_sharing_penalises_the_distance_between_corresponding_tower_weights():
    head = _head("soft", soft_penalty=0.1).train()
    with torch.no_grad():
        for tower in head.towers:
            for p in tower.parameters():
                p.copy_(torch.ones_like(p))
    head(torch.randn(2, 6))
    assert head.penalty.item() == 0.0  # equal towers: nothing to pull together
    with torch.no_grad():
        head.towers[0][1].bias.add_(3.0)  # 4 values, each 3 away in one of 3 towers
    head(torch.randn(2, 6))
    # mean of (3, 0, 0) is 1: squared distances 4 + 1 + 1 per value
    assert head.penalty.item() == pytest.approx(0.1 * 4 * 6)
    assert tower_distance(list(head.towers)[:1]).item() == 0.0
    # hard sharing: the same towers, no penalty
    hard = _head("hard").train()
    hard(torch.randn(2, 6))
    assert hard.penalty is None


def test_moe_routes_each_row_to_its_top_expert_and_balances_the_load():
    torch.manual_seed(0)
    head = _head("moe", experts=3, balance_alpha=0.01).eval()
    x = torch.randn(8, 6)
    head(x)
    expert_out = torch.stack([e(x) for e in head.experts], dim=1)
    for router, chosen in zip(head.routers, head.routed, strict=True):
        probs = router(x).softmax(dim=1)
        assert torch.equal(chosen, probs.argmax(dim=1))
    # the first task's output is its head on gate x chosen expert (top-1, Switch)
    probs = head.routers[0](x).softmax(dim=1)
    gate, chosen = probs.max(dim=1)
    hidden = expert_out[torch.arange(8), chosen] * gate[:, None]
    torch.testing.assert_close(head(x), head.outputs[0](hidden))
    # alpha * N * sum_i f_i P_i, averaged over the three task routers
    expected = 0.0
    for router in head.routers:
        p = router(x).softmax(dim=1)
        f = F.one_hot(p.argmax(dim=1), 3).float().mean(dim=0)
        expected += 0.01 * 3 * (f * p.mean(dim=0)).sum().item() / 3
    assert head.penalty.item() == pytest.approx(expected, rel=1e-5)
    # a perfectly balanced, uniform router costs exactly alpha
    with torch.no_grad():
        for router in head.routers:
            router.weight.zero_()
            router.bias.zero_()
    head(x)
    assert head.penalty.item() == pytest.approx(0.01 * 3 * (1 / 3), rel=1e-5)


def test_split_targets_give_each_column_a_head_and_its_weight(competition_factory):
    raw = competition_factory("tabular", "multilabel")
    raw["model"]["multitask"] = {"target_weights": [2.0, 0.5], "hidden": 8}
    cfg = build_config(raw)
    comp = load_competition(cfg.competition)
    tasks = task_specs(comp, cfg.model.multitask)
    assert [(t.name, t.width, t.weight, t.index) for t in tasks] == [("a", 1, 2.0, 0),
                                                                     ("b", 1, 0.5, 1)]
    from pipeline.jobs.inputs import fold_prep

    prep = fold_prep(cfg.run_dir / "prep", comp, np.arange(20))
    model = build_model(cfg.model, comp.n_outputs, prep.tabular, tasks).train()
    inputs = model_inputs(comp, cfg.model, None, prep.tabular)
    ds = CompetitionDataset(comp.train.iloc[:8], inputs, comp.targets[:8].astype(np.float32))
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ds[0]}

    def bce(outputs: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, b["target"])

    out = model(batch)
    assert out.shape == (8, 2)
    per_col = [F.binary_cross_entropy_with_logits(out[:, j], batch["target"][:, j])
               for j in range(2)]
    total = with_task_losses(bce, model)(out, batch)
    assert total.item() == pytest.approx(((2.0 * per_col[0] + 0.5 * per_col[1]) / 2).item())


@dataclasses.dataclass
class _Plan:
    loss_fn: Any


def test_without_multitask_config_nothing_changes(competition_factory):
    """No 'model.multitask' and no 'competition.aux_targets': the config hash, the model's
    weights, the batches and the loss are exactly those of the plain network."""
    raw = competition_factory("tabular", "regression")
    cfg = build_config(raw)
    dumped = cfg.model_dump(exclude_defaults=True)
    assert "multitask" not in dumped["model"] and "aux_targets" not in dumped["competition"]
    comp = load_competition(cfg.competition)
    assert task_specs(comp, cfg.model.multitask) is None
    from pipeline.jobs.inputs import fold_prep
    from pipeline.models.network import CompetitionModel

    prep = fold_prep(cfg.run_dir / "prep", comp, np.arange(20))
    torch.manual_seed(3)
    model = build_model(cfg.model, comp.n_outputs, prep.tabular, None)
    assert isinstance(model.head, torch.nn.Sequential) and type(model) is CompetitionModel
    torch.manual_seed(3)
    again = build_model(cfg.model, comp.n_outputs, prep.tabular)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)
    inputs = model_inputs(comp, cfg.model, None, prep.tabular)
    assert inputs.aux is None and inputs.row_columns == []
    ds = CompetitionDataset(comp.train, inputs, comp.targets.astype(np.float32))
    assert set(ds[0]) == {"num", "cat", "target"} and "aux" not in ds.tensors()

    def fn(outputs: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return outputs.sum()

    assert with_task_losses(fn, model) is fn
    assert with_task_plans([_Plan(fn)], model)[0].loss_fn is fn  # each stage's loss kept


def test_aux_rows_batch_through_the_memory_loader_and_pseudo_rows_get_nan(
        competition_factory):
    cfg = build_config(_with_aux(competition_factory("tabular", "regression")))
    comp = load_competition(cfg.competition)
    from pipeline.data.memory_loader import build_fold_loader
    from pipeline.jobs.inputs import fold_prep

    prep = fold_prep(cfg.run_dir / "prep", comp, np.arange(20))
    inputs = model_inputs(comp, cfg.model, None, prep.tabular)
    y = comp.targets.astype(np.float32)
    ds = CompetitionDataset(comp.train, inputs, y)
    streamed = next(iter(build_fold_loader(ds, 48, False, 0, None, "stream")))
    held = next(iter(build_fold_loader(ds, 48, False, 0, None, "memory")))
    torch.testing.assert_close(streamed["aux"], held["aux"], equal_nan=True)
    aux = streamed["aux"].numpy()
    raw = comp.train["aux_r"].to_numpy()
    np.testing.assert_allclose(aux[:, 0], (raw - np.nanmean(raw)) / np.nanstd(raw, ddof=1),
                               rtol=1e-5)
    assert np.isnan(aux[::4, 0]).all()
    assert set(np.unique(aux[:, 1])) == {0.0, 1.0} and set(np.unique(aux[:, 2])) == {0, 1, 2}
    test_rows = CompetitionDataset(comp.test, inputs, np.zeros((len(comp.test), 1), np.float32))
    assert np.isnan(test_rows.tensors()["aux"].numpy()).all()  # pseudo rows: no aux labels
    assert "aux" not in CompetitionDataset(comp.test, inputs)[0]  # prediction: no labels


def test_member_ensembles_add_every_members_aux_losses():
    torch.manual_seed(0)
    ensemble = torch.nn.Module()
    ensemble.members = torch.nn.ModuleList([_Net(_head("soft")), _Net(_head("soft"))])
    ensemble.train()
    batch = {"x": torch.randn(4, 6), "target": torch.ones(4, 1),
             "aux": torch.tensor([[0.1, 0.0], [0.2, 1.0], [0.3, 2.0], [0.4, 0.0]])}
    outputs = torch.stack([m(batch) for m in ensemble.members], dim=1)  # rows x M x 1

    def zero(out: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return out.sum() * 0.0

    total = with_task_losses(zero, ensemble)(outputs, batch)
    expected = sum(0.5 * F.mse_loss(m.head.aux_outputs[0][:, 0], batch["aux"][:, 0])
                   + 0.2 * F.cross_entropy(m.head.aux_outputs[1], batch["aux"][:, 1].long())
                   + m.head.penalty for m in ensemble.members)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_head_is_copied_mid_step_without_its_last_pass():
    """EMA, SWA and consistency teachers deepcopy the model after forward passes."""
    import copy

    head = _head("moe").train()
    head(torch.randn(3, 6, requires_grad=True))
    assert head.aux_outputs and head.penalty is not None
    clone = copy.deepcopy(head)
    assert clone.aux_outputs == [] and clone.penalty is None and clone.routed == []
    assert head.aux_outputs  # the original keeps its pass for the loss
    for a, b in zip(head.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b)

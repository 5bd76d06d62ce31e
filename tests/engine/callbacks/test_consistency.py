"""pipeline/engine/callbacks/consistency.py: the Consistency callback (its unlabelled batches per
epoch, the ramp of lambda_u, the start epoch, the logged unlabelled_loss and mask rate), the
views of the unlabelled rows for every CONSISTENCY method, and full runs (every method on every
modality, a resumed run)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import train
from pipeline.artifacts import read_json
from pipeline.competition import load_competition
from pipeline.config import build_config
from pipeline.data import AugmentConfig, CompetitionDataset, TabularEncoder, collate, view_of
from pipeline.data.augment import TabularNoiseConfig
from pipeline.data.datasets import ModelInputs, ViewsDataset
from pipeline.engine.callbacks import ConsistencyConfig, consistency_methods
from pipeline.engine.callbacks.consistency import (
    CONSISTENCY,
    Consistency,
    build_consistency,
    unlabelled_views,
)
from pipeline.engine.callbacks.consistency_methods import Step
from pipeline.engine.recipe import build_callbacks
from pipeline.engine.trainer import FitHistory
from pipeline.models import build_tokenizer, model_inputs

# tiny models and runs: one torch thread (tests/engine/conftest.py) is several times faster
# on a busy machine, where extra threads only spin-wait
pytestmark = pytest.mark.usefixtures("one_thread")
N_ROWS = 10  # unlabelled rows of the callback tests


def _rows(n: int = N_ROWS) -> CompetitionDataset:
    """Unlabelled tabular rows whose column 'a' is the row number (to tell rows apart)."""
    frame = pd.DataFrame({"a": np.arange(n, dtype=float), "c": ["x", "y"] * (n // 2)})
    tab = TabularEncoder(["a"], ["c"]).fit(frame)
    return CompetitionDataset(frame, ModelInputs(tabular=tab))


class Recorder:
    """A method that records what the callback hands it: the unlabelled rows and the weight;
    its k-th call reports loss k and trusted fraction k / 10."""

    def __init__(self, dataset: CompetitionDataset) -> None:
        # the encoded 'a' of each row, back to its row number
        self.row_of = {dataset[i]["num"][0].item(): i for i in range(len(dataset))}
        self.rows: list[list[int]] = []
        self.weights: list[float] = []

    def loss(self, model, batch, unlabelled, loss_fn, weight):
        num = view_of(unlabelled, "clean")["num"][:, 0]
        self.rows.append([self.row_of[v] for v in num.tolist()])
        self.weights.append(weight)
        k = float(len(self.weights))
        return torch.tensor(k), Step(torch.tensor(k), torch.tensor(k / 10))


def _callback(cfg: ConsistencyConfig, start_epoch: int = 1,
              seed: int = 5) -> tuple[Consistency, Recorder]:
    dataset = _rows()
    recorder = Recorder(dataset)
    views = ViewsDataset({"clean": dataset})
    return Consistency(recorder, views, cfg, start_epoch, seed), recorder  # type: ignore[arg-type]


def _trainer(batch_size: int = 2, n_batches: int = 4, epochs: int = 4) -> SimpleNamespace:
    """What the callback reads of a trainer: epochs, train loader, device (and how batches
    reach it), model, history."""
    loader = torch.utils.data.DataLoader(range(batch_size * n_batches), batch_size=batch_size)
    return SimpleNamespace(epoch=0, total_epochs=epochs, train_loader=loader, model=None, desc="",
                           history=FitHistory(), _to_device=lambda batch: batch,
                           accelerator=SimpleNamespace(device=torch.device("cpu")))


def _run_epoch(callback: Consistency, trainer: SimpleNamespace, epoch: int) -> list:
    """The callback's part of one training epoch; what each step's loss was."""
    trainer.epoch = epoch
    callback.on_epoch_start(trainer)  # type: ignore[arg-type]
    losses = [callback.training_loss(trainer, {}, None)  # type: ignore[arg-type]
              for _ in range(len(trainer.train_loader))]
    trainer.history.epochs.append({"epoch": epoch + 1})
    callback.on_epoch_end(trainer)  # type: ignore[arg-type]
    return losses


def test_each_epoch_draws_its_unlabelled_batches_from_its_own_seed():
    cfg = ConsistencyConfig(method="uda", ratio=2)
    callback, recorder = _callback(cfg)
    trainer = _trainer(batch_size=2, n_batches=4)
    _run_epoch(callback, trainer, 0)
    sizes = [len(r) for r in recorder.rows]
    # ratio x the labelled batch size (4) per step; 10 rows give 4 + 4 + 2, then a new pass
    assert sizes == [4, 4, 2, 4]
    first_pass = sorted(r for rows in recorder.rows[:3] for r in rows)
    assert first_pass == list(range(N_ROWS))  # every row once before any row twice
    epoch0 = recorder.rows
    # a fresh callback (a resumed run) sees the same batches in the same epoch ...
    again, again_recorder = _callback(cfg)
    _run_epoch(again, _trainer(2, 4), 0)
    assert again_recorder.rows == epoch0
    # ... and the next epoch reshuffles
    _run_epoch(again, _trainer(2, 4), 1)
    assert again_recorder.rows[4:] != epoch0
    # a batch never holds more rows than there are
    small, small_recorder = _callback(ConsistencyConfig(method="uda", ratio=8))
    _run_epoch(small, _trainer(2, 2), 0)
    assert [len(r) for r in small_recorder.rows] == [N_ROWS, N_ROWS]


def test_the_weight_ramps_up_linearly_over_ramp_epochs_from_the_start_epoch():
    cfg = ConsistencyConfig(method="uda", weight=2.0, ramp_epochs=1.5)
    callback, recorder = _callback(cfg, start_epoch=2)
    trainer = _trainer(batch_size=2, n_batches=4)
    assert _run_epoch(callback, trainer, 0) == [None] * 4  # off before the start epoch
    assert recorder.weights == []
    _run_epoch(callback, trainer, 1)
    _run_epoch(callback, trainer, 2)
    # step s of the e-th active epoch has done e + s/4 epochs of the 1.5 of the ramp
    expected = [2.0 * min(1.0, (e + s / 4) / 1.5) for e in (0, 1) for s in range(4)]
    assert recorder.weights == pytest.approx(expected)
    flat, flat_recorder = _callback(ConsistencyConfig(method="mixmatch", ramp_epochs=0))
    _run_epoch(flat, _trainer(2, 4), 0)
    assert flat_recorder.weights == [75.0] * 4  # no ramp: mixmatch's full weight at once


@pytest.mark.parametrize("name", CONSISTENCY.list())
def test_the_default_ramp_is_the_methods_fraction_of_its_active_epochs(name):
    method = CONSISTENCY.get(name)
    cfg = ConsistencyConfig(method=name)
    full = cfg.resolved("weight")
    callback, recorder = _callback(cfg, start_epoch=2)
    trainer = _trainer(batch_size=2, n_batches=4, epochs=5)  # active in epochs 2..5: four
    for epoch in range(5):
        _run_epoch(callback, trainer, epoch)
    ramp = method.ramp_fraction * 4
    done = [e + s / 4 for e in range(4) for s in range(4)]
    expected = [full * min(1.0, d / ramp) if ramp else full for d in done]
    assert recorder.weights == pytest.approx(expected)
    assert recorder.weights[-1] == full  # the full weight is reached within the run


def test_epoch_end_logs_the_mean_unlabelled_loss_and_mask_rate_once_active():
    callback, _ = _callback(ConsistencyConfig(method="fixmatch"), start_epoch=2)
    trainer = _trainer(batch_size=2, n_batches=4)
    _run_epoch(callback, trainer, 0)
    assert trainer.history.epochs[0] == {"epoch": 1}  # nothing logged before the start
    losses = _run_epoch(callback, trainer, 1)
    assert [loss.item() for loss in losses] == [1.0, 2.0, 3.0, 4.0]
    logged = trainer.history.epochs[1]
    assert logged["unlabelled_loss"] == pytest.approx(2.5)  # the mean of the step losses
    assert logged["unlabelled_mask_rate"] == pytest.approx(0.25)
    _run_epoch(callback, trainer, 2)  # each epoch's mean is its own
    assert trainer.history.epochs[2]["unlabelled_loss"] == pytest.approx(6.5)


@pytest.mark.parametrize("name", CONSISTENCY.list())
def test_every_method_reads_its_views_of_the_unlabelled_rows(name):
    dataset = _rows()
    cfg = ConsistencyConfig(method=name)
    weak = AugmentConfig(tabular=TabularNoiseConfig(gaussian=0.5))  # train.augment
    callback = build_consistency(cfg, "multiclass", dataset, weak, ["mlp"], 3, start_epoch=2,
                                 seed=0)
    assert callback.start_epoch == 2
    assert not callback.method.image_only  # pooled features are mixed for a tabular model
    kinds = CONSISTENCY.get(name).view_kinds(cfg)
    assert callback.method.views == list(kinds)
    views = callback.dataset
    views.set_epoch(0)
    batch = collate([views[i] for i in range(len(views))])
    assert set(batch) == {f"{v}/{k}" for v in kinds for k in ("num", "cat")}
    clean = collate([dataset[i] for i in range(len(dataset))])
    weak_rows = []
    for view, kind in kinds.items():
        augment = views.views[view].augment
        rows = view_of(batch, view)["num"]
        if kind == "clean":
            assert augment is None and torch.equal(rows, clean["num"])
        elif kind == "weak":
            assert augment == weak and not torch.equal(rows, clean["num"])
            weak_rows.append(rows)
        else:
            assert augment is not None
            assert (augment.tabular, augment.text) == (cfg.strong.tabular, cfg.strong.text)
    # several weak views (mixmatch's K) each draw their own noise
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(weak_rows))


def _image_views(competition_factory, method: str, augment: dict | None = None):
    data = competition_factory("image", "multiclass", n_train=8, n_test=6)
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    inputs = model_inputs(comp, cfg.model, None, None)
    dataset = CompetitionDataset(comp.test, inputs)
    weak = AugmentConfig.model_validate(augment) if augment else None
    return unlabelled_views(dataset, method, ConsistencyConfig(method=method), weak)


def test_fixmatch_views_are_weak_and_strong_images(competition_factory):
    views = _image_views(competition_factory, "fixmatch")
    views.set_epoch(3)
    item = views[0]
    assert set(item) == {"weak/image", "strong/image"}
    clean = views.views["weak"][0]["image"]  # no train.augment: the weak view is the row
    assert torch.equal(item["weak/image"], clean)
    assert not torch.equal(item["strong/image"], clean)


def test_mixmatch_views_draw_their_own_augmentations(competition_factory):
    shift = {"name": "Affine", "translate_percent": (-0.2, 0.2), "p": 1.0}
    views = _image_views(competition_factory, "mixmatch", {"image": [shift]})
    views.set_epoch(0)
    items = [views[i] for i in range(len(views))]
    assert set(items[0]) == {"weak0/image", "weak1/image"}
    assert any(not torch.equal(it["weak0/image"], it["weak1/image"]) for it in items)
    views.set_epoch(0)  # the same epoch seed gives the same draws (resume)
    again = [views[i] for i in range(len(views))]
    assert all(torch.equal(a["weak0/image"], b["weak0/image"])
               for a, b in zip(items, again, strict=True))


def test_text_strong_view_is_token_noise(competition_factory):
    data = competition_factory("text", "binary", n_train=8, n_test=20)
    cfg = build_config(data)
    comp = load_competition(cfg.competition)
    inputs = model_inputs(comp, cfg.model, build_tokenizer(cfg.model), None)
    views = unlabelled_views(CompetitionDataset(comp.test, inputs), "uda",
                             ConsistencyConfig(method="uda"), None)
    views.set_epoch(0)
    items = [views[i] for i in range(len(views))]
    changed = [not torch.equal(it["clean/input_ids"], it["strong/input_ids"]) for it in items]
    assert any(changed)
    collated = collate(items)  # each view padded to its own longest row
    for name in ("clean", "strong"):
        ids = view_of(collated, name)["input_ids"]
        assert ids.shape == (len(items), max(len(it[f"{name}/input_ids"]) for it in items))


def test_start_stage_resolves_to_the_first_epoch_of_that_stage(competition_factory):
    data = competition_factory("image", "binary")
    data["train"].update(epochs=2, stages=[{"epochs": 3}, {"epochs": 1}],
                         adversarial={"method": "fast_fgsm", "start_stage": 3})
    cfg = build_config(data)
    assert cfg.train.first_epoch(None, 3) == 6
    assert cfg.train.first_epoch(None, 2) == 3
    assert cfg.train.first_epoch(4, None) == 4
    callbacks = build_callbacks(cfg.train, [e.kind for e in cfg.model.encoders], True)
    assert callbacks[0].start_epoch == 6  # type: ignore[attr-defined]


@pytest.mark.parametrize(("modality", "task", "method"), [
    ("image", "multiclass", "fixmatch"), ("text", "binary", "fixmatch"),
    ("tabular", "multilabel", "fixmatch"),
    ("image", "binary", "uda"), ("text", "multiclass", "uda"), ("tabular", "regression", "uda"),
    ("image", "multiclass", "mixmatch"), ("text", "binary", "mixmatch"),
    ("tabular", "regression", "mixmatch"),
    # one forward over the labelled and strong rows (images; text's embedding noise keeps two)
    ("image", "multiclass", "fixmatch joint"), ("text", "multiclass", "uda joint"),
])
def test_each_method_trains_every_modality(competition_factory, monkeypatch, modality, task,
                                           method):
    data = competition_factory(modality, task, n_train=24, n_test=20)
    method, *joint = method.split()
    stacked: list[bool] = []  # whether each joint pass found inputs that stack
    stack = consistency_methods.joint_inputs

    def spy(*args):
        inputs = stack(*args)
        stacked.append(inputs is not None)
        return inputs

    monkeypatch.setattr(consistency_methods, "joint_inputs", spy)
    cons = {"method": method, "start_epoch": 2, "ratio": 2, **({"joint_pass": True} if joint
                                                               else {})}
    if method != "mixmatch":
        cons["threshold"] = 0.5
    data["train"].update(epochs=2, batch_size=8, consistency=cons)
    if modality == "image":
        data["model"]["image_size"] = 16
        data["train"]["augment"] = {"image": [{"name": "HorizontalFlip", "p": 0.5}]}
    cfg = build_config(data)
    train.run(cfg)
    oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    values = oof.drop(columns=["id", "fold"]).to_numpy(dtype=np.float64)
    assert values.size and np.isfinite(values).all()
    history = read_json(cfg.run_dir / "seed0" / "fold0" / "metrics.json")["epochs"]
    assert "unlabelled_loss" not in history[0]  # off before start_epoch
    assert math.isfinite(history[1]["unlabelled_loss"])
    assert 0.0 <= history[1]["unlabelled_mask_rate"] <= 1.0
    if modality == "image" and joint:  # a labelled batch and its strong rows stack
        assert stacked and all(stacked)
    else:  # not asked for, or text under its embedding noise: two passes
        assert not any(stacked)


def test_a_resumed_run_repeats_the_unlabelled_batches(competition_factory,
                                                       train_killed_in_epoch):
    def run(name: str, crash_in_epoch: int | None) -> np.ndarray:
        """Each epoch's training and unlabelled loss, both folds."""
        data = competition_factory("tabular", "multiclass", n_train=24, n_test=20)
        data["name"] = name
        data["folds"]["n_splits"] = 2
        # a resume point every epoch: else the crash comes before the first and the "resumed"
        # run starts afresh
        data["train"].update(epochs=3, batch_size=8, resume_every=0,
                             consistency={"method": "mixmatch", "start_epoch": 1})
        cfg = build_config(data)
        if crash_in_epoch is not None:
            train_killed_in_epoch(cfg, crash_in_epoch)
        train.run(cfg)  # resumes from last.pt after the crash
        losses = []
        for fold in (0, 1):
            epochs = read_json(cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json")
            losses += [(e["train_loss"], e["unlabelled_loss"]) for e in epochs["epochs"]]
        return np.array(losses)

    whole, resumed = run("whole", None), run("resumed", 3)
    assert whole.shape == (6, 2)
    np.testing.assert_array_equal(whole, resumed)

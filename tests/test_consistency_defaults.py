"""The default shape of consistency training (issue 18): a supervised warm-up before the method
starts, FreeMatch's adaptive class thresholds, ReMixMatch's distribution alignment and an EMA
(Mean Teacher) teacher for FixMatch, each with its numbers; FixMatch's 3 unlabelled rows per
labelled row; the old behaviour by explicit settings; the mask-rate log line and the near-zero
warning; an exact resume."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import train
from pipeline.artifacts import read_json
from pipeline.config import build_config
from pipeline.data.datasets import ViewsDataset
from pipeline.engine.callbacks.consistency import Consistency
from pipeline.engine.callbacks.consistency_losses import Step
from pipeline.engine.callbacks.consistency_methods import ConsistencyConfig, FixMatch
from pipeline.engine.callbacks.consistency_thresholds import (
    AdaptiveThresholds,
    DistributionAlignment,
    EMATeacher,
)
from pipeline.engine.trainer import FitHistory
from pipeline.errors import ConfigError
from tests.engine.callbacks.test_consistency import _callback, _rows, _run_epoch, _trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the pieces, by their numbers ----------------------------------------------------------

def test_adaptive_thresholds_start_from_the_first_batch_then_follow_an_ema():
    t = AdaptiveThresholds(2, momentum=0.5)
    t.update(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))
    # first batch: tau = mean top confidence 0.8, profile = mean probabilities (0.8, 0.2)
    assert t.tau == pytest.approx(0.8)
    assert t.class_thresholds().tolist() == pytest.approx([0.8, 0.2])
    t.update(torch.tensor([[0.2, 0.8], [0.4, 0.6]]))
    # then halfway toward the next batch: tau (0.8 + 0.7) / 2, profile (0.55, 0.45)
    assert t.tau == pytest.approx(0.75)
    assert t.class_thresholds().tolist() == pytest.approx([0.75, 0.75 * 0.45 / 0.55])
    # class 1 (hard, low profile) is trusted from 0.614, class 0 only from 0.75
    mask = t.mask(torch.tensor([[0.7, 0.3], [0.35, 0.65], [0.8, 0.2]]))
    assert mask.squeeze(1).tolist() == [0.0, 1.0, 1.0]


def test_adaptive_thresholds_uniform_start_is_freematchs():
    t = AdaptiveThresholds(4, momentum=0.9, start="uniform")
    assert t.tau == 0.25
    t.update(torch.tensor([[0.85, 0.05, 0.05, 0.05]]))
    assert t.tau == pytest.approx(0.9 * 0.25 + 0.1 * 0.85)
    state = t.state_dict()
    again = AdaptiveThresholds(4, momentum=0.9)
    again.load_state_dict(state)
    assert again.tau == t.tau and torch.equal(again.class_thresholds(), t.class_thresholds())


def test_distribution_alignment_moves_predictions_toward_the_labelled_class_balance():
    da = DistributionAlignment(2, momentum=0.0)
    da.observe_labels(torch.tensor([0, 1, 1, 1]))  # labelled: 25% / 75%
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]])  # the model's mean: 70% / 30%
    aligned = da(probs)
    expected = probs * torch.tensor([0.25 / 0.7, 0.75 / 0.3])
    expected = expected / expected.sum(dim=1, keepdim=True)
    torch.testing.assert_close(aligned, expected)
    assert aligned.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])
    assert aligned[:, 1].mean() > probs[:, 1].mean()  # the under-predicted class gains
    # soft labelled rows count by their probabilities; an EMA keeps part of the past
    da = DistributionAlignment(2, momentum=0.5)
    da.observe_labels(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert da.target.tolist() == pytest.approx([0.75, 0.25])


def test_the_ema_teacher_starts_from_the_student_then_follows_it_by_its_decay():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = EMATeacher(decay=0.9)
    teacher.attach(student)
    teacher.update(student)  # before its first use the teacher does not move
    model = teacher.get(student)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    before = student[0].weight.detach().clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
    teacher.update(student)
    torch.testing.assert_close(model[0].weight, before + 0.1)
    # its weights round-trip, also into a teacher not yet attached (a resume point is
    # loaded before the fit starts)
    fresh = EMATeacher(decay=0.9)
    fresh.load_state_dict(teacher.state_dict())
    torch.testing.assert_close(fresh.get(student)[0].weight, before + 0.1)


# -- the defaults and the old behaviour --------------------------------------------------

def test_fixmatch_alone_gets_the_new_default_shape():
    cfg = ConsistencyConfig(method="fixmatch")
    assert [cfg.option(k) for k in ("thresholds", "alignment", "teacher", "ratio")] == [
        "adaptive", True, "student", 3]
    assert cfg.start(total_epochs=20) == (None, 2)  # the appended stage, or the recipe's 2nd
    assert cfg.model_copy(update={"warmup": 0.3}).start(total_epochs=20) == (7, None)
    method = FixMatch(cfg, "multiclass", 10)
    assert method.adaptive is not None and method.alignment is not None
    assert method.teacher is None  # the EMA teacher is there to ask for ('teacher: ema')
    assert FixMatch(cfg.model_copy(update={"teacher": "ema"}), "multiclass", 10).teacher
    # sigmoid tasks have no class profile: fixed thresholds, no alignment, by default
    binary = FixMatch(cfg, "binary", 1)
    assert binary.adaptive is None and binary.alignment is None
    assert cfg.mismatch("binary", False) is None


def test_explicit_settings_keep_the_old_behaviour():
    old = ConsistencyConfig(method="fixmatch", threshold=0.95, start_epoch=1, alignment=False,
                            ratio=1)
    assert old.option("thresholds") == "fixed"  # a threshold given alone is a fixed one
    assert old.start(total_epochs=20) == (1, None)
    method = FixMatch(old, "multiclass", 3)
    assert method.adaptive is None and method.alignment is None and method.teacher is None
    probs = torch.tensor([[0.96, 0.02, 0.02], [0.9, 0.05, 0.05]])
    mask, threshold = method.trust(probs)
    assert mask.squeeze(1).tolist() == [1.0, 0.0] and threshold == 0.95
    # the other methods keep their start too when asked
    assert ConsistencyConfig(method="uda", warmup=0.0).start(10) == (1, None)


@pytest.mark.parametrize(("settings", "sizes"), [
    ({"method": "fixmatch"}, [6, 4, 6]),  # 3 x the labelled batch (2); 10 rows: 6 + 4, again
    ({"method": "fixmatch", "ratio": 1}, [2, 2, 2]),  # the old default, by asking
    ({"method": "uda"}, [2, 2, 2]),
    ({"method": "mixmatch"}, [2, 2, 2]),  # K weak views each: already the dearest per row
])
def test_fixmatch_draws_three_unlabelled_rows_per_labelled_row_by_default(settings, sizes):
    cfg = ConsistencyConfig(**settings)
    assert cfg.option("ratio") == sizes[0] // 2
    callback, recorder = _callback(cfg)
    _run_epoch(callback, _trainer(batch_size=2, n_batches=3), 0)
    assert [len(rows) for rows in recorder.rows] == sizes


@pytest.mark.parametrize(("settings", "match"), [
    ({"method": "fixmatch", "thresholds": "adaptive", "threshold": 0.9}, "sets its own"),
    ({"method": "mixmatch", "teacher": "ema"}, "belong to methods 'fixmatch' and 'uda'"),
    ({"method": "fixmatch", "warmup": 0.5, "start_epoch": 2}, "not both"),
])
def test_contradictory_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        ConsistencyConfig(**settings)


def test_adaptive_thresholds_on_a_sigmoid_task_are_refused_at_load(competition_factory):
    data = competition_factory("tabular", "binary", n_train=16, n_test=8)
    data["train"]["consistency"] = {"method": "fixmatch", "thresholds": "adaptive"}
    with pytest.raises(ConfigError, match="need softmax classes"):
        build_config(data)


# -- the log ---------------------------------------------------------------------------------

class Idle:
    """A method whose every batch trusts ``rate`` of its rows at threshold 0.95."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def loss(self, model, batch, unlabelled, loss_fn, weight):
        return torch.tensor(1.0), Step(torch.tensor(0.5), torch.tensor(self.rate), 0.95)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _epochs(rate: float, n: int, caplog: pytest.LogCaptureFixture) -> list[dict]:
    """``n`` epochs of 2 steps (labelled batch 2, ratio 2: 4 of the 10 rows a step)."""
    cfg = ConsistencyConfig(method="fixmatch", ratio=2)
    dataset = ViewsDataset({"clean": _rows()})
    callback = Consistency(Idle(rate), dataset, cfg, 1, 5)  # type: ignore[arg-type]
    loader = torch.utils.data.DataLoader(range(4), batch_size=2)
    trainer = SimpleNamespace(epoch=0, total_epochs=n, train_loader=loader, model=None,
                              desc="run f0", history=FitHistory(), _to_device=lambda b: b,
                              accelerator=SimpleNamespace(device=torch.device("cpu")))
    with caplog.at_level(logging.INFO, logger="pipeline.engine.callbacks.consistency"):
        for epoch in range(n):
            trainer.epoch = epoch
            callback.on_epoch_start(trainer)  # type: ignore[arg-type]
            for _ in range(2):
                callback.training_loss(trainer, {}, None)  # type: ignore[arg-type]
            trainer.history.epochs.append({"epoch": epoch + 1})
            callback.on_epoch_end(trainer)  # type: ignore[arg-type]
    return trainer.history.epochs


def test_each_epoch_logs_how_many_unlabelled_rows_passed_the_threshold(caplog):
    history = _epochs(0.25, 1, caplog)
    assert history[0]["unlabelled_rows_used"] == 2  # 0.25 of 4 rows, twice
    assert history[0]["unlabelled_mask_rate"] == pytest.approx(0.25)
    assert history[0]["unlabelled_threshold"] == pytest.approx(0.95)
    assert "2 of 8 unlabelled rows passed the threshold 0.950 (mask rate 0.250)" in caplog.text
    assert "doing nothing" not in caplog.text


def test_a_mask_rate_that_stays_near_zero_warns_once(caplog):
    _epochs(0.0, 1, caplog)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # one epoch: not yet
    caplog.clear()
    _epochs(0.0, 4, caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "run f0: the unlabelled mask rate has stayed below 1% for 2 epochs" in warnings[0]


# -- a full run and its resume --------------------------------------------------------------

def test_the_default_starts_late_and_resumes_exactly_with_an_ema_teacher(competition_factory,
                                                                        train_killed_in_epoch):
    def run(name: str, crash_in_epoch: int | None) -> tuple[np.ndarray, list]:
        data = competition_factory("tabular", "multiclass", n_train=24, n_test=20)
        data["name"] = name
        data["folds"]["n_splits"] = 2
        data["train"].update(epochs=3, batch_size=8, resume_every=0,  # a point every epoch
                             consistency={"method": "fixmatch", "teacher": "ema",
                                          "stage": {"passes": 2}})
        cfg = build_config(data)
        if crash_in_epoch is not None:
            train_killed_in_epoch(cfg, crash_in_epoch)
        train.run(cfg)
        epochs = read_json(cfg.run_dir / "seed0" / "fold0" / "metrics.json")["epochs"]
        values = [(e["train_loss"], e.get("unlabelled_loss", 0.0),
                   e.get("unlabelled_threshold", 0.0)) for e in epochs]
        return np.array(values), epochs

    whole, epochs = run("whole", None)
    # the recipe's 3 epochs supervised, then the appended stage's 2 with the method
    assert len(epochs) == 5
    assert not any("unlabelled_loss" in e for e in epochs[:3])
    assert all("unlabelled_rows_used" in e for e in epochs[3:])
    assert 0.0 < epochs[3]["unlabelled_threshold"] < 1.0  # adaptive: the model's confidence
    resumed, _ = run("resumed", 5)  # killed with the teacher and thresholds under way
    np.testing.assert_array_equal(whole, resumed)

"""Resume points at most every ``resume_every`` seconds, written off the training thread:
``best.pt`` and ``last.pt`` always describe the same moment, and the last epoch's is always
written."""

from __future__ import annotations

import time

import pytest
import torch

from pipeline.engine import Callback
from pipeline.engine.resume import ResumePoints, load_optimizer_state
from pipeline.engine.state import CheckpointWriter
from pipeline.errors import DataError


def _count_submits(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = CheckpointWriter.submit

    def spy(self, files, **kwargs):
        calls.append([path.name for path, _ in files])
        real(self, files, **kwargs)

    monkeypatch.setattr(CheckpointWriter, "submit", spy)
    return calls


@pytest.mark.usefixtures("one_thread")
def test_a_long_interval_writes_one_resume_point_after_the_last_epoch(
        make_toy, scripted_fit, tmp_path, monkeypatch):
    calls = _count_submits(monkeypatch)
    torch.manual_seed(0)
    fit = scripted_fit(make_toy(), [0.5, 0.9, 0.7], tmp_path, resume_every=3600)
    assert calls == [["best.pt", "last.pt"]]
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and best["score"] == 0.9
    # the best epoch's weights, not the last one's
    for key, value in fit.recorder.weights[1].items():
        torch.testing.assert_close(best["model"][key], value)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert last["epoch"] == 3 and last["history"].best_epoch == 2


@pytest.mark.usefixtures("one_thread")
def test_no_interval_writes_a_resume_point_every_epoch(make_toy, scripted_fit, tmp_path,
                                                       monkeypatch):
    calls = _count_submits(monkeypatch)
    torch.manual_seed(0)
    scripted_fit(make_toy(), [0.5, 0.9, 0.7], tmp_path, resume_every=0)
    # best.pt only when the score improved
    assert calls == [["best.pt", "last.pt"], ["best.pt", "last.pt"], ["last.pt"]]


def test_a_forced_point_writes_the_best_then_the_resume_state(tmp_path):
    points = ResumePoints(every=3600)
    weights = {"w": torch.zeros(3)}
    points.keep_best(weights, epoch=4, score=0.25)
    weights["w"].add_(1)
    assert points.save(tmp_path, lambda: {"epoch": 5}, force=True)
    points.wait()
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 4 and torch.equal(best["model"]["w"], torch.zeros(3))
    assert torch.load(tmp_path / "last.pt", weights_only=False) == {"epoch": 5}
    assert points.save(tmp_path, lambda: {"epoch": 6}, force=True)  # no new best: last only
    points.wait()
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 4


def test_a_failed_background_write_is_raised_on_the_training_thread(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.submit([(blocker / "last.pt", {"epoch": 1})])
    with pytest.raises(DataError, match="is a file, not a folder"):  # atomic_path's one line
        writer.wait()
    writer.wait()  # raised once, then clear


def test_a_final_point_is_serialised_by_the_writer_thread(tmp_path, monkeypatch):
    """After the last epoch nothing changes the tensors any more: the thread serialises them
    too (the caller predicts meanwhile), and the files are the ones serialised at once."""
    modes: list[bool] = []
    real = CheckpointWriter.submit

    def spy(self, files, serialise_here=True):
        modes.append(serialise_here)
        real(self, files, serialise_here=serialise_here)

    monkeypatch.setattr(CheckpointWriter, "submit", spy)
    weights = {"w": torch.arange(6.0).view(2, 3)}
    for final, folder in ((False, tmp_path / "now"), (True, tmp_path / "thread")):
        folder.mkdir()
        points = ResumePoints(every=3600)
        points.keep_best(weights, 3, 0.9, copy=False)  # the live tensors: written as they are
        assert points.save(folder, lambda: {"epoch": 3, "model": weights}, force=True,
                           final=final)
        points.wait()
    assert modes == [True, False]
    for name in ("best.pt", "last.pt"):
        now = torch.load(tmp_path / "now" / name, weights_only=False)
        thread = torch.load(tmp_path / "thread" / name, weights_only=False)
        torch.testing.assert_close(thread["model"]["w"], now["model"]["w"])
        assert thread["epoch"] == now["epoch"] == 3


class _KilledAtEpoch(Callback):
    """A callback that defers the fit's writes (as the train stage does before predicting)
    and stops the fit as epoch ``epoch`` starts, as Ctrl-C would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_fit_start(self, trainer) -> None:
        trainer.defer_writes = True

    def on_epoch_start(self, trainer) -> None:
        if trainer.epoch + 1 == self.epoch:
            raise KeyboardInterrupt("killed")


@pytest.mark.usefixtures("one_thread")
def test_a_killed_fit_with_deferred_writes_keeps_its_last_resume_point(
        make_toy, scripted_fit, tmp_path, monkeypatch):
    """The writer thread dies with the process: a fit stopped by an exception waits for the
    resume point handed over (a slow disk here), whether or not its writes were deferred."""
    real = CheckpointWriter._write

    def slow(self, payloads):
        time.sleep(0.5)
        real(self, payloads)

    monkeypatch.setattr(CheckpointWriter, "_write", slow)
    with pytest.raises(KeyboardInterrupt):
        scripted_fit(make_toy(), [0.5, 0.9, 0.7], tmp_path, resume_every=0,
                     callbacks=[_KilledAtEpoch(2)])
    # on disk as the exception leaves fit(), before any daemon thread could be cut off
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1
    assert (tmp_path / "best.pt").is_file()


def test_a_resume_point_with_other_optimizer_groups_is_a_one_line_error(tmp_path):
    """An older version kept an encoder's and a head's groups apart at the same rate (four
    groups where two are built now): its last.pt is refused, naming the file and the fix."""
    layers = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    old = torch.optim.AdamW([{"params": [p]} for p in layers.parameters()])
    layers(torch.randn(2, 3)).sum().backward()
    old.step()
    now = torch.optim.AdamW(layers.parameters())
    with pytest.raises(DataError) as err:
        load_optimizer_state(now, old.state_dict(), tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "last.pt") in message
    assert "delete it to train the fold from the start" in message
    same = torch.optim.AdamW([{"params": [p]} for p in layers.parameters()])
    load_optimizer_state(same, old.state_dict(), tmp_path)  # the same layout loads
    assert same.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("name, overrides", [
    ("plain", {"epochs": 3}),
    ("swa", {"epochs": 3, "swa": {"start_epoch": 2}}),  # its end reads the last loader
])
def test_a_finished_fits_point_holds_no_optimizer_and_resumes_to_its_end(
        tabular_run, monkeypatch, name, overrides):
    """The last epoch's resume point describes a fit with nothing left to train: it leaves
    out the optimizer and schedule state (AdamW's moments: twice the weights) and a fold
    cut off after it (before its metrics.json) resumes to the end without an epoch and
    predicts the same numbers."""
    import pandas as pd

    from pipeline import train
    from pipeline.engine.trainer import Trainer

    cfg = tabular_run(name, **overrides)
    fold = cfg.run_dir / "seed0" / "fold0"
    last = torch.load(fold / "last.pt", weights_only=False)
    assert last["finished"] is True and last["epoch"] == 3
    assert last["optimizer"] is None and last["schedule"] is None
    before = {part: pd.read_parquet(fold / f"{part}.parquet") for part in ("oof", "test")}
    for done in ("metrics.json", "predictions.json", "oof.parquet", "test.parquet"):
        (fold / done).unlink()
    epochs: list[int] = []
    real = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch",
                        lambda self, *a, **k: epochs.append(self.epoch) or real(self, *a, **k))
    train.run(cfg)
    assert epochs == []  # resumed after its last epoch: nothing trained again
    for part, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(fold / f"{part}.parquet"), frame,
                                      check_exact=True)

"""Views of the unlabelled rows held on the device (pipeline/data/memory_views.py): the
streamed batches' rows and order, each view's own device augmentation and draws, and the
fallbacks (an augmentation with no device version, ``train.loader: stream``/``memory``)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.competition import IMAGE_PATH
from pipeline.data.augment import AugmentConfig, TextNoiseConfig
from pipeline.data.datasets import CompetitionDataset, ModelInputs, ViewsDataset, build_loader
from pipeline.data.memory_views import MemoryViews, memory_views
from pipeline.errors import ConfigError
from tests.conftest import make_competition


@pytest.fixture(autouse=True)
def _fresh_streaming_notes(monkeypatch):
    """The loader says each reason to stream once per process: a test that reads the note
    must not depend on whether an earlier test in the session already triggered it."""
    from pipeline.data import memory_loader

    monkeypatch.setattr(memory_loader, "_said", set())

FLIP = AugmentConfig(image=[{"name": "HorizontalFlip", "p": 1.0}])
SHIFT = AugmentConfig(image=[{"name": "Affine", "translate_px": [-3, 3], "p": 1.0}])


def _views(tmp_path, **augments: AugmentConfig | None) -> ViewsDataset:
    data = make_competition(tmp_path, "image", "binary", n_train=20, n_test=4)
    frame = pd.read_csv(f"{data['competition']['dir']}/train.csv")
    frame[IMAGE_PATH] = frame["image"]
    rows = CompetitionDataset(frame, ModelInputs(image_root=tmp_path / "image_binary",
                                                 image_size=32))
    return ViewsDataset({name: rows.with_augment(a) for name, a in augments.items()})


def _held(views: ViewsDataset, batch_size: int = 8, seed: int = 3) -> MemoryViews:
    held = memory_views(views, batch_size, torch.Generator().manual_seed(seed), "auto",
                        torch.device("cpu"))
    assert isinstance(held, MemoryViews)
    return held


def test_held_views_are_the_streamed_rows_in_the_streamed_order(tmp_path):
    # clean and flipped (p=1) views draw nothing random: the batches must match exactly
    views = _views(tmp_path, clean=None, flipped=FLIP)
    views.set_epoch(5)
    held = list(_held(views))
    streamed = list(build_loader(views, 8, True, 0, torch.Generator().manual_seed(3)))
    assert len(held) == len(streamed) == 3  # 20 rows in batches of 8
    for ours, theirs in zip(held, streamed, strict=True):
        assert set(ours) == set(theirs) == {"clean/image", "flipped/image"}
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=0)
    first = held[0]
    torch.testing.assert_close(first["flipped/image"], first["clean/image"].flip(-1))


def test_held_views_leave_out_a_lone_last_row_as_streamed_ones_do(tmp_path):
    # 20 unlabelled rows at batch 19: a last batch of one row stops BatchNorm in training
    views = _views(tmp_path, clean=None)
    views.set_epoch(2)
    held = list(_held(views, batch_size=19))
    streamed = list(build_loader(views, 19, True, 0, torch.Generator().manual_seed(3)))
    assert [len(b["clean/image"]) for b in held] == [19] == [len(b["clean/image"])
                                                             for b in streamed]
    torch.testing.assert_close(held[0]["clean/image"], streamed[0]["clean/image"], atol=1e-5,
                               rtol=0)


def test_each_view_draws_its_own_augmentation_and_an_epoch_seed_repeats_them(tmp_path):
    views = _views(tmp_path, weak=SHIFT, strong=SHIFT)
    held = _held(views)
    epochs = []
    for seed in (1, 1, 2):
        views.set_epoch(seed)
        held.generator.manual_seed(0)
        epochs.append(next(iter(held)))
    # same transform, other draws: the two views of a row differ
    assert not torch.equal(epochs[0]["weak/image"], epochs[0]["strong/image"])
    for key in epochs[0]:
        torch.testing.assert_close(epochs[0][key], epochs[1][key])  # a resumed epoch
        assert not torch.equal(epochs[0][key], epochs[2][key])


def test_views_with_no_device_version_stream_saying_why_once(tmp_path, caplog):
    sharpen = AugmentConfig(image=[{"name": "ElasticTransform", "p": 1.0}])
    views = _views(tmp_path, weak=SHIFT, strong=sharpen)
    with caplog.at_level(logging.INFO, logger="pipeline.data.memory_loader"):
        assert memory_views(views, 8, torch.Generator(), "auto", torch.device("cpu")) is None
    assert "unlabelled view 'strong'" in caplog.text and "ElasticTransform" in caplog.text
    # 'memory' insists on the fold's rows; views stream rather than stop a run mid-way
    assert memory_views(views, 8, torch.Generator(), "memory", torch.device("cpu")) is None
    assert memory_views(_views(tmp_path / "b", weak=SHIFT), 8, torch.Generator(), "stream",
                        torch.device("cpu")) is None
    with pytest.raises(ConfigError, match=r"'train\.loader' must be one of"):
        memory_views(views, 8, torch.Generator(), "disk", torch.device("cpu"))


def test_text_noise_in_a_view_does_not_stop_an_image_set(tmp_path):
    # the strong view's default carries text noise; image rows have no tokens to noise
    noisy = AugmentConfig(image=FLIP.image, text=TextNoiseConfig(mask=0.15))
    held = _held(_views(tmp_path, weak=None, strong=noisy), batch_size=20)
    batch = next(iter(held))
    assert batch["strong/image"].shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(batch["strong/image"].numpy(),
                                  batch["weak/image"].flip(-1).numpy())


def test_a_killed_fixmatch_image_run_with_held_views_resumes_exactly(
        competition_factory, train_killed_in_epoch, monkeypatch):
    """FixMatch on images at the default loader holds its weak and strong views (the strong
    view's RandAugment-like ops have device versions) and a killed run repeats its batches."""
    from pipeline import train
    from pipeline.artifacts import read_json
    from pipeline.config import build_config
    from pipeline.engine.callbacks import consistency

    held: list[MemoryViews | None] = []

    def spy(*args, **kwargs):
        held.append(memory_views(*args, **kwargs))
        return held[-1]

    monkeypatch.setattr(consistency, "memory_views", spy)

    def run(name: str, crash_in_epoch: int | None) -> np.ndarray:
        data = competition_factory("image", "multiclass", n_train=24, n_test=20)
        data["name"] = name
        data["folds"]["n_splits"] = 2
        data["train"].update(epochs=3, batch_size=8, resume_every=0, precise_bn=0,
                             consistency={"method": "fixmatch", "start_epoch": 2,
                                          "threshold": 0.05})
        cfg = build_config(data)
        if crash_in_epoch is not None:
            train_killed_in_epoch(cfg, crash_in_epoch)
        train.run(cfg)
        losses = []
        for fold in (0, 1):
            epochs = read_json(cfg.run_dir / "seed0" / f"fold{fold}" / "metrics.json")["epochs"]
            losses += [(e["train_loss"], e.get("unlabelled_loss", -1.0)) for e in epochs]
        return np.array(losses)

    whole = run("whole", None)
    assert held and all(isinstance(h, MemoryViews) for h in held)
    assert set(held[0].augments) == {"weak", "strong"} and held[0].augments["strong"] is not None
    assert whole.shape == (6, 2) and (whole[[1, 2, 4, 5], 1] > 0).all()
    np.testing.assert_array_equal(whole, run("resumed", 3))


@pytest.mark.parametrize(("inputs", "noise", "streams"), [
    ({"ids": [[1, 2]], "tabular": None, "images": []}, "text", True),
    ({"ids": [], "tabular": None, "images": ["a.png"]}, "text", False),
    ({"ids": [], "tabular": {"num": None}, "images": []}, "tabular", True),
    ({"ids": [[1, 2]], "tabular": None, "images": []}, "tabular", False),
])
def test_only_the_noise_of_inputs_a_view_has_keeps_it_off_the_device(inputs, noise, streams):
    from types import SimpleNamespace

    from pipeline.data.augment import TabularNoiseConfig
    from pipeline.data.memory_loader import memory_unsupported

    augment = AugmentConfig(**({"text": TextNoiseConfig(mask=0.1)} if noise == "text"
                               else {"tabular": TabularNoiseConfig(gaussian=0.1)}))
    reason = memory_unsupported(augment, SimpleNamespace(**inputs))  # type: ignore[arg-type]
    assert (reason is not None) == streams
    if streams:
        assert f"'train.augment.{noise}'" in reason
    assert memory_unsupported(augment) is not None  # without the rows: any noise streams


def test_a_strong_view_that_streams_names_its_own_key(tmp_path, caplog):
    from pipeline.data.augment import TabularNoiseConfig

    rows = _views(tmp_path, clean=None).views["clean"]
    rows.tabular = {"num": np.zeros((20, 1), np.float32), "cat": np.zeros((20, 0), np.int64)}
    noisy = AugmentConfig(tabular=TabularNoiseConfig(swap=0.1))
    views = ViewsDataset({"clean": rows, "strong": rows.with_augment(noisy)})
    with caplog.at_level(logging.INFO, logger="pipeline.data.memory_loader"):
        assert memory_views(views, 8, torch.Generator(), "auto", torch.device("cpu")) is None
    assert "unlabelled view 'strong': table noise ('train.consistency.strong.tabular')" in (
        caplog.text)

"""A run's images held once for every fold (pipeline/data/held_images.py): loaders in a run
share one copy, give the batches a loader of their own gives, fall back to their own rows
when the run's images do not fit or are not the run's, and a train or predict run fills them
once per size and gives them back at its end."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import predict, train
from pipeline.competition import IMAGE_PATH
from pipeline.config import build_config
from pipeline.data import held_images
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import CompetitionDataset, ModelInputs, ViewsDataset
from pipeline.data.held_images import HeldImages, holding_images
from pipeline.data.memory_loader import MemoryLoader, build_fold_loader
from pipeline.data.memory_views import memory_views
from tests.conftest import make_competition

SHIFT = AugmentConfig(image=[{"name": "Affine", "translate_px": [-3, 3], "p": 1.0}])
CPU = torch.device("cpu")


@pytest.fixture
def fills(monkeypatch) -> list[int]:
    """How many images each fill of the run's held images resized."""
    calls: list[int] = []
    real = held_images.resized_pixels
    monkeypatch.setattr(held_images, "resized_pixels",
                        lambda paths, size: calls.append(len(paths)) or real(paths, size))
    return calls


def _frames(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame, ModelInputs]:
    data = make_competition(tmp_path, "image", "binary", n_train=20, n_test=6)
    root = tmp_path / "image_binary"
    frames = [pd.read_csv(root / name) for name in ("train.csv", "test.csv")]
    for frame in frames:
        frame[IMAGE_PATH] = frame["image"]
    assert data["competition"]["dir"] == str(root)
    return frames[0], frames[1], ModelInputs(image_root=root, image_size=24)


def _paths(*frames: pd.DataFrame, inputs: ModelInputs) -> list:
    return [inputs.image_root / str(p) for f in frames for p in f[IMAGE_PATH]]


def _batches(loader: MemoryLoader, epoch: int = 0) -> list[dict[str, torch.Tensor]]:
    loader.dataset.set_epoch(epoch)
    return list(loader)


def _assert_same(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert list(a) == list(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_loaders_in_a_run_share_one_copy_and_give_their_own_batches(tmp_path, fills,
                                                                     caplog):
    train_frame, test_frame, inputs = _frames(tmp_path)
    y = np.arange(len(train_frame), dtype=np.float32)
    parts = {"fit": (train_frame.iloc[:14], y[:14], SHIFT, True),
             "valid": (train_frame.iloc[14:], y[14:], None, False),
             "test": (test_frame, None, None, False)}

    def loaders() -> dict[str, MemoryLoader]:
        out = {}
        for name, (frame, targets, augment, shuffle) in parts.items():
            ds = CompetitionDataset(frame, inputs, targets, augment)
            out[name] = build_fold_loader(ds, 4, shuffle, 0, torch.Generator().manual_seed(1),
                                          "memory", CPU)
        return out

    alone = loaders()
    assert not fills and all(loader._images is None for loader in alone.values())
    with caplog.at_level(logging.INFO), holding_images(_paths(train_frame, test_frame,
                                                              inputs=inputs)):
        shared = loaders()
        again = loaders()  # the next fold: nothing filled again
    assert fills == [26]  # every train and test image, once
    assert caplog.text.count("26 images held on cpu at 24 px") == 1
    pixels = {id(loader._images.pixels) for loader in [*shared.values(), *again.values()]}
    assert len(pixels) == 1
    assert shared["fit"].nbytes < alone["fit"].nbytes  # the images are not the loader's
    for name in parts:
        assert shared[name].rows == alone[name].rows
        _assert_same(_batches(shared[name], 3), _batches(alone[name], 3))


def test_held_views_read_the_runs_images(tmp_path, fills):
    train_frame, test_frame, inputs = _frames(tmp_path)
    rows = CompetitionDataset(test_frame, inputs)
    views = ViewsDataset({"weak": rows.with_augment(SHIFT), "strong": rows.with_augment(SHIFT)})
    views.set_epoch(2)
    alone = list(memory_views(views, 4, torch.Generator().manual_seed(5), "auto", CPU))
    with holding_images(_paths(train_frame, test_frame, inputs=inputs)):
        held = memory_views(views, 4, torch.Generator().manual_seed(5), "auto", CPU)
    assert held is not None and held.rows._images is not None and fills == [26]
    _assert_same(list(held), alone)


def test_images_that_do_not_fit_at_once_stay_each_loaders_own(tmp_path, fills, monkeypatch,
                                                               caplog):
    train_frame, test_frame, inputs = _frames(tmp_path)
    one_image = 3 * 24 * 24
    # room for the 20 training images, not for the run's 26
    monkeypatch.setattr(held_images, "device_room", lambda device: 20 * one_image + 64)
    ds = CompetitionDataset(train_frame, inputs, np.zeros(len(train_frame), np.float32))
    with caplog.at_level(logging.INFO), holding_images(_paths(train_frame, test_frame,
                                                              inputs=inputs)):
        loader = build_fold_loader(ds, 4, False, 0, None, "memory", CPU)
        build_fold_loader(ds, 4, False, 0, None, "memory", CPU)
    assert isinstance(loader, MemoryLoader) and loader._images is None and not fills
    assert caplog.text.count("each fold holds its own rows") == 1  # asked once per size
    assert "held on" not in caplog.text


def test_images_outside_the_run_stay_the_loaders_own(tmp_path, fills):
    train_frame, test_frame, inputs = _frames(tmp_path)
    ds = CompetitionDataset(test_frame, inputs)
    with holding_images(_paths(train_frame, inputs=inputs)):  # the test images are not in it
        loader = build_fold_loader(ds, 4, False, 0, None, "memory", CPU)
    assert isinstance(loader, MemoryLoader) and loader._images is None and not fills


def test_a_run_without_images_holds_nothing(fills):
    held = HeldImages([])
    assert len(held) == 0 and held.rows([], 8, CPU) is None and not fills


def _image_config(tmp_path):
    data = make_competition(tmp_path, "image", "binary", n_train=24, n_test=8)
    data["train"].update(loader="memory", precise_bn=0, epochs=1)
    data["folds"] = {**data.get("folds", {}), "n_splits": 2}
    return build_config(data)


def test_a_run_fills_its_images_once_gives_them_back_and_the_same_oof(tmp_path, fills,
                                                                      monkeypatch):
    cfg = _image_config(tmp_path / "held")
    train.run(cfg)
    assert fills == [32]  # two folds' training, validation and test rows: one fill
    assert held_images._active == []  # given back at the run's end
    held_oof = pd.read_parquet(cfg.run_dir / "oof.parquet")
    held_test = pd.read_parquet(cfg.run_dir / "test.parquet")

    monkeypatch.setattr(train, "competition_images", lambda comp: [])  # nothing held
    alone = _image_config(tmp_path / "alone")
    train.run(alone)
    assert fills == [32]
    pd.testing.assert_frame_equal(pd.read_parquet(alone.run_dir / "oof.parquet"), held_oof,
                                  check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(alone.run_dir / "test.parquet"), held_test,
                                  check_exact=True)

    fills.clear()
    for seed_fold in cfg.run_dir.glob("seed*/fold*"):
        (seed_fold / "predictions.json").unlink()  # predictions out of date: predict again
    predict.run(cfg)
    assert fills == [32] and held_images._active == []
    pd.testing.assert_frame_equal(pd.read_parquet(cfg.run_dir / "test.parquet"), held_test,
                                  check_exact=True)


def test_pseudo_labelled_rows_read_the_runs_images_too(tmp_path, fills, monkeypatch):
    """A round on pseudo-labelled test rows: each fold's training rows are the fold's train
    rows and test rows (a CombinedDataset); they index the run's images, with the OOF of
    loaders that hold their own."""
    data = make_competition(tmp_path, "image", "binary", n_train=24, n_test=8)
    data["train"].update(loader="memory", precise_bn=0, epochs=1)
    data["folds"] = {**data.get("folds", {}), "n_splits": 2}
    source = build_config({**data, "name": "source"})
    train.run(source)

    def round_(name: str):
        cfg = build_config({**data, "name": name,
                            "pseudo": {"source": str(source.run_dir), "labels": "soft"}})
        train.run(cfg)
        return pd.read_parquet(cfg.run_dir / "oof.parquet")

    loaders: list[MemoryLoader] = []
    real_init = MemoryLoader.__init__

    def spy(self, dataset, parts, *args, **kwargs):
        real_init(self, dataset, parts, *args, **kwargs)
        loaders.append(self)

    monkeypatch.setattr(MemoryLoader, "__init__", spy)
    fills.clear()
    held = round_("held")
    combined = [x for x in loaders if len(x._parts) == 2]  # train rows + pseudo rows
    assert fills == [32] and combined and all(x._images is not None for x in combined)
    assert combined[0].rows == 12 + 8  # a fold's 12 train rows and the 8 test rows
    monkeypatch.setattr(train, "competition_images", lambda comp: [])
    pd.testing.assert_frame_equal(round_("alone"), held, check_exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_runs_images_are_filled_once_there(tmp_path, fills):
    """'cuda' and 'cuda:0' name one device: one fill, kept on the GPU; the batches are those
    of a loader holding its own rows there."""
    train_frame, test_frame, inputs = _frames(tmp_path)
    ds = CompetitionDataset(train_frame, inputs, np.zeros(len(train_frame), np.float32), SHIFT)
    gpu = torch.device("cuda")
    alone = build_fold_loader(ds, 4, True, 0, torch.Generator().manual_seed(1), "memory", gpu)
    with holding_images(_paths(train_frame, test_frame, inputs=inputs)):
        held = build_fold_loader(ds, 4, True, 0, torch.Generator().manual_seed(1), "memory", gpu)
        again = build_fold_loader(ds, 4, True, 0, None, "memory", torch.device("cuda:0"))
    assert fills == [26] and held._images.pixels is again._images.pixels
    assert held._images.pixels.device.type == "cuda"
    _assert_same(_batches(held, 2), _batches(alone, 2))

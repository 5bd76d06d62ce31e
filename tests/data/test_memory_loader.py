"""Rows held on the device (``train.loader: memory``): the same batches and OOF as streaming
them, image augmentation on the device, the fallbacks and their one-line reasons."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline import train
from pipeline.competition import IMAGE_PATH
from pipeline.config import build_config
from pipeline.data import decoded
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import CompetitionDataset, ModelInputs
from pipeline.data.memory_loader import MemoryLoader, build_fold_loader, memory_unsupported
from pipeline.errors import ConfigError
from tests.conftest import make_competition


def _run_oof(root, modality: str, loader: str) -> pd.DataFrame:
    data = make_competition(root, modality, "binary")
    data["train"].update(loader=loader, precise_bn=0)
    cfg = build_config(data)
    train.run(cfg)
    return pd.read_parquet(cfg.run_dir / "oof.parquet")


@pytest.mark.parametrize("modality", ["tabular", "text"])
def test_held_rows_give_the_streamed_oof_exactly(tmp_path, modality):
    # same order (the DataLoader's draws are mirrored), same padding per batch, same values
    streamed = _run_oof(tmp_path / "stream", modality, "stream")
    held = _run_oof(tmp_path / "memory", modality, "memory")
    pd.testing.assert_frame_equal(held, streamed, check_exact=True)


def test_held_images_give_the_streamed_oof_up_to_rounding(tmp_path):
    streamed = _run_oof(tmp_path / "stream", "image", "stream")
    held = _run_oof(tmp_path / "memory", "image", "memory")
    np.testing.assert_allclose(held["target"], streamed["target"], atol=1e-5)


def _image_dataset(tmp_path, augment: AugmentConfig | None = None) -> CompetitionDataset:
    data = make_competition(tmp_path, "image", "binary", n_train=20, n_test=4)
    frame = pd.read_csv(f"{data['competition']['dir']}/train.csv")
    frame[IMAGE_PATH] = frame["image"]
    inputs = ModelInputs(image_root=tmp_path / "image_binary", image_size=32)
    return CompetitionDataset(frame, inputs, np.arange(len(frame), dtype=np.float32), augment)


def test_a_held_batch_equals_the_streamed_items(tmp_path):
    dataset = _image_dataset(tmp_path)
    loader = build_fold_loader(dataset, 8, False, 0, None, "memory")
    assert isinstance(loader, MemoryLoader)
    batch = next(iter(loader))
    streamed = next(iter(DataLoader(dataset, batch_size=8)))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (8, 3, 32, 32)
    torch.testing.assert_close(batch["image"], streamed["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch["target"], streamed["target"])


def test_a_table_of_numbers_alone_gives_the_streamed_batches():
    """A table without category columns holds a zero-width 'cat': its batches keep that
    shape and type without gathering from it (issue 11: one launch less a step)."""
    from pipeline.data.tabular import TabularEncoder

    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) ** 2})
    inputs = ModelInputs(tabular=TabularEncoder(["a", "b"], []).fit(frame))
    dataset = CompetitionDataset(frame, inputs, np.arange(20, dtype=np.float32), None)
    loader = build_fold_loader(dataset, 8, True, 0, torch.Generator().manual_seed(3), "memory")
    assert isinstance(loader, MemoryLoader)
    streamed = DataLoader(dataset, batch_size=8, shuffle=True,
                          generator=torch.Generator().manual_seed(3))
    held = list(loader)
    assert len(held) == 3
    for batch, expected in zip(held, streamed, strict=True):
        assert batch["cat"].shape == (len(batch["target"]), 0)
        assert batch["cat"].dtype == expected["cat"].dtype == torch.int64
        for key in ("num", "target"):
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)


def test_held_images_are_augmented_on_the_device_per_epoch_seed(tmp_path):
    flip = AugmentConfig(image=[{"name": "HorizontalFlip", "p": 1.0}])
    plain = next(iter(build_fold_loader(_image_dataset(tmp_path), 8, False, 0, None, "memory")))
    dataset = _image_dataset(tmp_path, flip)
    loader = build_fold_loader(dataset, 8, False, 0, None, "memory")
    flipped = next(iter(loader))
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
    shift = AugmentConfig(image=[{"name": "Affine", "translate_px": [-3, 3], "p": 1.0}])
    loader = build_fold_loader(_image_dataset(tmp_path, shift), 8, False, 0, None, "memory")
    epochs = []
    for seed in (1, 1, 2):
        loader.dataset.set_epoch(seed)
        epochs.append(next(iter(loader))["image"])
    torch.testing.assert_close(epochs[0], epochs[1])  # a resumed epoch sees the same batch
    assert not torch.equal(epochs[0], epochs[2])


def test_text_is_cut_per_batch_and_predicted_longest_first(tmp_path):
    from transformers import AutoTokenizer

    from tests.conftest import write_tokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    texts = ["good", "good bad good bad good", "bad bad", "good bad good"]
    frame = pd.DataFrame({"text": texts})
    dataset = CompetitionDataset(frame, ModelInputs(text_columns=["text"], tokenizer=tok,
                                                    max_length=16))
    loader = build_fold_loader(dataset, 2, False, 0, None, "memory")
    assert isinstance(loader, MemoryLoader)
    lengths = [len(ids) for ids in dataset.ids]
    assert loader.row_order is not None
    assert loader.row_order.tolist() == list(np.argsort(lengths, kind="stable")[::-1])
    widths = [b["input_ids"].shape[1] for b in loader]
    assert widths == [max(lengths[i] for i in pair)
                      for pair in np.array(loader.row_order).reshape(-1, 2)]


def test_rows_stream_with_a_reason_when_an_augmentation_has_no_device_version(
        tmp_path, caplog):
    sharpen = AugmentConfig(image=[{"name": "ElasticTransform", "p": 1.0}])
    assert "ElasticTransform" in (memory_unsupported(sharpen) or "")
    assert "text noise" in (memory_unsupported(AugmentConfig(text={"mask": 0.1})) or "")
    with caplog.at_level(logging.INFO):
        loader = build_fold_loader(_image_dataset(tmp_path, sharpen), 8, True, 0,
                                   torch.Generator(), "auto")
    assert isinstance(loader, DataLoader)
    assert "ElasticTransform" in caplog.text and "streamed" in caplog.text
    with pytest.raises(ConfigError, match="ElasticTransform"):
        build_fold_loader(_image_dataset(tmp_path, sharpen), 8, True, 0, None, "memory")


def test_memory_with_an_augmentation_that_has_no_device_version_is_refused_at_load(tmp_path):
    data = make_competition(tmp_path, "image", "binary")
    data["train"].update(loader="memory", augment={"image": [{"name": "ElasticTransform"}]})
    with pytest.raises(ValueError, match=r"'loader: memory'.*ElasticTransform"):
        build_config(data)


def test_rows_that_do_not_fit_are_streamed(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("pipeline.data.held_images.device_room", lambda device: 1000)
    with caplog.at_level(logging.INFO):
        loader = build_fold_loader(_image_dataset(tmp_path), 8, False, 0, None, "auto")
    assert isinstance(loader, DataLoader) and "has room for" in caplog.text


def test_images_are_decoded_once_within_the_budget(tmp_path, monkeypatch, caplog):
    dataset = _image_dataset(tmp_path)
    decoded.clear_cache()
    opened = []
    real_open = decoded.Image.open
    monkeypatch.setattr(decoded.Image, "open", lambda p: opened.append(p) or real_open(p))
    for _ in range(2):
        dataset.tensors()
    assert len(opened) == len(dataset)  # the second pass came from the cache
    decoded.clear_cache()
    opened.clear()
    monkeypatch.setenv("PIPELINE_DECODE_CACHE_GB", str(5 * 24 * 24 * 3 / 2**30))
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            dataset.tensors()
    assert len(opened) == 2 * len(dataset) - 5  # five held, the rest read twice
    assert "PIPELINE_DECODE_CACHE_GB" in caplog.text
    decoded.clear_cache()


def test_many_images_are_decoded_by_threads_once_each(tmp_path, monkeypatch):
    """decode_many: past 32 images not yet held, a pool decodes them; each file is opened
    once, the arrays are decode_rgb's, in the paths' order, and the cache holds them all."""
    from PIL import Image

    paths = []
    for i in range(40):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((4, 5, 3), i, np.uint8)).save(path)
        paths.append(path)
    decoded.clear_cache()
    opened = []
    real_open = decoded.Image.open
    monkeypatch.setattr(decoded.Image, "open", lambda p: opened.append(p) or real_open(p))
    arrays = decoded.decode_many(paths)
    assert sorted(map(str, opened)) == sorted(map(str, paths))
    assert [int(a[0, 0, 0]) for a in arrays] == list(range(40))
    assert all(a.shape == (4, 5, 3) for a in arrays)
    assert decoded.decode_many(paths)[7] is arrays[7] and len(opened) == 40  # held
    decoded.clear_cache()


def test_a_held_training_epoch_never_ends_on_one_row(tmp_path):
    # 20 rows at batch 19: the streamed and the held loader both leave the lone row out
    # (BatchNorm cannot train on one row); predicting keeps every row
    dataset = _image_dataset(tmp_path)
    held = build_fold_loader(dataset, 19, True, 0, torch.Generator().manual_seed(3), "memory")
    assert isinstance(held, MemoryLoader)
    assert len(held) == 1 and [len(b["target"]) for b in held] == [19]
    ordered = build_fold_loader(dataset, 19, False, 0, None, "memory")
    assert [len(b["target"]) for b in ordered] == [19, 1]

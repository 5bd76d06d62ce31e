"""Datasets and loaders (pipeline/data/datasets.py): text encoding and truncation, the items
of a tabular dataset and their seeded augmentation, views, and the padding collate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data import (
    AugmentConfig,
    CompetitionDataset,
    ModelInputs,
    TabularEncoder,
    TabularNoiseConfig,
    ViewsDataset,
    build_loader,
    collate,
    encode_texts,
    view_of,
)
from tests.conftest import write_tokenizer


def test_text_truncation_keeps_head_tail_or_both(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    text = [["the movie was a plot and very film it story"]]  # 10 known words
    words = tok(text[0], add_special_tokens=False)["input_ids"][0]
    head = encode_texts(tok, text, 6, "head")[0]
    tail = encode_texts(tok, text, 6, "tail")[0]
    both = encode_texts(tok, text, 10, "head_tail")[0]
    assert head[1:-1] == words[:4] and tail[1:-1] == words[-4:]
    assert both[1:-1] == words[:2] + words[-6:]
    assert head[0] == tok.cls_token_id and tail[-1] == tok.sep_token_id


@pytest.mark.parametrize("columns", [1, 2, 3])
def test_cutting_long_texts_prints_no_indexing_error_warning(tmp_path, capfd, columns) -> None:
    """A text past the model's length, cut by its tail or head_tail, printed transformers'
    "Token indices sequence length is longer than the specified maximum sequence length for
    this model (600 > 512). Running this sequence through the model will result in indexing
    errors": each text is tokenised whole before it is cut, and the model reads the cut ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"), model_max_length=8)
    long = " ".join(["movie"] * 40)
    for truncation in ("tail", "head_tail"):
        ids = encode_texts(tok, [[f"{long} {truncation}"]] * columns, 8, truncation)[0]
        assert len(ids) == 8
    assert "indexing errors" not in capfd.readouterr().err


def test_rows_are_tokenised_once_per_process(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    texts = [["good movie", "bad film", "good movie"]]
    first = encode_texts(tok, texts, 16, "head")
    assert first[0] == first[2] and first[0] != first[1]
    calls: list[list[str]] = []
    real = type(tok).__call__

    def spy(self, text, *args, **kwargs):
        calls.append(list(text))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    assert encode_texts(tok, texts, 16, "head") == first and calls == []  # the next fold
    mixed = encode_texts(tok, [["fun story", "bad film"]], 16, "head")
    assert calls == [["fun story"]] and mixed[1] == first[1]  # only the new row
    calls.clear()
    assert encode_texts(tok, texts, 3, "head") != first and calls  # other settings: anew


def test_two_text_columns_are_a_pair_and_more_are_joined(tmp_path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    a, b = tok("good", add_special_tokens=False)["input_ids"], tok("bad")["input_ids"][1:-1]
    pair = encode_texts(tok, [["good"], ["bad"]], 16, "head")[0]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert pair == [cls, *a, sep, *b, sep]
    three = encode_texts(tok, [["good"], ["bad"], ["fun"]], 16, "tail")[0]
    fun = tok("fun", add_special_tokens=False)["input_ids"]
    assert three == [cls, *a, sep, *b, sep, *fun, sep]  # joined with the separator token


def test_each_text_of_a_long_pair_keeps_the_side_truncation_names(tmp_path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    question, answer = "good fun", "the movie was a plot and very film it story"
    q = tok(question, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]  # 10 words
    cls, sep = tok.cls_token_id, tok.sep_token_id
    # 11 tokens: 3 special, the short question whole, 6 of the answer
    head = encode_texts(tok, [[question], [answer]], 11, "head")[0]
    tail = encode_texts(tok, [[question], [answer]], 11, "tail")[0]
    both = encode_texts(tok, [[question], [answer]], 11, "head_tail")[0]
    assert head == [cls, *q, sep, *a[:6], sep]
    assert tail == [cls, *q, sep, *a[-6:], sep]  # was the head: 'tail' did nothing to pairs
    assert both == [cls, *q, sep, *a[:1], *a[-5:], sep]
    # both texts long: half each (the odd token to the longer), each from its own tail
    long_q = "story it film very and plot a was movie"  # 9 words
    lq = tok(long_q, add_special_tokens=False)["input_ids"]
    tail = encode_texts(tok, [[long_q], [answer]], 12, "tail")[0]
    assert tail == [cls, *lq[-4:], sep, *a[-5:], sep]
    # the lengths are transformers' own longest-first ones
    for length in range(8, 24):
        ids = encode_texts(tok, [[long_q], [answer]], length, "tail")[0]
        reference = tok(long_q, answer, truncation=True, max_length=length,
                        return_token_type_ids=True)["token_type_ids"]
        assert len(ids) == len(reference) and ids.index(sep) == reference.index(1) - 1


def test_three_texts_share_the_length_longest_first_each_from_its_own_side(tmp_path) -> None:
    """Joined and cut as one text, a long first column left nothing of the ones after it
    (Google QUEST's title, body, answer): each text now gets its longest-first share."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    words = ["the movie was a plot and very film it story", "good fun",
             "story it film very and plot a was movie"]  # 10, 2 and 9 tokens
    body, short, answer = (tok(w, add_special_tokens=False)["input_ids"] for w in words)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    texts = [[words[0]], [words[1]], [words[2]]]
    # 16 tokens: 4 special, the short text whole, 10 left: 5 of each long text
    head = encode_texts(tok, texts, 16, "head")[0]
    assert head == [cls, *body[:5], sep, *short, sep, *answer[:5], sep]
    tail = encode_texts(tok, texts, 16, "tail")[0]
    assert tail == [cls, *body[-5:], sep, *short, sep, *answer[-5:], sep]
    both = encode_texts(tok, texts, 17, "head_tail")[0]  # 11 left: the odd one to the longer
    assert both == [cls, *body[:1], *body[-5:], sep, *short, sep, *answer[:1], *answer[-4:], sep]
    assert len(encode_texts(tok, texts, 40, "head")[0]) == 4 + 10 + 2 + 9  # all fit: whole


def _tabular_dataset(augment: AugmentConfig | None = None) -> CompetitionDataset:
    frame = pd.DataFrame({"x": np.arange(8, dtype=float), "c": list("abababab")})
    tab = TabularEncoder(["x"], ["c"]).fit(frame)
    targets = np.arange(8, dtype=np.float32)[:, None]
    return CompetitionDataset(frame, ModelInputs(tabular=tab), targets, augment,
                              weights=np.full(8, 0.5))


def test_tabular_items_carry_inputs_target_and_weight() -> None:
    data = _tabular_dataset()
    assert len(data) == 8
    item = data[3]
    assert set(item) == {"num", "cat", "target", "weight"}
    assert item["num"].dtype == torch.float32 and item["cat"].dtype == torch.int64
    torch.testing.assert_close(item["num"], torch.from_numpy(data.tabular["num"][3]))
    assert item["cat"].tolist() == [2] and item["target"].tolist() == [3.0]
    assert item["weight"].item() == 0.5


def test_augmented_items_repeat_per_epoch_seed_and_change_between_epochs() -> None:
    data = _tabular_dataset(AugmentConfig(tabular=TabularNoiseConfig(gaussian=0.5)))
    data.set_epoch(1)
    first = data[2]["num"]
    torch.testing.assert_close(data[2]["num"], first)  # the same draw for (epoch, row)
    data.set_epoch(2)
    assert not torch.equal(data[2]["num"], first)
    plain = data.with_augment(None)[2]["num"]  # same rows, no noise
    torch.testing.assert_close(plain, torch.from_numpy(data.tabular["num"][2]))


def test_views_are_keyed_by_name_and_collate_pads_tokens() -> None:
    data = _tabular_dataset()
    views = ViewsDataset({"weak": data, "strong": data})
    item = views[0]
    assert set(item) == {f"{v}/{k}" for v in ("weak", "strong")
                         for k in ("num", "cat", "target", "weight")}
    assert set(view_of(item, "weak")) == {"num", "cat", "target", "weight"}
    items = [{"input_ids": torch.tensor([5, 6, 7]), "attention_mask": torch.ones(3, dtype=int),
              "v/input_ids": torch.tensor([5]), "num": torch.zeros(2)},
             {"input_ids": torch.tensor([8]), "attention_mask": torch.ones(1, dtype=int),
              "v/input_ids": torch.tensor([9, 9]), "num": torch.ones(2)}]
    batch = collate(items, pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["v/input_ids"].tolist() == [[5, 1], [9, 9]]
    assert batch["num"].shape == (2, 2)


def test_loader_batches_every_row_once() -> None:
    data = _tabular_dataset()
    loader = build_loader(data, batch_size=3, shuffle=True, num_workers=0,
                          generator=torch.Generator().manual_seed(0))
    targets = torch.cat([b["target"] for b in loader]).ravel()
    assert sorted(targets.tolist()) == list(range(8))
    assert [len(b["target"]) for b in loader] == [3, 3, 2]



def test_training_loader_never_ends_on_one_row() -> None:
    # 8 rows at batch 7 would end each epoch on a lone row, which BatchNorm refuses to train on
    data = _tabular_dataset()
    loader = build_loader(data, batch_size=7, shuffle=True, num_workers=0,
                          generator=torch.Generator().manual_seed(0))
    assert [len(b["target"]) for b in loader] == [7]
    ordered = build_loader(data, batch_size=7, shuffle=False, num_workers=0)
    assert [len(b["target"]) for b in ordered] == [7, 1]


def _epoch(loader, seed: int) -> list[torch.Tensor]:
    """One epoch's images, seeded as the trainer seeds an epoch."""
    loader.generator.manual_seed(seed)
    loader.dataset.set_epoch(seed)
    return [b["image"] for b in loader]


def test_persistent_workers_make_the_batches_of_workers_started_each_epoch(tmp_path) -> None:
    """issue 11: workers stay up across epochs; each epoch's seed reaches them with the rows,
    so the augmented batches are those of workers started afresh for that epoch."""
    from pipeline.competition import IMAGE_PATH
    from tests.conftest import make_competition

    data = make_competition(tmp_path, "image", "binary", n_train=12, n_test=2)
    frame = pd.read_csv(f"{data['competition']['dir']}/train.csv")
    frame[IMAGE_PATH] = frame["image"]
    # ElasticTransform has no device version: these rows are always streamed through workers
    augment = AugmentConfig(image=[{"name": "ElasticTransform", "p": 0.5},
                                   {"name": "HorizontalFlip", "p": 0.5}])
    dataset = CompetitionDataset(frame, ModelInputs(image_root=tmp_path / "image_binary",
                                                    image_size=16),
                                 np.zeros(len(frame), np.float32), augment)
    persistent = build_loader(dataset, 4, True, 2, torch.Generator())
    epochs = {}
    for seed in (1, 2, 1):
        kept = _epoch(persistent, seed)
        fresh = _epoch(build_loader(dataset, 4, True, 2, torch.Generator()), seed)
        assert all(torch.equal(a, b) for a, b in zip(kept, fresh, strict=True))
        epochs.setdefault(seed, kept)
        assert all(torch.equal(a, b) for a, b in zip(kept, epochs[seed], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epochs[1], epochs[2], strict=True))
    workers = persistent._iterator._workers  # the same processes served all three epochs
    assert len(workers) == 2 and all(w.is_alive() for w in workers)


def test_a_seed_tagged_row_is_the_row_of_a_dataset_seeded_for_that_epoch() -> None:
    """What a persistent worker gets, (seed, row), equals set_epoch(seed) then row, for a
    combined (pseudo-labelled) and a multi-view dataset: each part keeps its own draws."""
    from pipeline.data import CombinedDataset

    noisy = AugmentConfig(tabular=TabularNoiseConfig(gaussian=0.5, swap=0.3))

    def pair(make):
        tagged, seeded = make(), make()
        seeded.set_epoch(5)
        return tagged, seeded

    for make in (lambda: CombinedDataset([_tabular_dataset(noisy), _tabular_dataset(noisy)]),
                 lambda: ViewsDataset({"a": _tabular_dataset(noisy),
                                       "b": _tabular_dataset(noisy)})):
        tagged, seeded = pair(make)
        for i in (0, 3, len(seeded) - 1):
            for key, value in seeded[i].items():
                torch.testing.assert_close(tagged[(5, i)][key], value)
        key = next(k for k in seeded[3] if k.endswith("num"))
        assert not torch.equal(tagged[(5, 3)][key], tagged[(6, 3)][key])


def test_an_augmentation_that_cannot_apply_to_an_image_is_a_config_error(tmp_path) -> None:
    """A crop larger than one small image of a set of mixed sizes ended the fold in
    albumentations' CropSizeError traceback (no ValueError); it is one line naming the key,
    the image and its size."""
    from PIL import Image

    from pipeline.competition import IMAGE_PATH
    from pipeline.errors import ConfigError

    for name, size in (("big.png", (40, 30)), ("small.png", (8, 8))):
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(tmp_path / name)
    frame = pd.DataFrame({IMAGE_PATH: ["big.png", "small.png"]})
    inputs = ModelInputs(image_root=tmp_path, image_size=16)
    crop = AugmentConfig(image=[{"name": "RandomCrop", "height": 24, "width": 24}])
    dataset = CompetitionDataset(frame, inputs, np.zeros(2, np.float32), crop)
    assert dataset[0]["image"].shape == (3, 16, 16)
    with pytest.raises(ConfigError, match=r"'train.augment.image' cannot be applied to "
                       r".*small\.png \(8 x 8 pixels; .*CropSizeError") as err:
        dataset[1]
    assert "\n" not in str(err.value)
    plain = CompetitionDataset(frame, inputs, np.zeros(2, np.float32))
    assert plain[1]["image"].shape == (3, 16, 16)  # no augmentation: nothing to refuse


def test_a_pair_gets_the_tokenizers_segment_ids_and_single_texts_none(tmp_path) -> None:
    """A pair's segment ids (1 on the second text) are the tokenizer's own, whichever side a
    long text keeps; one text or joined texts have none (all 0: the model's default)."""
    from transformers import AutoTokenizer

    from pipeline.data import encode_rows

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    q, a = "story it film very and plot a was movie", "the movie was a plot and very film"
    for truncation in ("head", "tail", "head_tail"):
        for length in (8, 13, 40):
            ids, types = encode_rows(tok, [[q, "good"], [a, "bad"]], length, truncation)
            for row, (first, second) in enumerate([(q, a), ("good", "bad")]):
                reference = tok(first, second, truncation=True, max_length=length)
                assert types is not None and types[row] == reference["token_type_ids"]
                assert len(ids[row]) == len(types[row])
    assert encode_rows(tok, [[q]], 8, "tail")[1] is None
    assert encode_rows(tok, [[q], [a], ["fun"]], 16, "head")[1] is None


def test_segment_ids_follow_their_tokens_through_noise_padding_and_the_held_loader(tmp_path):
    from transformers import AutoTokenizer

    from pipeline.data.augment import TextNoiseConfig
    from pipeline.data.memory_loader import build_fold_loader

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    frame = pd.DataFrame({"q": ["good fun", "bad", "the movie was a plot"],
                          "a": ["the film", "very good story it was", "fun"]})
    inputs = ModelInputs(text_columns=["q", "a"], tokenizer=tok, max_length=16)
    noise = AugmentConfig(text=TextNoiseConfig(mask=0.2, delete=0.3, swap=0.3))
    noisy = CompetitionDataset(frame, inputs, augment=noise)
    sep = tok.sep_token_id

    def segments_of(ids: list[int]) -> list[int]:  # 1 after the first [SEP]
        return [int(i > ids.index(sep)) for i in range(len(ids))]

    changed = False
    for seed in range(10):
        noisy.set_epoch(seed)
        for row in range(len(frame)):
            item = noisy[row]
            ids = item["input_ids"].tolist()
            assert item["token_type_ids"].tolist() == segments_of(ids)
            changed |= ids != noisy.ids[row]
    assert changed  # the noise did delete and swap tokens
    clean = CompetitionDataset(frame, inputs)
    batch = collate([clean[i] for i in range(3)], pad_id=tok.pad_token_id)
    loader = build_fold_loader(clean, 3, False, 0, None, "memory")
    assert loader.row_order is not None  # held rows: predicted longest first
    for got, rows in ((batch, [0, 1, 2]), (next(iter(loader)), loader.row_order.tolist())):
        width = got["input_ids"].shape[1]
        for k, row in enumerate(rows):
            ids = clean.ids[row]
            assert got["input_ids"][k].tolist()[: len(ids)] == ids
            assert got["token_type_ids"][k].tolist() == (
                segments_of(ids) + [0] * (width - len(ids)))  # padding: segment 0


def test_images_shrink_by_pixel_area_so_thin_lines_survive(tmp_path) -> None:
    """A 1-px line every 8 columns of a 256-px image, shrunk to 32 px: bilinear shrinking
    reads columns 8k+3 and 8k+4 only and drew the lines' half of the image black; by area
    each output pixel holds its eighth of a line, on the held and the streamed path alike."""
    from PIL import Image

    from pipeline.data.datasets import image_transform, resized_pixels

    pixels = np.zeros((256, 256, 3), dtype=np.uint8)
    pixels[:, 0:128:8] = 255  # lines in the left half only
    Image.fromarray(pixels).save(tmp_path / "lines.png")
    held = resized_pixels([tmp_path / "lines.png"], 32)[0].astype(float)  # 3 x 32 x 32
    assert held[:, :, :16].mean() == pytest.approx(255 / 8, abs=1)
    assert held[:, :, 16:].max() == 0
    streamed = image_transform(32)(image=pixels)["image"]  # normalised, 3 x 32 x 32
    assert float(streamed[:, :, :16].mean() - streamed[:, :, 16:].mean()) > 0.4

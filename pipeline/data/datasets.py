"""Datasets and loaders for every modality: images, text, tabular features, or a mix.

A batch is a dict of tensors; each encoder reads its own keys (``image``; ``input_ids`` and
``attention_mask``, from text columns or from rows written as text, and ``token_type_ids``
for a pair of texts; ``num`` and ``cat``) and
the loss reads ``target`` (and ``aux``, the auxiliary targets of a multi-task model).
"""

from __future__ import annotations

import bisect
import copy
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, get_worker_info

from pipeline.competition import IMAGE_PATH
from pipeline.data.augment import (
    AugmentConfig,
    build_image_augment,
    noisy_row,
    noisy_segments,
    noisy_tokens,
)
from pipeline.data.batching import collate, drops_lone_row
from pipeline.data.decoded import decode_many, decode_rgb
from pipeline.data.option_tokens import encode_options, option_item, option_tensors
from pipeline.data.rows_text import row_texts
from pipeline.data.tabular import TabularEncoder
from pipeline.data.text_tokens import encode_rows
from pipeline.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a run that never needs it skips ~1 s
    import albumentations as A

Batch = dict[str, torch.Tensor]  # what a loader yields and every encoder reads
# a row, or (epoch seed, row) from an EpochSampler: persistent workers learn the epoch's
# seed with the rows they fetch
Key = int | tuple[int, int]


def _split_key(key: Key) -> tuple[int | None, int]:
    return key if isinstance(key, tuple) else (None, key)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` as ``size`` x ``size`` (:func:`_resize`); an image already that size as it
    is (every fold builds its rows again: ~50 us an image saved)."""
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    return _resize(size)(image=pixels)["image"]


def _resize(size: int) -> A.Resize:
    """Resize to ``size`` x ``size``: by pixel area where an image shrinks, bilinear where it
    grows. Bilinear shrinking reads 2 x 2 source pixels per output pixel and skips the rest:
    at 256 -> 32 px a thin line (a scratch, a crack, a vessel) vanishes or not by where it
    falls, and a count of 1-px scratches scored held-out RMSE 1.72 (chance: 2.0) against
    0.60 by area (900 images, resnet18 from scratch at 32 px, 3 folds x 4 epochs)."""
    import albumentations as A

    return A.Resize(size, size, area_for_downscale="image")


def image_files(frame: pd.DataFrame, root: Path) -> list[Path]:
    """The image file of each row of ``frame`` (its resolved path column under ``root``): the
    paths a dataset reads and the run's held images are keyed by."""
    return [root / str(p) for p in frame[IMAGE_PATH]] if IMAGE_PATH in frame.columns else []


def resized_pixels(paths: list[Path], size: int) -> np.ndarray:
    """The images at ``paths`` decoded and resized, as one uint8 N x 3 x ``size`` x ``size``
    array."""
    # each image written once, channels first (a stack then a permuted copy moved every byte
    # twice: ~0.1 s more a fold at 3,000 images of 224 px)
    held = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for row, pixels in enumerate(decode_many(paths)):
        held[row] = _resized(pixels, size).transpose(2, 0, 1)
    return held


def image_transform(size: int, augment: list[A.BasicTransform] | None = None) -> A.Compose:
    """Optional augmentations, then resize to a square and ImageNet normalisation."""
    import albumentations as A  # here: tables and texts never import it
    from albumentations.pytorch import ToTensorV2

    steps = [*(augment or []), _resize(size), A.Normalize(IMAGENET_MEAN, IMAGENET_STD),
             ToTensorV2()]
    return A.Compose(steps, seed=0)


class CompetitionDataset(Dataset[dict[str, torch.Tensor]]):
    """Rows of a competition frame as dicts of tensors for the encoders that need them.

    With ``augment`` (training rows only) every item is augmented with draws seeded by
    the epoch (:meth:`set_epoch`) and the row.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        inputs: ModelInputs,
        targets: np.ndarray | None = None,
        augment: AugmentConfig | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.weights = weights
        self.augment = augment
        self.epoch_seed = 0
        self.images: list[Path] = []
        if inputs.image_size:
            self.images = image_files(frame, inputs.image_root)
            extra = build_image_augment(augment.image) if augment is not None else []
            self.transform = image_transform(inputs.image_size, extra)
        # token ids a row (options x token ids under 'model.option_columns')
        self.ids: list[Any] = []
        self.types: list[Any] | None = None  # segment ids of a pair of texts
        tok = inputs.tokenizer
        if tok is not None and inputs.option_columns:  # options x tokens a row
            context = [c for c in inputs.text_columns if c not in inputs.option_columns]
            self.ids, self.types = encode_options(tok, frame, context, inputs.option_columns,
                                                  inputs.max_length, inputs.truncation)
        elif tok is not None:
            texts = ([row_texts(frame, inputs.row_columns)] if inputs.row_columns else
                     [frame[c].fillna("").astype(str).tolist() for c in inputs.text_columns])
            self.ids, self.types = encode_rows(tok, texts, inputs.max_length, inputs.truncation)
        if tok is not None:
            self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
            self.special = set(tok.all_special_ids)
            mask = tok.mask_token_id if tok.mask_token_id is not None else tok.unk_token_id
            self.mask_id = int(mask if mask is not None else 0)
        self.tabular = inputs.tabular.transform(frame) if inputs.tabular is not None else None
        # auxiliary targets (multi-task) ride with labelled rows only
        self.aux = inputs.aux(frame) if inputs.aux is not None and targets is not None else None
        self.length = len(frame)

    def set_epoch(self, seed: int) -> None:
        """Seed the augmentation draws of the coming epoch."""
        self.epoch_seed = seed
        if self.images:
            self.transform.set_random_seed(seed)

    def with_augment(self, augment: AugmentConfig | None) -> CompetitionDataset:
        """The same rows (encoded once) under another augmentation, with its own draws."""
        view = copy.copy(self)
        view.augment = augment
        if self.images:
            extra = build_image_augment(augment.image) if augment is not None else []
            view.transform = image_transform(self.inputs.image_size, extra)
        return view

    def __len__(self) -> int:
        return self.length

    def tensors(self, images: bool = True) -> dict[str, torch.Tensor]:
        """Every row at once, for a loader that holds them (no augmentation): images decoded
        and resized once, as uint8 N x 3 x S x S (normalised per batch, on the device); token
        ids right-padded to the longest row, with each row's ``length``. ``images=False``:
        without the images (a loader that reads them from the run's held images)."""
        out: dict[str, torch.Tensor] = {}
        if self.images and images:
            out["image"] = torch.from_numpy(resized_pixels(self.images, self.inputs.image_size))
        if self.ids and self.inputs.option_columns:
            out.update(option_tensors(self.ids, self.types, self.pad_id))
        elif self.ids:
            lengths = torch.tensor([len(ids) for ids in self.ids], dtype=torch.long)
            ids = torch.full((len(self.ids), int(lengths.max())), self.pad_id, dtype=torch.long)
            for row, seq in enumerate(self.ids):
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            out["input_ids"] = ids
            out["attention_mask"] = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
            if self.types is not None:
                types = torch.zeros_like(ids)
                for row, seq in enumerate(self.types):
                    types[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                out["token_type_ids"] = types
            out["length"] = lengths
        if self.tabular is not None:
            out["num"] = torch.from_numpy(np.ascontiguousarray(self.tabular["num"]))
            out["cat"] = torch.from_numpy(np.ascontiguousarray(self.tabular["cat"]))
        if self.targets is not None:
            out["target"] = torch.as_tensor(np.asarray(self.targets))
        if self.weights is not None:
            out["weight"] = torch.as_tensor(np.asarray(self.weights), dtype=torch.float32)
        if self.aux is not None:
            out["aux"] = torch.from_numpy(self.aux)
        return out

    def _image(self, i: int) -> torch.Tensor:
        """Row ``i``'s image, augmented, resized and normalised. An augmentation that cannot
        apply to it (a crop larger than a small image of a set of mixed sizes) is a config
        error naming the image, not an albumentations traceback mid-fold."""
        pixels = decode_rgb(self.images[i])
        try:
            return self.transform(image=pixels)["image"]
        except Exception as err:  # albumentations' own: CropSizeError is no ValueError
            if self.augment is None or not self.augment.image:
                raise
            height, width = pixels.shape[:2]
            raise ConfigError(
                f"'train.augment.image' cannot be applied to {self.images[i]} ({width} x "
                f"{height} pixels; augmentations see each image at its own size, before the "
                f"resize to 'model.image_size'): {type(err).__name__}: {err}") from None

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        seed, i = _split_key(key)
        if seed is not None and seed != self.epoch_seed:  # a persistent worker, new epoch
            self.epoch_seed = seed
            if self.images:  # as a worker started for this epoch would be (_seed_worker)
                info = get_worker_info()
                self.transform.set_random_seed(seed * 1000 + info.id if info else seed)
        item: dict[str, torch.Tensor] = {}
        rng = np.random.default_rng([self.epoch_seed, i]) if self.augment is not None else None
        if self.images:
            item["image"] = self._image(i)
        noise = self.augment.text if self.augment is not None else None
        if self.ids and self.inputs.option_columns:
            item.update(option_item(self.ids[i], None if self.types is None else self.types[i],
                                    self.pad_id, noise, rng, self.special, self.mask_id))
        elif self.ids:
            ids, types = self.ids[i], None if self.types is None else self.types[i]
            if rng is not None and noise is not None and types is not None:
                ids, types = noisy_segments(ids, types, noise, rng, self.special, self.mask_id)
            elif rng is not None and noise is not None:
                ids = noisy_tokens(ids, noise, rng, self.special, self.mask_id)
            item["input_ids"] = torch.tensor(ids, dtype=torch.long)
            item["attention_mask"] = torch.ones(len(ids), dtype=torch.long)
            if types is not None:
                item["token_type_ids"] = torch.tensor(types, dtype=torch.long)
        if self.tabular is not None:
            num, cat = self.tabular["num"][i], self.tabular["cat"][i]
            if rng is not None and self.augment is not None and self.augment.tabular is not None:
                num, cat = noisy_row(num, cat, self.tabular["num"], self.tabular["cat"],
                                     self.augment.tabular, rng)
            item["num"] = torch.from_numpy(np.ascontiguousarray(num))
            item["cat"] = torch.from_numpy(np.ascontiguousarray(cat))
        if self.targets is not None:
            item["target"] = torch.as_tensor(self.targets[i])
        if self.weights is not None:
            item["weight"] = torch.as_tensor(self.weights[i], dtype=torch.float32)
        if self.aux is not None:
            item["aux"] = torch.from_numpy(self.aux[i])
        return item


class CombinedDataset(ConcatDataset):  # type: ignore[type-arg]
    """Training rows followed by pseudo-labelled rows, each part with its own draws."""

    epoch_seed = 0

    def set_epoch(self, seed: int) -> None:
        """Seed every part's augmentation draws of the coming epoch."""
        self.epoch_seed = seed
        _seed_each(list(self.datasets), seed)

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        seed, i = _split_key(key)
        if seed is None:
            return super().__getitem__(i)  # type: ignore[no-any-return]
        part = bisect.bisect_right(self.cumulative_sizes, i)
        start = self.cumulative_sizes[part - 1] if part else 0
        return self.datasets[part][(seed + _PART_STRIDE * part, i - start)]  # as _seed_each


_PART_STRIDE = 1_000_003  # seed offset between the parts of a combined or multi-view dataset


def _seed_each(parts: list[Any], seed: int) -> None:
    """Give each of several datasets its own augmentation draws for the coming epoch."""
    for k, part in enumerate(parts):
        part.set_epoch(seed + _PART_STRIDE * k)


class ViewsDataset(Dataset[dict[str, torch.Tensor]]):
    """Several augmented views of each row, as keys ``<view>/<input>`` (see :func:`view_of`);
    each view draws its own augmentations."""

    def __init__(self, views: dict[str, CompetitionDataset]) -> None:
        self.views = views
        self.inputs = next(iter(views.values())).inputs

    epoch_seed = 0

    def set_epoch(self, seed: int) -> None:
        """Seed every view's augmentation draws of the coming epoch."""
        self.epoch_seed = seed
        _seed_each(list(self.views.values()), seed)

    def __len__(self) -> int:
        return len(next(iter(self.views.values())))

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        seed, i = _split_key(key)
        return {f"{name}/{k}": value for part, (name, view) in enumerate(self.views.items())
                for k, value in view[i if seed is None else (seed + _PART_STRIDE * part, i)]
                .items()}


def view_of(batch: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The inputs of view ``name`` in a batch of a :class:`ViewsDataset`."""
    prefix = f"{name}/"
    return {k.removeprefix(prefix): v for k, v in batch.items() if k.startswith(prefix)}


def _parts(dataset: Dataset[Any]) -> list[Any]:
    """The :class:`CompetitionDataset` objects a (combined or multi-view) dataset reads."""
    if isinstance(dataset, ConcatDataset):
        return [p for part in dataset.datasets for p in _parts(part)]
    if isinstance(dataset, ViewsDataset):
        return list(dataset.views.values())
    return [dataset]


@dataclass
class ModelInputs:
    """What the model's encoders read, and how to make it from a frame."""

    image_root: Path = Path(".")
    image_size: int = 0  # 0: no image input
    text_columns: list[str] = field(default_factory=list)
    tokenizer: Any = None  # a transformers tokenizer, or None: no text input
    max_length: int = 256
    truncation: str = "head"
    tabular: TabularEncoder | None = None
    row_columns: list[str] = field(default_factory=list)  # rows as text: tokenised instead
    # multiple choice: the text columns read one by one after the others, in class order
    option_columns: list[str] = field(default_factory=list)
    # frame -> auxiliary targets (n_rows x n_aux, NaN where unknown), or None
    aux: Callable[[pd.DataFrame], np.ndarray] | None = None


def build_loader(
    dataset: Dataset[dict[str, torch.Tensor]],
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    generator: torch.Generator | None = None,
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader with the padding collate; shuffled loaders draw order from ``generator``.

    Workers persist across epochs (starting them again every epoch cost more than they
    saved); each epoch's augmentation seed reaches them with the rows (:class:`EpochSampler`),
    so a batch is the same as a freshly started worker would make.
    """
    tok = _parts(dataset)[0].inputs.tokenizer
    pad_id = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
    sampler = EpochSampler(dataset, shuffle, generator) if num_workers else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, pad_id=pad_id),
        generator=generator,
        drop_last=drops_lone_row(len(dataset), batch_size, shuffle),
        persistent_workers=bool(num_workers),
        worker_init_fn=_seed_worker if num_workers else None,
        pin_memory=torch.cuda.is_available(),
    )


class EpochSampler(Sampler[tuple[int, int]]):
    """Every row of ``dataset``, tagged with its epoch seed as it is when the epoch starts
    (the trainer seeds the dataset first), shuffled or in order.

    The order comes from the seed ``generator`` was last given (the trainer gives one per
    epoch), not from its current state: a DataLoader draws from it when it starts workers,
    which persistent workers do once, so a drawn order would differ between the first epoch
    and the others.
    """

    def __init__(self, dataset: Any, shuffle: bool,
                 generator: torch.Generator | None = None) -> None:
        self.dataset, self.shuffle = dataset, shuffle
        self.generator = generator or torch.Generator()

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = int(getattr(self.dataset, "epoch_seed", 0))
        rows = range(len(self.dataset))
        if self.shuffle:
            draws = torch.Generator().manual_seed(self.generator.initial_seed())
            rows = torch.randperm(len(self.dataset), generator=draws).tolist()
        return ((seed, i) for i in rows)


def _seed_worker(worker_id: int) -> None:
    """Give each loader worker its own image-augmentation stream for the epoch."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    for part in _parts(info.dataset):
        if isinstance(part, CompetitionDataset) and part.images:
            part.transform.set_random_seed(part.epoch_seed * 1000 + worker_id)

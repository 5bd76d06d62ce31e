"""A fold's rows held as tensors on the training device, batches sliced there.

Streaming rows through a DataLoader decodes and augments every image, one by one, in the
main process each epoch, while the GPU waits. A :class:`MemoryLoader` decodes (or tokenises)
once, moves every row to the device, and per batch only indexes: images stay uint8 there
until the batch is augmented (in batches, :mod:`pipeline.data.device_augment`) and
normalised; token ids are cut to the batch's longest row; rows are visited longest first
when predicting, so short rows are not padded to long ones. :func:`build_fold_loader` picks
it or the streaming DataLoader (``train.loader``: auto, memory, stream).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from pipeline.data import held_images
from pipeline.data.augment import AugmentConfig
from pipeline.data.batching import TOKEN_KEYS, collate, drops_lone_row
from pipeline.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Batch,
    CompetitionDataset,
    build_loader,
)
from pipeline.data.device_augment import DeviceImageAugment
from pipeline.data.held_images import HeldRows
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

LOADER_MODES = ("auto", "memory", "stream")
_said: set[str] = set()  # reasons already logged: once per process, not once per fold


def held_augment(augment: AugmentConfig | None, dataset: CompetitionDataset | None = None,
                 key: str = "train.augment") -> DeviceImageAugment | str | None:
    """The device version of ``augment`` (the config's ``key``) for rows held on the device
    (None: nothing to draw), or the one-line reason they cannot be held. With ``dataset``,
    only the noise of inputs it has counts (a strong view's default text noise does not stop
    an image set)."""
    if augment is None:
        return None
    if augment.text is not None and (dataset is None or dataset.ids):
        return f"text noise ('{key}.text') is drawn per row"
    if augment.tabular is not None and (dataset is None or dataset.tabular is not None):
        return f"table noise ('{key}.tabular') is drawn per row"
    if dataset is not None and not dataset.images:
        return None
    return DeviceImageAugment.build(augment.image)


def memory_unsupported(augment: AugmentConfig | None,
                       dataset: CompetitionDataset | None = None,
                       key: str = "train.augment") -> str | None:
    """Why rows under ``augment`` cannot be held on the device (:func:`held_augment`), or
    None when they can."""
    built = held_augment(augment, dataset, key)
    return built if isinstance(built, str) else None


def check_loader_mode(mode: str) -> None:
    """Refuse a ``train.loader`` value outside :data:`LOADER_MODES`."""
    if mode not in LOADER_MODES:
        raise ConfigError(f"'train.loader' must be one of {list(LOADER_MODES)}. Got {mode!r}.")


def _competition_parts(dataset: Dataset[Any]) -> list[CompetitionDataset] | None:
    if isinstance(dataset, CompetitionDataset):
        return [dataset]
    if isinstance(dataset, ConcatDataset):
        parts = [_competition_parts(d) for d in dataset.datasets]
        if all(p is not None for p in parts):
            return [x for p in parts if p is not None for x in p]
    return None


def _concat(tables: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Row-wise concatenation of several parts' tensors (token ids padded to one width)."""
    if len(tables) == 1:
        return tables[0]
    out = {}
    for key in tables[0]:
        values = [t[key] for t in tables]
        if key in TOKEN_KEYS:
            width = max(v.shape[-1] for v in values)  # rows x (options x) tokens
            values = [torch.nn.functional.pad(v, (0, width - v.shape[-1])) for v in values]
        out[key] = torch.cat(values)
    return out


def _bytes(dataset: CompetitionDataset, images: bool = True) -> int:
    """About what the dataset's tensors will take (before building them); ``images=False``:
    without its images (the run holds them)."""
    n, inputs = len(dataset), dataset.inputs
    size = n * 3 * inputs.image_size**2 if dataset.images and images else 0
    # int64 ids and mask (and segment ids)
    size += (n * inputs.max_length * (24 if dataset.types else 16) *
             max(len(inputs.option_columns), 1)) if dataset.ids else 0
    if dataset.tabular is not None:
        size += dataset.tabular["num"].nbytes + dataset.tabular["cat"].nbytes
    return size


class MemoryLoader:
    """Batches of a dataset's rows, held as tensors on ``device``.

    Iterates like a DataLoader (``len``, ``batch_size``, ``dataset``, ``collate_fn`` for
    code that streams the same rows). Shuffled orders come from ``generator``, augmentation
    draws from the dataset's epoch seed, so a resumed epoch sees the same batches. With
    ``images`` (the run's held images), the images are read from there, not copied.
    """

    def __init__(self, dataset: Dataset[Any], parts: list[CompetitionDataset],
                 batch_size: int, shuffle: bool, generator: torch.Generator | None,
                 device: torch.device, augment: DeviceImageAugment | None,
                 images: HeldRows | None = None) -> None:
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.generator, self.device, self.augment = generator, device, augment
        self._parts = parts
        tok = parts[0].inputs.tokenizer
        pad_id = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
        self.collate_fn = functools.partial(collate, pad_id=pad_id)
        tensors = _concat([p.tensors(images=images is None) for p in parts])
        self._lengths = tensors.pop("length", None)  # on the host: cuts each batch's ids
        self._tensors = {k: v.to(device) for k, v in tensors.items()}
        self._images = images
        self._rows = len(images.positions) if images is not None else len(
            next(iter(self._tensors.values())))
        # ImageNet normalisation as one multiply-add on the device: x * scale + shift
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._scale, self._shift = 1 / (255 * std), -mean / std
        # predicting: longest rows first, so a batch pads only to rows of its own length
        self.row_order = (torch.argsort(self._lengths, descending=True, stable=True)
                          if self._lengths is not None and not shuffle else None)

    @property
    def rows(self) -> int:
        """How many rows are held."""
        return self._rows

    @property
    def nbytes(self) -> int:
        """What the held rows take on the device (the run's held images apart)."""
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def __len__(self) -> int:
        return math.ceil(self._batched / self.batch_size)

    @property
    def _batched(self) -> int:
        """The rows an epoch batches (a training epoch's lone last row left out)."""
        return self._rows - drops_lone_row(self._rows, self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[Batch]:
        # A DataLoader draws its workers' base seed (from its generator, else the global
        # one) before its order: the same draw keeps a streamed run's orders and dropout
        # draws, whichever loader runs
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if self.shuffle:
            order = torch.randperm(self._rows, generator=self.generator)[:self._batched]
        else:
            order = self.row_order if self.row_order is not None else torch.arange(self._rows)
        yield from self.batches_of(order, self._parts[0].epoch_seed)

    def batches_of(self, rows: torch.Tensor, seed: int) -> Iterator[Batch]:
        """Batches of the given rows, in that order, augmented with draws seeded by ``seed``."""
        draws = torch.Generator().manual_seed(seed) if self.augment is not None else None
        on_device = rows.to(self.device)  # one copy per epoch, then sliced there
        for start in range(0, len(rows), self.batch_size):
            stop = start + self.batch_size
            yield self.batch(on_device[start:stop], rows[start:stop], draws, self.augment)

    def batch(self, index: torch.Tensor, host_index: torch.Tensor, draws: torch.Generator | None,
              augment: DeviceImageAugment | None) -> Batch:
        """The rows at ``index`` (on the device; ``host_index`` the same on the host), images
        through ``augment`` with ``draws`` and normalised."""
        batch: Batch = {}
        if self._images is not None:  # rows of the run's images: a gather of their positions
            positions = self._images.positions.index_select(0, index)
            batch["image"] = self._pixels(self._images.pixels.index_select(0, positions),
                                          draws, augment)
        for key, values in self._tensors.items():
            # a table without category columns holds a zero-width 'cat': nothing to gather
            picked = (values.index_select(0, index) if values.numel()
                      else values.new_empty((len(index), *values.shape[1:])))
            if key == "image":
                picked = self._pixels(picked, draws, augment)
            elif key in TOKEN_KEYS and self._lengths is not None:
                picked = picked[..., : int(self._lengths[host_index].max())]
            batch[key] = picked
        return batch

    def _pixels(self, picked: torch.Tensor, draws: torch.Generator | None,
                augment: DeviceImageAugment | None) -> torch.Tensor:
        """uint8 images augmented (with ``draws``) and normalised, as float."""
        pixels = picked.float()
        if augment is not None and draws is not None:
            pixels = augment(pixels, draws)
        return torch.addcmul(self._shift, pixels, self._scale)


def stream_reason(parts: list[CompetitionDataset], unsupported: str | None,
                  device: torch.device, images_held: bool = False) -> str | None:
    """Why ``parts`` are streamed rather than held on ``device``: ``unsupported`` (an
    augmentation with no device version), or more bytes than the device has room for
    (``images_held``: their images are the run's, held already)."""
    if unsupported is not None:
        return unsupported
    need = sum(_bytes(p, images=not images_held) for p in parts)
    room = held_images.device_room(device)
    if need > room:
        return (f"the rows take ~{need / 2**30:.1f} GB and {device} has room for "
                f"{room / 2**30:.1f} GB")
    return None


def streaming(reason: str, mode: str) -> None:
    """Refuse to stream under ``train.loader: memory``; else say why, once per process."""
    if mode == "memory":
        raise ConfigError(f"'train.loader: memory' cannot hold these rows: {reason}; use "
                          "'auto' (streams instead) or 'stream'")
    if reason not in _said:
        _said.add(reason)
        log.info("rows are streamed from disk each epoch (%s)", reason)


def build_fold_loader(
    dataset: Dataset[Any], batch_size: int, shuffle: bool, num_workers: int,
    generator: torch.Generator | None = None, mode: str = "stream",
    device: torch.device | None = None,
) -> MemoryLoader | DataLoader[Batch]:
    """A :class:`MemoryLoader` when ``mode`` allows it and the rows fit, else a DataLoader.

    ``auto`` holds the rows when every augmentation has a device version and they take at
    most a third of the device's free memory, and says once why it streams otherwise; ``memory``
    insists (a ConfigError where it cannot); ``stream`` always streams.
    """
    check_loader_mode(mode)
    if mode == "stream":
        return build_loader(dataset, batch_size, shuffle, num_workers, generator)
    device = device or torch.device("cpu")
    parts = _competition_parts(dataset)
    built: DeviceImageAugment | str | None = None
    images: HeldRows | None = None
    if parts is None:
        reason: str | None = "each row is read as several augmented views"
    else:
        built = held_augment(parts[0].augment)
        if not isinstance(built, str):
            images = held_images.held_rows(parts, device)
        reason = stream_reason(parts, built if isinstance(built, str) else None, device,
                               images is not None)
    if reason is not None:
        streaming(reason, mode)
        return build_loader(dataset, batch_size, shuffle, num_workers, generator)
    assert parts is not None and not isinstance(built, str)
    loader = MemoryLoader(dataset, parts, batch_size, shuffle, generator, device, built, images)
    note = f"{len(dataset)} rows held on {device} ({loader.nbytes / 2**20:.0f} MB)"  # type: ignore[arg-type]
    if note.split(" ", 1)[1] not in _said:
        _said.add(note.split(" ", 1)[1])
        log.debug(note)
    return loader

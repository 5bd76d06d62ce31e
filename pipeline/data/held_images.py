"""A run's images held once on the training device, for every fold, epoch and prediction.

Without it each fold's :class:`~pipeline.data.memory_loader.MemoryLoader` builds its own copy
of its rows' images (resized and written channels first on the host, then moved to the
device): most of the 1.0-1.2 s a resnet50 fold at 224 px spent setting up on an H200 that was
not building the model, while the GPU waited.
A hand-written script decodes once into one device tensor and indexes it per fold; inside
:func:`holding_images` (a train or predict run) the pipeline does the same: the first loader
that asks fills one tensor with every image of the competition at its size and device, and
every loader after holds only its rows' positions in it.

When every image does not fit in a third of the device's free memory, nothing is held here
(said once) and each loader keeps its own rows, as outside a run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.data.datasets import CompetitionDataset, image_files, resized_pixels

if TYPE_CHECKING:
    from pipeline.competition import Competition

log = logging.getLogger(__name__)

__all__ = ["HeldImages", "HeldRows", "competition_images", "device_room", "held_rows",
           "holding_images"]


def device_room(device: torch.device) -> int:
    """Bytes held rows may take on ``device``: a third of what is free there (the validation
    rows come next, and the model, its gradients and activations need the rest); on the
    host, half of its available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 3
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 2**31


@dataclass(frozen=True)
class HeldRows:
    """A loader's images: rows ``positions`` (on the device) of the shared ``pixels``."""

    pixels: torch.Tensor  # uint8, N x 3 x S x S, every image of the run at one size
    positions: torch.Tensor  # int64, one per loader row


class HeldImages:
    """Every image of a run, filled per (device, size) on the first request."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._position: dict[str, int] = {}
        for path in paths:
            self._position.setdefault(str(path), len(self._position))
        self._paths = [Path(p) for p in self._position]
        self._pixels: dict[tuple[str, int], torch.Tensor | None] = {}  # None: did not fit

    def __len__(self) -> int:
        return len(self._paths)

    def rows(self, images: Sequence[Path], size: int, device: torch.device) -> HeldRows | None:
        """``images`` as positions in the run's pixels at ``size`` on ``device``, filling
        them on the first request; None when one of them is not the run's or they do not
        fit."""
        positions = [self._position.get(str(path), -1) for path in images]
        if not positions or min(positions) < 0:
            return None
        pixels = self.pixels(size, device)
        if pixels is None:
            return None
        return HeldRows(pixels, torch.tensor(positions, dtype=torch.long).to(device))

    def pixels(self, size: int, device: torch.device) -> torch.Tensor | None:
        """Every image at ``size`` on ``device`` (filled once), or None when they do not fit."""
        if device.type == "cuda" and device.index is None:  # 'cuda' is 'cuda:0': one fill
            device = torch.device("cuda", torch.cuda.current_device())
        key = (str(device), size)
        if key not in self._pixels:
            need, room = len(self._paths) * 3 * size * size, device_room(device)
            if need > room:
                log.info("the run's %d images take ~%.1f GB at %d px and %s has room for %.1f "
                         "GB: each fold holds its own rows", len(self._paths), need / 2**30,
                         size, device, room / 2**30)
                self._pixels[key] = None
            else:
                self._pixels[key] = torch.from_numpy(resized_pixels(self._paths, size)).to(device)
                log.info("%d images held on %s at %d px (%.0f MB) for every fold",
                         len(self._paths), device, size, need / 2**20)
        return self._pixels[key]


_active: list[HeldImages] = []  # the innermost run's images, while one runs


@contextmanager
def holding_images(paths: Sequence[Path]) -> Iterator[HeldImages]:
    """Hold ``paths`` (a run's images: train and test) for the loaders built inside; their
    memory is released when the block ends."""
    held = HeldImages(paths)
    _active.append(held)
    try:
        yield held
    finally:
        _active.remove(held)


def held_rows(parts: list[CompetitionDataset], device: torch.device) -> HeldRows | None:
    """The images of a loader's ``parts`` as rows of the running run's held images
    (:meth:`HeldImages.rows`), or None: outside a run, parts without images or at two sizes,
    images that are not the run's, or too many to hold at once."""
    sizes = {p.inputs.image_size for p in parts}
    if not _active or not all(p.images for p in parts) or len(sizes) != 1:
        return None
    return _active[-1].rows([path for p in parts for path in p.images], sizes.pop(), device)


def competition_images(comp: Competition) -> list[Path]:
    """The image files of a competition's train and test rows, as its datasets name them."""
    root = Path(comp.cfg.dir)  # the root model_inputs gives the datasets
    return image_files(comp.train, root) + image_files(comp.test, root)

"""Several augmented views of the unlabelled rows, held once on the training device.

Consistency training reads each unlabelled row as two or more views (FixMatch: weak and
strong; UDA: clean and strong; MixMatch: K weak ones). Streamed, every view of every row runs
albumentations in the main process: 15% of a FixMatch run's time on the CPU (resnet18 at
32 px, ratio 3), and on a GPU the device waits for it. :class:`MemoryViews` decodes the rows
and moves them to the device once per fit; a batch is the same rows through each view's
:class:`~pipeline.data.device_augment.DeviceImageAugment`, each with its own draws.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pipeline.data.batching import drops_lone_row
from pipeline.data.datasets import Batch, ViewsDataset
from pipeline.data.device_augment import DeviceImageAugment
from pipeline.data.held_images import HeldRows, held_rows
from pipeline.data.memory_loader import (
    MemoryLoader,
    check_loader_mode,
    held_augment,
    stream_reason,
    streaming,
)

__all__ = ["MemoryViews", "memory_views"]


class MemoryViews:
    """Shuffled batches of a :class:`ViewsDataset`'s rows (keys ``<view>/<input>``), the rows
    held on ``device``. Orders come from ``generator``, each view's draws from its epoch
    seed (:meth:`ViewsDataset.set_epoch`), so a resumed epoch sees the same batches."""

    def __init__(self, views: ViewsDataset, batch_size: int, generator: torch.Generator,
                 device: torch.device, augments: dict[str, DeviceImageAugment | None],
                 images: HeldRows | None = None) -> None:
        self.dataset, self.batch_size, self.generator = views, batch_size, generator
        first = next(iter(views.views.values()))
        # one copy of the rows for every view (or the run's held images); MemoryLoader holds
        # and normalises them
        self.rows = MemoryLoader(first, [first], batch_size, True, generator, device, None,
                                 images)
        self.augments = augments

    def __len__(self) -> int:
        return -(-self._batched // self.batch_size)

    @property
    def _batched(self) -> int:
        """The rows an epoch batches: a lone last row left out, as a streamed epoch does."""
        return self.rows.rows - drops_lone_row(self.rows.rows, self.batch_size, shuffle=True)

    def __iter__(self) -> Iterator[Batch]:
        # the draw a DataLoader makes for its workers' base seed before its order (as
        # MemoryLoader): the same orders as streaming the views
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(self.rows.rows, generator=self.generator)[:self._batched]
        draws = {name: torch.Generator().manual_seed(view.epoch_seed)
                 for name, view in self.dataset.views.items()}
        on_device = order.to(self.rows.device)
        for start in range(0, len(order), self.batch_size):
            stop = start + self.batch_size
            index, host = on_device[start:stop], order[start:stop]
            yield {f"{name}/{key}": value for name, augment in self.augments.items()
                   for key, value in self.rows.batch(index, host, draws[name], augment).items()}


def memory_views(views: ViewsDataset, batch_size: int, generator: torch.Generator, mode: str,
                 device: torch.device) -> MemoryViews | None:
    """The views held on ``device`` when ``mode`` (``train.loader``) allows it, every view's
    augmentation has a device version and the rows fit; else None (stream them, said once).
    ``memory`` insists on the fold's rows only: views that cannot be held (text or table
    noise, a custom strong view) stream, as under ``auto``, rather than stop a run whose
    supervised warm-up has already trained."""
    check_loader_mode(mode)
    if mode == "stream":
        return None
    # the strong view (fixmatch, uda) is configured under train.consistency.strong
    built = {name: held_augment(view.augment, view,
                                "train.consistency.strong" if name == "strong" else "train.augment")
             for name, view in views.views.items()}
    unsupported = next((f"unlabelled view {name!r}: {b}" for name, b in built.items()
                        if isinstance(b, str)), None)
    first = next(iter(views.views.values()))
    images = held_rows([first], device) if unsupported is None else None
    reason = stream_reason([first], unsupported, device, images is not None)
    if reason is not None:
        streaming(reason, "auto")
        return None
    augments = {name: b for name, b in built.items() if not isinstance(b, str)}
    return MemoryViews(views, batch_size, generator, device, augments, images)

"""An endless stream of training batches whose position can be saved and restored exactly.

Epoch e visits the dataset in the order torch.randperm(n, generator=seed + e); the position is
(epoch, batch index within the epoch). Restoring it rebuilds that epoch's order and skips the
batches already used (by index, without loading them), so a resumed run sees the same images in
the same order as an uninterrupted one, whatever the number of workers. Nothing here touches the
global RNG.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class _EpochOrder(Sampler[int]):
    """Indices of one epoch in a seeded order, starting after `skip` samples."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, epoch, skip

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return iter(order[self.skip:].tolist())

    def __len__(self) -> int:
        return self.n - self.skip


class BatchStream:
    """next(stream) -> a batch of `batch_size` images; `position` / `restore()` for exact resume."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, num_workers: int = 0,
                 pin_memory: bool = False):
        if len(dataset) < batch_size:
            raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch ({batch_size})")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.batches_per_epoch = len(dataset) // batch_size  # the last partial batch is dropped
        self.epoch, self.index = 0, 0
        self._iter: Iterator | None = None

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def restore(self, position: dict) -> None:
        if position["seed"] != self.seed:
            raise ValueError("data position was saved with another seed")
        self.epoch, self.index = position["epoch"], position["index"]
        self._iter = None

    def _start_epoch(self) -> None:
        sampler = _EpochOrder(len(self.dataset), self.seed, self.epoch, self.index * self.batch_size)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            # a private generator: worker seeding must not draw from the global RNG
                            generator=torch.Generator().manual_seed(self.seed),
                            persistent_workers=False)
        self._iter = iter(loader)

    def __next__(self):
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self._start_epoch()
        batch = next(self._iter)
        self.index += 1
        return batch

    def __iter__(self):
        return self

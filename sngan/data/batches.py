"""An endless stream of training batches whose position can be saved and restored exactly.

Epoch e visits the dataset in the order torch.randperm(n, generator=seed + e), cut into global
batches of `batch_size`; the position is (epoch, global batch index within the epoch). Under
data parallelism rank r of N takes the r-th slice of batch_size / N images of each global batch,
so the N ranks together see exactly the images a single process would, and a position saved at
one world size resumes at another. Restoring a position rebuilds that epoch's order and skips
the batches already used (by index, without loading them), whatever the number of workers.
Nothing here touches the global RNG.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from sngan.run.errors import UserError


class _EpochOrder(Sampler[int]):
    """This rank's indices of one epoch, in the seeded order, from global batch `start` on.

    One instance serves every epoch: the stream sets `epoch` and `start` before each pass, and a
    DataLoader with persistent workers asks for a fresh iterator each time.
    """

    def __init__(self, n: int, seed: int, global_batch: int, rank: int, world_size: int):
        self.n, self.seed, self.global_batch = n, seed, global_batch
        self.local_batch = global_batch // world_size
        self.offset = rank * self.local_batch
        self.epoch, self.start = 0, 0

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        batches = order[: self.n // self.global_batch * self.global_batch].view(-1, self.global_batch)
        mine = batches[self.start:, self.offset:self.offset + self.local_batch]
        return iter(mine.reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.n // self.global_batch - self.start) * self.local_batch


class _WorkerError:
    """A UserError raised inside a DataLoader worker, carried back as a value: the loader would
    wrap the exception in the worker's traceback, and the user should see the same one line as
    with num_workers=0."""

    def __init__(self, message: str):
        self.message = message


class _Carried(Dataset):
    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        try:
            return self.base[index]
        except UserError as e:
            return _WorkerError(str(e))


def _collate(items: list):
    return next((item for item in items if isinstance(item, _WorkerError)), None) or default_collate(items)


class BatchStream:
    """next(stream) -> this rank's part of the next global batch; `position` / `restore()` for exact resume."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, num_workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, world_size: int = 1):
        if len(dataset) < batch_size:
            raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch ({batch_size})")
        if batch_size % world_size:
            raise ValueError(f"the global batch ({batch_size}) must split evenly over {world_size} ranks")
        self.seed, self.size = seed, len(dataset)
        self.batches_per_epoch = len(dataset) // batch_size  # the last partial batch is dropped
        self.epoch, self.index = 0, 0
        self._order = _EpochOrder(len(dataset), seed, batch_size, rank, world_size)
        self._loader = DataLoader(_Carried(dataset), batch_size=self._order.local_batch, sampler=self._order,
                                  collate_fn=_collate,
                                  num_workers=num_workers, pin_memory=pin_memory,
                                  persistent_workers=num_workers > 0,
                                  # a private generator: worker seeding must not draw from the global RNG
                                  generator=torch.Generator().manual_seed(seed))
        self._iter: Iterator | None = None

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "size": self.size}

    def restore(self, position: dict) -> None:
        if position["seed"] != self.seed:
            raise ValueError("data position was saved with another seed")
        if position.get("size", self.size) != self.size:  # (checkpoints before the size was kept: unchecked)
            raise UserError(f"the data set has {self.size} images where the run trained on {position['size']}: "
                            "every later batch would differ; resume with the data it trained on (dataset.root)")
        self.epoch, self.index = position["epoch"], position["index"]
        self._iter = None

    def __next__(self):
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self._order.epoch, self._order.start = self.epoch, self.index
            self._iter = iter(self._loader)
        batch = next(self._iter)
        if isinstance(batch, _WorkerError):
            raise UserError(batch.message)
        self.index += 1
        return batch

    def __iter__(self):
        return self

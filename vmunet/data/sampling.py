"""Training order and augmentation drawn from ``(seed, epoch)``, so a resumed epoch replays exactly.

A run killed mid-epoch resumes from ``last.ckpt``, written at the end of the previous epoch, and
replays the interrupted epoch from its start. For that epoch to be the same, nothing in the data
path may depend on a random stream that advanced before the kill (the global torch generator, a
worker's generator, a transform's ``RandomState`` carried across epochs):

* :class:`EpochSampler` shuffles with a generator seeded by ``seed + epoch`` (as
  ``DistributedSampler`` does, and shards across ranks like it) and yields ``(epoch, index)`` keys;
* :class:`EpochSeededDataset` turns a key into an item after seeding the dataset's random
  transforms with :func:`item_seed` ``(seed, epoch, index)``: the item is the same whichever worker
  process draws it and whatever it drew before, so the number of workers does not matter either;
* the data loader has its own generator, so creating an iterator does not draw from torch's
  global one (what the model's drop-path uses; ``vmunet fit`` reseeds that at every epoch start).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def run_seed() -> int:
    """The run's seed: ``seed_everything``'s (Lightning exports it as ``PL_GLOBAL_SEED``), else torch's."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None else int(torch.initial_seed() % 2**32)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one item of one epoch (NumPy ``SeedSequence``: well mixed, no overlaps)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Shuffled indices of epoch ``e`` from ``seed + e``, as ``(epoch, index)`` keys.

    A ``DistributedSampler`` (one replica unless a process group is running), so Lightning does not
    replace or wrap it under DDP. ``epoch`` is the first epoch this sampler serves: on resume
    Lightning creates the first iterator before it calls ``set_epoch``, so the data module passes
    ``trainer.current_epoch`` here.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int = 0, shuffle: bool = True) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        super().__init__(dataset, num_replicas=None if distributed else 1, rank=None if distributed else 0,
                         shuffle=shuffle, seed=seed, drop_last=False)
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, int(i)) for i in super().__iter__())


def _random_state_owner(dataset: Any) -> Any:
    """What to call ``set_random_state`` on: the dataset itself or its (MONAI) transform."""
    if hasattr(dataset, "set_random_state"):
        return dataset
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_state"):
        return transform
    return None


class EpochSeededDataset(Dataset):
    """Items by ``(epoch, index)`` key; random transforms seeded with ``item_seed(seed, epoch, index)``.

    ``dataset`` is a MONAI dataset (its ``transform`` is seeded) or any dataset with MONAI's
    ``set_random_state``; one without either has no random transforms to seed.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)
        self._owner = _random_state_owner(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if self._owner is not None:
            self._owner.set_random_state(seed=item_seed(self.seed, epoch, index))
        return self.dataset[index]


def epoch_seeded_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool,
                        epoch: int = 0, seed: int | None = None):
    """Shuffled training loader whose order and augmentation depend only on ``(seed, epoch)``."""
    from monai.data import list_data_collate
    from torch.utils.data import DataLoader

    seed = run_seed() if seed is None else int(seed)
    return DataLoader(EpochSeededDataset(dataset, seed), batch_size=batch_size,
                      sampler=EpochSampler(dataset, seed, epoch), num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      collate_fn=list_data_collate, generator=torch.Generator().manual_seed(seed))

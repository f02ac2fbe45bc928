"""Pieces shared by the data modules: volume-wise eval datasets, loaders, size parsing."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vmunet.data.errors import DataError
from vmunet.errors import ConfigError

logger = logging.getLogger(__name__)


def find_data_error(err: BaseException) -> DataError | None:
    """The DataError MONAI wrapped (``RuntimeError("applying transform ...") from e``), if any."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, DataError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def surface_data_errors() -> Iterator[None]:
    """Re-raise a wrapped DataError itself, so users see the message naming the file."""
    try:
        yield
    except RuntimeError as err:
        found = find_data_error(err)
        if found is None:
            raise
        raise found.with_traceback(None) from None


def transformed_dataset(items: Sequence[dict[str, Any]], transform: Callable, cache: bool,
                        cache_dir: str | None = None):
    """A MONAI Dataset (plain, CacheDataset in memory, or PersistentDataset on disk) whose
    items raise our DataError (not MONAI's wrapper) for bad files."""
    from monai.data import CacheDataset, Dataset, PersistentDataset

    if cache_dir:
        base = PersistentDataset
        kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    elif cache:
        base = CacheDataset
        kwargs = {"cache_rate": 1.0, "num_workers": None, "progress": False}
    else:
        base, kwargs = Dataset, {}

    class _Surfaced(base):  # type: ignore[misc, valid-type]
        def __getitem__(self, index):
            with surface_data_errors():
                return super().__getitem__(index)

    with surface_data_errors():
        return _Surfaced(list(items), transform, **kwargs)


def image_size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``[224, 224]`` -> ``(224, 224)``; rejects non-positive sizes (``data.image_size``)."""
    hw = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ConfigError(f"data.image_size: expected a positive integer or [H, W], got {image_size!r}")
    return hw  # type: ignore[return-value]


class VolumeDataset(Dataset):
    """One whole case per item for volume-wise evaluation.

    ``loaders[i]()`` returns ``(image (D, C, H, W) or (D, H, W) float32, label (D, H, W) int,
    spacing (3,) mm, case name)`` at native size. Items: ``image`` (D, C, h, w) at model size
    (resized like the training slices), ``label`` int64 (D, H, W) native, ``case``, ``spacing``.
    """

    def __init__(self, loaders: Sequence[Callable[[], tuple[np.ndarray, np.ndarray, Sequence[float], str]]],
                 image_size: Sequence[int], image_mode: str = "bicubic", cache: bool = False) -> None:
        from monai.transforms import Resize

        self.loaders = list(loaders)
        self.resize = Resize(spatial_size=tuple(image_size), mode=image_mode)
        self.cache = cache
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i in self._cache:
            return self._cache[i]
        image, label, spacing, case = self.loaders[i]()
        img = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
        if img.ndim == 3:
            img = img[:, None]
        d, c = img.shape[:2]
        # Resize treats the leading axis as channels: resize all D*C planes at once.
        small = self.resize(img.reshape(d * c, *img.shape[2:]))
        small = torch.as_tensor(np.asarray(small), dtype=torch.float32).reshape(d, c, *small.shape[1:])
        item = {
            "image": small.contiguous(),
            "label": torch.as_tensor(np.ascontiguousarray(label), dtype=torch.long),
            "case": case,
            "spacing": torch.as_tensor(np.asarray(spacing, dtype=np.float32)),
        }
        if self.cache:
            self._cache[i] = item
        return item


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's quota of cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_caps_logged: set[tuple[int, int]] = set()  # (requested, used) pairs already logged by this process


def effective_workers(num_workers: int) -> int:
    """``num_workers`` capped at the available cores: more loader processes than cores only
    compete with the training threads (a paper config asks for 8 workers; this machine has 2).
    The cap is logged once per process: a fit builds a training and a validation loader."""
    n = min(int(num_workers), available_cores())
    if n < num_workers and (num_workers, n) not in _caps_logged:
        _caps_logged.add((num_workers, n))
        logger.info("DataLoader: %d workers requested, %d cores available: using %d", num_workers,
                    available_cores(), n)
    return n


def train_loader(dataset: Any, batch_size: int, num_workers: int, pin_memory: bool, epoch: int = 0):
    """Shuffled training loader; order and augmentation depend only on the run's seed and the epoch
    (see :mod:`vmunet.data.sampling`). ``epoch``: the first epoch it serves (:func:`first_epoch`)."""
    from vmunet.data.sampling import epoch_seeded_loader

    return epoch_seeded_loader(dataset, batch_size, effective_workers(num_workers), pin_memory, epoch=epoch)


def first_epoch(datamodule: Any) -> int:
    """The epoch a new training loader starts at (a resumed run's), else 0.

    Lightning's own ``set_epoch`` value (``fit_loop.epoch_progress.current.processed``): when the
    loader is built, ``trainer.current_epoch`` of a resumed run still lags by one, and loader
    workers draw their first indices right then.
    """
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return 0
    return int(trainer.fit_loop.epoch_progress.current.processed)


def eval_loader(dataset: Any, batch_size: int, num_workers: int, pin_memory: bool):
    """Ordered loader with torch's default collate (strings -> lists, tensors stacked)."""
    from torch.utils.data import DataLoader

    num_workers = effective_workers(num_workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory)

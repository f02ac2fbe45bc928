"""What the Synapse, ISIC and NIfTI data modules share: their settings, loaders and validation split.

Each data set's module declares its own ``__init__`` (its CLI/config keys and defaults, with their
help) and ``setup``; this base keeps one copy of the rest, through Lightning's public hooks only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import numpy as np

from vmunet.data.common import eval_loader, first_epoch, image_size_hw, train_loader
from vmunet.errors import ConfigError


def check_setting(ok: bool, key: str, expected: str, value: Any) -> None:
    """Raise the one-line ConfigError ``data.<key>: expected <expected>, got <value>`` unless ``ok``
    (raised from ``__init__``, so ``vmunet fit`` prints it as is, before anything starts)."""
    if not ok:
        raise ConfigError(f"data.{key}: expected {expected}, got {value!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_split_settings(val_cases: int, seed: int) -> None:
    """The validation split's settings: ``val_cases`` >= 0 and a seed NumPy accepts."""
    check_setting(is_int(val_cases) and val_cases >= 0, "val_cases", "an integer >= 0 (0: no validation)", val_cases)
    check_setting(is_int(seed) and 0 <= seed < 2**32, "seed", "an integer in [0, 2**32)", seed)


def held_out_cases(count: int, val_cases: int, seed: int, where: str = "") -> list[int]:
    """Sorted indices of the ``val_cases`` of ``count`` training cases held out for validation,
    drawn without replacement by ``numpy.random.default_rng(seed)``; ``where`` ends the error."""
    check_split_settings(val_cases, seed)
    if val_cases >= count:
        raise ConfigError(f"data.val_cases={val_cases} leaves no training case ({count} training cases{where}); "
                          f"expected at most {count - 1}")
    return sorted(np.random.default_rng(seed).choice(count, size=val_cases, replace=False).tolist())


class SegmentationDataModule(pl.LightningDataModule):
    """Base of the segmentation data modules.

    A subclass calls ``super().__init__(...)`` and ``self.save_hyperparameters()``, then sets
    ``class_names``, ``num_classes``, ``in_chans`` (``vmunet fit`` links the last two into the model)
    and ``preprocessing`` (the record inference applies); the class attribute ``eval_mode`` says
    whether evaluation is volume-wise or image-wise. Its ``setup`` puts the datasets the stage
    needs into ``self._ds`` under ``train``, ``val`` and ``test``.

    Loaders: training shuffled, its order and augmentation drawn from (run seed, epoch) whatever the
    worker count (:mod:`vmunet.data.sampling`); evaluation in order; both with the workers capped at
    the available cores (:func:`vmunet.data.common.effective_workers`).
    """

    eval_mode: ClassVar[Literal["volume", "image"]]

    def __init__(self, root: str, batch_size: int, num_workers: int, image_size: int | tuple[int, int],
                 pin_memory: bool, eval_batch_size: int) -> None:
        super().__init__()
        check_setting(is_int(batch_size) and batch_size >= 1, "batch_size", "an integer >= 1", batch_size)
        check_setting(is_int(eval_batch_size) and eval_batch_size >= 1, "eval_batch_size", "an integer >= 1",
                      eval_batch_size)
        check_setting(is_int(num_workers) and num_workers >= 0, "num_workers", "an integer >= 0 (0: load in "
                      "the main process)", num_workers)
        self.root = Path(root)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.eval_batch_size = eval_batch_size
        self.image_size = image_size_hw(image_size)
        self._ds: dict[str, Any] = {}

    def train_dataloader(self):
        return train_loader(self._ds["train"], self.batch_size, self.num_workers, self.pin_memory,
                            epoch=first_epoch(self))

    def val_dataloader(self):
        if len(self._ds["val"]) == 0:  # no validation cases (``val_cases: 0``): Lightning skips validation
            return []
        return eval_loader(self._ds["val"], self.eval_batch_size, self.num_workers, self.pin_memory)

    def test_dataloader(self):
        return eval_loader(self._ds["test"], self.eval_batch_size, self.num_workers, self.pin_memory)

"""Tiny in-memory data modules that follow the data-module contract, for training tests.

Volume mode (Synapse-like): bright discs of known classes on noise. Image mode (ISIC-like): one
bright disc per RGB image, binary labels. Everything is generated from a seed, so runs repeat.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def disc_slices(rng: np.random.Generator, depth: int, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth, size, size) image and label with one disc per foreground class (absent on end slices)."""
    label = np.zeros((depth, size, size), np.int64)
    image = rng.normal(0.0, 0.1, (depth, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    for c in range(1, num_classes):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        r = rng.integers(size // 10, size // 6)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        label[1:depth - 1, disc] = c
        image[1:depth - 1, disc] += 0.5 * c
    return image, label


class _Slices(Dataset):
    def __init__(self, n: int, size: int, num_classes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.items = [tuple(a[1:2] for a in disc_slices(rng, 3, size, num_classes)) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image, label = self.items[i]
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(label)}


class _Volumes(Dataset):
    def __init__(self, n: int, depth: int, size: int, native: int, num_classes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            image, label = disc_slices(rng, depth, native, num_classes)
            small = torch.nn.functional.interpolate(torch.from_numpy(image)[:, None], size=(size, size),
                                                    mode="bilinear", align_corners=False)
            self.items.append((small, torch.from_numpy(label)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image, label = self.items[i]
        return {"image": image, "label": label, "case": f"case{i:04d}", "spacing": torch.tensor([3.0, 0.8, 0.8])}


class ToyVolumeData(pl.LightningDataModule):
    """Synapse-like: 2D training slices, volume-wise val/test at a native size != model size."""

    eval_mode = "volume"
    in_chans = 1

    def __init__(self, num_classes: int = 3, size: int = 32, native: int = 40, n_train: int = 16,
                 n_val: int = 3, depth: int = 5, batch_size: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = ["background", *[f"organ{c}" for c in range(1, num_classes)]]
        self.size, self.native, self.n_train, self.n_val = size, native, n_train, n_val
        self.depth, self.batch_size = depth, batch_size
        self.preprocessing = {
            "dataset": "synapse", "in_chans": 1, "image_size": [size, size], "class_names": self.class_names,
            "num_classes": num_classes, "intensity": {"mode": "window", "window": [-125.0, 275.0]},
            "orientation": "RAS", "slice_axis": 2,
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Slices(self.n_train, self.size, self.num_classes, 0), batch_size=self.batch_size,
                          shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Volumes(self.n_val, self.depth, self.size, self.native, self.num_classes, 1), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_Volumes(self.n_val, self.depth, self.size, self.native, self.num_classes, 2), batch_size=1)


class RecordedToyVolumeData(ToyVolumeData):
    """:class:`ToyVolumeData` that records its settings (``save_hyperparameters``) as the project's data
    modules do: what a checkpoint stores (``datamodule_hyper_parameters``) and a resume compares."""

    def __init__(self, num_classes: int = 3, size: int = 32, native: int = 40, n_train: int = 16,
                 n_val: int = 3, depth: int = 5, batch_size: int = 4) -> None:
        super().__init__(num_classes, size, native, n_train, n_val, depth, batch_size)
        self.save_hyperparameters()


class _Images(Dataset):
    def __init__(self, n: int, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            image, label = disc_slices(rng, 3, size, 2)
            self.items.append((np.repeat(image[1:2], 3, axis=0), (label[1:2] > 0).astype(np.float32)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image, label = self.items[i]
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(label), "case": f"img{i:04d}"}


class ToyImageData(pl.LightningDataModule):
    """ISIC-like: binary RGB images, image-wise evaluation."""

    eval_mode = "image"
    in_chans = 3
    num_classes = 1
    class_names = ["background", "lesion"]

    def __init__(self, size: int = 32, n_train: int = 16, n_val: int = 6, batch_size: int = 4) -> None:
        super().__init__()
        self.size, self.n_train, self.n_val, self.batch_size = size, n_train, n_val, batch_size
        self.preprocessing = {
            "dataset": "isic", "in_chans": 3, "image_size": [size, size], "class_names": self.class_names,
            "num_classes": 1, "intensity": {"mode": "zscore", "mean": [0.0] * 3, "std": [1.0] * 3},
            "orientation": None, "slice_axis": None,
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.n_train, self.size, 0), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.n_val, self.size, 1), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.n_val, self.size, 2), batch_size=self.batch_size)


class WeightRecorder(pl.Callback):
    """Copies of the model's parameters after every optimizer step (``steps``) and as the first
    validation batch of each epoch sees them (``validated``), for checking weight averaging."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _params(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(self._params(pl_module))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append(self._params(pl_module))


class CheckpointFiles(pl.Callback):
    """The files in the best checkpoint's folder and the epoch stored in its ``last.ckpt`` when each
    training epoch starts (``seen[epoch] = (names, last_epoch or None)``): what an epoch before it left."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, tuple[list[str], int | None]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        from pathlib import Path

        folder = Path(trainer.checkpoint_callback.dirpath)
        names = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        last = torch.load(folder / "last.ckpt", weights_only=True)["epoch"] if "last.ckpt" in names else None
        self.seen[trainer.current_epoch] = (names, last)

"""Callbacks: ``last.ckpt`` every epoch, per-epoch reseeding, the validation image grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vmunet.data.fileio import atomic_path

log = logging.getLogger(__name__)

# distinct colours for label values 1..; background stays the plain image
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
], dtype=np.float32) / 255.0


def last_checkpoint(dirpath: str | None = None) -> ModelCheckpoint:
    """A stock ``ModelCheckpoint`` that keeps ``last.ckpt`` = the end of the latest epoch.

    With no monitor and ``save_top_k=1`` Lightning writes a checkpoint every epoch and removes the
    previous one; naming it ``last`` makes that one file. (``save_last=True`` on the best-score
    callback refreshes ``last.ckpt`` only when the best changes in Lightning 2.6, so a resumed run
    would repeat epochs.) ``enable_version_counter=False``: a resumed run overwrites it, never
    ``last-v1.ckpt``.
    """
    return ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                           enable_version_counter=False)


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's global RNGs for one epoch (NumPy ``SeedSequence``, 32 bits)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank, 0x5EED]).generate_state(1)[0])


class EpochSeed(pl.Callback):
    """Seed Python, NumPy and torch (CPU + CUDA) from ``(seed, epoch, rank)`` when a training epoch starts.

    The model's random layers (drop-path, dropout) draw from torch's global generator; the data
    path does not (:mod:`vmunet.data.sampling`). Reseeding at every epoch start makes an epoch's
    draws independent of everything before it, so a run resumed from ``last.ckpt`` replays the
    interrupted epoch exactly, on any number of ranks. ``seed``: default the run's
    (``seed_everything``).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import random

        from vmunet.data.sampling import run_seed

        seed = rank_seed(run_seed() if self.seed is None else self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Gray image (H, W) min-max scaled, labels > 0 blended in palette colours; -> (H, W, 3) in [0, 1]."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    label = np.asarray(label).astype(np.int64)
    fg = label > 0
    colours = PALETTE[(label[fg] - 1) % len(PALETTE)]
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours
    return rgb


def preview_grid(samples: list[tuple[Any, Any, Any]], min_size: int = 128) -> np.ndarray:
    """Rows of [image, image + ground truth, image + prediction]; -> uint8 (rows*H, 3*W, 3).

    Tiles smaller than ``min_size`` are enlarged by an integer factor (nearest neighbour) so tiny
    test images stay visible; samples of different sizes are padded to the largest one.
    """
    tiles = []
    for image, gt, pred in samples:
        image, gt, pred = (np.asarray(t.float() if isinstance(t, torch.Tensor) else t) for t in (image, gt, pred))
        row = [overlay(image, np.zeros_like(gt)), overlay(image, gt), overlay(image, pred)]
        factor = max(1, -(-min_size // max(image.shape)))
        tiles.append([t.repeat(factor, axis=0).repeat(factor, axis=1) for t in row])
    h = max(t[0].shape[0] for t in tiles)
    w = max(t[0].shape[1] for t in tiles)
    canvas = np.zeros((h * len(tiles), w * 3, 3), dtype=np.float32)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            canvas[r * h:r * h + tile.shape[0], c * w:c * w + tile.shape[1]] = tile
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)


class ValidationImageGrid(pl.Callback):
    """Save a PNG grid of the first ``num_samples`` validation items each epoch, and log it to TensorBoard.

    The module's ``validation_step`` returns ``{"preview": (image2d, gt2d, pred2d)}``; files go to
    ``<log_dir>/val_images/epoch_NNN.png``.
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1) -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"num_samples and every_n_epochs must be >= 1, got {num_samples}, {every_n_epochs}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self._samples: list[tuple[Any, Any, Any]] = []

    def _due(self, trainer: pl.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.is_global_zero and self._due(trainer) and isinstance(outputs, dict) and "preview" in outputs:
            if len(self._samples) < self.num_samples:
                self._samples.append(outputs["preview"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective call under DDP: every rank
        if not trainer.is_global_zero or not self._samples:
            return
        grid = preview_grid(self._samples)
        self._samples = []
        out_dir = Path(log_dir) / "val_images"
        path = out_dir / f"epoch_{trainer.current_epoch:03d}.png"
        _save_png(grid, path)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
                experiment.add_image("val/preview", grid, global_step=trainer.global_step, dataformats="HWC")
        log.debug("validation preview written to %s", path)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")

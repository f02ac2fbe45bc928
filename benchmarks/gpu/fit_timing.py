"""A timing callback for benchmarks/gpu/fit_check.py, added to a real ``vmunet fit`` run through
``--trainer.callbacks+=fit_timing.FitTimer`` (this folder on ``sys.path``).

Per training epoch: wall seconds, samples, img/s over the whole epoch and "steady" (after its
first batch), and the share of the steady part spent WAITING for the next batch (from one
batch's end to the next batch's start: the DataLoader's queue plus Lightning's per-batch overhead). The device is synchronized at every batch end, so a batch's time is its GPU
work, not just its launch (the module's ``isfinite(loss)`` check synchronizes there anyway).
A large waiting share says the CPU workers (augmentation) are the bottleneck, a small one the GPU.
Per validation run (Lightning's sanity check included, flagged): wall seconds and batches (one batch
= one volume in volume-wise evaluation). The clock readings ``fit_start_at`` (``on_fit_start``: data,
model and trainer set up) and ``first_batch_at`` (the first training batch starts) let the caller
split the time from its call to the first training batch. Non-finite training losses are counted (the
module stops a run on the first one; the count says whether that happened).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch


def _sync(module: pl.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class FitTimer(pl.Callback):
    """Records ``epochs`` (train), ``validations`` and ``non_finite_losses`` of one fit."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []
        self.non_finite_losses = 0
        self._t_epoch = self._t_batch_end = self._t_val = 0.0
        self._wait = self._samples = self._batches = 0
        self._first_wait = self._t_first_end = 0.0
        self._first_samples = 0
        self._val_batches = 0
        self.fit_start_at: float | None = None  # time.perf_counter() readings
        self.first_batch_at: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_start_at = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module)
        self._t_epoch = self._t_batch_end = time.perf_counter()
        self._wait, self._samples, self._batches, self._first_wait = 0.0, 0, 0, 0.0
        self._t_first_end, self._first_samples = 0.0, 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if self.first_batch_at is None:
            self.first_batch_at = now
        waited = now - self._t_batch_end
        if self._batches == 0:
            self._first_wait = waited  # worker start-up and the first batch: reported apart
        else:
            self._wait += waited

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        _sync(pl_module)
        self._t_batch_end = time.perf_counter()
        self._batches += 1
        self._samples += int(batch["image"].shape[0])
        if self._batches == 1:
            self._t_first_end, self._first_samples = self._t_batch_end, self._samples
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not math.isfinite(float(loss.detach())):
            self.non_finite_losses += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module)
        # the epoch's own batches: from its start to its last batch's end (validation excluded);
        # "steady": from the first batch's end on (worker start-up and first-call costs excluded)
        seconds = self._t_batch_end - self._t_epoch
        steady = self._t_batch_end - self._t_first_end
        steady_samples = self._samples - self._first_samples
        self.epochs.append({
            "epoch": int(trainer.current_epoch), "seconds": round(seconds, 3), "batches": self._batches,
            "samples": self._samples, "img_s": round(self._samples / seconds, 1) if seconds > 0 else None,
            "first_batch_wait_s": round(self._first_wait, 3),
            "steady_img_s": round(steady_samples / steady, 1) if steady > 0 and steady_samples else None,
            "data_wait_s": round(self._wait, 3),
            "data_wait_share": round(self._wait / steady, 3) if steady > 0 else None,
        })

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module)
        self._t_val = time.perf_counter()
        self._val_batches = 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._val_batches += 1

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module)
        # (before the module's own epoch-end hook: the case metrics (Dice, HD95 on the CPU) are
        # computed per validation step, so they are inside this time)
        self.validations.append({"epoch": int(trainer.current_epoch), "sanity": bool(trainer.sanity_checking),
                                 "seconds": round(time.perf_counter() - self._t_val, 3), "batches": self._val_batches})

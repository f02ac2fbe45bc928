"""A callback that SIGKILLs its own process at a chosen training batch (for resume tests).

A real SIGKILL: no exception, no ``finally``, no Lightning teardown; whatever was on disk at that
moment is all a resumed run gets.
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class KillAt(pl.Callback):
    """SIGKILL the process when batch ``batch`` of epoch ``epoch`` starts."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)

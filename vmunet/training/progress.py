"""One line per epoch for runs without a progress bar (``make demo``, logs of batch jobs)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lightning.pytorch import Callback

log = logging.getLogger(__name__)

#: (label, keys tried in order) of what an epoch line shows when it was logged.
FIELDS = (("loss", ("train/loss_epoch", "train/loss")), ("val loss", ("val/loss",)), ("val Dice", ("val/dice",)))


class EpochLine(Callback):
    """Logs ``epoch 3/35: loss 0.4120, val Dice 0.6231 (4.1 s)`` at the end of each training epoch
    (after its validation), from the values the module logged (``trainer.callback_metrics``)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        log.info("%s", format_epoch_line(trainer.current_epoch, trainer.max_epochs, trainer.callback_metrics,
                                         time.perf_counter() - self._t0))


def format_epoch_line(epoch: int, max_epochs: int | None, metrics: dict[str, Any], seconds: float) -> str:
    """``epoch <n>/<max>: loss ..., val Dice ... (<s> s)``; values not logged are left out."""
    parts = []
    for label, keys in FIELDS:
        for key in keys:
            if key in metrics:
                value = float(metrics[key])
                if not math.isnan(value):
                    parts.append(f"{label} {value:.4f}")
                break
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return f"epoch {epoch + 1}{total}: {', '.join(parts) or 'no metrics logged'} ({seconds:.1f} s)"

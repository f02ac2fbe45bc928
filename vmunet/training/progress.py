"""Progress as log lines for runs without a visible progress bar (``make demo``, logs of batch
jobs): one line per training epoch (``fit``), one per evaluated case (``test``, ``validate``)."""

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


class EvalCaseLine(Callback):
    """Logs ``test 3/12: case0003 (29.8 s)`` after each test / validate batch (one volume in
    volume-wise evaluation), for ``vmunet test|validate`` whose progress bar is off or drawn into
    a log file: a long evaluation otherwise shows nothing until its table."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def _start(self, *args: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    on_test_batch_start = on_validation_batch_start = _start

    def _end(self, stage: str, trainer: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        totals = trainer.num_test_batches if stage == "test" else trainer.num_val_batches
        total = totals[dataloader_idx] if dataloader_idx < len(totals) else None
        cases = batch.get("case") if isinstance(batch, dict) else None
        what = str(cases[0]) if cases is not None and len(cases) == 1 else f"batch {batch_idx + 1}"
        of = f"/{int(total)}" if isinstance(total, (int, float)) and math.isfinite(total) else ""
        log.info("%s %d%s: %s (%.1f s)", stage, batch_idx + 1, of, what, time.perf_counter() - self._t0)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._end("test", trainer, batch, batch_idx, dataloader_idx)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if trainer.state.fn == "validate":  # `vmunet validate`; fit's validations get EpochLine's summary
            self._end("validate", trainer, batch, batch_idx, dataloader_idx)

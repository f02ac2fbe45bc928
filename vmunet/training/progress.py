"""Progress as log lines for runs without a visible progress bar (``make demo``, logs of batch
jobs): one line per training epoch (``fit``), one per evaluated case (``test``, ``validate``);
and the model summary ``fit`` logs at its start, without Lightning's false "Total FLOPs: 0"
(:class:`ParameterSummary`)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

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


class ParameterSummary(ModelSummary):
    """Lightning's model summary (layers, parameters, size, modes) without its FLOPs column and
    "Total FLOPs" row, logged as plain text. Lightning 2.6 counts FLOPs only for a module with an
    ``example_input_array`` and prints 0 for the others (ours has none: the input size is the
    data's), and torch's FLOP counter would not see the selective scan anyway; ``vmunet info``
    reports the real numbers. ``vmunet fit`` uses it in place of Lightning's default summary."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        cols = [(name, values) for name, values in summary_data if name != "FLOPs"]
        widths = [max([len(name), *map(len, values)]) for name, values in cols]
        header = " | ".join(name.ljust(w) for (name, _), w in zip(cols, widths, strict=True))
        rows = [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                for row in zip(*(v for _, v in cols), strict=True)]
        totals = [(get_human_readable_count(trainable_parameters), "Trainable params"),
                  (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
                  (get_human_readable_count(total_parameters), "Total params"),
                  (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
                  (str(total_training_modes["train"]), "Modules in train mode"),
                  (str(total_training_modes["eval"]), "Modules in eval mode")]
        rule = "-" * len(header)
        lines = [header, rule, *rows, rule, *(f"{value:<10}{label}" for value, label in totals)]
        log.info("model summary (FLOPs and memory: `vmunet info MODEL`)\n%s", "\n".join(line.rstrip() for line in lines))


def without_flops(callback: Any) -> Any:
    """A stock ``ModelSummary`` or ``RichModelSummary`` (``--trainer.callbacks+=ModelSummary``) ->
    :class:`ParameterSummary` of the same ``max_depth``; any other callback as it is. Their FLOPs
    would be false for our models (see :class:`ParameterSummary`). Lightning keeps ``max_depth``
    only in the private ``_max_depth`` (no accessor); the rich variant's style settings are dropped."""
    if type(callback) in (ModelSummary, RichModelSummary):
        return ParameterSummary(max_depth=getattr(callback, "_max_depth", 1))
    return callback

"""Checks a ``fit`` makes once model, data, Trainer and checkpoint meet.

They run in :class:`~vmunet.training.module.SegmentationModule`'s hooks, so ``vmunet fit`` and a
plain ``Trainer.fit(module, datamodule, ckpt_path=...)`` get them alike; ``vmunet fit`` calls
:func:`check_resume` once more before the Trainer starts, so that a refused resume writes nothing
into the run's folder (the hook then skips it, see ``SegmentationModule.check_resume``).

* :func:`check_resume` (``fit`` from a ``ckpt_path``): a run that already reached its end
  (``trainer.max_epochs`` epochs, ``max_steps`` steps or ``max_time`` trained) is refused --
  Lightning restored it, found the loop done and exited 0 having trained nothing; the poly
  schedule's length (:func:`~vmunet.training.ckpt_settings.check_schedule_length`); Trainer
  settings that change the training from the checkpoint's run (:func:`trainer_settings`, compared
  by :func:`~vmunet.training.ckpt_settings.warn_changed_trainer_settings`).
* :func:`check_best_monitor` (``fit`` start): a checkpoint callback monitoring a validation value
  (``val/dice``) in a fit without validation data writes no best checkpoint; said before the first
  step (a warning), refused when no checkpoint at all would be written. Lightning's own warning
  about it after the first epoch (``could not find the monitored key ... Did you call log('val/dice')``)
  is then hidden for that fit (:func:`hide_missing_monitor_warnings`).

The data checks of a run from a checkpoint (its preprocessing, a resume's data settings) are
:func:`vmunet.training.ckpt_settings.check_checkpoint_data`, called from the same hook.
"""

from __future__ import annotations

import datetime
import logging
import re
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.utilities.model_helpers import is_overridden

from vmunet.errors import ConfigError
from vmunet.training.ckpt_settings import (
    check_schedule_length,
    saved_schedule,
    warn_changed_trainer_settings,
)

log = logging.getLogger(__name__)

#: The checkpoint keys the resume checks read (``vmunet fit`` keeps only these, not the weights)
RESUME_KEYS = ("epoch", "global_step", "loops", "callbacks", "lr_schedulers", "vmunet")


def planned_max_epochs(trainer: pl.Trainer) -> int:
    """The ``max_epochs`` the fit loop runs under (-1: no limit): Lightning fills in an unset one only
    when ``fit`` starts (``_parse_loop_limits``: 1000 unless ``max_steps`` or a ``Timer`` limits the run)."""
    if trainer.max_epochs is not None:
        return trainer.max_epochs
    return 1000 if trainer.max_steps == -1 and not any(isinstance(c, Timer) for c in trainer.callbacks) else -1


def _deterministic() -> bool | str:
    """torch's deterministic-algorithms mode, as ``trainer.deterministic`` sets it: True, "warn" or False."""
    if not torch.are_deterministic_algorithms_enabled():
        return False
    return "warn" if torch.is_deterministic_algorithms_warn_only_enabled() else True


def trainer_settings(trainer: pl.Trainer) -> dict[str, Any]:
    """The Trainer settings that shape what a fit computes or records, as plain data (stored in each
    checkpoint, ``ckpt["vmunet"]["trainer"]``): the batches per optimizer step and per epoch, the
    precision, gradient clipping, deterministic algorithms, the number of processes (each draws its
    own batches) and when validation runs (which epochs compete for the best checkpoint). Logging,
    progress bars, devices' names and the like are left out: they change nothing a run computes."""
    clip = float(trainer.gradient_clip_val or 0.0)
    algorithm = trainer.gradient_clip_algorithm
    return {
        "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
        "precision": str(trainer.precision),
        "gradient_clip_val": clip,
        # Lightning clips only when the value is > 0, by "norm" unless told otherwise
        "gradient_clip_algorithm": None if clip <= 0 else str(getattr(algorithm, "value", algorithm) or "norm"),
        "deterministic": _deterministic(),
        "limit_train_batches": trainer.limit_train_batches,
        "check_val_every_n_epoch": trainer.check_val_every_n_epoch,
        "val_check_interval": trainer.val_check_interval,
        "world_size": int(trainer.world_size),
    }


def epochs_done(ckpt: Mapping[str, Any]) -> int:
    """The training epochs a checkpoint's run has finished: its fit loop's ``processed`` count, which
    Lightning compares with ``max_epochs`` (``ckpt["epoch"]`` of an epoch-end checkpoint is one less)."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(ckpt.get("epoch", 0))


def _timer(trainer: pl.Trainer) -> Timer | None:
    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def check_not_finished(ckpt: Mapping[str, Any], trainer: pl.Trainer, ckpt_path: str) -> None:
    """:class:`ConfigError` when the checkpoint's run has already reached a limit of this fit: Lightning
    would restore it, find its loop done and return at once (exit 0, nothing trained, no word)."""
    ended = f"{ckpt_path}: its run has already ended"
    test = f"(to evaluate it: vmunet test --ckpt_path {ckpt_path})"
    step = int(ckpt.get("global_step", 0))
    if trainer.max_steps != -1 and step >= trainer.max_steps:
        raise ConfigError(f"{ended} (step {step} of trainer.max_steps={trainer.max_steps}): fit would train nothing; "
                          f"to train on, resume with --trainer.max_steps N, N > {step} {test}")
    done, max_epochs = epochs_done(ckpt), planned_max_epochs(trainer)
    if max_epochs != -1 and done >= max_epochs:
        how = (f"its poly learning-rate schedule ends there (a resume keeps its length): to train on, start a new "
               f"run from its weights with --model.weights {ckpt_path}"
               if (saved_schedule(ckpt) or {}).get("name") == "poly" else
               f"to train on, resume with --trainer.max_epochs N, N > {done}")
        raise ConfigError(f"{ended} ({done} of trainer.max_epochs={max_epochs} epochs trained): fit would train "
                          f"nothing; {how} {test}")
    timer = _timer(trainer)
    remaining = None if timer is None else timer.time_remaining()
    if remaining is not None:
        duration = remaining + timer.time_elapsed()  # (the checkpoint's time is not loaded into it yet)
        state = (ckpt.get("callbacks") or {}).get(timer.state_key) or {}  # Timer.state_dict() of the run
        elapsed = float((state.get("time_elapsed") or {}).get("train", 0.0))
        if elapsed >= duration:
            raise ConfigError(f"{ended} (trained {_hms(elapsed)} of trainer.max_time={_hms(duration)}, h:mm:ss): fit "
                              f"would train nothing; to train on, resume with a longer --trainer.max_time "
                              f"DD:HH:MM:SS {test}")


def check_resume(ckpt: Mapping[str, Any], trainer: pl.Trainer, ckpt_path: str) -> None:
    """The checks of a ``fit`` resumed from ``ckpt`` (see the module docstring): raises
    :class:`ConfigError` naming the checkpoint and the setting to change, or logs the warnings."""
    if trainer.fast_dev_run:  # a smoke test of the code path: one batch whatever the checkpoint
        return
    check_not_finished(ckpt, trainer, ckpt_path)
    # the restored schedule keeps the length of the checkpoint's run (see check_schedule_length)
    check_schedule_length(saved_schedule(ckpt), planned_max_epochs(trainer), ckpt_path)
    saved = ((ckpt.get("vmunet") or {}).get("trainer"))
    if saved is None:
        log.info("%s records no trainer settings (written by an older vmunet): not compared with this run's",
                 ckpt_path)
        return
    warn_changed_trainer_settings(saved, trainer_settings(trainer))


def _only_validation_logs(monitor: str | None) -> bool:
    return monitor is not None and monitor.startswith("val/")  # the module's validation keys: val/dice, ...


def validation_batches(trainer: pl.Trainer) -> float | None:
    """The validation batches of this fit (after ``limit_val_batches``); None when they cannot be counted
    (an iterable loader). Read from the data module when the fit has not loaded them yet (its first epoch
    is not validated)."""
    if trainer.limit_val_batches == 0:
        return 0
    if trainer.val_dataloaders is not None:
        return float(sum(trainer.num_val_batches))
    dm = trainer.datamodule
    if dm is None or not is_overridden("val_dataloader", dm, pl.LightningDataModule):
        return None if dm is None else 0
    loaders = dm.val_dataloader()
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        return float(sum(len(loader) for loader in loaders))
    except TypeError:
        return None


def check_best_monitor(trainer: pl.Trainer) -> list[str]:
    """A checkpoint callback whose monitor only validation logs (``val/...``), in a fit without validation
    data: no best checkpoint would ever be written (Lightning says, after the first epoch, only that the
    key was not logged). A warning before the first step; :class:`ConfigError` when no checkpoint
    callback would write anything at all (no ``last.ckpt`` either). Returns the monitors warned about."""
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    blind = [cb for cb in callbacks if _only_validation_logs(cb.monitor) and cb.save_top_k != 0]
    if trainer.fast_dev_run or not blind:
        return []
    if validation_batches(trainer) != 0:  # some, or not countable
        return []
    monitors = ", ".join(sorted({repr(cb.monitor) for cb in blind}))
    why = (f"the checkpoint callback monitors {monitors} (checkpoint.monitor), which only validation logs, but this fit "
           f"has no validation data (an empty val_dataloader, e.g. data.val_cases 0, or trainer.limit_val_batches 0)")
    keep = ("to keep a best checkpoint without validation, monitor a training value: --checkpoint.monitor "
            "train/loss_epoch --checkpoint.mode min --checkpoint.save_on_train_epoch_end true "
            "--checkpoint.filename 'best-epoch{epoch:03d}-loss{train/loss_epoch:.4f}' (as experiments/paper/synapse.yaml)")
    if not any(cb.monitor is None or cb.save_last for cb in callbacks):
        raise ConfigError(f"{why}: no checkpoint would be written at all (checkpoint.save_last is off); {keep}, or set "
                          "--checkpoint.save_last true")
    log.warning("%s: no best checkpoint will be written, only last.ckpt; %s", why, keep)
    return sorted({str(cb.monitor) for cb in blind})


def missing_monitor_message(monitor: str) -> str:
    """The start of Lightning's warning for a ``ModelCheckpoint`` monitor that no logged value matches
    (``ModelCheckpoint._save_topk_checkpoint``, lightning 2.6), as a regular expression."""
    return re.escape(f"`ModelCheckpoint(monitor={monitor!r})` could not find the monitored key in the returned "
                     "metrics: ")


def hide_missing_monitor_warnings(monitors: list[str]) -> list[Any]:
    """Hide Lightning's "could not find the monitored key" warning for exactly these monitors (one
    ``warnings`` filter each, matching its text; nothing else). Returns the filters, for
    :func:`show_hidden_warnings` at the end of the fit."""
    hidden = []
    for monitor in monitors:
        warnings.filterwarnings("ignore", message=missing_monitor_message(monitor), category=UserWarning)
        hidden.append(warnings.filters[0])  # (filterwarnings puts it first)
    return hidden


def show_hidden_warnings(hidden: list[Any]) -> None:
    """Remove the filters :func:`hide_missing_monitor_warnings` added (those still there). An "ignore"
    filter never enters a module's ``__warningregistry__``, so removing it takes effect at once."""
    for entry in hidden:
        if entry in warnings.filters:
            warnings.filters.remove(entry)

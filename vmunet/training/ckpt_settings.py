"""The model settings of a run started from a ``--ckpt_path``: the checkpoint's, or the config's?

LightningCLI replaces *every* ``model.*`` setting with the checkpoint's ``hyper_parameters`` when
``--ckpt_path`` is given (``LightningCLI._parse_ckpt_path``), so without this module a setting
given in the config or on the command line was dropped without a word: ``vmunet test --ckpt_path
X --model.metric_conventions [paper]`` reported ``strict``, ``fit --ckpt_path X --model.lr 0.03``
trained on at the checkpoint's rate (and the restored optimizer and schedule state would have
overridden it anyway). :func:`reconcile` decides per key, comparing what the user gave (the keys
the config files and the command line state) with what the checkpoint holds; a key not given is
the checkpoint's:

* evaluation settings (:data:`EVALUATION_KEYS`) and the model options that do not change what the
  model computes (:data:`RUNTIME_MODEL_KWARGS`, e.g. ``scan_backend`` on another machine): the
  given value is used, logged next to the checkpoint's;
* the model itself (``model_name``, the other ``model_kwargs``): the checkpoint's weights fix it,
  so a different given value is refused (one line naming each key and both values);
* training settings (optimizer, schedule, loss, initial weights): ``fit`` continues the checkpoint's
  run, whose optimizer and schedule state are restored anyway, so a different given value is
  refused; ``test`` / ``validate`` do not use them: they are logged as not used.

The data settings (:func:`warn_changed_data_settings`) and Trainer settings
(:func:`warn_changed_trainer_settings`) of a resumed ``fit`` take effect, so each kind that differs
from the checkpoint's run is named in one warning (one mechanism: :func:`_changed`). Data prepared
otherwise than the checkpoint's training data is refused (:func:`check_same_preprocessing`); both data
checks are :func:`check_checkpoint_data`, run by ``SegmentationModule.on_load_checkpoint`` (and by
``vmunet fit|validate|test`` before the Trainer starts).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from vmunet.errors import ConfigError

log = logging.getLogger(__name__)

#: Read by validation / test only: the value given for this run is used.
EVALUATION_KEYS = ("slice_batch_size", "val_hd95", "hd95", "metric_conventions", "threshold", "resample")
#: ``model_kwargs`` that change how the model runs, not what it computes: the given value is used.
RUNTIME_MODEL_KWARGS = ("scan_backend", "use_checkpoint")
#: The checkpoint's always (linked from the data module, or filled in at setup): not compared.
NOT_COMPARED = ("num_classes", "in_chans", "preprocessing")


def _plain(value: Any) -> Any:
    """Comparable plain data: tuples as lists, mappings as dicts (jsonargparse gives either)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _show(key: str, given: Any, saved: Any) -> str:
    return f"model.{key}={given!r} (checkpoint: {saved!r})"


def reconcile(given: Mapping[str, Any], saved: Mapping[str, Any], *, subcommand: str,
              ckpt_path: str) -> dict[str, Any]:
    """The model settings to build, from the ones the user gave (``given``: only those the config
    files and command line state) and the checkpoint's (``saved``, its ``hyper_parameters`` as
    LightningCLI applied them over the config).

    Returns ``saved`` with the given evaluation settings and runtime options put in; raises
    :class:`~vmunet.errors.ConfigError` naming the checkpoint and each conflicting key (see the
    module docstring).
    """
    out = dict(saved)
    used: list[str] = []
    unused: list[str] = []
    conflicts: list[str] = []
    model_conflicts: list[str] = []
    for key in sorted(given):
        if key in NOT_COMPARED or key.startswith("_"):
            continue
        mine, theirs = _plain(given[key]), _plain(saved.get(key))
        if mine == theirs:
            continue
        if key in EVALUATION_KEYS:
            out[key] = given[key]
            used.append(_show(key, mine, theirs))
        elif key == "model_kwargs":
            mine_kw, theirs_kw = dict(mine or {}), dict(theirs or {})
            merged = dict(theirs_kw)
            for sub in sorted(set(mine_kw) | set(theirs_kw)):
                a, b = mine_kw.get(sub), theirs_kw.get(sub)
                if sub not in mine_kw or a == b:
                    continue  # the same, or not given for this run: the checkpoint's
                if sub in RUNTIME_MODEL_KWARGS:
                    merged[sub] = a
                    used.append(_show(f"model_kwargs.{sub}", a, b))
                else:
                    model_conflicts.append(_show(f"model_kwargs.{sub}", a, b))
            out[key] = merged or None
        elif key == "model_name":
            model_conflicts.append(_show(key, mine, theirs))
        elif subcommand == "fit":
            conflicts.append(_show(key, mine, theirs))
        else:
            unused.append(_show(key, mine, theirs))
    if model_conflicts:
        raise ConfigError(
            f"{ckpt_path}: the config describes another model than the checkpoint holds: "
            f"{', '.join(model_conflicts)}; remove these settings or give the checkpoint's values"
        )
    if conflicts:
        raise ConfigError(
            f"{ckpt_path}: a resumed run continues with the checkpoint's optimizer, schedule and loss, "
            f"but the config gives {', '.join(conflicts)}; remove these settings or give the checkpoint's "
            f"values (to train on from its weights with new settings, start a new run with --model.weights {ckpt_path})"
        )
    if used:
        log.info("%s: using the given %s", subcommand, ", ".join(used))
    if unused:
        log.info("%s: training settings not used (the checkpoint's model is evaluated): %s", subcommand,
                 ", ".join(unused))
    return out


#: Fields the module adds to the data's preprocessing record (evaluation settings, see above)
DECISION_KEYS = ("threshold", "resample")
#: Data settings that change how fast data is loaded, not what a run sees
LOADING_ONLY = ("num_workers", "pin_memory", "cache", "cache_dir", "check_files", "eval_batch_size")


def _close(a: Any, b: Any) -> bool:
    """Equal plain data, floats to a relative 1e-6 (statistics computed again from the same files)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check_same_preprocessing(ckpt_path: str, saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                             subcommand: str) -> None:
    """:class:`ConfigError` when the data module prepares its data otherwise than the data the checkpoint
    was trained on (its preprocessing record: image size, intensity scheme, classes, ...): ``test`` /
    ``validate`` would score the model on inputs it never saw the like of, a resumed ``fit`` would go on
    training on them. (``vmunet predict`` always prepares scans as the checkpoint records.)"""
    if saved is None or current is None:
        return
    diffs = [f"{key}={_plain(current.get(key))!r} (checkpoint: {_plain(saved.get(key))!r})"
             for key in sorted(set(saved) | set(current))
             if key not in DECISION_KEYS and not _close(_plain(current.get(key)), _plain(saved.get(key)))]
    if not diffs:
        return
    why = (f"a resumed run would go on training on inputs prepared otherwise (to train on from its weights with "
           f"this data, start a new run with --model.weights {ckpt_path})" if subcommand == "fit" else
           "the model would be scored on inputs prepared otherwise than in its training")
    raise ConfigError(f"{ckpt_path}: the data module prepares its data differently from the data the checkpoint was "
                      f"trained on: preprocessing {', '.join(diffs)}; {why}; use the data settings of the training run")


def _changed(saved: Mapping[str, Any], current: Mapping[str, Any], name: Any, skip: Any = ()) -> list[str]:
    """``<name(key)>=<current> (checkpoint: <saved>)`` for each key whose values differ (:func:`_close`)."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in skip:
            continue
        a, b = _plain(current.get(key)), _plain(saved.get(key))
        if not _close(a, b):
            diffs.append(f"{name(key)}={a!r} (checkpoint: {b!r})")
    return diffs


def _warn_changed(what: str, diffs: list[str]) -> list[str]:
    # one mechanism for the settings a resume lets take effect: one warning naming each key and both values
    if diffs:
        log.warning("resuming with %s settings other than the checkpoint's run: %s; they apply from here on, so "
                    "the resumed run does not repeat an uninterrupted one", what, ", ".join(diffs))
    return diffs


def warn_changed_data_settings(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """Log one warning naming the data settings (other than :data:`LOADING_ONLY`) a resumed ``fit`` gives
    otherwise than the checkpoint's run (batch size, seed, augmentation, root ...): they take effect, so
    the resumed run no longer repeats an uninterrupted one. Returns the differences."""
    if not saved or current is None:
        return []
    # LightningCLI records the data class (``_class_path``); a module built in Python records none, so
    # the class is compared only when both runs have one (a CLI run resumed from Python is not "changed")
    both = set(saved) & set(current)
    skip = {k for k in set(saved) | set(current) if k in LOADING_ONLY or (k.startswith("_") and k != "_class_path")
            or (k == "_class_path" and k not in both)}
    return _warn_changed("data", _changed(saved, current, lambda k: "data.class_path" if k == "_class_path" else
                                          f"data.{k}", skip))


def check_checkpoint_data(ckpt: Mapping[str, Any], datamodule: Any, ckpt_path: str, stage: str) -> None:
    """The data checks of a ``fit`` / ``validate`` / ``test`` (``stage``) from the checkpoint ``ckpt``:
    data prepared otherwise than its training data is refused (:func:`check_same_preprocessing`), a
    resumed ``fit``'s other data settings are named in a warning (:func:`warn_changed_data_settings`).
    ``datamodule``: the run's data module (None: a fit from bare loaders, nothing to compare).
    ``SegmentationModule.check_checkpoint_data`` calls it, from ``vmunet fit|validate|test`` before the
    Trainer starts and from its ``on_load_checkpoint`` hook otherwise (``Trainer.fit(..., ckpt_path=X)``)."""
    record = ckpt.get("vmunet") or {}
    check_same_preprocessing(ckpt_path, record.get("preprocessing"), getattr(datamodule, "preprocessing", None), stage)
    if stage == "fit":
        warn_changed_data_settings(ckpt.get("datamodule_hyper_parameters"), getattr(datamodule, "hparams", None))


#: How :func:`warn_changed_trainer_settings` names a recorded value that is not itself a Trainer argument
TRAINER_NAMES = {"world_size": "processes (trainer.devices x trainer.num_nodes)"}


def warn_changed_trainer_settings(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Log one warning naming the Trainer settings a resumed ``fit`` gives otherwise than the checkpoint's
    run (``vmunet.training.fit_checks.trainer_settings``: accumulation, precision, clipping, determinism,
    batches per epoch, processes, validation interval). Unlike the model's optimizer or schedule settings,
    which the restored state would override (refused by :func:`reconcile`), they take effect: the
    resumed run goes on, but does not repeat an uninterrupted one. Returns the differences."""
    return _warn_changed("trainer", _changed(saved, current, lambda k: TRAINER_NAMES.get(k, f"trainer.{k}")))


def saved_schedule(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's learning-rate schedule (the :class:`~vmunet.training.schedulers.LRSchedule`
    fields its ``LambdaLR`` state holds), or None when it holds no such schedule."""
    try:
        state = ckpt["lr_schedulers"][0]["lr_lambdas"][0]
    except (KeyError, IndexError, TypeError):
        return None
    return dict(state) if isinstance(state, Mapping) and "name" in state and "total" in state else None


def _epochs(total: int | None) -> str:
    return "-1 (no limit)" if total is None else str(total)


def check_schedule_length(schedule: Mapping[str, Any] | None, max_epochs: int, ckpt_path: str) -> None:
    """Refuse or warn when a resumed ``fit`` runs for another ``trainer.max_epochs`` than the checkpoint's run.

    A resume restores the schedule's whole state, its length included (``LambdaLR`` keeps the
    schedule's fields): the ``poly`` schedule, whose length *is* the run's ``max_epochs``, would keep
    the old one -- the rate stuck at ``eta_min`` after the old end, or never reaching it -- so that is
    refused, naming both values and the two ways on. ``cosine`` (period ``t_max``) and ``constant`` do
    not depend on ``max_epochs``: the resumed run follows the schedule an uninterrupted run of the new
    length would, said in one warning.
    """
    if schedule is None:
        return
    old = schedule.get("total")
    new = max_epochs if max_epochs > 0 else None
    if old == new:
        return
    if schedule.get("name") == "poly":
        effect = (f"the rate would stay at eta_min after epoch {old}" if new is None or (old is not None and new > old)
                  else f"the schedule would be cut at epoch {new}, before the rate reaches eta_min")
        raise ConfigError(
            f"{ckpt_path}: trainer.max_epochs={_epochs(new)}, but the checkpoint's run has max_epochs={_epochs(old)}, "
            f"the length of its poly learning-rate schedule, which a resume keeps ({effect}); resume with "
            f"--trainer.max_epochs {-1 if old is None else old}, or start a new run with a poly schedule over "
            f"{_epochs(new)} epochs from its weights with --model.weights {ckpt_path}")
    if schedule.get("name") == "cosine":
        what = (f"the cosine schedule has its own period (model.t_max={schedule.get('t_max')}, not max_epochs): "
                f"the rate follows it as in an uninterrupted run of {_epochs(new)} epochs")
    else:
        what = f"the {schedule.get('name')} schedule does not depend on max_epochs: the rate goes on unchanged"
    log.warning("resuming with trainer.max_epochs=%s (the checkpoint's run: %s): %s", _epochs(new), _epochs(old), what)

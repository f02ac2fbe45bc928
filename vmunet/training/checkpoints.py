"""Training checkpoint files: written atomically and durably, checked before a run uses one.

Lightning's ``TorchCheckpointIO`` writes through fsspec, which stages the file in the system temp
folder and moves it into place: a copy, not an atomic rename, when that folder is on another
filesystem, and never fsynced. :class:`AtomicCheckpointIO` writes a temporary file next to the
target, fsyncs it, renames it onto the target and fsyncs the folder, so ``last.ckpt`` is always a
complete checkpoint (the previous one or the new one), even after a crash or power loss. A
process killed mid-write leaves its temporary file behind (``.last.ckpt.<8 random>.tmp``); a
resumed run removes those of its folder (:func:`remove_stale_temp_checkpoints`) once it holds the
folder's lock, i.e. once no other process can be writing them.

:func:`check_checkpoint` reads a ``--ckpt_path`` before ``fit`` / ``validate`` / ``test`` start, so
a truncated file, a file that is not a vmunet training checkpoint, or one of another model says so
in one line naming the file (not a traceback from deep inside Lightning).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vmunet.data.fileio import atomic_path
from vmunet.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

#: ``--ckpt_path`` values that Lightning resolves itself (not file paths)
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")

#: Suffix of the temporary file a checkpoint is written to: never ``.ckpt``, so an interrupted
#: write never looks like a checkpoint.
TEMP_SUFFIX = ".tmp"
#: The full name of such a temporary file: ``.<target>.<8 random characters>.tmp`` (``tempfile.mkstemp``
#: draws them from ``[a-z0-9_]``).
_TEMP_RE = re.compile(r"^\.(?P<target>.+\.ckpt)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def is_file_path(ckpt_path: object) -> bool:
    """True for a ``--ckpt_path`` that names a local file (not Lightning's keywords or a URL)."""
    text = str(ckpt_path or "")
    return bool(text) and text not in SPECIAL_CKPT_PATHS and "://" not in text and not text.startswith("registry:")


class TrainingCheckpointError(CheckpointError):
    """A ``--ckpt_path`` that cannot be used (names the file and what was expected).

    A :class:`~vmunet.models.checkpoint.CheckpointError` (so a ``WeightsError``, ``VmunetError``
    and ``ValueError``): one family for every unusable checkpoint, whether it is read to train,
    evaluate or predict; the narrower name says it came from a training run's ``--ckpt_path``."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that saves through a temporary file in the target folder + fsync + rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options, got "
                            f"{storage_options!r}")
        if "://" in str(path):  # remote storage (fsspec): Lightning's own transaction
            return super().save_checkpoint(checkpoint, path)
        path = Path(path)
        with atomic_path(path, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, fsync=True) as tmp, \
                open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)


def is_temp_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is named like :class:`AtomicCheckpointIO`'s temporary file of a ``*.ckpt``."""
    return _TEMP_RE.match(Path(path).name) is not None


def remove_stale_temp_checkpoints(folder: str | Path) -> list[Path]:
    """Delete the temporary checkpoint files (:func:`is_temp_checkpoint`) under ``folder``: the
    leftovers of writes interrupted by a kill or crash. Call it only while holding the folder's
    training lock (:func:`vmunet.training.runs.lock_run_dir`): then no live process writes them.
    Nothing else is touched. Returns the removed files (one log line names them)."""
    stale = sorted(p for p in Path(folder).rglob(f"*{TEMP_SUFFIX}")
                   if is_temp_checkpoint(p) and p.is_file() and not p.is_symlink())
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary checkpoint file(s) left by an interrupted write: %s", len(stale),
                 ", ".join(str(p) for p in stale))
    return stale


def _short(items: Any, limit: int = 5) -> str:
    items = list(items)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{items[:limit]}{more}"


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a vmunet training checkpoint (plain data only) or raise :class:`TrainingCheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise TrainingCheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip / pickle / OS errors all mean "not a usable checkpoint file"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingCheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupt or not a PyTorch file: {reason[:200]})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        found = _short(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TrainingCheckpointError(
            f"{path}: not a Lightning training checkpoint (no 'state_dict'; found {found}); to start "
            "from other weights use --model.weights"
        )
    record = ckpt.get("vmunet")
    if not isinstance(record, dict) or "model_name" not in record:
        raise TrainingCheckpointError(
            f"{path}: no 'vmunet' record (model name, classes, preprocessing): not written by vmunet fit; "
            "to start from other weights use --model.weights"
        )
    return ckpt


def _position(path: Path) -> tuple[int, int] | None:
    """``(global_step, epoch)`` of a checkpoint file, reading no weights (memory-mapped); None if unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["global_step"]), int(ckpt["epoch"])
    except Exception:  # not a checkpoint we can place: it cannot tell us the run went further
        return None


def check_no_later_checkpoints(path: str | Path, global_step: int, epoch: int) -> None:
    """Refuse to resume a run from ``path`` when its ``checkpoints/`` folder holds a checkpoint of a
    later step: the resumed run would overwrite ``last.ckpt`` (and the best) with an older branch and
    drop the later ``metrics.csv`` rows, i.e. destroy the run's further progress."""
    path = Path(path)
    later = []
    for other in sorted(path.parent.glob("*.ckpt")):
        if other.resolve() == path.resolve() or not other.is_file():
            continue
        pos = _position(other)
        if pos is not None and pos[0] > global_step:
            later.append((other, *pos))
    if later:
        other, step, ep = max(later, key=lambda t: t[1])
        raise TrainingCheckpointError(
            f"{path}: the run has gone further than this checkpoint (epoch {epoch}, step {global_step}): "
            f"{other.name} is at epoch {ep}, step {step}; resuming here would overwrite its later checkpoints "
            f"and metrics: resume from {other}, or copy this checkpoint out of {path.parent} to start a new "
            "run from it"
        )


def check_checkpoint(path: str | Path, module: torch.nn.Module, *, resume: bool) -> dict[str, Any]:
    """Check that ``path`` is a vmunet training checkpoint of the configured model.

    ``module`` is the :class:`~vmunet.training.module.SegmentationModule` built from the config;
    ``resume``: the checkpoint must also hold the optimizer and loop state (``fit``). Returns it.
    """
    path = Path(path)
    ckpt = read_training_checkpoint(path)
    record = ckpt["vmunet"]
    hp = getattr(module, "hparams", {})
    saved_kwargs = record.get("model_kwargs") or {}
    saved = (record["model_name"], saved_kwargs.get("num_classes"), saved_kwargs.get("in_chans"))
    wanted = (hp.get("model_name"), hp.get("num_classes"), hp.get("in_chans"))
    if saved != wanted:
        raise TrainingCheckpointError(
            f"{path}: checkpoint of model {saved[0]!r} with num_classes={saved[1]}, in_chans={saved[2]}; the "
            f"config builds {wanted[0]!r} with num_classes={wanted[1]}, in_chans={wanted[2]} "
            "(use the config the checkpoint was trained with)"
        )
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {_short(unexpected)}")
        if wrong:
            parts.append("shape " + ", ".join(f"{k} {got[k]} != {expected[k]}" for k in wrong[:3]))
        raise TrainingCheckpointError(
            f"{path}: weights do not fit the configured model {wanted[0]!r} ({'; '.join(parts)}); use the "
            "config (model_kwargs) the checkpoint was trained with"
        )
    if resume:
        absent = [k for k in ("optimizer_states", "loops", "epoch") if k not in ckpt]
        if absent:
            raise TrainingCheckpointError(
                f"{path}: cannot resume from it: no {absent} (a weights-only checkpoint); to start a new "
                "run from its weights use --model.weights"
            )
    return ckpt

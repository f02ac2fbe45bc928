"""Run folders: ``<trainer.default_root_dir>/version_N``, one per run, claimed atomically.

* A new run claims the first free ``version_N`` with ``os.mkdir`` (fails if the folder exists), so
  two runs started at once into the same root never share a folder: config, logs and checkpoints
  in a folder always describe one run. (Lightning's loggers pick N by listing the folder, a race.)
* ``fit --ckpt_path <root>/version_N/checkpoints/<file>.ckpt`` continues that run in the same
  folder: ``ModelCheckpoint`` then restores its best score and files (it does so only when the
  folder is unchanged), so ``best-*.ckpt`` stays the best of the whole run; ``metrics.csv`` keeps
  the rows up to the checkpoint's step and the resumed run appends to it; TensorBoard hides the
  events the interrupted part logged after that step (``purge_step``). A checkpoint elsewhere
  starts a new folder (its best-score record is then not restored: Lightning's rule).
* A run that fails before it has produced anything (bad data found in ``setup``, a trainer that
  cannot be built) gives its fresh folder back (:func:`discard_unused_run`): no empty
  ``version_N`` folders pile up from failed starts.
* Under DDP only rank 0 claims; it passes the version to the processes it launches
  (``VMUNET_RUN_VERSION``); the other ranks' checkpoint and log folders are rank 0's anyway
  (Lightning broadcasts them).
* The process training in a folder holds an exclusive lock on it (:func:`lock_run_dir`,
  ``fcntl.flock`` on ``.vmunet-train.lock``), so a second ``fit --ckpt_path`` of the same run is
  refused before it writes anything instead of interleaving its checkpoints and logs with the
  first. The kernel drops the lock when the process ends, however it ends (SIGKILL included): a
  crash never leaves a stale lock.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vmunet.data.fileio import missing_folders, remove_empty_folders
from vmunet.errors import VmunetError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not guarded against a second process
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

VERSION_ENV = "VMUNET_RUN_VERSION"
_VERSION_RE = re.compile(r"^version_(\d+)$")


def is_rank_zero() -> bool:
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def claim_run_dir(root: str | Path) -> tuple[Path, int]:
    """Create and return ``root/version_N`` (absolute) with the smallest free N above the existing ones."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION_RE.match(p.name))]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{n}").mkdir()  # exclusive: exactly one process succeeds per N
            return root / f"version_{n}", n
        except FileExistsError:
            n += 1


def run_dir_of_checkpoint(ckpt_path: str | Path | None) -> tuple[Path, int] | None:
    """``(<root>/version_N, N)`` when ``ckpt_path`` lies in a run's ``checkpoints/`` folder, else None."""
    from vmunet.training.checkpoints import is_file_path

    if not is_file_path(ckpt_path):
        return None
    ckpt = Path(ckpt_path).resolve()
    run = ckpt.parent.parent
    m = _VERSION_RE.match(run.name)
    if ckpt.parent.name != "checkpoints" or m is None or not run.is_dir():
        return None
    return run, int(m.group(1))


def select_run_dir(root: str | Path, resume_from: str | Path | None) -> tuple[Path, int, bool]:
    """The folder of this run: ``(path, N, resumed)``. Rank 0 claims; other ranks take rank 0's N."""
    existing = run_dir_of_checkpoint(resume_from)
    if existing is not None:
        return (*existing, True)
    if not is_rank_zero() and os.environ.get(VERSION_ENV) is not None:
        n = int(os.environ[VERSION_ENV])
        return Path(root).resolve() / f"version_{n}", n, False
    path, n = claim_run_dir(root)
    os.environ[VERSION_ENV] = str(n)  # inherited by the DDP processes this one launches
    return path, n, False


#: The lock file of a run folder (:func:`lock_run_dir`); it stays in the folder, holding the pid of
#: the last process that trained there. (Removing it on release would let two processes lock two
#: different files of the same name.)
LOCK_NAME = ".vmunet-train.lock"


class RunFolderBusyError(VmunetError, RuntimeError):
    """Another live process is training in the run folder (names the folder)."""


class RunLock:
    """The exclusive training lock of one run folder, held until :meth:`release` or process exit."""

    def __init__(self, run_dir: Path, fd: int | None) -> None:
        self.run_dir, self._fd = run_dir, fd
        if fd is not None:
            # flock belongs to the open file, shared with forked children (data-loader workers): an
            # orphaned worker would keep the folder locked after the trainer was killed. Children
            # drop their copy at once (closing it, unlike LOCK_UN, leaves the parent's lock alone).
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def lock_run_dir(run_dir: str | Path) -> RunLock:
    """Take the exclusive training lock of ``run_dir`` or raise :class:`RunFolderBusyError`.

    ``fcntl.flock`` on :data:`LOCK_NAME` inside the folder: the kernel releases it when the holding
    process exits for any reason, so a killed run never blocks the next one. Neither programs the
    process starts (close-on-exec) nor processes it forks (they close their copy) keep it held.
    """
    run_dir = Path(run_dir)
    if fcntl is None:
        log.debug("no fcntl on this platform: %s is not locked against a second training process", run_dir)
        return RunLock(run_dir, None)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise RunFolderBusyError(
            f"{run_dir}: another process{pid} is training in this run folder; wait for it to finish "
            "(or stop it) before resuming this run"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunLock(run_dir, fd)


#: Files a run writes before its first step; a folder with nothing else holds no results.
START_FILES = frozenset({"config.yaml", "hparams.yaml", LOCK_NAME})


def discard_unused_run(run_dir: str | Path) -> bool:
    """Remove a freshly claimed run folder that holds nothing but :data:`START_FILES`, TensorBoard
    event files with no logged value and empty sub-folders (a failed start); True when removed. Anything else (a checkpoint, metrics, a
    preview) keeps the folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not is_rank_zero():
        return False
    files = [p for p in run_dir.rglob("*") if not p.is_dir()]
    if any(p.parent != run_dir or not (p.name in START_FILES or _empty_event_file(p)) for p in files):
        return False
    for p in files:
        p.unlink()
    for d in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    run_dir.rmdir()
    log.info("the run failed before it started: removed its empty folder %s", run_dir)
    return True


@dataclass
class LoggerDirs:
    """Where a run's file loggers are about to write, read before Lightning starts them (:func:`logger_dirs`)."""

    #: folders they will create, deepest first: True for a logger's ``log_dir``, False for one above it
    new: dict[Path, bool] = field(default_factory=dict)
    #: ``log_dir`` folders that exist already, with the names of the files in them then
    existing: dict[Path, frozenset[str]] = field(default_factory=dict)


def logger_dirs(loggers: list) -> LoggerDirs:
    """The local folders of Lightning's file loggers (TensorBoard, CSV) among ``loggers``: those they are
    about to create, and the files already in those that exist.

    Lightning creates a logger's folder (``lightning_logs/version_N`` with a TensorBoard event file) when
    a fit, validate or test starts, before any hook can check the run: read before that, this tells
    what the run made itself, so a run that fails before producing anything can give back exactly that
    (:func:`discard_new_logger_files`), never a folder or file that existed before. Reading ``log_dir``
    fixes an unversioned logger's ``version_N`` now; Lightning would pick the same N a moment later.
    """
    from lightning.fabric.loggers import CSVLogger as FabricCSV
    from lightning.fabric.loggers import TensorBoardLogger as FabricTB
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    dirs = LoggerDirs()
    for logger in loggers:
        if not isinstance(logger, (TensorBoardLogger, CSVLogger, FabricTB, FabricCSV)):
            continue  # other loggers (W&B, MLflow, ...) keep their own records: not ours to remove
        log_dir = logger.log_dir
        if log_dir is None or "://" in str(log_dir):  # a remote store: left alone
            continue
        path = Path(log_dir).resolve()
        if path.is_dir():
            dirs.existing[path] = frozenset(p.name for p in path.iterdir())
            continue
        for folder in missing_folders(path):
            dirs.new.setdefault(folder, folder == path)
    dirs.new = dict(sorted(dirs.new.items(), key=lambda item: len(item[0].parts), reverse=True))
    return dirs


def discard_new_logger_files(dirs: LoggerDirs) -> list[Path]:
    """Remove what the loggers made since :func:`logger_dirs`, where it holds nothing a run produced: a
    new log folder by :func:`discard_unused_run` (start files and empty TensorBoard event files only), a
    new folder above one only when empty, in a log folder that existed only the new empty event files.
    Returns what was removed. The loggers must be finalized first (a TensorBoard writer re-creates its
    file when it flushes)."""
    removed = []
    for path, is_log_dir in dirs.new.items():  # (deepest first)
        if is_log_dir:
            if discard_unused_run(path):
                removed.append(path)
        else:
            removed += remove_empty_folders([path])
    for path, before in dirs.existing.items():
        if is_rank_zero() and path.is_dir():
            for p in path.iterdir():
                if p.name not in before and p.is_file() and _empty_event_file(p):
                    p.unlink()
                    removed.append(p)
    return removed


def _empty_event_file(path: Path) -> bool:
    """A TensorBoard event file holding no logged value (only the header its writer opens with)."""
    if not path.name.startswith("events.out.tfevents."):
        return False
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        return not any(e.HasField("summary") or e.HasField("graph_def") for e in EventFileLoader(str(path)).Load())
    except Exception:  # unreadable or no tensorboard: keep the folder rather than guess
        return False


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def csv_rows_before(metrics_csv: Path, step: int) -> list[tuple[int, dict[str, float]]]:
    """``(step, {key: value})`` rows of a Lightning ``metrics.csv`` logged at steps < ``step``.

    A checkpoint's ``global_step`` is the number of optimizer steps done: its epoch's last rows
    are logged at ``step - 1``, the rows from ``step`` on come from the part of the run that was
    lost, and the resumed run logs them again.
    """
    if not metrics_csv.is_file():
        return []
    rows = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                s = int(float(row.get("step", "")))
            except ValueError:
                continue
            if s >= step:
                continue
            values = {}
            for k, v in row.items():
                if k != "step" and v not in ("", None):
                    try:
                        values[k] = _number(v)
                    except ValueError:
                        continue
            if values:
                rows.append((s, values))
    return rows


def run_loggers(run_dir: Path, version: int, resume_step: int | None = None) -> list:
    """TensorBoard + CSV loggers writing into ``run_dir`` (= ``<root>/version_<version>``).

    ``resume_step``: the ``global_step`` of the checkpoint a resumed run starts from. The CSV
    logger deletes an existing ``metrics.csv`` when it starts, so its rows before that step are
    read first, the file is set aside (renamed, so a crash here loses nothing) and the rows are
    written again through the logger. TensorBoard hides the lost part's events (``purge_step``).
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    root = str(run_dir.parent)
    tb_kwargs = {} if resume_step is None else {"purge_step": resume_step}
    tb = TensorBoardLogger(save_dir=root, name="", version=version, default_hp_metric=False, **tb_kwargs)
    csv_logger = CSVLogger(save_dir=root, name="", version=version)
    metrics = run_dir / "metrics.csv"
    if resume_step is not None and metrics.is_file() and is_rank_zero():
        rows = csv_rows_before(metrics, resume_step)
        aside = run_dir / ".metrics.csv.before-resume"
        os.replace(metrics, aside)
        for step, values in rows:
            csv_logger.log_metrics(values, step=step)
        csv_logger.save()
        aside.unlink()
        log.info("resuming in %s: kept %d metrics.csv rows before step %d", run_dir, len(rows), resume_step)
    return [tb, csv_logger]

"""A fast pass over every training / validation file before the first step, cached.

A bad file (label outside the declared classes, image/label shape mismatch, NaN, unreadable) would
otherwise fail only when first drawn -- possibly hours into a run, or never when
``limit_train_batches`` skips it. The data modules call :func:`check_files` in ``setup`` with the
reader they train with, so the check is exactly what training would do to the file; every bad
file is reported at once, one line each.

Files that passed are remembered by (path, size, mtime, what was checked) in
``$VMUNET_CACHE_DIR`` (default ``~/.cache/vmunet``) ``/filecheck/<hash of the list>.json``, so a
second run over unchanged files reads nothing. Switch off with ``check_files: false`` in the
data module (``--data.init_args.check_files false``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vmunet.data.errors import DataError

log = logging.getLogger(__name__)

#: at most this many bad files are listed in the error (the count is always complete)
MAX_LISTED = 10


def cache_dir() -> Path:
    """Where passed-file records live: ``$VMUNET_CACHE_DIR`` or ``~/.cache/vmunet``, ``/filecheck``."""
    base = os.environ.get("VMUNET_CACHE_DIR") or Path.home() / ".cache" / "vmunet"
    return Path(base) / "filecheck"


def _stamp(paths: Sequence[str | Path], signature: str) -> str:
    """One entry's identity: what is checked and each file's path, size and mtime (ns)."""
    parts = [signature]
    for p in paths:
        st = os.stat(p)
        parts.append(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _load(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return set(data.get("passed", []))
    except (OSError, ValueError, AttributeError):
        return set()


def _save(path: Path, passed: set[str]) -> None:
    from vmunet.data.fileio import write_json

    try:
        write_json(path, {"passed": sorted(passed)})
    except OSError as err:  # a read-only home is no reason to stop training
        log.debug("file check cache not written (%s): %s", path, err)


def check_files(entries: Sequence[Sequence[str | Path]], check: Callable[[int], object], *, what: str,
                signature: str) -> None:
    """Run ``check(i)`` for every entry ``i`` not already known to be good; raise one DataError
    listing every bad one.

    ``entries[i]``: the files entry ``i`` reads (their size/mtime decide whether it is re-checked);
    ``check(i)``: reads them the way training does and raises :class:`DataError` naming the file;
    ``what``: e.g. ``"Synapse training slices"`` (for messages); ``signature``: what the check
    depends on besides the files (reader name, number of classes).
    """
    if not entries:
        return
    key = hashlib.sha256("\n".join([signature, *(str(Path(p).resolve()) for e in entries for p in e)]).encode())
    cache_file = cache_dir() / f"{key.hexdigest()[:32]}.json"
    passed = _load(cache_file)
    start = time.perf_counter()
    good: set[str] = set()
    bad: list[str] = []
    checked = known = 0
    for i, files in enumerate(entries):
        try:
            stamp = _stamp(files, signature)
        except OSError as err:
            bad.append(f"{err.filename}: cannot read ({err.strerror})")
            continue
        if stamp in passed:
            good.add(stamp)
            known += 1
            continue
        checked += 1
        try:
            check(i)
        except DataError as err:
            bad.append(str(err))
            continue
        good.add(stamp)
    if checked:
        _save(cache_file, good)
    log.info("checked %d of %d %s in %.1f s (%d known good; check_files: false skips this)", checked,
             len(entries), what, time.perf_counter() - start, known)
    if bad:
        more = f"; ... (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        raise DataError(f"{len(bad)} of {len(entries)} {what} are unusable: " + "; ".join(bad[:MAX_LISTED]) + more)

"""Output folders of ``vmunet prepare``: claimed empty, recorded in a manifest, replaced only whole.

A data set folder is defined by the files in it (split folders, list files), so writing one data set
over another would leave a mix of both. :func:`prepared_folder` therefore

* refuses an output folder that holds anything, unless ``overwrite=True``;
* with ``overwrite=True`` removes exactly the files a previous prepare listed in its manifest
  (:data:`MANIFEST`) -- never a file it did not write -- and still refuses if anything else is
  left, naming those files;
* writes the manifest at the start (``complete: false``, claiming the empty folder) and at the end,
  listing every file in the folder: the folder was empty when claimed, so every file in it was
  written by this prepare;
* on failure (bad data found half-way, Ctrl-C) removes what it wrote, so the folder is as empty as
  it was (and gone if this run created it) and no partial data set is left to be mistaken for a whole one. Only a killed process
  (SIGKILL, power loss) leaves a partial folder, whose manifest says ``complete: false`` with no
  file list; it is never cleaned up automatically.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmunet.data.errors import DataError, short_list
from vmunet.data.fileio import (
    ensure_writable_folder,
    missing_folders,
    read_json,
    remove_empty_folders,
    write_json,
)

log = logging.getLogger(__name__)

MANIFEST = "vmunet-prepare.json"


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` except the manifest, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != MANIFEST)


def _remove_previous(out: Path) -> int:
    """Delete what the previous prepare's manifest lists (and folders that leaves empty)."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return 0
    meta = read_json(manifest)
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise DataError(f"{manifest}: expected a vmunet prepare manifest with a 'files' list; not removing anything")
    if not meta.get("complete") and not files and _files(out):
        raise DataError(f"{manifest}: the prepare that wrote {out} was killed before it could list its files; "
                        "nothing is removed -- delete the folder yourself or choose another")
    root = out.resolve()
    for rel in files:
        target = (out / rel).resolve()
        if root not in target.parents:  # a hand-edited manifest must not reach outside the folder
            raise DataError(f"{manifest}: lists {rel!r}, which is outside {out}; not removing anything")
    return _remove_listed(out, files)


def _remove_listed(out: Path, files: list[str]) -> int:
    """Delete ``files`` (relative to ``out``), the folders that leaves empty and the manifest."""
    removed = 0
    for rel in files:
        target = out / rel
        if target.is_file() or target.is_symlink():
            target.unlink()
            removed += 1
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only empty folders go
    with contextlib.suppress(FileNotFoundError):
        (out / MANIFEST).unlink()
    return removed


@contextlib.contextmanager
def prepared_folder(out: str | Path, *, overwrite: bool, command: str, source: str) -> Iterator[Path]:
    """Claim ``out`` for one prepare run (see the module docstring); yields the folder. A failed run
    also removes the folders it created (``out`` and missing parents) once they are empty -- never
    one that existed before, nor one that holds anything (``rmdir`` refuses those)."""
    out = Path(out)
    created = missing_folders(out)
    try:
        with _claimed_folder(out, overwrite=overwrite, command=command, source=source) as claimed:
            yield claimed
    except BaseException:
        remove_empty_folders(created)  # (one that holds anything, e.g. a killed run's manifest, and those above stay)
        raise


@contextlib.contextmanager
def _claimed_folder(out: Path, *, overwrite: bool, command: str, source: str) -> Iterator[Path]:
    """:func:`prepared_folder` without the removal of the folders it created."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a regular file, expected a folder")
    if out.is_dir() and overwrite:
        removed = _remove_previous(out)
        if removed:
            log.info("%s: removed %d file(s) a previous prepare wrote in %s", command, removed, out)
    leftover = _files(out) if out.is_dir() else []
    if (out / MANIFEST).is_file() and not overwrite:
        raise DataError(f"--out {out} holds a data set written by an earlier prepare ({MANIFEST}); "
                        "pass --overwrite to replace it, or choose a new or empty folder")
    if leftover:
        hint = ("" if overwrite else " pass --overwrite to replace what an earlier prepare wrote,")
        raise DataError(f"--out {out} is not empty ({len(leftover)} file(s) not written by an earlier prepare, "
                        f"e.g. {short_list(leftover, 5)});{hint} or choose a new or empty folder")
    ensure_writable_folder(out, "--out")
    record: dict[str, Any] = {"command": command, "source": source, "complete": False, "files": []}
    write_json(out / MANIFEST, record)
    try:
        yield out
    except BaseException:
        written = _files(out)  # the folder was claimed empty: all of it is this run's
        try:  # listed first, so a removal cut short (Ctrl-C again) leaves a manifest --overwrite can use
            write_json(out / MANIFEST, {**record, "files": written})
        except OSError:  # a full disk cannot take the list: remove the files all the same
            pass
        removed = _remove_listed(out, written)
        log.info("%s failed: removed the %d file(s) it had written to %s", command, removed, out)
        raise
    write_json(out / MANIFEST, {**record, "complete": True, "files": _files(out)})

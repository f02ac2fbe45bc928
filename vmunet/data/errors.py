"""Errors raised for bad data on disk. Every message names the offending file or folder."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from vmunet.errors import VmunetError


class DataError(VmunetError, ValueError):
    """A data file or folder is unreadable, inconsistent or does not match the declared classes."""


class LayoutError(DataError):
    """A folder does not have the expected layout; the message says what was expected and found."""


def describe_folder(path: str | Path, limit: int = 12) -> str:
    """A short listing of a folder's entries, for 'found ...' parts of error messages."""
    p = Path(path)
    if not p.exists():
        return f"{p} does not exist"
    if not p.is_dir():
        return f"{p} is not a folder"
    entries = sorted(e.name + ("/" if e.is_dir() else "") for e in p.iterdir())
    if not entries:
        return f"{p} is empty"
    more = f" ... (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return f"{p} contains {entries[:limit]}{more}"


def short_list(items: Iterable[object], limit: int = 10) -> str:
    """``['a', 'b', ...] (+N more)`` for error messages listing ids."""
    items = list(items)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{[str(i) for i in items[:limit]]}{more}"


def check_paired(what: str, first: tuple[str, Path, Collection[object]],
                 second: tuple[str, Path, Collection[object]]) -> None:
    """Raise one DataError when two sets of ids (e.g. images and their masks) differ.

    ``first`` and ``second`` are ``(kind, folder, ids)``; the message lists the ids of each side that
    the other lacks, and the folder they were looked for in:
    ``<what>: N image(s) without a mask in <masks folder>: [...]; M mask(s) without an image in ...``.
    """
    parts = []
    for (kind, _, ids), (other, folder, other_ids) in ((first, second), (second, first)):
        alone = sorted(set(ids) - set(other_ids))
        if alone:
            article = "an" if other[0] in "aeiou" else "a"
            parts.append(f"{len(alone)} {kind}(s) without {article} {other} in {folder}: {short_list(alone)}")
    if parts:
        raise DataError(f"{what}: " + "; ".join(parts))

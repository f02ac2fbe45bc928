"""nnU-Net channel file names: ``<case>_0000<ending>``, ``<case>_0001<ending>``, ... are the
channels of one case, in the order of their four-digit index.

The one grouping rule shared by training (:mod:`vmunet.data.nifti_format`, imagesTr/imagesTs) and
``vmunet predict`` (:mod:`vmunet.inference.io`): a case must have exactly the channels
``0 .. C-1``; a missing or surplus channel is a :class:`~vmunet.data.errors.DataError` naming the
case and the files expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmunet.data.errors import DataError, short_list

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class CaseFiles:
    """One case: its name (nnU-Net's case identifier) and its files, one per channel, in order."""

    name: str
    files: tuple[Path, ...]

    @property
    def first(self) -> Path:
        return self.files[0]


def split_channel(stem: str) -> tuple[str, int] | None:
    """``"la_003_0001"`` -> ``("la_003", 1)``; None when the stem has no ``_NNNN`` suffix."""
    m = _CHANNEL_RE.match(stem)
    return (m.group("case"), int(m.group("channel"))) if m else None


def channel_file_names(case: str, channels: int, ending: str) -> list[str]:
    """The file names nnU-Net expects for ``case``: ``case_0000<ending>`` ... ``case_<C-1><ending>``."""
    return [f"{case}_{c:04d}{ending}" for c in range(channels)]


def group_channels(files: Sequence[Path], stem_of: Callable[[Path], str], channels: int, where: str | Path,
                   *, strict: bool = True) -> list[CaseFiles]:
    """Group channel files into cases, sorted by case name.

    ``stem_of``: the file name without its extension. ``strict`` (training, and prediction with a
    multi-channel model): every file must be named ``<case>_NNNN``. Not strict (a single-channel
    model): only files of a case that has a ``_0000`` file are channel files; any other file is a
    case of its own under its full stem (``scan_0007.nii.gz`` alone stays case ``scan_0007``).
    """
    groups: dict[str, dict[int, Path]] = {}
    alone: list[CaseFiles] = []
    parsed = [(p, split_channel(stem_of(p))) for p in files]
    with_zero = {sp[0] for _, sp in parsed if sp is not None and sp[1] == 0}
    bad: list[str] = []
    for p, sp in parsed:
        if sp is None or (not strict and sp[0] not in with_zero):
            if strict:
                bad.append(p.name)
            else:
                alone.append(CaseFiles(stem_of(p), (p,)))
            continue
        groups.setdefault(sp[0], {})[sp[1]] = p
    ending = _ending(files[0], stem_of) if files else ""
    if bad:
        raise DataError(f"{where}: files not named <case>_NNNN{ending} (nnU-Net channel files, "
                        f"{channels} channel(s): {', '.join(channel_file_names('<case>', channels, ending))}): "
                        f"{short_list(bad)}")
    out = []
    for case, chans in groups.items():
        if sorted(chans) != list(range(channels)):
            expected = channel_file_names(case, channels, _ending(next(iter(chans.values())), stem_of))
            found = [chans[c].name for c in sorted(chans)]
            raise DataError(f"{where}: case {case!r} has channel files {found}; expected exactly {expected} "
                            f"({channels} channel(s))")
        out.append(CaseFiles(case, tuple(chans[c] for c in range(channels))))
    return sorted([*out, *alone], key=lambda c: c.name)


def _ending(path: Path, stem_of: Callable[[Path], str]) -> str:
    return path.name[len(stem_of(path)):]

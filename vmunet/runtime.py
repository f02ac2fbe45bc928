"""Process-wide settings the command-line tools apply before torch loads: how idle OpenMP threads
wait, and how torch backs its large CPU tensors; and their logging (:func:`configure_logging`).

Both are choices about the *process*, not the model, so the Python API leaves them to the
environment; the ``vmunet`` CLI and the demo apply them unless the user already chose (an
environment variable that is set, to any value, is never changed).
"""

from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_openmp_waits() -> None:
    """Make idle OpenMP threads sleep instead of spin, unless the user chose (``OMP_WAIT_POLICY``).

    torch's and numba's OpenMP pools spin for a while after each parallel region; on a machine
    where another job also wants the cores, the spinning threads steal the time the working ones
    need. Measured on the 2-core VM with one competing busy process (training step of
    ``vmunet_test``, 64², batch 8): 524 ms default vs 250 ms passive (up to 7 s vs 0.4 s in one
    run), while on the idle machine passive costs ~7% (171 vs 159 ms). libgomp reads the variable
    when it loads, so this must run before torch is imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def huge_pages_for_large_tensors() -> None:
    """Back CPU tensors of 2 MiB and more with transparent huge pages (``THP_MEM_ALLOC_ENABLE``).

    glibc gives every allocation above its mmap threshold (at most 32 MiB) its own mapping and
    unmaps it when freed, so each training step maps and faults in its large activations again,
    4 KiB at a time: 11.5 M page faults per step for the paper ``vmunet`` at 224², batch 32
    (docs/performance.md, "Page faults"). torch's own switch aligns those allocations to 2 MiB and
    asks the kernel for huge pages (``madvise``), which cuts the faults ~30x at batch 32. torch
    reads the variable at its first CPU allocation, so this must run before torch is imported; it
    has no effect where the kernel's THP mode is ``never``.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def apply_process_defaults() -> None:
    """What the CLI and the demo run first, before torch is imported (see the functions above)."""
    quiet_openmp_waits()
    huge_pages_for_large_tensors()


def configure_logging(verbose: bool) -> None:
    """INFO lines on stderr; ``verbose`` (``-v``) adds DEBUG for ``vmunet``'s own loggers only.

    The root logger stays at INFO either way: at DEBUG it would also let through every library's
    debug output (matplotlib's font search, h5py, PIL, numba), dozens of lines that bury ours.
    """
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("vmunet").setLevel(logging.DEBUG if verbose else logging.NOTSET)


VERBOSE_FLAGS = ("-v", "--verbose")  # the one global option besides --help


def misplaced_verbose_hint(unrecognized: str, command: str = "COMMAND") -> str:
    """What to add to an "unrecognized arguments" error whose arguments hold ``-v``: the flag is
    global, so ``vmunet fit -v`` must be written ``vmunet -v fit`` (else an empty string)."""
    if not set(unrecognized.split()) & set(VERBOSE_FLAGS):
        return ""
    return f" (-v/--verbose goes before the command: vmunet -v {command} ...)"

"""DataLoader worker count: capped at the cores this process may use."""

from __future__ import annotations

import os

import pytest

from vmunet.data.common import effective_workers, eval_loader


def test_workers_capped_at_available_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert effective_workers(cores + 7) == cores
    assert effective_workers(0) == 0
    assert effective_workers(1) == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux affinity")
def test_loader_uses_capped_workers():
    loader = eval_loader(list(range(4)), 2, len(os.sched_getaffinity(0)) + 5, False)
    assert loader.num_workers == len(os.sched_getaffinity(0))

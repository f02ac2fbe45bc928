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


def test_the_cap_is_logged_once_for_a_fits_two_loaders(monkeypatch, caplog):
    from vmunet.data import common

    monkeypatch.setattr(common, "available_cores", lambda: 1)
    with caplog.at_level("INFO", logger="vmunet.data.common"):
        train = common.train_loader(list(range(4)), 2, 97, False)  # a fit's training loader ...
        val = common.eval_loader(list(range(4)), 2, 97, False)  # ... and its validation loader
    assert train.num_workers == val.num_workers == 1
    assert [r.getMessage() for r in caplog.records] == ["DataLoader: 97 workers requested, 1 cores available: using 1"]

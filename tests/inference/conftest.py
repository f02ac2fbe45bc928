"""Fixtures of the inference tests (helpers live in inference_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference_helpers import save_checkpoint, volume_record


def vmunet_test_checkpoint(path: Path, record: dict | None, *, num_classes: int, in_chans: int,
                           seed: int = 0) -> Path:
    """A checkpoint of the real vmunet_test model with weights seeded by ``seed`` and ``record``
    as its preprocessing record (``torch.manual_seed(seed)`` then ``create_model`` rebuilds them)."""
    from vmunet.models import create_model

    torch.manual_seed(seed)
    kwargs = {"num_classes": num_classes, "in_chans": in_chans}
    return save_checkpoint(path, create_model("vmunet_test", **kwargs), "vmunet_test", kwargs, record)


@pytest.fixture()
def make_checkpoint(tmp_path):
    """``make_checkpoint(name, record, num_classes=, in_chans=, seed=0)``: a vmunet_test
    checkpoint in the test's tmp_path (see :func:`vmunet_test_checkpoint`)."""
    return lambda name, record, **kw: vmunet_test_checkpoint(tmp_path / name, record, **kw)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """vmunet_test (real model, seeded random weights) at 32x32, 3 classes."""
    rec = volume_record(class_names=["background", "liver", "spleen"], num_classes=3)
    return vmunet_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", rec, num_classes=3, in_chans=1)


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Tiny tensors here: one intra-op thread is as fast, and immune to oversubscribed machines
    (two OpenMP threads on a busy 2-core box can be 10x slower). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Fixtures of the inference tests (helpers live in inference_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference_helpers import save_checkpoint, volume_record


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """vmunet_test (real model, seeded random weights) at 32x32, 3 classes."""
    from vmunet.models import create_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_chans": 1}
    model = create_model("vmunet_test", **kwargs)
    rec = volume_record(class_names=["background", "liver", "spleen"], num_classes=3)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", model, "vmunet_test", kwargs, rec)


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Tiny tensors here: one intra-op thread is as fast, and immune to oversubscribed machines
    (two OpenMP threads on a busy 2-core box can be 10x slower). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Inference on whole scans: read with geometry, predict slice by slice, write label maps back.

``Predictor`` (``predictor.py``) is the Python API, ``io.py`` reads and writes scans, and
``commands.py`` adds the ``vmunet predict`` subcommand. Names load lazily, so building the CLI
parser (which imports ``commands``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Predictor": "predictor", "Prediction": "predictor", "CheckpointError": "predictor"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vmunet.inference.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vmunet.inference' has no attribute {name!r}")

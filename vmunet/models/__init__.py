"""The VM-UNet model family: ``create_model(name, num_classes=..., in_chans=..., weights=...)``.

Names load lazily, so building the CLI parser (which imports ``vmunet.models.commands``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "VMUNet": "vmunet",
    "count_parameters": "registry",
    "create_model": "registry",
    "list_models": "registry",
    "model_config": "registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vmunet.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vmunet.models' has no attribute {name!r}")

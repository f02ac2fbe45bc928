"""vmunet: Vision-Mamba U-Nets for 2D medical image segmentation.

Heavy submodules (MONAI, Lightning, SimpleITK) load lazily so ``import vmunet`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "vmunet.models",
    "list_models": "vmunet.models",
    "selective_scan": "vmunet.ops",
    "cross_scan": "vmunet.ops",
    "cross_merge": "vmunet.ops",
    "Predictor": "vmunet.inference",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vmunet' has no attribute {name!r}")

"""Whether an optional backend module imports: one cached check for every optional kernel
(numba's and Triton's selective scan, Triton's cross-scan), so "available" means the same everywhere."""

from __future__ import annotations

import functools
import importlib
import logging

logger = logging.getLogger(__name__)


@functools.cache
def module_imports(name: str) -> bool:
    """True when module ``name`` imports. Cached per name for the process: each optional backend
    module imports its third-party package (numba, triton) at the top, which is the slow part and
    what can fail. The reason for a failure is logged at DEBUG level."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # ImportError, or a package that is installed but fails to load
        logger.debug("%s unavailable: %s", name, exc)
        return False
    return True

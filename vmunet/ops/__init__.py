"""Core operators: the selective scan (S6) and the 2D cross-scan."""

from vmunet.ops.cross_scan import (
    DIRECTIONS,
    VMAMBA_DIRECTIONS,
    cross_merge,
    cross_scan,
    is_direction,
    scan_order,
)
from vmunet.ops.selective_scan import (
    BACKENDS,
    cuda_available,
    numba_available,
    resolve_backend,
    selective_scan,
    triton_available,
)

__all__ = [
    "BACKENDS",
    "DIRECTIONS",
    "VMAMBA_DIRECTIONS",
    "cross_merge",
    "cross_scan",
    "cuda_available",
    "is_direction",
    "numba_available",
    "resolve_backend",
    "scan_order",
    "selective_scan",
    "triton_available",
]

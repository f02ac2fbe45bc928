"""Selective scan (S6), the recurrence at the heart of Mamba, with interchangeable backends.

Same signature and semantics as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``::

    delta = softplus(delta + delta_bias)          (each step optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = <C_t, h_t> + D * u_t
    out   = y * silu(z)                           (when z is given)

Backends: ``"ref"`` (plain loop, the readable definition), ``"torch"`` (chunked pure PyTorch with a
hand-written backward), ``"numba"`` (compiled CPU kernel, several times faster than "torch"; needs
the numba package) and ``"cuda"`` (mamba-ssm's fused kernel, imported lazily). ``"auto"`` takes
``"cuda"`` for CUDA tensors when mamba-ssm imports, else ``"numba"`` when numba imports, else
``"torch"``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from vmunet.ops.scan_common import check_args
from vmunet.ops.scan_ref import selective_scan_ref

BACKENDS: tuple[str, ...] = ("ref", "torch", "numba", "cuda")

_CUDA_HINT = (
    "the 'cuda' selective-scan backend needs mamba-ssm, which compiles CUDA code at install time: "
    "on a machine with nvcc and a CUDA build of torch run `pip install vmunet[cuda]` "
    "(see the README's GPU section); on CPU use backend='torch'"
)

_NUMBA_HINT = (
    "the 'numba' selective-scan backend needs numba (a PyPI wheel, no compiler needed): "
    "`pip install numba`; or use backend='torch'"
)
logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# "cuda": mamba-ssm, imported only when asked for
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _mamba_ssm_fn() -> Callable | None:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or its CUDA extension failing to load
        return None
    return selective_scan_fn


@functools.lru_cache(maxsize=1)
def numba_available() -> bool:
    """True when the compiled CPU kernel (numba) can be imported."""
    try:
        import vmunet.ops.scan_numba  # noqa: F401  (imports numba, compiles lazily)
    except Exception as exc:  # ImportError, or a numba/llvmlite that fails to load
        logger.debug("numba selective-scan backend unavailable: %s", exc)
        return False
    return True


def cuda_available() -> bool:
    """True when mamba-ssm's CUDA selective scan can be imported."""
    return torch.cuda.is_available() and _mamba_ssm_fn() is not None


def _selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    fn = _mamba_ssm_fn()
    if fn is None:
        raise RuntimeError(_CUDA_HINT)
    if not u.is_cuda:
        raise RuntimeError("selective_scan: backend='cuda' needs CUDA tensors, got u on " + str(u.device))
    # mamba-ssm wants contiguous inputs and float D / delta_bias
    args = [t.contiguous() for t in (u, delta, A, B, C)]
    D = None if D is None else D.float().contiguous()
    delta_bias = None if delta_bias is None else delta_bias.float().contiguous()
    z = None if z is None else z.contiguous()
    return fn(*args, D, z, delta_bias, delta_softplus, return_last_state)


def _backend_fn(name: str) -> Callable:
    if name == "ref":
        return selective_scan_ref
    if name == "torch":
        from vmunet.ops.scan_torch import selective_scan_torch

        return selective_scan_torch
    if name == "numba":
        from vmunet.ops.scan_numba import selective_scan_numba

        return selective_scan_numba
    if name == "cuda":
        return _selective_scan_cuda
    raise ValueError(f"selective_scan: unknown backend {name!r}; choose from {('auto', *BACKENDS)}")


def resolve_backend(backend: str, device: torch.device | None = None) -> str:
    """The concrete backend name that ``backend`` means for tensors on ``device``."""
    if backend == "auto":
        if device is not None and torch.device(device).type == "cuda" and cuda_available():
            return "cuda"
        if (device is None or torch.device(device).type == "cpu") and numba_available():
            return "numba"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose from {('auto', *BACKENDS)}")
    if backend == "cuda" and _mamba_ssm_fn() is None:
        raise RuntimeError(_CUDA_HINT)
    if backend == "numba" and not numba_available():
        raise RuntimeError(_NUMBA_HINT)
    return backend


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None,
                   delta_softplus: bool = False, return_last_state: bool = False, *,
                   backend: str = "auto") -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` signature.

    Shapes: ``u, delta, z``: (batch, dim, L); ``A``: (dim, N); ``B, C``: (batch, N, L) or
    (batch, G, N, L) with ``dim % G == 0``; ``D, delta_bias``: (dim,). Returns ``out`` (batch, dim, L)
    in the dtype of ``u`` and, with ``return_last_state``, the final state (batch, dim, N) in float32
    (float64 for float64 inputs). Half-precision inputs are computed in float32.
    """
    check_args(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u.device)
    return _backend_fn(name)(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

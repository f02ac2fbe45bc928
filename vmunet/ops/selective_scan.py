"""Selective scan (S6), the recurrence at the heart of Mamba, with interchangeable backends.

Same signature and semantics as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``::

    delta = softplus(delta + delta_bias)          (each step optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = <C_t, h_t> + D * u_t
    out   = y * silu(z)                           (when z is given)

Backends: ``"ref"`` (plain loop, the readable definition), ``"torch"`` (chunked pure PyTorch with a
hand-written backward), ``"numba"`` (compiled CPU kernel, several times faster than "torch"; needs
the numba package), ``"cuda"`` (mamba-ssm's fused kernel through its compiled extension, loaded
lazily; see :mod:`vmunet.ops.scan_cuda`) and ``"triton"`` (Triton kernels JIT-compiled on the GPU,
nothing to build at install; CPU tensors only under ``TRITON_INTERPRET=1``). ``"auto"`` takes, for
CUDA tensors, ``"cuda"`` when that extension loads, else ``"triton"`` when triton imports, else
``"torch"``; for CPU tensors ``"numba"`` when numba imports, else ``"torch"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vmunet.ops._availability import module_imports
from vmunet.ops.scan_common import check_args
from vmunet.ops.scan_cuda import (
    CUDA_HINT,
    cuda_available,
    extension,
    load_error,
    selective_scan_cuda,
)
from vmunet.ops.scan_ref import selective_scan_ref

BACKENDS: tuple[str, ...] = ("ref", "torch", "numba", "cuda", "triton")

_NUMBA_HINT = (
    "the 'numba' selective-scan backend needs numba (a PyPI wheel, no compiler needed): "
    "`pip install numba`; or use backend='torch'"
)
_TRITON_HINT = (
    "the 'triton' selective-scan backend needs triton (bundled with CUDA builds of torch, or "
    "`pip install triton`); or use backend='torch'"
)


def numba_available() -> bool:
    """True when the compiled CPU kernel (numba) can be imported (it compiles lazily)."""
    return module_imports("vmunet.ops.scan_numba")


def triton_available() -> bool:
    """True when the Triton kernels can be imported (they still need CUDA tensors, or the
    interpreter, to run; they compile on the first call)."""
    return module_imports("vmunet.ops.scan_triton")


def check_backend_name(backend: str, where: str = "selective_scan") -> str:
    """``backend`` when it names a backend ("auto" or one of :data:`BACKENDS`), else ``ValueError``
    naming ``where`` and the valid names: models check it when built, not at the first forward pass."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {backend!r}; choose from {('auto', *BACKENDS)}")
    return backend


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
        return selective_scan_cuda
    if name == "triton":
        from vmunet.ops.scan_triton import selective_scan_triton

        return selective_scan_triton
    raise ValueError(f"selective_scan: unknown backend {name!r}; choose from {('auto', *BACKENDS)}")


def resolve_backend(backend: str, device: torch.device | None = None) -> str:
    """The concrete backend name that ``backend`` means for tensors on ``device``."""
    if backend == "auto":
        if device is not None and torch.device(device).type == "cuda":
            if cuda_available():
                return "cuda"
            if triton_available():
                return "triton"
        if (device is None or torch.device(device).type == "cpu") and numba_available():
            return "numba"
        return "torch"
    check_backend_name(backend)
    if backend == "cuda" and extension() is None:
        raise RuntimeError(CUDA_HINT + (f" (loading it failed: {load_error()})" if load_error() else ""))
    if backend == "numba" and not numba_available():
        raise RuntimeError(_NUMBA_HINT)
    if backend == "triton" and not triton_available():
        raise RuntimeError(_TRITON_HINT)
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

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
import torch.nn.functional as F
from torch import Tensor

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
# argument checks and common preprocessing
# --------------------------------------------------------------------------------------------
def _check_args(u, delta, A, B, C, D, z, delta_bias) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(f"selective_scan: {msg}")

    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, Tensor):
            raise TypeError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"selective_scan: {name} must be a floating-point tensor, got {t.dtype}")
    need(u.dim() == 3, f"u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    need(tuple(delta.shape) == (batch, dim, L),
         f"delta must have the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}")
    need(A.dim() == 2 and A.shape[0] == dim, f"A must be (dim={dim}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            need(tuple(t.shape) == (batch, N, L),
                 f"{name} must be (batch={batch}, N={N}, L={L}) or (batch, G, N, L), got {tuple(t.shape)}")
        elif t.dim() == 4:
            need(t.shape[0] == batch and t.shape[2:] == (N, L),
                 f"{name} must be (batch={batch}, G, N={N}, L={L}), got {tuple(t.shape)}")
            need(dim % t.shape[1] == 0,
                 f"{name} has G={t.shape[1]} groups, which must divide dim={dim}")
        else:
            raise ValueError(
                f"selective_scan: {name} must be (batch, N, L) or (batch, G, N, L), got {tuple(t.shape)}"
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            need(isinstance(t, Tensor) and tuple(t.shape) == (dim,),
                 f"{name} must be (dim={dim},), got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if z is not None:
        need(isinstance(z, Tensor) and tuple(z.shape) == (batch, dim, L),
             f"z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")


def _expand_groups(X: Tensor, dim: int) -> Tensor:
    """One step of B or C: (batch, N) -> (batch, 1, N); (batch, G, N) -> (batch, dim, N) by group."""
    if X.dim() == 2:
        return X.unsqueeze(1)
    G = X.shape[1]
    return X.repeat_interleave(dim // G, dim=1) if G > 1 else X


def _compute_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp32, fp16, bf16) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    compute = _compute_dtype(delta)
    delta = delta.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype)


# --------------------------------------------------------------------------------------------
# "ref": the step-by-step definition
# --------------------------------------------------------------------------------------------
def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Plain loop over time steps: slow, obviously correct, used as the reference in tests."""
    dtype_in = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u_f = u.to(compute)
    dt = _prepare_delta(delta, delta_bias, delta_softplus).to(compute)
    A_f = A.to(compute)
    batch, dim, L = u.shape
    h = u_f.new_zeros(batch, dim, A.shape[1])
    ys = []
    # time-major copies + unbind (not x[..., t]): contiguous steps, and autograd stacks the
    # per-step gradients once instead of writing a full-size zero tensor per step (O(L^2))
    steps = zip(*(x.to(compute).movedim(-1, 0).unbind(0) for x in (dt, u_f, B, C)), strict=True)
    for dt_t, u_t, B_t, C_t in steps:
        B_t, C_t = _expand_groups(B_t, dim), _expand_groups(C_t, dim)  # (b, 1|d, n)
        dA = torch.exp(dt_t[:, :, None] * A_f)                        # (b, d, n)
        dBu = (dt_t * u_t)[:, :, None] * B_t                          # (b, d, n)
        h = dA * h + dBu
        ys.append((h * C_t).sum(-1))                                  # (b, d)
    y = torch.stack(ys, dim=-1)
    out = _finish(y, u_f, None if D is None else D.to(compute), None if z is None else z.to(compute), dtype_in)
    return (out, h) if return_last_state else out


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
    _check_args(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u.device)
    return _backend_fn(name)(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

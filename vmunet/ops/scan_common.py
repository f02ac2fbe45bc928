"""What every selective-scan backend shares: argument checks, the input set-up (compute dtype,
``delta`` transform, B/C grouping) and the finishing step (D skip term, z gate, output dtype).

The dispatcher (:mod:`vmunet.ops.selective_scan`) and every backend import this module; it imports
none of them, so there is no import cycle between the dispatcher and its backends.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def check_args(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Raise a ``ValueError``/``TypeError`` naming the argument whose shape or dtype is wrong."""
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


def compute_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp32, fp16, bf16) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def expand_groups(X: Tensor, dim: int) -> Tensor:
    """One step of B or C: (batch, N) -> (batch, 1, N); (batch, G, N) -> (batch, dim, N) by group."""
    if X.dim() == 2:
        return X.unsqueeze(1)
    G = X.shape[1]
    return X.repeat_interleave(dim // G, dim=1) if G > 1 else X


def prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """``softplus(delta + delta_bias)`` (each step optional) in the compute dtype."""
    compute = compute_dtype(delta)
    delta = delta.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


class ScanInputs(NamedTuple):
    """The inputs as the compiled/chunked backends take them, all in one compute dtype."""

    u: Tensor       # (batch, dim, L)
    dt: Tensor      # (batch, dim, L), delta after bias and softplus
    A: Tensor       # (dim, N)
    B: Tensor       # (batch, G, N, L); B and C have the same G
    C: Tensor       # (batch, G, N, L)


def prepare_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   delta_bias: Tensor | None, delta_softplus: bool) -> ScanInputs:
    """Cast to the compute dtype of ``u``, transform delta, and give B and C the same 4-D grouping."""
    compute = compute_dtype(u)
    dim = u.shape[1]
    B4 = (B.unsqueeze(1) if B.dim() == 3 else B).to(compute)
    C4 = (C.unsqueeze(1) if C.dim() == 3 else C).to(compute)
    if B4.shape[1] != C4.shape[1]:  # different groupings: one group per channel for both
        B4 = B4.repeat_interleave(dim // B4.shape[1], dim=1)
        C4 = C4.repeat_interleave(dim // C4.shape[1], dim=1)
    return ScanInputs(u.to(compute), prepare_delta(delta, delta_bias, delta_softplus).to(compute),
                      A.to(compute), B4, C4)


def finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``(y + D * u) * silu(z)`` (each term optional), computed in ``y``'s dtype, returned in ``dtype``."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype)

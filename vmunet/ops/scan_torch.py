"""Fast pure-PyTorch selective scan for CPU: sequential over chunks, parallel inside a chunk.

A (batch, dim, L, N) state tensor for the whole sequence is never built: the sequence is cut into
chunks of ``chunk_size`` steps; inside a chunk the linear recurrence h_t = a_t h_{t-1} + b_t is solved
with a log-depth (Hillis-Steele) scan of (a, b) pairs, and the state is carried between chunks.
Only products of decays a_t = exp(delta_t A) <= 1 appear, so it stays stable for any L and delta.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vmunet.ops.selective_scan import _expand_groups, _finish, _prepare_delta

DEFAULT_CHUNK = 64


def _chunk_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Solve h_t = a_t h_{t-1} + b_t along dim 2 for a chunk, starting from h0. a, b: (B, D, T, N)."""
    T = a.shape[2]
    step = 1
    while step < T:
        b = torch.cat([b[:, :, :step], a[:, :, step:] * b[:, :, :-step] + b[:, :, step:]], dim=2)
        a = torch.cat([a[:, :, :step], a[:, :, step:] * a[:, :, :-step]], dim=2)
        step *= 2
    return a * h0.unsqueeze(2) + b


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, chunk_size: int = DEFAULT_CHUNK):
    dtype_in = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u_f = u.to(compute)
    dt = _prepare_delta(delta, delta_bias, delta_softplus).to(compute)
    A_f = A.to(compute)
    batch, dim, L = u.shape
    Bx = _expand_groups(B.to(compute), dim)  # (b, 1|d, n, L)
    Cx = _expand_groups(C.to(compute), dim)
    h = u_f.new_zeros(batch, dim, A.shape[1])
    dtu = dt * u_f
    ys = []
    for s in range(0, L, chunk_size):
        e = min(s + chunk_size, L)
        a = torch.exp(dt[:, :, s:e, None] * A_f[:, None, :])                       # (b, d, T, n)
        bb = dtu[:, :, s:e, None] * Bx[..., s:e].transpose(-1, -2)                   # (b, d, T, n)
        hs = _chunk_scan(a, bb, h)
        ys.append((hs * Cx[..., s:e].transpose(-1, -2)).sum(-1))
        h = hs[:, :, -1]
    y = torch.cat(ys, dim=-1)
    out = _finish(y, u_f, None if D is None else D.to(compute), None if z is None else z.to(compute), dtype_in)
    return (out, h) if return_last_state else out

"""The "ref" selective scan: the step-by-step definition, slow and obviously correct.

The tests compare every other backend with it. It shares only the argument set-up and finishing
helpers of :mod:`vmunet.ops.scan_common`; the tests also check it (and those helpers) against
hand-computed answers, so a bug shared by all backends cannot hide behind it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vmunet.ops.scan_common import compute_dtype, expand_groups, finish, prepare_delta


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Tensor | None = None, z: Tensor | None = None,
                       delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Plain loop over time steps; same signature and result as :func:`vmunet.ops.selective_scan`."""
    dtype_in = u.dtype
    compute = compute_dtype(u)
    u_f = u.to(compute)
    dt = prepare_delta(delta, delta_bias, delta_softplus).to(compute)
    A_f = A.to(compute)
    batch, dim, L = u.shape
    h = u_f.new_zeros(batch, dim, A.shape[1])
    ys = []
    # time-major copies + unbind (not x[..., t]): contiguous steps, and autograd stacks the
    # per-step gradients once instead of writing a full-size zero tensor per step (O(L^2))
    steps = zip(*(x.to(compute).movedim(-1, 0).unbind(0) for x in (dt, u_f, B, C)), strict=True)
    for dt_t, u_t, B_t, C_t in steps:
        B_t, C_t = expand_groups(B_t, dim), expand_groups(C_t, dim)   # (b, 1|d, n)
        dA = torch.exp(dt_t[:, :, None] * A_f)                        # (b, d, n)
        dBu = (dt_t * u_t)[:, :, None] * B_t                          # (b, d, n)
        h = dA * h + dBu
        ys.append((h * C_t).sum(-1))                                  # (b, d)
    y = torch.stack(ys, dim=-1)
    out = finish(y, u_f, D, z, dtype_in)
    return (out, h) if return_last_state else out

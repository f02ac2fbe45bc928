"""Fast pure-PyTorch selective scan for CPU, with a hand-written backward.

The recurrence ``h_t = a_t * h_{t-1} + b_t`` (``a_t = exp(delta_t A)``, ``b_t = delta_t u_t B_t``) is
solved block by block; a (batch, dim, L, N) tensor for the whole sequence is never built.

Inside a block of ``nc * T`` steps the block is cut into ``nc`` chunks of ``T`` steps that are scanned
*at the same time*: one in-place ``addcmul_`` per step updates the states of all chunks (and all
batch, dim, N lanes) at once, so a Python loop of T iterations drives large vectorised kernels.
The chunks are then joined: the state entering chunk c is carried over the chunk boundaries and
added to every step of the chunk times its cumulative decay ``exp(A * cumsum(delta))``. Only
decays ``exp(delta A)`` and their products appear (never their inverses), so with A <= 0 every
factor is <= 1 and the scan is stable for any sequence length and any delta.

The backward pass walks the blocks in reverse, recomputes each block's states from the block's
saved start state (memory stays O(block)), runs the adjoint recurrence
``g_t = C_t dy_t + a_{t+1} g_{t+1}`` the same way in reverse time, and forms every input gradient
with a few einsums. Time inside a block is laid out as (T, nc, batch, G, dim/G[, N]) so that each
step is one contiguous slab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vmunet.ops.scan_common import finish, prepare_inputs

#: Aim for this many state elements (nc * batch * dim * N) updated per Python-level step: large
#: enough to hide the per-op overhead, small enough that a block stays cache-friendly.
SLAB_TARGET = 1 << 16
#: Steps per chunk (the Python loop length per block).
CHUNK_STEPS = 32


def plan_blocks(batch: int, dim: int, N: int, L: int, chunk_steps: int | None = None,
                slab_target: int | None = None) -> tuple[int, int, int]:
    """Choose ``(n_blocks, nc, T)`` with ``n_blocks * nc * T >= L`` (the rest is padding)."""
    T = max(1, min(chunk_steps or CHUNK_STEPS, L))
    lanes = batch * dim * N
    nc = max(1, min(math.ceil((slab_target or SLAB_TARGET) / lanes), math.ceil(L / T)))
    n_blocks = math.ceil(L / (nc * T))
    # shrink T so that the padding is less than one step per chunk
    T = math.ceil(L / (n_blocks * nc))
    return n_blocks, nc, T


def _lay(x: Tensor, n_blocks: int, nc: int, T: int) -> Tensor:
    """(b, *mid, L) -> (n_blocks, T, nc, b, *mid), zero-padded along L; time = (blk*nc + c)*T + t."""
    b, *mid, L = x.shape
    Lp = n_blocks * nc * T
    if Lp != L:
        x = F.pad(x, (0, Lp - L))
    x = x.reshape(b, *mid, n_blocks, nc, T)
    m = len(mid)
    return x.permute(m + 1, m + 3, m + 2, 0, *range(1, m + 1)).contiguous()


def _unlay(y: Tensor, L: int) -> Tensor:
    """Inverse of ``_lay``: (n_blocks, T, nc, b, *mid) -> (b, *mid, L)."""
    n_blocks, T, nc, b, *mid = y.shape
    m = len(mid)
    y = y.permute(3, *range(4, 4 + m), 0, 2, 1).reshape(b, *mid, n_blocks * nc * T)
    return y[..., :L]


def _block_states(dt: Tensor, dtu: Tensor, Bb: Tensor, A: Tensor, h0: Tensor | None):
    """States of one block. dt, dtu: (T, nc, b, G, dg); Bb: (T, nc, b, G, N); A: (G, dg, N);
    h0: (b, G, dg, N) or None (zero). Returns (h, a, h_end), h and a: (T, nc, b, G, dg, N)."""
    T, nc = dt.shape[:2]
    a = torch.mul(dt.unsqueeze(-1), A).exp_()
    h = torch.mul(dtu.unsqueeze(-1), Bb.unsqueeze(-2))
    if h0 is not None:  # chunk 0 starts from h0: fold it into the first step
        h[0, 0].addcmul_(a[0, 0], h0)
    for t in range(1, T):
        h[t].addcmul_(a[t], h[t - 1])
    if nc > 1:
        # cumulative decay from each chunk's start, exp(A * sum delta) <= 1
        P = torch.mul(dt[:, 1:].cumsum(0).unsqueeze(-1), A).exp_()  # (T, nc-1, ...)
        starts = h.new_empty(h.shape[1:])[1:]  # (nc-1, b, G, dg, N)
        prev = h[T - 1, 0]
        for c in range(1, nc):
            starts[c - 1] = prev
            prev = torch.addcmul(h[T - 1, c], P[T - 1, c - 1], prev)
        h[:, 1:].addcmul_(P, starts)
    return h, a, h[T - 1, nc - 1].clone()


def _block_adjoint(dt: Tensor, a: Tensor, g: Tensor, A: Tensor, carry: Tensor | None) -> Tensor:
    """In place, solve g_t <- g_t + a_{t+1} g_{t+1} backwards over one block.

    ``carry`` (b, G, dg, N) is a_{next} * g_{next} from the block after this one (or the gradient of
    the last state); returns the carry for the block before: a_0 * g_0."""
    T, nc = dt.shape[:2]
    if carry is not None:
        g[T - 1, nc - 1].add_(carry)
    for t in range(T - 2, -1, -1):
        g[t].addcmul_(a[t + 1], g[t + 1])
    if nc > 1:
        # decay from step t (exclusive) to the chunk's end: exp(A * sum_{s>t} delta_s)
        cs = dt[:, :-1].cumsum(0)
        Q = torch.mul((cs[T - 1 :] - cs).unsqueeze(-1), A).exp_()  # (T, nc-1, ...)
        carries = g.new_empty(g.shape[1:])[:-1]  # (nc-1, ...)
        nxt = a[0, nc - 1] * g[0, nc - 1]
        for c in range(nc - 2, -1, -1):
            carries[c] = nxt
            nxt = a[0, c] * torch.addcmul(g[0, c], Q[0, c], nxt)
        g[:, :-1].addcmul_(Q, carries)
    return a[0, 0] * g[0, 0]


def _lay_inputs(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, plan: tuple[int, int, int]
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward's inputs in the block layout of ``plan``, shared by both forwards:
    ``A_v`` (G, dg, N) and ``dt_l``, ``dtu_l`` (n_blocks, T, nc, b, G, dg), ``B_l``, ``C_l``
    (n_blocks, T, nc, b, G, N). u, dt: (b, d, L); A: (d, N); B, C: (b, G, N, L)."""
    n_blocks, nc, T = plan
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    dg = dim // G
    A_v = A.reshape(G, dg, N)
    dt_l = _lay(dt.reshape(batch, G, dg, L), n_blocks, nc, T)
    dtu_l = _lay((dt * u).reshape(batch, G, dg, L), n_blocks, nc, T)
    return A_v, dt_l, dtu_l, _lay(B, n_blocks, nc, T), _lay(C, n_blocks, nc, T)


def _exporting() -> bool:
    """True while ``torch.jit.trace`` / ``torch.onnx.export`` / ``torch.export`` records the model.
    They cannot record a Python ``autograd.Function``, the ONNX exporter mistranslates the in-place
    writes into views of :class:`_SelectiveScanCore` (wrong outputs, no error), and every tracer
    unrolls its Python loops; so :func:`vmunet.ops.scan_export.selective_scan_export` is recorded
    instead: no in-place writes, and its loop over blocks is a loop of the graph (an exported graph
    is for inference; it has no backward)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


class _SelectiveScanCore(torch.autograd.Function):
    """y = scan(u, dt, A, B, C) without D, z, bias or softplus (those stay in plain autograd).

    u, dt: (b, d, L); A: (d, N); B, C: (b, G, N, L). Returns y (b, d, L) and the last state (b, d, N).
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C, plan):
        n_blocks = plan[0]
        batch, dim, L = u.shape
        A_v, dt_l, dtu_l, B_l, C_l = _lay_inputs(u, dt, A, B, C, plan)
        G, dg, N = A_v.shape
        y_l = u.new_empty(dt_l.shape)
        starts = u.new_zeros(n_blocks, batch, G, dg, N)
        h_end = None
        for i in range(n_blocks):
            if h_end is not None:
                starts[i] = h_end
            h, _, h_end = _block_states(dt_l[i], dtu_l[i], B_l[i], A_v, h_end)
            y_l[i] = torch.matmul(h, C_l[i].unsqueeze(-1)).squeeze(-1)
            del h
        ctx.save_for_backward(u, dt, A_v, dt_l, dtu_l, B_l, C_l, starts)
        ctx.plan = plan
        ctx.set_materialize_grads(False)
        return _unlay(y_l, L).reshape(batch, dim, L), h_end.reshape(batch, dim, N)

    @staticmethod
    def backward(ctx, gy, glast):
        u, dt, A_v, dt_l, dtu_l, B_l, C_l, starts = ctx.saved_tensors
        n_blocks, nc, T = ctx.plan
        batch, dim, L = u.shape
        G, dg, N = A_v.shape
        need_u, need_dt, need_A, need_B, need_C = ctx.needs_input_grad[:5]
        if gy is None:
            gy_l = torch.zeros_like(dt_l)
        else:
            gy_l = _lay(gy.reshape(batch, G, dg, L), n_blocks, nc, T)
        carry = None if glast is None else glast.reshape(batch, G, dg, N).to(u.dtype)
        ddtu_l = torch.empty_like(dt_l)
        ddt_l = torch.empty_like(dt_l)
        dB_l = torch.empty_like(B_l)
        dC_l = torch.empty_like(C_l)
        dA = torch.zeros_like(A_v)
        for i in range(n_blocks - 1, -1, -1):
            dt_i, dtu_i, B_i = dt_l[i], dtu_l[i], B_l[i]
            h, a, _ = _block_states(dt_i, dtu_i, B_i, A_v, starts[i] if i > 0 else None)
            if need_C:
                dC_l[i] = torch.matmul(gy_l[i].unsqueeze(-2), h).squeeze(-2)
            g = torch.mul(C_l[i].unsqueeze(-2), gy_l[i].unsqueeze(-1))
            carry = _block_adjoint(dt_i, a, g, A_v, carry)
            del a
            if need_u or need_dt:
                ddtu_l[i] = torch.matmul(g, B_i.unsqueeze(-1)).squeeze(-1)
            if need_B:
                dB_l[i] = torch.matmul(dtu_i.unsqueeze(-2), g).squeeze(-2)
            if need_A or need_dt:
                # g_t * a_t * h_{t-1} == g_t * (h_t - delta_t u_t B_t)
                w = h.sub_(torch.mul(dtu_i.unsqueeze(-1), B_i.unsqueeze(-2))).mul_(g)
                if need_A:
                    dA += torch.einsum("tcbgdn,tcbgd->gdn", w, dt_i)
                if need_dt:
                    ddt_l[i] = torch.einsum("tcbgdn,gdn->tcbgd", w, A_v)
            del h, g
        du = ddt = dA_out = dB = dC = None
        if need_u or need_dt:
            ddtu = _unlay(ddtu_l, L).reshape(batch, dim, L)
            if need_u:
                du = ddtu * dt
            if need_dt:
                ddt = _unlay(ddt_l, L).reshape(batch, dim, L) + ddtu * u
        if need_A:
            dA_out = dA.reshape(dim, N)
        if need_B:
            dB = _unlay(dB_l, L)
        if need_C:
            dC = _unlay(dC_l, L)
        return du, ddt, dA_out, dB, dC, None


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, *, chunk_steps: int | None = None,
                         slab_target: int | None = None):
    """The "torch" backend; see :func:`vmunet.ops.selective_scan`. ``chunk_steps`` and
    ``slab_target`` override the blocking (for tests and tuning only)."""
    if _exporting():
        # imported here: scan_export builds on this module's block layout (plan_blocks, _lay_inputs)
        from vmunet.ops.scan_export import selective_scan_export

        return selective_scan_export(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                     chunk_steps=chunk_steps, slab_target=slab_target)
    s = prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, L = u.shape
    plan = plan_blocks(batch, dim, A.shape[1], L, chunk_steps, slab_target)
    y, h = _SelectiveScanCore.apply(s.u, s.dt, s.A, s.B, s.C, plan)
    out = finish(y, s.u, D, z, u.dtype)
    return (out, h) if return_last_state else out

"""Selective scan (S6) as Triton kernels, forward and backward: the "triton" backend.

Nothing is compiled at install time: Triton JIT-compiles the kernels on the first call on a GPU.
On CPU tensors the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
this module is imported), which is how the tests check them without a GPU.

Everything of S6 is fused into the two kernels, so the inputs are read in their own dtype
(fp32/bf16/fp16/fp64) and no float32 copies of them are made:
``delta -> softplus(delta + delta_bias)``, the scan, ``y + D u`` and the gate ``* silu(z)``.

Layout of the work (see docs/ops.md):

* **Blocking over D.** One program owns ``BLOCK_D`` channels of one batch element. ``BLOCK_D``
  divides the channels per group, so all channels of a program share one B/C row and B/C are
  loaded once per program, not once per channel.
* **Chunking over L.** The program walks the sequence in chunks of ``BLOCK_L`` steps. Inside a
  chunk the linear recurrence ``h_t = a_t h_{t-1} + b_t`` is solved for the whole
  (BLOCK_D, N, BLOCK_L) tile at once with ``tl.associative_scan`` on the pairs (a, b); the state
  carried from the previous chunk enters as ``h_t = (prod a) h_start + scan_b``. The state lives
  in registers in float32 (float64 for float64 inputs).
* **What the backward recomputes.** The forward saves only the state at the start of every chunk
  (batch, dim, L/BLOCK_L, N). The backward walks the chunks in reverse, recomputes the chunk's
  ``delta``, decays and states from the saved start state (and ``y`` for the z gate), and solves
  the adjoint recurrence ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` with a reverse associative scan.
  No (batch, dim, L, N) tensor is ever written.
* **Reductions.** dA, dD and d(delta_bias) are summed over the program's whole sequence in
  registers and written once per (batch, channel) (summed over batch by torch afterwards, so
  deterministic). dB and dC sum over the channels of a group: the program sums its ``BLOCK_D``
  channels and adds the result to a float32 buffer with atomics, so their low bits depend on the
  order of the programs (like mamba-ssm's kernel).

Positions past the end of the sequence get ``delta = 0`` (decay 1, no input), so the last state
is exact for any L (mamba-ssm issue #368 is about this case).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

#: Steps per chunk, forward and backward (the backward recomputes the forward's chunks). A power
#: of two (tl.arange); a tile holds BLOCK_D * N * BLOCK_L elements.
BLOCK_L = 64
#: Largest number of channels per program (the actual one divides dim / G). The backward keeps
#: about eight (BLOCK_D, N, BLOCK_L) tiles live: 2 x 16 x 64 is 128 values per thread at 4 warps.
BLOCK_D_MAX = 2
#: Warps per program. These three defaults are first guesses, not tuned on a GPU yet
#: (benchmarks/gpu_triton_check.py --sweep measures the alternatives).
NUM_WARPS = 4


def interpreted() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1`` at import time)."""
    # @triton.jit returns a JITFunction, or an InterpretedFunction under the interpreter
    return not isinstance(_scan_bwd_kernel, triton.runtime.JITFunction)


def _sliced_generic_scan(self, input):
    """Triton's interpreter scan (``ScanOps.generic_scan``) with the same sequential left fold
    (``acc = combine(acc, x_i)`` along the axis, the first element as is), applied to whole slices
    across the other axes instead of one element at a time: identical arithmetic, BLOCK_D * N
    times fewer Python calls."""
    data = [arg.handle.data for arg in input]
    outs = [np.empty_like(d) for d in data]
    acc = None
    for i in range(data[0].shape[self.axis]):
        cur = tuple(self.to_tensor(np.take(d, i, axis=self.axis), arg.dtype)
                    for d, arg in zip(data, input, strict=True))
        if acc is None:
            acc = cur
        else:
            ret = self.combine_fn.fn(*acc, *cur)
            acc = ret if isinstance(ret, tuple) else (ret,)
        for o, a in zip(outs, acc, strict=True):
            index = [slice(None)] * o.ndim
            index[self.axis] = i
            o[tuple(index)] = a.handle.data
    return [self.to_tensor(o, arg.dtype) for o, arg in zip(outs, input, strict=True)]


@contextlib.contextmanager
def fast_interpreter_scan() -> Iterator[bool]:
    """Inside the block, Triton's interpreter runs ``tl.associative_scan`` over tuples slice by
    slice (its own runs one element at a time in Python, ~100x slower for these kernels). Yields
    whether the patch is in place (False for a Triton without ``ScanOps.generic_scan``). Only
    affects the interpreter; for CPU runs (tests, smoke checks), never needed on a GPU."""
    try:
        from triton.runtime.interpreter import ScanOps
        original = ScanOps.generic_scan
    except (ImportError, AttributeError):
        yield False
        return
    ScanOps.generic_scan = _sliced_generic_scan
    try:
        yield True
    finally:
        ScanOps.generic_scan = original


@triton.jit
def _combine(a1, b1, a2, b2):
    # composition of h -> a1 h + b1 then h -> a2 h + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # mamba-ssm's softplus: identity above 20; log1p(exp(x)) below, with Kahan's log1p (no
    # libdevice call, so the interpreter runs it too)
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _delta(delta_ptr, bias_ptr, offs_d, idx, mask, HAS_BIAS: tl.constexpr,
           SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """delta after bias and softplus (0 where masked) and d(delta after)/d(delta before)."""
    x = tl.load(delta_ptr + idx, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        x = x + tl.load(bias_ptr + offs_d).to(ACC)[:, None]
    if SOFTPLUS:
        dt = _softplus(x)
        ddt = tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-x)))
    else:
        dt = x
        ddt = tl.full(x.shape, 1.0, ACC)
    return tl.where(mask, dt, 0.0), ddt


@triton.jit
def _load_chunk(u_ptr, delta_ptr, bias_ptr, B_ptr, C_ptr, row, bc_row, offs_d, offs_l, mask_n, c,
                DIM, L: tl.constexpr, BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """Chunk ``c`` of a program's sequence, as both kernels read it: the steps ``t`` (BL,), the
    channel/step mask and offsets (BD, BL), delta after bias and softplus and its derivative (see
    :func:`_delta`), u (BD, BL), the B/C mask and B, C (NP, BL); zeros where masked."""
    t = c * BLOCK_L + offs_l
    mask_t = t < L
    mask = mask_t[None, :] & (offs_d[:, None] < DIM)
    idx = row + t[None, :]
    dt, ddt_dx = _delta(delta_ptr, bias_ptr, offs_d, idx, mask, HAS_BIAS, SOFTPLUS, ACC)
    u = tl.load(u_ptr + idx, mask=mask, other=0.0).to(ACC)
    bc_mask = mask_n[:, None] & mask_t[None, :]
    Bt = tl.load(B_ptr + bc_row + t[None, :], mask=bc_mask, other=0.0).to(ACC)
    Ct = tl.load(C_ptr + bc_row + t[None, :], mask=bc_mask, other=0.0).to(ACC)
    return t, mask, idx, dt, ddt_dx, u, bc_mask, Bt, Ct


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    out_ptr, last_ptr, ckpt_ptr,
    DIM, N, G,
    L: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    NCHUNK: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE: tl.constexpr,
):
    ACC: tl.constexpr = last_ptr.dtype.element_ty  # float32, or float64 for float64 inputs
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)              # (BD,) channels
    offs_n = tl.arange(0, N_P)                                     # (NP,)
    offs_l = tl.arange(0, BLOCK_L)                                 # (BL,)
    mask_n = offs_n < N
    grp = (pid_d * BLOCK_D) // (DIM // G)
    row = pid_b * DIM * L + offs_d[:, None] * L                    # (BD, 1) start of each channel
    bc_row = (pid_b * G + grp) * N * L + offs_n[:, None] * L       # (NP, 1)
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :],
                mask=mask_n[None, :], other=0.0).to(ACC)          # (BD, NP); padded lanes: A = 0
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(ACC)
    h = tl.zeros((BLOCK_D, N_P), dtype=ACC)
    st_row = (pid_b * DIM + offs_d[:, None]) * N + offs_n[None, :]  # (BD, NP) in (b, dim, N)
    for c in range(NCHUNK):
        if SAVE:  # state entering chunk c, for the backward
            tl.store(ckpt_ptr + (pid_b * DIM + offs_d[:, None]) * (NCHUNK * N) + c * N
                     + offs_n[None, :], h, mask=mask_n[None, :])
        t, mask, idx, dt, _, u, bc_mask, Bt, Ct = _load_chunk(
            u_ptr, delta_ptr, bias_ptr, B_ptr, C_ptr, row, bc_row, offs_d, offs_l, mask_n, c,
            DIM, L, BLOCK_L, HAS_BIAS, SOFTPLUS, ACC)
        a = tl.exp(dt[:, None, :] * A[:, :, None])                 # (BD, NP, BL)
        b = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, b_cum = tl.associative_scan((a, b), axis=2, combine_fn=_combine)
        hs = a_cum * h[:, :, None] + b_cum
        y = tl.sum(hs * Ct[None, :, :], axis=1)                    # (BD, BL)
        h = tl.sum(tl.where(offs_l[None, None, :] == BLOCK_L - 1, hs, 0.0), axis=2)
        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            zz = tl.load(z_ptr + idx, mask=mask, other=0.0).to(ACC)
            y = y * zz / (1.0 + tl.exp(-zz))
        tl.store(out_ptr + idx, y.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(last_ptr + st_row, h, mask=mask_n[None, :])


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr,
    dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
    DIM, N, G,
    L: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    NCHUNK: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr,
):
    """One program: BLOCK_D channels of one batch element, the forward's chunks in reverse."""
    ACC: tl.constexpr = ckpt_ptr.dtype.element_ty
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N_P)
    offs_l = tl.arange(0, BLOCK_L)
    mask_n = offs_n < N
    grp = (pid_d * BLOCK_D) // (DIM // G)
    row = pid_b * DIM * L + offs_d[:, None] * L
    bc_row = (pid_b * G + grp) * N * L + offs_n[:, None] * L
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_n[None, :], other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(ACC)
    st_row = (pid_b * DIM + offs_d[:, None]) * N + offs_n[None, :]
    # carry = a_{t+1} g_{t+1} from the chunk after; at the end it is the last state's gradient
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + st_row, mask=mask_n[None, :], other=0.0).to(ACC)
    else:
        carry = tl.zeros((BLOCK_D, N_P), dtype=ACC)
    acc_dA = tl.zeros((BLOCK_D, N_P), dtype=ACC)
    acc_dD = tl.zeros((BLOCK_D,), dtype=ACC)
    acc_dbias = tl.zeros((BLOCK_D,), dtype=ACC)
    for kk in range(NCHUNK):
        k = NCHUNK - 1 - kk
        h0 = tl.load(ckpt_ptr + (pid_b * DIM + offs_d[:, None]) * (NCHUNK * N) + k * N
                     + offs_n[None, :], mask=mask_n[None, :], other=0.0)
        t, mask, idx, dt, ddt_dx, u, bc_mask, Bt, Ct = _load_chunk(
            u_ptr, delta_ptr, bias_ptr, B_ptr, C_ptr, row, bc_row, offs_d, offs_l, mask_n, k,
            DIM, L, BLOCK_L, HAS_BIAS, SOFTPLUS, ACC)
        dtu = dt * u
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        bx = dtu[:, None, :] * Bt[None, :, :]
        a_cum, b_cum = tl.associative_scan((a, bx), axis=2, combine_fn=_combine)
        hs = a_cum * h0[:, :, None] + b_cum                        # (BD, NP, BL) states
        dout = tl.load(dout_ptr + idx, mask=mask, other=0.0).to(ACC)
        if HAS_Z:
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y = y + Dv[:, None] * u
            zz = tl.load(z_ptr + idx, mask=mask, other=0.0).to(ACC)
            sz = 1.0 / (1.0 + tl.exp(-zz))
            dz = dout * y * sz * (1.0 + zz * (1.0 - sz))
            tl.store(dz_ptr + idx, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dout * zz * sz
        else:
            dy = dout
        # decay of the next step inside this chunk (0 at the chunk's last step: the carry
        # from the next chunk enters there instead)
        t1 = t + 1
        last_t = tl.minimum(k * BLOCK_L + BLOCK_L, L) - 1
        m1 = (t1 <= last_t)[None, :] & (offs_d[:, None] < DIM)
        dt1, _ = _delta(delta_ptr, bias_ptr, offs_d, row + t1[None, :], m1, HAS_BIAS, SOFTPLUS, ACC)
        alpha = tl.where(m1[:, None, :], tl.exp(dt1[:, None, :] * A[:, :, None]), 0.0)
        x = Ct[None, :, :] * dy[:, None, :]
        x = x + tl.where((t == last_t)[None, None, :], carry[:, :, None], 0.0)
        _, g = tl.associative_scan((alpha, x), axis=2, combine_fn=_combine, reverse=True)
        carry = tl.sum(tl.where(offs_l[None, None, :] == 0, a * g, 0.0), axis=2)
        # input gradients
        ddtu = tl.sum(g * Bt[None, :, :], axis=1)                  # (BD, BL)
        w = g * (hs - bx)                                          # g_t * a_t * h_{t-1}
        ddt = ddtu * u + tl.sum(w * A[:, :, None], axis=1)
        acc_dA += tl.sum(w * dt[:, None, :], axis=2)
        du = ddtu * dt
        if HAS_D:
            du = du + dy * Dv[:, None]
            acc_dD += tl.sum(dy * u, axis=1)
        ddelta = tl.where(mask, ddt * ddt_dx, 0.0)
        acc_dbias += tl.sum(ddelta, axis=1)
        tl.store(du_ptr + idx, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + idx, ddelta.to(ddelta_ptr.dtype.element_ty), mask=mask)
        dB = tl.sum(g * dtu[:, None, :], axis=0)                   # (NP, BL) this program's part
        dC = tl.sum(hs * dy[:, None, :], axis=0)
        tl.atomic_add(dB_ptr + bc_row + t[None, :], dB, mask=bc_mask)
        tl.atomic_add(dC_ptr + bc_row + t[None, :], dC, mask=bc_mask)
    tl.store(dA_ptr + st_row, acc_dA, mask=mask_n[None, :])
    if HAS_D:
        tl.store(dD_ptr + pid_b * DIM + offs_d, acc_dD)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * DIM + offs_d, acc_dbias)


def _block_d(dim: int, G: int) -> int:
    """Largest power of two <= BLOCK_D_MAX dividing the channels per group."""
    dg = dim // G
    bd = 1
    while bd * 2 <= BLOCK_D_MAX and dg % (bd * 2) == 0:
        bd *= 2
    return bd


def _bc4(B: Tensor, C: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """B and C as contiguous (batch, G, N, L) with the same G (no dtype change)."""
    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    if B4.shape[1] != C4.shape[1]:  # different groupings: one group per channel for both
        B4 = B4.repeat_interleave(dim // B4.shape[1], dim=1)
        C4 = C4.repeat_interleave(dim // C4.shape[1], dim=1)
    return B4.contiguous(), C4.contiguous()


def _acc_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus: bool, block_l: int,
                need_grad: bool):
        batch, dim, L = u.shape
        B4, C4 = _bc4(B, C, dim)
        G, N = B4.shape[1], B4.shape[2]
        u_, delta_, A_ = u.contiguous(), delta.contiguous(), A.contiguous()
        z_ = None if z is None else z.contiguous()
        acc = _acc_dtype(u)
        nchunk = triton.cdiv(L, block_l)
        out = torch.empty_like(u_)
        last = u.new_empty(batch, dim, N, dtype=acc)
        ckpt = u.new_empty(batch, dim, nchunk if need_grad else 0, N, dtype=acc)
        bd = _block_d(dim, G)
        grid = (dim // bd, batch)
        _scan_fwd_kernel[grid](
            u_, delta_, A_, B4, C4, D, z_, delta_bias, out, last, ckpt, dim, N, G,
            L=L, N_P=triton.next_power_of_2(N), BLOCK_D=bd, BLOCK_L=block_l, NCHUNK=nchunk,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(softplus), SAVE=need_grad, num_warps=NUM_WARPS,
        )
        if need_grad:
            ctx.save_for_backward(u_, delta_, A_, B4, C4, D, z_, delta_bias, ckpt)
            ctx.shapes = (B.dim(), C.dim(), B.shape[1] if B.dim() == 4 else 1,
                          C.shape[1] if C.dim() == 4 else 1, B.dtype, C.dtype)
            ctx.softplus = bool(softplus)
            ctx.block_l = block_l
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B4, C4, D, z, delta_bias, ckpt = ctx.saved_tensors
        b_dim, c_dim, G_b, G_c, B_dtype, C_dtype = ctx.shapes
        batch, dim, L = u.shape
        G, N = B4.shape[1], B4.shape[2]
        acc = ckpt.dtype
        dout = torch.zeros_like(u) if dout is None else dout.contiguous()
        du = torch.empty_like(u)
        ddelta = torch.empty_like(delta)
        dA_part = u.new_empty(batch, dim, N, dtype=acc)
        dB = torch.zeros(B4.shape, dtype=acc, device=u.device)
        dC = torch.zeros(C4.shape, dtype=acc, device=u.device)
        dD_part = u.new_empty(batch, dim, dtype=acc) if D is not None else None
        dz = torch.empty_like(z) if z is not None else None
        dbias_part = u.new_empty(batch, dim, dtype=acc) if delta_bias is not None else None
        bd = _block_d(dim, G)
        _scan_bwd_kernel[(dim // bd, batch)](
            u, delta, A, B4, C4, D, z, delta_bias, ckpt,
            dout, None if dlast is None else dlast.contiguous(),
            du, ddelta, dA_part, dB, dC, dD_part, dz, dbias_part, dim, N, G,
            L=L, N_P=triton.next_power_of_2(N), BLOCK_D=bd, BLOCK_L=ctx.block_l,
            NCHUNK=ckpt.shape[2], HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus, HAS_DLAST=dlast is not None,
            num_warps=NUM_WARPS,
        )
        dB = _ungroup(dB, b_dim, G_b, dim).to(B_dtype)
        dC = _ungroup(dC, c_dim, G_c, dim).to(C_dtype)
        dD = None if D is None else dD_part.sum(0).to(D.dtype)
        dbias = None if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype)
        return (du, ddelta, dA_part.sum(0).to(A.dtype), dB, dC, dD, dz, dbias, None, None, None)


def _ungroup(dX: Tensor, ndim: int, G_orig: int, dim: int) -> Tensor:
    """Gradient in the caller's B/C layout: undo the per-channel expansion and the 3-D -> 4-D view."""
    if dX.shape[1] != G_orig:  # expanded to per-channel groups: sum back to the caller's groups
        dX = dX.reshape(dX.shape[0], G_orig, -1, *dX.shape[2:]).sum(2)
    return dX.squeeze(1) if ndim == 3 else dX


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, *, block_l: int | None = None):
    """The "triton" backend; see :func:`vmunet.ops.selective_scan`. ``block_l`` overrides the
    chunk length in steps, a power of two (tests, tuning)."""
    if u.device.type != "cuda" and not interpreted():
        raise RuntimeError(
            f"selective_scan: backend='triton' needs CUDA tensors (got u on {u.device}); on CPU it "
            "runs only under Triton's interpreter (TRITON_INTERPRET=1 set before importing vmunet)"
        )
    bl = block_l or BLOCK_L
    if bl < 1 or bl & (bl - 1):
        raise ValueError(f"selective_scan: block_l must be a power of two, got {bl}")
    # inside Function.forward grad mode is always off and needs_input_grad ignores no_grad():
    # decide here whether the chunk-start states must be saved
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    out, last = _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, bl, need_grad)
    return (out, last) if return_last_state else out


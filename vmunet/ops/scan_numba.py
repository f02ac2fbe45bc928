"""Selective scan as a compiled CPU kernel (numba), forward and backward.

Imported only when the "numba" backend is used, so the package works without numba. Each
(batch, channel) pair is an independent recurrence; the kernels run those in parallel
(``prange``) and walk time sequentially with the N state lanes in registers, fusing the decay,
the input term and the C-contraction into one pass: nothing of size (batch, dim, L, N) is written.

``exp`` dominates the cost and numba's is a scalar libm call that stops vectorisation, so float32
uses its own branch-free ``exp`` (Cody-Waite reduction, degree-6 minimax polynomial; every
float32 in [-87, 88] within 1 ulp of the exact value) that LLVM vectorises over the N lanes.
Inputs are clamped to [-87, 88], so exp(x < -87) gives ~1.6e-38 instead of a smaller number:
irrelevant next to any state of order 1e-30 or above.

The backward kernel recomputes the states of each ``CKPT``-step chunk from checkpoints saved by
the forward (memory O(batch * dim * L/CKPT * N)), then runs the adjoint recurrence backwards.
Gradients of B and C sum over the channels of a group, so each worker owns a private slice of the
accumulators, which are added up afterwards (no races, deterministic for a fixed thread count).
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np
import torch
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange, types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.extending import intrinsic, overload
from torch import Tensor

from vmunet.ops.scan_common import finish, prepare_inputs

logger = logging.getLogger(__name__)

# LLVM's loop vectoriser would otherwise pick 16 lanes x interleave 2 = 32 elements per iteration,
# so the N = 16 state lanes of Mamba would all fall into the 4-wide remainder loop (measured: 1.7x
# slower). The option is process-wide but only changes how loops are unrolled, never results.
try:
    llvm_binding.set_option("vmunet", "-force-vector-interleave=1")
except Exception as exc:  # already set by someone else, or an LLVM without the option
    logger.debug("could not set -force-vector-interleave=1: %s", exc)

#: Steps between saved states (forward) = steps recomputed at a time (backward).
CKPT = 64
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}


# float32 exp, emitted as LLVM IR so that every step is exactly as written. Each instruction
# carries the flag "contract" (may fuse a*b+c into an FMA); numba's fast-math pass only adds its
# flags to instructions that have none, so the callers' "reassoc" never reaches these, which would
# fold (t + M) - M to t and undo the two-part ln2 reduction.
_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_EXP_FLAGS = ("contract",)
_EXP_LO, _EXP_HI = -87.0, 88.0  # exp(-87) ~ 1.6e-38 (smallest normal 1.2e-38), exp(88) ~ 1.7e38
# round-to-nearest by adding 1.5 * 2^23 (+ 127, the exponent bias): for |k| < 2^22 the sum is an
# integer M + k, and its low mantissa bits shifted left by 23 are the bits of 2^k
_EXP_MAGIC = 12582912.0 + 127.0
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4  # ln2 = hi + lo; k * hi is exact for |k| < 2^15
# minimax polynomial for exp(r) on [-ln2/2, ln2/2] with exp(0) = 1 (relative error ~2e-9 before
# float32 rounding), coefficients of r^6 .. r^1, evaluated by Horner
_EXP_POLY = (1.3477163156494498e-3, 8.374865166842937e-3, 4.1675761342048645e-2,
             1.666644662618637e-1, 4.999995529651642e-1, 1.0)


def _const_f32(value: float) -> ir.Constant:
    return ir.Constant(_F32, float(np.float32(value)))


def _emit_exp_f32(builder: ir.IRBuilder, x: ir.Value, clamp_high: bool) -> ir.Value:
    """exp(x) for a float32 IR value: clamp to [-87, 88] (to [-87, inf) without ``clamp_high``),
    k = round(x / ln2) by the magic-number add, r = x - k ln2 in two parts, exp(r) by a degree-6
    polynomial, times 2^k made from the bits of the same sum. No libm call and no branch, so LLVM
    vectorises it. NaN stays NaN: the ordered compares let it through and NaN * 2^k is NaN."""
    flags = _EXP_FLAGS
    cmp_flags = ("nsz",)  # any flag: keeps fast-math's "nnan" off the compares
    lo = _const_f32(_EXP_LO)
    x = builder.select(builder.fcmp_ordered("<", x, lo, flags=cmp_flags), lo, x)
    if clamp_high:
        hi = _const_f32(_EXP_HI)
        x = builder.select(builder.fcmp_ordered(">", x, hi, flags=cmp_flags), hi, x)
    magic = _const_f32(_EXP_MAGIC)
    t = builder.fadd(builder.fmul(x, _const_f32(1.4426950408889634), flags=flags), magic, flags=flags)
    k = builder.fsub(t, magic, flags=flags)  # exact: both are integers in [2^23, 2^24)
    r = builder.fsub(x, builder.fmul(k, _const_f32(_LN2_HI), flags=flags), flags=flags)
    r = builder.fsub(r, builder.fmul(k, _const_f32(_LN2_LO), flags=flags), flags=flags)
    p = _const_f32(_EXP_POLY[0])
    for c in _EXP_POLY[1:] + (1.0,):
        p = builder.fadd(builder.fmul(p, r, flags=flags), _const_f32(c), flags=flags)
    two_k = builder.bitcast(builder.shl(builder.bitcast(t, _I32), ir.Constant(_I32, 23)), _F32)
    return builder.fmul(p, two_k, flags=flags)


@intrinsic
def _exp_f32(typingctx, x):
    """float32 exp for inputs of any sign (see _emit_exp_f32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return _emit_exp_f32(builder, args[0], clamp_high=True)

    return types.float32(types.float32), codegen


@intrinsic
def _exp_nonpos_f32(typingctx, x):
    """float32 exp for inputs known to be <= 0 (or NaN): one clamp less than _exp_f32. A positive
    input above ~88.7 would overflow the exponent field (garbage, not inf), so callers must know
    the sign."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return _emit_exp_f32(builder, args[0], clamp_high=False)

    return types.float32(types.float32), codegen


def _exp(x):  # pragma: no cover - replaced by the overload below inside compiled code
    return math.exp(x)


@overload(_exp)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


def _exp_nonpos(x):  # pragma: no cover - replaced by the overload below inside compiled code
    return math.exp(x)


@overload(_exp_nonpos)
def _exp_nonpos_overload(x):
    """exp(x) for x <= 0 or NaN (float32: _exp_nonpos_f32; other types: math.exp)."""
    if x == types.float32:
        return lambda x: _exp_nonpos_f32(x)
    return lambda x: math.exp(x)


def _softplus(x):  # pragma: no cover - replaced by the overload below inside compiled code
    return x if x > 20.0 else math.log1p(math.exp(x))


@overload(_softplus)  # torch's softplus: x above 20, log1p(exp(x)) below
def _softplus_overload(x):
    if x == types.float32:
        def softplus_f32(x):
            # max(x, 0) + log1p(exp(-|x|)), log1p(e) = 2 atanh(s) with s = e / (2 + e) <= 1/3:
            # the series to s^15 is exact to ~3e-9, and everything vectorises (no libm call)
            e = _exp_nonpos(-abs(x))
            return _softplus_tail(x, e)
        return softplus_f32
    return lambda x: x if x > 20.0 else math.log1p(math.exp(x))


@njit(inline="always")  # no fast-math, as _exp
def _softplus_tail(x, e):
    """float32 softplus(x) from e = exp(-|x|) (see _softplus)."""
    s = e / (np.float32(2.0) + e)
    s2 = s * s
    p = np.float32(1.0 / 15.0)
    p = p * s2 + np.float32(1.0 / 13.0)
    p = p * s2 + np.float32(1.0 / 11.0)
    p = p * s2 + np.float32(1.0 / 9.0)
    p = p * s2 + np.float32(1.0 / 7.0)
    p = p * s2 + np.float32(1.0 / 5.0)
    p = p * s2 + np.float32(1.0 / 3.0)
    p = p * s2 + np.float32(1.0)
    sp = max(x, np.float32(0.0)) + np.float32(2.0) * s * p
    return x if x > np.float32(20.0) else sp


def _softplus_and_grad(x):  # pragma: no cover - replaced by the overload below inside compiled code
    """(softplus(x), softplus'(x)) as torch computes them: x and 1 above 20, else
    log1p(exp(x)) and exp(x) / (exp(x) + 1)."""
    if x > 20.0:
        return x, 1.0
    z = math.exp(x)
    return math.log1p(z), z / (z + 1.0)


@overload(_softplus_and_grad, inline="always")
def _softplus_and_grad_overload(x):
    if x == types.float32:
        def softplus_and_grad_f32(x):
            # the derivative reuses softplus's e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e)
            # below (a separate exp(x) / (exp(x) + 1) pass cost 20% of the forward kernel)
            e = _exp_nonpos(-abs(x))
            r = np.float32(1.0) / (np.float32(1.0) + e)
            g = r if x >= np.float32(0.0) else e * r
            return _softplus_tail(x, e), (np.float32(1.0) if x > np.float32(20.0) else g)
        return softplus_and_grad_f32

    def softplus_and_grad(x):
        z = math.exp(min(x, 20.0))
        return (x if x > 20.0 else math.log1p(z)), (1.0 if x > 20.0 else z / (z + 1.0))
    return softplus_and_grad


@njit(inline="always")
def _decay_any(x):
    return _exp(x)


@njit(inline="always")
def _decay_nonpos(x):
    return _exp_nonpos(x)


@njit(inline="always")
def _decay_is_nonpos(a_row, dt_row, dt_nonneg):
    """Whether every decay exponent dt * A of a channel is <= 0 (or NaN): A's row <= 0 and
    dt >= 0 (always so after softplus, ``dt_nonneg``; else checked over the row)."""
    for n in range(a_row.shape[0]):
        if a_row[n] > 0:
            return False
    if not dt_nonneg:
        for t in range(dt_row.shape[0]):
            if dt_row[t] < 0:
                return False
    return True


@njit(inline="always")
def _forward_steps(decay, N, ck, every, h, dtl, urow, a_row, Bg, Cg, yrow, d_v, zero):
    """The recurrence of one channel over its L steps (see _forward_kernel). ``decay`` (_decay_any
    or _decay_nonpos) and ``N`` are compile-time choices of the caller: each call site is its own
    copy of the loop (with N = 16 written as a constant the lane loop is unrolled into two 8-wide
    vectors; the backward's recomputation does that).
    The state before steps 0, every, 2*every, ... goes to ``ck`` if it has rows (a counter, not
    a division per step)."""
    L = urow.shape[0]
    next_ck = 0 if ck.shape[0] > 0 else L
    for t in range(L):
        if t == next_ck:
            ck[t // every] = h
            next_ck += every
        dtv = dtl[t]
        uv = urow[t]
        xv = dtv * uv
        brow = Bg[t]
        crow = Cg[t]
        acc = zero
        for n in range(N):
            hn = decay(dtv * a_row[n]) * h[n] + xv * brow[n]
            h[n] = hn
            acc += hn * crow[n]
        yrow[t] = acc + d_v * uv


@njit(inline="always")
def _forward_steps2(decay, N, ck0, ck1, every, h0, h1, dt0, dt1, u0, u1, a0, a1, Bg, Cg, y0, y1,
                    dv0, dv1, zero):
    """_forward_steps for two channels of one group at once: the exp's constants (which LLVM
    re-broadcasts every step, 16 ymm registers being too few), the B and C rows and the loop
    control are shared by the two recurrences; each one's arithmetic is that of _forward_steps.
    Measured: forward -7% (N left run-time: with N = 16 as a constant or four channels it was
    -13% / -19%, but the kernels' first compilation took 28% / 47% longer)."""
    L = u0.shape[0]
    next_ck = 0 if ck0.shape[0] > 0 else L
    for t in range(L):
        if t == next_ck:
            ck0[t // every] = h0
            ck1[t // every] = h1
            next_ck += every
        dtv0 = dt0[t]
        dtv1 = dt1[t]
        uv0 = u0[t]
        uv1 = u1[t]
        xv0 = dtv0 * uv0
        xv1 = dtv1 * uv1
        brow = Bg[t]
        crow = Cg[t]
        acc0 = zero
        acc1 = zero
        for n in range(N):
            hn0 = decay(dtv0 * a0[n]) * h0[n] + xv0 * brow[n]
            hn1 = decay(dtv1 * a1[n]) * h1[n] + xv1 * brow[n]
            h0[n] = hn0
            h1[n] = hn1
            acc0 += hn0 * crow[n]
            acc1 += hn1 * crow[n]
        y0[t] = acc0 + dv0 * uv0
        y1[t] = acc1 + dv1 * uv1


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _forward_kernel(u, delta, bias, D, softplus, A, Bt, Ct, y, last, ckpt, every, dt_s, sg_s):
    """y = scan(u, dt) + D u with dt = softplus(delta + bias) (softplus optional).

    u, delta, y: (b, d, L); bias, D: (d,); A: (d, N); Bt, Ct: (b, G, L, N); last: (b, d, N);
    ckpt: (b, d, n_ckpt, N) receives the state before steps 0, every, 2*every, ... (n_ckpt may be 0).
    The delta transform runs first over the whole row (a separate loop, so it vectorises). When
    gradients are needed (n_ckpt > 0) dt and softplus'(delta + bias) are kept in dt_s, sg_s
    (b, d, L) for the backward, which then needs no transcendental function besides the decays.
    Channels whose decay exponents are all <= 0 (Mamba's: dt >= 0, A < 0) use the exp without
    the upper clamp. Where a group has an even number of channels they go in pairs, and pairs
    whose decays are all <= 0 (Mamba's) share one loop (_forward_steps2); other channels take
    the clamped exp, which gives the same values for exponents <= 0."""
    b, d, L = u.shape
    N = A.shape[1]
    dg = d // Bt.shape[1]
    save = ckpt.shape[2] > 0
    per = 2 if dg % 2 == 0 else 1
    for p in prange(b * d // per):
        bi = (p * per) // d
        di = (p * per) % d
        gi = di // dg
        zero = np.zeros(1, dtype=u.dtype)[0]
        Bg = Bt[bi, gi]
        Cg = Ct[bi, gi]
        dtbuf = np.empty((0 if save else per, L), dtype=u.dtype)
        both_nonpos = True
        for j in range(per):
            dtl = dt_s[bi, di + j] if save else dtbuf[j]
            bias_v = bias[di + j]
            drow = delta[bi, di + j]
            if softplus and save:
                sgl = sg_s[bi, di + j]
                for t in range(L):
                    dtl[t], sgl[t] = _softplus_and_grad(drow[t] + bias_v)
            elif softplus:
                for t in range(L):
                    dtl[t] = _softplus(drow[t] + bias_v)
            else:
                for t in range(L):
                    dtl[t] = drow[t] + bias_v
            both_nonpos = both_nonpos and _decay_is_nonpos(A[di + j], dtl, softplus)
        if per == 2 and both_nonpos:
            h0 = np.zeros(N, dtype=u.dtype)
            h1 = np.zeros(N, dtype=u.dtype)
            _forward_steps2(_decay_nonpos, N, ckpt[bi, di], ckpt[bi, di + 1], every, h0, h1,
                            dt_s[bi, di] if save else dtbuf[0], dt_s[bi, di + 1] if save else dtbuf[1],
                            u[bi, di], u[bi, di + 1], A[di], A[di + 1], Bg, Cg,
                            y[bi, di], y[bi, di + 1], D[di], D[di + 1], zero)
            last[bi, di] = h0
            last[bi, di + 1] = h1
            continue
        for j in range(per):
            dj = di + j
            dtl = dt_s[bi, dj] if save else dtbuf[j]
            h = np.zeros(N, dtype=u.dtype)
            a_row = A[dj]
            ck = ckpt[bi, dj]
            urow = u[bi, dj]
            yrow = y[bi, dj]
            d_v = D[dj]
            _forward_steps(_decay_any, N, ck, every, h, dtl, urow, a_row, Bg, Cg, yrow, d_v, zero)
            last[bi, dj] = h


class _NoAliasPipeline(CompilerBase):
    """numba's nopython pipeline with every pointer argument marked ``noalias``.

    numba cannot tell LLVM that two array arguments never overlap, so before each short inner loop
    over the N state lanes LLVM inserts run-time overlap checks between all rows it reads and
    writes (more instructions than the arithmetic, measured: the backward 1.6x slower). A function
    compiled with this pipeline promises that no array it writes overlaps any other array argument:
    its callers below pass only distinct allocations for the arrays it writes."""

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [DefaultPassBuilder.define_nopython_pipeline(self.state)]


@njit(inline="always")
def _recompute_chunk(decay, N, t0, t1, h, dt, u, a_row, Bt, hbuf, abuf):
    """States (hbuf) and decays (abuf) of steps t0 .. t1-1 from the state h before t0, which ends
    as the state after t1-1; ``decay`` and ``N`` as in _forward_steps."""
    for t in range(t0, t1):
        dtv = dt[t]
        xv = dtv * u[t]
        brow = Bt[t]
        k = t - t0
        for n in range(N):
            an = decay(dtv * a_row[n])
            hn = an * h[n] + xv * brow[n]
            h[n] = hn
            abuf[k, n] = an
            hbuf[k, n] = hn


@njit(cache=True, fastmath=_FASTMATH, pipeline_class=_NoAliasPipeline)
def _backward_channel(u, dt, sg, softplus, gy, a_row, d_v, Bt, Ct, carry, ckpt, every,
                      du, ddelta, darow, dB, dC, hbuf, abuf, nonpos):
    """The backward of one (batch, channel) recurrence; returns its (dbias, dD) contributions.

    u, dt, sg, gy, du, ddelta: (L,) rows; a_row, carry, darow: (N,); Bt, Ct, dB, dC: (L, N) of the
    channel's group; ckpt: (n_ckpt, N); hbuf: (every + 1, N), abuf: (every, N) scratch. Written
    (all must be separate allocations, see _NoAliasPipeline): carry, du, ddelta, darow, dB, dC,
    hbuf, abuf. ``nonpos``: all decay exponents are <= 0 (see _decay_is_nonpos). Time goes in
    chunks of ``every`` steps, last first: the chunk's states and decays are recomputed from the
    forward's checkpoint, then the adjoint recurrence runs backwards through the chunk
    (carry = a_{t+1} g_{t+1}, or the last-state gradient at t = L-1)."""
    L = u.shape[0]
    N = a_row.shape[0]
    n_ck = (L + every - 1) // every
    zero = np.zeros(1, dtype=u.dtype)[0]  # (u[0] * 0 would be float64: int 0 promotes)
    dbias_acc = zero
    dD_acc = zero
    h = hbuf[every]
    for c in range(n_ck - 1, -1, -1):
        t0 = c * every
        t1 = min(t0 + every, L)
        for n in range(N):
            h[n] = ckpt[c, n]
        # recompute this chunk's states and decays (as in _forward_kernel, N = 16 as a constant)
        if nonpos and N == 16:
            _recompute_chunk(_decay_nonpos, 16, t0, t1, h, dt, u, a_row, Bt, hbuf, abuf)
        elif nonpos:
            _recompute_chunk(_decay_nonpos, N, t0, t1, h, dt, u, a_row, Bt, hbuf, abuf)
        else:
            _recompute_chunk(_decay_any, N, t0, t1, h, dt, u, a_row, Bt, hbuf, abuf)
        for t in range(t1 - 1, t0 - 1, -1):
            dtv = dt[t]
            uv = u[t]
            xv = dtv * uv
            gyv = gy[t]
            brow = Bt[t]
            crow = Ct[t]
            dbrow = dB[t]
            dcrow = dC[t]
            k = t - t0
            ddtu = zero
            ddt_v = zero
            for n in range(N):
                gn = crow[n] * gyv + carry[n]
                hn = hbuf[k, n]
                dcrow[n] += gyv * hn
                dbrow[n] += gn * xv
                ddtu += gn * brow[n]
                wn = gn * (hn - xv * brow[n])  # g_t * a_t * h_{t-1}
                ddt_v += wn * a_row[n]
                darow[n] += wn * dtv
                carry[n] = abuf[k, n] * gn
            du[t] = ddtu * dtv + d_v * gyv
            ddt_t = ddt_v + ddtu * uv
            if softplus:
                ddt_t *= sg[t]
            ddelta[t] = ddt_t
            dbias_acc += ddt_t
            dD_acc += gyv * uv
    return dbias_acc, dD_acc


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _backward_kernel(u, dt, sg, D, softplus, A, Bt, Ct, gy, glast, ckpt, every,
                     du, ddelta, dA_p, dB_p, dC_p, dbias_p, dD_p):
    """Gradients of the forward kernel's y and last state, from its saved dt and sg = softplus'
    (b, d, L). du, ddelta: (b, d, L) outputs; dA_p: (P, d, N), dB_p, dC_p: (P, b, G, L, N),
    dbias_p, dD_p: (P, d) per-worker accumulators (zeroed by the caller), summed over P afterwards.
    Each worker takes a contiguous run of the (batch, channel) recurrences (_backward_channel)."""
    b, d, L = u.shape
    N = A.shape[1]
    dg = d // Bt.shape[1]
    P = dA_p.shape[0]
    total = b * d
    for w in prange(P):
        hbuf = np.empty((every + 1, N), dtype=u.dtype)
        abuf = np.empty((every, N), dtype=u.dtype)
        for p in range(w * total // P, (w + 1) * total // P):
            bi = p // d
            di = p % d
            gi = di // dg
            carry = glast[bi, di].copy()
            sg_row = sg[bi, di] if softplus else sg[0, 0]  # (0,) when softplus is off
            dbias, dD = _backward_channel(
                u[bi, di], dt[bi, di], sg_row, softplus, gy[bi, di], A[di], D[di], Bt[bi, gi],
                Ct[bi, gi], carry, ckpt[bi, di], every, du[bi, di], ddelta[bi, di], dA_p[w, di],
                dB_p[w, bi, gi], dC_p[w, bi, gi], hbuf, abuf,
                _decay_is_nonpos(A[di], dt[bi, di], softplus))
            dbias_p[w, di] += dbias
            dD_p[w, di] += dD


def match_torch_threads() -> None:
    """Use as many numba threads as torch does, so ``torch.set_num_threads`` governs both."""
    n = torch.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    # Starting numba's threading layer (OpenMP) can reset torch's intra-op pool to all cores;
    # put back what the user chose.
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _NumbaScan(torch.autograd.Function):
    """y, last_state = scan(u, softplus(delta + bias), A, B, C) + D u for u, delta: (b, d, L),
    A: (d, N), B, C: (b, G, N, L), D, bias: (d,) (zeros when absent); softplus optional."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, bias, softplus, need_grad):
        batch, dim, L = u.shape
        N = A.shape[1]
        Bt = B.transpose(-1, -2).contiguous()  # (b, G, L, N): the N lanes of a step contiguous
        Ct = C.transpose(-1, -2).contiguous()
        y = u.new_empty(batch, dim, L)
        last = u.new_empty(batch, dim, N)
        n_ck = (L + CKPT - 1) // CKPT if need_grad else 0
        ckpt = u.new_empty(batch, dim, n_ck, N)
        dt_s = u.new_empty(batch, dim, L if need_grad else 0)
        sg_s = u.new_empty(batch, dim, L if need_grad and softplus else 0)
        match_torch_threads()
        _forward_kernel(_np(u), _np(delta), _np(bias), _np(D), softplus, _np(A), Bt.numpy(),
                        Ct.numpy(), y.numpy(), last.numpy(), ckpt.numpy(), CKPT, dt_s.numpy(),
                        sg_s.numpy())
        if need_grad:
            ctx.save_for_backward(u, dt_s, sg_s, A, Bt, Ct, D, ckpt)
        ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    def backward(ctx, gy, glast):
        u, dt_s, sg_s, A, Bt, Ct, D, ckpt = ctx.saved_tensors
        batch, dim, L = u.shape
        G, N = Bt.shape[1], A.shape[1]
        match_torch_threads()
        P = max(1, min(numba.get_num_threads(), batch * dim))
        gy = torch.zeros_like(u) if gy is None else gy.to(u.dtype)
        glast = u.new_zeros(batch, dim, N) if glast is None else glast.to(u.dtype)
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        dA_p = u.new_zeros(P, dim, N)
        dB_p = u.new_zeros(P, batch, G, L, N)
        dC_p = u.new_zeros(P, batch, G, L, N)
        dbias_p = u.new_zeros(P, dim)
        dD_p = u.new_zeros(P, dim)
        _backward_kernel(_np(u), _np(dt_s), _np(sg_s), _np(D), ctx.softplus, _np(A), Bt.numpy(),
                         Ct.numpy(), _np(gy), _np(glast), ckpt.numpy(), CKPT, du.numpy(),
                         ddelta.numpy(), dA_p.numpy(), dB_p.numpy(), dC_p.numpy(),
                         dbias_p.numpy(), dD_p.numpy())
        dB = dB_p.sum(0).transpose(-1, -2)
        dC = dC_p.sum(0).transpose(-1, -2)
        return du, ddelta, dA_p.sum(0), dB, dC, dD_p.sum(0), dbias_p.sum(0), None, None


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    """The "numba" backend; see :func:`vmunet.ops.selective_scan`. The delta transform and the D
    skip term run inside the kernels; the z gate (unused by SS2D) stays in :func:`finish`."""
    if u.device.type != "cpu":
        raise RuntimeError(f"selective_scan: backend='numba' runs on CPU tensors, got u on {u.device}")
    s = prepare_inputs(u, delta, A, B, C, None, False)  # dtype and B/C grouping only
    dtype = s.u.dtype
    dim = u.shape[1]
    D_c = s.u.new_zeros(dim) if D is None else D.to(dtype)
    bias_c = s.u.new_zeros(dim) if delta_bias is None else delta_bias.to(dtype)
    inputs = (s.u.contiguous(), s.dt.contiguous(), s.A.contiguous(), s.B, s.C, D_c.contiguous(),
              bias_c.contiguous())
    # decided here, not from ctx.needs_input_grad: under inference_mode a float32 parameter passed
    # as D or delta_bias still says requires_grad, and the forward would save dt and softplus'
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    y, h = _NumbaScan.apply(*inputs, bool(delta_softplus), need_grad)
    out = finish(y, s.u, None, z, u.dtype)
    return (out, h) if return_last_state else out

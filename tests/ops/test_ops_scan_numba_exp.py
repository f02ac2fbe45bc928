"""The numba kernel's float32 exp against float64 exp, and its two decay paths against "ref".

The scan's cost is mostly the decay exp(dt * A); the kernel computes it with its own vectorisable
float32 exp (vmunet.ops.scan_numba). Checked here: its error over a dense float32 grid of the
whole clamped range, its special values, that the callers' fast-math flags do not change it, and
that channels taking the exp without the upper clamp (all dt * A <= 0) and channels of any sign
both match the step-by-step reference, N = 16 (the unrolled lane loop) and N = 5, forward and
backward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

numba = pytest.importorskip("numba")

from vmunet.ops.scan_numba import _exp, _exp_nonpos, selective_scan_numba  # noqa: E402
from vmunet.ops.scan_ref import selective_scan_ref  # noqa: E402

FASTMATH = {"reassoc", "contract", "arcp", "nsz"}  # the scan kernels' flags


@numba.njit(fastmath=FASTMATH)
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = _exp(x[i])


@numba.njit(fastmath=FASTMATH)
def _exp_nonpos_all(x, out):
    for i in range(x.shape[0]):
        out[i] = _exp_nonpos(x[i])


def _float32_grid(lo: float, hi: float, stride: int) -> np.ndarray:
    """Every ``stride``-th float32 of [lo, hi] by bit pattern (so every binade is visited), plus
    the ends."""
    def bits(v):
        return int(np.array([v], np.float32).view(np.int32)[0])
    parts = []
    if lo < 0:  # negative floats: bit patterns from -0.0 up to lo, as unsigned
        neg = np.arange(0x80000000, (bits(lo) & 0xFFFFFFFF) + 1, stride, dtype=np.uint32)
        parts.append(neg.view(np.float32))
    if hi > 0:
        parts.append(np.arange(0, bits(hi) + 1, stride, dtype=np.int32).view(np.float32))
    parts.append(np.array([lo, hi], np.float32))
    return np.concatenate(parts)


def _errors(got: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """(max relative error, max error in float32 ulps of the exact value) against float64 exp."""
    ref = np.exp(x.astype(np.float64))
    err = np.abs(got.astype(np.float64) - ref)
    ulp = np.ldexp(1.0, np.frexp(ref)[1] - 24)  # spacing of float32 at ref
    return float((err / ref).max()), float((err / ulp).max())


@pytest.mark.parametrize("fn, lo, hi", [(_exp_all, -87.0, 88.0), (_exp_nonpos_all, -87.0, 0.0)],
                         ids=["exp", "exp_nonpos"])
def test_float32_exp_within_one_ulp_on_dense_grid(fn, lo, hi):
    # ~4.3 M floats (every 521st bit pattern) + 2^19 evenly spaced; the bound, 1 ulp and a relative
    # error of 1e-7, is that of a faithfully rounded exp (float32's own rounding is up to 6e-8)
    x = np.concatenate([_float32_grid(lo, hi, 521), np.linspace(lo, hi, 1 << 19, dtype=np.float32)])
    out = np.empty_like(x)
    fn(x, out)
    rel, ulps = _errors(out, x)
    assert rel < 1e-7 and ulps < 1.0, (rel, ulps)


def test_float32_exp_special_values():
    x = np.array([0.0, -0.0, 1.0, -1.0, 88.0, -87.0, 100.0, np.inf, -100.0, -np.inf, np.nan,
                  -np.nan, float(np.float32(1e-30)), -1e-30], np.float32)
    out = np.empty_like(x)
    _exp_all(x, out)
    assert out[0] == 1.0 and out[1] == 1.0  # exp(+-0) exactly 1
    assert out[2] == np.float32(math.e) and out[3] == np.float32(1 / math.e)  # correctly rounded
    # clamped to [-87, 88]: above 88 it is exp(88) (finite), below -87 it is exp(-87) ~ 1.6e-38
    e88, em87 = np.float32(math.exp(88.0)), np.float32(math.exp(-87.0))
    assert out[4] == e88 and out[6] == e88 and out[7] == e88, out[[4, 6, 7]]
    assert out[5] == em87 and out[8] == em87 and out[9] == em87, out[[5, 8, 9]]
    assert np.isnan(out[10]) and np.isnan(out[11])  # NaN stays NaN
    assert out[12] == 1.0 and out[13] == 1.0
    nonpos = x[[0, 1, 3, 5, 8, 9, 10, 11, 13]]
    out_np = np.empty_like(nonpos)
    _exp_nonpos_all(nonpos, out_np)
    _exp_all(nonpos, out[: len(nonpos)])
    np.testing.assert_array_equal(out_np, out[: len(nonpos)])  # same values where both apply


def _inputs(N: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """Channel 0 has A > 0 in some lanes, channel 1 dt of both signs without softplus (both: the
    exp of any sign); channels 2-3 have A < 0 and dt > 0 even without softplus (the exp without
    the upper clamp). Magnitudes keep the float32 states far from overflow over L = 150 steps."""
    g = torch.Generator().manual_seed(seed)
    batch, dim, L, G = 2, 4, 150, 2  # L > 64: several checkpoints in the backward
    A = -(torch.rand(dim, N, generator=g, dtype=torch.float64) * 2 + 0.1)
    A[0, ::2] = torch.rand((N + 1) // 2, generator=g, dtype=torch.float64) * 0.05
    ins = dict(u=torch.randn(batch, dim, L, generator=g, dtype=torch.float64),
               delta=torch.randn(batch, dim, L, generator=g, dtype=torch.float64) * 0.1,
               A=A, B=torch.randn(batch, G, N, L, generator=g, dtype=torch.float64),
               C=torch.randn(batch, G, N, L, generator=g, dtype=torch.float64),
               D=torch.randn(dim, generator=g, dtype=torch.float64),
               delta_bias=torch.tensor([0.3, -0.02, 0.6, 0.8], dtype=torch.float64))
    return {k: v.to(dtype) for k, v in ins.items()}


@pytest.mark.parametrize("N", [16, 5])
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw_dt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_decay_paths_match_ref(N, softplus, dtype):
    # raw_dt: dt = delta + bias, no softplus (channel 1 has dt < 0, a growing decay)
    ins = _inputs(N, dtype, seed=N)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    gtol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-8)
    results = []
    for fn in (selective_scan_ref, selective_scan_numba):
        leaves = {k: v.clone().requires_grad_() for k, v in ins.items()}
        out, last = fn(**leaves, delta_softplus=softplus, return_last_state=True)
        g = torch.Generator().manual_seed(1)
        g_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
        grads = torch.autograd.grad((out * g_out).sum() + last.square().sum(), list(leaves.values()))
        results.append((out.detach(), last.detach(), grads))
    (out_r, last_r, grads_r), (out, last, grads) = results
    torch.testing.assert_close(out, out_r, **tol)
    torch.testing.assert_close(last, last_r, **tol)
    for name, gr, gr_r in zip(ins, grads, grads_r, strict=True):
        torch.testing.assert_close(gr, gr_r, **gtol, msg=f"grad of {name}")

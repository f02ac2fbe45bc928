"""Selective scan against answers worked out by hand (L = 2, N = 1 and N = 2), for EVERY backend, "ref" too.

The other scan tests compare backends with "ref", which shares the delta set-up and finishing
helpers (scan_common) with them; a bug there (the D term's sign, softplus before the bias) would
pass them. These expected values come from the recurrence written out on paper:

    delta = softplus(delta_raw + bias)         (each step optional)
    h_1 = delta_1 B_1 u_1                      (h_0 = 0)
    h_2 = exp(delta_2 A) h_1 + delta_2 B_2 u_2
    y_t = C_t h_t + D u_t,   out_t = y_t silu(z_t)

With A = -ln 2, exp(delta A) = 2**-delta. Base case: u = (1, 2), delta = (1, 2), B = (1, 3),
C = (2, 1): h_1 = 1, y_1 = 2; h_2 = 1/4 + 2*3*2 = 12.25, y_2 = 12.25.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from vmunet.ops import BACKENDS, cuda_available, scan_cuda, selective_scan

LN2 = math.log(2.0)


def inv_softplus(v: float) -> float:
    """The x with softplus(x) = log(1 + e^x) = v."""
    return math.log(math.expm1(v))


def silu(v: float) -> float:
    return v / (1.0 + math.exp(-v))


def case(u, delta, A, B, C, **extra):
    """Lists -> the argument dict; u/delta (dim, L) or (L,), B/C (L,) shared or (G, L) grouped."""
    t = torch.tensor

    def bld(x):  # (dim, L) -> (1, dim, L)
        x = t(x, dtype=torch.float64)
        return (x if x.dim() == 2 else x[None])[None]

    def bc(x):  # (L,) -> (1, N=1, L); (G, L) -> (1, G, N=1, L)
        x = t(x, dtype=torch.float64)
        return x[None, None] if x.dim() == 1 else x[None, :, None]

    args = dict(u=bld(u), delta=bld(delta), A=t(A, dtype=torch.float64).reshape(-1, 1), B=bc(B), C=bc(C))
    for k, v in extra.items():
        if k in ("D", "delta_bias"):
            args[k] = t(v, dtype=torch.float64).reshape(-1)
        elif k == "z":
            args[k] = bld(v)
        else:
            args[k] = v
    return args


BASE = dict(u=[1.0, 2.0], delta=[1.0, 2.0], A=[-LN2], B=[1.0, 3.0], C=[2.0, 1.0])
ZS = [1.0, -0.5]

KNOWN = {
    # name: (arguments, expected out (dim, L), expected last state (dim,))
    "plain": (case(**BASE), [[2.0, 12.25]], [12.25]),
    # + D u_t: (2 + 0.5*1, 12.25 + 0.5*2)
    "D": (case(**BASE, D=[0.5]), [[2.5, 13.25]], [12.25]),
    # delta = delta_raw + bias = (1, 2)
    "delta_bias": (case(**{**BASE, "delta": [0.25, 1.25]}, delta_bias=[0.75]), [[2.0, 12.25]], [12.25]),
    # delta = softplus(delta_raw) = (1, 2)
    "softplus": (case(**{**BASE, "delta": [inv_softplus(1.0), inv_softplus(2.0)]}, delta_softplus=True),
                 [[2.0, 12.25]], [12.25]),
    # bias first, then softplus: softplus(delta_raw + 0.5) = (1, 2); the other order gives
    # softplus(delta_raw) + 0.5 = (1.21, 2.08), a different answer
    "bias_then_softplus": (case(**{**BASE, "delta": [inv_softplus(1.0) - 0.5, inv_softplus(2.0) - 0.5]},
                                delta_bias=[0.5], delta_softplus=True), [[2.0, 12.25]], [12.25]),
    # out = y * silu(z), z = (1, -0.5)
    "z": (case(**BASE, z=ZS), [[2.0 * silu(1.0), 12.25 * silu(-0.5)]], [12.25]),
    # everything at once: (y + D u) silu(z)
    "all": (case(**{**BASE, "delta": [inv_softplus(1.0) - 0.5, inv_softplus(2.0) - 0.5]},
                 delta_bias=[0.5], delta_softplus=True, D=[0.5], z=ZS),
            [[2.5 * silu(1.0), 13.25 * silu(-0.5)]], [12.25]),
    # one A per channel: channel 1 decays by 4**-2 = 1/16: h_2 = 1/16 + 12 = 12.0625
    "A_per_channel": (case(u=[[1.0, 2.0]] * 2, delta=[[1.0, 2.0]] * 2, A=[-LN2, -2 * LN2],
                           B=[1.0, 3.0], C=[2.0, 1.0]),
                      [[2.0, 12.25], [2.0, 12.0625]], [12.25, 12.0625]),
    # 4 channels, G = 2 groups: channels 0, 1 read group 0 (B = (1, 3), C = (2, 1));
    # channels 2, 3 read group 1 (B = (2, 0), C = (1, 4)): h_1 = 2, y_1 = 2; h_2 = 2/4, y_2 = 2
    "grouped_BC": (case(u=[[1.0, 2.0]] * 4, delta=[[1.0, 2.0]] * 4, A=[-LN2] * 4,
                        B=[[1.0, 3.0], [2.0, 0.0]], C=[[2.0, 1.0], [1.0, 4.0]]),
                   [[2.0, 12.25], [2.0, 12.25], [2.0, 2.0], [2.0, 2.0]], [12.25, 12.25, 0.5, 0.5]),
}

# d(out_1 + out_2)/d(input) for the "D" case, by hand (A = -ln 2, decay of step 2 = 1/4):
#   du_1 = D + C_1 d_1 B_1 + C_2 (1/4) d_1 B_1 = 0.5 + 2 + 0.25;  du_2 = D + C_2 d_2 B_2 = 0.5 + 6
#   dd_1 = C_1 B_1 u_1 + C_2 (1/4) B_1 u_1 = 2.25;  dd_2 = C_2 (A (1/4) h_1 + B_2 u_2) = 6 - ln2/4
#   dA = C_2 d_2 (1/4) h_1 = 0.5;  dB = (C_1 d_1 u_1 + C_2 (1/4) d_1 u_1, C_2 d_2 u_2) = (2.25, 4)
#   dC = (h_1, h_2) = (1, 12.25);  dD = u_1 + u_2 = 3
KNOWN_GRADS_D = dict(u=[[2.75, 6.5]], delta=[[2.25, 6 - LN2 / 4]], A=[[0.5]], B=[[2.25, 4.0]],
                     C=[[1.0, 12.25]], D=[3.0])


def backend_device(backend: str) -> str | None:
    """Where the backend runs in this session, or None when it cannot run here."""
    if backend in ("ref", "torch"):
        return "cpu"
    if backend == "numba":
        # numba installed (found without importing our kernel) -> a broken kernel module fails, not skips
        return "cpu" if importlib.util.find_spec("numba") else None
    if backend == "cuda":
        return "cuda" if cuda_available() else None
    # GPU backends added later (e.g. triton) run on CUDA tensors
    return "cuda" if torch.cuda.is_available() else None


def dtypes_for(backend: str) -> list[torch.dtype]:
    # mamba-ssm's kernel has no float64; everything else is checked in float64 too
    return [torch.float32] if backend == "cuda" else [torch.float64, torch.float32]


PARAMS = [pytest.param(b, dt, id=f"{b}-{str(dt).removeprefix('torch.')}")
          for b in BACKENDS for dt in dtypes_for(b)]


def _run_or_skip(backend):
    device = backend_device(backend)
    if device is None:
        why = "no GPU / not installed"
        if backend == "cuda" and torch.cuda.is_available():
            # on a GPU a skip here means the kernel did not load: say why (the device check's log)
            why = f"selective_scan_cuda does not load: {scan_cuda.load_error() or 'not found'}"
        pytest.skip(f"backend {backend!r} cannot run in this session ({why})")
    return device


def _to(args, device, dtype):
    return {k: v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-6, atol=2e-6)


def test_cpu_backends_are_never_skipped():
    """The skips below are for GPU-only backends: ref/torch (and numba when installed) must run."""
    assert backend_device("ref") == backend_device("torch") == "cpu"
    assert {"ref", "torch", "numba", "cuda"} <= set(BACKENDS)


@pytest.mark.parametrize("name", sorted(KNOWN))
@pytest.mark.parametrize("backend,dtype", PARAMS)
def test_known_answer(backend, dtype, name):
    device = _run_or_skip(backend)
    args, expected, last_expected = KNOWN[name]
    out, last = selective_scan(**_to(args, device, dtype), return_last_state=True, backend=backend)
    exp = torch.tensor(expected, dtype=torch.float64)[None]
    torch.testing.assert_close(out.cpu().double(), exp, **_tol(dtype))
    torch.testing.assert_close(last.cpu().double(), torch.tensor(last_expected, dtype=torch.float64)[None, :, None],
                               **_tol(dtype))


@pytest.mark.parametrize("backend,dtype", PARAMS)
def test_known_gradients(backend, dtype):
    device = _run_or_skip(backend)
    args, _, _ = KNOWN["D"]
    leaves = {k: v.detach().to(device=device, dtype=dtype).clone().requires_grad_()
              for k, v in args.items() if isinstance(v, torch.Tensor)}
    selective_scan(**leaves, backend=backend).sum().backward()
    for name, expected in KNOWN_GRADS_D.items():
        exp = torch.tensor(expected, dtype=torch.float64)
        got = leaves[name].grad.cpu().double().reshape(exp.shape)
        torch.testing.assert_close(got, exp, **_tol(dtype), msg=f"d(sum out)/d{name}")


# N = 2 states per channel, each decaying at its own rate, read out by C as a SUM over the states
# (a mean, or reading one state, gives another answer; the N = 1 cases above cannot tell):
#   state 0: A = -ln 2, B = (1, 3):  h_1 = 1, h_2 = 2**-2 * 1 + 2*3*2 = 12.25
#   state 1: A = -2 ln 2, B = (1, 1): h_1 = 1, h_2 = 4**-2 * 1 + 2*1*2 = 4.0625
#   C_1 = (2, 1): y_1 = 2*1 + 1*1 = 3;  C_2 = (1, 2): y_2 = 12.25 + 2*4.0625 = 20.375
TWO_STATES = dict(
    u=[[[1.0, 2.0]]], delta=[[[1.0, 2.0]]], A=[[-LN2, -2 * LN2]],
    B=[[[1.0, 3.0], [1.0, 1.0]]], C=[[[2.0, 1.0], [1.0, 2.0]]],  # (batch, N, L)
)


@pytest.mark.parametrize("backend,dtype", PARAMS)
def test_known_answer_two_states_sum_over_n(backend, dtype):
    device = _run_or_skip(backend)
    args = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in TWO_STATES.items()}
    out, last = selective_scan(**args, return_last_state=True, backend=backend)
    torch.testing.assert_close(out.cpu().double(), torch.tensor([[[3.0, 20.375]]], dtype=torch.float64),
                               **_tol(dtype))
    torch.testing.assert_close(last.cpu().double(), torch.tensor([[[12.25, 4.0625]]], dtype=torch.float64),
                               **_tol(dtype))

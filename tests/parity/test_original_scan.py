"""``vmunet.ops.selective_scan`` against mamba-ssm's ``selective_scan_ref`` executed from its
source (mamba-ssm 2.3.2.post1, ``third_party/mamba-ssm``): docs/ops.md claims the same signature and
semantics as mamba-ssm's ``selective_scan_fn``, whose kernel mamba-ssm tests against that function.

Frozen: ``selective_scan_ref(**_tiny_inputs(), delta_softplus=True, return_last_state=True)`` of
mamba-ssm 2.3.2.post1 (torch 2.13 CPU, float32).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from original_code import mamba_selective_scan_ref

from vmunet.ops import selective_scan

BACKENDS = ["ref", "torch"] + (["numba"] if importlib.util.find_spec("numba") else [])

FROZEN_OUT = [[[0.0, -0.05597163364291191, 0.13206398487091064],
               [0.17838916182518005, -0.1958194226026535, -0.757678210735321],
               [0.20271438360214233, -0.10520041733980179, -0.36412671208381653],
               [0.07317879796028137, 0.026763496920466423, -0.0056284349411726]]]
FROZEN_LAST_STATE = [[[0.946729838848114, -0.7181203365325928], [-0.6335465312004089, 0.5634484887123108],
                      [0.21846334636211395, -0.06186853349208832], [0.028258830308914185, -0.15100036561489105]]]


def _inputs(batch=1, dim=4, L=3, N=2, groups=2, scale=1.0):
    """Scan inputs from closed formulas; ``groups=0``: 3-D B/C (batch, N, L)."""
    def f(shape, a):
        n = torch.Size(shape).numel()
        return (torch.sin(torch.arange(n, dtype=torch.float64) * a) * scale).reshape(shape).float()

    bc = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    return dict(u=f((batch, dim, L), 0.9), delta=f((batch, dim, L), 1.3) * 0.5, A=-torch.exp(f((dim, N), 0.7)),
                B=f(bc, 1.1), C=f(bc, 0.5), D=f((dim,), 2.1), z=f((batch, dim, L), 0.3),
                delta_bias=f((dim,), 0.4) * 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_equals_frozen_mamba_selective_scan_ref(backend):
    out, last = selective_scan(**_inputs(), delta_softplus=True, return_last_state=True, backend=backend)
    torch.testing.assert_close(out, torch.tensor(FROZEN_OUT), rtol=0, atol=1e-5)
    torch.testing.assert_close(last, torch.tensor(FROZEN_LAST_STATE), rtol=0, atol=1e-5)


@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("options", [dict(delta_softplus=True), dict(D=None, z=None, delta_bias=None)])
def test_scan_and_gradients_equal_mamba_selective_scan_ref(groups, options):
    mamba_ref = mamba_selective_scan_ref()  # skips without third_party/mamba-ssm
    frozen_out, frozen_last = mamba_ref(**_inputs(), delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(frozen_out, torch.tensor(FROZEN_OUT), rtol=0, atol=1e-7)
    torch.testing.assert_close(frozen_last, torch.tensor(FROZEN_LAST_STATE), rtol=0, atol=1e-7)

    base = _inputs(batch=2, dim=6, L=37, N=4, groups=groups, scale=0.8)
    kwargs = {k: v for k, v in options.items() if k == "delta_softplus"}
    tensors = {k: (None if k in options else v) for k, v in base.items()}
    grads_ref = None
    # ref and torch (its own backward); the numba backend equals them (tests/ops) and compiles slowly
    for fn in [mamba_ref] + [lambda b=b, **kw: selective_scan(**kw, backend=b) for b in ("ref", "torch")]:
        leaves = {k: None if v is None else v.clone().requires_grad_(True) for k, v in tensors.items()}
        out, last = fn(**leaves, **kwargs, return_last_state=True)
        weight = torch.cos(torch.arange(out.numel(), dtype=torch.float32)).reshape(out.shape)
        (out * weight).sum().backward()
        grads = {k: v.grad for k, v in leaves.items() if v is not None}
        if grads_ref is None:
            out_ref, last_ref, grads_ref = out.detach(), last.detach(), grads
            continue
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(last, last_ref, rtol=1e-5, atol=1e-5)
        for k, g in grads.items():
            torch.testing.assert_close(g, grads_ref[k], rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"grad of {k}: {m}")

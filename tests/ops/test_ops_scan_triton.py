"""The "triton" selective-scan backend against the step-by-step "ref" loop, run through Triton's
interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 when there is no GPU).

Shapes are tiny because the interpreter executes every kernel op with numpy, program by program.
Chunk lengths (``block_l``) are set small so that short sequences still cross chunk boundaries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

from test_ops_selective_scan import make_inputs, run_with_grads  # noqa: E402
from triton.runtime.interpreter import ScanOps  # noqa: E402

from vmunet.ops import cuda_available, resolve_backend, selective_scan  # noqa: E402
from vmunet.ops.scan_ref import selective_scan_ref  # noqa: E402
from vmunet.ops.scan_triton import (  # noqa: E402
    fast_interpreter_scan,
    interpreted,
    selective_scan_triton,
)

ON_CPU = not torch.cuda.is_available()
DEVICE = "cpu" if ON_CPU else "cuda"
if ON_CPU and not interpreted():
    pytest.fail("vmunet.ops.scan_triton was imported before TRITON_INTERPRET=1 was set "
                "(tests/conftest.py sets it)", pytrace=False)
TRITON_GENERIC_SCAN = ScanOps.generic_scan  # Triton's own, before any patch


@pytest.fixture(autouse=True)
def _fast_interpreter_scan():
    # the sliced copy of the interpreter's scan (same arithmetic) keeps these tests short
    with fast_interpreter_scan():
        yield


def _on_device(ins):
    return {k: (None if v is None else v.to(DEVICE)) for k, v in ins.items()}


def _triton(block_l):
    def fn(**kw):
        return selective_scan_triton(**kw, block_l=block_l)
    return fn


def _assert_close_to_ref(ins, softplus, block_l, tol, grad_tol):
    """Output, last state and every input gradient of the triton backend vs the ref loop (float64)."""
    ins = _on_device(ins)
    ins64 = {k: (None if v is None else v.double()) for k, v in ins.items()}
    out_r, last_r, grads_r = run_with_grads(selective_scan_ref, ins64, softplus)
    out, last, grads = run_with_grads(_triton(block_l), ins, softplus)
    dtype = ins["u"].dtype
    assert out.dtype == dtype and out.shape == out_r.shape
    assert last.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(out.double(), out_r, **tol)
    torch.testing.assert_close(last.double(), last_r, **tol)
    assert grads.keys() == grads_r.keys()
    for name in grads:
        assert grads[name].dtype == ins[name].dtype and grads[name].shape == ins[name].shape
        torch.testing.assert_close(grads[name].double(), grads_r[name], **grad_tol, msg=f"grad of {name}")


F64 = dict(rtol=1e-10, atol=1e-10)
CASES = {
    # name: (make_inputs kwargs, delta_softplus, block_l)
    "all_options_G2_N4_L37_chunk8": (dict(batch=2, dim=8, L=37, N=4, groups=2), True, 8),
    "plain_3d_N1_L13_chunk4": (dict(batch=1, dim=3, L=13, N=1, groups=0, with_D=False, with_z=False,
                                    with_bias=False), False, 4),
    "D_only_G4_N16_L20_chunk8": (dict(batch=1, dim=4, L=20, N=16, groups=4, with_z=False,
                                      with_bias=False), False, 8),
    "z_softplus_G1_N3_L17_chunk16": (dict(batch=2, dim=2, L=17, N=3, groups=1, with_D=False,
                                          with_bias=False), True, 16),
    "bias_no_softplus_G2_N5_L_equals_chunk": (dict(batch=1, dim=6, L=16, N=5, groups=2, with_D=False,
                                                   with_z=False), False, 16),
    "L1": (dict(batch=2, dim=4, L=1, N=2, groups=2), True, 4),
    "G3_two_channels_per_program": (dict(batch=1, dim=6, L=9, N=2, groups=3), True, 4),
    "large_delta_tiny_decays": (dict(batch=1, dim=4, L=40, N=4, groups=2, delta_scale=8.0), True, 16),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_triton_matches_ref_float64(case):
    kwargs, softplus, block_l = CASES[case]
    _assert_close_to_ref(make_inputs(dtype=torch.float64, **kwargs), softplus, block_l, F64, F64)


@pytest.mark.parametrize("block_d_max", [1, 8])
def test_channel_block_widths(block_d_max, monkeypatch):
    """Programs of 1 and of 8 channels (the default is 2) give the same answers."""
    from vmunet.ops import scan_triton

    monkeypatch.setattr(scan_triton, "BLOCK_D_MAX", block_d_max)
    assert scan_triton._block_d(8, 1) == block_d_max
    ins = make_inputs(batch=1, dim=8, L=10, N=2, groups=1, dtype=torch.float64)
    _assert_close_to_ref(ins, True, 8, F64, F64)


def test_triton_matches_ref_float32_default_chunks():
    """float32 inputs (state in float32) against the float64 reference; L = 70 spans two of the
    default 64-step chunks; through the dispatcher."""
    ins = make_inputs(batch=1, dim=4, L=70, N=16, groups=2, dtype=torch.float32)

    def fn(**kw):
        return selective_scan(**kw, backend="triton")

    ins = _on_device(ins)
    ins64 = {k: (None if v is None else v.double()) for k, v in ins.items()}
    out_r, last_r, grads_r = run_with_grads(selective_scan_ref, ins64, True)
    out, last, grads = run_with_grads(fn, ins, True)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    torch.testing.assert_close(out.double(), out_r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last.double(), last_r, rtol=1e-4, atol=1e-4)
    for name in grads:
        torch.testing.assert_close(grads[name].double(), grads_r[name], rtol=1e-3, atol=1e-3,
                                   msg=f"grad of {name}")


def test_different_groupings_of_B_and_C():
    """B with 2 groups and C shared by all channels (3-D): both expanded per channel inside."""
    ins = make_inputs(batch=1, dim=4, L=11, N=3, groups=2, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    ins["C"] = torch.randn(1, 3, 11, generator=g, dtype=torch.float64)
    _assert_close_to_ref(ins, True, 4, F64, F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_precision_computes_in_float32(dtype):
    """Half inputs are read as is and computed in float32: the forward equals the float32 run on
    the same (exactly upcast) values, rounded once at the end; gradients come back in the input
    dtype and are close to the float32 run's. (Triton's interpreter truncates float32 -> bfloat16
    instead of rounding to nearest as the GPU does: up to 1 bf16 ulp there.)"""
    ins = _on_device(make_inputs(batch=1, dim=4, L=21, N=4, groups=2, dtype=dtype))
    ins32 = {k: (None if v is None else v.float()) for k, v in ins.items()}
    out, last, grads = run_with_grads(_triton(8), ins, True)
    out32, last32, grads32 = run_with_grads(_triton(8), ins32, True)
    assert out.dtype == dtype and last.dtype == torch.float32
    ulp = 2.0**-7 if (dtype == torch.bfloat16 and ON_CPU) else 0.0
    torch.testing.assert_close(out, out32.to(dtype), rtol=ulp, atol=0)
    torch.testing.assert_close(last, last32, rtol=0, atol=0)
    for name in grads:
        assert grads[name].dtype == dtype
        torch.testing.assert_close(grads[name].float(), grads32[name], rtol=2e-2, atol=2e-2, msg=name)


@pytest.mark.skipif(not ON_CPU, reason="about Triton's interpreter")
def test_triton_own_interpreter_scan():
    """One small multi-chunk case with Triton's unmodified interpreter scan (not the sliced copy
    the other tests use for speed), so the kernel is checked against Triton's own semantics."""
    from vmunet.ops.scan_triton import _sliced_generic_scan

    assert ScanOps.generic_scan is _sliced_generic_scan  # the autouse fixture's patch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ScanOps, "generic_scan", TRITON_GENERIC_SCAN)
        ins = make_inputs(batch=1, dim=2, L=6, N=2, groups=1, dtype=torch.float64)
        _assert_close_to_ref(ins, True, 4, F64, F64)


def test_backward_saves_inputs_and_chunk_start_states_only():
    """No (batch, dim, L, N) tensor is kept for the backward: the saved tensors are the inputs
    themselves (no copies) and the states at the start of each chunk (batch, dim, L/chunk, N)."""
    ins = _on_device(make_inputs(batch=1, dim=4, L=32, N=8, groups=1, dtype=torch.float32))
    leaves = {k: v.clone().requires_grad_() for k, v in ins.items()}
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = selective_scan_triton(**leaves, delta_softplus=True, block_l=8)
    inputs = {t.data_ptr() for t in leaves.values()}
    extra = [t for t in saved if t.data_ptr() not in inputs]
    assert [tuple(t.shape) for t in extra] == [(1, 4, 4, 8)]
    out.sum().backward()
    assert all(v.grad is not None for v in leaves.values())



def test_no_grad_forward_skips_chunk_states(monkeypatch):
    """Under no_grad (inference) the forward kernel does not write the chunk-start states."""
    from vmunet.ops import scan_triton

    real, flags = scan_triton._scan_fwd_kernel, []

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                flags.append(kw["SAVE"])
                return real[grid](*args, **kw)
            return launch

    monkeypatch.setattr(scan_triton, "_scan_fwd_kernel", Spy())
    ins = _on_device(make_inputs(batch=1, dim=2, L=8, N=2, groups=1, dtype=torch.float32))
    u = ins["u"].clone().requires_grad_()
    with torch.no_grad():
        out_ng = selective_scan_triton(**{**ins, "u": u}, block_l=4)
    out = selective_scan_triton(**{**ins, "u": u}, block_l=4)
    assert flags == [False, True]
    torch.testing.assert_close(out_ng, out.detach(), rtol=0, atol=0)


def test_non_contiguous_inputs():
    ins = _on_device(make_inputs(batch=1, dim=4, L=10, N=2, groups=2, dtype=torch.float64))
    u_t = ins["u"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not u_t.is_contiguous()
    out = selective_scan_triton(**{**ins, "u": u_t}, delta_softplus=True, block_l=4)
    torch.testing.assert_close(out, selective_scan_ref(**ins, delta_softplus=True), **F64)


def test_auto_on_cuda_prefers_mamba_then_triton():
    expected = "cuda" if cuda_available() else "triton"
    assert resolve_backend("auto", torch.device("cuda")) == expected
    assert resolve_backend("auto", torch.device("cpu")) != "triton"
    assert resolve_backend("triton") == "triton"


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.skipif(not ON_CPU, reason="checks the CPU error; a GPU is present")
def test_cpu_tensors_without_interpreter_give_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = _run(
        """
        import torch
        from vmunet.ops import selective_scan
        u = torch.randn(1, 2, 5)
        try:
            selective_scan(u, u, -torch.ones(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5),
                           backend="triton")
        except RuntimeError as exc:
            print(exc)
        """, env)
    assert res.returncode == 0, res.stderr
    assert "backend='triton' needs CUDA tensors (got u on cpu)" in res.stdout
    assert "TRITON_INTERPRET=1" in res.stdout


def test_without_triton_auto_falls_back_and_triton_says_how_to_install():
    res = _run(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import torch
        from vmunet.ops import resolve_backend, triton_available
        assert not triton_available()
        print(resolve_backend("auto", torch.device("cuda")))
        try:
            resolve_backend("triton")
        except RuntimeError as exc:
            print(exc)
        """, dict(os.environ))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == ("cuda" if cuda_available() else "torch")
    assert "pip install triton" in lines[1]


@pytest.mark.skipif(not ON_CPU, reason="the smoke mode is for CPU")
def test_gpu_triton_check_smoke(tmp_path):
    """benchmarks/gpu_triton_check.py --smoke runs end to end through the interpreter (its parity
    section compares with the ref loop; the timings mean nothing here)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_triton_check.py"
    spec = importlib.util.spec_from_file_location("gpu_triton_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu_triton_check.json").read_text())
    assert res["sections"]["parity"]["all_ok"] and len(res["sections"]["parity"]["rows"]) == 3
    rows = res["sections"]["scan_time"]["rows"]
    assert [r["L"] for r in rows] == [9] and rows[0]["triton_fwd_bwd_ms"] > 0
    assert "| 1 | 9 | 8 | float32 | False | ok |" in (tmp_path / "gpu_triton_check.md").read_text()

"""Selective scan: every CPU backend against the step-by-step "ref" loop, gradients, stability,
dtypes, argument errors and backend resolution."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest
import torch

from vmunet.ops import numba_available, resolve_backend, selective_scan
from vmunet.ops.scan_ref import selective_scan_ref
from vmunet.ops.scan_torch import plan_blocks, selective_scan_torch

# Whether numba is installed, found without importing our kernel: a broken vmunet.ops.scan_numba
# must fail the numba tests, not make numba_available() quietly drop them.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
CPU_BACKENDS = ["torch"] + (["numba"] if HAVE_NUMBA else [])
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-4)}
GRAD_TOL = {torch.float64: dict(rtol=1e-8, atol=1e-8), torch.float32: dict(rtol=1e-3, atol=1e-3)}


def make_inputs(batch=2, dim=6, L=37, N=4, groups=0, dtype=torch.float64, seed=0,
                delta_scale=0.5, with_D=True, with_z=True, with_bias=True):
    """Random scan inputs; groups=0 gives 3-D B/C (batch, N, L), groups>=1 gives 4-D (batch, G, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    bc_shape = (batch, N, L) if groups == 0 else (batch, groups, N, L)
    ins = dict(
        u=r(batch, dim, L),
        delta=r(batch, dim, L) * delta_scale,
        A=-(torch.rand(dim, N, generator=g, dtype=torch.float64) * 2 + 0.1),
        B=r(*bc_shape),
        C=r(*bc_shape),
        D=r(dim) if with_D else None,
        z=r(batch, dim, L) if with_z else None,
        delta_bias=r(dim) * 0.5 if with_bias else None,
    )
    return {k: (None if v is None else v.to(dtype)) for k, v in ins.items()}


def run_with_grads(fn, ins, softplus, seed=1):
    """Output, last state and the gradients of every tensor input for random upstream grads."""
    leaves = {k: v.clone().requires_grad_() for k, v in ins.items() if v is not None}
    out, last = fn(**{**ins, **leaves}, delta_softplus=softplus, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    g_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    g_last = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    grads = torch.autograd.grad((out * g_out).sum() + (last * g_last).sum(), list(leaves.values()))
    return out.detach(), last.detach(), dict(zip(leaves, grads, strict=True))


def assert_matches_ref(fn, ins, softplus, dtype):
    out_r, last_r, grads_r = run_with_grads(selective_scan_ref, ins, softplus)
    out, last, grads = run_with_grads(fn, ins, softplus)
    assert out.dtype == dtype and out.shape == out_r.shape
    torch.testing.assert_close(out, out_r, **TOL[dtype])
    torch.testing.assert_close(last, last_r, **TOL[dtype])
    assert grads.keys() == grads_r.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_r[name], **GRAD_TOL[dtype], msg=f"grad of {name}")


CASES = {
    # name: (make_inputs kwargs, delta_softplus)
    "plain_G1_3d": (dict(groups=0, with_D=False, with_z=False, with_bias=False), False),
    "all_options_G3_4d": (dict(groups=3), True),
    "D_only_G1_4d": (dict(groups=1, with_z=False, with_bias=False), False),
    "z_softplus_3d": (dict(groups=0, with_D=False, with_bias=False), True),
    "bias_no_softplus_G2": (dict(groups=2, with_D=False, with_z=False), False),
    "L1": (dict(L=1, groups=2), True),
    "L150_N16_G2": (dict(batch=1, dim=8, L=150, N=16, groups=2), True),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_ref(backend, case, dtype):
    kwargs, softplus = CASES[case]
    ins = make_inputs(dtype=dtype, **kwargs)

    def fn(**kw):
        return selective_scan(**kw, backend=backend)

    assert_matches_ref(fn, ins, softplus, dtype)


@pytest.mark.parametrize(
    "chunk_steps,slab_target",
    [(5, 1), (7, 10**6), (4, 200), (64, 1)],
    ids=["many_blocks", "one_block_many_chunks", "blocks_and_chunks", "one_chunk"],
)
def test_torch_blocking_matches_ref(chunk_steps, slab_target):
    """L=37 is not divisible by any of these chunk sizes: padding and every carry path are used."""
    ins = make_inputs(groups=3, dtype=torch.float64)
    n_blocks, nc, T = plan_blocks(2, 6, 4, 37, chunk_steps, slab_target)
    assert n_blocks * nc * T >= 37 and (n_blocks - 1) * nc * T < 37

    def fn(**kw):
        return selective_scan_torch(**kw, chunk_steps=chunk_steps, slab_target=slab_target)

    assert_matches_ref(fn, ins, True, torch.float64)


def test_torch_plan_never_spans_whole_long_sequence():
    """At VM-UNet's stage-1 shape a block covers a small part of L (no (b, d, L, N) tensor)."""
    n_blocks, nc, T = plan_blocks(1, 768, 16, 4096)
    assert nc * T <= 256 and n_blocks * nc * T >= 4096


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("groups", [0, 2])
def test_gradcheck(backend, groups):
    ins = make_inputs(batch=1, dim=2, L=5, N=3, groups=groups, dtype=torch.float64)
    names = list(ins)
    leaves = tuple(ins[k].clone().requires_grad_() for k in names)

    def fn(*args):
        out, last = selective_scan(**dict(zip(names, args, strict=True)), delta_softplus=True,
                                   return_last_state=True, backend=backend)
        return out, last

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_long_sequence_large_delta_is_stable(backend):
    """L = 16384 with delta up to ~60 (decays down to exp(-120)) and tiny delta mixed in."""
    ins = make_inputs(batch=1, dim=2, L=16384, N=4, groups=0, dtype=torch.float32, delta_scale=1.0,
                      with_z=False, with_bias=False)
    g = torch.Generator().manual_seed(3)
    big = torch.rand(1, 2, 16384, generator=g) < 0.3
    ins["delta"] = torch.where(big, ins["delta"].abs() * 30 + 20, ins["delta"] - 4)  # softplus later
    ins_f64 = {k: (None if v is None else v.double()) for k, v in ins.items()}
    out_ref = selective_scan_ref(**ins_f64, delta_softplus=True)
    out, last = selective_scan(**ins, delta_softplus=True, return_last_state=True, backend=backend)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    torch.testing.assert_close(out.double(), out_ref, rtol=1e-4, atol=1e-4)
    # gradients through the whole sequence stay finite too
    leaves = {k: v.clone().requires_grad_() for k, v in ins.items() if v is not None}
    y = selective_scan(**leaves, delta_softplus=True, backend=backend)
    grads = torch.autograd.grad(y.square().mean(), list(leaves.values()))
    assert all(torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["ref"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_in_same_dtype_out(backend, dtype):
    ins = make_inputs(groups=2, dtype=dtype)
    out, last = selective_scan(**ins, delta_softplus=True, return_last_state=True, backend=backend)
    assert out.dtype == dtype and last.dtype == torch.float32
    # computed in float32: equals the float32 run on the same (rounded) inputs, then rounded
    ins_f32 = {k: (None if v is None else v.float()) for k, v in ins.items()}
    out32, last32 = selective_scan(**ins_f32, delta_softplus=True, return_last_state=True, backend=backend)
    torch.testing.assert_close(out, out32.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(last, last32, rtol=1e-6, atol=1e-6)
    # and gradients come back in the input dtype
    u = ins["u"].clone().requires_grad_()
    selective_scan(**{**ins, "u": u}, delta_softplus=True, backend=backend).float().sum().backward()
    assert u.grad.dtype == dtype and torch.isfinite(u.grad.float()).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    ins = make_inputs(groups=2, dtype=torch.float64)
    u_t = ins["u"].transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not u_t.is_contiguous()
    out = selective_scan(**{**ins, "u": u_t}, backend=backend)
    torch.testing.assert_close(out, selective_scan_ref(**ins), **TOL[torch.float64])


BAD_ARGS = [
    ("u", lambda i: i["u"][0], ValueError, r"u must be \(batch, dim, L\), got shape \(6, 37\)"),
    ("delta", lambda i: i["delta"][..., :-1], ValueError, r"delta must have the shape of u \(2, 6, 37\), got \(2, 6, 36\)"),
    ("A", lambda i: i["A"][:-1], ValueError, r"A must be \(dim=6, N\), got \(5, 4\)"),
    ("B", lambda i: i["B"][..., :-1], ValueError, r"B must be \(batch=2, N=4, L=37\)"),
    ("C", lambda i: i["C"][None, None], ValueError, r"C must be \(batch, N, L\) or \(batch, G, N, L\)"),
    ("B", lambda i: i["B"][:, None].expand(2, 4, 4, 37), ValueError, r"B has G=4 groups, which must divide dim=6"),
    ("D", lambda i: i["D"][:-1], ValueError, r"D must be \(dim=6,\), got \(5,\)"),
    ("delta_bias", lambda i: i["D"][None], ValueError, r"delta_bias must be \(dim=6,\), got \(1, 6\)"),
    ("z", lambda i: i["z"][:1], ValueError, r"z must have the shape of u \(2, 6, 37\), got \(1, 6, 37\)"),
    ("u", lambda i: i["u"].long(), TypeError, r"u must be a floating-point tensor, got torch.int64"),
    ("A", lambda i: i["A"].numpy(), TypeError, r"A must be a torch.Tensor, got ndarray"),
]


@pytest.mark.parametrize("name,make_bad,exc,message", BAD_ARGS, ids=[f"{b[0]}{k}" for k, b in enumerate(BAD_ARGS)])
def test_bad_arguments_are_named(name, make_bad, exc, message):
    ins = make_inputs(groups=0, dtype=torch.float32)
    bad = {**ins, name: make_bad(ins)}
    with pytest.raises(exc, match="^selective_scan: " + message):
        selective_scan(**bad, backend="torch")


def test_unknown_backend():
    ins = make_inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"unknown backend 'fast'; choose from \('auto', 'ref', 'torch', 'numba', 'cuda', 'triton'\)"):
        selective_scan(**ins, backend="fast")


# the cuda backend's install hint and load errors: tests/ops/test_ops_scan_cuda.py


def test_auto_resolves_to_cpu_backend_for_cpu_tensors():
    expected = "numba" if HAVE_NUMBA else "torch"
    assert resolve_backend("auto", torch.device("cpu")) == expected
    ins = make_inputs(dtype=torch.float64)
    torch.testing.assert_close(selective_scan(**ins), selective_scan(**ins, backend=expected), rtol=0, atol=0)


def test_package_works_without_numba():
    """With numba unimportable, vmunet.ops imports, "auto" falls back to "torch", "numba" says why."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["numba"] = None  # makes `import numba` raise ImportError
        import torch
        from vmunet.ops import numba_available, resolve_backend, selective_scan
        assert not numba_available()
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
        u = torch.randn(1, 2, 5)
        out = selective_scan(u, u.abs(), -torch.ones(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5))
        assert out.shape == (1, 2, 5)
        try:
            resolve_backend("numba")
        except RuntimeError as exc:
            assert "pip install numba" in str(exc), exc
        else:
            raise AssertionError("no error for backend='numba' without numba")
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_backend_loads_when_numba_is_installed():
    import vmunet.ops.scan_numba  # noqa: F401  (raises the real error if our kernel module is broken)

    assert numba_available()


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_keeps_torch_thread_count():
    """The first numba call must not undo a user's torch.set_num_threads (it starts OpenMP)."""
    code = textwrap.dedent(
        """
        import torch
        torch.set_num_threads(1)
        from vmunet.ops import selective_scan
        u = torch.randn(1, 8, 64); A = -torch.rand(8, 4); B = torch.randn(1, 4, 64)
        selective_scan(u, u, A, B, B, backend="numba")
        print(torch.get_num_threads())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1"

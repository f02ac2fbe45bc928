"""The "cuda" backend's wrapper around mamba-ssm's compiled ``selective_scan_cuda``, on CPU.

``FakeKernel`` stands in for the compiled module: it enforces the kernel's argument contract as
written in mamba-ssm 2.3.2.post1's ``csrc/selective_scan/selective_scan.cpp`` (argument count
and order, one input dtype for u/delta/B/C/z/dout, float32 A/D/delta_bias, ``stride(-1) == 1``,
the 4-D B/C shape, contiguous ``x``) and computes its results with a plain loop written here
(float32, as the kernel computes), so output and every gradient travel the real wrapper end to
end and are compared with the float64 "ref" backend.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from vmunet.ops import resolve_backend, scan_cuda, selective_scan
from vmunet.ops.scan_cuda import EXTENSION_DIR_ENV, EXTENSION_NAME, scan_with_extension
from vmunet.ops.scan_ref import selective_scan_ref

HALF = (torch.float16, torch.bfloat16)


def loop_scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    """The kernel's math in float32 (a plain loop, B/C (b, G, N, L)); returns (out, out_z, last)."""
    f = torch.float32
    u, delta, A, B, C = (t.to(f) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(f)[:, None]
    if softplus:
        delta = F.softplus(delta)
    b, d, L = u.shape
    G, N = B.shape[1], B.shape[2]
    h = torch.zeros(b, d, N, dtype=f)
    ys = []
    for t in range(L):
        Bt = B[:, :, :, t].repeat_interleave(d // G, dim=1)   # (b, d, N)
        Ct = C[:, :, :, t].repeat_interleave(d // G, dim=1)
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * Bt
        ys.append((h * Ct).sum(-1))
    out = torch.stack(ys, -1)
    if D is not None:
        out = out + D.to(f)[:, None] * u
    out_z = None if z is None else out * F.silu(z.to(f))
    return out, out_z, h


def _desc(t):
    return None if t is None else (t.dtype, tuple(t.shape), t.stride(-1) == 1, t.is_contiguous())


class FakeKernel:
    """Stand-in for the compiled ``selective_scan_cuda`` module (``fwd``/``bwd`` functions)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []
        self.fwd_results: list = []

    def _check(self, u, delta, A, B, C, D, z, delta_bias):
        it = u.dtype
        assert it in (torch.float32, torch.float16, torch.bfloat16), it
        assert A.dtype == torch.float32, A.dtype
        assert delta.dtype == it and B.dtype == it and C.dtype == it, (delta.dtype, B.dtype, C.dtype)
        for t in (u, delta, B, C) + (() if z is None else (z,)):
            assert t.stride(-1) == 1 or t.size(-1) == 1
        b, d, L = u.shape
        N = A.shape[1]
        assert tuple(delta.shape) == (b, d, L) and tuple(A.shape) == (d, N)
        assert B.dim() == 4 and B.shape[0] == b and B.shape[2:] == (N, L), B.shape
        assert C.dim() == 4 and C.shape[0] == b and C.shape[2:] == (N, L), C.shape
        for t in (D, delta_bias):
            if t is not None:
                assert t.dtype == torch.float32 and tuple(t.shape) == (d,) and t.stride(-1) == 1
        if z is not None:
            assert z.dtype == it and tuple(z.shape) == (b, d, L)

    def fwd(self, *args):
        self.calls.append(("fwd", tuple(a if isinstance(a, bool) else _desc(a) for a in args)))
        assert len(args) == 9, "fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)"
        u, delta, A, B, C, D, z, delta_bias, softplus = args
        assert isinstance(softplus, bool)
        self._check(u, delta, A, B, C, D, z, delta_bias)
        out, out_z, last = loop_scan(u, delta, A, B, C, D, z, delta_bias, softplus)
        b, d, L = u.shape
        n_chunks = (L + 2047) // 2048
        x = torch.zeros(b, d, n_chunks, 2 * A.shape[1])
        x[:, :, -1, 1::2] = last  # the kernel keeps the last state at x[:, :, -1, 1::2]
        x[:, :, -1, 0::2] = float("nan")  # and something else in the other half: must not leak
        res = [out.to(u.dtype), x] + ([] if z is None else [out_z.to(u.dtype)])
        self.fwd_results.append(res)
        return res

    def bwd(self, *args):
        self.calls.append(("bwd", tuple(a if isinstance(a, bool) else _desc(a) for a in args)))
        assert len(args) == 14, "bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, softplus, recompute_out_z)"
        u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, softplus, recompute = args
        self._check(u, delta, A, B, C, D, z, delta_bias)
        assert dout.dtype == u.dtype and dout.stride(-1) == 1 and dout.shape == u.shape
        assert x is self.fwd_results[-1][1] and x.is_contiguous() and x.dtype == torch.float32
        assert (out is None) == (z is None)
        if z is not None:
            assert out is self.fwd_results[-1][0], "bwd needs the fwd's out (before the z gate)"
        assert dz is None and recompute is False
        leaves = [t.detach().float().requires_grad_() for t in (u, delta, A, B, C)]
        extra = [None if t is None else t.detach().float().requires_grad_() for t in (D, z, delta_bias)]
        with torch.enable_grad():
            o, oz, _ = loop_scan(*leaves, extra[0], extra[1], extra[2], softplus)
            res = o if z is None else oz
            want = leaves + [t for t in extra if t is not None]
            grads = torch.autograd.grad(res, want, dout.float())
        names = ["u", "delta", "A", "B", "C"] + [k for k, t in zip(["D", "z", "bias"], extra, strict=True)
                                                 if t is not None]
        g = dict(zip(names, grads, strict=True))
        # dtypes as the kernel returns them: du/ddelta/dz input dtype, dA/dD/ddelta_bias float32,
        # dB/dC in B's/C's dtype; dD/ddelta_bias are undefined (None) when D/delta_bias are
        result = [g["u"].to(u.dtype), g["delta"].to(delta.dtype), g["A"], g["B"].to(B.dtype),
                  g["C"].to(C.dtype), g.get("D"), g.get("bias")]
        if z is not None:
            result.append(g["z"].to(z.dtype))
        return result


def make_inputs(batch=2, dim=6, L=9, N=3, groups=2, dtype=torch.float32, seed=0, with_D=True,
                with_z=True, with_bias=True, bc3=False):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

    bc = (batch, N, L) if bc3 else (batch, groups, N, L)
    ins = dict(u=r(batch, dim, L), delta=r(batch, dim, L, scale=0.5),
               A=-(torch.rand(dim, N, generator=g, dtype=torch.float64) + 0.2), B=r(*bc), C=r(*bc),
               D=r(dim) if with_D else None, z=r(batch, dim, L) if with_z else None,
               delta_bias=r(dim, scale=0.5) if with_bias else None)
    # as SS2D feeds them: A, D and delta_bias are float32 parameters whatever the activations' dtype
    params = dtype if dtype == torch.float64 else torch.float32
    return {k: None if v is None else v.to(params if k in ("A", "D", "delta_bias") else dtype)
            for k, v in ins.items()}


def outputs_and_grads(fn, ins, softplus, seed=1, grad_dtype=torch.float64):
    """Output and input gradients for a random upstream gradient (rounded to ``grad_dtype``, so
    that a half-precision run and its float64 reference see the same values)."""
    leaves = {k: v.clone().requires_grad_() for k, v in ins.items() if v is not None}
    out = fn(**{**ins, **leaves}, delta_softplus=softplus)
    g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(grad_dtype).double()
    grads = torch.autograd.grad((out.double() * g_out).sum(), list(leaves.values()))
    return out.detach(), dict(zip(leaves, grads, strict=True))


CASES = {
    "all_options_G2": (dict(), True),
    "bc_3d": (dict(bc3=True), True),
    "no_D_z_bias": (dict(with_D=False, with_z=False, with_bias=False), False),
    "z_only": (dict(with_D=False, with_bias=False, groups=3), False),
    "bias_no_softplus": (dict(with_z=False, groups=1), False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_output_and_all_gradients_match_ref(case, dtype):
    kwargs, softplus = CASES[case]
    ins = make_inputs(dtype=dtype, **kwargs)
    kernel = FakeKernel()
    out, grads = outputs_and_grads(lambda **kw: scan_with_extension(kernel, **kw), ins, softplus,
                                   grad_dtype=dtype)
    ins64 = {k: None if v is None else v.double() for k, v in ins.items()}
    out_r, grads_r = outputs_and_grads(selective_scan_ref, ins64, softplus, grad_dtype=dtype)
    assert [c[0] for c in kernel.calls] == ["fwd", "bwd"]
    assert out.dtype == dtype
    assert grads.keys() == grads_r.keys()
    for name, got, want in [("out", out, out_r)] + [(k, grads[k], grads_r[k]) for k in grads]:
        if name != "out":
            assert got.dtype == ins[name].dtype, f"grad of {name} comes back in its input's dtype"
        if dtype == torch.float32:
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=name)
        else:  # float32 compute, results rounded to 8 (bf16) or 11 (f16) mantissa bits
            err = float((got.double() - want).norm() / want.norm())
            assert err < (1e-2 if dtype == torch.bfloat16 else 2e-3), f"{name}: rel. error {err:.2e}"


def test_argument_order_and_kernel_dtypes():
    """fwd/bwd get mamba-ssm's positional arguments; D/delta_bias float32 even for bf16 inputs."""
    ins = make_inputs(dtype=torch.bfloat16)
    kernel = FakeKernel()
    _, grads = outputs_and_grads(lambda **kw: scan_with_extension(kernel, **kw), ins, True)
    (n1, fwd), (n2, bwd) = kernel.calls
    bf, f32 = torch.bfloat16, torch.float32
    assert (n1, n2) == ("fwd", "bwd")
    # (dtype, shape, stride(-1)==1, contiguous) per tensor argument
    assert [a[:2] for a in fwd[:8]] == [
        (bf, (2, 6, 9)), (bf, (2, 6, 9)), (f32, (6, 3)), (bf, (2, 2, 3, 9)), (bf, (2, 2, 3, 9)),
        (f32, (6,)), (bf, (2, 6, 9)), (f32, (6,))]
    assert fwd[8] is True
    assert [a if a is None or isinstance(a, bool) else a[:2] for a in bwd] == [
        (bf, (2, 6, 9)), (bf, (2, 6, 9)), (f32, (6, 3)), (bf, (2, 2, 3, 9)), (bf, (2, 2, 3, 9)),
        (f32, (6,)), (bf, (2, 6, 9)), (f32, (6,)), (bf, (2, 6, 9)), (f32, (2, 6, 1, 6)),
        (bf, (2, 6, 9)), None, True, False]
    assert set(grads) == {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"}


def test_mixed_dtypes_are_computed_in_float32():
    """bf16 u with float32 delta: the kernel wants one dtype, so all go in as float32 (the other
    backends' compute dtype) and the output comes back in u's dtype."""
    ins = make_inputs(dtype=torch.float32)
    ins["u"] = ins["u"].bfloat16()
    kernel = FakeKernel()
    out = scan_with_extension(kernel, **ins, delta_softplus=True)
    assert kernel.calls[0][1][0][0] == torch.float32 and out.dtype == torch.bfloat16
    ref = selective_scan_ref(**{k: None if v is None else v.double() for k, v in ins.items()},
                             delta_softplus=True)
    torch.testing.assert_close(out.double(), ref.to(torch.bfloat16).double(), rtol=1e-2, atol=1e-2)


def test_only_last_dim_strides_are_fixed():
    """Like SelectiveScanFn: a tensor whose last dim is strided is copied; one that is merely
    non-contiguous elsewhere (a channel slice) goes to the kernel as it is."""
    ins = make_inputs(dtype=torch.float32, dim=6)
    u_t = ins["u"].transpose(1, 2).contiguous().transpose(1, 2)      # stride(-1) == 6
    wide = torch.randn(2, 12, 9)
    delta_slice = wide[:, ::2]                                        # stride(-1) == 1, not contiguous
    delta_slice.copy_(ins["delta"])
    kernel = FakeKernel()
    out = scan_with_extension(kernel, **{**ins, "u": u_t, "delta": delta_slice}, delta_softplus=True)
    (_, fwd), = kernel.calls
    assert fwd[0][2:] == (True, True)     # u: copied to contiguous
    assert fwd[1][2:] == (True, False)    # delta: passed as is
    torch.testing.assert_close(out, selective_scan_ref(**ins, delta_softplus=True), rtol=1e-5, atol=1e-5)


def test_last_state_matches_ref_and_has_no_gradient():
    ins = make_inputs(dtype=torch.float32, L=7)
    u = ins["u"].clone().requires_grad_()
    out, last = scan_with_extension(FakeKernel(), **{**ins, "u": u}, delta_softplus=True,
                                    return_last_state=True)
    _, last_r = selective_scan_ref(**ins, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(last, last_r, rtol=1e-5, atol=1e-5)
    assert out.requires_grad and not last.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        last.sum().backward()  # not a silent zero gradient


def test_float64_is_refused_with_the_alternative():
    ins = make_inputs(dtype=torch.float64)
    with pytest.raises(TypeError, match=r"backend='cuda' .* no float64\); use backend='torch' or 'ref'"):
        scan_with_extension(FakeKernel(), **ins)


# ------------------------------------------------------------------------------------------------
# loading the extension and backend resolution
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_extension(monkeypatch):
    """Forget any loaded extension before and after the test."""
    monkeypatch.delitem(sys.modules, EXTENSION_NAME, raising=False)
    scan_cuda.extension.cache_clear()
    yield
    sys.modules.pop(EXTENSION_NAME, None)
    scan_cuda.extension.cache_clear()


def _write_fake_module(folder, body):
    folder.mkdir(exist_ok=True)
    (folder / f"{EXTENSION_NAME}.py").write_text(body)
    return folder


FAKE_MODULE = "def fwd(*a):\n    raise RuntimeError('fake fwd')\n\ndef bwd(*a):\n    raise RuntimeError('fake bwd')\n"


def test_extension_loads_from_folder_but_cpu_is_not_cuda_available(tmp_path, monkeypatch, fresh_extension):
    monkeypatch.setenv(EXTENSION_DIR_ENV, str(_write_fake_module(tmp_path / "ext", FAKE_MODULE)))
    path_before = list(sys.path)
    assert scan_cuda.extension() is not None and scan_cuda.load_error() is None
    assert sys.path == path_before
    assert scan_cuda.cuda_available() is torch.cuda.is_available()
    assert resolve_backend("cuda") == "cuda"
    ins = make_inputs(dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"backend='cuda' needs CUDA tensors, got u on cpu"):
        selective_scan(**ins, backend="cuda")
    # with a CUDA device (pretended), "auto" picks the kernel for CUDA tensors, never for CPU ones
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert scan_cuda.cuda_available()
    assert resolve_backend("auto", torch.device("cuda")) == "cuda"
    assert resolve_backend("auto", torch.device("cpu")) != "cuda"


def test_missing_or_broken_extension_says_why(tmp_path, monkeypatch, fresh_extension):
    monkeypatch.setenv(EXTENSION_DIR_ENV, str(tmp_path / "empty"))
    assert scan_cuda.extension() is None and not scan_cuda.cuda_available()
    with pytest.raises(RuntimeError, match=r"needs mamba-ssm's compiled extension `selective_scan_cuda`.*"
                                           r"MAMBA_FORCE_BUILD=TRUE.*no selective_scan_cuda module"):
        resolve_backend("cuda")
    scan_cuda.extension.cache_clear()
    monkeypatch.setenv(EXTENSION_DIR_ENV, str(_write_fake_module(tmp_path / "bad", "x = 1\n")))
    assert scan_cuda.extension() is None
    assert "has no fwd/bwd functions" in scan_cuda.load_error()
    # even with a CUDA device, "auto" then falls back instead of failing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not scan_cuda.cuda_available()
    assert resolve_backend("auto", torch.device("cuda")) != "cuda"


def test_wrapper_does_not_import_mamba_ssm(tmp_path, monkeypatch, fresh_extension):
    monkeypatch.setenv(EXTENSION_DIR_ENV, str(_write_fake_module(tmp_path / "ext", FAKE_MODULE)))
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # importing it would raise
    assert scan_cuda.extension() is not None

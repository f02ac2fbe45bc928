"""Fused cross-scan / cross-merge (vmunet.ops.cross_scan_fused, ..._triton, ..._numba): the autograd
Function, the Triton kernels (CPU: Triton's interpreter, set up by tests/conftest.py) and the numba
kernels give the values of plain loops written here and of the default cross_scan/cross_merge,
forward and backward, float32 and float64; the selection falls back where the fused path does not
apply."""

from __future__ import annotations

import types

import pytest
import torch

from vmunet.layers.ss2d import SS2D
from vmunet.ops import cross_merge, cross_scan
from vmunet.ops import cross_scan_fused as csf
from vmunet.ops import cross_scan_triton as cst
from vmunet.ops.cross_scan_triton import interpreted

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
IMPLS = ["function", "triton", "numba"]  # numba: CPU kernels (on a GPU run it falls back to "function")
DTYPES = [torch.float32, torch.float64]
B, C, H, W = 2, 3, 5, 7  # non-square: h and v orders differ visibly; L = 35 is not a tile multiple


@pytest.fixture(autouse=True)
def _default_impl():
    with csf.use_cross_scan_impl("torch"):
        yield


def loop_orders(H: int, W: int) -> list[list[int]]:
    """Row-major pixel id read at each position of h, v, h_flip, v_flip, as plain loops."""
    h = [i * W + j for i in range(H) for j in range(W)]
    v = [i * W + j for j in range(W) for i in range(H)]
    return [h, v, h[::-1], v[::-1]]


def loop_scan(x: torch.Tensor) -> torch.Tensor:
    b, c, hh, ww = x.shape
    flat = x.reshape(b, c, hh * ww)
    out = torch.empty(b, 4, c, hh * ww, dtype=x.dtype)
    for k, order in enumerate(loop_orders(hh, ww)):
        for pos, pix in enumerate(order):
            out[:, k, :, pos] = flat[:, :, pix]
    return out


def loop_merge(y: torch.Tensor, hh: int, ww: int) -> torch.Tensor:
    """Sum over the four orders, added in the order h, v, h_flip, v_flip (as the default)."""
    b, _, c, L = y.shape
    out = torch.zeros(b, c, L, dtype=y.dtype)
    for k, order in enumerate(loop_orders(hh, ww)):
        for pos, pix in enumerate(order):
            out[:, :, pix] += y[:, k, :, pos]
    return out


def fused(impl: str, fn, *args):
    with csf.use_cross_scan_impl(impl):
        return fn(*args)


@pytest.fixture(params=["default tiles", "small tiles"])
def tiles(request, monkeypatch):
    """The Triton kernels with their own tiles, and with tiles smaller than the data (several
    programs per map, partial tiles masked: what a GPU runs at the model's sizes)."""
    if request.param == "small tiles":
        monkeypatch.setattr(cst, "_blocks", lambda C, L: (2, 16))
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_scan_and_merge_match_loops_and_default_exactly(impl, dtype, tiles):
    if impl != "triton" and tiles == "small tiles":
        pytest.skip("tiles are a Triton setting")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    y = torch.randn(B, 4, C, H * W, generator=g, dtype=dtype)
    xs = fused(impl, cross_scan, x.to(DEV))
    ym = fused(impl, cross_merge, y.to(DEV), H, W)
    assert xs.shape == (B, 4, C, H * W) and ym.shape == (B, C, H * W)
    # pure data movement, and the same addition order: equal bit for bit
    assert torch.equal(xs.cpu(), loop_scan(x)) and torch.equal(xs.cpu(), cross_scan(x))
    assert torch.equal(ym.cpu(), loop_merge(y, H, W)) and torch.equal(ym.cpu(), cross_merge(y, H, W))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", IMPLS)
def test_backward_is_the_adjoint(impl, dtype, tiles):
    """d scan = merge of the upstream gradient, d merge = scan of it (loops), and both equal the
    default's autograd gradients (up to the order of the four additions)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    y = torch.randn(B, 4, C, H * W, generator=g, dtype=dtype)
    gy = torch.randn(B, 4, C, H * W, generator=g, dtype=dtype)
    gx = torch.randn(B, C, H * W, generator=g, dtype=dtype)
    if impl != "triton" and tiles == "small tiles":
        pytest.skip("tiles are a Triton setting")
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}

    xl, yl = x.to(DEV).requires_grad_(), y.to(DEV).requires_grad_()
    with csf.use_cross_scan_impl(impl):
        (dx,) = torch.autograd.grad(cross_scan(xl), xl, gy.to(DEV))
        (dy,) = torch.autograd.grad(cross_merge(yl, H, W), yl, gx.to(DEV))
    assert torch.equal(dx.cpu(), loop_merge(gy, H, W).view(B, C, H, W))
    assert torch.equal(dy.cpu(), loop_scan(gx.view(B, C, H, W)))

    xd, yd = x.clone().requires_grad_(), y.clone().requires_grad_()
    (dx_default,) = torch.autograd.grad(cross_scan(xd), xd, gy)
    (dy_default,) = torch.autograd.grad(cross_merge(yd, H, W), yd, gx)
    torch.testing.assert_close(dx.cpu(), dx_default, **tol)
    assert torch.equal(dy.cpu(), dy_default)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input_and_gradient(impl):
    x = torch.randn(B, H, W, C, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last memory
    assert not x.is_contiguous()
    xl = x.to(DEV).requires_grad_()
    gy = torch.randn(B, C, H * W, 4, dtype=torch.float64).permute(0, 3, 1, 2)  # strided gradient
    with csf.use_cross_scan_impl(impl):
        out = cross_scan(xl)
        (dx,) = torch.autograd.grad(out, xl, gy.to(DEV))
    assert torch.equal(out.detach().cpu(), loop_scan(x.contiguous()))
    assert torch.equal(dx.cpu(), loop_merge(gy.contiguous(), H, W).view(B, C, H, W))


@pytest.mark.parametrize("impl", ["function", "numba"])
def test_function_passes_gradcheck(impl):
    if impl == "numba":
        from vmunet.ops.cross_scan_numba import CrossMergeNumbaFn as merge_fn
        from vmunet.ops.cross_scan_numba import CrossScanNumbaFn as scan_fn
    else:
        scan_fn, merge_fn = csf.CrossScanFn, csf.CrossMergeFn
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(scan_fn.apply, (x,))
    assert torch.autograd.gradcheck(lambda t: merge_fn.apply(t, 2, 3), (y,))


def test_numba_merge_is_channels_last_and_tiles_channels():
    """The numba merge stores its sum channels-last (SS2D's transpose back to (B, H, W, C) is then
    a view), with more channels than one merge tile (16) and a partial last tile."""
    from vmunet.ops.cross_scan_numba import MERGE_TILE, merge4_numba

    c = 2 * MERGE_TILE + 3
    y = torch.randn(2, 4, c, H * W, generator=torch.Generator().manual_seed(3))
    out = merge4_numba(y, H, W)
    assert out.shape == (2, c, H * W) and out.stride() == (c * H * W, 1, c)
    assert torch.equal(out, loop_merge(y, H, W))
    back = out.transpose(1, 2).reshape(2, H, W, c)
    assert back.data_ptr() == out.data_ptr() and back.is_contiguous()


def test_default_takes_numba_for_inference_with_the_same_model_output():
    """Unset, the selection runs the numba kernels on CPU with gradients off; an SS2D layer (float32,
    numba scan) then gives the default code's output bit for bit."""
    torch.manual_seed(0)
    layer = SS2D(d_model=8, d_state=4, scan_backend="numba").eval()
    x = torch.randn(2, H, W, 8)
    with torch.inference_mode():
        with csf.use_cross_scan_impl("default"):
            assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == "numba"
            out = layer(x)
        ref = layer(x)  # the autouse fixture's "torch"
    assert torch.equal(out, ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_ss2d_layer_same_output_and_gradients(impl):
    """The layer with the fused path gives the default's output and parameter gradients."""
    torch.manual_seed(0)
    layer = SS2D(d_model=4, d_state=4, scan_backend="torch").double().to(DEV)
    x = torch.randn(1, H, W, 4, dtype=torch.float64, device=DEV)

    def run():
        layer.zero_grad()
        out = layer(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in layer.parameters()]

    out0, g0 = run()
    with csf.use_cross_scan_impl(impl):
        out1, g1 = run()
    torch.testing.assert_close(out1, out0, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_selection_and_fallbacks(monkeypatch):
    x = torch.zeros(1, 1, 2, 2, device=DEV)
    with csf.use_cross_scan_impl("default"):
        # gradients on: the default code on CPU, the fused Function on CUDA (faster there)
        assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == ("function" if x.is_cuda else "torch")
        with torch.no_grad():  # inference: numba on CPU
            assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == ("function" if x.is_cuda else "numba")
            monkeypatch.setattr(csf, "numba_available", lambda: False)
            assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == ("function" if x.is_cuda else "torch")
            monkeypatch.undo()
            monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)  # a tracer sees no numba code
            assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == "torch"
            monkeypatch.undo()
        with torch.no_grad():
            assert csf.resolve_impl(x.double(), ("h", "v")) == "torch"
            assert csf.resolve_impl(x.half(), csf.FUSED_DIRECTIONS) == "torch"  # a dtype numba does not take
    with csf.use_cross_scan_impl("function"):
        assert csf.resolve_impl(x, ("h", "v", "h_flip", "v_flip")) == "function"
        assert csf.resolve_impl(x, ("h", "v")) == "torch"  # other orders: the default code
        assert csf.resolve_impl(x, ("v", "h", "h_flip", "v_flip")) == "torch"
    with csf.use_cross_scan_impl("auto"):
        assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == ("triton" if x.is_cuda else "numba")
    with csf.use_cross_scan_impl("triton"):
        assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == "triton"  # interpreter (or GPU)
        monkeypatch.setattr(csf, "_triton_runs_on", lambda t: False)  # CPU without the interpreter
        assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == "function"
    with csf.use_cross_scan_impl("numba"):
        assert csf.resolve_impl(x, csf.FUSED_DIRECTIONS) == ("function" if x.is_cuda else "numba")
        assert csf.resolve_impl(x.half(), csf.FUSED_DIRECTIONS) == "function"
    assert csf.cross_scan_impl() == "torch"  # the context manager restored it


def test_default_on_cuda_tensors_is_the_fused_function(monkeypatch):
    """CUDA tensors take "function" by default (measured faster on an H200, gpu_check cross_scan),
    with gradients on or off; a tracer still records "torch", other orders stay "torch". A
    stand-in with the attributes resolve_impl reads stands for a CUDA tensor on a CPU machine."""
    cuda_like = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda"), dtype=torch.float32)
    with csf.use_cross_scan_impl("default"):
        assert csf.resolve_impl(cuda_like, csf.FUSED_DIRECTIONS) == "function"
        with torch.no_grad():
            assert csf.resolve_impl(cuda_like, csf.FUSED_DIRECTIONS) == "function"
        assert csf.resolve_impl(cuda_like, ("h", "v")) == "torch"
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        assert csf.resolve_impl(cuda_like, csf.FUSED_DIRECTIONS) == "torch"


def test_environment_variable_and_bad_names(monkeypatch):
    monkeypatch.setattr(csf, "_selected", None)
    monkeypatch.delenv(csf.ENV, raising=False)
    assert csf.cross_scan_impl() == "default"
    monkeypatch.setattr(csf, "_selected", None)
    monkeypatch.setenv(csf.ENV, "function")
    assert csf.cross_scan_impl() == "function"
    monkeypatch.setattr(csf, "_selected", None)
    monkeypatch.setenv(csf.ENV, "fast")
    with pytest.raises(ValueError, match=r"^VMUNET_CROSS_SCAN: unknown cross-scan implementation 'fast'"):
        csf.cross_scan_impl()
    with pytest.raises(ValueError, match="set_cross_scan_impl: unknown cross-scan implementation"):
        csf.set_cross_scan_impl("cuda")


def test_kernels_run_where_expected():
    assert interpreted() == (not torch.cuda.is_available())

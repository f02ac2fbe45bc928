"""Fused cross-scan / cross-merge for VMamba's four orders (h, v, h_flip, v_flip), selectable.

The default cross-scan (:mod:`vmunet.ops.cross_scan`) is built from views, ``flip``, ``reshape``
and ``torch.stack``; autograd then records every step, and forward and backward each allocate
several full-size temporaries (a transposed copy, flipped copies, the stack, one tensor per
addition of the merge). VMamba replaced this with autograd Functions whose backward is the other
operation (the gradient of a scan is a merge, and of a merge a scan) and with Triton kernels that
read the input once and write the four sequences directly (MzeroMiko/VMamba,
classification/models/csm_triton.py: ``CrossScanF``/``CrossMergeF`` and
``CrossScanTritonF``/``CrossMergeTritonF``); it reports about -17% step time from this.

Implementations (``impl``):

* ``"torch"``: the default cross-scan of :mod:`vmunet.ops.cross_scan`, unchanged.
* ``"function"``: :class:`CrossScanFn` / :class:`CrossMergeFn`, plain PyTorch, any device and
  dtype; the same values as ``"torch"`` bit for bit in the forward (the merge adds in the same
  order), gradients equal up to the order of the four additions.
* ``"triton"``: :mod:`vmunet.ops.cross_scan_triton`, for CUDA tensors (CPU tensors only under
  ``TRITON_INTERPRET=1``); where it cannot run, ``"function"`` is used instead.
* ``"numba"``: :mod:`vmunet.ops.cross_scan_numba`, compiled CPU kernels (float32/float64); the
  same values as ``"torch"`` bit for bit in the forward; where they cannot run (no numba, a CUDA
  tensor, another dtype), ``"function"`` is used instead.
* ``"auto"``: ``"triton"`` for CUDA tensors when triton imports, ``"numba"`` for CPU tensors when
  numba imports, else ``"function"``.

Chosen per process: the environment variable ``VMUNET_CROSS_SCAN`` (read on first use), or
:func:`set_cross_scan_impl` / :func:`use_cross_scan_impl`. Unset (``"default"``):

* CUDA tensors: ``"function"`` (training and inference). Measured on an NVIDIA H200
  (benchmarks/gpu_check.py, section ``cross_scan``, 2026-11-27): a vmunet training step at 224²,
  batch 32, took 6.3 % (fp32) / 6.5 % (bf16-mixed) less time than with ``"torch"``, and 1.9 %
  less than with ``"triton"``; the forward is the same bit for bit, gradients equal up to the
  order of the four additions (rel. 1.6e-7 over all parameters).
* CPU tensors: ``"numba"`` while gradients are off and nothing traces or exports the model
  (inference and validation: the forward values are identical; a batch-8 forward of the paper
  model took 1.5-13 % less CPU time, docs/performance.md "Volume prediction"), ``"torch"``
  otherwise: CPU training keeps the default code (its gradients add the four orders in
  autograd's order).
* Tracers and exporters (``torch.jit``, ONNX, ``torch.export``, ``torch.compile``) always record
  ``"torch"``, and any other set of scan orders always takes ``"torch"``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from vmunet.ops._availability import module_imports

IMPLS: tuple[str, ...] = ("default", "torch", "function", "triton", "numba", "auto")
ENV = "VMUNET_CROSS_SCAN"
#: the only orders the fused path knows (VMamba's, in VMamba's order)
FUSED_DIRECTIONS: tuple[str, ...] = ("h", "v", "h_flip", "v_flip")
_selected: str | None = None  # None: not chosen yet (then the environment variable decides)


def _check_impl(name: str, where: str) -> str:
    if name not in IMPLS:
        raise ValueError(f"{where}: unknown cross-scan implementation {name!r}; choose from {IMPLS}")
    return name


def cross_scan_impl() -> str:
    """The implementation chosen for this process (``VMUNET_CROSS_SCAN``, default ``"default"``)."""
    global _selected
    if _selected is None:
        _selected = _check_impl(os.environ.get(ENV, "default") or "default", ENV)
    return _selected


def set_cross_scan_impl(name: str) -> None:
    """Choose the cross-scan implementation for this process (one of :data:`IMPLS`)."""
    global _selected
    _selected = _check_impl(name, "set_cross_scan_impl")


@contextlib.contextmanager
def use_cross_scan_impl(name: str) -> Iterator[None]:
    """Inside the block, cross-scan and cross-merge use ``name`` (forward and backward)."""
    before = cross_scan_impl()
    set_cross_scan_impl(name)
    try:
        yield
    finally:
        set_cross_scan_impl(before)


def triton_available() -> bool:
    """True when the Triton cross-scan kernels import (they still need CUDA tensors, or the
    interpreter, to run)."""
    return module_imports("vmunet.ops.cross_scan_triton")


def _triton_runs_on(t: Tensor) -> bool:
    if not triton_available():
        return False
    from vmunet.ops.cross_scan_triton import runs_on

    return runs_on(t)


def numba_available() -> bool:
    """True when the compiled CPU cross-scan kernels (numba) import (they compile on first use)."""
    return module_imports("vmunet.ops.cross_scan_numba")


def _recording() -> bool:
    """True while a tracer or compiler records the graph (``torch.jit.trace``, the ONNX exporter,
    ``torch.export``, ``torch.compile``): compiled numba code is invisible to them."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def _numba_runs_on(t: Tensor) -> bool:
    return (t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not _recording()
            and numba_available())


def resolve_impl(t: Tensor, directions: Sequence[str]) -> str:
    """The implementation that actually runs for tensor ``t`` and these scan orders."""
    impl = cross_scan_impl()
    if impl == "default":
        if _recording():
            impl = "torch"
        elif t.is_cuda:
            impl = "function"
        else:
            impl = "numba" if not torch.is_grad_enabled() and _numba_runs_on(t) else "torch"
    if impl == "torch" or tuple(directions) != FUSED_DIRECTIONS:
        return "torch"
    if impl == "auto":
        if t.is_cuda and _triton_runs_on(t):
            return "triton"
        return "numba" if _numba_runs_on(t) else "function"
    if impl == "triton" and not _triton_runs_on(t):
        return "function"
    if impl == "numba" and not _numba_runs_on(t):
        return "function"
    return impl


# ------------------------------------------------------------------------------------------------
# plain PyTorch, one autograd node each: the scan's backward is a merge and the merge's a scan
# ------------------------------------------------------------------------------------------------
def scan4(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W) in the orders h, v, h_flip, v_flip (no autograd graph)."""
    B, C, H, W = x.shape
    L = H * W
    y = x.new_empty((B, 4, C, L))
    y[:, 0].view(B, C, H, W).copy_(x)
    y[:, 1].view(B, C, W, H).copy_(x.transpose(2, 3))
    # torch has no negative strides: the two reversed orders take one temporary, as in VMamba
    y[:, 2:4].copy_(y[:, 0:2].flip(-1))
    return y


def merge4(y: Tensor, H: int, W: int) -> Tensor:
    """(B, 4, C, H*W) -> (B, C, H*W): sum of the four sequences in row-major order, added in the
    order h, v, h_flip, v_flip as :func:`vmunet.ops.cross_scan.cross_merge` does (same rounding)."""
    y = y.contiguous()  # the views below need it
    B, _, C, L = y.shape
    out = y.new_empty((B, C, H, W))
    torch.add(y[:, 0].view(B, C, H, W), y[:, 1].view(B, C, W, H).transpose(2, 3), out=out)
    rev = y[:, 2:4].flip(-1)  # the one temporary
    out.add_(rev[:, 0].view(B, C, H, W))
    out.add_(rev[:, 1].view(B, C, W, H).transpose(2, 3))
    return out.view(B, C, L)


ScanFn = Callable[[Tensor], Tensor]
MergeFn = Callable[[Tensor, int, int], Tensor]


def autograd_pair(scan: ScanFn, merge: MergeFn, scan_name: str, merge_name: str
                  ) -> tuple[type[torch.autograd.Function], type[torch.autograd.Function]]:
    """Autograd Functions of a scan (x (B, C, H, W) -> (B, 4, C, H*W)) and of its merge
    ((B, 4, C, H*W), H, W -> (B, C, H*W)), each the other's backward (the merge is the scan's
    adjoint). One definition serves every implementation: the PyTorch functions here and the
    Triton kernels of :mod:`vmunet.ops.cross_scan_triton`. Built with ``type`` so that each class,
    and the ``<name>Backward`` node autograd names after it, carries its own name."""

    def scan_forward(ctx, x: Tensor) -> Tensor:
        ctx.hw = x.shape[2:]
        return scan(x)

    def scan_backward(ctx, dy: Tensor) -> Tensor:
        H, W = ctx.hw
        return merge(dy, H, W).view(dy.shape[0], dy.shape[2], H, W)

    def merge_forward(ctx, y: Tensor, H: int, W: int) -> Tensor:
        ctx.hw = (H, W)
        return merge(y, H, W)

    def merge_backward(ctx, dout: Tensor) -> tuple[Tensor, None, None]:
        H, W = ctx.hw
        B, C, _ = dout.shape
        return scan(dout.reshape(B, C, H, W)), None, None

    def make(name: str, forward: Callable, backward: Callable, doc: str) -> type[torch.autograd.Function]:
        return type(name, (torch.autograd.Function,), {
            "__doc__": doc, "__module__": scan.__module__,
            "forward": staticmethod(forward), "backward": staticmethod(backward)})

    return (make(scan_name, scan_forward, scan_backward,
                 f"x (B, C, H, W) -> (B, 4, C, H*W) by {scan.__name__}; backward: {merge.__name__}."),
            make(merge_name, merge_forward, merge_backward,
                 f"y (B, 4, C, H*W) -> (B, C, H*W) by {merge.__name__}; backward: {scan.__name__}."))


CrossScanFn, CrossMergeFn = autograd_pair(scan4, merge4, "CrossScanFn", "CrossMergeFn")


def cross_scan_fused(x: Tensor, impl: str) -> Tensor:
    """Cross-scan of ``x`` (B, C, H, W) in the four VMamba orders with ``impl`` ("function",
    "triton" or "numba"): (B, 4, C, H*W)."""
    if impl == "triton":
        from vmunet.ops.cross_scan_triton import CrossScanTritonFn

        return CrossScanTritonFn.apply(x)
    if impl == "numba":
        from vmunet.ops.cross_scan_numba import CrossScanNumbaFn

        return CrossScanNumbaFn.apply(x)
    if impl == "function":
        return CrossScanFn.apply(x)
    raise ValueError(f"cross_scan_fused: impl must be 'function', 'triton' or 'numba', got {impl!r}")


def cross_merge_fused(y: Tensor, H: int, W: int, impl: str) -> Tensor:
    """Cross-merge of ``y`` (B, 4, C, H*W) with ``impl`` ("function", "triton" or "numba"):
    (B, C, H*W)."""
    if impl == "triton":
        from vmunet.ops.cross_scan_triton import CrossMergeTritonFn

        return CrossMergeTritonFn.apply(y, H, W)
    if impl == "numba":
        from vmunet.ops.cross_scan_numba import CrossMergeNumbaFn

        return CrossMergeNumbaFn.apply(y, H, W)
    if impl == "function":
        return CrossMergeFn.apply(y, H, W)
    raise ValueError(f"cross_merge_fused: impl must be 'function', 'triton' or 'numba', got {impl!r}")

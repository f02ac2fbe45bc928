"""Where a training step's time goes: torch.profiler records sorted into a few categories
(benchmarks/gpu_check.py, section ``profile``; issue 13 point 4: does the pure-PyTorch
cross-scan/merge or a layout copy cost a visible share of a step?).

A record is (name, ops, microseconds): on a GPU, one CUDA kernel (its name) with the CPU ops that
launched it (innermost first: ``aten::copy_``, ``aten::clone``, ..., an autograd node such as
``CrossScanFnBackward``, ``Optimizer.step#AdamW.step``); on a CPU, one op's self time, the op's
own name first in ``ops``. :func:`categorize` reads both: a kernel's name alone does not say what
launched it (a ``direct_copy_kernel_cuda`` may be a cross-scan, a permute's ``.contiguous()`` or a
dtype cast), the ops above it do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: the categories, in the order of the report's table
CATEGORIES: tuple[str, ...] = ("selective_scan", "cross_scan_merge", "layout_copy", "dtype_cast", "matmul",
                               "conv", "norm", "elementwise", "optimizer", "other")

_I = re.IGNORECASE
# the compiled mamba kernels (selective_scan_fwd_kernel<...>), vmunet's Triton scan kernels
_SCAN_KERNEL = re.compile(r"selective_scan|_scan_(fwd|bwd)_kernel", _I)
# the wrappers: vmunet's "cuda" autograd Function, the Triton/torch backends' Functions
_SCAN_OP = re.compile(r"selective_?scan|_TritonScan", _I)
_OPTIMIZER = re.compile(r"Optimizer\.(step|zero_grad)|multi_tensor_apply|_foreach_|fused_adam", _I)
# the fused Functions (CrossScanFn, CrossMergeFn and their Backward), the Triton kernel, and the
# vmunet::cross_scan / vmunet::cross_merge labels gpu_check puts around the calls
_CROSS = re.compile(r"cross_?scan|cross_?merge|_cross_kernel", _I)
_CAST_OP = re.compile(r"^aten::(_to_copy|to)$")
_COPY_KERNEL = re.compile(r"direct_copy_kernel|copy_kernel|memcpy|CatArrayBatchedCopy|flip_kernel|"
                          r"transpose|permute", _I)
_COPY_OP = re.compile(r"^aten::(copy_|clone|contiguous|flip|cat|stack|roll|_reshape_copy|index_select)$")
_CONV_KERNEL = re.compile(r"conv|fprop|dgrad|wgrad|winograd|implicit_gemm|cudnn|depthwise", _I)
_CONV_OP = re.compile(r"conv|ConvolutionBackward", _I)
_MM_KERNEL = re.compile(r"gemm|gemv|xmma|cutlass|cublas|nvjet|matmul", _I)
_MM_OP = re.compile(r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|addmv)$|^(Mm|Addmm|Bmm|Baddbmm)Backward", _I)
_NORM = re.compile(r"layer_?norm|group_?norm|batch_?norm|instance_?norm|rms_?norm|GammaBeta|cuComputeGradInput|"
                   r"RowwiseMoments|ComputeFusedParams|Welford", _I)
_ELEMENTWISE = re.compile(r"elementwise|vectorized|unrolled|reduce|gelu|silu|sigmoid|softplus|softmax|relu|tanh|"
                          r"activation|fill|bernoulli|dropout|^aten::(add|sub|mul|div|exp|neg|pow|sum|mean|where|"
                          r"zero_|fill_|abs|sqrt|rsqrt|log|clamp|cumsum)", _I)


def categorize(name: str, ops: Sequence[str] = ()) -> str:
    """The category (one of :data:`CATEGORIES`) of a kernel (or CPU op) ``name`` launched under the
    CPU ops ``ops`` (innermost first; may be empty). First match wins:

    1. a selective-scan kernel by name; 2. anything under the optimizer; 3. anything under
    cross-scan/merge (its copies included: that is the cost a fused cross-scan removes);
    4. a dtype cast (under ``aten::to``/``aten::_to_copy``: autocast's casts); 5. a layout copy:
    a copy kernel, or an innermost op that copies (``copy_``, ``clone``, ``contiguous``, ``cat``,
    ``flip``, ...); 6. conv, 7. matmul, 8. norm, by the kernel's name or any op above it;
    9. the rest of a selective-scan wrapper (the "torch" backend's arithmetic, the CPU stand-in);
    10. elementwise/activation/reduction; 11. other.
    """
    chain = tuple(ops)
    inner = chain[0] if chain else ""
    if _SCAN_KERNEL.search(name):
        return "selective_scan"
    if _OPTIMIZER.search(name) or any(_OPTIMIZER.search(o) for o in chain):
        return "optimizer"
    if _CROSS.search(name) or any(_CROSS.search(o) for o in chain):
        return "cross_scan_merge"
    if _CAST_OP.match(name) or any(_CAST_OP.match(o) for o in chain):
        return "dtype_cast"
    if _COPY_KERNEL.search(name) or _COPY_OP.match(name) or _COPY_OP.match(inner):
        return "layout_copy"
    for cat, kernel, op in (("conv", _CONV_KERNEL, _CONV_OP), ("matmul", _MM_KERNEL, _MM_OP), ("norm", _NORM, _NORM)):
        if kernel.search(name) or any(op.search(o) for o in chain):
            return cat
    if _SCAN_OP.search(name) or any(_SCAN_OP.search(o) for o in chain):
        return "selective_scan"
    if _ELEMENTWISE.search(name) or _ELEMENTWISE.search(inner):
        return "elementwise"
    return "other"


def summarize(records: Iterable[tuple[str, Sequence[str], float]], top: int = 10) -> dict:
    """Per-category microseconds and shares (of the records' total), and the ``top`` (name,
    category) pairs by time summed over their records (one kernel, e.g. a copy, may be a layout copy
    in one place and part of the cross-scan in another: two entries)."""
    by_cat = dict.fromkeys(CATEGORIES, 0.0)
    by_name: dict[tuple[str, str], list] = {}
    for name, ops, us in records:
        cat = categorize(name, ops)
        by_cat[cat] += us
        entry = by_name.setdefault((name, cat), [0.0, 0])
        entry[0] += us
        entry[1] += 1
    total = sum(by_cat.values())
    share = (lambda us: round(us / total, 4)) if total > 0 else (lambda us: 0.0)
    tops = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {"total_us": round(total, 1),
            "categories": {c: {"us": round(us, 1), "share": share(us)} for c, us in by_cat.items()},
            "top": [{"name": n[:300], "category": cat, "us": round(us, 1), "calls": calls, "share": share(us)}
                    for (n, cat), (us, calls) in tops]}


def _chain(event) -> tuple[str, ...]:
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    return tuple(names)


def profiler_records(events, on_cuda: bool) -> tuple[list[tuple[str, tuple[str, ...], float]], dict]:
    """Records from ``torch.profiler.profile(...).events()``, and how complete they are.

    CUDA: every kernel attached to the CPU op that launched it (``FunctionEvent.kernels``, the
    profiler's correlation), with that op's chain; ``coverage`` = their time / the time of every
    device-side event. Should the correlation attach nothing, the device events themselves are
    used with no ops (categories from kernel names alone; ``linked`` says so). CPU: every op's
    self time, its own name first in the chain."""
    from torch.autograd import DeviceType

    records: list[tuple[str, tuple[str, ...], float]] = []
    if not on_cuda:
        for e in events:
            if e.device_type == DeviceType.CPU and e.self_cpu_time_total > 0:
                records.append((e.name, _chain(e), float(e.self_cpu_time_total)))
        return records, {"linked": True, "coverage": 1.0}
    device = [e for e in events if e.device_type == DeviceType.CUDA]
    device_us = sum(e.time_range.end - e.time_range.start for e in device)
    for e in events:
        # a "legacy" event carries its own CUDA time as a kernel of its own name: not a kernel
        if e.device_type == DeviceType.CPU and e.kernels and not getattr(e, "is_legacy", False):
            chain = _chain(e)
            records.extend((k.name, chain, float(k.duration)) for k in e.kernels)
    linked = bool(records)
    if not linked:
        records = [(e.name, (), float(e.time_range.end - e.time_range.start)) for e in device]
    got = sum(r[2] for r in records)
    return records, {"linked": linked, "device_us": round(device_us, 1),
                     "coverage": round(got / device_us, 4) if device_us else 0.0}

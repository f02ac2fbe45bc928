"""Model size, compute and memory: parameters, MACs/FLOPs (including the selective scan) and
measured peak memory.

Generic counters (``torch.utils.flop_counter``, fvcore, thop) only see matmuls and convolutions, so
they miss the selective scan, which is elementwise work over a (B, K*d_inner, L, N) state. Its cost
is counted here from the shapes of each scan call, per (batch, channel, step, state) element:
``exp(delta*A)`` argument (1 mul), ``delta*u*B`` (1 mul, with ``delta*u`` shared over N), the state
update ``h = dA*h + dBu`` (1 MAC) and the read-out ``y += C*h`` (1 MAC); per (batch, channel, step):
``delta*u`` and the ``D*u`` skip (1 each). So 4·B·D·L·N + 2·B·D·L MACs; exp/softplus are not
counted, as in fvcore and VMamba's own ``flops_selective_scan_ref``.

MACs are what papers (VM-UNet included) report as "FLOPs"; ``flops`` here is 2 × MACs.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from vmunet.layers import SCAN_MODULES


def scan_macs(batch: int, dim: int, length: int, d_state: int) -> int:
    """MACs of one selective scan over (batch, dim, length) with state size d_state."""
    return 4 * batch * dim * length * d_state + 2 * batch * dim * length


@dataclass
class ComputeReport:
    """Multiply-accumulates of one forward pass, split into matmul/conv work and the scan."""

    input_shape: tuple[int, ...]
    macs_total: int
    macs_scan: int
    macs_matmul: int
    macs_conv: int

    @property
    def flops_total(self) -> int:
        return 2 * self.macs_total


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> ComputeReport:
    """Count MACs of ``model`` on an input of ``input_shape`` without computing anything.

    The model is copied to the meta device; each SS2D's and Mamba block's scan call is replaced
    by a shape-only stand-in that adds ``scan_macs`` of its arguments.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    scan_total = 0

    def counting_scan(u: Tensor, delta: Tensor, A: Tensor, *args: Any) -> Tensor:
        nonlocal scan_total
        scan_total += scan_macs(u.shape[0], u.shape[1], u.shape[2], A.shape[1])
        return torch.empty_like(u)

    for m in meta.modules():
        if isinstance(m, SCAN_MODULES):
            m.selective_scan = counting_scan  # instance attribute shadows the method
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(input_shape, device="meta"))
    by_op = counter.get_flop_counts().get("Global", {})
    conv = sum(v for op, v in by_op.items() if "convolution" in str(op)) // 2
    total_counted = counter.get_total_flops() // 2
    return ComputeReport(tuple(input_shape), total_counted + scan_total, scan_total,
                         total_counted - conv, conv)


def _proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Give memory freed earlier back to the OS (glibc ``malloc_trim``), so that reusing it does
    not hide the growth being measured; a no-op where glibc is not available."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    try:  # Linux: writing 5 to clear_refs resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_memory(model: nn.Module, input_shape: tuple[int, ...], train: bool = False
                        ) -> int | None:
    """Peak resident-memory increase (bytes) of one CPU forward (``train=False``, under
    ``torch.inference_mode``) or forward+backward (``train=True``) on random input.

    Measured from the process's resident-set high-water mark (Linux ``/proc``), so it includes
    allocator overhead; ``None`` where that is not available.
    """
    if not sys.platform.startswith("linux"):
        return None
    was_training = model.training

    def run(x: Tensor) -> None:
        if train:
            model.train()
            model(x).float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.inference_mode():
                model(x)

    try:
        # a tiny warm-up first, so one-off lazy initialisation (kernels, thread pools, imported
        # scan backends) is not counted; batch 2, as BatchNorm (VM-UNet-V2) cannot train on
        # one value per channel
        m = int(getattr(model, "size_multiple", 32))
        run(torch.randn(2, input_shape[1], m, m))
        x = torch.randn(input_shape)
        gc.collect()
        _release_free_heap()
        before = _proc_status_kib("VmRSS")
        if before is None or not _reset_rss_peak():
            return None
        run(x)
    finally:
        model.train(was_training)
    peak = _proc_status_kib("VmHWM")
    return None if peak is None else max(0, peak - before) * 1024


@dataclass
class ModelSummary:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    params: int
    param_bytes: int
    macs_total: int
    macs_scan: int
    macs_matmul: int
    macs_conv: int
    peak_inference_bytes: int | None = None
    peak_train_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(model: nn.Module, input_shape: tuple[int, ...], name: str = "",
              measure_memory: bool = True) -> ModelSummary:
    """Parameters, MACs (with the scan's share) and, optionally, measured peak memory."""
    params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    c = count_macs(model, input_shape)
    s = ModelSummary(name or type(model).__name__, tuple(input_shape),
                     int(getattr(model, "num_classes", 0)), params, param_bytes,
                     c.macs_total, c.macs_scan, c.macs_matmul, c.macs_conv)
    if measure_memory:
        s.peak_inference_bytes = measure_peak_memory(model, input_shape, train=False)
        s.peak_train_bytes = measure_peak_memory(model, input_shape, train=True)
    return s


def format_summary(s: ModelSummary) -> str:
    """A small markdown table of a ``ModelSummary``."""
    def mib(b: int | None) -> str:
        return "n/a" if b is None else f"{b / 2**20:,.1f} MiB"

    B, C, H, W = s.input_shape
    rows = [
        ("model", s.name),
        ("input -> output", f"{B}x{C}x{H}x{W} -> num_classes={s.num_classes}"),
        ("parameters", f"{s.params:,} ({mib(s.param_bytes)})"),
        ("GMACs (papers' \"FLOPs\")", f"{s.macs_total / 1e9:.3f}"),
        ("  selective scan", f"{s.macs_scan / 1e9:.3f} ({100 * s.macs_scan / max(s.macs_total, 1):.1f}%)"),
        ("  matmul (linear, x/dt proj)", f"{s.macs_matmul / 1e9:.3f}"),
        ("  convolution", f"{s.macs_conv / 1e9:.3f}"),
        ("GFLOPs (2 x MACs)", f"{2 * s.macs_total / 1e9:.3f}"),
        ("peak RSS growth, one forward", mib(s.peak_inference_bytes)),  # above the weights already loaded
        ("peak RSS growth, one train step", mib(s.peak_train_bytes)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'quantity'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)

"""Timing and comparison helpers shared by the GPU checks (benchmarks/gpu_check.py,
benchmarks/gpu_triton_check.py): one definition of "median ms", of a selective scan's forward and
forward+backward time, and of "rel" for every table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from vmunet.ops import selective_scan


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU), so a wall clock measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ms(device: torch.device, fn: Callable[[], object], reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` calls after one untimed warm-up call (which
    also JIT-compiles): CUDA events on a GPU (device time of the queued work), else the wall clock."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        if torch.device(device).type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def scan_ms(device: torch.device, ins: dict[str, torch.Tensor], backend: str, reps: int) -> tuple[float, float]:
    """Median ms (:func:`time_ms`) of ``selective_scan(**ins, delta_softplus=True, backend=backend)``:
    the forward under ``no_grad``, then forward + backward of the output's sum with a gradient for
    every input (``ins`` itself is left as it is: the gradients go to detached views of it)."""
    leaves = {k: v.detach().requires_grad_() for k, v in ins.items()}

    def fwd() -> None:
        with torch.no_grad():
            selective_scan(**ins, delta_softplus=True, backend=backend)

    def fwd_bwd() -> None:
        selective_scan(**leaves, delta_softplus=True, backend=backend).sum().backward()

    return time_ms(device, fwd, reps), time_ms(device, fwd_bwd, reps)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ``||a - b|| / ||b||`` over the whole tensor, in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))

"""Timing and comparison helpers shared by the GPU checks (benchmarks/gpu_check.py,
benchmarks/gpu_triton_check.py): one definition of "median ms" and of "rel" for every table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ``||a - b|| / ||b||`` over the whole tensor, in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))

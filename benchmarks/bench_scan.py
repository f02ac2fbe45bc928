"""Selective-scan benchmark at VM-UNet's stage shapes for a 256x256 (or ``--input-size``) input.

For each stage (C = 96, 192, 384, 768 channels; L = 64^2, 32^2, 16^2, 8^2 tokens at 256x256) the scan runs
over dim = 4 directions x 2C channels with N = 16 states and B/C grouped by direction (G = 4),
with D, delta_bias and softplus on, as in VMamba's SS2D. For every available CPU backend it
prints forward and forward+backward time (best of the repeats), their ratio (the cost of a
training step's scan relative to inference; target <= 3.5 at stage 1), the speed-up over "ref"
measured in the same run, the peak memory of one forward+backward, and the largest absolute
difference of the output to "ref".

Peak memory is the growth of the resident set size at its peak during one forward+backward, in a
fresh subprocess per case, after the inputs exist and the backend is warmed up on a tiny shape
(Linux: the kernel's high-water mark VmHWM is reset through /proc/self/clear_refs, then read).
It counts every allocation (torch, numba, numpy) but not the inputs themselves.

    python benchmarks/bench_scan.py            # batch 1 and 8, 3 repeats
    python benchmarks/bench_scan.py --quick    # batch 1 only, fewer repeats (a few minutes)
    python benchmarks/bench_scan.py --input-size 224 --stages 1 --threads 1 --no-memory   # the ratio target
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when imported as benchmarks.bench_scan
from _common import md_table, print_report  # noqa: E402  (benchmarks/_common.py)

from vmunet.ops import numba_available, selective_scan  # noqa: E402

STAGES = [(96, 64), (192, 32), (384, 16), (768, 8)]  # (C, H = W of the token map at 256x256)


def stages_for(input_size: int) -> list[tuple[int, int]]:
    """(C, token-map side) of the four stages for a square input (patch size 4, then halving)."""
    return [(C, input_size // (4 * 2**i)) for i, (C, _) in enumerate(STAGES)]
N_STATE = 16
DIRECTIONS = 4


def make_inputs(batch: int, dim: int, L: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs with Mamba's initialisation: A = -[1..N], dt in [1e-3, 1e-1] through delta_bias."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return dict(
        u=torch.randn(batch, dim, L, generator=g),
        delta=torch.randn(batch, dim, L, generator=g) * 0.1,
        A=-torch.arange(1, N_STATE + 1, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(batch, DIRECTIONS, N_STATE, L, generator=g),
        C=torch.randn(batch, DIRECTIONS, N_STATE, L, generator=g),
        D=torch.ones(dim),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),  # softplus^-1(dt)
    )


def run(backend: str, ins: dict[str, torch.Tensor], backward: bool) -> torch.Tensor:
    if not backward:
        with torch.no_grad():
            return selective_scan(**ins, delta_softplus=True, backend=backend)
    leaves = {k: v.clone().requires_grad_() for k, v in ins.items()}
    out = selective_scan(**leaves, delta_softplus=True, backend=backend)
    out.square().mean().backward()
    return out.detach()


#: Clock of the timings: wall time, or with --cpu-time the process's CPU time (all threads), which
#: a busy shared machine inflates far less than wall time (its other jobs do not count).
CLOCK: Callable[[], float] = time.perf_counter


def best_time(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    if numba_available():
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_peak_growth_mib(fn: Callable[[], object]) -> float:
    """Peak resident-set growth while ``fn`` runs: the kernel's high-water mark is reset to the
    current RSS first (Linux /proc/self/clear_refs), then read back (VmHWM)."""
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def peak_memory_mib(backend: str, batch: int, dim: int, L: int) -> float:
    """Peak RSS growth of one forward+backward in a fresh process (see module docstring)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "\n".join([
        "import json, sys",
        f"sys.path.insert(0, {root!r})",
        "from benchmarks.bench_scan import make_inputs, measure_peak_growth_mib, run, set_threads",
        f"set_threads({torch.get_num_threads()})",
        f"ins = make_inputs({batch}, {dim}, {L})",
        f"run({backend!r}, make_inputs(1, 8, 8), True)",  # compile / warm up at a tiny shape
        f"print(json.dumps(measure_peak_growth_mib(lambda: run({backend!r}, ins, True))))",
    ])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def bench_case(batch: int, C: int, side: int, backends: list[str], repeats: int, ref_repeats: int,
               memory: bool) -> list[dict]:
    dim, L = DIRECTIONS * 2 * C, side * side
    ins = make_inputs(batch, dim, L)
    rows = []
    ref_out = None
    for backend in backends:
        reps, warm = (ref_repeats, 0) if backend == "ref" else (repeats, 1)
        t_fwd = best_time(lambda b=backend: run(b, ins, False), reps, warm)
        t_bwd = best_time(lambda b=backend: run(b, ins, True), reps, warm)
        out = run(backend, ins, False)
        if backend == "ref":
            ref_out = out
        row = dict(batch=batch, dim=dim, L=L, backend=backend, fwd=t_fwd, fwd_bwd=t_bwd,
                   diff=float((out - ref_out).abs().max()),
                   mem=peak_memory_mib(backend, batch, dim, L) if memory else float("nan"))
        rows.append(row)
    t_ref = {k: rows[0][k] for k in ("fwd", "fwd_bwd")}
    for row in rows:
        row["fwd_x"] = t_ref["fwd"] / row["fwd"]
        row["fwd_bwd_x"] = t_ref["fwd_bwd"] / row["fwd_bwd"]
        row["bwd_ratio"] = row["fwd_bwd"] / row["fwd"]
    return rows


def markdown(rows: list[dict]) -> str:
    header = ["batch", "dim", "L", "backend", "fwd ms", "fwd speed-up", "fwd+bwd ms", "fwd+bwd speed-up",
              "fwd+bwd / fwd", "peak MiB (fwd+bwd)", "max abs diff to ref"]
    return "\n".join(md_table(header, (
        [r["batch"], r["dim"], r["L"], r["backend"], f"{r['fwd'] * 1e3:.1f}", f"{r['fwd_x']:.1f}x",
         f"{r['fwd_bwd'] * 1e3:.1f}", f"{r['fwd_bwd_x']:.1f}x", f"{r['bwd_ratio']:.2f}",
         "n/a" if math.isnan(r["mem"]) else f"{r['mem']:.0f}", f"{r['diff']:.1e}"] for r in rows)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 1 only, fewer repeats")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default: 1 8; --quick: 1)")
    p.add_argument("--backends", nargs="+", help="backends to time besides 'ref' (default: all CPU ones)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--input-size", type=int, default=256, help="image side the stage shapes derive from")
    p.add_argument("--stages", type=int, nargs="+", choices=[1, 2, 3, 4], help="stages to run (default: all)")
    p.add_argument("--threads", type=int,
                   help="torch and numba threads (default: torch's default); 1 is steadier on a busy machine")
    p.add_argument("--repeats", type=int, help="timed repeats per case (default 3; --quick: 2)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process's CPU time instead of wall time (steadier on a busy machine)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time

    torch.manual_seed(0)
    if args.threads:
        set_threads(args.threads)
    batches = args.batches or ([1] if args.quick else [1, 8])
    backends = ["ref"] + (args.backends or (["torch"] + (["numba"] if numba_available() else [])))
    repeats = args.repeats or (2 if args.quick else 3)
    rows = []
    for batch in batches:
        for i, (C, side) in enumerate(stages_for(args.input_size), start=1):
            if args.stages and i not in args.stages:
                continue
            # ref steps through L in Python: one timing is plenty, and the large cases are slow
            ref_repeats = 1 if (args.quick or batch * side * side >= 4096) else 2
            rows += bench_case(batch, C, side, backends, repeats, ref_repeats, not args.no_memory)
            print(f"done batch={batch} C={C}", file=sys.stderr, flush=True)
    header = (f"selective scan, {args.input_size}x{args.input_size} input, float32, N={N_STATE}, G={DIRECTIONS}, "
              f"D + delta_bias + softplus; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {repeats}, "
              f"{'CPU' if args.cpu_time else 'wall'} time")
    print_report(header, [markdown(rows)], rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

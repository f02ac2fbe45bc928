"""VM-UNet speed and memory on CPU: img/s and peak memory per selective-scan backend.

For the paper model (``vmunet``, 9 classes, 1 input channel as for Synapse CT) it measures
inference (forward under ``torch.inference_mode``) and training (forward + backward of a
mean-square loss) at 224x224 and 256x256, batch 1 and 8, for every available CPU backend.
The "ref" backend (a Python loop over the H*W steps) is measured only for batch-1 inference:
it is the readable definition of the scan, far too slow for anything else. "vs ref" is the
speed-up over "ref" measured in the same run at the same size. The pseudo-backend "noop" is the
same model with every selective scan replaced by the identity (``y = u``): the floor that a faster
scan could reach, everything else unchanged.

After the table come the ratios the CPU targets are stated in, each between two rows of this run
(from CPU time, the steadier number on a shared machine; wall time in brackets): inference over
"noop" inference (target <= 1.5), training step over inference (<= 3.0) and per-image time at
the largest batch over batch 1 (<= 1.15).

Each case runs in a fresh subprocess: model built, a tiny warm-up (kernel/JIT compilation,
lazy imports), then ``--repeats`` timed full-size calls; the best wall time and the best CPU
time (``time.process_time``, all threads) are reported — on a shared machine the CPU time is
the steadier number. Peak memory is the growth of the maximum resident set size
(``ru_maxrss``) over the first full-size call (activations, workspace and allocator overhead,
not the weights); "peak RSS" is the whole process's; "page faults / call" counts the minor page
faults of one repeated call (median over the repeats): memory that the allocator handed back to
the OS after the previous call and the next call maps and zeroes again.

    python benchmarks/bench_model.py --quick      # 224x224, batch 1 only
    python benchmarks/bench_model.py              # 224 and 256, batch 1 and 8
    python benchmarks/bench_model.py --profile    # where the time of one 224x224 forward goes
    python benchmarks/bench_model.py --sizes 224 --backends numba noop --threads 2   # the ratios
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # also when imported as benchmarks.bench_model
from _common import md_table, print_report  # noqa: E402  (benchmarks/_common.py)

MODEL = "vmunet"
NUM_CLASSES, IN_CHANS = 9, 1


def _noop_scan(u, delta, A, B, C, D, delta_bias):
    """Stand-in for SS2D.selective_scan in the "noop" rows: the identity, so the graph stays intact."""
    return u


def _case(backend: str, size: int, batch: int, train: bool, repeats: int, threads: int) -> dict:
    """Runs inside the subprocess: one case, returned as a dict."""
    import resource

    import torch

    from vmunet.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=NUM_CLASSES, in_chans=IN_CHANS,
                         scan_backend="torch" if backend == "noop" else backend)
    if backend == "noop":
        for mod in model.modules():
            if hasattr(mod, "selective_scan") and hasattr(mod, "forward_core"):  # SS2D
                mod.selective_scan = _noop_scan
    model.train(train)

    def step(x: torch.Tensor) -> None:
        if train:
            model(x).square().mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                model(x)

    step(torch.randn(1, IN_CHANS, 32, 32))
    x = torch.randn(batch, IN_CHANS, size, size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times, faults = [], [], []
    for i in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0, c0 = time.perf_counter(), time.process_time()
        step(x)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        if i == 0:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    best = min(times)
    return {"backend": backend, "size": size, "batch": batch, "mode": "train" if train else "infer",
            "seconds": best, "cpu_seconds": min(cpu_times), "img_per_s": batch / best,
            "peak_mib": peak_kib / 1024,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            # page faults of a repeated call: memory the allocator returned to the OS after the
            # previous call and maps (and zeroes) again; the median over the repeats
            "faults": sorted(faults)[len(faults) // 2]}


def run_case(backend: str, size: int, batch: int, train: bool, repeats: int, threads: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {ROOT!r}); from benchmarks.bench_model import _case; "
            f"print(json.dumps(_case({backend!r}, {size}, {batch}, {train}, {repeats}, {threads})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"case {backend}/{size}/{batch}/train={train} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_backends() -> list[str]:
    from vmunet.ops import BACKENDS, cuda_available, numba_available

    ok = {"ref": True, "torch": True, "numba": numba_available(), "cuda": cuda_available()}
    return [b for b in BACKENDS if ok.get(b, False) and b != "cuda"] + ["noop"]  # CPU benchmark


def markdown_table(rows: list[dict]) -> str:
    ref = {(r["size"], r["batch"], r["mode"]): r["seconds"] for r in rows if r["backend"] == "ref"}
    header = ["input", "batch", "mode", "backend", "s / batch", "CPU s / batch", "img/s", "peak memory (MiB)",
              "peak RSS (MiB)", "page faults / call", "vs ref"]
    cells = []
    for r in rows:
        key = (r["size"], r["batch"], r["mode"])
        cells.append([f"{r['size']}x{r['size']}", r["batch"], r["mode"], r["backend"], f"{r['seconds']:.3f}",
                      f"{r['cpu_seconds']:.3f}", f"{r['img_per_s']:.2f}", f"{r['peak_mib']:.0f}",
                      f"{r['peak_rss_mib']:.0f}", f"{r['faults']:,}",
                      f"{ref[key] / r['seconds']:.1f}x" if key in ref else "—"])
    return "\n".join(md_table(header, cells))


def ratio_table(rows: list[dict]) -> str:
    """The target ratios, each between two rows of this run (CPU time; wall time in brackets)."""
    by = {(r["backend"], r["size"], r["batch"], r["mode"]): r for r in rows}

    def ratio(a: dict | None, b: dict | None, per_image: bool = False) -> str:
        if a is None or b is None:
            return "—"
        na, nb = (a["batch"], b["batch"]) if per_image else (1, 1)
        cpu = (a["cpu_seconds"] / na) / (b["cpu_seconds"] / nb)
        wall = (a["seconds"] / na) / (b["seconds"] / nb)
        return f"{cpu:.2f} ({wall:.2f})"

    header = ["input", "backend", "inference / no-op inference (<= 1.5)", "training / inference (<= 3.0)",
              "per image, batch max / batch 1: inference, training (<= 1.15)"]
    cells = []
    for backend, size in sorted({(r["backend"], r["size"]) for r in rows if r["backend"] not in ("ref", "noop")}):
        big = max(r["batch"] for r in rows if r["backend"] == backend and r["size"] == size)
        get = by.get
        per_image = (f"{ratio(get((backend, size, big, 'infer')), get((backend, size, 1, 'infer')), True)}, "
                     f"{ratio(get((backend, size, big, 'train')), get((backend, size, 1, 'train')), True)}"
                     if big > 1 else "—")
        cells.append([f"{size}x{size}", backend,
                      ratio(get((backend, size, 1, "infer")), get(("noop", size, 1, "infer"))),
                      ratio(get((backend, size, 1, "train")), get((backend, size, 1, "infer"))), per_image])
    return "\n".join(md_table(header, cells))


# ------------------------------------------------------------------------------------------
# --profile: where the time of one forward goes
# ------------------------------------------------------------------------------------------
def profile_forward(backend: str, size: int, threads: int) -> str:
    """Profile one inference forward and split its time into scan / cross-scan / layers."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import vmunet.layers.ss2d as ss2d_mod
    from vmunet.models import create_model

    torch.set_num_threads(threads)

    def labelled(fn, label):
        def wrapper(*args, **kwargs):
            with record_function(label):
                return fn(*args, **kwargs)
        return wrapper

    # benchmark-only labels around the SS2D internals (the library has no profiler hooks)
    ss2d_mod.SS2D.selective_scan = labelled(ss2d_mod.SS2D.selective_scan, "vmunet::selective_scan")
    ss2d_mod.cross_scan = labelled(ss2d_mod.cross_scan, "vmunet::cross_scan")
    ss2d_mod.cross_merge = labelled(ss2d_mod.cross_merge, "vmunet::cross_merge")
    categories = {
        "vmunet::selective_scan": "selective scan",
        "vmunet::cross_scan": "cross-scan",
        "vmunet::cross_merge": "cross-merge",
        "aten::linear": "linear layers (in/out proj, patch merge/expand)",
        "aten::matmul": "x_proj / dt_proj (batched matmul)",
        "aten::layer_norm": "LayerNorm",
        "aten::conv2d": "convolutions (depthwise 3x3, patch embed, head)",
        "aten::silu": "SiLU",
    }
    model = create_model(MODEL, num_classes=NUM_CLASSES, in_chans=IN_CHANS, scan_backend=backend).eval()
    x = torch.randn(1, IN_CHANS, size, size)
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        model(x)
        plain = time.perf_counter() - t0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            model(x)
            profiled = time.perf_counter() - t0
    totals = dict.fromkeys(categories.values(), 0.0)
    for ev in prof.events():
        if ev.name not in categories:
            continue
        parent, nested = ev.cpu_parent, False
        while parent is not None:
            if parent.name in categories:
                nested = True
                break
            parent = parent.cpu_parent
        if not nested:
            totals[categories[ev.name]] += ev.cpu_time_total / 1e6
    other = max(0.0, profiled - sum(totals.values()))
    parts = [*sorted(totals.items(), key=lambda kv: -kv[1]), ("other (adds, permutes, copies, pad/crop, Python)", other)]
    return "\n".join([f"One {size}x{size} forward of `{MODEL}` (batch 1, backend {backend!r}, {threads} threads): "
                      f"{plain:.3f} s unprofiled, {profiled:.3f} s under the profiler.", "",
                      *md_table(["part", "seconds", "share"],
                                ([name, f"{sec:.3f}", f"{100 * sec / profiled:.1f}%"] for name, sec in parts))])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="224x224, batch 1 only")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--backends", nargs="+", default=None, help="default: all available CPU backends")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-train", action="store_true", help="inference only")
    p.add_argument("--profile", action="store_true", help="profile one forward instead")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    import torch

    threads = args.threads or torch.get_num_threads()
    backends = args.backends or available_backends()
    if args.profile:
        for b in [b for b in backends if b not in ("ref", "noop")]:
            print(profile_forward(b, args.sizes[0], threads), "\n")
        return 0
    sizes, batches = ([224], [1]) if args.quick else (args.sizes, args.batches)
    repeats = 2 if args.quick else args.repeats
    rows = []
    for size in sizes:
        for batch in batches:
            for train in ([False] if args.no_train else [False, True]):
                for b in backends:
                    if b == "ref" and (train or batch > 1):
                        continue  # the step-by-step loop is only for reference timing
                    r = run_case(b, size, batch, train, 1 if b == "ref" else repeats, threads)
                    rows.append(r)
                    print(f"  {b:6s} {size} b{batch} {r['mode']}: {r['seconds']:.3f} s", file=sys.stderr)
    header = (f"`{MODEL}` ({NUM_CLASSES} classes, {IN_CHANS} input channel), torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads} threads; "
              f"best of {repeats} (ref: 1 run, batch-1 inference only)")
    print_report(header, [markdown_table(rows), ratio_table(rows)], rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""VM-UNet speed and memory on CPU: img/s and peak memory per selective-scan backend.

For the paper model (``vmunet``, 9 classes, 1 input channel as for Synapse CT; ``--models`` names
others, each with its data set's channels: :data:`TASKS`) it measures inference (forward under
``torch.inference_mode``) and training (forward + backward of a mean-square loss; with
``--adamw`` also the optimiser step, AdamW as the training module builds it: lr 1e-3, weight decay
1e-2, fused) at 224x224 and 256x256, batch 1 and 8, for every available CPU backend. With more
than one model, a last table gives each model's img/s over the first model's (``vmunet`` by
default), measured in the same run with the same backend, size, batch and mode.
The "ref" backend (a Python loop over the H*W steps) is measured only for batch-1 inference:
it is the readable definition of the scan, far too slow for anything else. "vs ref" is the
speed-up over "ref" measured in the same run at the same size. The pseudo-backend "noop" is the
same model with every selective scan replaced by the identity (``y = u``): the floor that a faster
scan could reach, everything else unchanged.

After the table come the ratios the CPU targets are stated in, each between two rows of this run
(from CPU time, the steadier number on a shared machine; wall time in brackets): inference over
"noop" inference (target <= 1.5), training step over inference (<= 3.0) and per-image time at
the largest batch over batch 1 (<= 1.15).

The process settings of ``vmunet fit`` apply (``vmunet.runtime.apply_process_defaults``:
``OMP_WAIT_POLICY=PASSIVE`` and ``THP_MEM_ALLOC_ENABLE=1`` unless already set; the header names
them, with the nice value and the load average before and after the run). Each case runs in a
fresh subprocess: model built, a tiny warm-up (kernel/JIT compilation,
lazy imports), then ``--repeats`` timed full-size calls; the best wall time and the best CPU
time (``time.process_time``, all threads) are reported, and their medians over the repeats — on a shared machine the CPU time is
the steadier number. Peak memory is the growth of the maximum resident set size
(``ru_maxrss``) over the first full-size call (activations, workspace and allocator overhead,
not the weights); "peak RSS" is the whole process's; "page faults / call" counts the minor page
faults of one repeated call (median over the repeats): memory that the allocator handed back to
the OS after the previous call and the next call maps and zeroes again.

    python benchmarks/bench_model.py --quick      # 224x224, batch 1 only
    python benchmarks/bench_model.py              # 224 and 256, batch 1 and 8
    python benchmarks/bench_model.py --profile    # where the time of one 224x224 forward goes
    python benchmarks/bench_model.py --sizes 224 --backends numba noop --threads 2   # the ratios
    python benchmarks/bench_model.py --models ultralight_vmunet vmunet --sizes 256 --batches 8 \
        --backends numba torch --adamw --repeats 5      # UltraLight VM-UNet against the paper model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # also when imported as benchmarks.bench_model
from _common import md_table, print_report  # noqa: E402  (benchmarks/_common.py)

MODEL = "vmunet"
#: (classes, input channels) of each model's data set: Synapse CT (9, 1) unless named here
TASKS = {"ultralight_vmunet": (1, 3)}  # ISIC skin lesions: binary, RGB (its paper's task)
NUM_CLASSES, IN_CHANS = 9, 1


def task(model: str) -> tuple[int, int]:
    """(classes, input channels) the benchmark builds ``model`` with."""
    return TASKS.get(model, (NUM_CLASSES, IN_CHANS))


def _noop_scan(u, delta, A, B, C, D, *rest):
    """Stand-in for the selective_scan method of SS2D (its last argument delta_bias) and of the
    Mamba block (z, delta_bias) in the "noop" rows: the identity, so the graph stays intact."""
    return u


def _case(backend: str, size: int, batch: int, train: bool, repeats: int, threads: int,
          model_name: str = MODEL, adamw: bool = False) -> dict:
    """Runs inside the subprocess: one case, returned as a dict."""
    import resource

    import torch

    from vmunet.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    num_classes, in_chans = task(model_name)
    model = create_model(model_name, num_classes=num_classes, in_chans=in_chans,
                         scan_backend="torch" if backend == "noop" else backend)
    if backend == "noop":
        for mod in model.modules():
            if hasattr(mod, "selective_scan") and hasattr(mod, "scan_backend"):  # SS2D, Mamba
                mod.selective_scan = _noop_scan
    model.train(train)
    # as SegmentationModule.configure_optimizers builds it (the paper's settings, fused on CPU)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2, fused=True) if adamw else None

    def step(x: torch.Tensor) -> None:
        if train:
            model(x).square().mean().backward()
            if opt is not None:
                opt.step()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                model(x)

    step(torch.randn(1, in_chans, 32, 32))
    x = torch.randn(batch, in_chans, size, size)
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
    return {"model": model_name, "backend": backend, "size": size, "batch": batch,
            "mode": "train" if train else "infer", "optimizer": "AdamW" if adamw and train else None,
            "seconds": best, "cpu_seconds": min(cpu_times), "img_per_s": batch / best,
            "median_seconds": statistics.median(times), "median_cpu_seconds": statistics.median(cpu_times),
            "repeats": repeats,
            "peak_mib": peak_kib / 1024,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            # page faults of a repeated call: memory the allocator returned to the OS after the
            # previous call and maps (and zeroes) again; the median over the repeats
            "faults": sorted(faults)[len(faults) // 2]}


def run_case(backend: str, size: int, batch: int, train: bool, repeats: int, threads: int,
             model: str = MODEL, adamw: bool = False) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {ROOT!r}); from benchmarks.bench_model import _case; "
            f"print(json.dumps(_case({backend!r}, {size}, {batch}, {train}, {repeats}, {threads}, "
            f"{model!r}, {adamw})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"case {model}/{backend}/{size}/{batch}/train={train} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_backends() -> list[str]:
    from vmunet.ops import BACKENDS, cuda_available, numba_available

    ok = {"ref": True, "torch": True, "numba": numba_available(), "cuda": cuda_available()}
    return [b for b in BACKENDS if ok.get(b, False) and b != "cuda"] + ["noop"]  # CPU benchmark


def markdown_table(rows: list[dict]) -> str:
    ref = {(r.get("model", MODEL), r["size"], r["batch"], r["mode"]): r["seconds"] for r in rows
           if r["backend"] == "ref"}
    header = ["model", "input", "batch", "mode", "backend", "s / batch (min, median)", "CPU s / batch (min, median)",
              "img/s", "peak memory (MiB)", "peak RSS (MiB)", "page faults / call", "vs ref"]
    cells = []
    for r in rows:
        key = (r.get("model", MODEL), r["size"], r["batch"], r["mode"])
        mode = r["mode"] + (f" + {r['optimizer']}" if r.get("optimizer") else "")
        cells.append([key[0], f"{r['size']}x{r['size']}", r["batch"], mode, r["backend"],
                      f"{r['seconds']:.3f}, {r.get('median_seconds', r['seconds']):.3f}",
                      f"{r['cpu_seconds']:.3f}, {r.get('median_cpu_seconds', r['cpu_seconds']):.3f}",
                      f"{r['img_per_s']:.2f}", f"{r['peak_mib']:.0f}",
                      f"{r['peak_rss_mib']:.0f}", f"{r['faults']:,}",
                      f"{ref[key] / r['seconds']:.1f}x" if key in ref else "—"])
    return "\n".join(md_table(header, cells))


def _ratio(a: dict | None, b: dict | None, per_image: bool = False) -> str:
    """a's time over b's (per image with ``per_image``): CPU time, wall time in brackets."""
    if a is None or b is None:
        return "—"
    na, nb = (a["batch"], b["batch"]) if per_image else (1, 1)
    cpu = (a["cpu_seconds"] / na) / (b["cpu_seconds"] / nb)
    wall = (a["seconds"] / na) / (b["seconds"] / nb)
    return f"{cpu:.2f} ({wall:.2f})"


def ratio_table(rows: list[dict]) -> str:
    """The target ratios, each between two rows of this run (CPU time; wall time in brackets)."""
    by = {(r.get("model", MODEL), r["backend"], r["size"], r["batch"], r["mode"]): r for r in rows}
    header = ["model", "input", "backend", "inference / no-op inference (<= 1.5)", "training / inference (<= 3.0)",
              "per image, batch max / batch 1: inference, training (<= 1.15)"]
    cells = []
    for model, backend, size in sorted({(r.get("model", MODEL), r["backend"], r["size"]) for r in rows
                                        if r["backend"] not in ("ref", "noop")}):
        big = max(r["batch"] for r in rows
                  if r.get("model", MODEL) == model and r["backend"] == backend and r["size"] == size)
        small = min(r["batch"] for r in rows
                    if r.get("model", MODEL) == model and r["backend"] == backend and r["size"] == size)

        def get(*key: object, model: str = model) -> dict | None:
            return by.get((model, *key))

        per_image = (f"{_ratio(get(backend, size, big, 'infer'), get(backend, size, 1, 'infer'), True)}, "
                     f"{_ratio(get(backend, size, big, 'train'), get(backend, size, 1, 'train'), True)}"
                     if big > 1 else "—")
        cells.append([model, f"{size}x{size}", backend,
                      _ratio(get(backend, size, small, "infer"), get("noop", size, small, "infer")),
                      _ratio(get(backend, size, small, "train"), get(backend, size, small, "infer")), per_image])
    return "\n".join(md_table(header, cells))


def model_ratio_table(rows: list[dict], models: list[str]) -> str:
    """Each model's img/s over the first model's, at the same backend, size, batch and mode: from
    the best CPU times, the best wall times in brackets (both from this run)."""
    base = models[0]
    by = {(r["model"], r["backend"], r["size"], r["batch"], r["mode"]): r for r in rows}
    header = ["model", "input", "batch", "mode", "backend", f"img/s over `{base}`'s: CPU (wall)"]
    cells = []
    for r in rows:
        if r["model"] == base:
            continue
        other = by.get((base, r["backend"], r["size"], r["batch"], r["mode"]))
        mode = r["mode"] + (f" + {r['optimizer']}" if r.get("optimizer") else "")
        cells.append([r["model"], f"{r['size']}x{r['size']}", r["batch"], mode, r["backend"],
                      _ratio(other, r)])  # base time / model time = model img/s / base img/s
    return "\n".join(md_table(header, cells))


# ------------------------------------------------------------------------------------------
# --profile: where the time of one forward goes
# ------------------------------------------------------------------------------------------
def profile_forward(backend: str, size: int, threads: int, model_name: str = MODEL) -> str:
    """Profile one inference forward and split its time into scan / cross-scan / layers."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import vmunet.layers.mamba as mamba_mod
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
    mamba_mod.Mamba.selective_scan = labelled(mamba_mod.Mamba.selective_scan, "vmunet::selective_scan")
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
    num_classes, in_chans = task(model_name)
    model = create_model(model_name, num_classes=num_classes, in_chans=in_chans, scan_backend=backend).eval()
    x = torch.randn(1, in_chans, size, size)
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
    return "\n".join([f"One {size}x{size} forward of `{model_name}` (batch 1, backend {backend!r}, {threads} threads): "
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
    p.add_argument("--models", nargs="+", default=[MODEL], metavar="NAME",
                   help="registered models (default vmunet); the first is the one the others are compared to")
    p.add_argument("--adamw", action="store_true",
                   help="training rows include the AdamW step (lr 1e-3, weight decay 1e-2, fused)")
    args = p.parse_args(argv)

    # as `vmunet fit` runs (OMP_WAIT_POLICY=PASSIVE, THP_MEM_ALLOC_ENABLE=1 unless set): the case
    # processes inherit them; must come before torch loads
    from vmunet.runtime import apply_process_defaults

    apply_process_defaults()
    import torch

    from vmunet.models import list_models

    unknown = [m for m in args.models if m not in list_models()]
    if unknown:
        p.error(f"--models: unknown model(s) {', '.join(unknown)}; available: {', '.join(list_models())}")
    threads = args.threads or torch.get_num_threads()
    backends = args.backends or available_backends()
    if args.profile:
        for b in [b for b in backends if b not in ("ref", "noop")]:
            print(profile_forward(b, args.sizes[0], threads, args.models[0]), "\n")
        return 0
    sizes, batches = ([224], [1]) if args.quick else (args.sizes, args.batches)
    repeats = 2 if args.quick else args.repeats
    rows = []
    load_before = os.getloadavg()
    for size in sizes:
        for batch in batches:
            for train in ([False] if args.no_train else [False, True]):
                for b in backends:
                    if b == "ref" and (train or batch > 1):
                        continue  # the step-by-step loop is only for reference timing
                    for model in args.models:  # innermost: the models compared run next to each other
                        r = run_case(b, size, batch, train, 1 if b == "ref" else repeats, threads, model,
                                     args.adamw)
                        rows.append(r)
                        print(f"  {model} {b:6s} {size} b{batch} {r['mode']}: {r['seconds']:.3f} s",
                              file=sys.stderr)
    load_after = os.getloadavg()
    tasks = "; ".join(f"`{m}` ({task(m)[0]} classes, {task(m)[1]} input channels)" for m in args.models)
    header = (f"{tasks}, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads} threads, "
              f"nice {os.nice(0)}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
              f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}; best and median of {repeats} (ref: 1 run, batch-1 inference only)"
              + ("; training steps include the AdamW step" if args.adamw else "")
              + f"; 1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    tables = [markdown_table(rows), ratio_table(rows)]
    if len(args.models) > 1:
        tables.append(model_ratio_table(rows, args.models))
    print_report(header, tables, rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

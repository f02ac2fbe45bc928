"""Volume-wise validation metrics: seconds per 512x512xN case with 9 classes, before and now.

What validation runs per case (``SegmentationModule._score_case``, in the main process while the
accelerator waits): :func:`vmunet.evaluation.metrics.case_metrics` -- per foreground class Dice,
then HD95 in voxels and in mm (medpy's pooled definition), each from two directed surface
distances. Two synthetic cases, both with 8 ellipsoid "organs" in the ground truth:

* ``noisy``: every voxel's predicted label drawn uniformly from the 9 (an untrained model at its
  worst): every class's surface is everywhere, so each distance transform spans the whole volume;
* ``near``: the ground truth shifted by one voxel along W, plus 20 false-positive 3x3x3 cubes of
  random classes at random places (a trained model with a few stray islands).

Table 1 times the whole ``case_metrics`` of "before" (the module as of commit ``--before``, read
with ``git show``), "now" on one numba thread, "now" on ``--threads`` numba threads, and
``hd95=None`` (what Lightning's sanity check runs now): min and median wall and process-CPU
seconds of ``--repeats`` interleaved runs, ratios before / now of the medians, and whether the
rows are identical (``hd95=None``: its Dice and status). Table 2 splits one run on one thread over
the steps, before and now: Dice (class masks and counts), surfaces (bounding box, crop, erosion),
the distance transform (before: scipy's ``distance_transform_edt`` with its float64 distance map;
now: :func:`vmunet.evaluation.edt.feature_transform`), the distances at the surface voxels, and
the percentiles. Table 3: the feature transform alone on the largest input of the noisy case (a
class's surface in the whole volume): scipy's (``return_indices``) against ours on 1 and on
``--threads`` threads. Table 4: peak traced memory (``tracemalloc``: numpy's allocations) of one
run of each.

    python benchmarks/bench_val_metrics.py                      # 32 slices, 3 repeats, all threads
    python benchmarks/bench_val_metrics.py --slices 150 --threads 16 --repeats 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, print_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACING = (3.0, 0.76, 0.76)  # (z, y, x) mm, a Synapse-like CT
NAMES = ["background", *(f"organ_{k}" for k in range(1, 9))]


def synthetic_case(kind: str, slices: int, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) label maps (D, H, W) int64, see the module docstring."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((slices, size, size), np.int64)
    z, y, x = np.ogrid[:slices, :size, :size]
    for k in range(1, 9):
        cz, cy, cx = rng.uniform(0.3, 0.7) * slices, rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size
        rz, ry, rx = rng.uniform(0.15, 0.35) * slices, rng.uniform(0.03, 0.12) * size, rng.uniform(0.03, 0.12) * size
        gt[((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1] = k
    if kind == "noisy":
        return rng.integers(0, 9, gt.shape), gt
    pred = np.roll(gt, 1, axis=2)
    for _ in range(20):
        c = [int(rng.integers(0, max(n - 3, 1))) for n in gt.shape]
        pred[c[0]:c[0] + 3, c[1]:c[1] + 3, c[2]:c[2] + 3] = int(rng.integers(1, 9))
    return pred, gt


def load_before(commit: str) -> Any:
    """``vmunet/evaluation/metrics.py`` as of ``commit``, imported as a separate module."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:vmunet/evaluation/metrics.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--before {commit}: cannot read vmunet/evaluation/metrics.py from git ({exc})") from None
    path = Path(tempfile.mkdtemp()) / "metrics_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("metrics_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def split_before(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The before code's steps (``surface_distances`` x 4 per class), each timed."""
    from scipy import ndimage

    from vmunet.evaluation import metrics as M

    t = dict.fromkeys(("dice", "surfaces", "transform", "distances", "percentile"), 0.0)
    struct = None
    for k in range(1, 9):
        t0 = time.perf_counter()
        a, b = pred == k, gt == k
        M.dice_coefficient(a, b)
        t["dice"] += time.perf_counter() - t0
        if not (a.any() and b.any()):
            continue
        for sampling in (None, list(SPACING)):
            dists = []
            for x, y in ((a, b), (b, a)):
                t0 = time.perf_counter()
                box = M._bounding_box(x | y, margin=1)
                xs, ys = x[box], y[box]
                struct = ndimage.generate_binary_structure(xs.ndim, 1)
                sx = xs ^ ndimage.binary_erosion(xs, structure=struct, border_value=0)
                sy = ys ^ ndimage.binary_erosion(ys, structure=struct, border_value=0)
                t1 = time.perf_counter()
                dt = ndimage.distance_transform_edt(~sy, sampling=sampling)
                t2 = time.perf_counter()
                dists.append(dt[sx])
                t3 = time.perf_counter()
                t["surfaces"] += t1 - t0
                t["transform"] += t2 - t1
                t["distances"] += t3 - t2
            t0 = time.perf_counter()
            np.percentile(np.concatenate(dists), 95)
            t["percentile"] += time.perf_counter() - t0
    return t


def split_now(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The current code's steps (``_Surfaces`` once per class, four directed distances), each timed."""
    from vmunet.evaluation import metrics as M
    from vmunet.evaluation.edt import feature_transform

    t = dict.fromkeys(("dice", "surfaces", "transform", "distances", "percentile"), 0.0)
    for k in range(1, 9):
        t0 = time.perf_counter()
        a, b = pred == k, gt == k
        M.dice_coefficient(a, b)
        t["dice"] += time.perf_counter() - t0
        if not (a.any() and b.any()):
            continue
        t0 = time.perf_counter()
        s = M._Surfaces(a, b)
        t["surfaces"] += time.perf_counter() - t0
        for sampling in (None, list(SPACING)):
            dists = []
            for source in (0, 1):
                t0 = time.perf_counter()
                ft = feature_transform(s.surfaces[1 - source], sampling)
                t1 = time.perf_counter()
                dists.append(M._distances_at(ft, s.flat[source], s.points[source], sampling))
                t["transform"] += t1 - t0
                t["distances"] += time.perf_counter() - t1
            t0 = time.perf_counter()
            np.percentile(np.concatenate(dists), 95)
            t["percentile"] += time.perf_counter() - t0
    return t


def peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def on_threads(threads: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` with numba (the distance transform) on ``threads`` threads."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


def transform_table(pred: np.ndarray, gt: np.ndarray, threads: int, repeats: int) -> tuple[list, list]:
    """Feature transform of class 1's noisy surface in the whole volume: scipy's against ours."""
    from scipy import ndimage

    from vmunet.evaluation import metrics as M
    from vmunet.evaluation.edt import feature_transform

    surface = M._Surfaces(pred == 1, gt == 1).surfaces[0]
    sampling = list(SPACING)
    variants = {
        "scipy distance_transform_edt(return_indices)": lambda: ndimage.distance_transform_edt(
            ~surface, sampling=sampling, return_distances=False, return_indices=True),
        "edt.feature_transform, 1 thread": lambda: on_threads(1, lambda: feature_transform(surface, sampling)),
        f"edt.feature_transform, {threads} threads": lambda: on_threads(
            threads, lambda: feature_transform(surface, sampling)),
    }
    runs: dict[str, list[tuple[float, float, Any]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            runs[name].append(timed(fn))
    ref_out = runs["scipy distance_transform_edt(return_indices)"][0][2]
    ref = statistics.median(w for w, _, _ in runs["scipy distance_transform_edt(return_indices)"])
    table, rows = [], []
    for name, times in runs.items():
        walls, cpus = [w for w, _, _ in times], [c for _, c, _ in times]
        same = bool(np.array_equal(times[0][2], ref_out))
        table.append([f"{surface.shape}", name, f"{min(walls):.2f} / {statistics.median(walls):.2f}",
                      f"{min(cpus):.2f} / {statistics.median(cpus):.2f}",
                      f"{ref / statistics.median(walls):.2f}x", "yes" if same else "NO"])
        rows.append({"transform": name, "shape": list(surface.shape), "min_s": min(walls),
                     "median_s": statistics.median(walls), "min_cpu_s": min(cpus),
                     "median_cpu_s": statistics.median(cpus), "identical": same})
    return table, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=32, help="slices of the volume (default 32)")
    parser.add_argument("--size", type=int, default=512, help="height = width of the slices (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba threads of the parallel 'now' rows (default: numba's, the CPUs)")
    parser.add_argument("--before", default="e1518e9", help="git commit of the 'before' code (default e1518e9)")
    parser.add_argument("--cases", nargs="+", default=["noisy", "near"], choices=["noisy", "near"])
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    import numba

    if args.threads is None:
        args.threads = numba.config.NUMBA_NUM_THREADS
    if args.slices < 1 or args.repeats < 1 or args.size < 16 or not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
        parser.error(f"--slices and --repeats must be >= 1, --size >= 16, --threads in 1..{numba.config.NUMBA_NUM_THREADS}")

    from vmunet.evaluation import metrics as M

    before = load_before(args.before)
    load0 = os.getloadavg()[0]
    variants: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
        "before": lambda p, g: before.case_metrics(p, g, NAMES, spacing=SPACING),
        "now, 1 thread": lambda p, g: on_threads(1, lambda: M.case_metrics(p, g, NAMES, spacing=SPACING)),
        f"now, {args.threads} threads": lambda p, g: on_threads(
            args.threads, lambda: M.case_metrics(p, g, NAMES, spacing=SPACING)),
        "now, hd95=None (sanity check)": lambda p, g: M.case_metrics(p, g, NAMES, spacing=SPACING, hd95=None),
    }
    rows: list[dict[str, Any]] = []
    whole, steps, transforms, memory = [], [], [], []
    for kind in args.cases:
        pred, gt = synthetic_case(kind, args.slices, args.size)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        outputs: dict[str, Any] = {}
        for _ in range(args.repeats):  # interleaved: load changes hit every variant alike
            for name, fn in variants.items():
                wall, cpu, outputs[name] = timed(lambda fn=fn, p=pred, g=gt: fn(p, g))
                runs[name].append((wall, cpu))
        ref = statistics.median(w for w, _ in runs["before"])
        ref_cpu = statistics.median(c for _, c in runs["before"])
        for name, times in runs.items():
            walls, cpus = [w for w, _ in times], [c for _, c in times]
            same = outputs[name] == outputs["before"] if "hd95=None" not in name else \
                [{k: v for k, v in r.items() if k in ("class", "status", "dice")} for r in outputs[name]] == \
                [{k: v for k, v in r.items() if k in ("class", "status", "dice")} for r in outputs["before"]]
            row = {"case": kind, "variant": name, "min_s": min(walls), "median_s": statistics.median(walls),
                   "min_cpu_s": min(cpus), "median_cpu_s": statistics.median(cpus),
                   "speedup": ref / statistics.median(walls), "cpu_ratio": ref_cpu / statistics.median(cpus),
                   "identical": same}
            rows.append(row)
            whole.append([kind, name, f"{row['min_s']:.2f} / {row['median_s']:.2f}",
                          f"{row['min_cpu_s']:.2f} / {row['median_cpu_s']:.2f}",
                          f"{row['speedup']:.2f}x", f"{row['cpu_ratio']:.2f}x",
                          "yes" if same else "NO" + (" (Dice rows)" if "hd95=None" in name else "")])
        split = {"before": split_before(pred, gt), "now": on_threads(1, lambda p=pred, g=gt: split_now(p, g))}
        for step in split["before"]:
            b, n = split["before"][step], split["now"][step]
            steps.append([kind, step, f"{b:.3f}", f"{n:.3f}", f"{b / n:.1f}x" if n > 0 else "-"])
            rows.append({"case": kind, "step": step, "before_s": b, "now_s": n})
        if kind == "noisy":
            table, trows = transform_table(pred, gt, args.threads, args.repeats)
            transforms += table
            rows += trows
        for name in ("before", "now, 1 thread", f"now, {args.threads} threads"):
            mib = peak_mib(lambda name=name, p=pred, g=gt: variants[name](p, g))
            memory.append([kind, name, f"{mib:.0f}"])
            rows.append({"case": kind, "variant": name, "peak_traced_mib": mib})
    header = (f"case_metrics of a {args.size}x{args.size}x{args.slices} case, 9 classes, spacing {SPACING} mm, HD95 pooled in "
              f"voxels and mm; {args.repeats} interleaved repeats; {os.cpu_count()} CPUs, numba threading layer "
              f"{numba.threading_layer()}; load average "
              f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    tables = [
        "\n".join(md_table(["case", "variant", "wall s min / median", "CPU s min / median",
                            "speed-up (wall, medians)", "CPU ratio", "rows identical to before"], whole)),
        "\n".join(md_table(["case", "step (1 thread, one run)", "before s", "now s", "before / now"], steps)),
        "\n".join(md_table(["input shape", "feature transform", "wall s min / median", "CPU s min / median",
                            "speed-up (wall, medians)", "identical to scipy"], transforms)),
        "\n".join(md_table(["case", "variant", "peak traced MiB"], memory)),
    ]
    print_report(header, tables, rows, args.json)


if __name__ == "__main__":
    main()

"""Whole-scan prediction speed: seconds per 512x512 slice and per 100-slice volume.

Runs :class:`vmunet.inference.Predictor` end to end (intensity window, resize 512 -> model size,
model, probabilities resized back, argmax, reorientation) on a synthetic 512x512xN CT-like volume
with the ``vmunet`` paper model (random weights: speed does not depend on them), with and without
flip TTA, and reports the peak memory of each run. "CPU s" is the process's CPU time (all
threads): on a shared machine the steadier figure; with T threads on an idle machine the wall
time is about CPU time / T. The CPU time per slice is split into the model's forward passes
(timed by forward hooks) and everything else (reading the array, intensity window, resizing,
softmax, probabilities resized back, argmax, copies, reorientation). ``--quick`` times fewer slices and extrapolates
to 100 (the table says so).

    python benchmarks/bench_predict.py              # CPU, 100 slices
    python benchmarks/bench_predict.py --quick      # CPU, 8 slices (4 with TTA), extrapolated
    python benchmarks/bench_predict.py --device cuda
    python benchmarks/bench_predict.py --compare --slices 16 --repeats 3 --no-tta

``--compare`` times the same volume through the code before the CPU prediction round and now,
interleaved (before, now, before, now, ...), ``--repeats`` times each, and prints min / median
wall and CPU time per 100 slices, their ratios (now / before, measured in the same run), and
whether the two label maps are identical: "before" is the PyTorch cross-scan/merge
(``VMUNET_CROSS_SCAN=torch``) at ``--before-batch-size`` (default 8), "now" the default
cross-scan (numba kernels under inference) at ``--batch-size``. The load average of the machine
at the start and the end goes into the header (the machine is shared: ratios are the figures
to trust).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import threading
import time

import numpy as np
import torch


class ModelCPUTime:
    """Process CPU seconds spent inside ``model.forward`` (all threads), summed over calls (on
    CUDA only the launch cost: kernels run asynchronously)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, *_: object) -> None:
        self._start = time.process_time()

    def _post(self, *_: object) -> None:
        self.seconds += time.process_time() - self._start


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs (samples /proc every 20 ms;
    falls back to the lifetime peak where /proc is missing)."""

    def __enter__(self) -> PeakRSS:
        self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._now())

    @staticmethod
    def _now() -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_ct(slices: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """A 512x512xN volume in HU: body ellipse with a few organ-like blobs and noise (RAS layout)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    sl = np.where(body, 40.0, -1000.0).astype(np.float32)
    sl[(x - 0.3) ** 2 + y ** 2 < 0.08] = 60.0  # liver-ish
    sl[(x + 0.4) ** 2 + (y - 0.2) ** 2 < 0.02] = 45.0  # spleen-ish
    vol = np.repeat(sl[:, :, None], slices, axis=2)
    vol += rng.normal(0, 10, size=vol.shape).astype(np.float32)
    return vol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vmunet", help="registered model name (default: vmunet, the paper model)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    parser.add_argument("--slices", type=int, default=100, help="slices of the timed volume (default: 100)")
    parser.add_argument("--quick", action="store_true", help="time 8 slices (4 with TTA) and extrapolate to 100")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224, help="model input size (Synapse recipe: 224)")
    parser.add_argument("--classes", type=int, default=9, help="output classes (Synapse: 9)")
    parser.add_argument("--no-tta", action="store_true", help="skip the TTA rows")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--compare", action="store_true",
                        help="before (PyTorch cross-scan, --before-batch-size) vs now, interleaved, same volume")
    parser.add_argument("--repeats", type=int, default=3, help="--compare: timed runs of each side (default 3)")
    parser.add_argument("--before-batch-size", type=int, default=8, help="--compare: batch of the 'before' side")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        compare(args)
        return

    from vmunet.inference import Predictor

    model, rec = _setup(args)
    model_cpu = ModelCPUTime(model)
    rows = []
    for tta in (False,) if args.no_tta else (False, True):
        n = (4 if tta else 8) if args.quick else args.slices
        predictor = Predictor(model, rec, device=args.device, batch_size=args.batch_size, tta=tta)
        predictor.predict_volume(synthetic_ct(min(n, args.batch_size)))  # warm-up: kernels, compiled scan
        vol = synthetic_ct(n)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        model_cpu.seconds = 0.0
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            pred = predictor.predict_volume(vol)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            cpu_seconds = time.process_time() - c0
        assert pred.labels.shape == vol.shape
        gpu = torch.cuda.max_memory_allocated() / 2**20 if predictor.device.type == "cuda" else None
        per_slice = seconds / n
        rows.append({"device": str(predictor.device), "tta": "4 flips" if tta else "no", "timed": n,
                     "per_slice": per_slice, "per_100": per_slice * 100,
                     "cpu_per_100": cpu_seconds / n * 100, "rss": mem.peak, "gpu": gpu,
                     "model_cpu": model_cpu.seconds / n, "outside_cpu": (cpu_seconds - model_cpu.seconds) / n,
                     "note": "extrapolated" if n != 100 else "measured"})

    cpu = platform.processor() or platform.machine()
    print(f"\nbench_predict: {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), "
          f"input 512x512 slices -> {args.image_size}x{args.image_size}, {args.classes} classes, "
          f"batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs ({cpu}), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    header = (f"| {'device':<6} | {'TTA':<7} | {'slices timed':>12} | {'s / slice':>9} | {'s / 100-slice volume':>20} "
              f"| {'CPU s / 100 slices':>18} | {'model CPU s / slice':>19} | {'outside CPU s / slice':>21} "
              f"| {'peak RSS MiB':>12} | {'peak GPU MiB':>12} | {'100-slice figure':<16} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        gpu = "-" if r["gpu"] is None else f"{r['gpu']:.0f}"
        print(f"| {r['device']:<6} | {r['tta']:<7} | {r['timed']:>12} | {r['per_slice']:>9.2f} | {r['per_100']:>20.1f} "
              f"| {r['cpu_per_100']:>18.1f} | {r['model_cpu']:>19.3f} | {r['outside_cpu']:>21.3f} "
              f"| {r['rss']:>12.0f} | {gpu:>12} | {r['note']:<16} |")


def _setup(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The timed model (random weights, seed 0) and its preprocessing record."""
    from vmunet.data.preprocessing import SYNAPSE_CLASSES, SYNAPSE_HU_WINDOW, make_preprocessing
    from vmunet.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.classes, in_chans=1)
    names = list(SYNAPSE_CLASSES[: args.classes]) if args.classes <= len(SYNAPSE_CLASSES) else [
        f"class{i}" for i in range(args.classes)]
    rec = make_preprocessing("synapse", in_chans=1, image_size=[args.image_size] * 2, class_names=names,
                             num_classes=args.classes, intensity={"mode": "window", "window": list(SYNAPSE_HU_WINDOW)},
                             orientation="RAS", slice_axis=2)
    return model, rec


def compare(args: argparse.Namespace) -> None:
    """Before / now on one volume, interleaved; see the module docstring."""
    from vmunet.inference import Predictor
    from vmunet.ops.cross_scan_fused import use_cross_scan_impl

    model, rec = _setup(args)
    model_cpu = ModelCPUTime(model)
    sides = {"before": ("torch", args.before_batch_size), "now": ("default", args.batch_size)}
    predictors = {name: Predictor(model, rec, device=args.device, batch_size=bs, tta=not args.no_tta)
                  for name, (_, bs) in sides.items()}
    load0 = os.getloadavg()
    vol = synthetic_ct(args.slices)
    labels: dict[str, np.ndarray] = {}
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
    for name, (impl, _) in sides.items():  # warm-up: compiled kernels, first allocations
        with use_cross_scan_impl(impl):
            predictors[name].predict_volume(synthetic_ct(min(args.slices, 8)))
    for _ in range(args.repeats):
        for name, (impl, _) in sides.items():
            model_cpu.seconds = 0.0
            with use_cross_scan_impl(impl):
                t0, c0 = time.perf_counter(), time.process_time()
                pred = predictors[name].predict_volume(vol)
                times[name].append((time.perf_counter() - t0, time.process_time() - c0, model_cpu.seconds))
            if name in labels and not np.array_equal(labels[name], pred.labels):
                raise AssertionError(f"{name}: the label map changed between repeats")
            labels[name] = pred.labels
    load1 = os.getloadavg()
    identical = np.array_equal(labels["before"], labels["now"])
    scale = 100.0 / args.slices
    stats = {}
    for name, rows in times.items():
        wall = sorted(r[0] for r in rows)
        cpu = sorted(r[1] for r in rows)
        stats[name] = {"wall_min": wall[0] * scale, "wall_med": float(np.median(wall)) * scale,
                       "cpu_min": cpu[0] * scale, "cpu_med": float(np.median(cpu)) * scale,
                       "model_cpu": min(r[2] for r in rows) / args.slices}
    print(f"\nbench_predict --compare: {args.model} at {args.image_size}x{args.image_size}, {args.slices} slices of "
          f"512x512, TTA {'no' if args.no_tta else '4 flips'}, {args.repeats} runs each (interleaved), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print("| side | cross-scan | batch | wall s / 100 slices (min / median) | CPU s / 100 slices (min / median) "
          "| model CPU s / slice (min) |")
    print("|---|---|---|---|---|---|")
    for name, (impl, bs) in sides.items():
        st = stats[name]
        print(f"| {name} | {impl} | {bs} | {st['wall_min']:.1f} / {st['wall_med']:.1f} | "
              f"{st['cpu_min']:.1f} / {st['cpu_med']:.1f} | {st['model_cpu']:.3f} |")
    b, n = stats["before"], stats["now"]
    print(f"| now / before | | | {n['wall_min'] / b['wall_min']:.3f} / {n['wall_med'] / b['wall_med']:.3f} | "
          f"{n['cpu_min'] / b['cpu_min']:.3f} / {n['cpu_med'] / b['cpu_med']:.3f} | "
          f"{n['model_cpu'] / b['model_cpu']:.3f} |")
    print(f"label maps identical (before vs now, {labels['now'].size} voxels): {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

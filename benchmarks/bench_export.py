"""`vmunet export` end to end: export time, file size and parity of the TorchScript / ONNX files.

Builds a model with seeded random weights (``--model``, ``--size``, ``--classes``, ``--in-chans``),
saves it as a training checkpoint with a Synapse-style preprocessing record, exports it with
:func:`vmunet.inference.export.export_checkpoint` and runs the exported file (``torch.jit.load``;
onnxruntime on CPU when installed) on seeded N(0, 1) batches of 1 and 4. Parity is the largest
absolute logit difference against the PyTorch model with the ``torch`` scan backend (what was
traced) and with the default CPU backend (``auto``: numba, what ``vmunet predict`` runs), and the
share of pixels whose argmax class agrees with the latter. Per format it also reports the peak
resident memory of this process during the export (sampled; the model and inputs are already
built) and the inference time per slice of one batch of ``--speed-batch`` (default 4) through the
exported file (onnxruntime on CPU / ``torch.jit.load`` / ``torch.export.load``) and through the
eager model with the default CPU backend (numba) and with the ``torch`` backend: min / median wall
time of ``--repeats`` calls after two warm-up calls, and in brackets the least process CPU time.

    python benchmarks/bench_export.py                                  # vmunet_test, 64x64, 9 classes
    python benchmarks/bench_export.py --model vmunet --size 224        # the paper model
    python benchmarks/bench_export.py --model vmunet --size 224 --formats onnx
    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_export.py ...   # another vmunet's export
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_predict import PeakRSS  # noqa: E402  (benchmarks/bench_predict.py)


def ms_per_slice(run: Callable[[], object], slices: int, repeats: int) -> str:
    """``"min / median wall (min CPU)"`` ms per slice of ``run()`` (one batch of ``slices``) over
    ``repeats`` calls after two warm-up calls (TorchScript optimises a graph on its second call). The
    process CPU time (all threads) is steadier than wall time on a shared machine."""
    run()
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    k = 1000.0 / slices
    return f"{min(wall) * k:.0f} / {statistics.median(wall) * k:.0f} ({min(cpu) * k:.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vmunet_test")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=9)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--formats", nargs="+", default=["torchscript", "onnx"])
    ap.add_argument("--speed-batch", type=int, default=4, help="slices of the timed inference batch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="timed inference calls, best taken (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vmunet.data.preprocessing import make_preprocessing
    from vmunet.models import create_model

    torch.manual_seed(0)
    kwargs = {"num_classes": args.classes, "in_chans": args.in_chans}
    model = create_model(args.model, **kwargs).eval()
    names = ["background", *[f"class_{i}" for i in range(1, max(args.classes, 2))]]
    record = make_preprocessing("synapse", in_chans=args.in_chans, image_size=[args.size, args.size],
                                class_names=names, num_classes=args.classes,
                                intensity={"mode": "window", "window": [-125.0, 275.0]},
                                orientation="RAS", slice_axis=2)
    work = Path(tempfile.mkdtemp(prefix="vmunet-bench-export-"))
    try:
        run(args, model, kwargs, record, work)
    finally:  # the checkpoint and the exported files (the paper model's ONNX file is ~110 MB)
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, model: torch.nn.Module, kwargs: dict, record: dict, work: Path) -> None:
    """Save the checkpoint in ``work``, export it in each format there, and print the table."""
    from vmunet.inference.export import export_checkpoint, onnxruntime_available

    ckpt = work / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "vmunet": {"model_name": args.model, "model_kwargs": kwargs, "preprocessing": record,
                           "version": "bench"}}, ckpt)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(b, args.in_chans, args.size, args.size, generator=g) for b in (1, 4)]
    xs = torch.randn(args.speed_batch, args.in_chans, args.size, args.size, generator=g)
    eager_ms = {}
    with torch.no_grad():
        ref_auto = [model(x) for x in inputs]
        eager_ms["default"] = ms_per_slice(lambda: model(xs), args.speed_batch, args.repeats)
        model.set_scan_backend("torch")
        ref_torch = [model(x) for x in inputs]
        eager_ms["torch"] = ms_per_slice(lambda: model(xs), args.speed_batch, args.repeats)

    import vmunet

    print(f"# {args.model} {args.size}x{args.size}, {args.classes} classes, {args.in_chans} channel(s), "
          f"random weights; vmunet from {Path(vmunet.__file__).parent}; "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print("| format | export s (CPU s) | export peak RSS MiB | file MiB | max abs diff vs torch backend "
          "| vs default backend | argmax agreement | ms / slice, exported file: min / median wall (min CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for fmt in args.formats:
        out = work / f"model.{ {'onnx': 'onnx', 'pt2': 'pt2'}.get(fmt, 'pt') }"
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            export_checkpoint(ckpt, out, fmt)
            seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        if fmt in ("torchscript", "pt2"):
            loaded = torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
            with torch.no_grad():
                got = [loaded(x) for x in inputs]
                ms = ms_per_slice(lambda f=loaded: f(xs), args.speed_batch, args.repeats)
        elif fmt == "onnx" and onnxruntime_available():
            import onnxruntime

            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = [torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0]) for x in inputs]
            ms = ms_per_slice(lambda s=session: s.run(["logits"], {"image": xs.numpy()}), args.speed_batch,
                              args.repeats)
        else:
            print(f"| {fmt} | {seconds:.1f} ({cpu_s:.1f}) | {mem.peak:.0f} | {out.stat().st_size / 2**20:.1f} | "
                  "(onnxruntime not installed) | | | |")
            continue
        d_torch = max(float((a - b).abs().max()) for a, b in zip(got, ref_torch, strict=True))
        d_auto = max(float((a - b).abs().max()) for a, b in zip(got, ref_auto, strict=True))
        agree = np.mean([float((a.argmax(1) == b.argmax(1)).float().mean()) for a, b in zip(got, ref_auto, strict=True)])
        print(f"| {fmt} | {seconds:.1f} ({cpu_s:.1f}) | {mem.peak:.0f} | {out.stat().st_size / 2**20:.1f} | "
              f"{d_torch:.2e} | {d_auto:.2e} | {agree:.5f} | {ms} |")
    scale = max(float(r.abs().max()) for r in ref_auto)
    print(f"\nlogit scale: max |logit| = {scale:.3g}; batches of 1 and 4 (the export traced a batch of 2)")
    print(f"eager model, batch {args.speed_batch}, ms / slice, min / median wall (min CPU) of {args.repeats}: "
          f"default CPU backend {eager_ms['default']}, torch backend {eager_ms['torch']}; load average now "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

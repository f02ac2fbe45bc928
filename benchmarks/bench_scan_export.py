"""The selective scan as ``vmunet export`` records it, at VM-UNet's stage shapes: loop vs unrolled.

For each stage of the paper model at 224 x 224 (L = 56*56, 28*28, 14*14, 7*7; dim = 4 directions x
d_inner = 768, 1536, 3072, 6144; N = 16; B and C in 4 groups; batch 1) this records one scan call
(:func:`vmunet.ops.scan_export.selective_scan_export`, ``delta_softplus``, D) two ways, in the same
run: ``loop`` (what ``vmunet export`` records: the loop over blocks as a TorchScript loop / ONNX
``Loop``) and ``unrolled`` (the same code with the loop over blocks left to the tracer, i.e. unrolled
as ``vmunet export`` recorded it before). Per form: ONNX nodes (top level), process CPU seconds of
``torch.onnx.export``, CPU ms of one call in onnxruntime and in the traced TorchScript module (min of
``--repeats`` after two warm-up calls), and the largest difference to the step-by-step reference
(float64). Eager numba and ``torch`` backends are timed alongside. Inputs are seeded: u, B, C ~
N(0, 1), A = -(1..N) (the S4D-real init), delta ~ N(-4, 0.5) with bias 0 (softplus: steps ~0.02).

    python benchmarks/bench_scan_export.py [--threads 1] [--repeats 3] [--stages 3136 784]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
import warnings

import torch

from vmunet.ops import selective_scan
from vmunet.ops.scan_export import selective_scan_export
from vmunet.ops.scan_ref import selective_scan_ref

STAGES = {3136: 768, 784: 1536, 196: 3072, 49: 6144}


class _Scan(torch.nn.Module):
    def __init__(self, A: torch.Tensor, D: torch.Tensor, loop: str):
        super().__init__()
        self.A, self.D, self.loop = A, D, loop

    def forward(self, u, delta, B, C):
        return selective_scan_export(u, delta, self.A, B, C, self.D, delta_softplus=True, loop=self.loop)


def cpu_ms(run, repeats: int) -> float:
    """Least process CPU ms of ``run()`` over ``repeats`` calls after two warm-up calls."""
    run()
    run()
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        run()
        best = min(best, time.process_time() - c0)
    return best * 1000.0


def run_stage(L: int, repeats: int, so) -> None:
    """Print the two rows (unrolled, loop) of the stage with sequence length ``L``."""
    import onnx
    import onnxruntime

    N, G = 16, 4
    dim = STAGES[L]
    g = torch.Generator().manual_seed(L)
    u = torch.randn(1, dim, L, generator=g)
    delta = torch.randn(1, dim, L, generator=g) * 0.5 - 4
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)
    B = torch.randn(1, G, N, L, generator=g)
    C = torch.randn(1, G, N, L, generator=g)
    D = torch.randn(dim, generator=g)
    xs = (u, delta, B, C)
    ref = selective_scan_ref(*(x.double() for x in (u, delta, A, B, C, D)), delta_softplus=True).float()
    with torch.no_grad():
        eager = " / ".join(f"{cpu_ms(lambda b=b: selective_scan(u, delta, A, B, C, D, delta_softplus=True, backend=b), repeats):.0f}"
                           for b in ("numba", "torch"))
    for form, loop in (("unrolled", "python"), ("loop", "script")):
        module = _Scan(A, D, loop)
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            c0 = time.process_time()
            torch.onnx.export(module, xs, buf, dynamo=False, opset_version=17,
                              input_names=["u", "delta", "B", "C"], output_names=["y"])
            export_s = time.process_time() - c0
            traced = torch.jit.trace(module, xs, check_trace=False)
        nodes = len(onnx.load_from_string(buf.getvalue()).graph.node)
        session = onnxruntime.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        feed = {k: x.numpy() for k, x in zip(["u", "delta", "B", "C"], xs, strict=True)}
        y = torch.from_numpy(session.run(None, feed)[0])
        with torch.no_grad():
            ort_ms = cpu_ms(lambda s=session, f=feed: s.run(None, f), repeats)
            ts_ms = cpu_ms(lambda t=traced: t(u, delta, B, C), repeats)
            diff = max(float((y - ref).abs().max()), float((traced(*xs) - ref).abs().max()))
        print(f"| {L} | {dim} | {form} | {nodes} | {export_s:.1f} | {ort_ms:.0f} | {ts_ms:.0f} | {diff:.1e} | {eager} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", type=int, nargs="+", default=list(STAGES), choices=list(STAGES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    N, G = 16, 4
    print(f"# one scan call, batch 1, N={N}, {G} B/C groups; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f}; CPU ms = least of {args.repeats}")
    print("| L | dim | form | ONNX nodes | ONNX export CPU s | onnxruntime CPU ms | TorchScript CPU ms "
          "| max abs diff vs ref (f64) | eager numba / torch CPU ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for L in args.stages:
        run_stage(L, args.repeats, so)
    print(f"\nload average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

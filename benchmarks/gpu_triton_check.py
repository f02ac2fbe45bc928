"""GPU check of the "triton" selective-scan backend: parity, scan speed and training speed against
mamba-ssm's CUDA kernel ("cuda") and the pure-PyTorch backend ("torch").

Sections (each guarded: an error is recorded and the next section still runs; the JSON is
rewritten after every section):

1. ``parity``: triton against the float64 "ref" loop on the same device, at the four VM-UNet
   stage shapes of a 224x224 input (L = 3136, 784, 196, 49; dim = 4 directions x 2C; N = 16;
   G = 4; D, delta_bias, softplus on), output, last state and the gradient of every input;
   float32 at every stage, bfloat16 at the two smallest, one z-gated case.
   ``rel`` = ||a - b|| / ||b|| over the whole tensor.
2. ``scan_time``: forward and forward+backward ms (median of CUDA-event timings) per stage at
   batch 32, float32, for triton, cuda (when its extension loads) and torch, with
   ``cuda_over_triton`` = cuda ms / triton ms (issue 17's target: >= 0.5 for forward+backward).
3. ``train``: the paper model ("vmunet", 9 classes, 224x224, batch 32) trained with each scan
   backend, float32 and bf16-mixed: img/s over the timed steps (forward + cross-entropy + backward
   + AdamW), ``triton_over_cuda`` (target >= 0.8), peak memory, non-finite steps.
4. ``sweep`` (``--sweep``): forward+backward ms of triton at stages 1 and 3 for a few
   (BLOCK_L, BLOCK_D_MAX, NUM_WARPS) settings, to choose the defaults in vmunet/ops/scan_triton.py.

    python benchmarks/gpu_triton_check.py --out $OUT [--sweep]
    python benchmarks/gpu_triton_check.py --smoke --out /tmp/x    # CPU, Triton's interpreter, tiny

``--smoke`` proves the script runs (tiny shapes through the interpreter, no model section); its
numbers mean nothing. The one-call device check (benchmarks/gpu/device_check.sh) does not run this
script: it is the deeper Triton study for a second device call when time is left.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before vmunet.ops.scan_triton is imported

import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by file path
sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
from _common import PAPER_STAGES_224, md_table  # noqa: E402  (benchmarks/_common.py)
from _timing import rel, scan_ms, sync  # noqa: E402  (benchmarks/gpu/_timing.py)

from vmunet.data.fileio import atomic_path, write_json  # noqa: E402
from vmunet.ops import resolve_backend, selective_scan  # noqa: E402
from vmunet.ops.scan_ref import selective_scan_ref  # noqa: E402
from vmunet.ops.scan_triton import fast_interpreter_scan  # noqa: E402

logger = logging.getLogger("gpu_triton_check")
STAGES = PAPER_STAGES_224
SMOKE_STAGES = [(1, 3)]  # dim 8, L 9
D_STATE, K, MODEL, NUM_CLASSES = 16, 4, "vmunet", 9
TOL = {"float32": 2e-4, "bfloat16": 2e-2}


def scan_inputs(batch: int, dim: int, L: int, dtype: torch.dtype, device, seed: int,
                z: bool = False) -> dict[str, torch.Tensor]:
    """VMamba-like inputs: A = -exp(log(1..N)), delta around softplus^-1(0.01..0.1), G = K."""
    g = torch.Generator().manual_seed(seed)
    ins = {
        "u": torch.randn(batch, dim, L, generator=g),
        "delta": torch.randn(batch, dim, L, generator=g) * 0.5 - 3.0,
        "A": -torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, K, D_STATE, L, generator=g),
        "C": torch.randn(batch, K, D_STATE, L, generator=g),
        "D": torch.ones(dim),
        "delta_bias": torch.rand(dim, generator=g) * 0.1,
    }
    if z:
        ins["z"] = torch.randn(batch, dim, L, generator=g)
    return {k: (v.to(device, dtype) if k in ("u", "delta", "B", "C", "z") else v.to(device))
            for k, v in ins.items()}


def out_and_grads(fn: Callable, ins: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    leaves = {k: v.clone().requires_grad_() for k, v in ins.items()}
    out, last = fn(**leaves, delta_softplus=True, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=g).to(out.device, out.dtype)
    gl = torch.randn(last.shape, generator=g).to(last.device, last.dtype)
    grads = torch.autograd.grad([out, last], list(leaves.values()), [go, gl])
    return out.detach(), last.detach(), dict(zip(leaves, grads, strict=True))


def usable_backends(device: torch.device) -> dict[str, str]:
    """triton, cuda, torch -> "" when usable on ``device``, else why not."""
    status = {}
    for b in ("triton", "cuda", "torch"):
        try:
            resolve_backend(b, device)
            status[b] = "" if (b != "cuda" or device.type == "cuda") else "needs a GPU"
        except RuntimeError as exc:
            status[b] = str(exc)[:200]
    return status


# ------------------------------------------------------------------------------------------------
def parity(device: torch.device, smoke: bool) -> dict:
    stages = SMOKE_STAGES if smoke else STAGES
    cases = [(c, hw, "float32", False) for c, hw in stages]
    cases += [(c, hw, "bfloat16", False) for c, hw in stages[-2:]]
    cases.append((*stages[-1], "float32", True))
    rows = []
    for i, (c, hw, dtn, with_z) in enumerate(cases):
        ins = scan_inputs(1, K * 2 * c, hw * hw, getattr(torch, dtn), device, seed=200 + i, z=with_z)
        out, last, grads = out_and_grads(lambda **kw: selective_scan(**kw, backend="triton"), ins, i)
        ins64 = {k: v.double() for k, v in ins.items()}
        out_r, last_r, grads_r = out_and_grads(selective_scan_ref, ins64, i)
        errs = {"out": rel(out, out_r), "last": rel(last, last_r),
                **{f"d{k}": rel(grads[k], grads_r[k]) for k in grads}}
        finite = all(bool(torch.isfinite(t.float()).all()) for t in (out, last, *grads.values()))
        ok = finite and max(errs.values()) <= TOL[dtn]
        rows.append({"C": c, "L": hw * hw, "dim": K * 2 * c, "dtype": dtn, "z": with_z,
                     "status": "ok" if ok else "FAIL", "finite": finite,
                     "rel": {k: float(f"{v:.3g}") for k, v in errs.items()}})
    return {"against": "ref (float64, same device)", "tolerance": TOL, "rows": rows,
            "all_ok": all(r["status"] == "ok" for r in rows)}


def scan_time(device: torch.device, smoke: bool, batch: int) -> dict:
    stages = SMOKE_STAGES if smoke else STAGES
    status = usable_backends(device)
    backends = [b for b, why in status.items() if not why]
    rows = []
    for c, hw in stages:
        ins = scan_inputs(batch, K * 2 * c, hw * hw, torch.float32, device, seed=c)
        row = {"C": c, "L": hw * hw, "dim": K * 2 * c, "batch": batch}
        for b in backends:
            fwd_ms, fwd_bwd_ms = scan_ms(device, ins, b, 1 if smoke else (3 if b == "torch" else 20))
            row[f"{b}_fwd_ms"], row[f"{b}_fwd_bwd_ms"] = round(fwd_ms, 3), round(fwd_bwd_ms, 3)
        if "cuda" in backends:
            row["cuda_over_triton_fwd"] = round(row["cuda_fwd_ms"] / row["triton_fwd_ms"], 3)
            row["cuda_over_triton_fwd_bwd"] = round(row["cuda_fwd_bwd_ms"] / row["triton_fwd_bwd_ms"], 3)
        rows.append(row)
    return {"dtype": "float32", "backends": status, "rows": rows, "target": "cuda_over_triton_fwd_bwd >= 0.5"}


def train_speed(device: torch.device, backend: str, precision: str, batch: int, steps: int) -> dict:
    from vmunet.models import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=NUM_CLASSES, in_chans=3, scan_backend=backend).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch, 224, 224), generator=g).to(device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    warm, bad = 3, 0
    for i in range(steps + warm):
        if i == warm:
            sync(device)
            t0 = time.perf_counter()
        with autocast:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bad += int(not torch.isfinite(loss))
    sync(device)
    sec = time.perf_counter() - t0
    rec = {"backend": backend, "precision": precision, "batch": batch, "steps": steps,
           "train_img_s": round(steps * batch / sec, 1), "ms_per_step": round(1e3 * sec / steps, 1),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "nonfinite_steps": bad}
    del model, opt
    return rec


def train(device: torch.device, batch: int, steps: int) -> dict:
    status = usable_backends(device)
    backends = [b for b in ("triton", "cuda") if not status[b]]
    rows = [train_speed(device, b, p, batch, steps) for p in ("fp32", "bf16-mixed") for b in backends]
    for r in rows:
        cuda = next((c for c in rows if c["backend"] == "cuda" and c["precision"] == r["precision"]), None)
        if r["backend"] == "triton" and cuda:
            r["triton_over_cuda"] = round(r["train_img_s"] / cuda["train_img_s"], 3)
    return {"model": MODEL, "size": 224, "rows": rows, "target": "triton_over_cuda >= 0.8"}


def sweep(device: torch.device, smoke: bool, batch: int) -> dict:
    from vmunet.ops import scan_triton

    stages = SMOKE_STAGES[:1] if smoke else [STAGES[0], STAGES[2]]
    settings = [(64, 4, 4), (32, 4, 4), (128, 2, 4), (64, 8, 8), (32, 8, 4), (64, 2, 2)]
    if smoke:
        settings = settings[:2]
    saved = (scan_triton.BLOCK_L, scan_triton.BLOCK_D_MAX, scan_triton.NUM_WARPS)
    rows = []
    try:
        for c, hw in stages:
            ins = scan_inputs(batch, K * 2 * c, hw * hw, torch.float32, device, seed=c)
            for bl, bd, nw in settings:
                scan_triton.BLOCK_L, scan_triton.BLOCK_D_MAX, scan_triton.NUM_WARPS = bl, bd, nw
                fwd_ms, fwd_bwd_ms = scan_ms(device, ins, "triton", 1 if smoke else 10)
                rows.append({"C": c, "L": hw * hw, "BLOCK_L": bl, "BLOCK_D_MAX": bd, "NUM_WARPS": nw,
                             "fwd_ms": round(fwd_ms, 3), "fwd_bwd_ms": round(fwd_bwd_ms, 3)})
    finally:
        scan_triton.BLOCK_L, scan_triton.BLOCK_D_MAX, scan_triton.NUM_WARPS = saved
    return {"batch": batch, "defaults": dict(zip(("BLOCK_L", "BLOCK_D_MAX", "NUM_WARPS"), saved, strict=True)),
            "rows": rows}


# ------------------------------------------------------------------------------------------------
def run_sections(device: torch.device, smoke: bool, batch: int, steps: int, do_sweep: bool,
                 save: Callable[[dict], None] = lambda res: None) -> dict:
    """Run every section, each guarded; ``save(res)`` after each one. Returns the results."""
    res: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter)",
                 "smoke": smoke, "sections": {}}
    try:
        import triton
        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    todo = [("parity", lambda: parity(device, smoke)), ("scan_time", lambda: scan_time(device, smoke, batch))]
    if device.type == "cuda":
        todo.append(("train", lambda: train(device, batch, steps)))
    if do_sweep:
        todo.append(("sweep", lambda: sweep(device, smoke, batch)))
    for name, fn in todo:
        t0 = time.perf_counter()
        try:
            rec = {"status": "ok", **fn()}
        except Exception as exc:  # record and go on: one call on a lent GPU must report everything
            rec = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500],
                   "traceback": traceback.format_exc()[-2000:]}
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        res["sections"][name] = rec
        logger.info("%s: %s (%.1f s)", name, rec["status"], rec["seconds"])
        save(res)
    return res


def markdown(res: dict) -> str:
    s = res["sections"]
    lines = [f"# Triton selective scan on {res['device']} (triton {res['triton']})"
             + (" - SMOKE: interpreter, numbers mean nothing" if res["smoke"] else ""), ""]
    for name, rec in s.items():
        lines.append(f"- {name}: {rec['status']} ({rec['seconds']} s) {rec.get('error', '')}")
    if s.get("parity", {}).get("rows"):
        lines += md_table(["C", "L", "dim", "dtype", "z", "status", "max rel"],
                          ([r["C"], r["L"], r["dim"], r["dtype"], r["z"], r["status"],
                            f"{max(r['rel'].values()):.2e}"] for r in s["parity"]["rows"]),
                          "Parity, triton vs float64 ref (max rel. error over out, last state, all grads)")
    if s.get("scan_time", {}).get("rows"):
        rows = s["scan_time"]["rows"]
        cols = [k for k in rows[0] if k.endswith("_ms") or k.startswith("cuda_over")]
        lines += md_table(["C", "L", "dim", "batch", *cols],
                          ([r["C"], r["L"], r["dim"], r["batch"], *(r.get(c, "") for c in cols)] for r in rows),
                          "Scan ms (median), float32")
    if s.get("train", {}).get("rows"):
        lines += md_table(["backend", "precision", "batch", "img/s", "ms/step", "peak GiB", "non-finite",
                           "triton/cuda"],
                          ([r["backend"], r["precision"], r["batch"], r["train_img_s"], r["ms_per_step"],
                            r["peak_gib"], r["nonfinite_steps"], r.get("triton_over_cuda", "")]
                           for r in s["train"]["rows"]),
                          "Training, vmunet 224x224")
    if s.get("sweep", {}).get("rows"):
        lines += md_table(["C", "L", "BLOCK_L", "BLOCK_D_MAX", "NUM_WARPS", "fwd", "fwd+bwd"],
                          ([r["C"], r["L"], r["BLOCK_L"], r["BLOCK_D_MAX"], r["NUM_WARPS"], r["fwd_ms"],
                            r["fwd_bwd_ms"]] for r in s["sweep"]["rows"]),
                          "Triton settings sweep (fwd / fwd+bwd ms)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_triton_check"), help="results folder")
    p.add_argument("--smoke", action="store_true", help="CPU through Triton's interpreter, tiny shapes")
    p.add_argument("--batch", type=int, default=None, help="batch (default 32; smoke 1)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per backend and precision")
    p.add_argument("--sweep", action="store_true", help="also time a few triton block settings")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_triton_check: no CUDA device (use --smoke on CPU)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (1 if args.smoke else 32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # on CPU (interpreter) the sliced scan keeps the smoke run short; a no-op on a GPU
    with fast_interpreter_scan() if device.type == "cpu" else contextlib.nullcontext():
        res = run_sections(device, args.smoke, batch, args.steps, args.sweep,
                           save=lambda r: write_json(out / "gpu_triton_check.json", r))
    md = markdown(res)
    with atomic_path(out / "gpu_triton_check.md") as tmp:
        tmp.write_text(md)
    print(md)
    secs = res["sections"]
    ok = all(r["status"] == "ok" for r in secs.values()) and secs.get("parity", {}).get("all_ok", False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

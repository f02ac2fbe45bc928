"""The whole GPU check in one run: kernel parity, model agreement, speed, memory, stability.

Made for ONE short call on a lent GPU machine (see benchmarks/gpu/device_check.sh and the
README's GPU section); every section is timed, guarded (an error is recorded, the next section
still runs) and written to ``<out>/gpu_check.json`` as soon as it ends; ``<out>/gpu_check.md``
holds the tables. Sections, in priority order:

1. ``env``: GPU, driver, torch/CUDA/Triton versions; where the kernel came from.
2. ``extension``: load the carried ``selective_scan_cuda`` (``--so``), else build it here from the
   sdist (``--sdist``; sm_XY of this GPU, ~2 min on 16 cores) and load that.
3. ``parity``: the "cuda" backend against the float64 "ref" loop ON THE GPU, at the four VM-UNet
   stage shapes (224x224 input: L = 3136, 784, 196, 49; dim = 4 directions x 2C), output and the
   gradient of every input, float32 and bfloat16 inputs; plus one z-gated case.
   ``rel`` = ||a - b|| / ||b|| over the whole tensor.
4. ``model_agreement``: the paper model's logits and parameter gradients with every GPU backend
   against the "torch" backend (same weights, same batch).
5. ``train``: paper model (``vmunet``, 9 classes), 224x224, batch 32: training img/s
   (forward + cross-entropy + backward + AdamW) over ``--steps`` steps with a non-finite count for
   loss and gradient norm, inference img/s, peak GPU memory; float32 and bf16-mixed (autocast).
6. ``scan_time``: forward and forward+backward milliseconds per stage shape at batch 32,
   "cuda" against "torch" (and "triton" when vmunet.ops has it); the median of CUDA-event timings.
7. ``original`` (``--original PATH``, a checkout of github:JCruan519/VM-UNet): the original
   model's training/inference img/s with its ``selective_scan_fn`` pointed at the SAME kernel
   wrapper, and the ratio ours/original.
8. ``cross_scan``: before/after of the fused cross-scan (vmunet/ops/cross_scan_fused.py): the
   model's training step ms (scan "cuda", batch ``--batch``, fp32 and bf16-mixed) with the plain
   "torch" cross-scan, the autograd "function" and the "triton" kernels, in the same run, with
   ``change_vs_torch_pct``; cross_scan + cross_merge forward+backward ms per stage shape; logits
   and gradients of each against "torch".
9. ``models``: ``--models`` (registered names; default vmunet and ultralight_vmunet, the latter at
   its paper's ISIC 256x256 / batch 8 and at 224x224 / batch 32): training and inference img/s,
   peak memory, non-finite steps, fp32 and bf16-mixed (the ``train`` section's timing), each row
   labelled with the cross-scan implementation that actually ran (the process default).
10. ``profile``: torch.profiler over a few training steps of ``--model`` (after warm-up), fp32 and
   bf16-mixed: the share of CUDA kernel time per category (selective scan, cross-scan/merge,
   layout copies, dtype casts, matmul, conv, norm, elementwise, optimizer, other;
   benchmarks/gpu/_profile.py) and the top-10 kernels.

``--sections a,b`` runs only those (env and extension always run); a section not run is absent
from the JSON and the Markdown, and the exit code asks only about those that ran.

``--smoke`` runs every section on CPU at tiny sizes, with the CPU stand-in extension
(benchmarks/gpu/standin) in place of the compiled kernel: it proves the script runs, not the
numbers (it is part of the test suite). The "triton" selective-scan backend is left out on CPU
(its interpreter takes minutes per model step; tests/ops and gpu_triton_check --smoke cover it);
the Triton cross-scan kernels run through the interpreter (TRITON_INTERPRET=1, set here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

import torch  # noqa: E402

if "--smoke" in sys.argv:
    # before vmunet's Triton modules are imported: the smoke run (CPU tensors, also on a GPU
    # machine) drives the tiny Triton cross-scan kernels through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402
from _common import PAPER_STAGES_224, md_table  # noqa: E402  (benchmarks/_common.py)
from _profile import CATEGORIES, profiler_records, summarize  # noqa: E402  (benchmarks/gpu/_profile.py)
from _timing import rel, scan_ms, sync, time_ms  # noqa: E402  (benchmarks/gpu/_timing.py)

from vmunet.data.fileio import atomic_path, write_json  # noqa: E402
from vmunet.layers import ss2d  # noqa: E402
from vmunet.models import create_model, list_models  # noqa: E402
from vmunet.ops import BACKENDS, cross_merge, cross_scan, resolve_backend, scan_cuda, selective_scan  # noqa: E402
from vmunet.ops import cross_scan_fused as csf  # noqa: E402
from vmunet.ops.scan_ref import selective_scan_ref  # noqa: E402

logger = logging.getLogger("gpu_check")
STANDIN_DIR = ROOT / "benchmarks" / "gpu" / "standin"
MODEL, NUM_CLASSES = "vmunet", 9
STAGES = PAPER_STAGES_224
D_STATE, K = 16, 4
TOL = {"float32": 2e-4, "bfloat16": 2e-2}
AGREE_TOL = {"logits": 1e-3, "grads": 1e-2}


class Check:
    """Results, the clock and the output files of one run."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.res: dict = {"smoke": args.smoke, "sections": {}}
        self.device = torch.device("cpu" if args.smoke else "cuda")

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.res["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        write_json(self.out / "gpu_check.json", self.res)

    def section(self, name: str, fn: Callable[[], dict], need_s: float) -> dict:
        """Run ``fn`` if ``need_s`` seconds are left; record its dict, or the error, and save."""
        if self.left() < need_s:
            rec = {"status": "skipped", "why": f"time budget: {self.left():.0f} s left, needs ~{need_s:.0f} s"}
        else:
            t = time.perf_counter()
            try:
                rec = {"status": "ok", **fn()}
            except Exception as exc:  # record and go on: one failed section must not hide the rest
                rec = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-3000:]}
            rec["seconds"] = round(time.perf_counter() - t, 1)
        self.res["sections"][name] = rec
        self.save()
        logger.info("[%6.1f s] %-16s %s%s", time.perf_counter() - self.t0, name, rec["status"],
                    f": {rec.get('error') or rec.get('why')}" if rec["status"] != "ok" else "")
        return rec

    def sync(self) -> None:
        sync(self.device)


# ------------------------------------------------------------------------------------------------
# 1, 2: environment and kernel
# ------------------------------------------------------------------------------------------------
def env_info(chk: Check) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "device": str(chk.device)}
    with contextlib.suppress(Exception):
        import triton
        info["triton"] = triton.__version__
    if chk.device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1))
    info["backends"] = list(BACKENDS)
    return info


def _use_extension_dir(folder: Path) -> None:
    os.environ[scan_cuda.EXTENSION_DIR_ENV] = str(folder)
    sys.modules.pop(scan_cuda.EXTENSION_NAME, None)
    scan_cuda.extension.cache_clear()


def load_extension(chk: Check) -> dict:
    a = chk.args
    rec: dict = {}
    if a.smoke:
        _use_extension_dir(STANDIN_DIR)
        rec["source"] = "CPU stand-in (benchmarks/gpu/standin)"
    elif a.so:
        so = Path(a.so)
        _use_extension_dir(so if so.is_dir() else so.parent)
        rec["source"] = f"carried: {so}"
        manifest = (so if so.is_dir() else so.parent) / f"{scan_cuda.EXTENSION_NAME}.json"
        if manifest.is_file():
            rec["manifest"] = json.loads(manifest.read_text())
    ext = scan_cuda.extension()
    if ext is None and not a.smoke:
        rec["carried_load_error"] = scan_cuda.load_error()
        if not a.sdist:
            raise RuntimeError(f"no loadable extension ({scan_cuda.load_error()}) and no --sdist to build from")
        import build_selective_scan as bss

        cap = torch.cuda.get_device_capability()
        out = Path(tempfile.mkdtemp(prefix="ssc_"))
        t = time.perf_counter()
        bss.build(Path(a.sdist), out, arch=f"{cap[0]}{cap[1]}", dtypes=a.build_dtypes,
                  jobs=os.cpu_count(), build_dir=out / "build")
        rec["built_here_s"] = round(time.perf_counter() - t, 1)
        rec["source"] = f"built here from {a.sdist} (sm_{cap[0]}{cap[1]}, {a.build_dtypes})"
        rec["manifest"] = json.loads((out / f"{scan_cuda.EXTENSION_NAME}.json").read_text())
        _use_extension_dir(out)
        ext = scan_cuda.extension()
    if ext is None:
        raise RuntimeError(f"selective_scan_cuda does not load: {scan_cuda.load_error()}")
    rec["file"] = getattr(ext, "__file__", None)
    return rec


# ------------------------------------------------------------------------------------------------
# 3: parity against the float64 reference on the device
# ------------------------------------------------------------------------------------------------
def scan_inputs(batch: int, dim: int, L: int, dtype: torch.dtype, device, seed: int, z: bool = False) -> dict:
    """Inputs shaped and scaled as SS2D makes them (A = -exp(A_log), dt bias from [1e-3, 0.1])."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    ins = dict(u=r(batch, dim, L), delta=r(batch, dim, L) * 0.1,
               A=-torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(dim, 1),
               B=r(batch, K, D_STATE, L), C=r(batch, K, D_STATE, L), D=torch.ones(dim),
               delta_bias=dt + torch.log(-torch.expm1(-dt)))  # inverse softplus, as SS2D's init
    if z:
        ins["z"] = r(batch, dim, L)
    seq = {"u", "delta", "B", "C", "z"}
    return {k: v.to(device=device, dtype=dtype if k in seq else torch.float32) for k, v in ins.items()}


def out_and_grads(fn: Callable, ins: dict, seed: int, grad_dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    """Output and input gradients for a random upstream gradient, rounded to ``grad_dtype`` first
    (so the kernel and the float64 reference get the same values)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in ins.items()}
    out = fn(**leaves, delta_softplus=True)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(grad_dtype)
    g = g.to(out.device, out.dtype)
    grads = torch.autograd.grad(out, list(leaves.values()), g)
    return out.detach(), dict(zip(leaves, grads, strict=True))


_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _manifest_dtypes(chk: Check) -> set[str]:
    """The input dtypes (torch names) the loaded extension's build manifest lists; every one for an
    upstream build ("all"); none when there is no manifest (e.g. ``pip install mamba-ssm``)."""
    manifest = chk.res["sections"].get("extension", {}).get("manifest") or {}
    dtypes = manifest.get("dtypes", [])
    if dtypes == "all":
        return set(_DTYPE_NAMES.values())
    return {_DTYPE_NAMES[d] for d in dtypes if d in _DTYPE_NAMES}


def parity(chk: Check) -> dict:
    smoke = chk.args.smoke
    rows, worst = [], {}
    stages = [(c // 16, hw // 4) for c, hw in STAGES] if smoke else STAGES
    cases = [(c, hw, dt, False) for c, hw in stages for dt in ("float32", "bfloat16")]
    cases.append((*stages[-1], "float32", True))
    for i, (c, hw, dtn, with_z) in enumerate(cases):
        dtype = getattr(torch, dtn)
        ins = scan_inputs(1 if smoke else 2, K * 2 * c, hw * hw, dtype, chk.device, seed=100 + i, z=with_z)
        row = {"C": c, "L": hw * hw, "dim": K * 2 * c, "dtype": dtn, "z": with_z}
        try:
            out, grads = out_and_grads(lambda **kw: selective_scan(**kw, backend="cuda"), ins, i, dtype)
        except RuntimeError as exc:
            if "not implemented for input type" in str(exc):  # a trimmed build without this dtype ...
                # ... unless its manifest says it was built with it: then the build is broken
                listed = dtn in _manifest_dtypes(chk)
                rows.append({**row, "status": "FAIL" if listed else "not in this build",
                             **({"error": str(exc).splitlines()[0][:200]} if listed else {})})
                continue
            raise
        ins64 = {k: v.double() for k, v in ins.items()}  # the same (rounded) values, exactly
        out_r, grads_r = out_and_grads(selective_scan_ref, ins64, i, dtype)
        errs = {"out": rel(out, out_r), **{f"d{k}": rel(grads[k], grads_r[k]) for k in grads}}
        finite = bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(v).all()) for v in grads.values())
        ok = finite and max(errs.values()) <= TOL[dtn]
        rows.append({**row, "status": "ok" if ok else "FAIL", "finite": finite,
                     "rel": {k: float(f"{v:.3g}") for k, v in errs.items()}})
        worst[dtn] = max(worst.get(dtn, 0.0), max(errs.values()))
        del out, grads, out_r, grads_r
    all_ok = all(r["status"] in ("ok", "not in this build") for r in rows) and "float32" in worst
    return {"all_ok": all_ok, "tolerance": TOL, "worst_rel": worst, "rows": rows}


# ------------------------------------------------------------------------------------------------
# 4: model agreement across backends
# ------------------------------------------------------------------------------------------------
def gpu_backends(chk: Check) -> dict[str, str]:
    """Backend name -> "" when usable here, else why not."""
    status = {}
    for b in BACKENDS:
        if b in ("ref", "numba"):
            continue  # CPU-only or far too slow at these sizes
        if b == "triton" and chk.device.type != "cuda":
            # on CPU Triton runs only in its interpreter, minutes for one small model step (what
            # made the smoke test exceed 300 s); tests/ops and gpu_triton_check --smoke cover it
            status[b] = "CPU: the Triton interpreter is too slow for a model (GPU only here)"
            continue
        try:
            resolve_backend(b, chk.device)
            status[b] = ""
        except RuntimeError as exc:
            status[b] = str(exc)[:200]
    return status


def build_model(chk: Check, backend: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(chk.args.model, num_classes=NUM_CLASSES, in_chans=3, scan_backend=backend).to(chk.device)


def model_agreement(chk: Check) -> dict:
    size, batch = (32, 1) if chk.args.smoke else (224, 2)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, 3, size, size, generator=g).to(chk.device)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g).to(chk.device)
    usable = [b for b, why in gpu_backends(chk).items() if not why]
    base = build_model(chk, "torch")
    state = {k: v.clone() for k, v in base.state_dict().items()}
    results = {}
    for b in ["torch"] + [b for b in usable if b != "torch"]:
        m = build_model(chk, b)
        m.load_state_dict(state)
        logits = m(x)
        F.cross_entropy(logits, y).backward()
        grads = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
        with torch.no_grad(), torch.autocast(chk.device.type, dtype=torch.bfloat16):
            bf = m.eval()(x).float()
        results[b] = (logits.detach(), grads, bf)
        del m
    ref_logits, ref_grads, ref_bf = results["torch"]
    rows = []
    for b, (lg, gr, bf) in results.items():
        if b == "torch":
            continue
        r = {"backend": b, "logits_rel": rel(lg, ref_logits), "grads_rel": rel(gr, ref_grads),
             "bf16_logits_rel": rel(bf, ref_bf)}
        r["ok"] = r["logits_rel"] <= AGREE_TOL["logits"] and r["grads_rel"] <= AGREE_TOL["grads"]
        rows.append(r)
    return {"against": "torch", "size": size, "batch": batch, "tolerance": AGREE_TOL, "rows": rows,
            "all_ok": bool(rows) and all(r["ok"] for r in rows)}


# ------------------------------------------------------------------------------------------------
# 5, 7: training and inference throughput (our model and the original)
# ------------------------------------------------------------------------------------------------
def throughput(chk: Check, make_model: Callable, precision: str, steps: int, infer_iters: int,
               max_s: float = 100.0, size: int | None = None, batch: int | None = None,
               num_classes: int = NUM_CLASSES) -> dict:
    """Train ``steps`` steps (fewer if ``max_s`` seconds pass: ``steps`` says how many ran) and time
    the steps after a short warm-up; then time ``infer_iters`` inference batches. ``size`` and
    ``batch`` default to ``--size``/``--batch``; the loss is cross-entropy over ``num_classes``
    classes, binary cross-entropy on the logits for one class (ISIC's task)."""
    a = chk.args
    size, batch = size or a.size, batch or a.batch
    dev = chk.device
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(batch, 3, size, size, generator=g).to(dev)
    y = torch.randint(0, max(2, num_classes), (batch, size, size), generator=g).to(dev)
    if num_classes == 1:
        y = y[:, None].float()

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return (F.binary_cross_entropy_with_logits(logits.float(), y) if num_classes == 1
                else F.cross_entropy(logits, y))

    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    warm = min(5, max(1, steps // 10))
    bad = torch.zeros((), device=dev)
    max_gn = torch.zeros((), device=dev)
    model.train()
    t_start = None
    deadline = time.perf_counter() + max_s  # a slow model must not eat the whole device call
    done = 0
    for i in range(steps):
        if i == warm:
            chk.sync()
            t_start = time.perf_counter()
        if i > warm and i % 10 == 0 and time.perf_counter() > deadline:
            break
        with autocast:
            loss = loss_fn(model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        bad += (~torch.isfinite(loss)).float() + (~torch.isfinite(gn)).float()
        max_gn = torch.maximum(max_gn, gn.detach().float())
        opt.step()
        done = i + 1
    chk.sync()
    train_s = time.perf_counter() - t_start
    timed = done - warm
    rec = {"precision": precision, "size": size, "batch": batch, "steps": done, "steps_asked": steps,
           "timed_steps": timed,
           "train_img_s": round(timed * batch / train_s, 1), "train_ms_per_step": round(1e3 * train_s / timed, 1),
           "nonfinite_steps": int(bad.item()), "final_loss": float(loss.item()),
           "max_grad_norm": float(max_gn.item())}
    if dev.type == "cuda":
        rec["train_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    model.eval()
    with torch.inference_mode(), autocast:
        for i in range(infer_iters + 2):
            if i == 2:
                chk.sync()
                t = time.perf_counter()
            model(x)
        chk.sync()
    infer_s = time.perf_counter() - t
    rec["infer_img_s"] = round(infer_iters * batch / infer_s, 1)
    if dev.type == "cuda":
        rec["infer_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model, opt
    return rec


def train_infer(chk: Check, backend: str = "cuda") -> dict:
    a = chk.args
    rows = [throughput(chk, lambda: build_model(chk, backend), p, a.steps, a.infer_iters)
            for p in ("fp32", "bf16-mixed")]
    return {"model": a.model, "backend": backend, "rows": rows,
            "no_nan": all(r["nonfinite_steps"] == 0 for r in rows)}


def _timm_shim() -> str:
    """The original code imports timm's DropPath/to_2tuple/trunc_normal_; use timm when it imports
    (the GPU image has it), else equivalents (monai's DropPath, torch's trunc_normal_)."""
    try:
        import timm.models.layers  # noqa: F401
        return "timm"
    except Exception:
        import types

        from monai.networks.layers import DropPath
        layers = types.ModuleType("timm.models.layers")
        layers.DropPath = DropPath
        layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        layers.trunc_normal_ = torch.nn.init.trunc_normal_
        timm = types.ModuleType("timm")
        models = types.ModuleType("timm.models")
        timm.models, models.layers = models, layers
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
        return "shim (timm not installed)"


def original(chk: Check) -> dict:
    a = chk.args
    path = Path(a.original).resolve()
    if not (path / "models" / "vmunet" / "vmamba.py").is_file():
        raise FileNotFoundError(f"--original {path}: no models/vmunet/vmamba.py (a VM-UNet checkout?)")
    timm = _timm_shim()
    sys.path.insert(0, str(path))
    import importlib

    vmamba = importlib.import_module("models.vmunet.vmamba")
    vmunet_mod = importlib.import_module("models.vmunet.vmunet")

    def same_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                    return_last_state=False):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                              backend="cuda")

    vmamba.selective_scan_fn = same_kernel  # forward_corev0 reads this module global

    # configs/config_setting_synapse.py of the original: depths 2,2,2,2 / 2,2,2,1, dpr 0.2
    depths, depths_decoder = ([1] * 4, [1] * 4) if a.smoke else ([2, 2, 2, 2], [2, 2, 2, 1])

    def make():
        torch.manual_seed(0)
        return vmunet_mod.VMUNet(input_channels=3, num_classes=NUM_CLASSES, depths=depths,
                                 depths_decoder=depths_decoder, drop_path_rate=0.2).to(chk.device)

    steps = max(3, a.steps // 4)
    rows = [throughput(chk, make, p, steps, a.infer_iters, max_s=40.0) for p in ("fp32", "bf16-mixed")]
    ours = chk.res["sections"].get("train", {}).get("rows", [])
    for r in rows:
        mine = next((o for o in ours if o["precision"] == r["precision"]), None)
        if mine:
            r["ours_over_original_train"] = round(mine["train_img_s"] / r["train_img_s"], 3)
            r["ours_over_original_infer"] = round(mine["infer_img_s"] / r["infer_img_s"], 3)
    return {"path": str(path), "timm": timm, "rows": rows}


# ------------------------------------------------------------------------------------------------
# 6: scan timings
# ------------------------------------------------------------------------------------------------
def scan_time(chk: Check) -> dict:
    smoke = chk.args.smoke
    batch = 1 if smoke else chk.args.batch
    stages = [(c // 16, hw // 4) for c, hw in STAGES] if smoke else STAGES
    usable = [b for b, why in gpu_backends(chk).items() if not why]
    rows = []
    for c, hw in stages:
        ins = scan_inputs(batch, K * 2 * c, hw * hw, torch.float32, chk.device, seed=c)
        for b in usable:
            fwd_ms, fwd_bwd_ms = scan_ms(chk.device, ins, b, 3 if smoke or b == "torch" else 10)
            rows.append({"C": c, "L": hw * hw, "dim": K * 2 * c, "batch": batch, "backend": b,
                         "fwd_ms": round(fwd_ms, 3), "fwd_bwd_ms": round(fwd_bwd_ms, 3)})
    for r in rows:
        torch_row = next(t for t in rows if t["L"] == r["L"] and t["backend"] == "torch")
        r["fwd_bwd_speedup_vs_torch"] = round(torch_row["fwd_bwd_ms"] / r["fwd_bwd_ms"], 2)
    return {"rows": rows}


# ------------------------------------------------------------------------------------------------
# 8: cross-scan before/after (the plain torch code against the fused Function / Triton kernels)
# ------------------------------------------------------------------------------------------------
def cross_scan_impls(chk: Check) -> dict[str, str]:
    """Cross-scan implementation -> "" when it runs here as itself, else why not."""
    probe = torch.zeros(1, 1, 2, 2, device=chk.device)
    status = {}
    for impl in ("torch", "function", "triton"):
        with csf.use_cross_scan_impl(impl):
            got = csf.resolve_impl(probe, csf.FUSED_DIRECTIONS)
        status[impl] = "" if got == impl else f"falls back to {got!r} here"
    return status


def cross_scan_section(chk: Check) -> dict:
    """Before/after of VMUNET_CROSS_SCAN: (a) cross_scan + cross_merge forward+backward ms per
    SS2D stage shape (d_inner = 2C channels, batch ``--batch``); (b) the model's training step
    (forward + cross-entropy + backward + AdamW, scan backend "cuda") in ms for each
    implementation, fp32 and bf16-mixed, the same weights and batch, measured in this run; and the
    logits / gradients of each implementation against "torch" (only the order of additions in the
    backward differs, so these should sit at float32 rounding)."""
    a = chk.args
    smoke, dev = a.smoke, chk.device
    impls = cross_scan_impls(chk)
    usable = [i for i, why in impls.items() if not why]
    batch = 1 if smoke else a.batch
    stages = [(c // 16, hw // 4) for c, hw in STAGES] if smoke else STAGES
    ops_rows = []
    for c, hw in stages:
        d = 2 * c  # SS2D's d_inner
        x = torch.randn(batch, d, hw, hw, device=dev, requires_grad=True)
        gy = torch.randn(batch, d, hw * hw, device=dev)
        row = {"C": d, "H=W": hw, "batch": batch}
        for impl in usable:
            def fwd_bwd(impl=impl, x=x, gy=gy, hw=hw):
                with csf.use_cross_scan_impl(impl):
                    torch.autograd.grad(cross_merge(cross_scan(x), hw, hw), x, gy)

            row[f"{impl}_ms"] = round(time_ms(dev, fwd_bwd, 1 if smoke else 20), 4)
        ops_rows.append(row)

    # smoke: one step each (the Triton kernels run in the interpreter on CPU, ~0.05 s a launch)
    size, steps, warm = a.size, (1 if smoke else 20), (0 if smoke else 3)
    model = build_model(chk, "cuda")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(13)
    xb = torch.randn(a.batch, 3, size, size, generator=g).to(dev)
    yb = torch.randint(0, NUM_CLASSES, (a.batch, size, size), generator=g).to(dev)
    agree, ref = [], None
    for impl in usable:  # one step each from the same weights: logits and gradients
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(17)  # the same DropPath draws for every implementation
        with csf.use_cross_scan_impl(impl):
            logits = model(xb)
            F.cross_entropy(logits, yb).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        if ref is None:
            ref = (logits.detach(), grads)
        else:
            agree.append({"impl": impl, "logits_rel": rel(logits, ref[0]), "grads_rel": rel(grads, ref[1])})
    del logits, grads, ref
    step_rows = []
    for precision in ("fp32", "bf16-mixed"):
        autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16-mixed"
                    else contextlib.nullcontext())
        for impl in usable:
            model.load_state_dict(state)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
            done, deadline = 0, None
            with csf.use_cross_scan_impl(impl):
                for i in range(warm + steps):
                    if i == warm:
                        chk.sync()
                        t0 = time.perf_counter()
                        deadline = t0 + (5.0 if smoke else 8.0)  # cap: one impl must not eat the call
                    with autocast:
                        loss = F.cross_entropy(model(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if i >= warm:
                        done += 1
                        if time.perf_counter() > deadline and done >= min(2, steps):
                            break
                chk.sync()
            ms = 1e3 * (time.perf_counter() - t0) / done
            step_rows.append({"precision": precision, "impl": impl, "steps": done, "ms_per_step": round(ms, 2),
                              "finite": bool(torch.isfinite(loss).item())})
            del opt
    for r in step_rows:
        base = next(t for t in step_rows if t["precision"] == r["precision"] and t["impl"] == "torch")
        r["change_vs_torch_pct"] = round(100.0 * (r["ms_per_step"] - base["ms_per_step"]) / base["ms_per_step"], 1)
    del model
    return {"impls": impls, "model": a.model, "size": size, "batch": a.batch, "ops_rows": ops_rows,
            "agreement": agree, "step_rows": step_rows,
            "all_ok": all(r["finite"] for r in step_rows)
            and all(r["logits_rel"] <= AGREE_TOL["logits"] and r["grads_rel"] <= AGREE_TOL["grads"] for r in agree)}


# ------------------------------------------------------------------------------------------------
# 9: every named model's throughput
# ------------------------------------------------------------------------------------------------
#: the ``models`` section's rows per model: (size, batch, classes, what the row is); a model not
#: listed gets --size/--batch and 9 classes (Synapse, the paper's VM-UNet setting). UltraLight
#: VM-UNet at its paper's ISIC setting (256x256, batch 8, binary: one logit, BCE) and at vmunet's
#: 224x224, batch 32, to compare the two.
MODEL_CASES: dict[str, tuple[tuple[int, int, int, str], ...]] = {
    "ultralight_vmunet": ((256, 8, 1, "paper (ISIC)"), (224, 32, 1, "as vmunet")),
}
MODELS_DEFAULT, MODELS_SMOKE = "vmunet,ultralight_vmunet", "vmunet_test,ultralight_vmunet"


def resolved_cross_scan(dev: torch.device) -> dict[str, str]:
    """The cross-scan implementation SS2D runs on ``dev`` for VMamba's four orders, in training
    (gradients on) and in inference (off): the process default, whatever it is today."""
    probe = torch.zeros(1, 1, 2, 2, device=dev)
    with torch.enable_grad():
        train = csf.resolve_impl(probe, csf.FUSED_DIRECTIONS)
    with torch.inference_mode():
        infer = csf.resolve_impl(probe, csf.FUSED_DIRECTIONS)
    return {"train": train, "infer": infer}


def models_section(chk: Check) -> dict:
    """Training and inference img/s, peak memory and non-finite steps of each ``--models`` model
    (scan backend "cuda", the process's default cross-scan), fp32 and bf16-mixed: the
    :func:`throughput` of the ``train`` section, ``--model-steps`` steps (warm-up excluded), each
    row capped at ``--model-max-s`` seconds of training."""
    a = chk.args
    cs = resolved_cross_scan(chk.device)
    rows = []
    for name in a.models:
        cases = MODEL_CASES.get(name, ((a.size, a.batch, NUM_CLASSES, ""),))
        for size, batch, classes, what in cases:
            if a.smoke:
                size, batch = 32, 1  # one small step per row: the code path, not the numbers
            info: dict = {}

            def make(name=name, classes=classes, info=info):
                torch.manual_seed(0)
                m = create_model(name, num_classes=classes, in_chans=3, scan_backend="cuda").to(chk.device)
                info["params"] = sum(p.numel() for p in m.parameters())
                info["cross_scan"] = any(isinstance(mod, ss2d.SS2D) for mod in m.modules())
                return m

            for precision in ("fp32", "bf16-mixed"):
                r = throughput(chk, make, precision, a.model_steps, a.infer_iters, max_s=a.model_max_s,
                               size=size, batch=batch, num_classes=classes)
                rows.append({"model": name, "case": what, "classes": classes, "params": info["params"],
                             "cross_scan_train": cs["train"] if info["cross_scan"] else "n/a",
                             "cross_scan_infer": cs["infer"] if info["cross_scan"] else "n/a", **r})
    return {"backend": "cuda", "cross_scan_impl": cs, "rows": rows,
            "no_nan": bool(rows) and all(r["nonfinite_steps"] == 0 for r in rows)}


# ------------------------------------------------------------------------------------------------
# 10: where a training step's time goes (torch.profiler)
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def labelled_cross_scan():
    """SS2D's cross_scan / cross_merge calls inside ``record_function`` labels, so the profile
    finds their forward ops whatever the implementation ("torch" has no op of its own; the fused
    ones are also named by their autograd Functions, forward and backward). The backward of the
    "torch" implementation stays unlabelled (autograd nodes Stack/Flip/...Backward: layout copies)."""
    from torch.profiler import record_function

    scan, merge = ss2d.cross_scan, ss2d.cross_merge

    def labelled_scan(*args, **kwargs):
        with record_function("vmunet::cross_scan"):
            return scan(*args, **kwargs)

    def labelled_merge(*args, **kwargs):
        with record_function("vmunet::cross_merge"):
            return merge(*args, **kwargs)

    ss2d.cross_scan, ss2d.cross_merge = labelled_scan, labelled_merge
    try:
        yield
    finally:
        ss2d.cross_scan, ss2d.cross_merge = scan, merge


def profile_section(chk: Check) -> dict:
    """torch.profiler over ``--profile-steps`` training steps (forward + cross-entropy + backward +
    AdamW, scan "cuda", the default cross-scan) of ``--model`` at ``--size``/``--batch`` after 3
    warm-up steps, fp32 and bf16-mixed: the share of CUDA kernel time per category
    (benchmarks/gpu/_profile.py) and the top-10 kernels. On CPU (--smoke): ops' self CPU time, one
    step, fp32 only."""
    from torch.profiler import ProfilerActivity, profile

    a = chk.args
    dev = chk.device
    on_cuda = dev.type == "cuda"
    warm, steps = (1, 1) if a.smoke else (3, a.profile_steps)
    model = build_model(chk, "cuda")
    g = torch.Generator().manual_seed(19)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g).to(dev)
    y = torch.randint(0, NUM_CLASSES, (a.batch, a.size, a.size), generator=g).to(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    runs = []
    # smoke: fp32 only, the same code as bf16-mixed; on CPU bf16 convolutions fall back to a slow
    # per-sample path whose ~10^4 profiler events took 10 s to read on the 2-core VM
    for precision in ("fp32",) if a.smoke else ("fp32", "bf16-mixed"):
        autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16-mixed"
                    else contextlib.nullcontext())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)

        def step(opt=opt, autocast=autocast) -> None:
            with autocast:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(warm):
            step()
        chk.sync()
        with labelled_cross_scan(), profile(activities=activities) as prof:
            t = time.perf_counter()
            for _ in range(steps):
                step()
            chk.sync()
            wall_s = time.perf_counter() - t
        t = time.perf_counter()
        records, link = profiler_records(prof.events(), on_cuda)
        if not records:  # e.g. CUPTI unavailable: say so rather than a table of zeros
            raise RuntimeError(f"the profiler recorded no {'CUDA kernels' if on_cuda else 'CPU ops'} ({precision})")
        summary = summarize(records)
        runs.append({"precision": precision, "steps": steps, "clock": "CUDA kernel time" if on_cuda else "CPU self time",
                     "ms_per_step": round(summary["total_us"] / 1e3 / steps, 2),
                     "profiled_wall_ms_per_step": round(1e3 * wall_s / steps, 2), **link,
                     "parse_s": round(time.perf_counter() - t, 1), **summary})
        del opt, prof, records
    return {"model": a.model, "size": a.size, "batch": a.batch, "backend": "cuda",
            "cross_scan_impl": resolved_cross_scan(dev)["train"], "categories": list(CATEGORIES), "runs": runs}


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    s = res["sections"]
    env = s.get("env", {})
    lines = [f"# GPU check ({'SMOKE, CPU stand-in: not GPU numbers' if res['smoke'] else env.get('gpu', '?')})",
             "", f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), triton {env.get('triton')}, "
             f"python {env.get('python')}; total {res.get('elapsed_s')} s", ""]
    notes = []
    for name, rec in s.items():
        note = rec.get("error") or rec.get("why") or ""
        if name == "extension":
            note = note or rec.get("source", "")
        if "all_ok" in rec:
            note = note or f"all_ok={rec['all_ok']}"
        notes.append([name, rec["status"], rec.get("seconds", ""), str(note)[:120]])
    lines += md_table(["section", "status", "s", "note"], notes)
    if s.get("parity", {}).get("rows"):
        lines += md_table(["C", "L", "dim", "dtype", "z", "status", "max rel"],
                          ([r["C"], r["L"], r["dim"], r["dtype"], r["z"], r["status"],
                            max(r["rel"].values()) if "rel" in r else ""] for r in s["parity"]["rows"]),
                          "Parity, cuda vs float64 ref on the device (max rel. error over out and all grads)")
    if s.get("model_agreement", {}).get("rows"):
        lines += md_table(["backend", "logits", "grads", "bf16 logits", "ok"],
                          ([r["backend"], f"{r['logits_rel']:.2e}", f"{r['grads_rel']:.2e}",
                            f"{r['bf16_logits_rel']:.2e}", r["ok"]] for r in s["model_agreement"]["rows"]),
                          "Model agreement against the torch backend (rel. error)")
    for name in ("train", "original"):
        if s.get(name, {}).get("rows"):
            lines += md_table(["precision", "size", "batch", "steps", "train img/s", "infer img/s", "train peak",
                               "non-finite steps", "ours/original train", "ours/original infer"],
                              ([r["precision"], r["size"], r["batch"], r["steps"], r["train_img_s"],
                                r["infer_img_s"], r.get("train_peak_gib", "n/a"), r["nonfinite_steps"],
                                r.get("ours_over_original_train", ""), r.get("ours_over_original_infer", "")]
                               for r in s[name]["rows"]),
                              f"{'vmunet' if name == 'train' else 'original VM-UNet'} (scan: cuda), img/s; peak GiB")
    if s.get("scan_time", {}).get("rows"):
        lines += md_table(["C", "L", "dim", "batch", "backend", "fwd", "fwd+bwd", "fwd+bwd speed-up vs torch"],
                          ([r["C"], r["L"], r["dim"], r["batch"], r["backend"], r["fwd_ms"], r["fwd_bwd_ms"],
                            f"{r['fwd_bwd_speedup_vs_torch']}x"] for r in s["scan_time"]["rows"]),
                          "Selective scan, float32, ms (median)")
    cs = s.get("cross_scan", {})
    if cs.get("step_rows"):
        impls = [i for i, why in cs["impls"].items() if not why]
        lines += md_table(["precision", "impl", "steps", "ms/step", "change vs torch"],
                          ([r["precision"], r["impl"], r["steps"], r["ms_per_step"],
                            f"{r['change_vs_torch_pct']:+.1f}%"] for r in cs["step_rows"]),
                          f"Cross-scan before/after: training step of {cs['model']} ({cs['size']}x{cs['size']}, "
                          f"batch {cs['batch']}, scan cuda), ms; change vs the plain torch cross-scan")
        lines += md_table(["C", "H=W", "batch", *impls],
                          ([r["C"], r["H=W"], r["batch"], *(r.get(f"{i}_ms", "") for i in impls)]
                           for r in cs["ops_rows"]),
                          "cross_scan + cross_merge forward+backward, ms (median)")
        for r in cs["agreement"]:
            lines.append(f"\n{r['impl']} vs torch: logits rel {r['logits_rel']:.2e}, grads rel {r['grads_rel']:.2e}")
        lines.append("")
    ms = s.get("models", {})
    if ms.get("rows"):
        lines += md_table(["model", "case", "params", "cross-scan (train/infer)", "precision", "size", "batch", "steps",
                           "train img/s", "infer img/s", "train peak", "infer peak", "non-finite steps"],
                          ([r["model"], r["case"], f"{r['params']:,}", "n/a" if r["cross_scan_train"] == "n/a" else f"{r['cross_scan_train']}/{r['cross_scan_infer']}",
                            r["precision"], r["size"], r["batch"], r["timed_steps"],
                            r["train_img_s"], r["infer_img_s"], r.get("train_peak_gib", "n/a"),
                            r.get("infer_peak_gib", "n/a"), r["nonfinite_steps"]] for r in ms["rows"]),
                          "Models (scan: cuda), img/s; peak GiB; steps = timed training steps (warm-up excluded)")
    pr = s.get("profile", {})
    if pr.get("runs"):
        runs = pr["runs"]
        head = (f"Where a training step's time goes: {pr['model']} ({pr['size']}x{pr['size']}, batch {pr['batch']}, "
                f"scan cuda, cross-scan {pr['cross_scan_impl']}), {runs[0]['clock']} per category, "
                f"{runs[0]['steps']} profiled step(s) after warm-up")
        lines += md_table(["category", *(f"{r['precision']} ms/step" for r in runs), *(f"{r['precision']} share" for r in runs)],
                          ([c, *(round(r["categories"][c]["us"] / 1e3 / r["steps"], 2) for r in runs),
                            *(f"{100 * r['categories'][c]['share']:.1f}%" for r in runs)] for c in pr["categories"]),
                          head)
        lines.append(" ".join(f"{r['precision']}: {r['ms_per_step']} ms/step in kernels/ops, {r['profiled_wall_ms_per_step']} "
                              f"ms/step wall under the profiler, coverage {r['coverage']}, linked {r['linked']}."
                              for r in runs) + "\n")
        for r in runs:
            lines += md_table(["#", "kernel / op", "category", "calls", "ms/step", "share"],
                              ([i + 1, t["name"][:110].replace("|", "\\|"), t["category"], t["calls"],
                                round(t["us"] / 1e3 / r["steps"], 3), f"{100 * t['share']:.1f}%"]
                               for i, t in enumerate(r["top"])),
                              f"Top 10 by {r['clock']}, {r['precision']}")
    return "\n".join(lines) + "\n"


#: every section, in the order they run (``--sections`` picks some; env and extension always run:
#: the rest needs the kernel they load)
SECTIONS: tuple[str, ...] = ("parity", "model_agreement", "train", "scan_time", "original", "cross_scan", "models",
                             "profile")
ALWAYS: tuple[str, ...] = ("env", "extension")


def parse_sections(text: str) -> list[str]:
    """``--sections``: "all" or comma-separated names of :data:`SECTIONS` (env and extension may be
    named; they run anyway), in the order given by SECTIONS; ``ValueError`` naming the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(SECTIONS)
    bad = [n for n in names if n not in SECTIONS + ALWAYS]
    if bad or not names:
        raise ValueError(f"--sections: unknown section(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"valid: all, {', '.join(ALWAYS + SECTIONS)}")
    return [n for n in SECTIONS if n in names]


def parse_models(text: str) -> list[str]:
    """``--models``: comma-separated registered model names; ``ValueError`` naming the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in list_models()]
    if bad or not names:
        raise ValueError(f"--models: unknown model(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"valid: {', '.join(list_models())}")
    return names


def passed(res: dict) -> bool:
    """Exit 0 when every section that ran is ok and, of those that ran, parity is within tolerance
    and training (train, models) saw no non-finite step."""
    secs = res["sections"]
    return (all(r["status"] == "ok" for r in secs.values())
            and all(secs[name].get(key, False) for name, key in
                    (("parity", "all_ok"), ("train", "no_nan"), ("models", "no_nan")) if name in secs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_check"), help="results folder ($OUT)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, stand-in kernel")
    p.add_argument("--sections", default="all",
                   help=f"comma-separated sections to run (default all: {','.join(SECTIONS)}); env and "
                        "extension always run")
    p.add_argument("--so", default=None, help="selective_scan_cuda .so (or its folder) to load")
    p.add_argument("--sdist", default=None, help="mamba-ssm sdist to build from when --so does not load")
    p.add_argument("--build-dtypes", default="fp32,bf16", help="dtypes of an on-device build")
    p.add_argument("--original", default=None, help="checkout of github:JCruan519/VM-UNet")
    p.add_argument("--model", default=None, help=f"model name (default {MODEL}; smoke vmunet_test)")
    p.add_argument("--models", default=None,
                   help=f"models of the models section (default {MODELS_DEFAULT}; smoke {MODELS_SMOKE})")
    p.add_argument("--size", type=int, default=None, help="image size (default 224; smoke 32)")
    p.add_argument("--batch", type=int, default=None, help="batch (default 32; smoke 1)")
    p.add_argument("--steps", type=int, default=None, help="training steps per precision (default 200; smoke 3)")
    p.add_argument("--model-steps", type=int, default=None,
                   help="models section: training steps per row, warm-up included (default 50; smoke 2)")
    p.add_argument("--model-max-s", type=float, default=8.0, help="models section: training seconds per row, at most")
    p.add_argument("--profile-steps", type=int, default=3, help="profile section: profiled steps per precision")
    p.add_argument("--infer-iters", type=int, default=None, help="timed inference batches (default 20; smoke 1)")
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting sections after this")
    args = p.parse_args(argv)
    for name, full, smoke in (("model", MODEL, "vmunet_test"), ("size", 224, 32), ("batch", 32, 1), ("steps", 200, 3),
                              ("infer_iters", 20, 1), ("models", MODELS_DEFAULT, MODELS_SMOKE),
                              ("model_steps", 50, 2)):
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    try:
        named = args.sections != "all"
        args.sections = parse_sections(args.sections)
        args.models = parse_models(args.models)
        if named and "original" in args.sections and not args.original:
            raise ValueError("--sections original needs --original PATH (a checkout of the original VM-UNet)")
    except ValueError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.smoke:
        torch.set_num_threads(1)  # tiny shapes: threads only add overhead (and stall on a busy CPU)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --smoke on CPU)", file=sys.stderr)
        return 2
    chk = Check(args)
    chk.res["sections_asked"] = args.sections
    chk.section("env", lambda: env_info(chk), 0)
    ext = chk.section("extension", lambda: load_extension(chk), 0)
    if ext["status"] == "ok":
        runs = {"parity": (lambda: parity(chk), 30), "model_agreement": (lambda: model_agreement(chk), 20),
                "train": (lambda: train_infer(chk), 60), "scan_time": (lambda: scan_time(chk), 20),
                "original": (lambda: original(chk), 40), "cross_scan": (lambda: cross_scan_section(chk), 30),
                "models": (lambda: models_section(chk), 40), "profile": (lambda: profile_section(chk), 30)}
        for name in args.sections:
            if name == "original" and not args.original:
                continue  # needs a checkout of the original code (asked for by name: refused above)
            chk.section(name, *runs[name])
    md = markdown(chk.res)
    with atomic_path(chk.out / "gpu_check.md") as tmp:
        tmp.write_text(md)
    print(md)
    return 0 if passed(chk.res) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The user's GPU path in one short device run: ``vmunet fit`` of the Synapse paper config.

Made for the same device call as benchmarks/gpu_check.py (after it; ~150 s on an H200):

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu/fit_check.py --out $OUT/fit

Stages, in this order; each is timed, guarded (an error is recorded, the next stage runs), started
only while ``--budget-s`` lasts (its estimate below, plus the estimates of the reserved stages still
to come, must fit in what is left) and written to ``<out>/fit_check.json`` when it ends
(``fit_check.md``: the tables; both written atomically). The estimates ("needs ~N s") are what the
default settings took on an NVIDIA H200 (16 CPU cores) in two runs of this script: see
:data:`H200` (the first ``fit_fp32`` there, with Lightning's sanity check and validation after every
epoch, took the whole budget: the plan below is cut from those numbers).

1. ``env``, ``extension``: GPU and versions; the carried ``selective_scan_cuda`` (``--so``). ~2 s.
2. ``data``: synthetic Synapse data from the project's generator (:func:`vmunet.data.synth.synth_synapse`,
   ``--cases`` phantoms of ``--size``\\ :sup:`2` x ``--slices``; 6 cases = 4 training + 2 test cases).
   The data module holds 2 training cases out for validation (``val_cases: 2``; volumes of
   ``--slices`` slices); the 2 others' slices are hard-linked under new case names up to
   ``--train-slices`` training slices, so an epoch has many more batches than loader workers
   (their steady rate is what an epoch of the real 2211 slices sees) without generating them all.
   The validation split's seed is chosen so the 2 held-out cases are phantoms no training slice
   comes from. ~14 s.
3. ``fit_fp32``: the real entry point (:func:`vmunet.training.cli.run_lightning_cli`, what
   ``vmunet fit`` runs) with ``--config experiments/paper/synapse.yaml`` and overrides: one GPU,
   precision 32-true, ``--epochs`` epochs, scan backend ``cuda``, no pretrained weights, every
   epoch's checkpoint kept, NO sanity check (``num_sanity_val_steps 0``: stage 10 measures it; it
   took 76-78 s), the full validation (2 volumes, Dice + HD95) after the last epoch only
   (``check_val_every_n_epoch`` = ``--epochs``). Measured by :class:`fit_timing.FitTimer`: the time
   from the call to the first training batch (split: set-up, sanity, first batch), seconds and img/s
   per epoch (through the DataModule: paper augmentation on CPU workers), the share of the epoch
   spent waiting for batches, validation seconds per volume, the Dice/HD95 it logs, peak GPU memory,
   non-finite losses. ~36 s.
4. ``resume`` (reserved): the fp32 run's checkpoint after epoch ``--epochs - 1``, copied out of its
   run, resumed (``fit --ckpt_path``) to the same end with the same trainer settings, validation
   without HD95 (``model.val_hd95 false``: it changes no weight and no random draw, and saves its
   CPU time); final weights and metrics against the uninterrupted run's: the max abs weight
   difference is RECORDED (the kernel's backward may accumulate with atomics: stage 5 says). ~17 s.
5. ``deterministic`` (reserved): one short fit with ``trainer.deterministic: true`` (2 batches, no
   validation): whether it runs, or the error it raises (one line); then the model alone (forward
   and backward, no loss op) under strict deterministic algorithms, and the same backward twice:
   whether the gradients repeat bit for bit. The process's flags are restored afterwards. ~9 s.
6. ``loader``: the same training DataLoader alone (no model), one epoch, img/s, for each worker
   count (default: the fit's only; ``--loader-workers 8,14`` adds rows at ~6 s each). ~6 s.
7, 9. ``step_fp32``, ``step_bf16``: the model's training step alone (forward, the paper loss,
   backward, fused AdamW) on batches from that loader pre-loaded to the GPU, img/s, under the
   deterministic-algorithms mode the fits ran with (the config's ``deterministic: warn``) and with
   it off. Bottleneck: the lower of ``loader`` and ``step`` img/s bounds what the fit can reach.
   ``--step-batches`` batches, ``--step-rounds`` times. ~6 s each.
8. ``fit_bf16``: as 3 with ``bf16-mixed``, ``--bf16-epochs`` epochs of ``--bf16-batches`` batches,
   validation of one volume without HD95 (its purpose: bf16 trains and evaluates, and how fast). ~10 s.
10. ``sanity``: what stage 3 left out: a fit with Lightning's sanity check (the untrained model's
   validation with HD95; Lightning's default is 2 batches = both validation volumes) that stops after
   its first training batch (``max_steps 1``): the sanity check's seconds per volume and the time from
   the call to the first training batch as a user's default fit sees it. 2 volumes when the budget
   holds them, else 1 (``--sanity-volumes``). Needs ~5 s + 39 s a volume (scaled by this run's HD95
   validation against the H200 run's), so at the default budget it runs only if the metrics got
   faster (another branch) or the stages before came in under their estimates.

Estimated at the defaults: ~106 s for stages 1-9, ~150 s with a 1-volume sanity stage. The reserved
stages answer the open questions (is a resumed GPU run equal to the uninterrupted one; does
``trainer.deterministic=true`` run with mamba's kernel), so they run right after the fit they need,
and the stages before them (data, fit_fp32) start only if the reserved stages' estimates still fit
after theirs.

``--smoke``: every stage on CPU at tiny sizes (64^2 phantoms, 32^2 model input, model
``vmunet_test``) with the CPU stand-in of the compiled kernel (benchmarks/gpu/standin); it proves
the script runs and its files are complete, not the numbers (tests/benchmarks/test_fit_check_smoke.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # _common (md_table)
sys.path.insert(0, str(HERE))  # fit_timing (the callback the fit loads by name), _timing

from vmunet.runtime import apply_process_defaults  # noqa: E402  (imports no torch)

apply_process_defaults()  # what `vmunet` does before torch loads

import torch  # noqa: E402
import yaml  # noqa: E402
from fit_timing import FitTimer  # noqa: E402

from vmunet.data import synapse_format as SF  # noqa: E402
from vmunet.data.datamodule import held_out_cases  # noqa: E402
from vmunet.data.fileio import write_json, write_text  # noqa: E402
from vmunet.ops import scan_cuda  # noqa: E402

logger = logging.getLogger("fit_check")
STANDIN_DIR = HERE / "standin"
CONFIG = ROOT / "experiments" / "paper" / "synapse.yaml"
VAL_CASES = 2
METRIC_KEYS = ("train/loss_epoch", "val/loss", "val/dice", "val/hd95", "val/hd95_mm")

#: What the default settings (512^2 x 32-slice phantoms -> 224^2, batch 32, 14 loader workers, model
#: vmunet, scan cuda) took on an NVIDIA H200 with 16 CPU cores (torch 2.11.0+cu130, lightning 2.6.6),
#: in two runs of this script (1024 training slices x 3 epochs; 320 x 2) and benchmarks/gpu_check.py
#: in the same device call. The stage estimates (:func:`estimates`) are built from these.
H200 = {
    "env_s": 2.3,                # env + extension stages (2.3 s, 2.3 s)
    "case_gen_s": 1.65,          # synth_synapse per case (9.3 s / 6 cases, 9.9 s / 6)
    "check_slice_s": 0.0036,     # the data module's first read of every slice (3.7 s / 1088, 1.4 s / 384)
    "fit_fixed_s": 5.0,          # a fit's set-up and end, without its sanity check and epochs (5.2 s, 3.6 s)
    "epoch_extra_s": 0.8,        # an epoch's time beyond its batches and validation (checkpoints; 0.7-0.8 s)
    "first_epoch_extra_s": 0.5,  # the first epoch's loader start (1024 slices: 6.09 s vs 5.68 s)
    "fit_img_s": 180.0,          # training img/s inside the fit, epochs after the first (180.3; steady 194-197)
    "val_hd95_vol_s": 8.9,       # validation per volume with Dice + HD95 after 1-2 epochs (17.7, 15.3, 16.3 s / 2)
    "val_hd95_ref_vol_s": 7.6,   # the same after 2 epochs of 1024 slices, what fit_fp32 validates (15.25 s / 2)
    "val_vol_s": 1.5,            # per volume without HD95: NOT measured on the GPU (Dice alone: 0.2 s a 512^2 x
                                 # 32 volume on a 2-core CPU VM; HD95 1.7 s near-right, 46-72 s noisy); an allowance
    "sanity_vol_s": 39.0,        # Lightning's sanity check per untrained volume, HD95 (76.4 s / 2, 78.2 s / 2)
    "step_img_s": {"32-true": 225.0, "bf16-mixed": 251.0},  # gpu_check.py's training step, batch 32, 224^2
    "loader_img_s": 190.0,       # the loader alone: NOT measured; at least the fit's steady 194-197 img/s
                                 # (5-7% of it waiting for data); per worker about a 14th of that
    "ckpt_compare_s": 2.0,       # loading and comparing two 0.33 GB checkpoints (allowance)
    "model_alone_s": 3.0,        # build the model and 3 forward/backward passes at batch 4 (allowance)
}


# ------------------------------------------------------------------------------------------------
# run bookkeeping
# ------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One stage of the plan: ``need_s`` is its estimate (a function when it depends on what ran
    before); ``reserved`` stages keep their estimate out of what the stages before them may use."""

    name: str
    fn: Callable[[], dict]
    need_s: float | Callable[[], float]
    reserved: bool = False

    def need(self) -> float:
        return float(self.need_s()) if callable(self.need_s) else float(self.need_s)


class Run:
    """Results, the clock and the output files of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.res: dict[str, Any] = {"smoke": args.smoke, "settings": settings_of(args), "stages": {}}
        self.cuda = not args.smoke
        self.reserve_s = 0.0  # what the running stage must leave to the reserved stages after it

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.res["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        write_json(self.out / "fit_check.json", self.res)
        write_text(self.out / "fit_check.md", "\n".join(markdown(self.res)) + "\n")

    def run_plan(self, plan: list[Stage]) -> None:
        self.res["plan"] = [{"stage": s.name, "estimate_s": round(s.need(), 1) if not callable(s.need_s) else None,
                             "reserved": s.reserved} for s in plan]
        for i, st in enumerate(plan):
            later = [s for s in plan[i + 1:] if s.reserved]
            self.stage(st.name, st.fn, st.need(), sum(s.need() for s in later), [s.name for s in later])

    def stage(self, name: str, fn: Callable[[], dict], need_s: float, reserve_s: float = 0.0,
              reserved_for: list[str] | None = None) -> dict:
        """Run ``fn`` if ``need_s`` seconds are left besides ``reserve_s``; record its dict, or the error; save."""
        left = self.left()
        if left - reserve_s < need_s:
            kept = f" + {reserve_s:.0f} s kept for {', '.join(reserved_for or [])}" if reserve_s > 0 else ""
            rec = {"status": "skipped", "why": f"time budget: {left:.0f} s left, needs ~{need_s:.0f} s{kept}"}
        else:
            logger.info("[%6.1f s] %s (estimate ~%.0f s) ...", time.perf_counter() - self.t0, name, need_s)
            self.reserve_s = reserve_s
            t = time.perf_counter()
            try:
                rec = {"status": "ok", **fn()}
            except Exception as exc:  # record and go on: one failed stage must not hide the rest
                rec = {"status": "error", "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:2000],
                       "traceback": traceback.format_exc()[-3000:]}
            rec["seconds"] = round(time.perf_counter() - t, 1)
            self.reserve_s = 0.0
        rec["estimate_s"] = round(need_s, 1)
        self.res["stages"][name] = rec
        self.save()
        logger.info("[%6.1f s] %-14s %s%s", time.perf_counter() - self.t0, name, rec["status"],
                    f": {rec.get('error') or rec.get('why')}" if rec["status"] != "ok" else "")
        return rec

    def ok(self, name: str) -> dict | None:
        rec = self.res["stages"].get(name)
        return rec if rec is not None and rec["status"] == "ok" else None


def settings_of(a: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(a, k) for k in ("config", "cases", "size", "slices", "train_slices", "image_size", "batch",
                                       "workers", "loader_workers", "epochs", "bf16_epochs", "bf16_batches",
                                       "step_batches", "step_rounds", "sanity_volumes", "model", "budget_s")}


def estimates(a: argparse.Namespace) -> dict[str, float]:
    """Seconds each stage needs at these settings, from the H200 numbers (:data:`H200`)."""
    h = H200
    fixed, extra = h["fit_fixed_s"], h["epoch_extra_s"]
    epoch = a.train_slices / h["fit_img_s"] + extra
    bf16_img_s = h["fit_img_s"] * h["step_img_s"]["bf16-mixed"] / h["step_img_s"]["32-true"]
    epoch_bf16 = min(a.train_slices, a.bf16_batches * a.batch) / bf16_img_s + extra
    worker_batch = a.batch * 14 / h["loader_img_s"]  # one worker's seconds per batch (14 workers: 190 img/s)

    def step(precision: str) -> float:  # model, the batches (a round of workers), 2 warm-up + timed steps x 2 modes
        timed = (2 + 2 * a.step_batches * a.step_rounds) * a.batch / h["step_img_s"][precision]
        return 1.0 + worker_batch * math.ceil(a.step_batches / max(1, a.workers)) + timed

    return {
        "env": h["env_s"], "extension": 0.0,
        "data": h["case_gen_s"] * a.cases + h["check_slice_s"] * (a.train_slices + VAL_CASES * a.slices) + 0.5,
        "fit_fp32": fixed + a.epochs * epoch + h["first_epoch_extra_s"] + VAL_CASES * h["val_hd95_vol_s"],
        "resume": fixed + epoch + VAL_CASES * h["val_vol_s"] + h["ckpt_compare_s"],
        "deterministic": fixed + 2 * a.batch / h["fit_img_s"] + h["model_alone_s"],
        "loader": sum(1.0 + a.train_slices / h["loader_img_s"] * 14 / max(1, w) for w in a.loader_workers),
        "step_fp32": step("32-true"), "step_bf16": step("bf16-mixed"),
        "fit_bf16": fixed + a.bf16_epochs * epoch_bf16 + h["first_epoch_extra_s"] + h["val_vol_s"],
        "sanity_fixed": fixed + a.batch / h["fit_img_s"],
    }


def sanity_vol_estimate(run: Run) -> float:
    """Seconds a volume of Lightning's sanity check needs: the H200 run's, scaled by how this run's
    HD95 validation (fit_fp32, after the same training) compares with the H200 run's at that point:
    both are the CPU metrics' time, so faster metrics show there first."""
    fit = run.ok("fit_fp32")
    vals = [v for v in (fit or {}).get("validations", []) if not v["sanity"] and v.get("batches")]
    if not vals:
        return H200["sanity_vol_s"]
    per_vol = vals[-1]["seconds"] / vals[-1]["batches"]
    return H200["sanity_vol_s"] * min(2.0, max(0.05, per_vol / H200["val_hd95_ref_vol_s"]))


def sync(run: Run) -> None:
    if run.cuda:
        torch.cuda.synchronize()


def reset_peak(run: Run) -> None:
    if run.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(run: Run) -> dict[str, float | None]:
    if not run.cuda:
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


# ------------------------------------------------------------------------------------------------
# 1: environment and kernel
# ------------------------------------------------------------------------------------------------
def env_info(run: Run) -> dict:
    import lightning

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "lightning": lightning.__version__,
                            "cpu_cores": os.cpu_count()}
    with contextlib.suppress(Exception):
        import monai
        info["monai"] = monai.__version__
    if run.cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1))
    return info


def load_extension(run: Run) -> dict:
    folder = STANDIN_DIR if run.args.smoke else Path(run.args.so)
    folder = folder if folder.is_dir() else folder.parent
    # the environment variable, not a module attribute: LightningCLI builds the model in this process
    os.environ[scan_cuda.EXTENSION_DIR_ENV] = str(folder)
    sys.modules.pop(scan_cuda.EXTENSION_NAME, None)
    scan_cuda.extension.cache_clear()
    ext = scan_cuda.extension()
    if ext is None:
        raise RuntimeError(f"selective_scan_cuda does not load from {folder}: {scan_cuda.load_error()}")
    return {"source": "CPU stand-in (benchmarks/gpu/standin)" if run.args.smoke else str(folder),
            "file": getattr(ext, "__file__", None)}


# ------------------------------------------------------------------------------------------------
# 2: data
# ------------------------------------------------------------------------------------------------
def split_seed(names: list[str], originals: list[str]) -> int:
    """The smallest validation-split seed >= 42 (the config's) that holds out two ``originals``:
    phantoms whose slices are not copied into the training set."""
    for seed in range(42, 42 + 10_000):
        picked = held_out_cases(len(names), VAL_CASES, seed)
        if all(names[i] in originals for i in picked):
            return seed
    raise RuntimeError("no split seed holds out two original cases")


def make_data(run: Run) -> dict:
    from vmunet.data.synth import synth_synapse

    a = run.args
    root = Path(a.work) / "Synapse"
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    summary = synth_synapse(root, cases=a.cases, size=a.size, slices=a.slices, seed=0)
    gen_s = time.perf_counter() - t
    list_file = SF.find_list_dir(root) / "train.txt"
    base = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
    originals = sorted({SF.case_of_slice(n) for n in base})
    if len(originals) < VAL_CASES + 1:
        raise RuntimeError(f"{len(originals)} training cases; need {VAL_CASES + 1} (raise --cases)")
    per_case = a.slices
    # copies named after the originals (case9NNN); the split seed below holds out two originals,
    # and only the other originals are copied
    n_train_orig = per_case * (len(originals) - VAL_CASES)
    copies_needed = max(0, math.ceil((a.train_slices - n_train_orig) / per_case))
    copy_names = [SF.case_name(9000 + i) for i in range(copies_needed)]
    names = originals + copy_names
    seed = split_seed(names, originals)
    picked = [names[i] for i in held_out_cases(len(names), VAL_CASES, seed)]
    train_sources = [c for c in originals if c not in picked]  # never a validation case
    train_dir = root / SF.TRAIN_DIR
    lines = list(base)
    for i, new in enumerate(copy_names):
        src = train_sources[i % len(train_sources)]
        for n in (x for x in base if SF.case_of_slice(x) == src):
            dst = SF.slice_name(new, int(n.rsplit("_slice", 1)[1]))
            try:
                os.link(train_dir / f"{n}.npz", train_dir / f"{dst}.npz")
            except OSError:
                shutil.copyfile(train_dir / f"{n}.npz", train_dir / f"{dst}.npz")
            lines.append(dst)
        geom = train_dir / f"{src}{SF.GEOMETRY_SUFFIX}"
        if geom.is_file():
            shutil.copyfile(geom, train_dir / f"{new}{SF.GEOMETRY_SUFFIX}")
    write_text(list_file, "".join(f"{n}\n" for n in lines))
    n_train = len(lines) - per_case * VAL_CASES
    a.data_root, a.split_seed = str(root), seed
    # the data module's one-time read of every slice (check_files, cached in $VMUNET_CACHE_DIR): timed
    # here, so the fits' times are the training's
    t = time.perf_counter()
    dm = datamodule(run, 0)
    check_s = time.perf_counter() - t
    if len(dm.train_slices) != n_train or sorted(dm.val_case_names) != sorted(picked):
        raise RuntimeError(f"the data module split {len(dm.train_slices)} training slices / {dm.val_case_names}, "
                           f"expected {n_train} / {picked}")
    return {"root": str(root), "generator": "vmunet.data.synth.synth_synapse", "generate_s": round(gen_s, 1),
            "generated_cases": summary["train_cases"] + summary["test_cases"], "size": a.size, "slices": per_case,
            "file_check_s": round(check_s, 1),
            "val_cases": picked, "split_seed": seed, "train_slices": n_train,
            "distinct_train_slices": per_case * len(train_sources), "copies": copy_names[:3] + (
                ["..."] if len(copy_names) > 3 else []),
            "bytes": sum(f.stat().st_size for f in root.rglob("*") if f.is_file())}


# ------------------------------------------------------------------------------------------------
# 3, 4, 5, 8, 10: fits through the real CLI
# ------------------------------------------------------------------------------------------------
def fit_argv(run: Run, root: Path, precision: str, epochs: int, extra: list[str] = (), *, sanity: int = 0,
             val_every: int = 1) -> list[str]:
    """``vmunet fit`` arguments; ``sanity``: Lightning's ``num_sanity_val_steps`` (validation volumes
    before training); ``val_every``: ``check_val_every_n_epoch``."""
    a = run.args
    # the budget left (less what later reserved stages keep): Lightning's Timer (vmunet fit checks it
    # at epoch ends) stops a run that reaches it
    left = max(1, int(run.left() - run.reserve_s))
    max_time = f"00:{left // 3600:02d}:{left % 3600 // 60:02d}:{left % 60:02d}"
    argv = ["fit", "--config", str(a.config),
            "--trainer.default_root_dir", str(root),
            "--trainer.accelerator", "cpu" if a.smoke else "gpu", "--trainer.devices", "1",
            "--trainer.precision", precision, "--trainer.max_epochs", str(epochs),
            "--trainer.max_time", max_time, "--trainer.num_sanity_val_steps", str(sanity),
            "--trainer.check_val_every_n_epoch", str(val_every), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks+=fit_timing.FitTimer",
            "--model.weights", "null", "--model.model_name", a.model,
            "--model.model_kwargs", json.dumps({"scan_backend": "cuda"}),
            "--data.init_args.root", a.data_root, "--data.init_args.batch_size", str(a.batch),
            "--data.init_args.num_workers", str(a.workers), "--data.init_args.image_size", str(a.image_size),
            "--data.init_args.val_cases", str(VAL_CASES), "--data.init_args.seed", str(a.split_seed),
            "--checkpoint.save_top_k", "-1"]
    return argv + list(extra)


def run_fit(run: Run, argv: list[str]) -> tuple[Any, dict]:
    from vmunet.training.cli import run_lightning_cli

    reset_peak(run)
    logger.info("vmunet %s", " ".join(argv))
    t = time.perf_counter()
    cli = run_lightning_cli(argv)
    sync(run)
    total = time.perf_counter() - t
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, FitTimer))
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k in METRIC_KEYS}
    summary = cli.model.last_summary or {}
    mean = summary.get("mean") or {}
    sanity = [v for v in timer.validations if v["sanity"]]
    # from the call (what `vmunet fit` starts with) to the first training batch's start: set-up (config,
    # data module, model, trainer), Lightning's sanity check, then the first batch's wait for the loader
    start: dict[str, Any] = {"to_first_batch_s": None if timer.first_batch_at is None else
                             round(timer.first_batch_at - t, 2),
                             "setup_s": None if timer.fit_start_at is None else round(timer.fit_start_at - t, 2),
                             "sanity_s": round(sum(v["seconds"] for v in sanity), 2),
                             "sanity_volumes": sum(v["batches"] for v in sanity),
                             "first_batch_wait_s": timer.epochs[0]["first_batch_wait_s"] if timer.epochs else None}
    rec = {"precision": str(cli.trainer.precision), "total_s": round(total, 1), "start": start,
           "epochs": timer.epochs, "validations": timer.validations, "non_finite_losses": timer.non_finite_losses,
           "metrics": metrics, "val_convention": summary.get("convention"),
           "val_hd95": bool(cli.model.hparams.val_hd95), "val_hd95_definition": cli.model.hparams.hd95,
           "val_mean": {k: mean.get(k) for k in ("dice", "hd95", "hd95_mm")},
           "run_dir": str(cli.trainer.log_dir), "epochs_done": int(cli.trainer.current_epoch), **peak_gib(run)}
    steady = timer.epochs[1:] or timer.epochs  # the first epoch starts the loader workers
    if steady:
        rec["mean_epoch_s"] = round(sum(e["seconds"] for e in steady) / len(steady), 2)
        rec["mean_img_s"] = round(sum(e["samples"] for e in steady) / sum(e["seconds"] for e in steady), 1)
        rec["mean_data_wait_share"] = round(sum(e["data_wait_share"] or 0 for e in steady) / len(steady), 3)
    return cli, rec


def fit_stage(run: Run, name: str, precision: str, epochs: int, extra: list[str] = (), val_every: int = 1) -> dict:
    cli, rec = run_fit(run, fit_argv(run, Path(run.args.work) / name, precision, epochs, extra, val_every=val_every))
    del cli
    return rec


def fit_fp32_stage(run: Run) -> dict:
    # the full validation (Dice + HD95, both volumes) once, after the last epoch: its time is a finding
    # (the CPU metrics); after every epoch it cost 11-18 s each, 3x an epoch's training
    return fit_stage(run, "fit_fp32", "32-true", run.args.epochs, val_every=run.args.epochs)


def fit_bf16_stage(run: Run) -> dict:
    # its purpose is bf16 training (and evaluation) speed and finiteness: one volume, Dice only
    return fit_stage(run, "fit_bf16", "bf16-mixed", run.args.bf16_epochs,
                     ["--trainer.limit_train_batches", str(run.args.bf16_batches),
                      "--trainer.limit_val_batches", "1", "--model.val_hd95", "false"])


def state_of(ckpt_path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def resume_stage(run: Run) -> dict:
    a = run.args
    full = run.ok("fit_fp32")
    if full is None:
        raise RuntimeError("needs the fit_fp32 run")
    if full["epochs_done"] < a.epochs or len(full["epochs"]) < a.epochs:
        raise RuntimeError(f"the fp32 run stopped after {len(full['epochs'])} of {a.epochs} epochs (time budget)")
    ckpt_dir = Path(full["run_dir"]) / "checkpoints"
    mid_epoch = a.epochs - 2  # the checkpoint at the end of epoch index mid_epoch: one epoch left
    mids = sorted(ckpt_dir.glob(f"best-epoch{mid_epoch:03d}-*.ckpt"))
    finals = sorted(ckpt_dir.glob(f"best-epoch{a.epochs - 1:03d}-*.ckpt"))
    if not mids or not finals:
        raise RuntimeError(f"no epoch {mid_epoch} / {a.epochs - 1} checkpoints in {ckpt_dir}: "
                           f"{sorted(p.name for p in ckpt_dir.glob('*.ckpt'))}")
    # copied out of the run: resuming inside it would be refused (later checkpoints there)
    mid = Path(a.work) / "resume_from" / mids[0].name
    mid.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mids[0], mid)
    # the same trainer settings as the uninterrupted run (a resume compares them); validation without
    # HD95: the metric is CPU work on the predictions, it changes no weight and draws no random number
    cli, rec = run_fit(run, fit_argv(run, Path(a.work) / "fit_fp32_resumed", "32-true", a.epochs,
                                     ["--ckpt_path", str(mid), "--model.val_hd95", "false"], val_every=a.epochs))
    resumed_dir = Path(rec["run_dir"]) / "checkpoints"
    ends = sorted(resumed_dir.glob(f"best-epoch{a.epochs - 1:03d}-*.ckpt"))
    if not ends:
        raise RuntimeError(f"the resumed run wrote no epoch {a.epochs - 1} checkpoint in {resumed_dir}")
    sa, sb = state_of(finals[0]), state_of(ends[0])
    if sa.keys() != sb.keys():
        raise RuntimeError("the two runs' final checkpoints hold different parameters")
    diffs = {k: float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point()}
    worst = max(diffs, key=diffs.get)
    scale = max(float(v.double().abs().max()) for k, v in sa.items() if v.is_floating_point())
    ma = {k: v for k, v in full["metrics"].items()}
    mb = rec["metrics"]
    del cli
    return {"resumed_from": mids[0].name, "resumed_epochs": [e["epoch"] for e in rec["epochs"]],
            "max_abs_weight_diff": diffs[worst], "worst_tensor": worst, "max_abs_weight": scale,
            "tensors_differing": sum(d > 0 for d in diffs.values()), "tensors": len(diffs),
            "metrics_uninterrupted": ma, "metrics_resumed": mb,
            "metric_abs_diff": {k: abs(ma[k] - mb[k]) for k in ma if k in mb},
            "resumed_run": {k: rec[k] for k in ("total_s", "start", "epochs", "validations", "non_finite_losses",
                                                "val_hd95")}}


@contextlib.contextmanager
def kept_torch_flags() -> Iterator[None]:
    """Restore what ``trainer.deterministic`` changes for the whole process (Lightning sets and never
    resets it), so the stages after it run under the mode the other fits left."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]


def model_alone(run: Run) -> dict:
    """The model without the loss op: forward and backward under strict deterministic algorithms
    (does any op of the model, the kernel's wrapper included, refuse?), and the same backward twice
    (do the gradients repeat bit for bit? The kernel's backward may accumulate with atomics)."""
    a = run.args
    dev = torch.device("cpu" if a.smoke else "cuda")
    module = build_module(run).to(dev).eval()  # eval: no drop-path draws, the two passes see one function
    x = torch.randn(4, 1, a.image_size, a.image_size, generator=torch.Generator().manual_seed(0)).to(dev)

    def grads() -> list[torch.Tensor]:
        module.zero_grad(set_to_none=True)
        module(x).float().square().mean().backward()
        return [p.grad.detach().clone() for p in module.parameters() if p.grad is not None]

    rec: dict[str, Any] = {}
    torch.use_deterministic_algorithms(True)
    try:
        grads()
        rec["strict_forward_backward"] = "runs"
    except Exception as exc:  # an op without a deterministic version raises (a RuntimeError): named, on one line
        rec["strict_forward_backward"] = one_line(exc)
    torch.use_deterministic_algorithms(False)
    g1, g2 = grads(), grads()
    sync(run)
    diffs = [float((p - q).abs().max()) for p, q in zip(g1, g2, strict=True)]
    rec.update(repeat_max_abs_grad_diff=max(diffs), repeat_grads_differing=sum(d > 0 for d in diffs),
               repeat_grads=len(diffs), max_abs_grad=max(float(g.abs().max()) for g in g1))
    return rec


def deterministic_stage(run: Run) -> dict:
    a = run.args
    argv = fit_argv(run, Path(a.work) / "deterministic", "32-true", 1,
                    ["--trainer.deterministic", "true", "--trainer.limit_train_batches", "2",
                     "--trainer.limit_val_batches", "0"])
    with kept_torch_flags():
        try:
            _, rec = run_fit(run, argv)
            out: dict[str, Any] = {"runs": True, "epochs": rec["epochs"], "non_finite_losses": rec["non_finite_losses"]}
        except Exception as exc:  # the point of the stage: what it raises, on one line
            out = {"runs": False, "error": one_line(exc)}
        out["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        out["model_alone"] = model_alone(run)
    return out


def sanity_stage(run: Run, fixed_s: float, per_vol_s: Callable[[], float]) -> dict:
    """A default fit's start: Lightning's sanity check (untrained model, validation with HD95) on
    ``volumes`` validation volumes, then one training batch (``max_steps 1``: no epoch-end validation)."""
    a = run.args
    per_vol = per_vol_s()
    volumes = a.sanity_volumes or (VAL_CASES if run.left() >= fixed_s + VAL_CASES * per_vol else 1)
    cli, rec = run_fit(run, fit_argv(run, Path(a.work) / "sanity", "32-true", 1, ["--trainer.max_steps", "1"],
                                     sanity=volumes))
    del cli
    if rec["start"]["sanity_volumes"] != volumes:
        raise RuntimeError(f"the sanity check validated {rec['start']['sanity_volumes']} volumes, asked {volumes}")
    return {"volumes": volumes, "estimate_per_volume_s": None if a.smoke else round(per_vol, 1),
            "per_volume_s": round(rec["start"]["sanity_s"] / volumes, 2),
            **{k: rec[k] for k in ("start", "total_s", "validations", "epochs", "val_hd95", "peak_allocated_gib")}}


# ------------------------------------------------------------------------------------------------
# 6, 7, 9: the loader alone, the model step alone
# ------------------------------------------------------------------------------------------------
def config_section(run: Run, key: str) -> dict[str, Any]:
    """One top-level section of ``--config`` (the fits read the same file through LightningCLI)."""
    return dict(yaml.safe_load(Path(run.args.config).read_text())[key] or {})


def datamodule(run: Run, workers: int):
    from vmunet.data.synapse import SynapseDataModule

    a = run.args
    data = dict(config_section(run, "data")["init_args"])
    data.update(root=a.data_root, batch_size=a.batch, num_workers=workers, image_size=a.image_size,
                val_cases=VAL_CASES, seed=a.split_seed)
    dm = SynapseDataModule(**data)
    dm.setup("fit")
    return dm


def loader_stage(run: Run) -> dict:
    from lightning.fabric.utilities.seed import seed_everything

    rows = []
    for w in run.args.loader_workers:
        if run.left() < 5:
            break
        seed_everything(42, workers=True, verbose=False)
        dm = datamodule(run, w)
        t = time.perf_counter()
        first = None
        n = 0
        it = iter(dm.train_dataloader())
        for batch in it:
            if first is None:
                first = time.perf_counter() - t
                t1 = time.perf_counter()
                n1 = int(batch["image"].shape[0])
            n += int(batch["image"].shape[0])
        total = time.perf_counter() - t
        steady_s = time.perf_counter() - t1
        del it
        rows.append({"workers": w, "samples": n, "seconds": round(total, 2), "img_s": round(n / total, 1),
                     "first_batch_s": round(first or 0.0, 2),
                     "steady_img_s": round((n - n1) / steady_s, 1) if steady_s > 0 and n > n1 else None})
    return {"rows": rows}


def build_module(run: Run):
    """The config's SegmentationModule (no pretrained weights, scan backend cuda), seeded."""
    from vmunet.training.module import SegmentationModule

    model_cfg = config_section(run, "model")
    for key in ("weights", "weights_entry"):
        model_cfg.pop(key, None)
    model_cfg.update(model_name=run.args.model, num_classes=9, in_chans=1, model_kwargs={"scan_backend": "cuda"})
    torch.manual_seed(0)
    return SegmentationModule(**model_cfg)


def step_stage(run: Run, precision: str) -> dict:
    a = run.args
    dev = torch.device("cpu" if a.smoke else "cuda")
    module = build_module(run).to(dev).train()
    opt = torch.optim.AdamW(module.parameters(), lr=module.hparams.lr, betas=tuple(module.hparams.betas),
                            weight_decay=module.hparams.weight_decay, fused=True)
    dm = datamodule(run, a.workers)  # the fit's workers: the batches come in one round
    batches = []
    for batch in dm.train_dataloader():  # the real augmented batches, on the GPU before timing
        batches.append((batch["image"].to(dev), batch["label"].long().to(dev)))
        if len(batches) >= a.step_batches:
            break
    amp = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext())

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with amp:
            loss = module.loss_fn(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)  # a sync, as the module's isfinite check

    def timed() -> tuple[int, float, int]:
        sync(run)
        non_finite, n, t = 0, 0, time.perf_counter()
        for _ in range(max(1, a.step_rounds)):
            for x, y in batches:
                non_finite += not math.isfinite(step(x, y))
                n += x.shape[0]
        sync(run)
        return n, time.perf_counter() - t, non_finite

    reset_peak(run)
    for x, y in batches[:2]:  # warm-up (first-call allocations)
        step(x, y)
    # first under the deterministic-algorithms mode the fits left (the config's `deterministic: warn`
    # turns it on for the process, warn-only: e.g. uninitialized memory is filled), then with it off
    # (as benchmarks/gpu_check.py's training numbers), so the mode's own cost shows
    mode = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    n, sec, non_finite = timed()
    torch.use_deterministic_algorithms(False)
    try:
        n_off, sec_off, non_finite_off = timed()
    finally:
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
    return {"precision": precision, "deterministic_algorithms": "warn" if mode == (True, True) else mode[0],
            "batches": len(batches), "steps": len(batches) * max(1, a.step_rounds), "samples": n,
            "timed_s": round(sec, 3), "img_s": round(n / sec, 1),  # ("seconds": the whole stage's)
            "timed_s_deterministic_off": round(sec_off, 3), "img_s_deterministic_off": round(n_off / sec_off, 1),
            "non_finite_losses": non_finite + non_finite_off, **peak_gib(run)}




# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{nd}f}".rstrip("0").rstrip(".")
    return str(v)


def _last_val(v: dict) -> dict:
    return next((x for x in v["validations"][::-1] if not x["sanity"]), {})


def markdown(res: dict) -> list[str]:
    from _common import md_table  # benchmarks/_common.py

    st = res["stages"]
    env = st.get("env", {})
    s = res["settings"]
    data = st.get("data", {})
    gpu = "SMOKE, CPU stand-in: not GPU numbers" if res["smoke"] else env.get("gpu", "?")
    lines = [f"# vmunet fit check ({gpu})", "",
             f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), lightning {env.get('lightning')}, "
             f"python {env.get('python')}, {env.get('cpu_cores')} CPU cores; total {res.get('elapsed_s')} s "
             f"(budget {s['budget_s']} s)", "",
             f"Config {Path(s['config']).name} (paper augmentation on CPU workers), model {s['model']}, scan backend "
             f"cuda, batch {s['batch']}, {s['workers']} loader workers, input {s['image_size']}x{s['image_size']}. "
             f"Data: synthetic Synapse ({data.get('generator', '')}), {s['size']}x{s['size']} slices: "
             f"{data.get('train_slices')} training slices ({data.get('distinct_train_slices')} distinct), "
             f"validation {VAL_CASES} volumes x {s['slices']} slices ({', '.join(data.get('val_cases', []))}); "
             f"generated in {data.get('generate_s')} s; the data module's one-time file check "
             f"{data.get('file_check_s')} s.", ""]
    lines += md_table(["stage", "status", "estimate s", "s", "note"],
                      [(k, v["status"], "" if res["smoke"] else _f(v.get("estimate_s"), 1), v.get("seconds", ""),
                        v.get("error") or v.get("why") or "") for k, v in st.items()],
                      title="Stages in the order run; estimate: what the stage took at the default settings on an "
                            "NVIDIA H200 (fit_check.py's H200 table), the figure the time budget is planned with")
    fits = [(k, v) for k, v in st.items() if k.startswith("fit_") and v["status"] == "ok"]
    if fits:
        lines += md_table(["run", "precision", "epochs", "s/epoch", "img/s (fit)", "data-wait share", "val volumes",
                           "val s", "val s/volume", "val HD95", "val Dice", "val HD95 (vox)", "HD95 mm",
                           "peak alloc GiB", "non-finite"],
                          [(k, v["precision"], len(v["epochs"]), _f(v.get("mean_epoch_s")), _f(v.get("mean_img_s"), 1),
                            _f(v.get("mean_data_wait_share")), _last_val(v).get("batches", ""),
                            _f(_last_val(v).get("seconds")),
                            _f(_last_val(v)["seconds"] / _last_val(v)["batches"]) if _last_val(v).get("batches") else "",
                            "yes" if v.get("val_hd95") else "no (Dice only)",
                            _f(v["metrics"].get("val/dice"), 4), _f(v["metrics"].get("val/hd95")),
                            _f(v["metrics"].get("val/hd95_mm")), _f(v.get("peak_allocated_gib")),
                            v["non_finite_losses"]) for k, v in fits],
                          title="Fit through `vmunet fit` (LightningCLI + SynapseDataModule + SegmentationModule), "
                                "without Lightning's sanity check (its own row below); s/epoch, img/s and data-wait "
                                "share: epochs after the first (training only; a 1-epoch run: that epoch); val: the "
                                "last epoch's validation, wall seconds (Dice/HD95 strict convention, per-volume "
                                "metrics on the CPU)")
        lines += md_table(["run", "epoch", "s", "samples", "img/s", "first batch wait s", "steady img/s",
                           "data-wait share"],
                          [(k, e["epoch"], e["seconds"], e["samples"], e["img_s"], e["first_batch_wait_s"],
                            e["steady_img_s"], e["data_wait_share"]) for k, v in fits for e in v["epochs"]],
                          title="Per epoch")
    starts = [(k, v["start"]) for k, v in fits]
    rs = st.get("resume", {})
    if rs.get("status") == "ok":
        starts.append(("resume (from the checkpoint)", rs["resumed_run"]["start"]))
    san = st.get("sanity", {})
    if san.get("status") == "ok":
        starts.append(("sanity (a default fit's start)", san["start"]))
    if starts:
        lines += md_table(["run", "call to first training batch s", "set-up s", "sanity check s", "sanity volumes",
                           "first batch wait s"],
                          [(k, _f(x["to_first_batch_s"]), _f(x["setup_s"]), _f(x["sanity_s"]), x["sanity_volumes"],
                            _f(x["first_batch_wait_s"])) for k, x in starts],
                          title="From the call (run_lightning_cli, what `vmunet fit` runs) to the first training "
                                "batch: set-up (config, data module, model, trainer: to on_fit_start), Lightning's "
                                "sanity check, the rest (the loader's first batch)")
    if san.get("status") == "ok":
        guess = "" if san["estimate_per_volume_s"] is None else f" (estimated {_f(san['estimate_per_volume_s'])} s)"
        lines += ["", f"Lightning's sanity check (untrained model, validation with Dice + HD95 on the CPU): "
                      f"{san['volumes']} volume(s) in {_f(san['start']['sanity_s'])} s, {_f(san['per_volume_s'])} s a "
                      f"volume{guess}; a default fit's first training batch "
                      f"came {_f(san['start']['to_first_batch_s'])} s after the call."]
    elif san:
        lines += ["", f"Lightning's sanity check: not measured in this run ({san.get('why') or san.get('error')}); "
                      "the fits above ran without it."]
    ld = st.get("loader", {})
    steps = [v for k, v in st.items() if k.startswith("step_") and v["status"] == "ok"]
    if ld.get("rows") or steps:
        rows = [(f"loader alone, {r['workers']} workers", r["samples"], r["seconds"], r["img_s"], r["steady_img_s"], "")
                for r in ld.get("rows", [])]
        for v in steps:
            rows += [(f"model step alone ({v['precision']}, pre-loaded batches, deterministic algorithms "
                      f"{v['deterministic_algorithms']} as the fit)", v["samples"], v["timed_s"], v["img_s"], "",
                      _f(v.get("peak_allocated_gib"))),
                     (f"model step alone ({v['precision']}, pre-loaded batches, deterministic algorithms off)",
                      v["samples"], v["timed_s_deterministic_off"], v["img_s_deterministic_off"], "", "")]
        rows += [(f"fit ({v['precision']}, through the DataModule)", sum(e["samples"] for e in v["epochs"]),
                  round(sum(e["seconds"] for e in v["epochs"]), 2), _f(v.get("mean_img_s"), 1), "", "")
                 for _, v in fits]
        lines += md_table(["what", "samples", "s", "img/s", "steady img/s", "peak alloc GiB"], rows,
                          title="Bottleneck: the training loader alone vs the model step alone vs the fit")
    if rs.get("status") == "ok":
        lines += md_table(["resumed from", "epochs re-run", "max abs weight diff", "max abs weight", "worst tensor",
                           "tensors differing", "metric abs diff"],
                          [(rs["resumed_from"], rs["resumed_epochs"], _f(rs["max_abs_weight_diff"]),
                            _f(rs["max_abs_weight"]), rs["worst_tensor"], f"{rs['tensors_differing']}/{rs['tensors']}",
                            ", ".join(f"{k} {_f(v)}" for k, v in rs["metric_abs_diff"].items()))],
                          title="Resume from a mid-run checkpoint vs the uninterrupted fp32 run (final weights; the "
                                "resumed run validates without HD95, so HD95 is not compared)")
    det = st.get("deterministic", {})
    if det.get("status") == "ok":
        lines += ["", f"trainer.deterministic=true: {'runs' if det['runs'] else 'fails: ' + det['error']}"]
        alone = det.get("model_alone") or {}
        if alone:
            lines += ["", f"The model alone (forward + backward, no loss op) under strict deterministic algorithms: "
                          f"{alone['strict_forward_backward']}. The same backward twice: max abs gradient difference "
                          f"{_f(alone['repeat_max_abs_grad_diff'])} (largest gradient {_f(alone['max_abs_grad'])}), "
                          f"{alone['repeat_grads_differing']}/{alone['repeat_grads']} gradients differ."]
    return lines


# ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for fit_check.json / fit_check.md")
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="no stage starts unless its estimate (plus the reserved stages' after it) fits in what is left")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, stand-in kernel")
    p.add_argument("--so", default=os.environ.get(scan_cuda.EXTENSION_DIR_ENV) or str(ROOT / ".gpu-carry" / "prebuilt"),
                   help=f"folder (or file) of the compiled selective_scan_cuda (default ${scan_cuda.EXTENSION_DIR_ENV}, "
                        "else .gpu-carry/prebuilt)")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--work", default=None, help="folder for the data and runs (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep --work afterwards")
    full = {"cases": 6, "size": 512, "slices": 32, "train_slices": 1024, "image_size": 224, "batch": 32,
            "workers": max(1, (os.cpu_count() or 2) - 2), "epochs": 2, "bf16_epochs": 1, "bf16_batches": 16,
            "model": "vmunet", "step_batches": 8, "step_rounds": 1}
    smoke = {"cases": 5, "size": 64, "slices": 4, "train_slices": 8, "image_size": 32, "batch": 4,
             "workers": 0, "epochs": 2, "bf16_epochs": 1, "bf16_batches": 2, "model": "vmunet_test",
             "step_batches": 1, "step_rounds": 1}
    for k in full:
        p.add_argument(f"--{k.replace('_', '-')}", type=type(full[k]), default=None,
                       help=f"default {full[k]}; smoke {smoke[k]}")
    p.add_argument("--loader-workers", default=None,
                   help="comma-separated worker counts for the loader-alone stage (default: --workers)")
    p.add_argument("--sanity-volumes", type=int, choices=(1, 2), default=None,
                   help="validation volumes of the sanity stage (default: 2 when the budget holds them, else 1)")
    args = p.parse_args(argv)
    for k in full:
        if getattr(args, k) is None:
            setattr(args, k, smoke[k] if args.smoke else full[k])
    if args.loader_workers is None:
        args.loader_workers = [args.workers]
    else:
        args.loader_workers = [int(w) for w in args.loader_workers.split(",")]
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the resume stage resumes after epoch --epochs - 1)")
    return args


def stage_plan(run: Run) -> list[Stage]:
    """The stages after env/extension/data, in the order run (see the module docstring)."""
    a = run.args
    est = {k: 0.0 for k in estimates(a)} if a.smoke else estimates(a)
    per_vol = (lambda: 0.0) if a.smoke else (lambda: sanity_vol_estimate(run))
    return [
        Stage("fit_fp32", lambda: fit_fp32_stage(run), est["fit_fp32"]),
        Stage("resume", lambda: resume_stage(run), est["resume"], reserved=True),
        Stage("deterministic", lambda: deterministic_stage(run), est["deterministic"], reserved=True),
        Stage("loader", lambda: loader_stage(run), est["loader"]),
        Stage("step_fp32", lambda: step_stage(run, "32-true"), est["step_fp32"]),
        Stage("fit_bf16", lambda: fit_bf16_stage(run), est["fit_bf16"]),
        Stage("step_bf16", lambda: step_stage(run, "bf16-mixed"), est["step_bf16"]),
        Stage("sanity", lambda: sanity_stage(run, est["sanity_fixed"], per_vol),
              lambda: est["sanity_fixed"] + per_vol() * (a.sanity_volumes or 1)),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.smoke and not torch.cuda.is_available():
        print("fit_check: no CUDA device (use --smoke on CPU)", file=sys.stderr)
        return 2
    work_given = args.work is not None
    args.work = args.work or tempfile.mkdtemp(prefix="vmunet_fit_check_")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    # the data module's file-check records: with the data, not in the home folder
    os.environ["VMUNET_CACHE_DIR"] = str(Path(args.work) / "cache")
    args.data_root, args.split_seed = None, 42
    run = Run(args)
    est = {k: 0.0 for k in estimates(args)} if args.smoke else estimates(args)
    run.res["estimates_s"] = None if args.smoke else {k: round(v, 1) for k, v in est.items()}
    plan = stage_plan(run)
    reserved = [s for s in plan if s.reserved]
    try:
        run.stage("env", lambda: env_info(run), 0)
        if run.stage("extension", lambda: load_extension(run), 0)["status"] != "ok":
            return 1
        if run.stage("data", lambda: make_data(run), est["data"], sum(s.need() for s in reserved),
                     [s.name for s in reserved])["status"] != "ok":
            return 1
        run.run_plan(plan)
    finally:
        run.save()
        if not (work_given or args.keep):
            shutil.rmtree(args.work, ignore_errors=True)
    bad = [k for k, v in run.res["stages"].items() if v["status"] == "error"]
    logger.info("fit_check: %s in %.1f s; results in %s", "errors in " + ", ".join(bad) if bad else "all stages ran",
                time.perf_counter() - run.t0, run.out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

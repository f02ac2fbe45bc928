"""Compile vmunet's Triton kernels for a GPU architecture on a machine WITHOUT a GPU (nothing runs).

The CPU tests run these kernels only in Triton's interpreter, which accepts code the real compiler
rejects (and knows no registers or shared memory). Here Triton's own compiler and its bundled
ptxas build each kernel for ``--arch`` (default 90: H100/H200) with the constexprs and
specializations a GPU run gives them: the launch code (``_TritonScan``, ``scan4_triton`` /
``merge4_triton``) is called with CPU tensors under a stand-in Triton driver that names the
target, and every launch is turned into a compile-only "warmup". Configurations: the selective
scan (forward + backward) at the four VM-UNet stage shapes as SS2D calls it (float32; D,
delta_bias, softplus; training and inference), one with every option (z, D, delta_bias, the last
state's gradient) in each input dtype, and one with none; the cross-scan/merge kernels at the
stage shapes in float32 and bfloat16. Per kernel built (a specialization met again is not
listed): compile seconds, registers, spill (local) bytes, shared memory.

    python benchmarks/gpu/triton_compile_check.py [--arch 90] [--quick] [--out DIR]

Exit code 1 when a kernel does not compile or asks for more shared memory than the architecture
has. Part of benchmarks/gpu/replica_check.sh; tests/benchmarks/test_triton_compile_check.py (slow)
runs --quick. Tied to Triton 3.6's runtime (``driver.set_active``, ``JITFunction.run``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the kernels must be JIT functions, not the interpreter's (tests/conftest.py sets this for CPU
# tests, and subprocesses inherit it): before anything imports vmunet.ops' Triton modules
os.environ.pop("TRITON_INTERPRET", None)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import triton  # noqa: E402
from _common import PAPER_STAGES_224, md_table  # noqa: E402  (benchmarks/_common.py)
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from vmunet.data.fileio import write_json  # noqa: E402
from vmunet.ops import cross_scan_triton, scan_triton  # noqa: E402

logger = logging.getLogger("triton_compile_check")
STAGES = PAPER_STAGES_224
D_STATE, K = 16, 4
#: largest shared memory one block may use (opt-in), bytes, per compute capability major.minor
SHARED_LIMIT = {"80": 166912, "86": 101376, "89": 101376, "90": 232448}


class _CompileOnlyDriver:
    """What JITFunction.run asks of Triton's driver before a launch, for a GPU that is not here."""

    def __init__(self, arch: int) -> None:
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return self.target


def _resources(cubin: bytes, name: str) -> dict:
    """Registers and local (spill) bytes of ``name`` in ``cubin``, from Triton's bundled cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True,
                              text=True, check=True).stdout
    m = re.search(rf"Function {re.escape(name)}:\s*REG:(\d+).*?LOCAL:(\d+)", text, re.S)
    return {"regs": int(m.group(1)), "local_bytes": int(m.group(2))} if m else {}


class Compiler:
    """Turns every Triton launch into a compile for ``arch`` and records each kernel built."""

    def __init__(self, arch: int) -> None:
        self.arch = arch
        self.rows: list[dict] = []
        self.seen: set[int] = set()
        self.case = ""

    def __enter__(self) -> Compiler:
        self._run = JITFunction.run
        compiler = self

        def compile_only(fn, *args, grid, warmup, **kwargs):
            t = time.perf_counter()
            kernel = compiler._run(fn, *args, grid=grid, warmup=True, **kwargs)
            if id(kernel) in compiler.seen:  # the same specialization again: Triton's cache answered
                return kernel
            compiler.seen.add(id(kernel))
            row = {"case": compiler.case, "kernel": fn.fn.__name__, "seconds": round(time.perf_counter() - t, 2),
                   "shared_bytes": kernel.metadata.shared, "num_warps": kernel.metadata.num_warps,
                   **_resources(kernel.asm["cubin"], kernel.name)}
            compiler.rows.append(row)
            return kernel

        JITFunction.run = compile_only
        self._driver = driver._active  # None until something asked for the real one
        driver.set_active(_CompileOnlyDriver(self.arch))
        return self

    def __exit__(self, *exc) -> None:
        JITFunction.run = self._run
        driver.set_active(self._driver)  # not reset_active(): it would look for a GPU

    def scan(self, case: str, dim: int, L: int, dtype: torch.dtype, *, D=True, z=False, bias=True,
             softplus=True, last=False, inference=False) -> None:
        """Forward and backward launches of the selective scan (batch 1: sizes only pick
        specializations); with ``inference``, also the forward that saves nothing for a backward."""
        self.case = case
        seq = lambda *s: torch.randn(*s, dtype=dtype, requires_grad=True)  # noqa: E731
        f32 = lambda *s: torch.randn(*s, requires_grad=True)  # noqa: E731
        args = [seq(1, dim, L), seq(1, dim, L), f32(dim, D_STATE), seq(1, K, D_STATE, L), seq(1, K, D_STATE, L),
                f32(dim) if D else None, seq(1, dim, L) if z else None, f32(dim) if bias else None, softplus,
                scan_triton.BLOCK_L]
        out, state = scan_triton._TritonScan.apply(*args, True)
        # the kernels did not run: the outputs hold no numbers, only their shapes matter here
        torch.autograd.backward([out, state] if last else [out],
                                [torch.ones_like(out), torch.ones_like(state)] if last else [torch.ones_like(out)])
        if inference:
            self.case = f"{case}, inference"
            with torch.no_grad():
                scan_triton._TritonScan.apply(*args, False)

    def cross(self, case: str, C: int, hw: int, dtype: torch.dtype) -> None:
        self.case = f"{case}, scan"
        y = cross_scan_triton.scan4_triton(torch.zeros(1, C, hw, hw, dtype=dtype))
        self.case = f"{case}, merge"
        cross_scan_triton.merge4_triton(y, hw, hw)


def run(arch: int, quick: bool) -> list[dict]:
    stages = STAGES[-1:] if quick else STAGES
    with tempfile.TemporaryDirectory() as cache, Compiler(arch) as c:
        os.environ["TRITON_CACHE_DIR"] = cache  # compile every kernel here, none from an old cache
        for ch, hw in stages:
            c.scan(f"SS2D stage C={ch} L={hw * hw} float32", K * 2 * ch, hw * hw, torch.float32, inference=not quick)
        for dt in ([torch.float32] if quick else [torch.float32, torch.bfloat16, torch.float16, torch.float64]):
            c.scan(f"all options {str(dt)[6:]} L=49", 64, 49, dt, z=True, last=True)
        if not quick:
            c.scan("no options float32 L=49", 64, 49, torch.float32, D=False, bias=False, softplus=False)
        for dt in ([torch.float32] if quick else [torch.float32, torch.bfloat16]):
            for ch, hw in stages:
                c.cross(f"cross C={2 * ch} H=W={hw} {str(dt)[6:]}", 2 * ch, hw, dt)
        return c.rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability as a number: 80, 86, 89, 90")
    p.add_argument("--quick", action="store_true", help="one configuration of each kernel")
    p.add_argument("--out", default=None, help="also write triton_compile.json here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    t = time.perf_counter()
    try:
        rows = run(args.arch, args.quick)
    except Exception as exc:  # a compile error: name it in one line (the traceback is Triton's)
        print(f"triton_compile_check: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    limit = SHARED_LIMIT.get(str(args.arch))
    too_big = [r for r in rows if limit is not None and r["shared_bytes"] > limit]
    title = (f"Triton kernels compiled for sm_{args.arch} without a GPU (triton {triton.__version__}, "
             f"torch {torch.__version__}): {len(rows)} kernels in {time.perf_counter() - t:.0f} s")
    lines = md_table(["case", "kernel", "compile s", "registers", "spill bytes", "shared bytes"],
                     ([r["case"], r["kernel"], r["seconds"], r.get("regs", "?"), r.get("local_bytes", "?"),
                       r["shared_bytes"]] for r in rows), title)
    logger.info("\n".join(lines))
    if args.out:
        write_json(Path(args.out) / "triton_compile.json", {"arch": args.arch, "triton": triton.__version__,
                                                            "torch": torch.__version__, "rows": rows})
    if too_big:
        print(f"triton_compile_check: {len(too_big)} kernels need more shared memory than sm_{args.arch}'s "
              f"{limit} bytes: {sorted({r['kernel'] for r in too_big})}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

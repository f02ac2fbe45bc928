"""Compile mamba-ssm's selective-scan CUDA kernel (``selective_scan_cuda``) alone, for chosen GPUs.

Why not ``pip install mamba-ssm``: its setup.py hard-codes nine ``-gencode`` targets under CUDA 13
(``TORCH_CUDA_ARCH_LIST`` cannot narrow them, because torch's cpp_extension adds no arch flags once
any nvcc flag names an arch), builds every dtype (fp32/fp16/bf16 x real/complex), and ~12 CPU-min
per architecture is the result. This script compiles only ``csrc/selective_scan`` of the pinned
sdist, with mamba's own nvcc flags (copied from its setup.py below), for the listed architectures
(default sm_90: H100/H200), optionally trimmed to some input dtypes and real weights only.

Two modes, both through ``torch.utils.cpp_extension`` (the ninja build that ``load()`` uses):

* native (a GPU machine, or any machine whose torch is the target): the running torch's headers;
* cross (``--torch-root``): the headers and libraries of ANOTHER torch, e.g. the device's
  torch 2.11.0+cu130 cp312 wheel unpacked here, plus that Python's headers (``--python-include``).
  The target's own ``cpp_extension.py`` is loaded from that tree, so include/library paths are
  the target's; nothing is imported from the result (it is for another Python).

The output is ``<out>/selective_scan_cuda.so`` (a plain ``.so`` name imports under any CPython)
and ``<out>/selective_scan_cuda.json`` (what was built, from what, for which torch).

Example (here, for the device)::

    python benchmarks/gpu/build_selective_scan.py --src .gpu/wheels/mamba_ssm-2.3.2.post1.tar.gz \
        --dtypes fp32 --torch-root .gpu/torch-2.11.0-cp312/torch \
        --python-include /root/.pyenv/versions/3.12.1/include/python3.12 --out .gpu/prebuilt
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("build_selective_scan")

EXT_NAME = "selective_scan_cuda"
MAMBA_VERSION = "2.3.2.post1"
ITYPES = {"fp32": "float", "fp16": "at::Half", "bf16": "at::BFloat16"}
_ITYPE_ENUM = {"fp32": "Float", "fp16": "Half", "bf16": "BFloat16"}

# mamba-ssm 2.3.2.post1 setup.py, CUDA branch: extra_compile_args (cc_flag replaced by our -gencode)
CXX_FLAGS = ["-O3", "-std=c++17"]
NVCC_FLAGS = [
    "-O3", "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
    "--ptxas-options=-v", "-lineinfo",
    "--threads", "4",  # mamba's append_nvcc_threads
]
UPSTREAM_SOURCES = [
    "selective_scan.cpp",
    "selective_scan_fwd_fp32.cu", "selective_scan_fwd_fp16.cu", "selective_scan_fwd_bf16.cu",
    "selective_scan_bwd_fp32_real.cu", "selective_scan_bwd_fp32_complex.cu",
    "selective_scan_bwd_fp16_real.cu", "selective_scan_bwd_fp16_complex.cu",
    "selective_scan_bwd_bf16_real.cu", "selective_scan_bwd_bf16_complex.cu",
]


def parse_dtypes(text: str) -> list[str] | None:
    """'all' -> None (the upstream build, complex weights included); else a subset of ITYPES."""
    if text == "all":
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in ITYPES]
    if not names or bad:
        raise ValueError(f"--dtypes: expected 'all' or a comma list of {sorted(ITYPES)}, got {text!r}")
    return sorted(set(names), key=list(ITYPES).index)


def gencode_flags(archs: str) -> list[str]:
    """'90' -> ['-gencode', 'arch=compute_90,code=sm_90'], one pair per comma-separated arch."""
    flags = []
    for a in archs.split(","):
        a = a.strip().removeprefix("sm_").replace(".", "")
        if not re.fullmatch(r"\d{2,3}[af]?", a):
            raise ValueError(f"--arch: expected compute capabilities like 90 or 80,90, got {archs!r}")
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags


def trim_sources(csrc: Path, dtypes: list[str]) -> list[Path]:
    """Restrict the dispatch in selective_scan.cpp to ``dtypes`` inputs with real float weights and
    write one instantiation file per kernel; the upstream .cu files also instantiate complex
    weights, which VM-UNet never uses and which cost most of the compile time."""
    cpp = csrc / "selective_scan.cpp"
    text = cpp.read_text()
    anchor = "template<typename input_t, typename weight_t>\nvoid selective_scan_fwd_cuda"
    if anchor not in text:
        raise RuntimeError(f"{cpp}: layout not recognised (expected mamba-ssm {MAMBA_VERSION})")
    branches = " else ".join(
        f"if (ITYPE == at::ScalarType::{_ITYPE_ENUM[d]}) {{ using input_t = {ITYPES[d]}; __VA_ARGS__(); }}"
        for d in dtypes)
    built = ", ".join(dtypes)
    redefine = (
        "// vmunet trimmed build: only these input dtypes, only real float32 weights\n"
        "#undef DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16\n"
        "#define DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(ITYPE, NAME, ...) \\\n"
        f"    {branches} else {{ AT_ERROR(#NAME, \" not implemented for input type '\", toString(ITYPE), "
        f"\"' (this selective_scan_cuda build has only {built})\"); }}\n"
        "#undef DISPATCH_WTYPE_FLOAT_AND_COMPLEX\n"
        "#define DISPATCH_WTYPE_FLOAT_AND_COMPLEX(WTYPE, NAME, ...) \\\n"
        "    if (WTYPE == at::ScalarType::Float) { using weight_t = float; __VA_ARGS__(); } \\\n"
        "    else { AT_ERROR(#NAME, \" not implemented for weight type '\", toString(WTYPE), "
        "\"' (this selective_scan_cuda build has real float32 weights only)\"); }\n\n")
    cpp.write_text(text.replace(anchor, redefine + anchor, 1))
    sources = [cpp]
    for d in dtypes:
        for kind, header, params in (("fwd", "selective_scan_fwd_kernel.cuh", "SSMParamsBase"),
                                     ("bwd", "selective_scan_bwd_kernel.cuh", "SSMParamsBwd")):
            path = csrc / f"vmunet_{kind}_{d}_real.cu"
            path.write_text(f'#include "{header}"\n\ntemplate void selective_scan_{kind}_cuda'
                            f"<{ITYPES[d]}, float>({params} &params, cudaStream_t stream);\n")
            sources.append(path)
    return sources


def load_cpp_extension(torch_root: Path | None):
    """torch.utils.cpp_extension of the running torch, or the target tree's own copy (cross build)."""
    if torch_root is None:
        from torch.utils import cpp_extension
        return cpp_extension
    path = torch_root / "utils" / "cpp_extension.py"
    if not path.is_file() or not (torch_root / "include" / "torch" / "extension.h").is_file():
        raise FileNotFoundError(f"--torch-root {torch_root}: expected a torch package folder with "
                                "utils/cpp_extension.py and include/torch/extension.h")
    spec = importlib.util.spec_from_file_location("_target_cpp_extension", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "torch.utils"  # its relative imports (file_baton, hipify) use the running torch
    spec.loader.exec_module(module)  # its _TORCH_PATH is torch_root: the target's headers/libraries
    # it finds CUDA only when the running torch is a CUDA build; the compiler is ours either way
    module.CUDA_HOME = str(cuda_home())
    return module


def target_torch_version(torch_root: Path | None) -> str:
    if torch_root is None:
        import torch
        return torch.__version__
    text = (torch_root / "version.py").read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


def cuda_home() -> Path:
    """CUDA_HOME, else the toolkit holding the ``nvcc`` on PATH (links resolved), else
    /usr/local/cuda: the folder with bin/nvcc AND include/cuda_runtime.h (a /usr/local/bin/nvcc
    wrapper script must not make it /usr/local). Exported for cpp_extension."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for home in filter(None, candidates):
        if (Path(home) / "bin" / "nvcc").is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file():
            os.environ["CUDA_HOME"] = home
            return Path(home)
    raise FileNotFoundError("no CUDA toolkit found (bin/nvcc and include/cuda_runtime.h): set CUDA_HOME")


def nvcc_version() -> str:
    out = subprocess.run([str(cuda_home() / "bin" / "nvcc"), "--version"], capture_output=True,
                         text=True, check=True).stdout
    return re.search(r"release ([\d.]+)", out).group(1)


def unpack_sources(src: Path, work: Path) -> Path:
    """The sdist (.tar.gz) or an unpacked mamba-ssm tree -> a private copy of csrc/selective_scan."""
    if src.is_file():
        with tarfile.open(src) as tar:
            tar.extractall(work / "sdist", filter="data")
        roots = [p for p in (work / "sdist").iterdir() if p.is_dir()]
        if len(roots) != 1:
            raise RuntimeError(f"{src}: expected one top-level folder in the sdist")
        src = roots[0]
    csrc = src / "csrc" / "selective_scan"
    if not (csrc / "selective_scan.cpp").is_file():
        raise FileNotFoundError(f"--src {src}: no csrc/selective_scan/selective_scan.cpp (a mamba-ssm sdist?)")
    staging = work / "csrc.new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(csrc, staging)
    return staging


def sync_dir(staging: Path, dest: Path) -> None:
    """Move ``staging`` over ``dest`` keeping every file whose bytes are unchanged (and so its
    mtime): ninja then recompiles only what changed when a kept ``--build-dir`` is built again,
    e.g. bf16 added to an fp32 build recompiles the dispatch .cpp and the bf16 kernels, not the
    fp32 ones (2026-11-27, 2-core VM, load ~1: 146 s for the dispatch and the two bf16 kernels)."""
    dest.mkdir(parents=True, exist_ok=True)
    new = {p.name for p in staging.iterdir()}
    for old in dest.iterdir():
        if old.name not in new:
            old.unlink()
    for path in staging.iterdir():
        target = dest / path.name
        if target.is_file() and target.read_bytes() == path.read_bytes():
            path.unlink()
        else:
            os.replace(path, target)
    staging.rmdir()


def build(src: Path, out: Path, arch: str = "90", dtypes: str = "fp32", jobs: int | None = None,
          torch_root: Path | None = None, python_include: Path | None = None,
          build_dir: Path | None = None, verbose: bool = False) -> Path:
    """Compile and return the path of ``<out>/selective_scan_cuda.so``."""
    trim = parse_dtypes(dtypes)
    cuda_flags = NVCC_FLAGS + gencode_flags(arch)
    if jobs:
        os.environ["MAX_JOBS"] = str(jobs)  # read by cpp_extension's ninja call
    nvcc = nvcc_version()  # also sets CUDA_HOME before cpp_extension reads it
    cpp_extension = load_cpp_extension(torch_root)
    work = Path(build_dir or tempfile.mkdtemp(prefix="selective_scan_build_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    staging = unpack_sources(src, work)
    names = [p.name for p in trim_sources(staging, trim)] if trim else UPSTREAM_SOURCES
    csrc = work / "csrc"
    sync_dir(staging, csrc)
    sources = [csrc / name for name in names]
    # -I comes before cpp_extension's -isystem, so a target Python's headers win over ours
    includes = [str(csrc)] + ([str(python_include)] if python_include else [])
    if python_include and not (python_include / "Python.h").is_file():
        raise FileNotFoundError(f"--python-include {python_include}: no Python.h there")
    ninja_dir = work / "ninja"
    ninja_dir.mkdir(exist_ok=True)
    t0 = time.time()
    cpp_extension._write_ninja_file_and_build_library(
        name=EXT_NAME, sources=[str(s) for s in sources], extra_cflags=CXX_FLAGS,
        extra_cuda_cflags=cuda_flags, extra_sycl_cflags=None, extra_ldflags=None,
        extra_include_paths=includes, build_directory=str(ninja_dir), verbose=verbose,
        with_cuda=True, with_sycl=False)
    seconds = time.time() - t0
    built = ninja_dir / f"{EXT_NAME}.so"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{EXT_NAME}.so.tmp"
    shutil.copyfile(built, tmp)
    os.replace(tmp, out / f"{EXT_NAME}.so")
    so = out / f"{EXT_NAME}.so"
    manifest = {
        "extension": EXT_NAME, "mamba_ssm": MAMBA_VERSION, "source": src.name,
        "arch": arch, "dtypes": trim or "all", "weights": "real float32" if trim else "float32 and complex64",
        "torch": target_torch_version(torch_root), "nvcc": nvcc,
        "python_include": str(python_include) if python_include else None,
        "cross_build": torch_root is not None, "seconds": round(seconds, 1),
        "bytes": so.stat().st_size, "sha256": hashlib.sha256(so.read_bytes()).hexdigest(),
        "nvcc_flags": cuda_flags,
    }
    tmp = out / f".{EXT_NAME}.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / f"{EXT_NAME}.json")
    logger.info("built %s (%d bytes) in %.0f s", so, manifest["bytes"], seconds)
    return so


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, required=True, help="mamba-ssm sdist (.tar.gz) or unpacked tree")
    p.add_argument("--out", type=Path, required=True, help="folder for selective_scan_cuda.so and .json")
    p.add_argument("--arch", default=os.environ.get("ARCH", "90"),
                   help="compute capabilities, comma-separated (default 90 = H100/H200; A100 is 80)")
    p.add_argument("--dtypes", default="fp32",
                   help="input dtypes to build: 'all' (upstream: every dtype, complex weights too) "
                        "or a comma list of fp32, fp16, bf16 (real weights only); default fp32")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (MAX_JOBS)")
    p.add_argument("--torch-root", type=Path, default=None,
                   help="cross build: the target torch package folder (with include/, lib/)")
    p.add_argument("--python-include", type=Path, default=None,
                   help="cross build: the target Python's include folder (with Python.h)")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="keep the build tree here: a later build in it recompiles only changed sources")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(args.src, args.out, args.arch, args.dtypes, args.jobs, args.torch_root,
              args.python_include, args.build_dir, args.verbose)
    except (ValueError, FileNotFoundError) as exc:
        print(f"build_selective_scan: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gpu/build_selective_scan.py without a compiler: the dtype trimming of mamba-ssm's
dispatch, the -gencode flags, and that a kept build tree is updated file by file (unchanged
sources keep their bytes and mtime, so ninja recompiles only what changed: adding bf16 to an
fp32 build must not recompile the fp32 kernels)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "build_selective_scan", ROOT / "benchmarks" / "gpu" / "build_selective_scan.py")
bss = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bss
_spec.loader.exec_module(bss)

# the two lines of mamba-ssm 2.3.2.post1's selective_scan.cpp that trim_sources anchors on
CPP = ("#include <torch/extension.h>\n\n"
       "template<typename input_t, typename weight_t>\nvoid selective_scan_fwd_cuda(SSMParamsBase &params);\n")


def _sdist_tree(root: Path) -> Path:
    csrc = root / "mamba" / "csrc" / "selective_scan"
    csrc.mkdir(parents=True)
    (csrc / "selective_scan.cpp").write_text(CPP)
    (csrc / "selective_scan_fwd_kernel.cuh").write_text("// fwd kernel\n")
    return root / "mamba"


def _build_tree(src: Path, work: Path, dtypes: list[str]) -> dict[str, float]:
    staging = bss.unpack_sources(src, work)
    names = [p.name for p in bss.trim_sources(staging, dtypes)]
    bss.sync_dir(staging, work / "csrc")
    assert not staging.exists()
    return {n: (work / "csrc" / n).stat().st_mtime_ns for n in names}


def test_rebuild_with_more_dtypes_keeps_unchanged_sources(tmp_path):
    src = _sdist_tree(tmp_path / "src")
    work = tmp_path / "build"
    first = _build_tree(src, work, ["fp32"])
    assert sorted(first) == ["selective_scan.cpp", "vmunet_bwd_fp32_real.cu", "vmunet_fwd_fp32_real.cu"]
    old = 1_000_000_000  # push the first build's files into the past: any rewrite would show
    for name in os.listdir(work / "csrc"):
        os.utime(work / "csrc" / name, ns=(old, old))
    second = _build_tree(src, work, ["fp32", "bf16"])
    csrc = work / "csrc"
    kept = {n for n in os.listdir(csrc) if (csrc / n).stat().st_mtime_ns == old}
    # fp32 kernels and untouched headers keep their mtime; the dispatch and the bf16 kernels are new
    assert kept == {"vmunet_fwd_fp32_real.cu", "vmunet_bwd_fp32_real.cu", "selective_scan_fwd_kernel.cuh"}
    assert set(second) - kept == {"selective_scan.cpp", "vmunet_fwd_bf16_real.cu", "vmunet_bwd_bf16_real.cu"}
    text = (csrc / "selective_scan.cpp").read_text()
    assert "ITYPE == at::ScalarType::Float" in text and "ITYPE == at::ScalarType::BFloat16" in text
    assert "this selective_scan_cuda build has only fp32, bf16" in text
    assert (csrc / "vmunet_bwd_bf16_real.cu").read_text() == (
        '#include "selective_scan_bwd_kernel.cuh"\n\n'
        "template void selective_scan_bwd_cuda<at::BFloat16, float>(SSMParamsBwd &params, cudaStream_t stream);\n")
    # back to fp32 only: the bf16 files leave the tree (a stale instantiation is never linked)
    _build_tree(src, work, ["fp32"])
    assert sorted(os.listdir(csrc)) == ["selective_scan.cpp", "selective_scan_fwd_kernel.cuh",
                                        "vmunet_bwd_fp32_real.cu", "vmunet_fwd_fp32_real.cu"]


def test_dtype_and_arch_arguments():
    assert bss.parse_dtypes("all") is None
    assert bss.parse_dtypes("bf16, fp32,bf16") == ["fp32", "bf16"]
    with pytest.raises(ValueError, match=r"^--dtypes: expected 'all' or a comma list of"):
        bss.parse_dtypes("int8")
    assert bss.gencode_flags("80,sm_90") == ["-gencode", "arch=compute_80,code=sm_80",
                                             "-gencode", "arch=compute_90,code=sm_90"]
    with pytest.raises(ValueError, match=r"^--arch: expected compute capabilities"):
        bss.gencode_flags("hopper")

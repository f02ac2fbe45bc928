"""benchmarks/gpu/triton_compile_check.py: vmunet's Triton kernels compile for sm_90 with Triton's
real compiler (not the interpreter the other CPU tests use), on a machine without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# ~25 s on the 2-core VM (a fresh process, six kernels through Triton's compiler and ptxas)
@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # as tests/conftest.py sets it: the script must undo it
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "triton_compile_check.py"),
                           "--quick", "--arch", "90", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "triton_compile.json").read_text())
    rows = res["rows"]
    # --quick: the last stage's scan, the all-options scan (float32), the cross-scan and -merge
    assert sorted(r["kernel"] for r in rows) == sorted(["_scan_fwd_kernel", "_scan_bwd_kernel"] * 2
                                                       + ["_cross_kernel"] * 2)
    # numbers only a real build has: registers from the cubin (<= 255 per thread on sm_90), and
    # the shared memory Triton asks for at launch
    assert all(0 < r["regs"] <= 255 and r["local_bytes"] >= 0 and r["shared_bytes"] > 0 for r in rows), rows
    assert "sm_90" in proc.stdout and "_scan_bwd_kernel" in proc.stdout

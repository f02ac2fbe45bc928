#!/usr/bin/env bash
# The one command for a lent GPU machine (run in the repo root; results under $OUT):
#   bash benchmarks/gpu/device_check.sh        with carry [".gpu-carry"] (made by `make gpu-carry`)
# It installs only the carried wheels (never torch: the image's torch 2.11.0+cu130 is the target),
# then runs benchmarks/gpu_check.py (kernel from .gpu-carry/prebuilt, else built from the sdist)
# and the CUDA tests. Each stage has its own timeout so one stuck stage still leaves results.
set -u
CARRY=${CARRY:-.gpu-carry}
OUT=${OUT:-/tmp/gpu_check_out}
BUDGET_S=${BUDGET_S:-360}   # + 60 s grace + 100 s tests + install < the call's 570 s
# extra gpu_check.py flags: empty on the device; benchmarks/gpu/replica_check.sh passes --smoke to
# dry-run this very script on a CPU replica of the device's Python
GPU_CHECK_ARGS=${GPU_CHECK_ARGS:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
  nvcc --version 2>&1 | tail -2
  nproc
} > "$OUT/env.txt"
cat "$OUT/env.txt"
SITE=$(mktemp -d /tmp/vmunet_site.XXXX)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRY"/wheels/*.whl \
  || { echo "device_check: installing the carried wheels failed"; exit 3; }
export PYTHONPATH="$SITE:$PWD"
ORIG=()
[ -d "$CARRY/VM-UNet" ] && ORIG=(--original "$CARRY/VM-UNet")
SDIST=$(ls "$CARRY"/mamba_ssm-*.tar.gz 2>/dev/null | head -1)
timeout $((BUDGET_S + 60)) python3 benchmarks/gpu_check.py --out "$OUT" --so "$CARRY/prebuilt" \
  ${SDIST:+--sdist "$SDIST"} --budget-s "$BUDGET_S" "${ORIG[@]}" $GPU_CHECK_ARGS 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
# the kernel that gpu_check loaded (or built), for the CUDA tests
EXT_DIR=$(python3 -c "import json; print(json.load(open('$OUT/gpu_check.json'))['sections']['extension'].get('file') or '')" 2>/dev/null)
[ -n "$EXT_DIR" ] && export VMUNET_SELECTIVE_SCAN_CUDA_DIR=$(dirname "$EXT_DIR")
# the hand-computed scan answers on the GPU backends, the model's backend agreement, and the
# fused cross-scan's Triton kernels on CUDA tensors (exact against plain loops)
timeout 100 python3 -m pytest -q -p no:cacheprovider -o addopts="-ra" -m "not slow" \
  -k "cuda or triton or backends_agree or gpu" \
  tests/ops/test_ops_scan_known_answers.py tests/models/test_model_forward.py \
  tests/ops/test_ops_cross_scan_fused.py \
  2>&1 | tail -40 | tee "$OUT/pytest_cuda.txt"
echo "gpu_check exit code: $rc"
exit "$rc"

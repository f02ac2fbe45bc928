#!/usr/bin/env bash
# Optional pre-flight for the one GPU device call (NOT part of `make test`; download-heavy):
# builds a CPU replica of the lent GPU image's Python and dry-runs benchmarks/gpu/device_check.sh in it.
#   make gpu-carry && bash benchmarks/gpu/replica_check.sh
# The replica (.venv312, ignored): Python 3.12, the real torch 2.11.0+cu130 wheel (from
# .gpu/wheels, else PyPI) with its nvidia-* CUDA libraries (they must be there for torch to
# import), and the image's versions of what the GPU path imports (pip list in the device docs);
# NOT nibabel, SimpleITK, jsonargparse, pydicom, monai (absent there: monai comes from the carried
# wheel, as on the device). A first run downloads ~3 GB of wheels (torch 0.5 GB) into 5.7 GB of
# .venv312; the README's GPU section has the times measured.
# Checks, in order; any failure exits non-zero with a one-line reason:
#   1. device_check.sh itself with GPU_CHECK_ARGS=--smoke: the carried wheels installed with
#      --target, gpu_check.py with the device's flags (--so, --sdist, --original, --budget-s) on the
#      CPU stand-in, then the device's pytest selection (CUDA/Triton tests skip without a GPU).
#   2. gpu_check.py without --smoke: must stop at once with exit code 2 and one line (no GPU here).
#   3. the carried selective_scan_cuda.so imports against torch 2.11 (every symbol resolved) and
#      has fwd/bwd.
#   4. benchmarks/gpu/triton_compile_check.py: the Triton kernels compile for sm_90 (Triton's real
#      compiler and ptxas; the CPU tests only ever run them in the interpreter).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PY312:-python3.12}
VENV=${VENV:-.venv312}
CARRY=${CARRY:-.gpu-carry}
OUT=${OUT:-/tmp/gpu_replica_out}
TORCH_WHEEL=${TORCH_WHEEL:-.gpu/wheels/torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl}
# the device image's versions (its `pip list` as sessions saw it), and the newest releases where
# the image's version is unknown (numba/llvmlite, scipy, einops, ...: pip picks those that fit)
PINS=(numpy==2.5.2 triton==3.6.0 lightning==2.6.6 pytorch-lightning==2.6.6 torchmetrics==1.9.0
      torchvision==0.26.0 onnx==1.23.1 onnxruntime==1.30.0 safetensors==0.8.0 huggingface_hub==1.33.0)
UNPINNED=(einops scipy h5py numba llvmlite matplotlib pyyaml tqdm rich pillow tensorboard packaging
          psutil pytest pytest-timeout pytest-xdist hypothesis scikit-image scikit-learn pandas
          tifffile imageio opencv-python-headless)
ABSENT_ON_DEVICE=(nibabel SimpleITK jsonargparse pydicom monai vmunet)
fail() { echo "replica_check: $*" >&2; exit 1; }

[ -f "$CARRY/prebuilt/selective_scan_cuda.so" ] || fail "no $CARRY/prebuilt/selective_scan_cuda.so: run 'make gpu-carry' first"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY312" -c "import sys; assert sys.version_info[:2] == (3, 12)" >/dev/null 2>&1 \
    || fail "$PY312 is not a working Python 3.12 (set PY312 to one)"
  "$PY312" -m venv "$VENV"
  torch_req=torch==2.11.0
  [ -f "$TORCH_WHEEL" ] && torch_req=$TORCH_WHEEL
  # torch's CUDA dependencies (cuda-toolkit, cudnn, nccl, ...) come with it: ~3 GB. The GPU
  # image has torchvision and timm: the check's original-model section takes timm's layers when
  # timm imports, and monai's optional imports see torchvision.
  "$VENV/bin/python" -m pip install -q "$torch_req" "${PINS[@]}" "${UNPINNED[@]}" timm \
    || fail "installing torch 2.11.0 and the replica's packages into $VENV failed"
fi
VENV=$(cd "$VENV" && pwd)  # absolute: it goes on PATH below
PY="$VENV/bin/python"
"$PY" -c "import sys, torch; assert sys.version_info[:2] == (3, 12) and torch.__version__.startswith('2.11.0'), (sys.version, torch.__version__)" \
  || fail "$VENV is not Python 3.12 with torch 2.11.0 (remove it to rebuild)"
for name in "${ABSENT_ON_DEVICE[@]}"; do
  if "$PY" -m pip show -q "$name" >/dev/null 2>&1; then
    fail "$VENV has $name installed; the device has not (pip uninstall it there)"
  fi
done
mkdir -p "$OUT"
"$PY" -m pip freeze > "$OUT/replica_freeze.txt"
echo "replica: $("$PY" -c 'import sys, torch, numpy, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__, "triton", triton.__version__)')"

# 1. the device script itself, with the CPU stand-in; `python3` is the replica's
export PATH="$VENV/bin:$PATH"
t0=$(date +%s)
rc=0
OUT="$OUT/smoke" GPU_CHECK_ARGS=--smoke FIT_CHECK_ARGS=--smoke \
  PREDICT_ARGS="--device cpu --slices 2 --no-tta --batch-size 2" CARRY="$CARRY" bash benchmarks/gpu/device_check.sh > "$OUT/device_check_smoke.log" 2>&1 || rc=$?
echo "device_check.sh --smoke: exit $rc, $(( $(date +%s) - t0 )) s (log: $OUT/device_check_smoke.log)"
[ "$rc" -eq 0 ] || fail "device_check.sh with --smoke exited $rc: see $OUT/device_check_smoke.log"
summary=$(grep -E "passed|failed|error" "$OUT/smoke/pytest_cuda.txt" | tail -1)
echo "device pytest selection: $summary"
case "$summary" in
  *failed*|*error*|"") fail "the device's pytest selection did not pass here: see $OUT/smoke/pytest_cuda.txt" ;;
esac

# 2. without --smoke: no GPU here, so a one-line refusal, exit code 2, within the imports' time
SITE=$(mktemp -d /tmp/vmunet_replica_site.XXXX)
trap 'rm -rf "$SITE"' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRY"/wheels/*.whl
t0=$(date +%s)
rc=0
PYTHONPATH="$SITE:$PWD" python3 benchmarks/gpu_check.py --out "$OUT/full" --so "$CARRY/prebuilt" \
  --budget-s 360 > "$OUT/full.log" 2>&1 || rc=$?
echo "gpu_check.py without a GPU: exit $rc in $(( $(date +%s) - t0 )) s: $(tail -1 "$OUT/full.log")"
{ [ "$rc" -eq 2 ] && [ "$(wc -l < "$OUT/full.log")" -eq 1 ]; } \
  || fail "gpu_check.py without a GPU should exit 2 with one line: see $OUT/full.log"

# 3. the carried kernel against this torch: dlopen resolves every symbol now (RTLD_NOW), and the
# module must expose fwd/bwd; running it needs the GPU
PYTHONPATH="$SITE:$PWD" VMUNET_SELECTIVE_SCAN_CUDA_DIR="$CARRY/prebuilt" python3 -c "
import torch
from vmunet.ops import scan_cuda
ext = scan_cuda.extension()
assert ext is not None, scan_cuda.load_error()
print('carried kernel loads against torch', torch.__version__, 'from', ext.__file__, ': fwd/bwd present')
" || fail "the carried selective_scan_cuda.so does not load against torch 2.11"

# 4. the Triton kernels through Triton's real compiler for the device's sm_90
t0=$(date +%s)
python3 benchmarks/gpu/triton_compile_check.py --arch 90 --out "$OUT" > "$OUT/triton_compile.md" 2>&1 \
  || fail "a Triton kernel does not compile for sm_90: see $OUT/triton_compile.md"
echo "Triton kernels compile for sm_90: $(python3 -c "import json; print(len(json.load(open('$OUT/triton_compile.json'))['rows']))") kernels, $(( $(date +%s) - t0 )) s ($OUT/triton_compile.md)"
echo "replica_check: OK"

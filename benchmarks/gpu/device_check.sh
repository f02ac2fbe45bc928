#!/usr/bin/env bash
# The one command for a lent GPU machine (run in the repo root; results under $OUT):
#   bash benchmarks/gpu/device_check.sh        with carry [".gpu-carry"] (made by `make gpu-carry`)
# It installs only the carried wheels (never torch: the image's torch 2.11.0+cu130 is the target),
# then runs benchmarks/gpu_check.py (kernel from .gpu-carry/prebuilt, else built from the sdist),
# the CUDA tests, `vmunet fit` on the GPU (benchmarks/gpu/fit_check.sh) and whole-volume prediction
# speed (benchmarks/bench_predict.py --device cuda). Each stage has its own timeout so one stuck
# stage still leaves results. $OUT gets at most 8 files (the device tool's limit): gpu_check.json,
# gpu_check.md, gpu_check.log (machine facts first), pytest_cuda.txt, predict.md, fit/fit_check.*.
set -u
CARRY=${CARRY:-.gpu-carry}
OUT=${OUT:-/tmp/gpu_check_out}
# worst case: gpu_check 200 + 60 s grace, tests 100, fit 150 + 45, predict 60, installs ~20: give the
# call timeout_s=590 (on an H200, 2026-11-27: 222 s for call 1, all gpu_check sections and the tests,
# before the fit and predict stages existed; 385 s for call 2, five sections and every later stage)
BUDGET_S=${BUDGET_S:-200}
FIT_BUDGET_S=${FIT_BUDGET_S:-150}
PREDICT_S=${PREDICT_S:-60}
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
} > "$OUT/gpu_check.log"
cat "$OUT/gpu_check.log"
# shellcheck source=benchmarks/gpu/carry_env.sh
. benchmarks/gpu/carry_env.sh
ORIG=()
[ -d "$CARRY/VM-UNet" ] && ORIG=(--original "$CARRY/VM-UNet")
SDIST=$(ls "$CARRY"/mamba_ssm-*.tar.gz 2>/dev/null | head -1)
timeout $((BUDGET_S + 60)) python3 benchmarks/gpu_check.py --out "$OUT" --so "$CARRY/prebuilt" \
  ${SDIST:+--sdist "$SDIST"} --budget-s "$BUDGET_S" "${ORIG[@]}" $GPU_CHECK_ARGS 2>&1 | tee -a "$OUT/gpu_check.log"
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
# the training entry point on the GPU (its own budget and results under $OUT/fit; the wheels above)
FIT_BUDGET_S=$FIT_BUDGET_S OUT=$OUT CARRY=$CARRY bash benchmarks/gpu/fit_check.sh
fit_rc=$?
# a 100-slice 512x512 volume through the Predictor on the GPU (no TTA and 4-flip TTA)
# shellcheck disable=SC2086  # PREDICT_ARGS is a list of flags (a CPU replica passes CPU ones)
timeout "$PREDICT_S" python3 benchmarks/bench_predict.py ${PREDICT_ARGS:---device cuda --batch-size 32} \
  > "$OUT/predict.md" 2>&1
echo "predict exit code: $?" >> "$OUT/predict.md"
cat "$OUT/predict.md"
echo "gpu_check exit code: $rc; fit_check exit code: $fit_rc"
[ "$rc" -eq 0 ] || exit "$rc"
exit "$fit_rc"

#!/usr/bin/env bash
# `vmunet fit` on the lent GPU (benchmarks/gpu/fit_check.py), in the repo root, results under $OUT/fit:
#   bash benchmarks/gpu/fit_check.sh          with carry [".gpu-carry"] (made by `make gpu-carry`)
# Puts the carried wheels on PYTHONPATH (benchmarks/gpu/carry_env.sh: installed once, shared with
# device_check.sh when it runs this) and runs the check under a hard timeout of its budget + 45 s.
# FIT_CHECK_ARGS: extra flags (a dry run on a CPU replica passes --smoke). The kernel: the carried
# one, or the folder $VMUNET_SELECTIVE_SCAN_CUDA_DIR names (where gpu_check.py built one).
set -u
CARRY=${CARRY:-.gpu-carry}
OUT=${OUT:-/tmp/gpu_check_out}
FIT_BUDGET_S=${FIT_BUDGET_S:-150}
# past the budget a running fit still ends its epoch and validation (its max_time is the budget left)
FIT_GRACE_S=${FIT_GRACE_S:-45}
FIT_CHECK_ARGS=${FIT_CHECK_ARGS:-}
mkdir -p "$OUT/fit"
export PYTHONUNBUFFERED=1
# shellcheck source=benchmarks/gpu/carry_env.sh
. benchmarks/gpu/carry_env.sh
# shellcheck disable=SC2086  # FIT_CHECK_ARGS is a list of flags
timeout $((${FIT_BUDGET_S%.*} + FIT_GRACE_S)) python3 benchmarks/gpu/fit_check.py --out "$OUT/fit" --so "${VMUNET_SELECTIVE_SCAN_CUDA_DIR:-$CARRY/prebuilt}" \
  --budget-s "$FIT_BUDGET_S" $FIT_CHECK_ARGS 2>&1 | tee "$OUT/fit/fit_check.log"
rc=${PIPESTATUS[0]}
echo "fit_check exit code: $rc"
exit "$rc"

#!/usr/bin/env bash
# Build mamba-ssm's selective_scan_cuda for the GPU machine, here or there.
#
#   bash benchmarks/gpu/build_selective_scan.sh            # here (no GPU): cross build for the device
#   NATIVE=1 bash benchmarks/gpu/build_selective_scan.sh   # on a GPU machine, against its own torch
#
# Variables: ARCH (compute capability, default 90 = H100/H200; 80 = A100), DTYPES (fp32 [default],
# e.g. fp32,bf16, or all = the upstream build), JOBS (parallel compiles, default: cores),
# TORCH_VERSION (the target torch, default 2.11.0 = the device image's 2.11.0+cu130), PY312_INCLUDE
# (the target Python's headers), OUT (default .gpu/prebuilt/<dtypes>-sm<arch>).
# Downloads (cross build only, into the ignored .gpu/): the pinned mamba-ssm sdist (216 KB) and the
# torch cp312 wheel from PyPI (531 MB; its headers and libraries only are unpacked).
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-90}
DTYPES=${DTYPES:-fp32}
JOBS=${JOBS:-$(nproc)}
MAMBA=2.3.2.post1
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-.gpu/prebuilt/${DTYPES//,/-}-sm${ARCH}}
SDIST=.gpu/wheels/mamba_ssm-$MAMBA.tar.gz
mkdir -p .gpu/wheels
if [ ! -f "$SDIST" ]; then
  # setup.py imports torch even for metadata: no build isolation, no CUDA build (any env with torch)
  MAMBA_SKIP_CUDA_BUILD=TRUE "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    "mamba-ssm==$MAMBA" -d .gpu/wheels
fi
if [ "${NATIVE:-0}" = 1 ]; then
  exec "$PY" benchmarks/gpu/build_selective_scan.py --src "$SDIST" --arch "$ARCH" --dtypes "$DTYPES" \
    --jobs "$JOBS" --build-dir ".gpu/build/${DTYPES//,/-}-sm$ARCH-native" --out "$OUT"
fi
TROOT=.gpu/torch-$TORCH_VERSION-cp312
if [ ! -f "$TROOT/torch/include/torch/extension.h" ]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .gpu/wheels "torch==$TORCH_VERSION"
  # only what a build reads: headers, libraries (to link against), version, cpp_extension
  unzip -q -o .gpu/wheels/torch-$TORCH_VERSION-cp312-*.whl 'torch/include/*' 'torch/lib/*' \
    'torch/version.py' 'torch/utils/cpp_extension.py' -d "$TROOT"
fi
if [ -z "${PY312_INCLUDE:-}" ]; then
  for py in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    if command -v "$py" >/dev/null 2>&1; then
      PY312_INCLUDE=$("$py" -c "import sysconfig; print(sysconfig.get_path('include'))") && break
    fi
  done
fi
[ -f "${PY312_INCLUDE:-}/Python.h" ] || { echo "build_selective_scan.sh: no Python 3.12 headers; set PY312_INCLUDE" >&2; exit 2; }
exec nice "$PY" benchmarks/gpu/build_selective_scan.py --src "$SDIST" --arch "$ARCH" --dtypes "$DTYPES" \
  --jobs "$JOBS" --torch-root "$TROOT/torch" --python-include "$PY312_INCLUDE" \
  --build-dir ".gpu/build/${DTYPES//,/-}-sm$ARCH" --out "$OUT"

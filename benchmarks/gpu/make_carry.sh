#!/usr/bin/env bash
# `make gpu-carry`: put in .gpu-carry/ (ignored) what the GPU check needs and the device image
# lacks, check the 64 MiB limit, and print the device command.
#   wheels/   monai (the only required package of the model and data path the image lacks), and for
#             benchmarks/gpu/fit_check.py (`vmunet fit` on synthetic Synapse data): jsonargparse +
#             docstring-parser + typeshed-client (LightningCLI's `jsonargparse[signatures]`) and nibabel
#             (the synthetic data's reorientation, vmunet.data.volumes.to_ras); all pure Python, ~4.5 MB;
#             --no-deps (their other dependencies are in the image), py3.12, the versions of this venv.
#             Not carried: SimpleITK (~50 MB), pydicom: imported only inside the functions that read
#             DICOM/MetaImage/NRRD files, which neither check uses.
#   prebuilt/ selective_scan_cuda.so + .json (from GPU_SO_DIR, default fp32+bf16 inputs for sm_90;
#             built by build_selective_scan.sh if absent)
#   mamba_ssm-2.3.2.post1.tar.gz  (for the on-device build when the .so does not load)
#   VM-UNet/  the original model code (models/vmunet/*.py, LICENSE) from ORIGINAL, when present
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu-carry
GPU_SO_DIR=${GPU_SO_DIR:-.gpu/prebuilt/fp32-bf16-sm90}
ORIGINAL=${ORIGINAL:-third_party/VM-UNet}
PY=${PY:-.venv/bin/python}
MAMBA=2.3.2.post1
LIMIT=$((64 * 1024 * 1024))
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
MONAI=$(version monai)
FIT_PKGS=()
for pkg in jsonargparse docstring-parser typeshed-client nibabel; do FIT_PKGS+=("$pkg==$(version "$pkg")"); done
TMP=.gpu/carry.tmp  # inside the ignored .gpu/, so it is not counted as working tree
rm -rf "$TMP"
mkdir -p "$TMP/wheels" "$TMP/prebuilt" .gpu/wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$TMP/wheels" "monai==$MONAI" "${FIT_PKGS[@]}"
if [ ! -f ".gpu/wheels/mamba_ssm-$MAMBA.tar.gz" ]; then
  MAMBA_SKIP_CUDA_BUILD=TRUE "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    "mamba-ssm==$MAMBA" -d .gpu/wheels
fi
cp ".gpu/wheels/mamba_ssm-$MAMBA.tar.gz" "$TMP/"
if [ ! -f "$GPU_SO_DIR/selective_scan_cuda.so" ]; then
  echo "gpu-carry: no $GPU_SO_DIR/selective_scan_cuda.so: building it (cross build, minutes)"
  DTYPES=${DTYPES:-fp32,bf16} OUT="$GPU_SO_DIR" bash benchmarks/gpu/build_selective_scan.sh
fi
cp "$GPU_SO_DIR/selective_scan_cuda.so" "$GPU_SO_DIR/selective_scan_cuda.json" "$TMP/prebuilt/"
if [ -f "$ORIGINAL/models/vmunet/vmamba.py" ]; then
  mkdir -p "$TMP/VM-UNet/models/vmunet"
  cp "$ORIGINAL"/models/vmunet/*.py "$TMP/VM-UNet/models/vmunet/"
  cp "$ORIGINAL"/LICENSE "$TMP/VM-UNet/" 2>/dev/null || true
  cp "$ORIGINAL"/COMMIT "$TMP/VM-UNet/" 2>/dev/null || true
else
  echo "gpu-carry: no original VM-UNet code at $ORIGINAL (fetch github:JCruan519/VM-UNet there):"
  echo "           the check will skip the original-model comparison"
fi
carry_bytes=$(du -sb "$TMP" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$((carry_bytes + tree_bytes))
if [ "$total" -gt "$LIMIT" ]; then
  echo "gpu-carry: $total bytes (carry $carry_bytes + working tree $tree_bytes) exceed 64 MiB" >&2
  exit 1
fi
rm -rf "$CARRY"
mv "$TMP" "$CARRY"
echo "gpu-carry: $CARRY ready: $carry_bytes bytes + working tree $tree_bytes bytes = $total of $LIMIT"
find "$CARRY" -type f | sort | sed 's/^/  /'
cat <<MSG

Device command (one call, machine start not included; ~6-8 min):
  run(command="bash benchmarks/gpu/device_check.sh", carry=[".gpu-carry"], timeout_s=590)
Results come back in \$OUT: gpu_check.json, gpu_check.md, gpu_check.log, pytest_cuda.txt, predict.md,
fit/fit_check.json, fit/fit_check.md, fit/fit_check.log.
MSG

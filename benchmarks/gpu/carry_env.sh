# Sourced by device_check.sh and fit_check.sh (repo root, CARRY set): puts the carried wheels
# (monai, jsonargparse & co, nibabel; never torch) on PYTHONPATH. Installed once per device call:
# a script run from another one that already installed them (VMUNET_CARRY_SITE exported) reuses them.
if [ -z "${VMUNET_CARRY_SITE:-}" ]; then
  VMUNET_CARRY_SITE=$(mktemp -d /tmp/vmunet_site.XXXX)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$VMUNET_CARRY_SITE" \
    "$CARRY"/wheels/*.whl || { echo "$(basename "$0"): installing the carried wheels failed"; exit 3; }
  export VMUNET_CARRY_SITE
fi
export PYTHONPATH="$VMUNET_CARRY_SITE:$PWD"

"""Write ``tests/parity/frozen/original_isic_transforms.npz``: VM-UNet's ISIC data chain (dataset,
config transformer, utils.py transforms on torchvision 0.14.0) on each case of
``isic_transform_cases.CASES``, cast with ``.float()`` as ``engine.py`` does for the model.

Needs ``third_party/`` (``make third-party``). Run from the repository root:

    .venv/bin/python tests/parity/freeze_isic_transforms.py

Keys: ``<case>/image`` (3, h, w) and ``<case>/mask`` (1, h, w) float32; ``provenance`` (a JSON
string: VM-UNet commit, torchvision, torch and numpy versions).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from isic_transform_cases import CASES, FROZEN_FILE, original_chain, write_folder  # noqa: E402
from original_code import (  # noqa: E402
    TORCHVISION_VERSION,
    VMUNET_COMMIT,
    torchvision_0_14,
    vmunet_dir,
    write_frozen_npz,
)


def main() -> int:
    try:
        root, torchvision = vmunet_dir(), torchvision_0_14()
    except pytest.skip.Exception as err:  # the helpers skip (inside pytest) where the code is absent
        sys.stderr.write(f"freeze_isic_transforms: {err}\n")
        return 2
    arrays: dict[str, np.ndarray] = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            image, mask = original_chain(root, torchvision, write_folder(Path(tmp), case), case)
        arrays[f"{case.name}/image"] = image.float().numpy()
        arrays[f"{case.name}/mask"] = mask.float().numpy()
    provenance = {"vmunet_commit": VMUNET_COMMIT, "torchvision": TORCHVISION_VERSION, "torch": torch.__version__,
                  "numpy": np.__version__}
    write_frozen_npz(FROZEN_FILE, arrays, provenance)
    sys.stdout.write(f"wrote {FROZEN_FILE} ({len(CASES)} cases, {FROZEN_FILE.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

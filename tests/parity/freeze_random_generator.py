"""Write ``tests/parity/frozen/original_random_generator.npz``: VM-UNet's Synapse training items
(``Synapse_dataset`` + ``RandomGenerator``) of ``random_generator_cases``, for each seed of
``SEEDS``, read in order after ``random.seed(s); np.random.seed(s)``.

Needs ``third_party/`` (``make third-party``). Run from the repository root:

    .venv/bin/python tests/parity/freeze_random_generator.py

Keys: ``seed<s>/image`` (COUNT, 1, SIZE, SIZE) float32 and ``seed<s>/label`` (COUNT, SIZE, SIZE)
int64, the items stacked in reading order; ``provenance`` (a JSON string: VM-UNet commit, Python,
numpy, scipy and torch versions).
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from original_code import VMUNET_COMMIT, vmunet_dir, write_frozen_npz  # noqa: E402
from random_generator_cases import FROZEN_FILE, SEEDS, original_outputs, write_slices  # noqa: E402


def main() -> int:
    try:
        root = vmunet_dir()
    except pytest.skip.Exception as err:  # the helper skips (inside pytest) where the code is absent
        sys.stderr.write(f"freeze_random_generator: {err}\n")
        return 2
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_slices(Path(tmp))
        for seed in SEEDS:
            items = original_outputs(root, Path(tmp), seed)
            arrays[f"seed{seed}/image"] = torch.stack([item["image"] for item in items]).numpy()
            arrays[f"seed{seed}/label"] = torch.stack([item["label"] for item in items]).numpy()
    provenance = {"vmunet_commit": VMUNET_COMMIT, "python": platform.python_version(), "numpy": np.__version__,
                  "scipy": scipy.__version__, "torch": torch.__version__}
    write_frozen_npz(FROZEN_FILE, arrays, provenance)
    sys.stdout.write(f"wrote {FROZEN_FILE} ({len(SEEDS)} seeds, {FROZEN_FILE.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

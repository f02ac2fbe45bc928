"""VM-UNet's Synapse training chain (``Synapse_dataset`` + ``RandomGenerator``) and vmunet's
``augmentation: paper`` chain on the same ``.npz`` slices with the same seeds, for
``test_original_random_generator.py`` and ``freeze_random_generator.py``.

The original (VM-UNet ``43c495b``, ``datasets/dataset.py`` run as it is): ``Synapse_dataset``
(split ``train``) reads each slice with ``np.load``, its transform ``RandomGenerator`` draws the
branches with Python's global ``random`` and k, axis and angle with the global ``np.random``,
seeded as ``utils.set_seed`` seeds them (``random.seed(s); np.random.seed(s)``); the slices are
read one after another, as one loader worker without shuffling reads them, so one seeding serves
all :data:`COUNT` slices. Slices are square and already :data:`SIZE`, so its ``zoom`` (the resize
to the model size, a known difference: docs/reproducing.md) is not taken and the output is the
augmentation itself, cast as the original casts it (image float32 (1, H, W), label int64 (H, W)).

Ours: ``LoadNpzSlice`` + ``slice_train_transforms(SIZE, augmentation="paper")`` (the Synapse data
module's training chain; its ``Resized`` to the same size changes nothing), the augmentation's own
two streams seeded once with ``set_random_state(seed=s)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZE = 10  # square slices (H = W): the original's zoom is skipped at its output size
COUNT = 24  # slices per seed
SEEDS = (42, 5)  # 42: the paper configs' seed; 5: with 42, every branch and every (k, axis) is drawn
NUM_LABELS = 9
FROZEN_FILE = Path(__file__).resolve().with_name("frozen") / "original_random_generator.npz"


def slice_arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``i``: an image from a closed formula and a label map without symmetry (values
    0..8, float32 as TransUNet's ``.npz`` files store them); both differ from slice to slice, so a
    slice read out of order shows."""
    n = np.arange(SIZE * SIZE, dtype=np.float64).reshape(SIZE, SIZE)
    image = (np.cos(0.7 * n + i) * 0.5 + 0.5).astype(np.float32)
    label = ((n * 7 + 3 * i) % 13).clip(max=NUM_LABELS - 1).astype(np.float32)
    return image, label


def write_slices(root: Path) -> list[str]:
    """The :data:`COUNT` slices as ``root/<name>.npz`` and the original's list file ``train.txt``."""
    names = [f"case0001_slice{i:03d}" for i in range(COUNT)]
    for i, name in enumerate(names):
        image, label = slice_arrays(i)
        np.savez(root / f"{name}.npz", image=image, label=label)
    (root / "train.txt").write_text("".join(f"{n}\n" for n in names))
    return names


def original_outputs(vmunet_root: Path, data: Path, seed: int) -> list[dict[str, Any]]:
    """The original dataset's items 0..COUNT-1 in order, after ``random.seed(seed)`` and
    ``np.random.seed(seed)``. The global streams are restored afterwards."""
    from original_code import load_definitions
    from scipy import ndimage
    from torch.utils.data import Dataset

    ns = load_definitions(vmunet_root / "datasets" / "dataset.py",
                          ["random_rot_flip", "random_rotate", "RandomGenerator", "Synapse_dataset"],
                          {"np": np, "ndimage": ndimage, "zoom": ndimage.zoom, "random": random, "torch": torch,
                           "os": os, "Dataset": Dataset})
    dataset = ns["Synapse_dataset"](base_dir=str(data), list_dir=str(data), split="train",
                                    transform=ns["RandomGenerator"](output_size=[SIZE, SIZE]))
    saved = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)  # utils.set_seed
        np.random.seed(seed)
        return [dataset[i] for i in range(len(dataset))]
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def our_outputs(data: Path, names: list[str], seed: int) -> list[dict[str, Any]]:
    """vmunet's training chain on the same slices in the same order, its augmentation seeded once."""
    from vmunet.data.synapse import LoadNpzSlice
    from vmunet.data.transforms import slice_train_transforms

    chain = [LoadNpzSlice(NUM_LABELS), *slice_train_transforms((SIZE, SIZE), augmentation="paper")]
    chain[1].set_random_state(seed=seed)
    out = []
    for name in names:
        item: Any = {"path": str(data / f"{name}.npz"), "name": name}
        for transform in chain:
            item = transform(item)
        out.append(item)
    return out

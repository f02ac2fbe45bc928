"""vmunet's Synapse ``augmentation: paper`` against VM-UNet's ``RandomGenerator`` executed, with the
same seeds: the same random streams drawn in the same order give bitwise the original's items
(``random_generator_cases.py`` says how both chains run).

Without ``third_party/`` (VM-UNet at ``43c495b``, ``make third-party``) the live comparison skips;
the items frozen from the original by ``freeze_random_generator.py``
(``frozen/original_random_generator.npz``: VM-UNet ``43c495b``, Python 3.11, numpy 2.4, scipy 1.17,
torch 2.13 CPU) are checked in every run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from original_code import VMUNET_COMMIT, vmunet_dir
from random_generator_cases import (
    COUNT,
    FROZEN_FILE,
    SEEDS,
    original_outputs,
    our_outputs,
    slice_arrays,
    write_slices,
)


@pytest.fixture(scope="module")
def frozen() -> dict[str, np.ndarray]:
    with np.load(FROZEN_FILE) as npz:
        out = {k: npz[k] for k in npz.files}
    assert json.loads(str(out["provenance"]))["vmunet_commit"] == VMUNET_COMMIT
    return out


def _check(ours: list[dict], images: np.ndarray, labels: np.ndarray) -> None:
    assert len(ours) == len(images) == len(labels) == COUNT
    for i, item in enumerate(ours):
        assert item["image"].dtype == torch.float32 and item["label"].dtype == torch.int64
        np.testing.assert_array_equal(item["image"].numpy(), images[i], err_msg=f"item {i}: image")
        np.testing.assert_array_equal(item["label"][0].numpy(), labels[i], err_msg=f"item {i}: label")


@pytest.mark.parametrize("seed", SEEDS)
def test_paper_augmentation_equals_the_frozen_original_random_generator(seed, tmp_path, frozen):
    names = write_slices(tmp_path)
    _check(our_outputs(tmp_path, names, seed), frozen[f"seed{seed}/image"], frozen[f"seed{seed}/label"])


@pytest.mark.parametrize("seed", SEEDS)
def test_paper_augmentation_equals_the_original_random_generator(seed, tmp_path, frozen):
    root = vmunet_dir("datasets/dataset.py")
    names = write_slices(tmp_path)
    ref = original_outputs(root, tmp_path, seed)
    images = torch.stack([item["image"] for item in ref]).numpy()
    labels = torch.stack([item["label"] for item in ref]).numpy()
    assert images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, frozen[f"seed{seed}/image"])  # the frozen file is this output
    np.testing.assert_array_equal(labels, frozen[f"seed{seed}/label"])
    _check(our_outputs(tmp_path, names, seed), images, labels)


def _branch(label: np.ndarray, out: np.ndarray) -> str:
    """Which branch gave ``out`` from ``label``: a reflection (``rot90`` by k then a flip: one of
    the square's four reflections), ``none``, else a rotation (angle 0 reads as ``none``)."""
    if np.array_equal(out, label):
        return "none"
    for k in range(4):
        for axis in range(2):
            if np.array_equal(out, np.flip(np.rot90(label, k), axis)):
                return f"reflection {np.flip(np.rot90(np.arange(4).reshape(2, 2), k), axis).tolist()}"
    return "rotation"


def test_the_frozen_items_take_every_branch(frozen):
    """The comparison covers each branch (so a stream drawn in another order, or a branch never
    taken, cannot pass by chance): over both seeds the items hold all four reflections, untouched
    items and rotations, and the image always moves with its label."""
    kinds: list[str] = []
    for seed in SEEDS:
        for i in range(COUNT):
            image, label = slice_arrays(i)
            out_label, out_image = frozen[f"seed{seed}/label"][i], frozen[f"seed{seed}/image"][i, 0]
            kind = _branch(label.astype(np.int64), out_label)
            if kind != "rotation":
                assert _branch(image, out_image) == kind
            kinds.append(kind)
    assert len({k for k in kinds if k.startswith("reflection")}) == 4
    assert kinds.count("none") >= 3 and kinds.count("rotation") >= 3
    # the branch probabilities 1/2, 1/4, 1/4 (48 items; only a gross mismatch fails)
    assert 14 <= sum(k.startswith("reflection") for k in kinds) <= 34

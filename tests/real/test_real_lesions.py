"""Evaluation on real lesion masks (pyradiomics cases): tiny lesions, 5-6.5 mm slices, and most
slices without any foreground -- where metric conventions decide the numbers.

Predictions are made from the real masks (exact, empty, dilated by one in-plane voxel, shifted by
one slice, a false positive in a lesion-free slice); expected values come from plain numpy and a
brute-force surface distance (k-d tree over edge-voxel coordinates in mm), not from the code
under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from vmunet.evaluation.metrics import case_metrics

pytestmark = pytest.mark.real

CASES = {"lung1": "lesions_ct", "lung2": "lesions_ct", "brain1": "lesions_mr", "brain2": "lesions_mr",
         "breast1": "lesions_mr"}


def load_case(root, case):
    """Label as (D, H, W) slices of the RAS volume (the project's slicing) and its (D, H, W) spacing."""
    from vmunet.data.preprocessing import volume_to_slices
    from vmunet.data.volumes import load_volume, to_ras, voxel_sizes

    arr, aff = load_volume(root / CASES[case] / "labelsTr" / f"{case}.nii.gz")
    arr, aff = to_ras(arr, aff)
    sx, sy, sz = voxel_sizes(aff)
    return np.ascontiguousarray(volume_to_slices(arr, 2)).astype(np.uint8), (sz, sy, sx)


def edges(mask):
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def hd95_bruteforce(a, b, spacing):
    from scipy.spatial import cKDTree

    pa = np.argwhere(edges(a)) * np.asarray(spacing)
    pb = np.argwhere(edges(b)) * np.asarray(spacing)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))


def dice_plain(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("case", list(CASES))
def test_real_lesion_metrics_match_plain_references(case, pyradiomics):
    from scipy import ndimage

    gt, spacing = load_case(pyradiomics["root"], case)
    g = gt == 1
    names = ["background", "lesion"]

    (row,) = case_metrics(gt, gt, names, spacing=spacing)
    assert (row["dice"], row["hd95"], row["hd95_mm"]) == (1.0, 0.0, 0.0)

    # one in-plane voxel of dilation: Dice and HD95 (mm, anisotropic spacing) against the references
    dil = ndimage.binary_dilation(g, structure=np.array([[[0, 0, 0], [0, 1, 0], [0, 0, 0]],
                                                         [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                                                         [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], bool))
    (row,) = case_metrics(dil.astype(np.uint8), gt, names, spacing=spacing)
    assert row["dice"] == pytest.approx(dice_plain(dil, g), abs=1e-12)
    assert row["hd95_mm"] == pytest.approx(hd95_bruteforce(dil, g, spacing), rel=1e-5)
    assert row["hd95"] == pytest.approx(hd95_bruteforce(dil, g, (1, 1, 1)), rel=1e-5)

    # shifted by one slice: HD95 in mm is governed by the 5-6.5 mm slice spacing, not the in-plane one
    shifted = np.zeros_like(g)
    shifted[1:] = g[:-1]
    (row,) = case_metrics(shifted.astype(np.uint8), gt, names, spacing=spacing)
    assert row["dice"] == pytest.approx(dice_plain(shifted, g), abs=1e-12)
    assert row["hd95_mm"] == pytest.approx(hd95_bruteforce(shifted, g, spacing), rel=1e-5)


def test_real_lesions_are_tiny_and_most_slices_are_empty(pyradiomics):
    """The facts that make these cases hard, measured on the files (numbers from the research notes)."""
    found = {}
    for case in CASES:
        gt, spacing = load_case(pyradiomics["root"], case)
        fg_slices = int(gt.reshape(gt.shape[0], -1).any(1).sum())
        found[case] = (fg_slices, gt.shape[0])
    assert found == {"lung1": (3, 48), "lung2": (11, 61), "brain1": (7, 25), "brain2": (3, 23),
                     "breast1": (3, 21)}


def test_real_lesion_slices_without_foreground_under_the_current_convention(pyradiomics):
    """Slice-wise scoring of a real case: slices without lesion follow the edge-case table of
    vmunet.evaluation.metrics (both empty -> Dice 1; a prediction where the truth is empty -> 1, as
    the papers' code), so an empty prediction scores the mean over slices that a plain count gives."""
    gt, spacing = load_case(pyradiomics["root"], "brain2")
    names = ["background", "lesion"]
    empty = np.zeros_like(gt)
    per_slice = [case_metrics(empty[k], gt[k], names, spacing=spacing[1:])[0]["dice"] for k in range(gt.shape[0])]
    n_fg = int(gt.reshape(gt.shape[0], -1).any(1).sum())
    assert np.mean(per_slice) == pytest.approx((gt.shape[0] - n_fg) / gt.shape[0])  # 20/23 for a blank answer
    (vol,) = case_metrics(empty, gt, names, spacing=spacing)
    assert vol["dice"] == 0.0  # volume-wise, the blank answer scores what it is

    # a false positive in a lesion-free slice: 1 under this convention, whatever its size
    fp = np.zeros_like(gt)
    k = int(np.flatnonzero(~gt.reshape(gt.shape[0], -1).any(1))[0])
    fp[k, 10:20, 10:20] = 1
    assert case_metrics(fp[k], gt[k], names)[0]["dice"] == 1.0

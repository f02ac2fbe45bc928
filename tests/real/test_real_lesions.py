"""Evaluation on real lesion masks (pyradiomics cases): tiny lesions, 5-6.5 mm slices, and most
slices without any foreground -- where metric conventions decide the numbers.

Predictions are made from the real masks (exact, empty, dilated by one in-plane voxel, shifted by
one slice, false positives in lesion-free slices); expected values come from plain numpy and a
brute-force surface distance (k-d tree over edge-voxel coordinates in mm) for both HD95
definitions (medpy's pooled, MONAI's), not from the code under test; slices without foreground
are scored under both empty-mask conventions (``paper``, ``strict``).
"""

from __future__ import annotations

import math

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


def hd95_bruteforce(a, b, spacing, definition):
    """Both HD95 definitions from brute-force nearest surface distances (k-d tree, mm)."""
    from scipy.spatial import cKDTree

    pa = np.argwhere(edges(a)) * np.asarray(spacing)
    pb = np.argwhere(edges(b)) * np.asarray(spacing)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    if definition == "pooled":  # medpy hd95
        return np.percentile(np.concatenate([d_ab, d_ba]), 95)
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))  # MONAI


def dice_plain(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("definition", ["pooled", "monai"])
@pytest.mark.parametrize("case", list(CASES))
def test_real_lesion_metrics_match_plain_references(case, definition, pyradiomics):
    from scipy import ndimage

    gt, spacing = load_case(pyradiomics["root"], case)
    g = gt == 1
    names = ["background", "lesion"]

    (row,) = case_metrics(gt, gt, names, spacing=spacing, hd95=definition)
    assert (row["status"], row["dice"], row["hd95"], row["hd95_mm"]) == ("scored", 1.0, 0.0, 0.0)

    # one in-plane voxel of dilation: Dice and HD95 (mm, anisotropic spacing) against the references
    dil = ndimage.binary_dilation(g, structure=np.array([[[0, 0, 0], [0, 1, 0], [0, 0, 0]],
                                                         [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                                                         [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], bool))
    (row,) = case_metrics(dil.astype(np.uint8), gt, names, spacing=spacing, hd95=definition)
    assert row["dice"] == pytest.approx(dice_plain(dil, g), abs=1e-12)
    assert row["hd95_mm"] == pytest.approx(hd95_bruteforce(dil, g, spacing, definition), rel=1e-5)
    assert row["hd95"] == pytest.approx(hd95_bruteforce(dil, g, (1, 1, 1), definition), rel=1e-5)

    # shifted by one slice: HD95 in mm is governed by the 5-6.5 mm slice spacing, not the in-plane one
    shifted = np.zeros_like(g)
    shifted[1:] = g[:-1]
    (row,) = case_metrics(shifted.astype(np.uint8), gt, names, spacing=spacing, hd95=definition)
    assert row["dice"] == pytest.approx(dice_plain(shifted, g), abs=1e-12)
    assert row["hd95_mm"] == pytest.approx(hd95_bruteforce(shifted, g, spacing, definition), rel=1e-5)


def test_real_lesions_are_tiny_and_most_slices_are_empty(pyradiomics):
    """The facts that make these cases hard, measured on the files (numbers from the research notes)."""
    found = {}
    for case in CASES:
        gt, spacing = load_case(pyradiomics["root"], case)
        fg_slices = int(gt.reshape(gt.shape[0], -1).any(1).sum())
        found[case] = (fg_slices, gt.shape[0])
    assert found == {"lung1": (3, 48), "lung2": (11, 61), "brain1": (7, 25), "brain2": (3, 23),
                     "breast1": (3, 21)}


def slice_rows(pred, gt, spacing):
    """Slice-wise raw rows of a case: each 2D slice scored as its own "case"."""
    names = ["background", "lesion"]
    return [{"case": str(k), **row} for k in range(gt.shape[0])
            for row in case_metrics(pred[k], gt[k], names, spacing=spacing[1:])]


def test_real_lesion_slices_without_foreground_under_both_conventions(pyradiomics):
    """brain2: a 453-voxel lesion on 3 of 23 slices. Scored slice by slice, the 20 lesion-free
    slices decide the numbers: ``paper`` (calculate_metric_percase) scores a both-empty slice
    (0, 0) and a false positive (1, 0); ``strict`` leaves both out of the means and counts them."""
    from vmunet.evaluation.metrics import summarize_cases

    gt, spacing = load_case(pyradiomics["root"], "brain2")
    names = ["background", "lesion"]
    n, n_fg = gt.shape[0], int(gt.reshape(gt.shape[0], -1).any(1).sum())
    assert (n, n_fg) == (23, 3)

    # a perfect answer: strict 1; paper drags it down to n_fg / n by the lesion-free slices
    perfect = slice_rows(gt, gt, spacing)
    assert summarize_cases(perfect, names, "strict")["mean"]["dice"] == 1.0
    assert summarize_cases(perfect, names, "paper")["mean"]["dice"] == pytest.approx(n_fg / n)

    # a blank answer: 0 either way; paper gives it HD95 0 (the best value), strict counts 3 misses
    blank = slice_rows(np.zeros_like(gt), gt, spacing)
    paper, strict = summarize_cases(blank, names, "paper"), summarize_cases(blank, names, "strict")
    assert paper["mean"]["dice"] == 0.0 and paper["mean"]["hd95"] == 0.0
    assert strict["mean"]["dice"] == 0.0 and math.isnan(strict["mean"]["hd95"])
    assert strict["mean"]["misses"] == n_fg

    # the truth plus a 10x10 false positive in every lesion-free slice
    fp = gt.copy()
    empty = ~gt.reshape(n, -1).any(1)
    fp[empty, 10:20, 10:20] = 1
    rows = slice_rows(fp, gt, spacing)
    paper, strict = summarize_cases(rows, names, "paper"), summarize_cases(rows, names, "strict")
    assert paper["mean"]["dice"] == 1.0  # every false positive scores 1 under the paper's rule
    assert strict["mean"]["dice"] == 1.0 and strict["mean"]["false_positives"] == n - n_fg

    # volume-wise, the false positives cost what they are: plain Dice of the whole volume
    (vol,) = case_metrics(fp, gt, names, spacing=spacing)
    assert vol["dice"] == pytest.approx(dice_plain(fp == 1, gt == 1), abs=1e-12)
    assert vol["dice"] < 0.5  # 20 x 100 false voxels against a 453-voxel lesion

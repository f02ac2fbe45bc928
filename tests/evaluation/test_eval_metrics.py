"""Metrics against independent implementations (scipy distance transforms, numpy confusion counts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from vmunet.evaluation.metrics import (
    BinaryConfusion,
    case_metrics,
    dedup_rows,
    dice_coefficient,
    hausdorff95,
    summarize_cases,
)


def ref_hd95(pred: np.ndarray, gt: np.ndarray, spacing=None) -> float:
    """medpy-style HD95: surface voxels (mask minus its 1-connectivity erosion), EDT to the other surface."""
    struct = ndimage.generate_binary_structure(pred.ndim, 1)

    def surface(m):
        return m ^ ndimage.binary_erosion(m, structure=struct, border_value=0)

    sp, sg = surface(pred), surface(gt)
    dt_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dt_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return max(np.percentile(dt_to_g[sp], 95), np.percentile(dt_to_p[sg], 95))


def ref_dice(pred, gt):
    return 2 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())


def test_hd95_known_answer_shifted_square():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True
    pred = np.roll(gt, 3, axis=1)  # a pure shift by 3: every surface point moves by <= 3
    assert hausdorff95(pred, gt) == pytest.approx(3.0)
    assert hausdorff95(pred, gt, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    assert hausdorff95(gt, gt) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_scipy_reference_3d_anisotropic(seed):
    rng = np.random.default_rng(seed)
    gt = np.zeros((12, 30, 28), bool)
    gt[3:9, 5:20, 6:22] = True
    pred = ndimage.binary_dilation(gt, iterations=2) & (rng.random(gt.shape) > 0.15)
    pred[0:2, 0:3, 0:3] = True  # a far outlier blob, touching the volume border
    spacing = (2.5, 0.7, 0.9)
    assert hausdorff95(pred, gt) == pytest.approx(ref_hd95(pred, gt), rel=1e-5)
    assert hausdorff95(pred, gt, spacing) == pytest.approx(ref_hd95(pred, gt, spacing), rel=1e-5)
    # anisotropy must matter here, otherwise the mm test above proves nothing
    assert not math.isclose(hausdorff95(pred, gt, spacing), hausdorff95(pred, gt))


def test_dice_and_edge_cases():
    empty = np.zeros((4, 6, 6), bool)
    blob = empty.copy()
    blob[1:3, 2:5, 2:5] = True
    half = blob.copy()
    half[1] = False
    assert dice_coefficient(half, blob) == pytest.approx(ref_dice(half, blob)) == pytest.approx(2 * 9 / 27)
    assert dice_coefficient(empty, empty) == 1.0 and hausdorff95(empty, empty) == 0.0
    assert dice_coefficient(blob, empty) == 1.0 and hausdorff95(blob, empty) == 0.0
    assert dice_coefficient(empty, blob) == 0.0 and hausdorff95(empty, blob) == 0.0


def test_case_metrics_rows_per_foreground_class():
    names = ["background", "a", "b", "c"]
    gt = np.zeros((3, 16, 16), np.int64)
    gt[:, 2:8, 2:8] = 1
    gt[:, 10:14, 10:14] = 2
    pred = gt.copy()
    pred[:, 2:8, 2:8] = 0
    pred[:, 3:9, 2:8] = 1  # class 1 shifted by one row
    pred[0, 0, 0] = 3  # class 3 predicted but absent from gt -> paper's (1, 0)
    rows = case_metrics(pred, gt, names, spacing=(3.0, 1.0, 1.0))
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    a, b, c = rows
    assert a["dice"] == pytest.approx(ref_dice(pred == 1, gt == 1))
    assert a["hd95"] == pytest.approx(ref_hd95(pred == 1, gt == 1))
    assert a["hd95_mm"] == pytest.approx(ref_hd95(pred == 1, gt == 1, (3.0, 1.0, 1.0)))
    assert (b["dice"], b["hd95"], b["hd95_mm"]) == (1.0, 0.0, 0.0)
    assert (c["dice"], c["hd95"], c["hd95_mm"]) == (1.0, 0.0, 0.0)
    assert case_metrics(pred, gt, names)[0]["hd95_mm"] is None
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(pred[:2], gt, names)
    with pytest.raises(ValueError, match="one positive voxel size per array axis"):
        case_metrics(pred, gt, names, spacing=(1.0, 1.0))


def test_summarize_cases_averages_over_cases_then_classes_and_dedups():
    names = ["background", "x", "y"]
    rows = [
        {"case": "c1", "class": "x", "dice": 0.8, "hd95": 2.0, "hd95_mm": 4.0},
        {"case": "c1", "class": "y", "dice": 0.6, "hd95": 4.0, "hd95_mm": 8.0},
        {"case": "c2", "class": "x", "dice": 0.4, "hd95": 6.0, "hd95_mm": 12.0},
        {"case": "c2", "class": "y", "dice": 1.0, "hd95": 0.0, "hd95_mm": 0.0},
        # the DDP sampler padded by repeating c1 on another rank
        {"case": "c1", "class": "x", "dice": 0.8, "hd95": 2.0, "hd95_mm": 4.0},
    ]
    s = summarize_cases(rows, names)
    assert s["num_cases"] == 2
    assert s["per_class"]["x"]["dice"] == pytest.approx(0.6)
    assert s["per_class"]["y"]["hd95"] == pytest.approx(2.0)
    assert s["mean"]["dice"] == pytest.approx((0.6 + 0.8) / 2)
    assert s["mean"]["hd95"] == pytest.approx((4.0 + 2.0) / 2)
    assert s["mean"]["hd95_mm"] == pytest.approx((8.0 + 4.0) / 2)
    rows[0]["hd95_mm"] = None
    assert summarize_cases(rows[:4], names)["mean"]["hd95_mm"] is None
    assert len(dedup_rows(rows, ("case", "class"))) == 4


def test_binary_confusion_matches_numpy_counts():
    rng = np.random.default_rng(0)
    prob = rng.random((5, 1, 16, 16)).astype(np.float32)
    gt = (rng.random((5, 1, 16, 16)) > 0.6).astype(np.float32)
    prob[4] = 0.1  # an image with empty prediction ...
    gt[4] = 0  # ... and empty ground truth
    prob[0, 0, 0, 0] = 0.5  # exactly at threshold counts as foreground (prob >= 0.5)
    conf = BinaryConfusion()
    conf.update(prob[:3], gt[:3], ["i0", "i1", "i2"])
    conf.update(prob[3:], gt[3:], ["i3", "i4"])

    p, g = (prob >= 0.5).ravel(), gt.ravel() > 0
    tp, fp = np.sum(p & g), np.sum(p & ~g)
    fn, tn = np.sum(~p & g), np.sum(~p & ~g)
    assert (conf.tp, conf.fp, conf.fn, conf.tn) == (tp, fp, fn, tn)
    pooled = conf.pooled()
    assert pooled["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert pooled["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert pooled["accuracy"] == pytest.approx((tp + tn) / p.size)
    assert pooled["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert pooled["specificity"] == pytest.approx(tn / (tn + fp))

    dices = []
    for i in range(4):
        pi, gi = prob[i] >= 0.5, gt[i] > 0
        dices.append(ref_dice(pi, gi))
    dices.append(1.0)  # empty/empty image
    assert conf.per_image()["dice"] == pytest.approx(np.mean(dices))
    assert 0 < conf.per_image()["iou"] < conf.per_image()["dice"]

    # rows gathered from two ranks with a repeated image give the same pooled numbers
    merged = BinaryConfusion.from_images(conf.images[:4] + conf.images[3:] + conf.images[:1])
    assert merged.pooled() == pooled and merged.per_image() == conf.per_image()
    with pytest.raises(ValueError, match="image ids"):
        conf.update(prob[:2], gt[:2], ["only-one"])

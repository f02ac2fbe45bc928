"""Metrics against independent references.

* HD95: medpy (the papers' implementation), MONAI, and a brute-force surface-distance computation
  written here in plain numpy (no distance transform, no scipy erosion).
* Empty-mask conventions: the original ``calculate_metric_percase`` (VM-UNet ``utils.py``) copied
  verbatim below, with medpy's ``dc``/``hd95``; hand-counted values for ``strict``.
* Confusion counts against numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from medpy import metric as medpy_metric

from vmunet.evaluation.metrics import (
    BinaryConfusion,
    apply_convention,
    case_metrics,
    convention_rows,
    dedup_rows,
    dice_coefficient,
    hausdorff95,
    pair_metrics,
    summarize_cases,
    surface_distances,
)


# ------------------------------------------------------------------------------ plain references
def bf_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 1-connectivity neighbour outside it (outside the array counts)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded.copy()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            interior &= np.roll(padded, shift, axis=axis)
    return mask & ~interior[tuple(slice(1, -1) for _ in range(mask.ndim))]


def bf_directed(a: np.ndarray, b: np.ndarray, spacing=None) -> np.ndarray:
    """For every surface voxel of ``a`` the distance to the nearest surface voxel of ``b`` (all pairs)."""
    sp = np.ones(a.ndim) if spacing is None else np.asarray(spacing, float)
    pa = np.argwhere(bf_surface(a)) * sp
    pb = np.argwhere(bf_surface(b)) * sp
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)


def bf_pooled(a, b, spacing=None, q=95.0) -> float:
    return float(np.percentile(np.concatenate([bf_directed(a, b, spacing), bf_directed(b, a, spacing)]), q))


def calculate_metric_percase(pred, gt):
    """VM-UNet utils.py, verbatim (medpy's dc / hd95)."""
    pred[pred > 0] = 1
    gt[gt > 0] = 1
    if pred.sum() > 0 and gt.sum() > 0:
        dice = medpy_metric.binary.dc(pred, gt)
        hd95 = medpy_metric.binary.hd95(pred, gt)
        return dice, hd95
    elif pred.sum() > 0 and gt.sum() == 0:
        return 1, 0
    else:
        return 0, 0


def disc_and_wedge() -> tuple[np.ndarray, np.ndarray]:
    """A disc and a slanted wedge: their surface distances spread over many values."""
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 22) ** 2 + (xx - 22) ** 2 <= 11 ** 2
    wedge = (xx >= 5) & (xx <= 42) & (yy >= 20 - (xx - 5) * 0.45) & (yy <= 24 + (xx - 5) * 0.3)
    return disc, wedge


def ellipsoids_3d() -> tuple[np.ndarray, np.ndarray]:
    zz, yy, xx = np.mgrid[:14, :30, :32]
    a = ((zz - 6) / 5.0) ** 2 + ((yy - 14) / 10.0) ** 2 + ((xx - 15) / 9.0) ** 2 <= 1
    b = ((zz - 7) / 4.0) ** 2 + ((yy - 16) / 7.0) ** 2 + ((xx - 13) / 12.0) ** 2 <= 1
    b[0:2, 0:3, 29:32] = True  # an outlier blob touching the array border
    return a, b


# ------------------------------------------------------------------------------ HD95 definitions
@pytest.mark.parametrize(("spacing", "frozen"), [(None, 13.038404810405298), ((1.0, 0.37), 7.207969845117289)])
def test_pooled_hd95_is_medpys_and_the_95th_percentile_exactly(spacing, frozen):
    disc, wedge = disc_and_wedge()
    # the brute-force reference at neighbouring percentiles: these differ, so a wrong percentile fails
    p94, p95, p96 = (bf_pooled(disc, wedge, spacing, q=q) for q in (94, 95, 96))
    assert p94 < p95 - 0.1 and p95 < p96 - 0.1
    ours = hausdorff95(disc, wedge, spacing)
    assert ours == pytest.approx(p95, abs=1e-9)
    assert ours == pytest.approx(medpy_metric.binary.hd95(disc, wedge, voxelspacing=spacing), abs=1e-9)
    assert ours == pytest.approx(frozen, abs=1e-9)  # medpy 0.5.2 on these shapes
    # MONAI's definition is the larger directed percentile, and differs from pooled here
    d1, d2 = bf_directed(disc, wedge, spacing), bf_directed(wedge, disc, spacing)
    monai_def = max(np.percentile(d1, 95), np.percentile(d2, 95))
    assert hausdorff95(disc, wedge, spacing, "monai") == pytest.approx(monai_def, abs=1e-9)
    assert hausdorff95(disc, wedge, spacing, "monai") > ours + 0.1


@pytest.mark.parametrize("spacing", [None, (2.5, 0.7, 0.9)])
def test_pooled_hd95_matches_medpy_and_bruteforce_3d(spacing):
    a, b = ellipsoids_3d()
    ref = medpy_metric.binary.hd95(a, b, voxelspacing=spacing)
    assert hausdorff95(a, b, spacing) == pytest.approx(ref, rel=1e-12)
    assert hausdorff95(a, b, spacing) == pytest.approx(bf_pooled(a, b, spacing), rel=1e-12)
    assert hausdorff95(b, a, spacing) == pytest.approx(ref, rel=1e-12)  # symmetric
    if spacing is not None:  # anisotropy must matter, otherwise this case proves nothing
        assert not math.isclose(hausdorff95(a, b, spacing), hausdorff95(a, b))


@pytest.mark.parametrize("spacing", [None, (2.5, 0.7, 0.9)])
def test_monai_hd95_matches_monai(spacing):
    import torch
    from monai.metrics import compute_hausdorff_distance

    a, b = ellipsoids_3d()
    ref = compute_hausdorff_distance(torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None]),
                                     include_background=True, percentile=95, spacing=spacing)
    assert hausdorff95(a, b, spacing, "monai") == pytest.approx(float(ref.reshape(-1)[0]), rel=1e-5)
    assert hausdorff95(a, b, spacing, "monai") >= hausdorff95(a, b, spacing)


def test_hd95_known_answer_shifted_square_and_errors():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True
    pred = np.roll(gt, 3, axis=1)  # a pure shift by 3: the largest surface distances are 3
    assert hausdorff95(pred, gt, definition="monai") == pytest.approx(3.0)
    assert hausdorff95(pred, gt, spacing=(1.0, 2.0), definition="monai") == pytest.approx(6.0)
    assert hausdorff95(pred, gt) == pytest.approx(medpy_metric.binary.hd95(pred, gt))
    assert hausdorff95(gt, gt) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        hausdorff95(gt, np.zeros_like(gt))
    with pytest.raises(ValueError, match="HD95 definition must be one of"):
        hausdorff95(gt, gt, definition="medpy")
    with pytest.raises(ValueError, match="one positive voxel size per array axis"):
        hausdorff95(pred, gt, spacing=(1.0,))


# ------------------------------------------------------------------------------ conventions
def four_status_case():
    """Label maps where class 1 is scored, 2 missed, 3 a false positive, 4 absent from both."""
    names = ["background", "scored", "missed", "fp", "absent"]
    gt = np.zeros((6, 24, 24), np.int64)
    gt[1:5, 3:12, 3:12] = 1
    gt[2:4, 15:20, 15:20] = 2
    pred = np.zeros_like(gt)
    pred[1:5, 4:13, 2:12] = 1
    pred[0, 20:23, 1:4] = 3
    return names, pred, gt


def test_paper_convention_is_calculate_metric_percase():
    names, pred, gt = four_status_case()
    rows = case_metrics(pred, gt, names, spacing=(2.0, 1.0, 1.0))
    assert [r["status"] for r in rows] == ["scored", "miss", "false_positive", "absent"]
    for idx, row in enumerate(rows, start=1):
        dice, hd = calculate_metric_percase(pred == idx, gt == idx)
        got = apply_convention(row, "paper")
        assert got["dice"] == pytest.approx(dice, abs=1e-12) and got["hd95"] == pytest.approx(hd, abs=1e-9)
    # both empty is (0, 0) in the original, not (1, 0)
    assert apply_convention(rows[3], "paper")["dice"] == 0.0
    s = summarize_cases([{"case": "c", **r} for r in rows], names, "paper")
    ref = [calculate_metric_percase(pred == i, gt == i) for i in range(1, 5)]
    assert s["mean"]["dice"] == pytest.approx(np.mean([d for d, _ in ref]))
    assert s["mean"]["hd95"] == pytest.approx(np.mean([h for _, h in ref]))
    assert s["convention"] == "paper" and s["hd95_definition"] == "pooled"


def test_strict_convention_excludes_absent_classes_and_counts_misses():
    names, pred, gt = four_status_case()
    rows = [{"case": "c", **r} for r in case_metrics(pred, gt, names, spacing=(2.0, 1.0, 1.0))]
    scored_dice = 2 * np.sum((pred == 1) & (gt == 1)) / (np.sum(pred == 1) + np.sum(gt == 1))
    scored_hd = medpy_metric.binary.hd95(pred == 1, gt == 1)
    s = summarize_cases(rows, names, "strict")
    pc = s["per_class"]
    assert pc["scored"]["dice"] == pytest.approx(scored_dice) and pc["scored"]["hd95"] == pytest.approx(scored_hd)
    assert pc["missed"]["dice"] == 0.0 and math.isnan(pc["missed"]["hd95"]) and pc["missed"]["misses"] == 1
    assert math.isnan(pc["fp"]["dice"]) and pc["fp"]["false_positives"] == 1
    assert math.isnan(pc["absent"]["dice"]) and math.isnan(pc["absent"]["hd95"])
    # class means over the classes that have a value: Dice over {scored, missed}, HD95 over {scored}
    assert s["mean"]["dice"] == pytest.approx(scored_dice / 2)
    assert s["mean"]["hd95"] == pytest.approx(scored_hd)
    assert (s["mean"]["misses"], s["mean"]["false_positives"]) == (1, 1)
    # a model that predicts nothing: paper HD95 0 (looks perfect), strict HD95 undefined, 2 misses
    empty = [{"case": "c", **r} for r in case_metrics(np.zeros_like(gt), gt, names)]
    assert summarize_cases(empty, names, "paper")["mean"]["hd95"] == 0.0
    nothing = summarize_cases(empty, names, "strict")
    assert math.isnan(nothing["mean"]["hd95"]) and nothing["mean"]["dice"] == 0.0 and nothing["mean"]["misses"] == 2


def test_case_metrics_rows_and_validation():
    names, pred, gt = four_status_case()
    rows = case_metrics(pred, gt, names, spacing=(2.0, 1.0, 1.0))
    a = rows[0]
    assert a["hd95_mm"] == pytest.approx(medpy_metric.binary.hd95(pred == 1, gt == 1, voxelspacing=(2.0, 1.0, 1.0)))
    assert case_metrics(pred, gt, names)[0]["hd95_mm"] is None
    assert apply_convention(case_metrics(pred, gt, names)[1], "paper")["hd95_mm"] is None  # no spacing, no mm
    cheap = case_metrics(pred, gt, names, hd95=None)[0]
    assert cheap["hd95"] is None and cheap["dice"] == pytest.approx(a["dice"])
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(pred[:2], gt, names)
    with pytest.raises(ValueError, match="one positive voxel size per array axis"):
        case_metrics(pred, gt, names, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="convention must be one of"):
        summarize_cases([{"case": "c", **r} for r in rows], names, "lenient")
    assert math.isnan(dice_coefficient(np.zeros(3, bool), np.zeros(3, bool)))
    assert pair_metrics(gt == 1, gt == 1)["dice"] == 1.0


def test_convention_rows_name_the_convention():
    names, pred, gt = four_status_case()
    rows = [{"case": "c", **r} for r in case_metrics(pred, gt, names)]
    paper = convention_rows(rows, "paper")
    assert [r["convention"] for r in paper] == ["paper"] * 4 and paper[2]["dice"] == 1.0
    assert convention_rows(rows, "strict")[2]["dice"] is None


def test_summarize_cases_averages_over_cases_then_classes_and_dedups():
    names = ["background", "x", "y"]

    def row(case, cls, dice, hd, mm):
        return {"case": case, "class": cls, "status": "scored", "dice": dice, "hd95": hd, "hd95_mm": mm,
                "hd95_definition": "pooled", "has_spacing": mm is not None}

    rows = [row("c1", "x", 0.8, 2.0, 4.0), row("c1", "y", 0.6, 4.0, 8.0), row("c2", "x", 0.4, 6.0, 12.0),
            row("c2", "y", 1.0, 0.0, 0.0),
            row("c1", "x", 0.8, 2.0, 4.0)]  # the DDP sampler padded by repeating c1 on another rank
    for conv in ("strict", "paper"):  # all scored: the conventions agree
        s = summarize_cases(rows, names, conv)
        assert s["num_cases"] == 2
        assert s["per_class"]["x"]["dice"] == pytest.approx(0.6)
        assert s["per_class"]["y"]["hd95"] == pytest.approx(2.0)
        assert s["mean"]["dice"] == pytest.approx((0.6 + 0.8) / 2)
        assert s["mean"]["hd95"] == pytest.approx((4.0 + 2.0) / 2)
        assert s["mean"]["hd95_mm"] == pytest.approx((8.0 + 4.0) / 2)
    rows[0]["hd95_mm"] = None
    assert summarize_cases(rows[:4], names)["mean"]["hd95_mm"] is None
    assert len(dedup_rows(rows, ("case", "class"))) == 4
    with pytest.raises(ValueError, match="mix HD95 definitions"):
        summarize_cases([*rows[:3], {**rows[3], "hd95_definition": "monai"}], names)


# ------------------------------------------------------------------------------ pooled binary (ISIC)
def test_binary_confusion_matches_numpy_counts():
    rng = np.random.default_rng(0)
    prob = rng.random((6, 1, 16, 16)).astype(np.float32)
    gt = (rng.random((6, 1, 16, 16)) > 0.6).astype(np.float32)
    prob[4] = 0.1  # an image with empty prediction ...
    gt[4] = 0  # ... and empty ground truth
    gt[5] = 0  # an image with a prediction but empty ground truth
    prob[0, 0, 0, 0] = 0.5  # exactly at threshold counts as foreground (prob >= 0.5)
    conf = BinaryConfusion()
    conf.update(prob[:3], gt[:3], ["i0", "i1", "i2"])
    conf.update(prob[3:], gt[3:], ["i3", "i4", "i5"])

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

    dices = [medpy_metric.binary.dc(prob[i] >= 0.5, gt[i] > 0) for i in range(4)]
    strict = conf.per_image("strict")
    assert strict["dice"] == pytest.approx(np.mean(dices))  # images 4 and 5 (empty truth) left out
    assert (strict["false_positives"], strict["misses"], strict["images"]) == (1, 0, 6)
    paper = conf.per_image("paper")
    assert paper["dice"] == pytest.approx(np.mean([*dices, 0.0, 1.0]))  # both empty 0, false positive 1
    assert 0 < strict["iou"] < strict["dice"]

    # rows gathered from two ranks with a repeated image give the same pooled numbers
    merged = BinaryConfusion.from_images(conf.images[:4] + conf.images[3:] + conf.images[:1])
    assert merged.pooled() == pooled and merged.per_image() == strict
    with pytest.raises(ValueError, match="image ids"):
        conf.update(prob[:2], gt[:2], ["only-one"])


# ------------------------------------------------------------------------------ gaps found by scripts/mutation_sweep.py
def nested_touching_border() -> tuple[np.ndarray, np.ndarray]:
    """A small blob deep inside a large one that touches index 0 of both axes: the small blob's
    surface is far from the large one's real surface, which lies outside the small blob's box."""
    big = np.zeros((30, 34), bool)
    big[0:26, 0:30] = True
    small = np.zeros_like(big)
    small[11:14, 15:19] = True
    return small, big


@pytest.mark.parametrize("spacing", [None, (0.8, 1.7)])
def test_surface_distances_equal_bruteforce_for_nested_masks_at_the_array_border(spacing):
    # every directed distance, in the order of np.argwhere: a crop that cuts either mask, or moves
    # the array border, turns cut voxels into surface and changes these
    small, big = nested_touching_border()
    for a, b in ((small, big), (big, small)):
        np.testing.assert_allclose(surface_distances(a, b, spacing), bf_directed(a, b, spacing), rtol=1e-12)
    assert surface_distances(small, big).min() == 11.0  # rows 11..13 to the surface rows 0 and 25: 11, 12


def test_case_rows_give_hd95_in_voxels_and_in_mm_each_with_its_own_spacing():
    a, b = ellipsoids_3d()  # differ along every axis, so the anisotropic spacing changes HD95
    spacing = (2.5, 0.7, 0.9)
    row = case_metrics(a.astype(np.int64), b.astype(np.int64), ["background", "organ"], spacing=spacing)[0]
    assert row["hd95"] == pytest.approx(medpy_metric.binary.hd95(a, b), rel=1e-12)
    assert row["hd95_mm"] == pytest.approx(medpy_metric.binary.hd95(a, b, voxelspacing=spacing), rel=1e-12)
    assert abs(row["hd95"] - row["hd95_mm"]) > 0.1


def test_zero_or_negative_spacing_is_refused():
    gt = np.zeros((8, 8), bool)
    gt[2:5, 2:5] = True
    for bad in ((0.0, 1.0), (1.0, -0.5)):
        with pytest.raises(ValueError, match="one positive voxel size per array axis"):
            hausdorff95(gt, gt, spacing=bad)
        with pytest.raises(ValueError, match="one positive voxel size per array axis"):
            pair_metrics(gt, gt, spacing=bad)


def original_isic_metrics(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """VM-UNet ``engine.py`` ``test_one_epoch``: its thresholds and formulas written out, with the
    confusion counted by hand instead of ``sklearn.metrics.confusion_matrix``."""
    y_pre = np.where(prob.reshape(-1) >= threshold, 1, 0)
    y_true = np.where(gt.reshape(-1) >= 0.5, 1, 0)
    TN = int(np.sum((y_true == 0) & (y_pre == 0)))
    FP = int(np.sum((y_true == 0) & (y_pre == 1)))
    FN = int(np.sum((y_true == 1) & (y_pre == 0)))
    TP = int(np.sum((y_true == 1) & (y_pre == 1)))
    total = TN + FP + FN + TP
    return {
        "accuracy": float(TN + TP) / float(total) if float(total) != 0 else 0,
        "sensitivity": float(TP) / float(TP + FN) if float(TP + FN) != 0 else 0,
        "specificity": float(TN) / float(TN + FP) if float(TN + FP) != 0 else 0,
        "dice": float(2 * TP) / float(2 * TP + FP + FN) if float(2 * TP + FP + FN) != 0 else 0,
        "iou": float(TP) / float(TP + FP + FN) if float(TP + FP + FN) != 0 else 0,
    }


def test_soft_isic_mask_at_exactly_half_is_foreground():
    # the paper ISIC pipeline resizes masks bilinearly: soft values, 0.5 among them
    gt = np.array([0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 0.5, 0.0], np.float32).reshape(2, 1, 2, 2)
    prob = np.array([0.9, 0.1, 0.2, 0.6, 0.4, 0.5, 0.5, 0.3], np.float32).reshape(2, 1, 2, 2)
    conf = BinaryConfusion()
    conf.update(prob, gt, ["a", "b"])
    assert (conf.tp, conf.fp, conf.fn, conf.tn) == (3, 1, 2, 2)  # counted by hand
    assert conf.pooled() == pytest.approx(original_isic_metrics(prob, gt))


def test_pooled_metrics_are_zero_where_the_original_divides_by_zero():
    conf = BinaryConfusion()  # a test set without lesions, nothing predicted: TP = FP = FN = 0
    conf.update(np.full((2, 1, 3, 3), 0.2, np.float32), np.zeros((2, 1, 3, 3), np.float32), ["a", "b"])
    expected = original_isic_metrics(np.full(18, 0.2), np.zeros(18))
    assert expected == {"accuracy": 1.0, "sensitivity": 0, "specificity": 1.0, "dice": 0, "iou": 0}
    assert conf.pooled() == expected
    assert BinaryConfusion().pooled() == {k: 0.0 for k in expected}  # no pixels at all


def test_per_image_dice_and_iou_are_the_plain_per_image_ratios():
    rng = np.random.default_rng(5)
    prob = rng.random((6, 1, 10, 10)).astype(np.float32)
    gt = (rng.random((6, 1, 10, 10)) > 0.55).astype(np.float32)
    gt[3] = gt[5] = 0  # empty truth, something predicted (two of them: the paper rule is not symmetric)
    gt[4], prob[4] = 0, 0.1  # empty truth, nothing predicted
    conf = BinaryConfusion()
    conf.update(prob, gt, [f"i{i}" for i in range(6)])
    strict, paper = {"dice": [], "iou": []}, {"dice": [], "iou": []}
    for i in range(6):
        p, g = (prob[i] >= 0.5).ravel(), (gt[i] >= 0.5).ravel()
        inter, union, total = int(np.sum(p & g)), int(np.sum(p | g)), int(p.sum() + g.sum())
        if g.any():
            for out in (strict, paper):
                out["dice"].append(2 * inter / total)
                out["iou"].append(inter / union)
        else:  # calculate_metric_percase: a false positive scores 1, both empty 0
            paper["dice"].append(1.0 if p.any() else 0.0)
            paper["iou"].append(1.0 if p.any() else 0.0)
    for convention, expected in (("strict", strict), ("paper", paper)):
        got = conf.per_image(convention)
        for key in ("dice", "iou"):
            assert got[key] == pytest.approx(np.mean(expected[key]), abs=1e-12), (convention, key)


# ------------------------------------------------------------------------------ speed-up: values unchanged
def surface_distances_e1518e9(a, b, spacing=None):
    """``surface_distances`` before the validation speed-up (commit e1518e9), verbatim but for names:
    two scipy erosions and scipy's whole distance map per call."""
    from scipy import ndimage

    from vmunet.evaluation.metrics import _bounding_box

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    sampling = None if spacing is None else [float(s) for s in spacing]
    box = _bounding_box(a | b, margin=1)
    a, b = a[box], b[box]
    struct = ndimage.generate_binary_structure(a.ndim, 1)
    surf_a = a ^ ndimage.binary_erosion(a, structure=struct, border_value=0)
    surf_b = b ^ ndimage.binary_erosion(b, structure=struct, border_value=0)
    return ndimage.distance_transform_edt(~surf_b, sampling=sampling)[surf_a]


def mask_pairs(seed: int, count: int):
    """Random and blob-like mask pairs in 2D and 3D (some touching the array border), with a
    spacing that ties distances of different offsets (0.76, 3.0) or none."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        ndim = 2 + i % 2
        shape = tuple(int(n) for n in rng.integers(2, 15, ndim))
        if i % 3 == 0:
            idx = np.indices(shape)
            centre = [rng.uniform(0, n) for n in shape]
            a = sum(((idx[k] - centre[k]) / rng.uniform(1, 6)) ** 2 for k in range(ndim)) < 1
            b = np.roll(a, int(rng.integers(-2, 3)), axis=ndim - 1) | (rng.random(shape) < 0.03)
        else:
            a, b = rng.random(shape) < rng.uniform(0.02, 0.9), rng.random(shape) < rng.uniform(0.02, 0.9)
        if a.any() and b.any():
            yield a, b, tuple(float(s) for s in rng.choice([0.76, 3.0, 1.0, 0.7, 2.5], ndim))


def test_surface_distances_and_hd95_bit_identical_to_before_and_to_medpy():
    n = 0
    for a, b, spacing in mask_pairs(seed=3, count=120):
        for sp in (None, spacing):
            for x, y in ((a, b), (b, a)):
                np.testing.assert_array_equal(surface_distances(x, y, sp), surface_distances_e1518e9(x, y, sp))
            assert hausdorff95(a, b, sp) == medpy_metric.binary.hd95(a, b, voxelspacing=sp)  # exactly
        n += 1
    assert n > 100


def test_case_rows_bit_identical_to_before_on_label_maps_with_anisotropic_spacing():
    rng = np.random.default_rng(4)
    gt = np.zeros((6, 40, 36), np.int64)
    z, y, x = np.ogrid[:6, :40, :36]
    for k, (cy, cx, r) in enumerate([(10, 9, 7), (28, 12, 6), (20, 27, 8)], start=1):
        gt[((z - 3) / 2.5) ** 2 + ((y - cy) / r) ** 2 + ((x - cx) / (r - 1)) ** 2 < 1] = k
    noisy = rng.integers(0, 5, gt.shape)  # class 4: a false positive everywhere, absent from gt
    near = np.roll(gt, 1, axis=2)
    near[0, :3, :3] = 2  # a stray island far from organ 2
    spacing = (3.0, 0.76, 0.76)
    names = ["background", "a", "b", "c", "d"]
    for pred in (noisy, near):
        rows = case_metrics(pred, gt, names, spacing=spacing)
        assert [r["status"] for r in rows][:3] == ["scored"] * 3 and rows[3]["status"] == \
            ("false_positive" if pred is noisy else "absent")
        for k, row in enumerate(rows[:3], start=1):
            p, g = pred == k, gt == k
            assert row["dice"] == 2 * (p & g).sum() / (p.sum() + g.sum())
            for key, sp in (("hd95", None), ("hd95_mm", spacing)):
                pooled = np.concatenate([surface_distances_e1518e9(p, g, sp), surface_distances_e1518e9(g, p, sp)])
                assert row[key] == float(np.percentile(pooled, 95))

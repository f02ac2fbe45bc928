"""Segmentation metrics, computed the way the VM-UNet / TransUNet papers compute them.

No Lightning here, so inference and notebooks can reuse it. Two families:

* **Volume-wise** (Synapse-like, multi-class): :func:`case_metrics` gives one row per foreground
  class of one case -- Dice and HD95 (symmetric 95th-percentile Hausdorff distance between
  surface voxels, MONAI ``compute_hausdorff_distance(percentile=95)``), in voxels as the papers
  report it and in mm when the voxel spacing is known. :func:`summarize_cases` averages over cases
  and then over classes (the papers' "mean DSC / mean HD95").

  Edge cases (fixed by the project contract; the papers' ``calculate_metric_percase`` differs only
  in the first case, where it returns 0, 0):

  ===========================  ======  =====
  prediction / ground truth    Dice    HD95
  ===========================  ======  =====
  both empty                   1       0
  pred non-empty, gt empty     1       0
  gt non-empty, pred empty     0       0
  ===========================  ======  =====

* **Pooled binary** (ISIC): :class:`BinaryConfusion` accumulates one confusion matrix over every
  test pixel at threshold 0.5 (``prob >= 0.5``, as the VM-UNet code) and reports IoU, Dice/F1,
  accuracy, sensitivity and specificity; alongside it keeps per-image Dice/IoU for the standard
  per-image means. Per-image rows are keyed by image id so that rows gathered from several DDP
  ranks can be de-duplicated (the distributed sampler pads by repeating samples).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Column order of the per-case CSV written by the test loop.
CASE_FIELDS = ("case", "class", "dice", "hd95", "hd95_mm")


def dice_coefficient(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks, following the edge-case table in the module docstring."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _check_same_shape(pred, gt)
    p, g = int(pred.sum()), int(gt.sum())
    if g == 0:
        return 1.0  # both empty, or a prediction where nothing is (paper convention)
    if p == 0:
        return 0.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / (p + g)


def hausdorff95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric HD95 between the surfaces of two binary masks (voxel units, or mm with ``spacing``).

    ``spacing`` lists the voxel size along each array axis of ``pred``. Returns 0 in the edge cases
    of the module docstring (either mask empty).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _check_same_shape(pred, gt)
    if not pred.any() or not gt.any():
        return 0.0
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if len(spacing) != pred.ndim or any(not s > 0 for s in spacing):
            raise ValueError(
                f"spacing must list one positive voxel size per array axis ({pred.ndim}), got {spacing}"
            )
    import torch
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        # MONAI warns about its own internal use of a deprecated argument; nothing we can act on
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(pred[None, None]),
            torch.from_numpy(gt[None, None]),
            include_background=True,
            percentile=95,
            spacing=spacing,
        )
    return float(value.reshape(-1)[0])


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Per-class Dice / HD95 of one case (label maps, index == label value, 0 = background).

    Returns one row per foreground class: ``{"class", "dice", "hd95" (voxels), "hd95_mm"}``;
    ``hd95_mm`` is ``None`` without ``spacing`` (voxel size per array axis, e.g. ``(sz, sy, sx)``
    for a (D, H, W) volume).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_same_shape(pred, gt)
    if len(class_names) < 2:
        raise ValueError(f"class_names needs background plus at least one class, got {list(class_names)}")
    rows = []
    for idx, name in enumerate(class_names):
        if idx == 0:
            continue
        p, g = pred == idx, gt == idx
        rows.append({
            "class": str(name),
            "dice": dice_coefficient(p, g),
            "hd95": hausdorff95(p, g),
            "hd95_mm": None if spacing is None else hausdorff95(p, g, spacing),
        })
    return rows


def dedup_rows(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Keep the first row for each value of ``keys`` (rows gathered from DDP ranks repeat padded samples)."""
    seen: set[tuple] = set()
    out = []
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key not in seen:
            seen.add(key)
            out.append(dict(row))
    return out


def summarize_cases(rows: Iterable[Mapping[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Average per-case rows (``case``, ``class``, ``dice``, ``hd95``, ``hd95_mm``) over cases, then classes.

    Duplicate (case, class) rows are dropped first. Returns ``{"num_cases", "per_class": {name:
    {"dice", "hd95", "hd95_mm"}}, "mean": {"dice", "hd95", "hd95_mm"}}``; ``hd95_mm`` is ``None``
    where any case lacked a spacing.
    """
    rows = dedup_rows(rows, ("case", "class"))
    foreground = [str(n) for n in class_names[1:]]
    per_class: dict[str, dict[str, float | None]] = {}
    for name in foreground:
        mine = [r for r in rows if r["class"] == name]
        per_class[name] = {
            "dice": _mean([r["dice"] for r in mine]),
            "hd95": _mean([r["hd95"] for r in mine]),
            "hd95_mm": _mean_or_none([r["hd95_mm"] for r in mine]),
        }
    mean = {
        key: (_mean_or_none if key == "hd95_mm" else _mean)([per_class[n][key] for n in foreground])
        for key in ("dice", "hd95", "hd95_mm")
    }
    return {"num_cases": len({r["case"] for r in rows}), "per_class": per_class, "mean": mean}


@dataclass
class BinaryConfusion:
    """Pooled confusion matrix over all pixels plus per-image Dice/IoU (ISIC evaluation).

    ``update`` takes foreground probabilities (or 0/1 masks) and ground truth of any matching
    shape with a leading batch axis, and the image ids of the batch.
    """

    threshold: float = 0.5
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    images: list[dict[str, Any]] = field(default_factory=list)

    def update(self, prob: np.ndarray, gt: np.ndarray, ids: Sequence[str]) -> None:
        prob, gt = np.asarray(prob), np.asarray(gt)
        _check_same_shape(prob, gt)
        if len(ids) != prob.shape[0]:
            raise ValueError(f"got {len(ids)} image ids for a batch of {prob.shape[0]}")
        pred = prob >= self.threshold
        truth = gt >= 0.5
        for i, image_id in enumerate(ids):
            p, g = pred[i], truth[i]
            tp = int(np.logical_and(p, g).sum())
            fp = int(np.logical_and(p, ~g).sum())
            fn = int(np.logical_and(~p, g).sum())
            tn = int(p.size - tp - fp - fn)
            self.images.append({"image": str(image_id), "tp": tp, "fp": fp, "fn": fn, "tn": tn})
            self.tp, self.fp, self.fn, self.tn = self.tp + tp, self.fp + fp, self.fn + fn, self.tn + tn

    @classmethod
    def from_images(cls, images: Iterable[Mapping[str, Any]], threshold: float = 0.5) -> BinaryConfusion:
        """Rebuild from per-image rows (e.g. gathered from all ranks), dropping repeated image ids."""
        out = cls(threshold=threshold)
        for row in dedup_rows(images, ("image",)):
            out.images.append(row)
            out.tp += row["tp"]
            out.fp += row["fp"]
            out.fn += row["fn"]
            out.tn += row["tn"]
        return out

    def pooled(self) -> dict[str, float]:
        """The papers' metrics from the pooled matrix (0 where a denominator is 0, as their code)."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        return {
            "iou": _ratio(tp, tp + fp + fn),
            "dice": _ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
        }

    def per_image(self) -> dict[str, float]:
        """Mean over images of Dice and IoU (an image with empty prediction and ground truth scores 1)."""
        dice, iou = [], []
        for r in self.images:
            union = r["tp"] + r["fp"] + r["fn"]
            dice.append(1.0 if union == 0 else 2 * r["tp"] / (2 * r["tp"] + r["fp"] + r["fn"]))
            iou.append(1.0 if union == 0 else r["tp"] / union)
        return {"dice": _mean(dice), "iou": _mean(iou)}


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"prediction and ground truth shapes differ: {a.shape} vs {b.shape}")


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else 0.0


def _mean(values: Sequence[float | None]) -> float:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else math.nan


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return _mean(values)

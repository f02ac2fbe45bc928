"""Segmentation metrics with named definitions and empty-mask conventions.

No Lightning here: validation, ``vmunet test`` and ``vmunet predict --reference`` share it. Two
families:

* **Volume-wise** (Synapse-like, multi-class): :func:`case_metrics` gives one *raw* row per
  foreground class of one case -- what happened (``status``), Dice and HD95 where they are defined
  -- and :func:`summarize_cases` applies an empty-mask convention and averages over cases, then
  over classes (the papers' "mean DSC / mean HD95").

  HD95 definitions (``hd95=``), both on the surface voxels (mask minus its erosion by the
  1-connectivity cross, the array border counting as outside) with Euclidean distances:

  * ``"pooled"`` (default, medpy ``metric.binary.hd95``, used by the VM-UNet / TransUNet papers):
    the 95th percentile of the distances of *both* directions pooled together;
  * ``"monai"`` (MONAI ``compute_hausdorff_distance(percentile=95)``): the larger of the two
    directed 95th percentiles. Never smaller than pooled, often larger.

  Percentiles interpolate linearly (numpy / torch default). HD95 is in voxels as the papers
  report it, and in mm when the voxel spacing is known.

  Empty-mask conventions (``convention=``), by ``status`` of a (case, class) row:

  ==================  =====================  ====================  =========================
  status              prediction / truth     ``paper`` Dice, HD95  ``strict`` Dice, HD95
  ==================  =====================  ====================  =========================
  ``scored``          both non-empty         Dice, HD95            Dice, HD95
  ``miss``            empty / non-empty      0, 0                  0, excluded (counted)
  ``false_positive``  non-empty / empty      1, 0                  excluded (counted)
  ``absent``          both empty             0, 0                  excluded
  ==================  =====================  ====================  =========================

  ``paper`` is exactly the original ``calculate_metric_percase`` (TransUNet, VM-UNet
  ``utils.py``); ``strict`` is the nnU-Net / MONAI style: a class absent from the ground truth
  takes no part in the means, and misses and false positives are counted and reported instead of
  scoring HD95 0 (under ``paper`` a model that predicts nothing gets HD95 0, the best value).

* **Pooled binary** (ISIC): :class:`BinaryConfusion` accumulates one confusion matrix over every
  test pixel at threshold 0.5 (``prob >= 0.5``, as the VM-UNet code) and reports IoU, Dice/F1,
  accuracy, sensitivity and specificity; alongside it keeps per-image counts for per-image means.
  Per-image rows are keyed by image id so that rows gathered from several DDP ranks can be
  de-duplicated (the distributed sampler pads by repeating samples).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

HD95Definition = Literal["pooled", "monai"]
Convention = Literal["strict", "paper"]

#: Human-readable names of the HD95 definitions, written into every report.
HD95_DEFINITIONS: dict[str, str] = {
    "pooled": "medpy hd95: 95th percentile of the pooled surface distances of both directions",
    "monai": "MONAI: larger of the two directed 95th percentiles of surface distances",
}
#: Human-readable names of the empty-mask conventions, written into every report.
CONVENTIONS: dict[str, str] = {
    "strict": "classes absent from the ground truth excluded; misses and false positives counted, never HD95 0",
    "paper": "calculate_metric_percase: false positive -> (1, 0); miss or both empty -> (0, 0)",
}
STATUSES = ("scored", "miss", "false_positive", "absent")

#: Column order of the per-case CSV files (``vmunet test`` and ``vmunet predict --reference``).
CASE_FIELDS = ("case", "class", "status", "dice", "hd95", "hd95_mm", "convention", "hd95_definition")


def check_hd95_definition(name: str) -> str:
    """``name`` if it is a known HD95 definition, else a ValueError listing the choices."""
    if name not in HD95_DEFINITIONS:
        raise ValueError(f"HD95 definition must be one of {sorted(HD95_DEFINITIONS)}, got {name!r}")
    return name


def check_convention(name: str) -> str:
    """``name`` if it is a known empty-mask convention, else a ValueError listing the choices."""
    if name not in CONVENTIONS:
        raise ValueError(f"metric convention must be one of {sorted(CONVENTIONS)}, got {name!r}")
    return name


def describe_parts(convention: str | None, hd95_definition: str | None) -> list[str]:
    """The empty-mask convention and the HD95 definition of a table, each named with its meaning."""
    conv = f"convention {convention} ({CONVENTIONS[convention]})" if convention in CONVENTIONS else ""
    hd = f"HD95 {hd95_definition} ({HD95_DEFINITIONS[hd95_definition]})" if hd95_definition in HD95_DEFINITIONS \
        else "HD95 not computed"
    return [p for p in (conv, hd) if p]


def describe(convention: str | None, hd95_definition: str | None) -> str:
    """One line naming the empty-mask convention and HD95 definition of a table."""
    return "; ".join(describe_parts(convention, hd95_definition))


def dice_coefficient(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice ``2|P∩G| / (|P| + |G|)`` of two binary masks; NaN when both are empty (0/0)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _check_same_shape(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distance from every surface voxel of ``a`` to the nearest surface voxel of ``b``.

    Surface = mask XOR its binary erosion with the 1-connectivity cross (voxels on the array border
    are surface), as medpy's ``__surface_distances`` and MONAI's ``get_mask_edges``. Both masks must
    be non-empty. Distances are in the order of ``np.argwhere`` of ``a``'s surface. See
    :class:`_Surfaces` for how it is computed (cropped, one feature transform, values as scipy's).
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _check_same_shape(a, b)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    return _Surfaces(a, b).directed(0, _check_spacing(spacing, a.ndim))


def hausdorff95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                definition: HD95Definition = "pooled") -> float:
    """HD95 between the surfaces of two non-empty binary masks (voxel units, or mm with ``spacing``).

    ``spacing`` lists the voxel size along each array axis. ``definition``: ``"pooled"`` (medpy)
    or ``"monai"``, see the module docstring. Empty masks are a ValueError: what they score is the
    business of the convention (:func:`summarize_cases`), not of the distance.
    """
    check_hd95_definition(definition)
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _check_same_shape(pred, gt)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    return _Surfaces(pred, gt).hd95(_check_spacing(spacing, pred.ndim), definition)


class _Surfaces:
    """The surfaces of two non-empty masks, computed once and shared by both directions and by the
    HD95 in voxels and in mm (validation asks for both: before, each of the four directed distances
    recomputed both erosions).

    * Crop: the surfaces are found in the bounding box of ``a | b`` plus one voxel (the erosion is
      unchanged there: every surface voxel lies inside and the margin is background or the array
      border, which counts as outside), and the feature transforms run on the box without that
      margin (it holds every surface voxel of both masks: a mask's extreme voxels along each axis
      are surface). The feature transform of a box that holds all of its features (the zeros of
      its input) and all the query voxels is the full volume's, shifted: values are medpy's.
    * Erosion by the cross written as shifted ANDs (boolean, so identical to
      ``ndimage.binary_erosion`` with ``border_value=0``; about 10x faster).
    * Distances: scipy's ``distance_transform_edt`` computes the feature transform (nearest
      surface voxel of the other mask, for every voxel of the box), then a float64 distance map of
      the whole box from it (``ndim + 1`` float64 arrays of the box's size), of which only the
      surface voxels of one mask are read. :meth:`directed` takes the feature transform from
      :func:`vmunet.evaluation.edt.feature_transform` (scipy's algorithm bit for bit, on all
      cores) and evaluates scipy's distance formula, ``sqrt(sum_i ((f_i - x_i) * s_i)**2)`` (same
      float64 operations in the same order), at those voxels only: bit-identical values.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        tight = _bounding_box(a | b, margin=0)
        box = tuple(slice(max(t.start - 1, 0), min(t.stop + 1, n)) for t, n in zip(tight, a.shape, strict=True))
        inner = tuple(slice(t.start - m.start, t.stop - m.start) for t, m in zip(tight, box, strict=True))
        a, b = a[box], b[box]
        self.surfaces = (_surface(a)[inner], _surface(b)[inner])
        self.flat = tuple(np.flatnonzero(s) for s in self.surfaces)  # C order, as np.argwhere
        self.points = tuple(np.unravel_index(f, s.shape) for f, s in zip(self.flat, self.surfaces, strict=True))

    def directed(self, source: int, sampling: list[float] | None) -> np.ndarray:
        """Distances from the surface voxels of mask ``source`` (0: ``a``, 1: ``b``) to the other surface."""
        from vmunet.evaluation.edt import feature_transform

        ft = feature_transform(self.surfaces[1 - source], sampling)
        return _distances_at(ft, self.flat[source], self.points[source], sampling)

    def hd95(self, sampling: list[float] | None, definition: str) -> float:
        a_to_b, b_to_a = self.directed(0, sampling), self.directed(1, sampling)
        if definition == "pooled":
            return float(np.percentile(np.concatenate([a_to_b, b_to_a]), 95))
        return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def _distances_at(ft: np.ndarray, flat: np.ndarray, points: tuple[np.ndarray, ...],
                  sampling: list[float] | None) -> np.ndarray:
    """scipy's ``distance_transform_edt`` distances, from its feature transform ``ft``, at the
    voxels ``points`` (C-order flat indices ``flat``) only: ``sqrt(sum_i ((ft_i - x_i) * s_i) ** 2)``
    in float64, summed over axes in order (as its ``np.add.reduce(dt, axis=0)``), so bit-identical
    to the full map read at ``points``."""
    ft = ft.reshape(len(points), -1)
    total = None
    for axis, coord in enumerate(points):
        d = (ft[axis].take(flat) - coord).astype(np.float64)
        if sampling is not None:
            d *= np.float64(sampling[axis])
        np.multiply(d, d, d)
        total = d if total is None else np.add(total, d, out=total)
    return np.sqrt(total)


def _surface(mask: np.ndarray) -> np.ndarray:
    """``mask`` minus its erosion by the 1-connectivity cross, the array border counting as outside."""
    interior = mask.copy()
    for axis in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        interior[tuple(hi)] &= mask[tuple(lo)]  # the neighbour before along this axis is inside
        interior[tuple(lo)] &= mask[tuple(hi)]  # the neighbour after
        edge = [slice(None)] * mask.ndim
        for end in (0, -1):
            edge[axis] = end
            interior[tuple(edge)] = False
    return mask & ~interior


def pair_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                 hd95: HD95Definition | None = "pooled") -> dict[str, Any]:
    """Raw metrics of one binary (prediction, ground truth) pair.

    Returns ``{"status", "dice", "hd95", "hd95_mm", "hd95_definition", "has_spacing"}``: ``dice``
    is the plain Dice where defined (``None`` when both masks are empty); ``hd95``/``hd95_mm`` only
    for status ``scored`` (``hd95_mm`` needs ``spacing``). ``hd95=None`` skips the distance (cheap
    validation) and leaves ``hd95_definition`` ``None``.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _check_same_shape(pred, gt)
    if hd95 is not None:
        check_hd95_definition(hd95)
    sampling = _check_spacing(spacing, pred.ndim)
    has_p, has_g = bool(pred.any()), bool(gt.any())
    status = "scored" if has_p and has_g else "miss" if has_g else "false_positive" if has_p else "absent"
    dice = dice_coefficient(pred, gt)
    row: dict[str, Any] = {"status": status, "dice": None if math.isnan(dice) else dice,
                           "hd95": None, "hd95_mm": None, "hd95_definition": hd95,
                           "has_spacing": spacing is not None}
    if status == "scored" and hd95 is not None:
        surfaces = _Surfaces(pred, gt)  # shared by the HD95 in voxels and in mm
        row["hd95"] = surfaces.hd95(None, hd95)
        row["hd95_mm"] = None if sampling is None else surfaces.hd95(sampling, hd95)
    return row


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float] | None = None,
    hd95: HD95Definition | None = "pooled",
) -> list[dict[str, Any]]:
    """Raw per-class rows of one case (label maps, index == label value, 0 = background).

    One :func:`pair_metrics` row per foreground class, plus ``"class"``. ``spacing``: voxel size per
    array axis, e.g. ``(sz, sy, sx)`` for a (D, H, W) volume. Apply a convention with
    :func:`apply_convention` / :func:`summarize_cases` before reading Dice/HD95 as scores.

    The classes run one after the other; the distance transforms inside use every core
    (:mod:`vmunet.evaluation.edt`, numba's threads).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_same_shape(pred, gt)
    if len(class_names) < 2:
        raise ValueError(f"class_names needs background plus at least one class, got {list(class_names)}")
    if hd95 is not None:
        check_hd95_definition(hd95)
    _check_spacing(spacing, pred.ndim)
    return [{"class": str(name), **pair_metrics(pred == idx, gt == idx, spacing, hd95)}
            for idx, name in enumerate(class_names) if idx > 0]


def apply_convention(row: Mapping[str, Any], convention: Convention) -> dict[str, Any]:
    """Dice / HD95 of a raw row under ``convention``; ``None`` means "excluded from the means".

    Returns ``{"dice", "hd95", "hd95_mm"}`` (see the table in the module docstring). HD95 values
    that were not computed (``hd95=None`` in :func:`case_metrics`) stay ``None``.
    """
    check_convention(convention)
    status = row["status"]
    if status not in STATUSES:
        raise ValueError(f"row status must be one of {STATUSES}, got {status!r}")
    if status == "scored":
        return {"dice": row["dice"], "hd95": row["hd95"], "hd95_mm": row["hd95_mm"]}
    computed = row.get("hd95_definition") is not None
    if convention == "paper":
        dice = 1.0 if status == "false_positive" else 0.0
        mm = 0.0 if computed and row.get("has_spacing") else None
        return {"dice": dice, "hd95": 0.0 if computed else None, "hd95_mm": mm}
    return {"dice": 0.0 if status == "miss" else None, "hd95": None, "hd95_mm": None}


def convention_rows(rows: Iterable[Mapping[str, Any]], convention: Convention) -> list[dict[str, Any]]:
    """Raw rows with Dice/HD95 replaced by their values under ``convention`` (for CSV reports)."""
    return [{**row, **apply_convention(row, convention), "convention": convention} for row in rows]


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


def summarize_cases(rows: Iterable[Mapping[str, Any]], class_names: Sequence[str],
                    convention: Convention = "strict") -> dict[str, Any]:
    """Apply ``convention`` to raw rows of :func:`case_metrics` and average over cases, then classes.

    Duplicate (case, class) rows are dropped first. Returns ``{"convention", "hd95_definition",
    "num_cases", "per_class": {name: {"dice", "hd95", "hd95_mm", "misses", "false_positives"}},
    "mean": {...same keys; counts summed over classes}}``. Means skip excluded (``None``) values
    and are NaN when nothing is left; ``hd95_mm`` is ``None`` where a contributing case had no
    spacing. Under ``strict`` the class mean runs over the classes that have a value.
    """
    check_convention(convention)
    rows = dedup_rows(rows, ("case", "class"))
    definitions = {r.get("hd95_definition") for r in rows} - {None}
    if len(definitions) > 1:
        raise ValueError(f"rows mix HD95 definitions {sorted(definitions)}; summarize one definition at a time")
    foreground = [str(n) for n in class_names[1:]]
    per_class: dict[str, dict[str, Any]] = {}
    for name in foreground:
        mine = [r for r in rows if r["class"] == name]
        scores = [apply_convention(r, convention) for r in mine]
        per_class[name] = {
            "dice": _mean([s["dice"] for s in scores]),
            "hd95": _mean([s["hd95"] for s in scores]),
            "hd95_mm": _mean_mm(scores),
            "misses": sum(r["status"] == "miss" for r in mine),
            "false_positives": sum(r["status"] == "false_positive" for r in mine),
        }
    mean: dict[str, Any] = {key: _mean([per_class[n][key] for n in foreground]) for key in ("dice", "hd95")}
    mm = [per_class[n]["hd95_mm"] for n in foreground]
    mean["hd95_mm"] = None if any(v is None for v in mm) else _mean(mm)
    mean["misses"] = sum(per_class[n]["misses"] for n in foreground)
    mean["false_positives"] = sum(per_class[n]["false_positives"] for n in foreground)
    return {
        "convention": convention,
        "hd95_definition": definitions.pop() if definitions else None,
        "num_cases": len({r["case"] for r in rows}),
        "per_class": per_class,
        "mean": mean,
    }


@dataclass
class BinaryConfusion:
    """Pooled confusion matrix over all pixels plus per-image counts (ISIC evaluation).

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

    def per_image(self, convention: Convention = "strict") -> dict[str, Any]:
        """Mean over images of Dice and IoU under ``convention`` (the table in the module docstring).

        ``strict``: images with empty ground truth are left out of the means (NaN if none is left)
        and images with a false positive there are counted; ``paper``: such an image scores 1 with a
        prediction and 0 without. Returns ``{"dice", "iou", "images", "false_positives", "misses"}``.
        """
        check_convention(convention)
        dice: list[float | None] = []
        iou: list[float | None] = []
        false_positives = misses = 0
        for r in self.images:
            has_p, has_g = r["tp"] + r["fp"] > 0, r["tp"] + r["fn"] > 0
            false_positives += has_p and not has_g
            misses += has_g and not has_p
            if has_g:
                dice.append(2 * r["tp"] / (2 * r["tp"] + r["fp"] + r["fn"]))
                iou.append(r["tp"] / (r["tp"] + r["fp"] + r["fn"]))
            elif convention == "paper":
                dice.append(1.0 if has_p else 0.0)
                iou.append(1.0 if has_p else 0.0)
        return {"dice": _mean(dice), "iou": _mean(iou), "images": len(self.images),
                "false_positives": false_positives, "misses": misses}


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"prediction and ground truth shapes differ: {a.shape} vs {b.shape}")


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> list[float] | None:
    if spacing is None:
        return None
    values = [float(s) for s in spacing]
    if len(values) != ndim or any(not s > 0 for s in values):
        raise ValueError(f"spacing must list one positive voxel size per array axis ({ndim}), got {list(spacing)}")
    return values


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else 0.0


def _mean(values: Sequence[float | None]) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else math.nan


def _mean_mm(scores: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean HD95 in mm, ``None`` when a row that has an HD95 in voxels lacks the mm value."""
    if any(s["hd95"] is not None and s["hd95_mm"] is None for s in scores):
        return None
    return _mean([s["hd95_mm"] for s in scores])

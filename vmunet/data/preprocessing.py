"""The preprocessing record: what was done to an image before the model saw it.

Each data module builds one; it travels inside the checkpoint (``hparams["preprocessing"]``) and is
the only thing inference needs besides the weights, so training and prediction apply exactly the
same intensity transform, orientation and in-plane size. Plain JSON-serializable dicts on purpose:
checkpoints stay loadable with ``torch.load(weights_only=True)`` and readable by humans.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vmunet.errors import VmunetError

DATASETS = ("synapse", "isic", "nifti")
INTENSITY_MODES = ("window", "zscore", "minmax", "none", "zscore_case", "ct_percentile")
#: nnU-Net's floor on the standard deviation it divides by (``max(std, 1e-8)``).
STD_FLOOR = 1e-8
ORIENTATIONS = ("RAS", None)
IMAGE_INTERPOLATIONS = ("bilinear", "bicubic")
#: What the slice inferer resizes back to native size (``vmunet.inference.slicewise``).
RESAMPLE_MODES = ("probabilities", "labels")

SYNAPSE_CLASSES = (
    "background", "aorta", "gallbladder", "left_kidney", "right_kidney",
    "liver", "pancreas", "spleen", "stomach",
)
#: HU window of the TransUNet / VM-UNet Synapse recipe.
SYNAPSE_HU_WINDOW = (-125.0, 275.0)


class PreprocessingError(VmunetError, ValueError):
    """A preprocessing record is missing a field or has a wrong value."""


def make_preprocessing(
    dataset: str,
    *,
    in_chans: int,
    image_size: Sequence[int],
    class_names: Sequence[str],
    num_classes: int,
    intensity: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    orientation: str | None = None,
    slice_axis: int | None = None,
    image_interpolation: str | None = None,
) -> dict[str, Any]:
    """Build and validate a preprocessing record.

    ``image_interpolation`` (optional: "bilinear" | "bicubic") records how training resized images
    to ``image_size``, so inference resizes the same way; absent means bilinear.
    """
    rec = {
        "dataset": dataset,
        "in_chans": int(in_chans),
        "image_size": [int(s) for s in image_size],
        "class_names": [str(c) for c in class_names],
        "num_classes": int(num_classes),
        "intensity": _plain([dict(i) for i in intensity] if isinstance(intensity, (list, tuple)) else dict(intensity)),
        "orientation": orientation,
        "slice_axis": None if slice_axis is None else int(slice_axis),
    }
    if image_interpolation is not None:
        rec["image_interpolation"] = image_interpolation
    return validate_preprocessing(rec)


def _plain(obj: Any) -> Any:
    """Numpy scalars/arrays and tuples -> JSON types, so the record survives json and weights_only."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def validate_preprocessing(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Check every field of a preprocessing record; return a normalized deep copy."""
    if not isinstance(rec, Mapping):
        raise PreprocessingError(f"preprocessing record must be a dict, got {type(rec).__name__}")
    required = ("dataset", "in_chans", "image_size", "class_names", "num_classes", "intensity",
                "orientation", "slice_axis")
    missing = [k for k in required if k not in rec]
    if missing:
        raise PreprocessingError(f"preprocessing record is missing field(s) {missing}")
    out = copy.deepcopy(_plain(dict(rec)))

    def bad(field: str, expected: str) -> PreprocessingError:
        return PreprocessingError(
            f"preprocessing field {field!r}: expected {expected}, got {out.get(field)!r}"
        )

    if out["dataset"] not in DATASETS:
        raise bad("dataset", f"one of {DATASETS}")
    if isinstance(out["in_chans"], bool) or not isinstance(out["in_chans"], int) or out["in_chans"] < 1:
        raise bad("in_chans", "a positive integer (input channels)")
    size = out["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise bad("image_size", "[H, W] with positive integers")
    names = out["class_names"]
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        raise bad("class_names", "a list of at least 2 names (index == label value, 0 = background)")
    nc = out["num_classes"]
    if not isinstance(nc, int) or nc not in (1, len(names)):
        raise bad("num_classes", f"1 (binary) or len(class_names) = {len(names)}")
    if nc == 1 and len(names) != 2:
        raise bad("num_classes", "num_classes=1 (binary) only with exactly 2 class names")
    intensity = out["intensity"]
    if isinstance(intensity, list):  # one record per input channel (multi-channel volumes)
        if len(intensity) != out["in_chans"]:
            raise bad("intensity", f"one dict per input channel ({out['in_chans']}) or one dict for all")
        for item in intensity:
            _check_intensity(item)
    else:
        _check_intensity(intensity)
    if out["orientation"] not in ORIENTATIONS:
        raise bad("orientation", f"one of {ORIENTATIONS}")
    if out["slice_axis"] not in (0, 1, 2, None):
        raise bad("slice_axis", "0, 1, 2 or null")
    if "image_interpolation" in out and out["image_interpolation"] not in IMAGE_INTERPOLATIONS:
        raise bad("image_interpolation", f"one of {IMAGE_INTERPOLATIONS} (optional)")
    # The decision rule of the training module (optional; absent means 0.5 and "probabilities"),
    # so `vmunet predict` labels exactly as validation did.
    thr = out.get("threshold", 0.5)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 < float(thr) < 1.0:
        raise bad("threshold", "a binary decision threshold in (0, 1) (optional)")
    if "resample" in out and out["resample"] not in RESAMPLE_MODES:
        raise bad("resample", f"one of {RESAMPLE_MODES} (optional)")
    return out


def _check_intensity(intensity: Any) -> None:
    if not isinstance(intensity, dict) or intensity.get("mode") not in INTENSITY_MODES:
        raise PreprocessingError(
            f"preprocessing field 'intensity': expected a dict with 'mode' in {INTENSITY_MODES}, "
            f"got {intensity!r}"
        )
    mode = intensity["mode"]
    if mode == "window":
        w = intensity.get("window")
        if not (isinstance(w, list) and len(w) == 2 and float(w[0]) < float(w[1])):
            raise PreprocessingError(
                f"preprocessing field 'intensity.window': expected [low, high] with low < high, got {w!r}"
            )
    elif mode == "minmax":
        r = intensity.get("range")
        if not (isinstance(r, list) and len(r) == 2 and float(r[0]) < float(r[1])):
            raise PreprocessingError(
                f"preprocessing field 'intensity.range': expected [low, high] with low < high, got {r!r}"
            )
    elif mode == "zscore":
        for key in ("mean", "std"):
            if key not in intensity:
                raise PreprocessingError(f"preprocessing field 'intensity.{key}' is missing (mode 'zscore')")
        std = np.asarray(intensity["std"], dtype=np.float64)
        if np.any(std <= 0):
            raise PreprocessingError(
                f"preprocessing field 'intensity.std': expected > 0, got {intensity['std']!r}"
            )
    elif mode == "zscore_case":
        if not isinstance(intensity.get("use_mask", False), bool):
            raise PreprocessingError(f"preprocessing field 'intensity.use_mask': expected true or false, "
                                     f"got {intensity.get('use_mask')!r}")
    elif mode == "ct_percentile":
        c = intensity.get("clip")
        if not (isinstance(c, list) and len(c) == 2 and float(c[0]) <= float(c[1])):
            raise PreprocessingError(
                f"preprocessing field 'intensity.clip': expected [low, high] with low <= high, got {c!r}")
        for key in ("mean", "std"):
            if not isinstance(intensity.get(key), (int, float)) or isinstance(intensity.get(key), bool):
                raise PreprocessingError(f"preprocessing field 'intensity.{key}': expected a number "
                                         f"(mode 'ct_percentile'), got {intensity.get(key)!r}")


def apply_intensity(array: np.ndarray, intensity: Mapping[str, Any], channel_axis: int | None = None,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Apply an intensity record to raw values; returns float32.

    ``window``: clip to [low, high], scale to [0, 1] (the Synapse HU recipe). ``zscore``: subtract
    mean, divide by std; per-channel lists broadcast along ``channel_axis``. ``minmax``: scale the
    whole array (all channels together) linearly so its minimum and maximum land on ``range``
    (VM-UNet's ISIC ``myNormalize``, whose data-set z-score cancels in its min-max; a constant
    image maps to the low end). ``none``: cast only.

    The two nnU-Net schemes (``nnunetv2.preprocessing.normalization.default_normalization_schemes``):

    * ``zscore_case`` (nnU-Net's ``ZScoreNormalization``, its default for non-CT channels): each
      channel of *this* array (a whole case) minus its own mean, divided by ``max(std, 1e-8)``
      (population std). With ``use_mask`` the mean and std come from the nonzero mask only
      (:func:`nonzero_mask`, or ``mask`` when given) and only voxels inside it are changed
      (outside it every channel is 0 and stays 0).
    * ``ct_percentile`` (nnU-Net's ``CTNormalization``): clip to ``clip`` = [0.5th, 99.5th]
      percentile of the training set's foreground voxels, subtract their ``mean``, divide by
      ``max(std, 1e-8)`` (:func:`foreground_intensity_stats` computes the numbers).
    """
    _check_intensity(dict(intensity))
    x = np.asarray(array, dtype=np.float32)
    mode = intensity["mode"]
    if mode == "window":
        lo, hi = (float(v) for v in intensity["window"])
        return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if mode == "zscore":
        mean = np.asarray(intensity["mean"], dtype=np.float32)
        std = np.asarray(intensity["std"], dtype=np.float32)
        if mean.ndim == 1 and mean.size > 1:
            if channel_axis is None:
                raise ValueError("per-channel zscore needs channel_axis")
            shape = [1] * x.ndim
            shape[channel_axis] = mean.size
            mean, std = mean.reshape(shape), std.reshape(shape)
        return ((x - mean) / std).astype(np.float32)
    if mode == "minmax":
        lo, hi = (float(v) for v in intensity["range"])
        span = float(x.max()) - float(x.min()) if x.size else 0.0
        if span == 0.0:
            return np.full_like(x, lo)
        return ((x - x.min()) / span * (hi - lo) + lo).astype(np.float32)
    if mode == "zscore_case":
        chans = x[None] if channel_axis is None else np.moveaxis(x, channel_axis, 0)
        use_mask = bool(intensity.get("use_mask", False))
        if use_mask and mask is None:
            mask = nonzero_mask(chans)
        out = np.stack([_zscore_case(c, mask if use_mask else None) for c in chans])
        return out[0] if channel_axis is None else np.moveaxis(out, 0, channel_axis)
    if mode == "ct_percentile":
        lo, hi = (float(v) for v in intensity["clip"])
        std = max(float(intensity["std"]), STD_FLOOR)
        return ((np.clip(x, lo, hi) - float(intensity["mean"])) / std).astype(np.float32)
    return x


def _zscore_case(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """One channel of one case, z-scored with its own statistics (inside ``mask`` when given)."""
    if mask is None:
        mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
        return ((x - mean) / max(std, STD_FLOOR)).astype(np.float32)
    if not mask.any():  # an all-zero case: nothing inside the mask to normalize
        return x.astype(np.float32)
    inside = x[mask]
    mean, std = float(inside.mean(dtype=np.float64)), float(inside.std(dtype=np.float64))
    out = x.astype(np.float32, copy=True)
    out[mask] = (inside - mean) / max(std, STD_FLOOR)
    return out


def nonzero_mask(channels: np.ndarray) -> np.ndarray:
    """nnU-Net's ``create_nonzero_mask``: voxels where any channel (axis 0) is nonzero, with holes
    filled (``scipy.ndimage.binary_fill_holes``), so dark tissue inside the body counts."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(np.any(np.asarray(channels) != 0, axis=0))


def channel_intensities(intensity: Mapping[str, Any] | Sequence[Mapping[str, Any]], channels: int) -> list[dict[str, Any]]:
    """The record's ``intensity`` as one dict per channel (a single dict applies to every channel)."""
    if isinstance(intensity, Mapping):
        return [dict(intensity)] * channels
    items = [dict(i) for i in intensity]
    if len(items) != channels:
        raise PreprocessingError(f"preprocessing field 'intensity': {len(items)} per-channel entries for "
                                 f"{channels} channel(s)")
    return items


def normalize_channels(channels: np.ndarray, intensity: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Normalize a multi-channel case ``(C, ...)`` channel by channel (float32, same shape): the one
    routine training (``vmunet.data.nifti``) and ``vmunet predict`` use for volumes. The nonzero
    mask of ``zscore_case`` with ``use_mask`` is computed once over all channels, as in nnU-Net."""
    x = np.asarray(channels)
    per_channel = channel_intensities(intensity, x.shape[0])
    mask = None
    if any(i["mode"] == "zscore_case" and i.get("use_mask", False) for i in per_channel):
        mask = nonzero_mask(x)
    return np.stack([apply_intensity(c, i, mask=mask) for c, i in zip(x, per_channel, strict=True)])


def foreground_intensity_stats(cases: Iterable[tuple[np.ndarray, np.ndarray]]) -> list[dict[str, float]]:
    """nnU-Net's dataset fingerprint, per channel: mean, std (population), 0.5th and 99.5th
    percentiles (``np.percentile``, linear) of the image values where the label is foreground
    (> 0), pooled over all training cases. ``cases`` yields ``(channels (C, ...), label (...))``.
    nnU-Net draws a random sample of these voxels (at most 10^7 over the data set); here every
    foreground voxel counts, which is what that sample estimates."""
    per_channel: list[list[np.ndarray]] = []
    for channels, label in cases:
        fg = np.asarray(label) > 0
        chans = np.asarray(channels)
        if not per_channel:
            per_channel = [[] for _ in range(chans.shape[0])]
        for c, img in enumerate(chans):
            per_channel[c].append(np.asarray(img, dtype=np.float64)[fg])
    stats = []
    for values in per_channel:
        fg_values = np.concatenate(values)
        if fg_values.size == 0:
            raise PreprocessingError("ct_percentile normalization needs foreground voxels (label > 0) in the "
                                     "training cases; found none")
        lo, hi = np.percentile(fg_values, [0.5, 99.5])
        stats.append({"mean": float(fg_values.mean()), "std": float(fg_values.std()),
                      "percentile_00_5": float(lo), "percentile_99_5": float(hi)})
    if not stats:
        raise PreprocessingError("ct_percentile normalization needs training cases; got none")
    return stats


def volume_to_slices(volume: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """Canonical (RAS) volume ``(X, Y, Z)`` -> stack of 2D slices ``(D, H, W)``.

    The slice axis goes first and the two in-plane axes are reversed, so for the axial axis
    (2) this is ``volume.transpose(2, 1, 0)``: the Synapse ``test_vol_h5`` layout ("DHW"), with
    rows along Y (posterior -> anterior) and columns along X. Every dataset slices this way, so
    one convention covers training, evaluation and inference. Extra leading axes (channels) are
    kept in front: ``(C, X, Y, Z) -> (C, D, H, W)``.
    """
    return np.transpose(volume, _slicing_order(volume.shape, slice_axis))


def slices_to_volume(slices: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """Inverse of :func:`volume_to_slices`: ``(..., D, H, W)`` -> canonical ``(..., X, Y, Z)``."""
    return np.transpose(slices, np.argsort(_slicing_order(slices.shape, slice_axis)))


def slicing_axes(slice_axis: int) -> list[int]:
    """The (X, Y, Z) axes that become (D, H, W): slice axis first, in-plane axes reversed
    (e.g. voxel sizes of a slice stack: ``voxel_sizes(affine)[slicing_axes(axis)]``)."""
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    return [slice_axis, *[a for a in (0, 1, 2) if a != slice_axis][::-1]]


def _slicing_order(shape: tuple[int, ...], slice_axis: int) -> list[int]:
    """Axis order taking ``(..., X, Y, Z)`` to ``(..., D, H, W)`` (leading axes kept in front)."""
    axes = slicing_axes(slice_axis)
    lead = len(shape) - 3
    if lead < 0:
        raise ValueError(f"expected at least 3 axes (X, Y, Z), got shape {tuple(shape)}")
    return [*range(lead), *(lead + a for a in axes)]

"""MONAI dictionary-transform compositions shared by the data modules.

All train pipelines work on ``{"image": (C, H, W), "label": (1, H, W)}`` and end with plain
tensors: image float32, label int64 (multi-class) or float32 0/1 (binary).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

ImageInterp = Literal["bilinear", "bicubic", "area", "nearest"]
KEYS = ("image", "label")


def _finish(binary: bool) -> list:
    from monai.transforms import CastToTyped, EnsureTyped

    return [
        CastToTyped(keys=list(KEYS), dtype=(np.float32, np.float32 if binary else np.int64)),
        EnsureTyped(keys=list(KEYS), track_meta=False),
    ]


def resize_transforms(image_size: Sequence[int], image_mode: ImageInterp = "bilinear") -> list:
    """Resize image (``image_mode``) and label (nearest) to ``image_size``."""
    from monai.transforms import Resized

    return [Resized(keys=list(KEYS), spatial_size=tuple(image_size), mode=(image_mode, "nearest"))]


def rot_flip_rotate(rot_flip: bool = True, rotation: bool = True, degrees: float = 20.0) -> list:
    """The TransUNet / VM-UNet Synapse augmentation as one MONAI ``OneOf``.

    With probability 0.5: rotate by k x 90 degrees (k in 1..3) and flip along a random axis;
    otherwise with probability 0.5: rotate by a uniform angle in [-degrees, degrees] (image
    bilinear, label nearest); otherwise nothing. Disabling one branch gives the other p = 0.5.
    """
    from monai.transforms import (
        Compose,
        Identityd,
        OneOf,
        RandAxisFlipd,
        RandRotate90d,
        RandRotated,
    )

    keys = list(KEYS)
    options, weights = [], []
    if rot_flip:
        options.append(Compose([RandRotate90d(keys=keys, prob=1.0, max_k=3), RandAxisFlipd(keys=keys, prob=1.0)]))
        weights.append(0.5)
    if rotation:
        rad = math.radians(degrees)
        options.append(RandRotated(keys=keys, range_x=(-rad, rad), prob=1.0, keep_size=True,
                                   mode=("bilinear", "nearest"), padding_mode="zeros"))
        weights.append(0.25 if rot_flip else 0.5)
    if not options:
        return []
    options.append(Identityd(keys=keys))
    weights.append(1.0 - sum(weights))
    return [OneOf(options, weights=weights)]


def slice_train_transforms(image_size: Sequence[int], *, augment: bool = True, rot_flip: bool = True,
                           rotation: bool = True, degrees: float = 20.0,
                           image_mode: ImageInterp = "bicubic", binary: bool = False) -> list:
    """Synapse / NIfTI slice training pipeline: augmentation, resize, cast."""
    aug = rot_flip_rotate(rot_flip, rotation, degrees) if augment else []
    return [*aug, *resize_transforms(image_size, image_mode), *_finish(binary)]


def isic_transforms(image_size: Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                    augment: bool = True, flips: bool = True, rotation: bool = True) -> list:
    """ISIC pipeline (VM-UNet recipe): normalize with the data set's stats, resize, random h/v
    flips (p 0.5 each), random rotation in [0, 360) degrees (p 0.5). Masks stay binary 0/1."""
    from monai.transforms import NormalizeIntensityd, RandFlipd, RandRotated

    keys = list(KEYS)
    out = [
        NormalizeIntensityd(keys="image", subtrahend=np.asarray(mean, dtype=np.float32),
                            divisor=np.asarray(std, dtype=np.float32), channel_wise=True),
        *resize_transforms(image_size, "bilinear"),
    ]
    if augment and flips:
        out += [RandFlipd(keys=keys, prob=0.5, spatial_axis=1), RandFlipd(keys=keys, prob=0.5, spatial_axis=0)]
    if augment and rotation:
        out.append(RandRotated(keys=keys, range_x=(0.0, 2 * math.pi), prob=0.5, keep_size=True,
                               mode=("bilinear", "nearest"), padding_mode="zeros"))
    return [*out, *_finish(binary=True)]

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


def rot_flip(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``np.rot90`` by ``k`` then ``np.flip`` along in-plane ``axis`` (0 rows, 1 columns) of (C, H, W)."""
    return np.flip(np.rot90(x, k, axes=(1, 2)), axis=axis + 1).copy()


def rotate_nearest(x: np.ndarray, angle: int) -> np.ndarray:
    """``scipy.ndimage.rotate(order=0, reshape=False)`` of each (H, W) plane of (C, H, W), zero fill."""
    from scipy import ndimage

    return ndimage.rotate(x, angle, axes=(2, 1), order=0, reshape=False)


def paper_rot_flip_rotate() -> list:
    """VM-UNet's Synapse ``RandomGenerator`` (``datasets/dataset.py``), draw for draw.

    With probability 0.5: ``rot90`` by k in {0, 1, 2, 3} and a flip along a random in-plane axis;
    otherwise with probability 0.5: rotation by an integer angle in [-20, 20) degrees, image and
    label both nearest-neighbour (``ndimage.rotate(order=0, reshape=False)``); otherwise nothing.
    (The default :func:`rot_flip_rotate` draws k in 1..3, real angles, bilinear images.)

    The draws come from two streams, as the original's: the branch choices from a
    ``random.Random`` (the original calls Python's ``random.random()``), k, axis and angle from a
    NumPy ``RandomState`` (the original's ``np.random.randint``), in the original's order. Both are
    the transform's own (no global state: the training loader reseeds them per item, see
    :mod:`vmunet.data.sampling`); ``set_random_state(seed=s)`` seeds both with ``s``, so the draws
    are those of the original after ``random.seed(s); np.random.seed(s)`` (its ``utils.set_seed``).
    """
    import random

    from monai.transforms import MapTransform, Randomizable
    from monai.utils import MAX_SEED

    class PaperRotFlipRotated(Randomizable, MapTransform):
        def __init__(self) -> None:
            MapTransform.__init__(self, list(KEYS))
            self.branch_random = random.Random()  # until seeded, like MONAI's unseeded self.R

        def set_random_state(self, seed: int | None = None,
                             state: np.random.RandomState | None = None) -> PaperRotFlipRotated:
            super().set_random_state(seed=seed, state=state)  # self.R: np.random.RandomState(seed % 2**32)
            if seed is not None:
                # random.seed(s) seeds Python's MT19937 with s: the original's branch stream
                self.branch_random = random.Random(int(seed) % MAX_SEED)
            elif state is not None:  # one stream given: the branch stream's seed is its first draw
                self.branch_random = random.Random(int(state.randint(MAX_SEED, dtype=np.uint32)))
            else:
                self.branch_random = random.Random()
            return self

        def randomize(self, data: object = None) -> tuple:
            if self.branch_random.random() > 0.5:
                return ("rot_flip", int(self.R.randint(0, 4)), int(self.R.randint(0, 2)))
            if self.branch_random.random() > 0.5:
                return ("rotate", int(self.R.randint(-20, 20)))
            return ("none",)

        def __call__(self, data: dict) -> dict:
            draw = self.randomize()
            out = dict(data)
            for key in self.key_iterator(out):
                x = np.asarray(out[key])
                if draw[0] == "rot_flip":
                    out[key] = rot_flip(x, draw[1], draw[2])
                elif draw[0] == "rotate":
                    out[key] = rotate_nearest(x, draw[1])
            return out

    return [PaperRotFlipRotated()]


def slice_train_transforms(image_size: Sequence[int], *, augment: bool = True, rot_flip: bool = True,
                           rotation: bool = True, degrees: float = 20.0,
                           image_mode: ImageInterp = "bicubic", binary: bool = False,
                           augmentation: Literal["monai", "paper"] = "monai") -> list:
    """Synapse / NIfTI slice training pipeline: augmentation, resize, cast.

    ``augmentation="paper"``: :func:`paper_rot_flip_rotate` (``rot_flip``/``rotation``/``degrees``
    then do not apply); ``"monai"``: :func:`rot_flip_rotate`.
    """
    if augmentation not in ("monai", "paper"):
        raise ValueError(f"augmentation must be 'monai' or 'paper', got {augmentation!r}")
    if not augment:
        aug = []
    elif augmentation == "paper":
        aug = paper_rot_flip_rotate()
    else:
        aug = rot_flip_rotate(rot_flip, rotation, degrees)
    return [*aug, *resize_transforms(image_size, image_mode), *_finish(binary)]


def isic_transforms(image_size: Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                    augment: bool = True, flips: bool = True, rotation: bool = True,
                    paper: bool = False) -> list:
    """ISIC pipeline.

    Default: normalize with the data set's per-channel stats, resize, random h/v flips (p 0.5
    each), random rotation in [0, 360) degrees (p 0.5; image bilinear, mask nearest). Masks stay
    binary 0/1.

    ``paper=True``, VM-UNet's ``train_transformer`` order: per-image min-max to 0..255 (``mean``
    and ``std`` unused: the original's data-set z-score cancels in its min-max), h/v flips, rotation
    with nearest neighbour for image and mask, then resize of image *and mask* bilinearly (the
    mask becomes soft at edges, as the original's ``TF.resize``; metrics threshold it at 0.5);
    computed in float64 as the original (its numpy/torch tensors are float64), cast to float32.
    """
    from monai.transforms import (
        NormalizeIntensityd,
        RandFlipd,
        RandRotated,
        Resized,
        ScaleIntensityd,
    )

    keys = list(KEYS)
    if paper:
        # float64 until the final cast, as the original's numpy/torch float64 chain (engine.py casts
        # to float32 for the model): its float32 resize differed by up to 1e-6 of the value range
        norm = [ScaleIntensityd(keys="image", minv=0.0, maxv=255.0, dtype=np.float64)]
    else:
        norm = [NormalizeIntensityd(keys="image", subtrahend=np.asarray(mean, dtype=np.float32),
                                    divisor=np.asarray(std, dtype=np.float32), channel_wise=True),
                *resize_transforms(image_size, "bilinear")]
    aug = []
    if augment and flips:
        aug += [RandFlipd(keys=keys, prob=0.5, spatial_axis=1), RandFlipd(keys=keys, prob=0.5, spatial_axis=0)]
    if augment and rotation:
        # paper: the sampling grid in float64, as the original's: MONAI's default float32 grid
        # picks the neighbouring pixel where a sample falls within float32 rounding of halfway
        # between two (tests/parity/test_original_isic_transforms.py). RandRotated returns float32.
        # A MONAI angle x is torchvision's -x; over [0, 2 pi) both draws have the same distribution.
        aug.append(RandRotated(keys=keys, range_x=(0.0, 2 * math.pi), prob=0.5, keep_size=True,
                               mode=("nearest", "nearest") if paper else ("bilinear", "nearest"),
                               padding_mode="zeros", dtype=np.float64 if paper else np.float32))
    if not paper:
        return [*norm, *aug, *_finish(binary=True)]
    resize = [Resized(keys=keys, spatial_size=tuple(image_size), mode=("bilinear", "bilinear"), dtype=np.float64)]
    return [*norm, *aug, *resize, *_finish(binary=True)]

"""Synapse multi-organ CT data module (the TransUNet / Swin-Unet / VM-UNet format).

Training: 2D slices from ``train_npz`` (minus ``val_cases`` held-out training cases), augmented
with the TransUNet recipe. Validation: the held-out training cases, volume-wise (their slices
stacked). Test: the ``test_vol_h5`` volumes. See :mod:`vmunet.data.synapse_format` for the layout.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from monai.transforms import Transform

from vmunet.data import synapse_format as SF
from vmunet.data.common import VolumeDataset, transformed_dataset
from vmunet.data.datamodule import (
    SegmentationDataModule,
    check_setting,
    check_split_settings,
    held_out_cases,
)
from vmunet.data.errors import DataError, LayoutError, short_list
from vmunet.data.filecheck import check_files
from vmunet.data.fileio import read_h5_volume, read_json, read_npz_slice
from vmunet.data.preprocessing import SYNAPSE_CLASSES, SYNAPSE_HU_WINDOW, make_preprocessing

log = logging.getLogger(__name__)


class LoadNpzSlice(Transform):
    """Deterministic loading transform: ``{"path"}`` -> image/label (1, H, W). A MONAI
    ``Transform``, so ``cache: true`` (CacheDataset) keeps its output: CacheDataset caches the
    transforms before the first one that is random or not a ``Transform``."""

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image, label = read_npz_slice(item["path"], self.num_labels)
        return {"name": item["name"], "image": image[None], "label": label[None]}


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise LayoutError(f"{path}: list file not found (expected {SF.EXPECTED_LAYOUT})")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: list file is empty")
    return lines


def read_geometry_spacing(path: Path) -> tuple[float, float, float]:
    """Spacing of the (D, H, W) axes from a geometry sidecar, or (1, 1, 1) if there is none."""
    if not path.is_file():
        return (1.0, 1.0, 1.0)
    geom = read_json(path)
    sp = geom.get("spacing_dhw") if isinstance(geom, dict) else None
    if not (isinstance(sp, list) and len(sp) == 3 and all(float(s) > 0 for s in sp)):
        raise DataError(f"{path}: 'spacing_dhw' must be three positive numbers, got {sp!r}")
    return tuple(float(s) for s in sp)  # type: ignore[return-value]


class SynapseDataModule(SegmentationDataModule):
    """Synapse multi-organ CT: 8 organs + background, volume-wise evaluation.

    Args:
        root: folder with ``train_npz/``, ``test_vol_h5/``, ``lists/lists_Synapse/`` (or ``list_Synapse``).
        batch_size: training batch size (evaluation is one volume per item).
        num_workers: DataLoader workers.
        image_size: model input size, int or [H, W] (slices are resized to it).
        augment: master switch of the training augmentation.
        rot_flip: random rot90 + flip branch (p 0.5).
        rotation: random rotation branch (p 0.5 of the rest), within +-``rotation_degrees``.
        rotation_degrees: maximum rotation angle.
        augmentation: ``monai`` (default: MONAI transforms, k in 1..3, real angles, bilinear) or
            ``paper`` (VM-UNet's ``RandomGenerator`` exactly, see
            :func:`vmunet.data.transforms.paper_rot_flip_rotate`).
        image_interpolation: resize mode for images (labels always nearest).
        val_cases: training cases held out for validation (chosen by ``seed``); 0 = no validation.
        seed: seed of the validation-case choice.
        cache: keep loaded slices (MONAI CacheDataset) and evaluation volumes in memory.
        pin_memory: DataLoader pin_memory.
        check_files: read every training/validation slice once before training starts
            (:mod:`vmunet.data.filecheck`; cached), so a bad file fails now, not when first drawn.
    """

    eval_mode = "volume"

    def __init__(
        self,
        root: str,
        batch_size: int = 24,
        num_workers: int = 4,
        image_size: int | tuple[int, int] = 224,
        augment: bool = True,
        rot_flip: bool = True,
        rotation: bool = True,
        rotation_degrees: float = 20.0,
        augmentation: Literal["monai", "paper"] = "monai",
        image_interpolation: Literal["bilinear", "bicubic"] = "bicubic",
        val_cases: int = 2,
        seed: int = 42,
        cache: bool = False,
        pin_memory: bool = False,
        check_files: bool = True,
    ) -> None:
        super().__init__(root, batch_size, num_workers, image_size, pin_memory, eval_batch_size=1)
        self.save_hyperparameters()
        check_split_settings(val_cases, seed)
        check_setting(augmentation in ("monai", "paper"), "augmentation", "'monai' or 'paper'", augmentation)
        check_setting(0 <= rotation_degrees <= 180, "rotation_degrees", "an angle in [0, 180]", rotation_degrees)
        # the folder's top level (cheap; setup reads the lists): a missing or wrong folder is refused
        # while `vmunet fit` builds its classes, before the Trainer and a run folder (as ISIC and NIfTI)
        SF.check_layout(self.root)
        self.class_names = list(SYNAPSE_CLASSES)
        self.num_classes = len(self.class_names)
        self.in_chans = 1
        self.preprocessing = make_preprocessing(
            "synapse", in_chans=1, image_size=self.image_size, class_names=self.class_names,
            num_classes=self.num_classes, intensity={"mode": "window", "window": list(SYNAPSE_HU_WINDOW)},
            orientation="RAS", slice_axis=2, image_interpolation=image_interpolation,
        )
        self.train_slices: list[str] = []
        self.val_case_names: list[str] = []
        self.test_case_names: list[str] = []

    # -- index ------------------------------------------------------------------------------
    def _index_train(self) -> dict[str, list[str]]:
        """Case -> its slice names (train.txt order), after checking the files exist."""
        list_dir = SF.check_layout(self.root)
        names = _read_lines(list_dir / "train.txt")
        train_dir = self.root / SF.TRAIN_DIR
        missing = [n for n in names if not (train_dir / f"{n}.npz").is_file()]
        if missing:
            raise DataError(f"{list_dir / 'train.txt'}: {len(missing)} listed slice(s) have no file "
                            f"in {train_dir}: {short_list(missing)}")
        cases: dict[str, list[str]] = {}
        for n in names:
            cases.setdefault(SF.case_of_slice(n), []).append(n)
        return cases

    def _split(self, cases: dict[str, list[str]]) -> tuple[list[str], list[str]]:
        names = sorted(cases)
        picked = held_out_cases(len(names), self.hparams.val_cases, self.hparams.seed,
                                where=f" in {self.root / SF.TRAIN_DIR}")
        return [c for i, c in enumerate(names) if i not in picked], [names[i] for i in picked]

    def _train_volume(self, case: str, slices: list[str]) -> tuple[np.ndarray, np.ndarray, Any, str]:
        def index(name: str) -> int:
            return int(name.rsplit("_slice", 1)[1])

        pairs = [read_npz_slice(self.root / SF.TRAIN_DIR / f"{n}.npz", self.num_classes)
                 for n in sorted(slices, key=index)]
        shapes = {p[0].shape for p in pairs}
        if len(shapes) > 1:
            raise DataError(f"{self.root / SF.TRAIN_DIR}: slices of {case} have different shapes {sorted(shapes)}")
        image = np.stack([p[0] for p in pairs])
        label = np.stack([p[1] for p in pairs])
        spacing = read_geometry_spacing(self.root / SF.TRAIN_DIR / f"{case}{SF.GEOMETRY_SUFFIX}")
        return image, label, spacing, case

    def _test_volume(self, case: str) -> tuple[np.ndarray, np.ndarray, Any, str]:
        image, label = read_h5_volume(self.root / SF.TEST_DIR / f"{case}{SF.H5_SUFFIX}", self.num_classes)
        spacing = read_geometry_spacing(self.root / SF.TEST_DIR / f"{case}{SF.GEOMETRY_SUFFIX}")
        return image, label, spacing, case

    def _check_train_files(self, names: list[str]) -> None:
        paths = [self.root / SF.TRAIN_DIR / f"{n}.npz" for n in names]
        check_files([(p,) for p in paths], lambda i: read_npz_slice(paths[i], self.num_classes),
                    what="Synapse training/validation slices", signature=f"npz-slice|{self.num_classes}")

    # -- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        from monai.transforms import Compose

        from vmunet.data.transforms import slice_train_transforms

        hp = self.hparams
        if stage in (None, "fit", "validate"):
            cases = self._index_train()
            if hp.check_files:
                self._check_train_files([n for c in cases.values() for n in c])
            train_cases, self.val_case_names = self._split(cases)
            self.train_slices = [n for c in train_cases for n in cases[c]]
            log.info("Synapse: %d training slices from %d cases; validation cases %s",
                     len(self.train_slices), len(train_cases), self.val_case_names)
            items = [{"path": str(self.root / SF.TRAIN_DIR / f"{n}.npz"), "name": n} for n in self.train_slices]
            tf = Compose([LoadNpzSlice(self.num_classes), *slice_train_transforms(
                self.image_size, augment=hp.augment, rot_flip=hp.rot_flip, rotation=hp.rotation,
                degrees=hp.rotation_degrees, image_mode=hp.image_interpolation, augmentation=hp.augmentation)])
            self._ds["train"] = transformed_dataset(items, tf, cache=hp.cache)
            self._ds["val"] = VolumeDataset(
                [functools.partial(self._train_volume, c, cases[c]) for c in self.val_case_names],
                self.image_size, hp.image_interpolation, cache=hp.cache)
        if stage in (None, "test"):
            list_dir = SF.check_layout(self.root)
            self.test_case_names = _read_lines(list_dir / "test_vol.txt")
            missing = [c for c in self.test_case_names
                       if not (self.root / SF.TEST_DIR / f"{c}{SF.H5_SUFFIX}").is_file()]
            if missing:
                raise DataError(f"{list_dir / 'test_vol.txt'}: {len(missing)} listed case(s) have no "
                                f"{SF.H5_SUFFIX} file in {self.root / SF.TEST_DIR}: {short_list(missing)}")
            self._ds["test"] = VolumeDataset(
                [functools.partial(self._test_volume, c) for c in self.test_case_names],
                self.image_size, hp.image_interpolation, cache=hp.cache)

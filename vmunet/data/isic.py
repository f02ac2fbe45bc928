"""ISIC 2017 / 2018 skin-lesion segmentation data module (binary, image-wise evaluation).

Reads the VM-UNet layout (see :mod:`vmunet.data.isic_format`); images and masks are paired by
case id. Normalization uses the data set's own per-channel mean/std from ``<root>/stats.json``
(written by ``vmunet prepare isic``), or computed from the training images when that file is
absent, and is recorded in ``preprocessing`` so inference applies the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from monai.transforms import Transform

from vmunet.data import isic_format as IF
from vmunet.data.common import transformed_dataset
from vmunet.data.datamodule import SegmentationDataModule, check_setting, check_split_settings
from vmunet.data.errors import DataError
from vmunet.data.filecheck import check_files
from vmunet.data.fileio import read_json
from vmunet.data.preprocessing import make_preprocessing

log = logging.getLogger(__name__)


class LoadISICPair(Transform):
    """Deterministic loading transform: ``{"image": path, "label": path, "case"}`` -> arrays.

    image float32 (3, H, W) on the 0..255 scale, label float32 (1, H, W) 0/1. A MONAI
    ``Transform``, so ``cache: true`` (CacheDataset) keeps its output: CacheDataset caches the
    transforms before the first one that is random or not a ``Transform``.
    """

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        pair = IF.Pair(item["case"], Path(item["image"]), Path(item["label"]))
        image, mask = IF.read_pair(pair)
        return {"case": item["case"], "image": image.transpose(2, 0, 1).astype(np.float32),
                "label": mask[None].astype(np.float32)}


def load_stats(path: Path) -> tuple[list[float], list[float]]:
    """Mean/std from a ``stats.json`` written by ``prepare isic``."""
    stats = read_json(path)
    ok = isinstance(stats, dict) and all(
        isinstance(stats.get(k), list) and len(stats[k]) == 3 for k in ("mean", "std"))
    if not ok or min(stats["std"]) <= 0:
        raise DataError(f"{path}: expected {{'mean': [r, g, b], 'std': [r, g, b]}} with std > 0, got {stats!r}")
    return [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]


class ISICDataModule(SegmentationDataModule):
    """ISIC 2017 / 2018 binary lesion segmentation.

    Args:
        root: a folder in the VM-UNet layout (``{train,val[,test]}/{images,masks}/``).
        batch_size: training batch size.
        num_workers: DataLoader workers.
        image_size: model input size (VM-UNet: 256).
        augment: master switch of the training augmentation.
        flips: random horizontal and vertical flips (p 0.5 each).
        rotation: random rotation in [0, 360) degrees (p 0.5).
        normalization: ``dataset`` (default: z-score with the data set's per-channel mean/std) or
            ``paper`` (VM-UNet: per-image min-max to 0..255, augmentation before the resize, see
            :func:`vmunet.data.transforms.isic_transforms`).
        eval_batch_size: batch size of val/test loaders (default: ``batch_size``).
        test_split: ``test`` folder, ``val`` folder (as VM-UNet does), or ``auto`` = test if present.
        seed: kept for a uniform interface (no random split happens here; ``prepare isic`` splits).
        cache: keep decoded images in memory (MONAI CacheDataset).
        pin_memory: DataLoader pin_memory.
        check_files: read every training/validation pair once before training starts
            (:mod:`vmunet.data.filecheck`; cached), so a bad file fails now, not when first drawn.
    """

    eval_mode = "image"

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int = 4,
        image_size: int | tuple[int, int] = 256,
        augment: bool = True,
        flips: bool = True,
        rotation: bool = True,
        normalization: Literal["dataset", "paper"] = "dataset",
        eval_batch_size: int | None = None,
        test_split: Literal["auto", "test", "val"] = "auto",
        seed: int = 42,
        cache: bool = False,
        pin_memory: bool = False,
        check_files: bool = True,
    ) -> None:
        # None (not 0, which the base class rejects) means "as batch_size"
        super().__init__(root, batch_size, num_workers, image_size, pin_memory,
                         eval_batch_size=batch_size if eval_batch_size is None else eval_batch_size)
        self.save_hyperparameters()
        check_split_settings(0, seed)
        check_setting(normalization in ("dataset", "paper"), "normalization", "'dataset' or 'paper'", normalization)
        check_setting(test_split in ("auto", "test", "val"), "test_split", "'auto', 'test' or 'val'", test_split)
        self.class_names = list(IF.CLASS_NAMES)
        self.num_classes = 1
        self.in_chans = 3
        self.splits = IF.vmunet_splits(self.root)
        if normalization == "paper":
            self.mean, self.std = [0.0] * 3, [1.0] * 3  # unused: per-image min-max
            intensity: dict[str, Any] = {"mode": "minmax", "range": [0.0, 255.0]}
        else:
            self.mean, self.std = self._stats()
            intensity = {"mode": "zscore", "mean": self.mean, "std": self.std}
        self.preprocessing = make_preprocessing(
            "isic", in_chans=3, image_size=self.image_size, class_names=self.class_names,
            num_classes=1, intensity=intensity,
            orientation=None, slice_axis=None,
        )

    def _stats(self) -> tuple[list[float], list[float]]:
        path = self.root / IF.STATS_FILE
        if path.is_file():
            return load_stats(path)
        log.info("%s not found: computing mean/std from %d training images (run `vmunet prepare isic` "
                 "to store them)", path, len(self.splits["train"]))
        return IF.channel_stats([IF.read_image(p.image) for p in self.splits["train"]])

    def _dataset(self, split: str, augment: bool):
        from monai.transforms import Compose

        from vmunet.data.transforms import isic_transforms

        hp = self.hparams
        items = [{"case": p.case, "image": str(p.image), "label": str(p.mask)} for p in self.splits[split]]
        tf = Compose([LoadISICPair(), *isic_transforms(self.image_size, self.mean, self.std, augment=augment,
                                                       flips=hp.flips, rotation=hp.rotation,
                                                       paper=hp.normalization == "paper")])
        return transformed_dataset(items, tf, cache=hp.cache)

    @property
    def test_split_name(self) -> str:
        """The folder ``test_dataloader`` reads."""
        choice = self.hparams.test_split
        if choice == "auto":
            return "test" if "test" in self.splits else "val"
        if choice not in self.splits:
            raise DataError(f"{self.root}: test_split={choice!r} but there is no {choice}/ folder")
        return choice

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if hp.check_files and stage in (None, "fit", "validate"):
            pairs = [*(self.splits["train"] if stage != "validate" else []), *self.splits["val"]]
            check_files([(p.image, p.mask) for p in pairs], lambda i: IF.read_pair(pairs[i]),
                        what="ISIC training/validation image-mask pairs", signature="isic-pair")
        if stage in (None, "fit"):
            self._ds["train"] = self._dataset("train", hp.augment)
        if stage in (None, "fit", "validate"):
            self._ds["val"] = self._dataset("val", False)
        if stage in (None, "test"):
            name = self.test_split_name
            if name == "val":
                log.info("ISIC: no test/ folder; testing on val/ (as VM-UNet does)")
            self._ds["test"] = self._dataset(name, False)

"""Generic NIfTI-folder data module (nnU-Net raw layout or Decathlon datalist), sliced 2D.

Each case (one file per channel, nnU-Net's ``<case>_0000``, ``_0001``, ...) is loaded with its
geometry, reoriented to RAS (MONAI ``Orientationd``), intensity-normalized channel by channel as
recorded in ``preprocessing`` (CT: a fixed HU window, or nnU-Net's foreground-percentile scheme;
other modalities: nnU-Net's per-case z-score, optionally inside the nonzero mask) and cut into 2D
slices along ``slice_axis`` (see :func:`vmunet.data.preprocessing.volume_to_slices`).
Preprocessed volumes are cached (MONAI CacheDataset in memory, or PersistentDataset on disk with
``cache_dir``) so epochs do not re-read files. Training samples slices (optionally oversampling
slices that contain foreground); validation (held-out training cases, or the datalist's
``validation``) and test (labelled test cases) are volume-wise.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.transforms import Transform
from torch.utils.data import Dataset

from vmunet.data import nifti_format as NF
from vmunet.data.common import VolumeDataset, transformed_dataset
from vmunet.data.datamodule import (
    SegmentationDataModule,
    check_setting,
    check_split_settings,
    held_out_cases,
)
from vmunet.data.errors import DataError
from vmunet.data.filecheck import check_files
from vmunet.data.fileio import check_image_finite, check_pair
from vmunet.data.preprocessing import (
    foreground_intensity_stats,
    make_preprocessing,
    normalize_channels,
    slicing_axes,
    volume_to_slices,
)
from vmunet.data.volumes import load_volume, read_channels, same_geometry, voxel_sizes
from vmunet.errors import ConfigError

log = logging.getLogger(__name__)


class LoadVolumed(Transform):
    """Read a case's channel files + label with geometry into MetaTensors ``(C, X, Y, Z)`` and
    ``(1, X, Y, Z)``; check they match."""

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor

        first, channels = read_channels(item["images"])  # 3D channels on one grid, or an error naming the file
        img, aff = np.asarray(channels, np.float32), first.affine
        for path, channel in zip(item["images"], img, strict=True):  # the channel file at fault named
            check_image_finite(path, channel)
        out = {"case": item["case"], "image": MetaTensor(img, affine=torch.as_tensor(aff))}
        if item.get("label"):
            lab, laff = load_volume(item["label"])
            where = f"{item['label']} (image {Path(item['images'][0]).name})"
            lab = check_pair(where, img[0], lab, self.num_labels)
            if not same_geometry(aff, laff):
                raise DataError(f"{where}: label geometry (affine) differs from the image's:\n"
                                f"image {np.round(aff, 4).tolist()}\nlabel {np.round(laff, 4).tolist()}")
            out["label"] = MetaTensor(lab[None].astype(np.int16), affine=torch.as_tensor(aff))
        return out


class NormalizeAndSlice(Transform):
    """RAS MetaTensors -> normalized slices: image (C, D, H, W) float32, label (D, H, W) int16,
    ``spacing`` of (D, H, W) in mm and ``fg`` (indices of slices with foreground)."""

    def __init__(self, intensity: dict[str, Any] | list[dict[str, Any]], slice_axis: int) -> None:
        self.intensity, self.slice_axis = intensity, slice_axis

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        img = item["image"]
        sizes = voxel_sizes(np.asarray(img.affine, dtype=np.float64))
        spacing = sizes[slicing_axes(self.slice_axis)].astype(np.float32)
        arr = normalize_channels(np.asarray(img.array), self.intensity)  # per case: nnU-Net's z-score
        out = {"case": item["case"], "spacing": spacing,
               "image": np.ascontiguousarray(volume_to_slices(arr, self.slice_axis))}
        if "label" in item:
            lab = np.ascontiguousarray(volume_to_slices(np.asarray(item["label"].array)[0], self.slice_axis))
            out["label"] = lab
            out["fg"] = np.flatnonzero(lab.reshape(lab.shape[0], -1).any(1))
        return out


class SliceSampler(Dataset):
    """Training slices from cached volumes; with ``foreground_oversample`` p, an item is replaced
    (probability p) by a random foreground slice of a random case. Seeded per item by the training
    loader (``set_random_state``, see :mod:`vmunet.data.sampling`)."""

    def __init__(self, volumes: Any, transform: Any, foreground_oversample: float = 0.0) -> None:
        self.volumes, self.transform, self.p = volumes, transform, float(foreground_oversample)
        self.index = []
        self.fg_index = []
        for v in range(len(volumes)):
            item = volumes[v]
            self.index += [(v, k) for k in range(item["image"].shape[1])]
            self.fg_index += [(v, int(k)) for k in item["fg"]]
        self.R = np.random.RandomState()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        self.R = state if state is not None else np.random.RandomState(seed)
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=seed, state=state)
        return self

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, k = self.index[i]
        if self.p > 0 and self.fg_index and self.R.rand() < self.p:
            v, k = self.fg_index[self.R.randint(len(self.fg_index))]
        vol = self.volumes[v]
        # Copies: MONAI transforms may work in place and must never touch the cached volume.
        item = {"case": vol["case"], "image": vol["image"][:, k].copy(), "label": vol["label"][k][None].copy()}
        return self.transform(item)


class NiftiDataModule(SegmentationDataModule):
    """2D slices of any 3D CT/MR segmentation task in the nnU-Net raw or Decathlon layout.

    Args:
        root: folder with ``dataset.json`` (nnU-Net raw or Decathlon datalist).
        datalist: a datalist JSON elsewhere (paths relative to the JSON's folder).
        batch_size, num_workers, image_size: loader and model-size settings.
        slice_axis: array axis (after reorientation to RAS) slices are taken along; 2 = axial.
        intensity: per input channel, by its ``channel_names``/``modality`` entry. ``auto``: CT
            channels -> ``window``, all others -> ``zscore``. ``window``: clip to ``window`` (HU) and
            scale to [0, 1]. ``ct_percentile``: nnU-Net's CT scheme (clip to the 0.5/99.5 percentiles
            of the training set's foreground voxels, then z-score with their mean and std).
            ``zscore``: nnU-Net's default, each case z-scored with its own mean and std (or the
            fixed ``zscore_stats``). ``none``: raw values.
        window: HU window for ``window`` mode (default: the abdominal soft-tissue window).
        zscore_stats: fixed (mean, std) for ``zscore`` instead of each case's own statistics.
        use_mask_for_norm: ``zscore`` per case computes mean and std inside the nonzero mask (any
            channel nonzero, holes filled) and leaves the outside at 0 -- nnU-Net's
            ``use_mask_for_norm`` for images with a zero background (skull-stripped brain MR).
        augment, rot_flip, rotation, rotation_degrees, image_interpolation: as Synapse.
        foreground_oversample: probability that a training item is a random foreground slice.
        val_cases: training cases held out for validation when the data set has no validation list.
        seed: seed of the validation-case choice.
        cache: cache preprocessed volumes in memory (MONAI CacheDataset).
        cache_dir: cache them on disk instead (MONAI PersistentDataset).
        pin_memory: DataLoader pin_memory.
        check_files: read every training/validation case once before training starts
            (:mod:`vmunet.data.filecheck`; cached), so a bad file fails now, not when first drawn.
    """

    eval_mode = "volume"

    def __init__(
        self,
        root: str,
        datalist: str | None = None,
        batch_size: int = 16,
        num_workers: int = 4,
        image_size: int | tuple[int, int] = 224,
        slice_axis: int = 2,
        intensity: Literal["auto", "window", "ct_percentile", "zscore", "none"] = "auto",
        window: tuple[float, float] = (-125.0, 275.0),
        zscore_stats: tuple[float, float] | None = None,
        use_mask_for_norm: bool = False,
        augment: bool = True,
        rot_flip: bool = True,
        rotation: bool = True,
        rotation_degrees: float = 20.0,
        image_interpolation: Literal["bilinear", "bicubic"] = "bilinear",
        foreground_oversample: float = 0.0,
        val_cases: int = 2,
        seed: int = 42,
        cache: bool = True,
        cache_dir: str | None = None,
        pin_memory: bool = False,
        check_files: bool = True,
    ) -> None:
        super().__init__(root, batch_size, num_workers, image_size, pin_memory, eval_batch_size=1)
        self.save_hyperparameters()
        check_setting(slice_axis in (0, 1, 2), "slice_axis", "0, 1 or 2", slice_axis)
        check_setting(0.0 <= foreground_oversample <= 1.0, "foreground_oversample", "a probability in [0, 1]",
                      foreground_oversample)
        check_split_settings(val_cases, seed)
        modes = ("auto", "window", "ct_percentile", "zscore", "none")
        check_setting(intensity in modes, "intensity", " | ".join(modes), intensity)
        check_setting(0 <= rotation_degrees <= 180, "rotation_degrees", "an angle in [0, 180]", rotation_degrees)
        check_setting(len(window) == 2 and window[0] < window[1], "window", "[low, high] with low < high", window)
        check_setting(zscore_stats is None or (len(zscore_stats) == 2 and zscore_stats[1] > 0), "zscore_stats",
                      "[mean, std] with std > 0", zscore_stats)
        check_setting(cache_dir is None or not Path(cache_dir).exists() or Path(cache_dir).is_dir(), "cache_dir",
                      "a folder (created if missing), not a file", cache_dir)
        self.index = NF.index_folder(self.root, datalist)
        self.class_names = list(self.index.class_names)
        self.num_classes = len(self.class_names)
        self.in_chans = len(self.index.channels)
        self.train_cases, self.val_cases = self._split()
        self.preprocessing = make_preprocessing(
            "nifti", in_chans=self.in_chans, image_size=self.image_size, class_names=self.class_names,
            num_classes=self.num_classes, intensity=self._intensity(), orientation="RAS",
            slice_axis=slice_axis, image_interpolation=image_interpolation,
        )

    def _split(self) -> tuple[list[NF.Case], list[NF.Case]]:
        if self.index.val:
            return self.index.train, self.index.val
        cases = self.index.train
        picked = held_out_cases(len(cases), self.hparams.val_cases, self.hparams.seed)
        return ([c for i, c in enumerate(cases) if i not in picked],
                [c for i, c in enumerate(cases) if i in picked])

    def _intensity(self) -> dict[str, Any] | list[dict[str, Any]]:
        """The intensity record: one dict for all channels when they agree, else one per channel."""
        hp = self.hparams
        modes = []
        for modality in self.index.channels:
            mode = hp.intensity
            if mode == "auto":
                mode = "window" if "CT" in modality.upper() else "zscore"
            modes.append(mode)
        log.info("NIfTI: channels %s -> %s normalization", self.index.channels, modes)
        if hp.zscore_stats is not None and "zscore" not in modes:
            # a fixed statistics setting no channel uses would be silently ignored
            raise ConfigError(f"data.zscore_stats is set, but no channel is z-scored (channels "
                              f"{self.index.channels} -> {modes}); expected data.intensity: zscore with it")
        ct_stats = self._foreground_stats() if "ct_percentile" in modes else None
        records = []
        for c, mode in enumerate(modes):
            if mode == "window":
                records.append({"mode": "window", "window": [float(v) for v in hp.window]})
            elif mode == "none":
                records.append({"mode": "none"})
            elif mode == "ct_percentile":
                st = ct_stats[c]
                records.append({"mode": "ct_percentile", "clip": [st["percentile_00_5"], st["percentile_99_5"]],
                                "mean": st["mean"], "std": st["std"]})
            elif hp.zscore_stats is not None:
                mean, std = hp.zscore_stats
                records.append({"mode": "zscore", "mean": float(mean), "std": float(std)})
            else:
                records.append({"mode": "zscore_case", "use_mask": bool(hp.use_mask_for_norm)})
        return records[0] if all(r == records[0] for r in records) else records

    def _foreground_stats(self) -> list[dict[str, float]]:
        """nnU-Net's CT intensity fingerprint of the training cases, per channel."""
        def cases():
            for c in self.train_cases:
                yield read_channels(c.images)[1], load_volume(c.label)[0]

        stats = foreground_intensity_stats(cases())
        for modality, st in zip(self.index.channels, stats, strict=True):
            log.info("NIfTI: %s foreground intensities of %d training cases: mean %.4g, std %.4g, "
                     "0.5/99.5 percentiles %.4g / %.4g", modality, len(self.train_cases), st["mean"], st["std"],
                     st["percentile_00_5"], st["percentile_99_5"])
        return stats

    def _volumes(self, cases: list[NF.Case]):
        from monai.transforms import Compose, Orientationd

        items = self._items(cases)
        # Explicit RAS labels: MONAI is changing the default axis labels of Orientationd.
        ras = Orientationd(keys=["image", "label"], axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")),
                           allow_missing_keys=True)
        tf = Compose([LoadVolumed(self.num_classes), ras,
                      NormalizeAndSlice(self.preprocessing["intensity"], self.hparams.slice_axis)])
        return transformed_dataset(items, tf, cache=self.hparams.cache, cache_dir=self.hparams.cache_dir)

    @staticmethod
    def _items(cases: list[NF.Case]) -> list[dict[str, Any]]:
        return [{"case": c.name, "images": [str(p) for p in c.images], "label": str(c.label) if c.label else ""}
                for c in cases]

    def _eval(self, cases: list[NF.Case]) -> VolumeDataset:
        vols = self._volumes(cases)

        def load(i: int):
            v = vols[i]
            return np.moveaxis(np.asarray(v["image"]), 0, 1), v["label"], v["spacing"], v["case"]  # (D, C, H, W)

        return VolumeDataset([functools.partial(load, i) for i in range(len(cases))], self.image_size,
                             self.hparams.image_interpolation)

    def setup(self, stage: str | None = None) -> None:
        from monai.transforms import Compose

        from vmunet.data.transforms import slice_train_transforms

        hp = self.hparams
        self._check_model_channels()
        if hp.check_files and stage in (None, "fit", "validate"):
            cases = [*(self.train_cases if stage != "validate" else []), *self.val_cases]
            items = self._items(cases)
            check_files([[*c.images, *([c.label] if c.label else [])] for c in cases],
                        lambda i: LoadVolumed(self.num_classes)(items[i]),
                        what="NIfTI training/validation cases", signature=f"nifti-case|{self.num_classes}")
        if stage in (None, "fit"):
            tf = Compose(slice_train_transforms(self.image_size, augment=hp.augment, rot_flip=hp.rot_flip,
                                                rotation=hp.rotation, degrees=hp.rotation_degrees,
                                                image_mode=hp.image_interpolation))
            self._ds["train"] = SliceSampler(self._volumes(self.train_cases), tf, hp.foreground_oversample)
            log.info("NIfTI: %d training slices from %d cases; validation cases %s", len(self._ds["train"]),
                     len(self.train_cases), [c.name for c in self.val_cases])
        if stage in (None, "fit", "validate"):
            self._ds["val"] = self._eval(self.val_cases)
        if stage in (None, "test"):
            if not self.index.test:
                raise DataError(f"{self.root}: no labelled test cases (nnU-Net: imagesTs/ with labelsTs/; "
                                "datalist: 'test' entries with a 'label')")
            self._ds["test"] = self._eval(self.index.test)

    def _check_model_channels(self) -> None:
        """The model must take the data set's channels (``vmunet fit`` links them; a checkpoint or
        a module built by hand may not)."""
        model = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        model_chans = getattr(getattr(model, "hparams", None), "get", lambda _k: None)("in_chans")
        if model_chans is not None and int(model_chans) != self.in_chans:
            raise DataError(f"{self.index.source}: declares {self.in_chans} input channel(s) {self.index.channels}, "
                            f"but the model takes {model_chans} (model.in_chans); train a model with "
                            f"in_chans={self.in_chans} for this data set")

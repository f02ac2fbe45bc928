"""Slice-by-slice prediction of whole scans with a trained 2D model.

:class:`Predictor` wraps any ``nn.Module`` that maps ``(B, C, H, W)`` to logits ``(B, K, H, W)``
plus the preprocessing record it was trained with (``vmunet.data.preprocessing``); the usual
constructor is :meth:`Predictor.from_checkpoint`.

Slice convention: the project's one, :func:`vmunet.data.preprocessing.volume_to_slices` (slice axis
first, in-plane axes reversed), so an axial slice of the RAS volume ``(X, Y, Z)`` is an image with
rows along Y and columns along X -- exactly ``h5["image"][z]`` of Synapse ``test_vol_h5``.

Each case is intensity-normalized channel by channel as training did
(:func:`vmunet.data.preprocessing.normalize_channels`: per-case statistics come from the whole
case, not the slice; not Synapse h5 images: they are stored already windowed) and
segmented by the project's one slice inferer, :class:`vmunet.inference.slicewise.SliceInferer`
(the same as validation and ``vmunet test``): resized to ``image_size`` (the record's
``image_interpolation``), run through the model (optionally with flip TTA, averaged on
probabilities), probabilities resized back to the native in-plane size and turned into labels by
the record's decision rule (argmax; ``p >= threshold`` for a single-output binary model).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vmunet.data.preprocessing import (
    apply_intensity,
    normalize_channels,
    slices_to_volume,
    validate_preprocessing,
    volume_to_slices,
)
from vmunet.errors import ConfigError
from vmunet.inference import io
from vmunet.inference.slicewise import SliceInferer, check_model_input_size
from vmunet.models.checkpoint import (
    CheckpointError,
    checkpoint_record,
    model_from_checkpoint,
    read_checkpoint_with_sha256,
)
from vmunet.models.safe_load import read_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Result of :meth:`Predictor.predict_volume` / :meth:`Predictor.predict_scan`.

    ``labels``: label map in the layout of the input file, with its number of axes: what
    :meth:`Predictor.predict_file` writes (the input array itself for numpy inputs; ``(X, Y)`` for
    a 2D MetaImage/NRRD/NIfTI file, :attr:`vmunet.inference.io.Scan.plane_axis`).
    ``labels_oriented``: the same laid out like ``scan.array`` (RAS for volumes; ``(X, Y, 1)`` for
    a 2D file, read as one slice). ``probabilities``: float16 ``(C, ...)`` in the layout of
    ``labels``, or None.

    Sizes of the predicted classes: :meth:`volumes_ml` for volumes, :meth:`areas_mm2` for a single
    2D image (a 2D file or a single-frame DICOM series, :attr:`~vmunet.inference.io.Scan.plane_axis`:
    one image has no slice thickness; its "volume" would be an area times a nominal 1 mm, or times
    the DICOM's SpacingBetweenSlices). :attr:`size_unit` says which applies. Where the file states no
    pixel spacing (``scan.spacing_known`` False: a DICOM without PixelSpacing, an NRRD / MetaImage
    header without spacing; warned at read), both
    are pixel counts x GDCM's nominal 1 mm.
    """

    labels: np.ndarray
    labels_oriented: np.ndarray
    probabilities: np.ndarray | None
    probabilities_oriented: np.ndarray | None
    scan: io.Scan
    num_slices: int
    seconds: float
    class_names: list[str] = field(default_factory=list)
    #: NaN/inf voxels replaced (``fill_nonfinite``); 0 when the scan had none
    nonfinite_filled: int = 0

    @property
    def size_unit(self) -> str | None:
        """How the class sizes of this prediction are measured: ``"volumes_ml"`` (a volume),
        ``"areas_mm2"`` (a single 2D image: a 2D file or a single-frame DICOM series), None (a
        png/jpg image or a 2D array: no physical spacing). The name of the method to call."""
        if not self.scan.is_volume:
            return None
        return "areas_mm2" if self.scan.plane_axis is not None else "volumes_ml"

    def _class_sizes(self, unit: str) -> dict[str, float]:
        """Foreground voxel (pixel) count of each class x the voxel volume (pixel area), in ``unit``."""
        if self.size_unit != unit:
            what = {"volumes_ml": "a volume (its sizes: volumes_ml())",
                    "areas_mm2": "a single 2D image (2D file or single-frame DICOM), without a slice thickness "
                                 "(its sizes: areas_mm2())",
                    None: "a 2D image without physical pixel spacing (png/jpg or array: count the pixels of labels)"}
            raise ValueError(f"{self.scan.path or self.scan.name}: {unit}() does not apply, the prediction is of "
                             f"{what[self.size_unit]}")
        image, spacing = self.scan.as_image(self.labels_oriented)
        per_voxel = float(np.prod(spacing)) / (1000.0 if unit == "volumes_ml" else 1.0)  # mm^3 -> ml
        counts = np.bincount(image.ravel(), minlength=len(self.class_names))
        return {name: float(counts[i]) * per_voxel for i, name in enumerate(self.class_names) if i > 0}

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each foreground class in millilitres (voxel count x voxel volume); a single 2D
        image has none (ValueError: see :meth:`areas_mm2`)."""
        return self._class_sizes("volumes_ml")

    def areas_mm2(self) -> dict[str, float]:
        """Area of each foreground class of a single 2D image (2D file, single-frame DICOM) in mm^2 (pixel count x the product of its two
        pixel spacings); anything else is refused (ValueError)."""
        return self._class_sizes("areas_mm2")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device {device!r}: expected auto, cpu, cuda or cuda:N ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available (use --device cpu or auto)")
    return dev


def check_class_counts(record: Mapping[str, Any], preprocessing: Mapping[str, Any], where: str) -> None:
    """The model's output channels (``model_kwargs['num_classes']``) must be what the preprocessing
    record decides on (``num_classes``: 1 for a binary sigmoid model, else one per class name);
    checked at load, not discovered case by case."""
    model_nc = dict(record.get("model_kwargs") or {}).get("num_classes")
    if model_nc is not None and int(model_nc) != int(preprocessing["num_classes"]):
        raise CheckpointError(
            f"checkpoint {where}: the model has {model_nc} output class(es) (ckpt['vmunet']['model_kwargs']"
            f"['num_classes']) but its preprocessing record expects {preprocessing['num_classes']} "
            f"(class_names {preprocessing['class_names']})")


#: Smallest in-plane slice size (voxels) segmented; anything smaller is a degenerate or mis-sliced
#: scan (a 1 x 1 x 5000 file would otherwise run 5000 forward passes of upsampled single voxels).
MIN_INPLANE = 8
#: ``fill_nonfinite`` keyword meaning "the lower bound of the record's intensity window".
WINDOW_MIN = "window-min"


#: Names of the planes perpendicular to each RAS axis.
PLANES = ("sagittal", "coronal", "axial")


def _check_inplane(where: Any, shape: tuple[int, ...], inplane_axes: list[int]) -> None:
    size = [int(shape[a]) for a in inplane_axes]
    if min(size) < MIN_INPLANE:
        slice_axis = ({0, 1, 2} - set(inplane_axes)).pop()
        thin = [a for a in inplane_axes if shape[a] == 1]
        why = "expected slices of an image, not a degenerate or mis-oriented file"
        if len(thin) == 1 and min(int(shape[a]) for a in range(3) if a != thin[0]) >= MIN_INPLANE:
            # one image (a single-frame DICOM, a 2D file) in another plane than the model's slices
            why = (f"the scan is a single {PLANES[thin[0]]} image (one voxel along RAS axis {thin[0]}), but this "
                   f"model segments {PLANES[slice_axis]} slices (slice_axis {slice_axis}); expected a scan with "
                   f"{PLANES[slice_axis]} slices")
        raise io.ScanReadError(
            f"{where}: in-plane size {size[0]} x {size[1]} (array shape {tuple(shape)}) is below the minimum "
            f"of {MIN_INPLANE} voxels; {why}")


class Predictor:
    """Segment volumes slice by slice (or 2D images) with a 2D model and its preprocessing record.

    Args:
        model: maps ``(B, in_chans, H, W)`` to logits ``(B, num_classes, H, W)``.
        preprocessing: the record the model was trained with (validated here).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        batch_size: slices per forward pass.
        tta: average the probabilities of the four in-plane flips.
        model_in_chans: channels the model takes when it differs from ``preprocessing["in_chans"]``
            (a 1-channel record fed to a 3-channel model repeats the channel).
        info: extra facts recorded in sidecars (model name, checkpoint path and hash, ...).
        fill_nonfinite: ``None`` (default) refuses a scan holding NaN or infinite values, naming
            the file and their count; a number (raw intensity units, e.g. HU) or ``"window-min"``
            (the record's window lower bound) replaces them before normalization, with a warning.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Mapping[str, Any],
        *,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        tta: bool = False,
        model_in_chans: int | None = None,
        info: Mapping[str, Any] | None = None,
        fill_nonfinite: float | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.preprocessing = validate_preprocessing(preprocessing)
        self.fill_nonfinite = fill_nonfinite
        self._fill_raw = self._fill_value(fill_nonfinite)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.tta = bool(tta)
        self.model_in_chans = int(model_in_chans or self.preprocessing["in_chans"])
        self.inferer = SliceInferer.from_record(self.preprocessing, batch_size=self.batch_size, tta=self.tta,
                                                in_chans=self.model_in_chans)
        self.info = dict(info or {})

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | torch.device = "auto", **kwargs: Any) -> Predictor:
        """Rebuild the model from a vmunet checkpoint (``ckpt["vmunet"]``) and load its weights."""
        if not Path(path).is_file():  # missing, or a folder: read_checkpoint's one-line error names it
            read_checkpoint(path)
        ckpt, sha256 = read_checkpoint_with_sha256(path)  # outputs are reused by this hash
        record = checkpoint_record(ckpt, str(path))
        if record.get("preprocessing") is None:
            raise CheckpointError(
                f"checkpoint {path} has no preprocessing record (ckpt['vmunet']['preprocessing']); "
                "inference needs it for orientation, slice axis, intensity and image size -- "
                "train with vmunet >= 0.1 or add the record to the checkpoint"
            )
        check_class_counts(record, validate_preprocessing(record["preprocessing"]), str(path))
        model, _ = model_from_checkpoint(ckpt, where=str(path))
        check_model_input_size(model, record["preprocessing"]["image_size"],
                               f"checkpoint {path}: preprocessing image_size")
        model_kwargs = dict(record["model_kwargs"])
        info = {
            "model_name": record["model_name"],
            "model_kwargs": model_kwargs,
            "checkpoint": str(Path(path).resolve()),
            "checkpoint_sha256": sha256,
            "vmunet_version": record.get("version"),
        }
        return cls(model, record["preprocessing"], device=device, model_in_chans=model_kwargs.get("in_chans"),
                   info=info, **kwargs)

    def _fill_value(self, fill: float | str | None) -> float | None:
        """The raw intensity that replaces non-finite voxels (None: refuse such scans)."""
        if fill is None:
            return None
        if fill == WINDOW_MIN:
            intensity = self.preprocessing["intensity"]
            if not isinstance(intensity, dict) or intensity["mode"] != "window":
                mode = intensity["mode"] if isinstance(intensity, dict) else [i["mode"] for i in intensity]
                raise ConfigError(f"fill_nonfinite {WINDOW_MIN!r} needs an intensity window, but this model's "
                                  f"record has intensity mode {mode!r}; give a number instead")
            return float(intensity["window"][0])
        try:
            value = float(fill)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            raise ConfigError(f"fill_nonfinite: expected a finite number or {WINDOW_MIN!r}, got {fill!r}")
        return value

    def _finite(self, array: np.ndarray, scan: io.Scan, axis: int | None) -> tuple[np.ndarray, int]:
        """``array`` with no NaN/inf left, and how many voxels were filled; refuses them by default.
        A NaN survives clipping and comes out of the model as background: never let it pass silently."""
        if not np.issubdtype(array.dtype, np.floating):
            return array, 0
        finite = np.isfinite(array)
        count = int(finite.size - np.count_nonzero(finite))
        if count == 0:
            return array, 0
        where = scan.path or scan.name
        unit = "voxel(s)" if scan.is_volume else "pixel value(s)"
        on = ""
        if axis is not None:
            bad_slices = int(np.count_nonzero(~finite.all(axis=tuple(a for a in range(finite.ndim) if a != axis))))
            on = f" on {bad_slices} slice(s)"
        if self._fill_raw is None:
            raise io.ScanReadError(
                f"{where}: {count} non-finite {unit} (NaN or infinite){on}; refusing to segment it "
                f"(fix the scan, or fill them explicitly with --fill-nonfinite VALUE|{WINDOW_MIN})")
        value = self._fill_raw
        if scan.normalized:  # stored already windowed: the fill value goes through the same window
            value = float(apply_intensity(np.float32(value), self.preprocessing["intensity"]))
        log.warning("%s: filled %d non-finite %s%s with %g (fill_nonfinite=%s)", where, count, unit, on, value,
                    self.fill_nonfinite)
        return np.where(finite, array, np.asarray(value, dtype=array.dtype)), count

    @property
    def class_names(self) -> list[str]:
        return list(self.preprocessing["class_names"])

    # ------------------------------------------------------------------ core
    @torch.inference_mode()
    def _run_slices(self, slices: np.ndarray, keep_probs: bool, progress: Any = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, C, h, w)`` -> labels ``(N, h, w)`` and optionally float16 probabilities ``(K, N, h, w)``."""
        out = self.inferer(self.model, slices, keep_probabilities=keep_probs, device=self.device,
                           label_dtype=io.label_dtype(len(self.class_names)), progress=progress)
        return out.labels, out.probabilities

    # ------------------------------------------------------------------ public API
    def read(self, source: str | os.PathLike | Sequence[str | os.PathLike], name: str | None = None) -> io.Scan:
        """Read a scan file/folder, or the channel files of one case, the way this model needs it
        (orientation from the record)."""
        return io.read_case(source, orientation=self.preprocessing["orientation"], name=name)

    def predict_volume(self, volume: Any, *, return_probabilities: bool = False, progress: bool = False) -> Prediction:
        """Segment a volume: a numpy array (already in the model's orientation), a SimpleITK
        image, or a path to a scan. The label map comes back in the input's original layout."""
        if isinstance(volume, (str, os.PathLike)):
            scan = self.read(volume)
        elif isinstance(volume, np.ndarray):
            arr = volume
            kind = "array" if arr.ndim == 3 else "image"
            scan = io.Scan("array", None, kind, arr, np.eye(4), None, arr.shape)
        elif type(volume).__module__.startswith("SimpleITK"):
            scan = io._from_sitk(Path("<SimpleITK image>"), volume, "image")
            if self.preprocessing["orientation"] == "RAS":
                scan = io._to_ras(scan)
        else:
            raise TypeError(f"predict_volume takes a path, numpy array or SimpleITK image, got {type(volume).__name__}")
        return self.predict_scan(scan, return_probabilities=return_probabilities, progress=progress)

    def _slices(self, scan: io.Scan) -> tuple[np.ndarray, int | None, int]:
        """Normalized slices ``(N, C, h, w)`` of a scan, the RAS axis they came from (None for 2D)
        and the number of non-finite values filled."""
        pp = self.preprocessing
        where = scan.path or scan.name
        if scan.is_volume:
            if pp["slice_axis"] is None:
                raise io.ScanReadError(f"{where}: this model takes 2D images ({', '.join(io.IMAGE_EXTS)}; slice_axis "
                                       f"is null), got a scan read as a volume of shape {scan.array.shape[:3]}")
            if scan.array.ndim not in (3, 4):
                raise io.ScanReadError(f"{where}: expected a 3D volume, got shape {scan.array.shape}")
            chans = 1 if scan.array.ndim == 3 else scan.array.shape[-1]
            if chans != pp["in_chans"]:
                files = (f"; nnU-Net naming: {scan.name}_0000 ... _{pp['in_chans'] - 1:04d}"
                         if pp["in_chans"] > 1 else "")
                raise io.ScanReadError(f"{where}: this model takes {pp['in_chans']}-channel volumes, got {chans} "
                                       f"channel(s){files}")
            _check_inplane(where, scan.array.shape, [a for a in range(3) if a != pp["slice_axis"]])
            arr, filled = self._finite(scan.array, scan, pp["slice_axis"])
            channels = arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)  # (C, X, Y, Z)
            # Synapse h5 images are stored after the intensity window: applying it twice would be wrong
            norm = channels.astype(np.float32) if scan.normalized else normalize_channels(channels, pp["intensity"])
            return np.moveaxis(volume_to_slices(norm, pp["slice_axis"]), 0, 1), pp["slice_axis"], filled
        arr = scan.array
        if arr.ndim == 2 and pp["in_chans"] == 3:  # as training reads a grayscale image: R = G = B
            arr = np.repeat(arr[..., None], 3, axis=-1)
        chans = 1 if arr.ndim == 2 else arr.shape[-1]
        if pp["slice_axis"] is not None:
            raise io.ScanReadError(f"{where}: this model segments 3D volumes (slice_axis {pp['slice_axis']}), got a 2D image")
        if chans != pp["in_chans"]:
            raise io.ScanReadError(f"{where}: this model takes {pp['in_chans']}-channel images, got {chans} channel(s) (shape {arr.shape})")
        _check_inplane(where, arr.shape, [0, 1])
        arr, filled = self._finite(arr, scan, None)
        img = apply_intensity(arr, pp["intensity"], channel_axis=None if arr.ndim == 2 else -1)
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        return img[None], None, filled

    def predict_scan(self, scan: io.Scan, *, return_probabilities: bool = False, progress: bool = False) -> Prediction:
        """Segment a :class:`~vmunet.inference.io.Scan` (from :func:`vmunet.inference.io.read_scan`)."""
        t0 = time.perf_counter()
        slices, axis, filled = self._slices(scan)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=slices.shape[0], desc=f"  {scan.name}", unit="slice", leave=False)
        try:
            labels, probs = self._run_slices(slices, return_probabilities, bar)
        finally:
            if bar is not None:
                bar.close()
        if axis is None:
            lab_o = labels[0]
            prob_o = None if probs is None else probs[:, 0]
            lab, prob = lab_o, prob_o
        else:
            lab_o = np.ascontiguousarray(slices_to_volume(labels, axis))
            prob_o = None if probs is None else np.ascontiguousarray(slices_to_volume(probs, axis))
            lab = scan.to_file(lab_o)  # as written: a 2D file's label map is 2D
            prob = None if prob_o is None else np.moveaxis(scan.to_file(np.moveaxis(prob_o, 0, -1)), -1, 0)
        return Prediction(lab, lab_o, prob, prob_o, scan, int(slices.shape[0]), time.perf_counter() - t0,
                          self.class_names, nonfinite_filled=filled)

    def predict_file(
        self,
        in_path: str | os.PathLike | Sequence[str | os.PathLike],
        out_path: str | os.PathLike,
        *,
        probabilities_path: str | os.PathLike | None = None,
        progress: bool = False,
        name: str | None = None,
    ) -> Prediction:
        """Read a scan (or the channel files of one case), segment it and write the label map
        (input geometry) to ``out_path`` (``.nii.gz`` for volumes, ``.png`` for 2D images);
        optionally the float16 probabilities (``.npz``). Both are written atomically."""
        inputs = [in_path] if isinstance(in_path, (str, os.PathLike)) else list(in_path)
        out_path = Path(out_path)
        if any(out_path.resolve() == Path(p).resolve() for p in inputs):
            raise ValueError(f"output {out_path} would overwrite the input; choose another folder or suffix")
        scan = self.read(in_path, name=name)
        pred = self.predict_scan(scan, return_probabilities=probabilities_path is not None, progress=progress)
        io.write_label_map(scan, pred.labels_oriented, out_path)
        if probabilities_path is not None:
            io.write_probabilities(scan, pred.probabilities_oriented, self.class_names, probabilities_path)
        return pred

"""Read scans with their geometry, write label maps back in exactly that geometry.

Every reader returns a :class:`Scan`: the voxel array reoriented to RAS (nibabel's closest
canonical orientation, the same as MONAI ``Orientation(axcodes="RAS")`` after ``LoadImage``) plus
what is needed to undo that and to write a result with the input's shape, spacing, origin,
direction and -- for NIfTI inputs -- the very same header (qform/sform and their codes).

Supported inputs:

* NIfTI (``.nii``, ``.nii.gz``) through nibabel, so header codes survive the round trip;
* anything else SimpleITK reads (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, a DICOM series folder);
* Synapse ``test_vol_h5/<case>.npy.h5`` (``image``/``label`` arrays in DHW layout) with the
  ``<case>.geometry.json`` sidecar; without the sidecar the geometry is the identity (warned).
  Their images are stored already windowed to [0, 1], so the scan is marked ``normalized``;
* 2D images (``.png``, ``.jpg``, ...) for ISIC-type models, through Pillow.

Volumes (NIfTI, SimpleITK formats, DICOM) are read by the project's one scan I/O layer,
:mod:`vmunet.data.volumes`, the same as training: case-insensitive suffixes, single-channel 3D
files (a trailing axis of size 1 is dropped; other 4D files are refused).

Cases follow nnU-Net's naming (:func:`group_cases`, the rule of :mod:`vmunet.data.channels`):
``case_0000.nii.gz`` is case ``case``; with a multi-channel model ``case_0000``, ``case_0001``,
... are the channels of one case (:func:`read_case` stacks them on a trailing axis).

"Original layout" below means the voxel index order of the file, ``[i, j, k]`` (nibabel's array
order; for SimpleITK images ``GetArrayFromImage(img).transpose(2, 1, 0)``; for h5 cases the shape
of the raw file named by the sidecar). Label maps are written in that layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data import volumes
from vmunet.data.channels import CaseFiles, group_channels
from vmunet.data.errors import DataError, short_list
from vmunet.data.fileio import atomic_path, hash_file, read_json
from vmunet.errors import first_line

log = logging.getLogger(__name__)

NIFTI_EXTS = volumes.NIFTI_SUFFIXES
SITK_EXTS = volumes.SITK_SUFFIXES
H5_EXTS = (".npy.h5", ".h5")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SCAN_EXTS = NIFTI_EXTS + SITK_EXTS + H5_EXTS + IMAGE_EXTS
#: Prefix of temporary files written next to outputs; such leftovers never count as results.
TEMP_PREFIX = ".vmunet-tmp-"


class ScanReadError(DataError):
    """An input scan could not be read or is not what the model expects (names the file)."""


@dataclass
class Scan:
    """A volume (or 2D image) ready for slicing, with what it takes to write results back.

    ``array``: RAS-oriented ``(X, Y, Z)`` volume (file layout if read with ``orientation=None``);
    ``(H, W)`` or ``(H, W, C)`` for 2D images. ``affine``: voxel -> RAS mm of ``array``.
    ``ornt``: nibabel orientation transform taking the original layout to ``array``.
    """

    name: str
    path: Path | None
    kind: str  # "nifti" | "sitk" | "h5" | "image" | "array"
    array: np.ndarray
    affine: np.ndarray
    ornt: np.ndarray | None
    original_shape: tuple[int, ...]
    template: Any = field(default=None, repr=False)  # nibabel header / sitk geometry / h5 affine
    #: True when intensities are already model-ready (Synapse h5 images are stored windowed to [0, 1])
    normalized: bool = False
    #: True for a single-frame DICOM series (one 2D image: see :attr:`plane_axis`), or the label map
    #: ``vmunet predict`` wrote for one (its sidecar reports areas), read back to be scored
    single_frame: bool = False
    #: False when the file states no physical pixel spacing and the reader's nominal 1.0 mm stands in
    #: (a DICOM without PixelSpacing / ImagerPixelSpacing, or with ``0\0``: :func:`_read_dicom`; an NRRD /
    #: MetaImage header without a spacing field: :func:`_header_states_spacing`); its
    #: sizes are then pixel counts and distances pixels. Files that cannot tell (a NIfTI pixdim of 1,
    #: a png) keep True: only a detectable absence is recorded.
    spacing_known: bool = True

    @property
    def is_volume(self) -> bool:
        return self.kind != "image"

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size (mm) along each axis of ``array`` (1.0 for 2D images)."""
        if not self.is_volume:
            return (1.0, 1.0)
        return tuple(float(s) for s in volumes.voxel_sizes(self.affine))

    def to_original(self, data: np.ndarray) -> np.ndarray:
        """Undo the reorientation: an array laid out like ``array`` (extra trailing axes allowed)
        comes back in the file's original layout."""
        if self.ornt is None:
            return data
        return volumes.from_ras(data, self.ornt)

    @property
    def plane_axis(self) -> int | None:
        """For a single 2D image read as one slice, the axis of ``array`` that holds it; None for
        every other scan (volumes, png/jpg images, numpy arrays). A single 2D image is

        * a 2D MetaImage/NRRD/NIfTI file: its third axis, of 1 voxel and a nominal 1 mm, is not in
          the file;
        * a single-frame DICOM series (one file of one frame: a CR/DX radiograph, one CT slice):
          GDCM reads it as a 3D image whose third spacing is SpacingBetweenSlices (0018,0088), or
          1.0 when absent -- never the slice thickness -- so area x that spacing is no volume.

        Sizes and ``--reference`` metrics are taken on that image (:meth:`as_image`)."""
        if self.kind not in ("nifti", "sitk"):
            return None
        if volumes.file_ndim(self.template) != 2 and not self.single_frame:
            return None
        return 2 if self.ornt is None else int(self.ornt[2, 0])  # ornt[i, 0]: where file axis i went

    def to_file(self, data: np.ndarray) -> np.ndarray:
        """An array laid out like ``array`` (extra trailing axes allowed) in the layout and number
        of axes of the file itself: :meth:`to_original`, and a 2D file's added third axis dropped.
        What ``vmunet predict`` writes and :class:`~vmunet.inference.Prediction` returns.

        A single-frame DICOM series keeps its third axis, ``(X, Y, 1)``: the label map is written as
        the 3D NIfTI of the series as GDCM reads it (origin, direction and third spacing), which
        places the slice in the patient's space. A 2D NIfTI cannot: SimpleITK reads an axial one
        back in the plane z = 0 (the slice's position dropped) and refuses any other plane ("Bad
        direction, determinant is 0")."""
        out = self.to_original(data)
        if self.kind in ("nifti", "sitk") and volumes.file_ndim(self.template) == 2:
            return out[:, :, 0]
        return out

    def as_image(self, data: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
        """A label map laid out like ``array`` and the voxel size (mm) of each of its axes, with the
        number of axes of the image: a single 2D image's one slice (:attr:`plane_axis`) as a 2D image with its two pixel sizes
        (no nominal thickness: areas and 2D contours are measured on it), else unchanged."""
        axis = self.plane_axis
        if axis is None:
            return data, self.spacing
        return np.take(data, 0, axis=axis), tuple(s for a, s in enumerate(self.spacing) if a != axis)


def group_cases(paths: list[Path], channels: int, where: str | os.PathLike) -> list[CaseFiles]:
    """The cases among the inputs :func:`find_cases` found, named as nnU-Net names them.

    Volume files ``<case>_NNNN<ext>`` are the channels of ``<case>`` (``channels`` of them, in
    order; a missing one is a :class:`~vmunet.data.errors.DataError` naming the case and the
    files expected). With one channel a file is a channel file only when its case has a ``_0000``
    file, so ``scan_0007.nii.gz`` alone stays case ``scan_0007``; with several, every volume file
    must be a channel file. Other inputs (DICOM folders, h5, 2D images) are cases of their own.
    """
    vols = [p for p in paths if p.is_file() and _has_ext(p, volumes.VOLUME_SUFFIXES)]
    others = [CaseFiles(case_name(p), (p,)) for p in paths if p not in vols]
    grouped = group_channels(vols, case_name, channels, where, strict=channels > 1) if vols else []
    return sorted([*grouped, *others], key=lambda c: c.name)


def case_name(path: str | os.PathLike) -> str:
    """Case name of an input: the file name without its scan extension (folder name for DICOM)."""
    p = Path(path)
    return volumes.strip_suffix(p.name, SCAN_EXTS) if volumes.has_suffix(p, SCAN_EXTS) else p.name


def _has_ext(path: Path, exts: tuple[str, ...]) -> bool:
    return volumes.has_suffix(path, exts)


def _dicom_series(folder: Path) -> list[str]:
    return list(volumes.sitk().ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


#: ``"kind"`` of the JSON sidecar ``vmunet predict`` writes next to each label map.
SIDECAR_KIND = "vmunet-prediction"


def prediction_sidecar(path: Path) -> Path:
    """``<stem>.json`` next to a label map ``<stem>.nii.gz`` / ``<stem>.png``."""
    return path.with_name(case_name(path) + ".json")


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is a label map ``vmunet predict`` wrote: its sidecar (``<stem>.json``) says
    so and names this very file. Recognised by the sidecar, not by a suffix, so ``predict -i D -o D
    --suffix _seg`` run twice does not segment its own outputs, and an input that merely ends in
    ``_seg`` is still a case."""
    side = prediction_sidecar(path)
    if not side.is_file():
        return False
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("output") == path.name
            and (meta.get("kind") == SIDECAR_KIND or "checkpoint_sha256" in meta))


def find_cases(input_path: str | os.PathLike) -> list[Path]:
    """The scans under ``input_path``: the file itself, a DICOM series folder, or the scan files
    (and DICOM series sub-folders) of a folder, sorted by name.

    Hidden files, our temporary files, ``.geometry.json`` sidecars, ``.raw`` data files of
    ``.mhd`` headers and label maps written by ``vmunet predict`` (:func:`is_own_output`) are not
    cases. Raises ``FileNotFoundError`` when nothing is there.
    """
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist")
    if root.is_file():
        if not _has_ext(root, SCAN_EXTS):  # named by the user: a usage error, before any case runs
            raise ScanReadError(unsupported_file(root))
        return [root]
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file() and _has_ext(p, SCAN_EXTS)]
    own = [p for p in files if is_own_output(p)]
    if own:
        log.info("%s: skipping %d label map(s) written by vmunet predict (e.g. %s)", root, len(own), own[0].name)
        files = [p for p in files if p not in own]
    if not files and _dicom_series(root):
        return [root]
    dicom_dirs = [p for p in entries if p.is_dir() and _dicom_series(p)]
    cases = sorted(files + dicom_dirs, key=lambda p: p.name)
    if not cases:
        raise FileNotFoundError(
            f"no scans found in {root} (expected files ending in {', '.join(SCAN_EXTS)} "
            "or DICOM series folders)"
        )
    return cases


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` at byte 128 (or, without the preamble, a ``.dcm`` name)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return True
    except OSError:
        return False
    return volumes.has_suffix(path, (".dcm", ".dicom"))


def unsupported_file(p: Path) -> str:
    """The one-line refusal of a file that is not a scan vmunet reads (a lone DICOM file says where
    DICOM goes: series are read as folders, and which files form the series is GDCM's choice)."""
    if is_dicom_file(p):
        return (f"{p}: a single DICOM file; DICOM is read as a series folder: give the folder holding "
                f"its series ({p.parent}), with one series per folder (a lone image: a folder of its own)")
    return f"{p}: unsupported file type (expected one of {', '.join(SCAN_EXTS)}, or a DICOM series folder)"


def read_scan(path: str | os.PathLike, *, orientation: str | None = "RAS", label: bool = False) -> Scan:
    """Read one scan (any supported format) and reorient it to ``orientation`` ("RAS" or None).

    ``label=True`` reads the ``label`` array of Synapse h5 files (and keeps integer values).
    Raises :class:`ScanReadError` naming the file on any problem.
    """
    p = Path(path)
    if orientation not in ("RAS", None):
        raise ValueError(f"orientation must be 'RAS' or None, got {orientation!r}")
    try:
        if p.is_dir():
            scan = _read_dicom(p)
        elif _has_ext(p, H5_EXTS):
            scan = _read_h5(p, label=label)
        elif _has_ext(p, IMAGE_EXTS):
            return _read_image(p)
        elif _has_ext(p, volumes.VOLUME_SUFFIXES):
            scan = _scan(p, case_name(p), volumes.read_volume(p))
            if _has_ext(p, SITK_EXTS) and not _header_states_spacing(p) and all(s == 1.0 for s in scan.spacing):
                _nominal_spacing(scan, f"{p}: its header states no spacing (NRRD 'spacings' / 'space directions', "
                                       "MetaImage 'ElementSpacing' / 'ElementSize'); ITK's nominal 1.0 mm")
        else:
            raise ScanReadError(unsupported_file(p))
    except ScanReadError:
        raise
    except DataError as err:  # the shared volume reader names the file already
        raise ScanReadError(str(err)) from err
    except Exception as err:  # readers raise anything from OSError to RuntimeError/EOFError
        raise ScanReadError(f"{p}: cannot read scan ({type(err).__name__}: {first_line(err)})") from err
    if orientation == "RAS":
        return _to_ras(scan)
    return scan


def read_case(files: str | os.PathLike | Sequence[str | os.PathLike], *, orientation: str | None = "RAS",
              name: str | None = None) -> Scan:
    """Read one case: a single scan (:func:`read_scan`), or the channel files of a multi-channel
    volume (same grid and geometry required), stacked on a trailing axis: ``array`` (X, Y, Z, C)."""
    paths = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
    if len(paths) == 1:
        scan = read_scan(paths[0], orientation=orientation)
        if name is not None:
            scan.name = name
        return scan
    if orientation not in ("RAS", None):
        raise ValueError(f"orientation must be 'RAS' or None, got {orientation!r}")
    not_volumes = [p.name for p in paths if not _has_ext(p, volumes.VOLUME_SUFFIXES)]
    if not_volumes:
        raise ScanReadError(f"{paths[0]}: channels of a multi-channel case must be volume files "
                            f"({', '.join(volumes.VOLUME_SUFFIXES)}), got {not_volumes}")
    try:
        first, stack = volumes.read_channels(paths)
    except DataError as err:
        raise ScanReadError(str(err)) from err
    scan = Scan(name or case_name(paths[0]), paths[0], first.kind, np.moveaxis(stack, 0, -1), first.affine, None,
                tuple(first.array.shape), first.template)
    return _to_ras(scan) if orientation == "RAS" else scan


def _scan(p: Path, name: str, vol: volumes.VolumeFile) -> Scan:
    return Scan(name, p, vol.kind, vol.array, vol.affine, None, vol.array.shape, vol.template)


def _from_sitk(p: Path, img: Any, name: str) -> Scan:
    try:
        return _scan(p, name, volumes.from_sitk(img, p))
    except DataError as err:
        raise ScanReadError(str(err)) from err


def _read_dicom(p: Path) -> Scan:
    sitk = volumes.sitk()
    series = _dicom_series(p)
    if not series:
        raise ScanReadError(f"{p}: folder holds no DICOM series")
    if len(series) > 1:
        raise ScanReadError(f"{p}: folder holds {len(series)} DICOM series (series UIDs "
                            f"{short_list(series, 3)}); expected one series per folder: put each in its own folder")
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(p), series[0])
    tags = _first_file_tags(files[0])
    _check_dicom_image(p, files[0], tags)
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as err:  # SimpleITK's text spans lines and names ITK's C++ sources: one line
        names = Path(files[0]).name + (f" ... {Path(files[-1]).name}" if len(files) > 1 else "")
        raise ScanReadError(
            f"{p}: cannot read its DICOM series ({len(files)} file{'s' if len(files) > 1 else ''}: {names}); "
            f"expected complete DICOM files that GDCM can decode (SimpleITK: {first_line(err)})"
        ) from err
    scan = _from_sitk(p, img, p.name)
    scan.single_frame = img.GetDimension() == 3 and img.GetSize()[2] == 1  # one file of one frame: one 2D image
    if tuple(img.GetSpacing()[:2]) == (1.0, 1.0) and not _pixel_spacing_stated(tags):
        _nominal_spacing(scan, f"{p}: {Path(files[0]).name} states no pixel spacing (PixelSpacing (0028,0030) and "
                               "ImagerPixelSpacing (0018,1164) absent or 0); GDCM's nominal 1.0 mm")
    return scan


def _nominal_spacing(scan: Scan, what: str) -> None:
    """Mark a scan whose file states no spacing (the reader's nominal 1.0 mm stands in), with the one
    warning that says so; ``what`` names the file, the missing fields and the reader."""
    scan.spacing_known = False
    log.warning("%s stands in, so its sizes (areas_mm2, volumes_ml) are pixel counts and HD95 (mm) is not "
                "reported (spacing_known false in the sidecar)", what)


#: Header fields that state a spacing: NRRD ``spacings:`` / ``space directions:`` (the header ends at
#: its first blank line), MetaImage ``ElementSpacing =`` / ``ElementSize =`` (ITK takes the latter
#: when the former is absent). ITK reads 1.0 mm without them.
_SPACING_FIELD = re.compile(r"^\s*(spacings\s*:|space directions\s*:|ElementSpacing\s*=|ElementSize\s*=)\s*(.*?)\s*$",
                            re.IGNORECASE)


def _header_lines(header: Path) -> list[str] | None:
    """The lines of a MetaImage / NRRD header file's first 64 KiB (the header; an attached file's
    data follows it), latin-1, without line ends; None when it cannot be read."""
    try:
        with open(header, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    return [raw.decode("latin-1").rstrip("\r") for raw in head.split(b"\n")]


def _header_states_spacing(header: Path) -> bool:
    """Whether a NRRD / MetaImage header states a spacing (NRRD ``spacings`` must be finite and
    positive: ITK reads ``nan`` as 1.0)."""
    lines = _header_lines(header)
    if lines is None:  # it was just read: say nothing rather than guess
        return True
    nrrd = _has_ext(header, (".nrrd", ".nhdr"))
    for line in lines:
        if nrrd and not line.strip():
            break
        m = _SPACING_FIELD.match(line)
        if m is None:
            continue
        if not m.group(1).lower().startswith("spacings"):
            return True
        try:
            values = [float(v) for v in m.group(2).split()]
        except ValueError:
            continue
        if values and all(np.isfinite(v) and v > 0 for v in values):
            return True
    return False


#: Top-level tags GDCM takes an in-plane spacing from (SimpleITK metadata keys): PixelSpacing,
#: ImagerPixelSpacing (CR/DX/MG), NominalScannedPixelSpacing (secondary capture).
_SPACING_TAGS = ("0028|0030", "0018|1164", "0018|2010")


def _first_file_tags(first: str) -> dict[str, str] | None:
    """The tags of the series' first file that the checks below read (SimpleITK metadata keys:
    SOP class, modality and :data:`_SPACING_TAGS`), from one header read; None when the header
    cannot be read (the series itself was read, or its read reports the files)."""
    reader = volumes.sitk().ImageFileReader()
    reader.SetFileName(first)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    keys = ("0008|0016", "0008|0060", *_SPACING_TAGS)
    return {k: reader.GetMetaData(k) for k in keys if reader.HasMetaDataKey(k)}


def _pixel_spacing_stated(tags: dict[str, str] | None) -> bool:
    """Whether the first file states a positive in-plane spacing in a top-level tag. GDCM gives 1.0 mm
    when none does (absent, or ``0\\0`` as in pydicom's RG1_UNCR.dcm), indistinguishable in the image
    from a stated 1.0: hence the tags. Enhanced multi-frame objects keep their spacing in functional
    groups (not read here): one of those is called unstated only when GDCM also gave exactly 1.0.
    An unreadable header (``tags`` None) says nothing: stated."""
    if tags is None:
        return True
    for key in _SPACING_TAGS:
        if key not in tags:
            continue
        try:
            values = [float(v) for v in tags[key].strip().split("\\")]
        except ValueError:
            continue
        if len(values) == 2 and all(v > 0 for v in values):
            return True
    return False


#: SOP classes under 1.2.840.10008.5.1.4.1.1.66 hold no image to segment: segmentations (66.4,
#: DICOM-SEG; GDCM decodes its bit planes as if they were an image, 0/255), surface segmentations,
#: registrations, fiducials, raw data.
_NON_IMAGE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.66"


def _check_dicom_image(folder: Path, first: str, tags: dict[str, str] | None) -> None:
    """Refuse a series that is not an image (a DICOM-SEG is read by SimpleITK as if it were one,
    and would be segmented without a word); ``tags``: :func:`_first_file_tags` of ``first`` (None:
    unreadable header, which the series read reports, naming the files)."""
    if tags is None:
        return
    tag = {k: tags.get(k, "").strip() for k in ("0008|0016", "0008|0060")}
    sop, modality = tag["0008|0016"], tag["0008|0060"]
    if sop.startswith(_NON_IMAGE_SOP_PREFIX) or modality in ("SEG", "RTSTRUCT", "REG"):
        what = "a segmentation (DICOM-SEG)" if sop == _NON_IMAGE_SOP_PREFIX + ".4" or modality == "SEG" else "not an image"
        raise ScanReadError(f"{folder}: {Path(first).name} is {what} (modality {modality or '?'}, SOP class {sop or '?'}); "
                            "expected an image series to segment (CT, MR, ...)")


def geometry_sidecar(p: Path) -> Path:
    """``<case>.geometry.json`` next to a Synapse ``<case>.npy.h5``."""
    return p.with_name(case_name(p) + ".geometry.json")


def _read_h5(p: Path, *, label: bool) -> Scan:
    import h5py

    key = "label" if label else "image"
    with h5py.File(p, "r") as f:
        if key not in f:
            raise ScanReadError(f"{p}: h5 file has no {key!r} dataset (found {sorted(f.keys())})")
        dhw = f[key][()]
    if dhw.ndim != 3:
        raise ScanReadError(f"{p}: expected a 3D (D, H, W) {key!r} array, got shape {dhw.shape}")
    ras = dhw.transpose(2, 1, 0)  # contract: h5 array == canonical RAS array .transpose(2, 1, 0)
    side = geometry_sidecar(p)
    if not side.exists():
        warnings.warn(f"{p}: no geometry sidecar {side.name}; writing results with identity geometry", stacklevel=3)
        log.warning("%s: no geometry sidecar %s; using identity geometry", p, side.name)
        return Scan(case_name(p), p, "h5", ras, np.eye(4), None, ras.shape, np.eye(4), normalized=not label)
    import nibabel as nib

    meta = read_json(side)  # a corrupt sidecar is named itself, not the h5 beside it
    try:
        affine = np.asarray(meta["affine"], dtype=np.float64).reshape(4, 4)
        shape = tuple(int(s) for s in meta["shape"])
    except (KeyError, ValueError, TypeError) as err:
        raise ScanReadError(f"{side}: expected 'affine' (4x4) and 'shape' [X, Y, Z], got {err!r}") from None
    try:
        volumes.check_affine(side, affine)
    except DataError as err:
        raise ScanReadError(str(err)) from None
    ornt = nib.orientations.io_orientation(affine)
    expected = tuple(int(shape[int(a)]) for a in np.argsort(ornt[:, 0]))
    if ras.shape != expected:
        raise ScanReadError(
            f"{p}: array shape {dhw.shape} (DHW) does not match sidecar {side.name} shape {list(shape)} "
            f"reoriented to RAS {list(expected)}"
        )
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return Scan(case_name(p), p, "h5", ras, ras_affine, ornt, shape, affine, normalized=not label)


def _read_image(p: Path) -> Scan:
    """A 2D image as (H, W) grayscale or (H, W, 3) RGB uint8, converted as training reads images
    (:func:`vmunet.data.isic_format.read_image`: PIL's conversions; bilevel -> 0/255; alpha and
    palettes carry no signal); more than 8 bits per sample is refused, as in training."""
    from PIL import Image

    from vmunet.data.isic_format import check_8bit

    with Image.open(p) as img:
        check_8bit(p, img.mode)
        arr = np.asarray(img.convert("L" if img.mode in ("L", "1", "LA", "La") else "RGB"))
    return Scan(case_name(p), p, "image", arr, np.eye(4), None, arr.shape, None)


def _to_ras(scan: Scan) -> Scan:
    """Reorient a scan read in file layout to nibabel's closest canonical (RAS) orientation."""
    if scan.ornt is not None:  # h5 arrays are stored canonical already
        return scan
    ornt = volumes.ras_ornt(scan.affine)
    arr, affine = volumes.to_ras(scan.array, scan.affine)
    return dataclasses.replace(scan, array=arr, affine=affine, ornt=ornt)


def input_files(path: str | os.PathLike) -> list[Path]:
    """The files a case is read from: the scan file (and the data files its MetaImage or NRRD header
    names, or an h5's geometry sidecar), or every file of a DICOM series folder, sorted."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    extra: list[Path] = []
    if _has_ext(p, H5_EXTS):
        extra = [geometry_sidecar(p)]
    elif _has_ext(p, SITK_EXTS):
        extra = detached_data_files(p)
    return [p, *sorted({f for f in extra if f.is_file() and f != p})]


#: Header fields naming the data file(s) of a detached header: MetaImage (``.mhd``, and ``.mha``
#: files may use it too) and NRRD (``.nhdr``, or a ``.nrrd`` that points elsewhere).
_DATA_FILE_FIELD = re.compile(r"^\s*(?:ElementDataFile\s*=|data ?file\s*:)\s*(.*?)\s*$", re.IGNORECASE)


def detached_data_files(header: Path) -> list[Path]:
    """The data files a MetaImage / NRRD header names (``ElementDataFile = X.zraw``, ``data file:
    X.raw``; ``LIST`` and ``<printf pattern> min max step`` forms too), relative to its folder.
    Read from the header, not guessed from its name: ITK's ``...DirectionMinus30.mhd`` reads
    ``BrainProtonDensitySliceBorder20.zraw``, and ``.mha`` files may be detached as well."""
    lines = _header_lines(header)
    if lines is None:
        return []
    for n, line in enumerate(lines):
        if not line.strip() and _has_ext(header, (".nrrd", ".nhdr")):
            break  # NRRD: the header ends at the first blank line
        m = _DATA_FILE_FIELD.match(line)
        if not m:
            continue
        value = m.group(1)
        fields = value.split()
        if not fields or fields[0].upper() == "LOCAL":
            return []
        if fields[0].upper() == "LIST":  # one file name per following line
            names = [x.strip() for x in lines[n + 1:]]
            return [header.parent / x for x in names if x]
        if "%" in fields[0] and len(fields) >= 4:  # printf pattern, first, last, step
            try:
                first, last, step = (int(x) for x in fields[1:4])
                return [header.parent / (fields[0] % i) for i in range(first, last + (1 if step > 0 else -1), step)]
            except (ValueError, TypeError, ZeroDivisionError):
                return []
        return [header.parent / value]
    return []


def input_sha256(path: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the bytes (and names) of every file a case is read from (:func:`input_files`
    of each channel file, in order): what ``vmunet predict`` compares before reusing an output."""
    digest = hashlib.sha256()
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    for f in (f for p in paths for f in input_files(p)):
        digest.update(f.name.encode() + b"\0")
        hash_file(f, digest)
    return digest.hexdigest()


def label_dtype(num_labels: int) -> np.dtype:
    """uint8 for up to 256 label values, uint16 beyond."""
    return np.dtype(np.uint8) if num_labels <= 256 else np.dtype(np.uint16)


def output_extension(input_path: str | os.PathLike) -> str:
    """Extension of the label map written for an input: ``.png`` for 2D images, else ``.nii.gz``."""
    return ".png" if _has_ext(Path(input_path), IMAGE_EXTS) else ".nii.gz"


def write_label_map(scan: Scan, labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``labels`` (laid out like ``scan.array``) with exactly the input geometry, atomically.

    NIfTI inputs keep their header (qform, sform and codes, units); SimpleITK inputs their origin,
    spacing and direction; Synapse h5 inputs the sidecar affine (as qform and sform, code 1).
    2D images give a PNG of label values.
    """
    labels = np.asarray(labels)
    if labels.shape != scan.array.shape[: labels.ndim] or labels.ndim != (3 if scan.is_volume else 2):
        raise ValueError(f"label map shape {labels.shape} does not match scan {scan.name} array {scan.array.shape}")
    if np.issubdtype(labels.dtype, np.floating) or labels.min(initial=0) < 0:
        raise ValueError(f"label map must hold non-negative integers, got dtype {labels.dtype}")
    labels = labels.astype(label_dtype(int(labels.max(initial=0)) + 1), copy=False)
    path = Path(path)
    # An interrupted run leaves the complete old file or none; the temporary file keeps the
    # extension the writers dispatch on, and TEMP_PREFIX marks leftovers, which folder scans skip.
    if not scan.is_volume:
        from PIL import Image

        with atomic_path(path, prefix=TEMP_PREFIX, suffix=".png") as tmp:
            Image.fromarray(labels).save(tmp, format="PNG")
        return path
    with atomic_path(path, prefix=TEMP_PREFIX, suffix=".nii.gz") as tmp:
        _write_nifti(scan, scan.to_file(labels), tmp)  # a 2D input gets a 2D label map back
    return path


def _write_nifti(scan: Scan, data: np.ndarray, tmp: Path) -> None:
    """Every volume's label map is written by nibabel. SimpleITK's NIfTI writer was used for
    SimpleITK inputs, but it reports no error when the disk fills: it left a truncated file that
    was renamed into place as a result (and read back without error). nibabel raises ``OSError``,
    which :func:`~vmunet.data.fileio.atomic_path` names with the output file. The geometry of a
    SimpleITK input is its header's (origin, spacing, direction) through the one LPS -> RAS
    conversion, :func:`vmunet.data.volumes.sitk_affine`, stored as qform and sform (code 1,
    scanner): SimpleITK reads the file back with the input's origin, spacing and direction."""
    import nibabel as nib

    if scan.kind == "nifti":
        header = scan.template.copy()
        img = nib.Nifti1Image(data, None, header=header)  # affine=None: keep qform/sform as they are
        img.header.set_slope_inter(1.0, 0.0)  # label values are stored unscaled
    else:  # SimpleITK header / h5 sidecar affine (or identity) / plain arrays
        if scan.kind == "sitk":
            t = scan.template
            affine = volumes.sitk_affine(t["origin"], t["spacing"], t["direction"])
        else:
            affine = scan.template if scan.template is not None else np.eye(4)
        img = nib.Nifti1Image(data, affine)
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=1)
    img.set_data_dtype(data.dtype)
    nib.save(img, str(tmp))


def write_probabilities(scan: Scan, probs: np.ndarray, class_names: list[str], path: str | os.PathLike) -> Path:
    """Write per-class probabilities ``(C, *scan.array.shape)`` as float16 in the file's layout
    (:meth:`Scan.to_file`) to a compressed ``.npz`` (NIfTI-1 has no float16): keys ``probabilities``
    (C, X, Y, Z), (C, X, Y) for a 2D file, ``class_names`` and ``affine`` (voxel (i, j, k) -> RAS mm
    of the original layout, 4 x 4 also for a 2D file: k = 0 is its plane)."""
    probs = np.asarray(probs, dtype=np.float16)
    orig = np.moveaxis(scan.to_file(np.moveaxis(probs, 0, -1)), -1, 0) if scan.is_volume else probs
    affine = original_affine(scan)

    with atomic_path(path, prefix=TEMP_PREFIX, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, probabilities=orig, class_names=np.asarray(class_names), affine=affine)
    return Path(path)


def original_affine(scan: Scan) -> np.ndarray:
    """Voxel -> RAS mm affine of the original layout."""
    if scan.ornt is None:
        return scan.affine
    import nibabel as nib

    back = nib.orientations.ornt_transform(volumes.RAS_ORNT, scan.ornt)
    return scan.affine @ nib.orientations.inv_ornt_aff(back, scan.array.shape)

"""The one scan I/O layer: read 3D volumes with their geometry, reorient them to RAS.

Training (:mod:`vmunet.data.nifti`, :mod:`vmunet.data.prepare`) and inference
(:mod:`vmunet.inference.io`) both read volumes here, so they accept the same files and see the
same arrays (the role of nnU-Net's ``imageio``):

* NIfTI (``.nii``, ``.nii.gz``) through nibabel (the header is kept, so it can be written back);
* every other format SimpleITK reads (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, DICOM series) with
  its LPS geometry converted to nibabel's voxel -> RAS mm affine;
* suffixes match case-insensitively (``CASE.NII.GZ`` is NIfTI);
* a volume is 3D and single-channel: trailing axes of size 1 (``(X, Y, Z, 1)``) are dropped, any
  other 4D (time series, multi-channel) file is refused with an error naming the file;
* a 2D single-channel image (a MetaImage/NRRD/NIfTI slice) is a volume of one slice, ``(X, Y, 1)``,
  its geometry extended by a third axis of 1 mm perpendicular to its plane (as GDCM reads a
  single-frame DICOM); :func:`file_ndim` tells writers to give it a 2D result back.

Arrays follow the file's voxel index order ``[i, j, k]`` (nibabel's; for SimpleITK
``GetArrayFromImage(img).transpose(2, 1, 0)``); :func:`to_ras` reorients them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmunet.data.errors import DataError
from vmunet.errors import first_line

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: Volume suffixes looked for when scanning folders (longest first, so ``.nii.gz`` wins over ``.gz``).
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES
#: The canonical (RAS) orientation as a nibabel orientation array.
RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def has_suffix(name: str | Path, suffixes: str | tuple[str, ...]) -> bool:
    """Whether a file name ends in one of ``suffixes``, ignoring case."""
    suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
    return Path(name).name.lower().endswith(tuple(s.lower() for s in suffixes))


def strip_suffix(name: str, suffixes: tuple[str, ...] = VOLUME_SUFFIXES) -> str:
    """``img0001.nii.gz`` -> ``img0001``: the first of ``suffixes`` the name ends in (any case) is
    removed; a name with none of them loses its last extension."""
    lower = name.lower()
    for suf in suffixes:
        if lower.endswith(suf.lower()):
            return name[: -len(suf)]
    return Path(name).stem


@functools.cache
def sitk() -> Any:
    """SimpleITK with ITK's own warning printer off: its C++ warnings (e.g. "no DICOM files" on an
    empty folder) went straight to stderr; every failure still arrives as an exception, which
    the callers turn into errors naming the file."""
    import SimpleITK

    SimpleITK.ProcessObject_SetGlobalWarningDisplay(False)
    return SimpleITK


@dataclass
class VolumeFile:
    """A volume as read: ``array`` in file voxel order, ``affine`` voxel -> RAS mm, ``kind``
    (``"nifti"`` | ``"sitk"``) and ``template`` (the nibabel header, or SimpleITK origin /
    spacing / direction) to write results back with the same geometry."""

    array: np.ndarray
    affine: np.ndarray
    kind: str
    template: Any = field(default=None, repr=False)


def _single_channel_3d(where: str | Path, arr: np.ndarray) -> np.ndarray:
    """Drop trailing axes of size 1; anything else that is not 3D is an error naming the file."""
    if arr.size == 0:  # a header with a 0-length axis (readers then report odd shapes, e.g. (0,))
        raise DataError(f"{where}: holds no voxels (array shape {tuple(arr.shape)}); expected a 3D volume "
                        "with at least one slice")
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:  # one slice (see the module docstring)
        arr = arr[..., None]
    if arr.ndim != 3:
        extra = " (4D files are accepted only with a last axis of size 1)" if arr.ndim > 3 else ""
        raise DataError(f"{where}: expected a 3D volume, got an array of shape {tuple(arr.shape)} "
                        f"({arr.ndim}D){extra}")
    return arr


def check_affine(where: str | Path, affine: np.ndarray) -> np.ndarray:
    """Refuse a voxel -> world affine that places no voxel: non-finite entries (a NaN origin or
    direction) or a degenerate 3x3 part (a voxel size of 0, two axes along one direction). Such a
    header cannot be reoriented (nibabel's ``io_orientation`` fails with "Unable to find out axis
    ..."), and a prediction or prepared case written with it has no place in scanner space."""
    affine = np.asarray(affine, dtype=np.float64)
    rzs = affine[:3, :3]
    problem = None
    if not np.isfinite(affine).all():
        problem = "has non-finite entries (NaN or infinite)"
    else:
        sizes = voxel_sizes(affine)
        if (sizes <= 0).any():
            problem = f"gives voxel size 0 along array axis {int(np.argmin(sizes))}"
        elif abs(np.linalg.det(rzs)) <= 1e-6 * float(np.prod(sizes)):
            problem = "has linearly dependent axes (a singular 3x3 part)"
    if problem is not None:
        rows = np.round(affine, 4).tolist()
        raise DataError(f"{where}: voxel-to-world affine {problem}: {rows}; expected finite voxel sizes > 0 "
                        "along three independent axes (check the header's pixdim and sform/qform, or the "
                        "spacing/direction)")
    return affine


def sitk_affine(origin: Any, spacing: Any, direction: Any) -> np.ndarray:
    """Voxel index (i, j, k) -> RAS mm affine of a SimpleITK (LPS) geometry (first three axes)."""
    nd = len(spacing)
    lps = np.eye(4)
    rot = np.asarray(direction, dtype=np.float64).reshape(nd, nd)[:3, :3]
    lps[:3, :3] = rot @ np.diag(np.asarray(spacing, dtype=np.float64)[:3])
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)[:3]
    return _LPS_TO_RAS @ lps


def from_sitk(img: Any, where: str | Path) -> VolumeFile:
    """A SimpleITK image as a :class:`VolumeFile` (single-channel 3D, see the module docstring).

    A 2D image (whose header has no third axis) is placed in the plane z = 0 of LPS: origin z 0,
    spacing z 1 mm, direction ``[[D, 0], [0, 1]]``, so in RAS it is one axial slice. The template
    records ``dimension`` 2, and the label map is written back 2D with the image's own geometry."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{where}: expected a single-channel volume, got {img.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    nd = img.GetDimension()
    arr = sitk().GetArrayFromImage(img)  # (..., z, y, x) -> (x, y, z, ...)
    arr = _single_channel_3d(where, np.transpose(arr, tuple(range(nd - 1, -1, -1))))
    k = min(nd, 3)
    direction = np.eye(3)
    direction[:k, :k] = np.asarray(img.GetDirection()).reshape(nd, nd)[:k, :k]
    geometry = {"origin": (*img.GetOrigin()[:3], *(0.0,) * (3 - k)),
                "spacing": (*img.GetSpacing()[:3], *(1.0,) * (3 - k)),
                "direction": tuple(float(x) for x in direction.ravel()), "dimension": nd}
    affine = check_affine(where, sitk_affine(geometry["origin"], geometry["spacing"], geometry["direction"]))
    return VolumeFile(arr, affine, "sitk", geometry)


def file_ndim(template: Any) -> int:
    """Number of axes of the file a :class:`VolumeFile` ``template`` came from (2 for a 2D image
    read as one slice; 3 or more otherwise)."""
    if isinstance(template, dict):  # SimpleITK geometry
        return int(template.get("dimension", 3))
    if hasattr(template, "get_data_shape"):  # NIfTI header
        return len(template.get_data_shape())
    return 3


def _read_nifti(path: Path) -> VolumeFile:
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    if arr.dtype.names:  # RGB24/RGBA32 NIfTI: structured voxels
        raise DataError(f"{path}: expected a single-channel volume, got {len(arr.dtype.names)}-component "
                        f"voxels ({arr.dtype})")
    arr = _single_channel_3d(path, arr)
    affine = check_affine(path, img.affine)
    _warn_qform_sform(path, img.header)
    return VolumeFile(arr, affine, "nifti", img.header.copy())


def _warn_qform_sform(path: Path, header: Any) -> None:
    """Warn when a NIfTI file's qform and sform both claim a geometry and disagree: we (nibabel)
    use the sform, ITK-based tools (SimpleITK, nnU-Net, ITK-SNAP) may place the image by the qform,
    so the same file lands in two places depending on the reader."""
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not (qcode and scode) or np.allclose(qform, sform, atol=1e-3):
        return
    diff = float(np.abs(np.asarray(qform) - np.asarray(sform)).max())
    log.warning("%s: qform and sform disagree (largest difference %.3g in the 4x4 affines); using the sform "
                "(code %d), as nibabel does -- ITK-based readers (SimpleITK, nnU-Net) may use the qform "
                "(code %d) and place this image elsewhere", path, diff, int(scode), int(qcode))


def read_volume(path: str | Path) -> VolumeFile:
    """Read a single-channel 3D volume file with its geometry; :class:`DataError` names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if has_suffix(path, NIFTI_SUFFIXES):
            return _read_nifti(path)
        return from_sitk(sitk().ReadImage(str(path)), path)
    except DataError:
        raise
    except Exception as err:  # readers raise anything from OSError to RuntimeError/EOFError
        raise DataError(f"{path}: unreadable or corrupt image file ({type(err).__name__}: {first_line(err)})") from None


def load_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(array (i, j, k), affine voxel -> RAS mm)`` of a volume file (see :func:`read_volume`)."""
    vol = read_volume(path)
    return np.asarray(vol.array), vol.affine


def read_channels(paths: list[str | Path] | tuple[str | Path, ...]) -> tuple[VolumeFile, np.ndarray]:
    """Read the channel files of one case (nnU-Net's ``<case>_0000``, ``<case>_0001``, ...): the
    first file as a :class:`VolumeFile` (its geometry is the case's) and the stacked channels
    ``(C, i, j, k)``. Every channel must have the first one's shape and geometry; a mismatch is a
    :class:`DataError` naming both files."""
    first = read_volume(paths[0])
    arrays = [np.asarray(first.array)]
    for p in paths[1:]:
        vol = read_volume(p)
        if vol.array.shape != first.array.shape:
            raise DataError(f"{p}: channel shape {tuple(vol.array.shape)} differs from {Path(paths[0]).name}'s "
                            f"{tuple(first.array.shape)}; every channel of a case must share one voxel grid")
        if not same_geometry(vol.affine, first.affine):
            raise DataError(f"{p}: channel geometry (affine) differs from {Path(paths[0]).name}'s:\n"
                            f"{np.round(first.affine, 4).tolist()}\n{np.round(vol.affine, 4).tolist()}")
        arrays.append(np.asarray(vol.array))
    return first, np.stack(arrays)


def ras_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform taking an array with ``affine`` to RAS (no resampling)."""
    from nibabel import orientations as ornt

    return ornt.ornt_transform(ornt.io_orientation(affine), RAS_ORNT)


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient the first three axes to nibabel's closest canonical (RAS+) orientation.

    Same result as ``nib.as_closest_canonical`` and MONAI ``Orientation(axcodes="RAS")``: only
    axis permutations and flips, no resampling. Returns the new array and affine.
    """
    from nibabel import orientations as ornt

    transform = ras_ornt(affine)
    out = ornt.apply_orientation(array, transform)
    new_affine = affine @ ornt.inv_ornt_aff(transform, array.shape[:3])
    return np.ascontiguousarray(out), new_affine


def from_ras(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Undo :func:`to_ras` (``transform`` from :func:`ras_ornt` of the original affine); extra
    trailing axes are carried along."""
    from nibabel import orientations as ornt

    back = ornt.ornt_transform(RAS_ORNT, transform)
    return np.ascontiguousarray(ornt.apply_orientation(array, back))


#: Tolerances under which two voxel -> world affines are one grid (mm; image vs label, channel vs
#: channel, prediction vs reference): float32 header rounding passes, a shifted or rescaled grid does not.
GEOMETRY_ATOL, GEOMETRY_RTOL = 1e-3, 1e-4


def same_geometry(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two voxel -> world affines describe the same grid (within the header rounding)."""
    return bool(np.allclose(a, b, atol=GEOMETRY_ATOL, rtol=GEOMETRY_RTOL))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis of ``affine``."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))

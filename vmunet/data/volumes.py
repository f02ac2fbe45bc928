"""Reading 3D scans with their geometry, and reorienting them to RAS.

NIfTI goes through nibabel; every other format SimpleITK reads (.nrrd, .mha, .mhd, ...) through
SimpleITK, with its LPS direction converted to nibabel's RAS affine convention, so callers always
get ``(array (X, Y, Z), affine 4x4 voxel -> RAS mm)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vmunet.data.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Suffixes we look for when scanning folders (anything SimpleITK reads also works when named).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def strip_suffix(name: str) -> str:
    """``img0001.nii.gz`` -> ``img0001`` (any known volume suffix)."""
    for suf in VOLUME_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def load_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a scan as ``(array, affine)``; array axes follow the file's voxel axes.

    4D files keep their last axis (channels / time) as axis 3.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.name.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asarray(img.dataobj)
            affine = np.asarray(img.affine, dtype=np.float64)
        else:
            import SimpleITK as sitk

            img = sitk.ReadImage(str(path))
            # SimpleITK arrays are (z, y, x[, c]); nibabel's are (x, y, z[, c]).
            arr = sitk.GetArrayFromImage(img)
            nd = img.GetDimension()
            arr = np.transpose(arr, (*range(nd - 1, -1, -1), *range(nd, arr.ndim)))
            direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(nd, nd)[:3, :3]
            spacing = np.asarray(img.GetSpacing(), dtype=np.float64)[:3]
            origin = np.asarray(img.GetOrigin(), dtype=np.float64)[:3]
            lps = np.eye(4)
            lps[:3, :3] = direction * spacing[None, :]
            lps[:3, 3] = origin
            affine = _LPS_TO_RAS @ lps
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: unreadable or corrupt image file ({type(err).__name__}: {err})") from None
    if arr.ndim < 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {tuple(arr.shape)}")
    return arr, affine


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient the first three axes to nibabel's closest canonical (RAS+) orientation.

    Same result as ``nib.as_closest_canonical`` and MONAI ``Orientation(axcodes="RAS")``: only
    axis permutations and flips, no resampling. Returns the new array and affine.
    """
    from nibabel import orientations as ornt

    start = ornt.io_orientation(affine)
    transform = ornt.ornt_transform(start, ornt.axcodes2ornt(("R", "A", "S")))
    out = ornt.apply_orientation(array, transform)
    new_affine = affine @ ornt.inv_ornt_aff(transform, array.shape[:3])
    return np.ascontiguousarray(out), new_affine


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis of ``affine``."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))

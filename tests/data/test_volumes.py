"""Volume reading: nibabel and SimpleITK paths agree; RAS reorientation matches nibabel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from vmunet.data.errors import DataError
from vmunet.data.volumes import load_volume, strip_suffix, to_ras, voxel_sizes


def test_simpleitk_formats_match_nifti(tmp_path):
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    zyx = rng.integers(-100, 100, size=(5, 6, 7)).astype(np.int16)
    img = sitk.GetImageFromArray(zyx)
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    img.SetDirection((-1.0, 0, 0, 0, 0, 1.0, 0, -1.0, 0))  # non-trivial LPS direction with a permutation
    for name in ("v.nii.gz", "v.mha", "v.nrrd"):
        sitk.WriteImage(img, str(tmp_path / name))
    ref_arr, ref_aff = load_volume(tmp_path / "v.nii.gz")
    ras_ref = nib.as_closest_canonical(nib.load(str(tmp_path / "v.nii.gz")))
    for name in ("v.mha", "v.nrrd"):
        arr, aff = load_volume(tmp_path / name)
        assert np.array_equal(arr, ref_arr) and np.allclose(aff, ref_aff, atol=1e-5)
        ras, ras_aff = to_ras(arr, aff)
        assert np.array_equal(ras, np.asarray(ras_ref.dataobj))
        assert np.allclose(ras_aff, ras_ref.affine, atol=1e-5)
    assert np.allclose(voxel_sizes(ref_aff), [0.7, 0.8, 2.5])


def test_to_ras_matches_monai_orientation():
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    aff = np.array([[0, 0, -2.0, 5], [-1.5, 0, 0, 3], [0, 3.0, 0, -7], [0, 0, 0, 1]])
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    ras, ras_aff = to_ras(arr, aff)
    mt = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(
        MetaTensor(arr[None], affine=aff))
    assert np.array_equal(np.asarray(mt.array)[0], ras)
    assert np.allclose(np.asarray(mt.affine), ras_aff)
    assert nib.aff2axcodes(ras_aff) == ("R", "A", "S")


def test_errors_and_names(tmp_path):
    with pytest.raises(DataError, match=r"x.nii.gz: file not found"):
        load_volume(tmp_path / "x.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"bad.nii.gz: unreadable or corrupt image file"):
        load_volume(tmp_path / "bad.nii.gz")
    # a 2D file is a volume of one slice (as GDCM reads a single-frame DICOM), on the file's own affine
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    nib.save(nib.Nifti1Image(flat, np.diag([2.0, 3.0, 4.0, 1.0])), str(tmp_path / "flat.nii"))
    arr, affine = load_volume(tmp_path / "flat.nii")
    np.testing.assert_array_equal(arr, flat[:, :, None])
    np.testing.assert_array_equal(affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    nib.save(nib.Nifti1Image(np.zeros(5, np.float32), np.eye(4)), str(tmp_path / "line.nii"))
    with pytest.raises(DataError, match=r"line.nii: expected a 3D volume, got an array of shape \(5,\) \(1D\)"):
        load_volume(tmp_path / "line.nii")
    assert strip_suffix("img0001.nii.gz") == "img0001" and strip_suffix("a.mha") == "a"
    assert strip_suffix("IMG0001.NII.GZ") == "IMG0001" and strip_suffix("b.Nrrd") == "b"


def _fourd(tmp_path, name, shape):
    """A 4D file written by SimpleITK (NIfTI or MHA): shape (X, Y, Z, T), values 0..n-1."""
    import SimpleITK as sitk

    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    tmp = tmp_path / ("tmp" + name.lower()[name.index("."):])  # ITK's writer wants lower-case suffixes
    sitk.WriteImage(sitk.GetImageFromArray(arr.transpose(3, 2, 1, 0), isVector=False), str(tmp))
    return tmp.rename(tmp_path / name), arr


@pytest.mark.parametrize("name", ["dyn.nii.gz", "dyn.mha", "DYN.NII.GZ"])
def test_training_and_inference_read_the_same_files_alike(tmp_path, name):
    """One I/O layer: suffixes in any case; 4D with a last axis of size 1 is read as 3D, any other
    4D file is refused -- by the data modules' reader and by inference's read_scan alike."""
    from vmunet.inference import io

    path, arr = _fourd(tmp_path, name, (4, 5, 3, 1))
    got, _ = load_volume(path)
    np.testing.assert_array_equal(got, arr[..., 0])  # the array written, last axis dropped
    np.testing.assert_array_equal(io.read_scan(path, orientation=None).array, arr[..., 0])
    assert io.case_name(path) == "dyn" if name.islower() else io.case_name(path) == "DYN"

    bad, _ = _fourd(tmp_path, "t2" + name[3:], (4, 5, 3, 2))
    msg = r"expected a 3D volume, got an array of shape \(4, 5, 3, 2\) \(4D\) \(4D files are accepted only"
    with pytest.raises(DataError, match=msg):
        load_volume(bad)
    with pytest.raises(io.ScanReadError, match=msg):
        io.read_scan(bad)


def test_a_volume_without_voxels_is_refused_naming_the_file(tmp_path):
    """A header with a 0-length axis (16 x 16 x 0): nibabel hands back an array of shape (0,)."""
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 0), np.float32), np.eye(4)), str(path))
    with pytest.raises(DataError) as err:
        load_volume(path)
    assert str(err.value) == (f"{path}: holds no voxels (array shape (0,)); expected a 3D volume with at least "
                              "one slice")


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz", "cut.nrrd", "cut.mha"])
def test_a_truncated_volume_is_refused_in_one_line_naming_the_file(tmp_path, name):
    """The readers' own messages span lines (ITK: a C++ source header, then the error): the
    refusal keeps the first meaningful one, so the CLI's error stays one line."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8))
    full = tmp_path / ("full" + name[name.index("."):])
    sitk.WriteImage(img, str(full))
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        load_volume(tmp_path / name)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / name}: unreadable or corrupt image file (")
    assert "\n" not in message and "Exception thrown" not in message and "0x" not in message

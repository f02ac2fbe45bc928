"""The header properties of the real scans (``make test-real``: tests/real/test_real_inference.py),
reproduced with files written here, so the default tier covers them without a download: 2D
MetaImage/NRRD slices with +-30 degree directions (ITK's examples), a coronal LSA volume (ITK's
T1), a single image in another plane than the model's (pydicom's sagittal MR2), DICOM-SEG
(pydicom's liver.dcm), a lone DICOM file given to ``predict -i``, and a label-map write that
fails the way a full disk fails it.

References: SimpleITK and nibabel read the written files; expected label maps are computed on the
source file's own voxel grid (``source > t``), and the voxel -> RAS affine of a SimpleITK header
is written out here (LPS -> RAS: negate x and y).
"""

from __future__ import annotations

import errno
import locale
import logging
import resource
import signal

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import ThresholdModel, volume_record, write_nifti
from torch import nn

from vmunet.inference import Predictor, io


def rotated_2d(angle_deg: float, size=(23, 17), spacing=(0.7, 1.3), origin=(-12.5, 40.25), seed=0) -> sitk.Image:
    """A 2D float image whose direction is rotated by ``angle_deg`` (ITK's DirectionPlus30 files)."""
    a = np.deg2rad(angle_deg)
    arr = np.random.default_rng(seed).uniform(0, 100, size=size[::-1]).astype(np.float32)  # (y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection((np.cos(a), -np.sin(a), np.sin(a), np.cos(a)))
    return img


def ras_affine_2d(img: sitk.Image) -> np.ndarray:
    """voxel (i, j, 0) -> RAS mm of a 2D SimpleITK image, by hand: LPS rows x and y negated."""
    d = np.asarray(img.GetDirection()).reshape(2, 2) * np.asarray(img.GetSpacing())[None, :]
    aff = np.eye(4)
    aff[:2, :2] = -d
    aff[:2, 3] = -np.asarray(img.GetOrigin())
    return aff


@pytest.mark.parametrize("ext", [".mha", ".nhdr", ".mhd", ".nrrd"])
@pytest.mark.parametrize("angle", [30.0, -30.0])
def test_2d_slices_with_rotated_directions_are_predicted_onto_their_own_geometry(tmp_path, ext, angle):
    img = rotated_2d(angle)
    src = tmp_path / f"slice{ext}"
    sitk.WriteImage(img, str(src))
    x, y = img.GetSize()
    predictor = Predictor(ThresholdModel(50.0), volume_record(image_size=(y, x), intensity={"mode": "none"}),
                          device="cpu")
    out = tmp_path / "pred.nii.gz"
    pred = predictor.predict_file(src, out)
    assert pred.num_slices == 1

    got = sitk.ReadImage(str(out))  # before: refused ("expected a 3D volume, got a 2D image")
    assert got.GetDimension() == 2 and got.GetSize() == img.GetSize()
    np.testing.assert_allclose(got.GetOrigin(), img.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(got.GetSpacing(), img.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(got.GetDirection(), img.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(img) > 50.0)
    back = nib.load(str(out))
    assert back.shape == (x, y)
    np.testing.assert_allclose(back.affine, ras_affine_2d(img), atol=1e-5)


def test_2d_vector_images_are_refused_in_one_line(tmp_path):
    """itkBrainSliceComplex.mha: 2 components per pixel."""
    img = sitk.Compose(rotated_2d(30.0), rotated_2d(30.0, seed=1))
    src = tmp_path / "complex.mha"
    sitk.WriteImage(img, str(src))
    with pytest.raises(io.ScanReadError) as err:
        io.read_scan(src)
    assert str(err.value) == f"{src}: expected a single-channel volume, got 2 components per voxel"


class SliceMeanModel(nn.Module):
    """Class 1 on a whole slice when the slice's mean exceeds ``t``: the label map is constant on
    each slice, so it shows which planes the predictor cut."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1].mean(dim=(2, 3), keepdim=True) - self.t).expand_as(x[:, :1]) * 1e3
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def test_coronal_lsa_volume_is_cut_along_its_acquired_planes(tmp_path):
    """ITK's T1 is LSA (i -> left, j -> superior, k -> anterior): a coronal model (RAS axis 1)
    must segment the file's k-planes, whole, in the file's order."""
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 10, size=(12, 10, 9)).astype(np.float32)
    data += np.arange(9, dtype=np.float32)[None, None, :] * 5.0  # plane means rise along k
    lsa = np.array([[-2.0, 0, 0, 10], [0, 0, 3.0, -20], [0, 2.0, 0, 5], [0, 0, 0, 1]])
    src = write_nifti(tmp_path / "t1.nii.gz", data, lsa)
    assert nib.aff2axcodes(lsa) == ("L", "S", "A")
    t = float(data.mean())
    rec = volume_record(image_size=(10, 12), slice_axis=1, intensity={"mode": "none"})  # rows S, cols R
    pred = Predictor(SliceMeanModel(t), rec, device="cpu").predict_file(src, tmp_path / "pred.nii.gz")
    assert pred.num_slices == 9
    expected = np.broadcast_to((data.mean(axis=(0, 1)) > t)[None, None, :], data.shape)
    got = np.asarray(nib.load(str(tmp_path / "pred.nii.gz")).dataobj)
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected[0, 0].sum() < 9  # both classes present


def test_a_single_image_in_another_plane_is_refused_naming_the_planes(tmp_path):
    """A one-frame sagittal DICOM (pydicom's MR2) given to an axial model."""
    src = write_nifti(tmp_path / "sag.nii.gz", np.ones((1, 20, 16), np.float32), np.eye(4))
    with pytest.raises(io.ScanReadError) as err:
        Predictor(ThresholdModel(), volume_record(), device="cpu").predict_file(src, tmp_path / "p.nii.gz")
    assert str(err.value) == (
        f"{src}: in-plane size 1 x 20 (array shape (1, 20, 16)) is below the minimum of 8 voxels; the scan is a "
        "single sagittal image (one voxel along RAS axis 0), but this model segments axial slices (slice_axis 2); "
        "expected a scan with axial slices")


@pytest.fixture
def gdcm_writer_locale():
    """GDCM's writer sets the process locale to "C" and leaves it so; restored after the test."""
    saved = locale.setlocale(locale.LC_ALL)
    yield saved
    locale.setlocale(locale.LC_ALL, saved)


def _dicom(path, modality: str) -> None:
    img = sitk.GetImageFromArray(np.arange(12 * 10, dtype=np.int16).reshape(1, 12, 10))
    img.SetMetaData("0008|0060", modality)
    sitk.WriteImage(img, str(path))


def test_dicom_seg_is_refused_not_segmented(tmp_path, gdcm_writer_locale):
    """pydicom's liver.dcm (a DICOM-SEG) was read as an image of 0/255 bit planes and segmented."""
    folder = tmp_path / "seg"
    folder.mkdir()
    _dicom(folder / "seg.dcm", "SEG")
    ct = tmp_path / "ct"
    ct.mkdir()
    _dicom(ct / "ct.dcm", "CT")
    assert io.read_scan(ct).array.shape == (10, 12, 1)
    with pytest.raises(io.ScanReadError) as err:
        io.read_scan(folder)
    assert str(err.value).startswith(f"{folder}: seg.dcm is a segmentation (DICOM-SEG) (modality SEG, SOP class ")
    assert str(err.value).endswith("expected an image series to segment (CT, MR, ...)")


def test_a_lone_dicom_file_or_unknown_file_as_input_is_one_line_exit_2(tmp_path, capsys, gdcm_writer_locale,
                                                                        tiny_checkpoint):
    from vmunet.cli import main

    folder = tmp_path / "xray"
    folder.mkdir()
    _dicom(folder / "image.dcm", "CR")
    no_suffix = tmp_path / "IM0001"  # DICOM files often have no suffix: recognised by "DICM"
    no_suffix.write_bytes((folder / "image.dcm").read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for path, msg in [
        (folder / "image.dcm", f"{folder / 'image.dcm'}: a single DICOM file; DICOM is read as a series folder: give "
                               f"the folder holding its series ({folder}), with one series per folder (a lone image: "
                               "a folder of its own)"),
        (no_suffix, f"{no_suffix}: a single DICOM file;"),
        (notes, f"{notes}: unsupported file type (expected one of .nii.gz,"),
    ]:
        argv = ["predict", "-i", str(path), "-o", str(tmp_path / "out"), "-m", str(tiny_checkpoint), "--device", "cpu"]
        assert main(argv) == 2  # before: exit 1, the case "failed" as an unsupported file type
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"vmunet predict: error: {msg}") and "\n" not in err, err
    assert main(["predict", "-i", str(folder), "-o", str(tmp_path / "out"), "-m", str(tiny_checkpoint),
                 "--device", "cpu"]) == 0


def test_a_failing_label_map_write_names_the_output_and_leaves_nothing(tmp_path):
    """SimpleITK's NIfTI writer, used for SimpleITK inputs until now, reports nothing when the disk
    fills: a truncated .nii.gz was renamed into place (and SimpleITK reads it back without error).
    Reproduced with a file-size limit (writes fail with EFBIG, as they fail with ENOSPC on a full
    disk): the write must fail naming the output file, and leave no file behind."""
    src = tmp_path / "noise.mha"
    data = np.random.default_rng(0).uniform(0, 100, size=(8, 64, 64)).astype(np.float32)  # (z, y, x)
    sitk.WriteImage(sitk.GetImageFromArray(data), str(src))
    scan = io.read_scan(src)
    labels = (scan.array > 50).astype(np.uint8)  # random: compresses to ~5 KiB
    out = tmp_path / "out" / "noise.nii.gz"
    out.parent.mkdir()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limit[1]))
        with pytest.raises(OSError) as err:
            io.write_label_map(scan, labels, out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert err.value.errno == errno.EFBIG and err.value.filename == str(out)
    assert list(out.parent.iterdir()) == []
    io.write_label_map(scan, labels, out)  # without the limit: the whole label map
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), data > 50)


def test_a_full_disk_names_the_output_file_for_any_write_error(tmp_path):
    """Any ``OSError`` a writer raises without a file name (gzip's ``write``) names the output."""
    from vmunet.data.fileio import atomic_path

    for code in (errno.ENOSPC, errno.EFBIG, errno.EIO):
        with pytest.raises(OSError) as err, atomic_path(tmp_path / "x.nii.gz"):
            raise OSError(code, "failed")
        assert (err.value.errno, err.value.filename) == (code, str(tmp_path / "x.nii.gz"))
    assert list(tmp_path.iterdir()) == []


def test_the_input_hash_covers_the_data_file_a_header_names(tmp_path, tiny_checkpoint, caplog):
    """ITK's ``BrainProtonDensitySliceBorder20DirectionMinus30.mhd`` reads
    ``BrainProtonDensitySliceBorder20.zraw``, and ``RatLungSlice1.mha`` a separate ``.raw``: the
    data file was found by the header's name (``<stem>.raw``), so these were missed, and a changed
    data file left the old prediction "up to date"."""
    from vmunet.cli import main

    data = tmp_path / "data"
    data.mkdir()
    vol = np.random.default_rng(0).uniform(0, 100, size=(4, 32, 32)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(data / "shared.mhd"), True)  # shared.mhd + shared.zraw
    header = (data / "shared.mhd").read_text()
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "minus30.mhd").write_text(header.replace("ElementDataFile = shared.zraw",
                                                      "ElementDataFile = ../data/shared.zraw"))
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(data / "plain.mhd"), False)  # plain.mhd + plain.raw
    (scans / "lung.mha").write_text((data / "plain.mhd").read_text().replace(
        "ElementDataFile = plain.raw", "ElementDataFile = ../data/plain.raw"))
    assert io.input_files(scans / "minus30.mhd") == [scans / "minus30.mhd", scans / "../data/shared.zraw"]
    assert io.input_files(scans / "lung.mha") == [scans / "lung.mha", scans / "../data/plain.raw"]

    argv = ["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(tiny_checkpoint), "--device", "cpu"]
    assert main(argv) == 0
    sitk.WriteImage(sitk.GetImageFromArray(vol[::-1].copy()), str(data / "shared.mhd"), True)  # new voxels
    sitk.WriteImage(sitk.GetImageFromArray(vol[::-1].copy()), str(data / "plain.mhd"), False)
    caplog.set_level(logging.INFO)
    assert main(argv) == 0
    for name in ("minus30", "lung"):
        assert f"recomputing {name}.nii.gz: the input file differs" in caplog.text


class PosteriorRowsModel(nn.Module):
    """Class 1 on the first half of each slice's rows, whatever the input: shows where the
    predictor put the slice's rows (an axial slice of the RAS array has rows along Y, posterior
    first; a coronal one along Z, inferior first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[2], dtype=x.dtype)[None, None, :, None]
        fg = (x.shape[2] / 2 - rows).expand_as(x[:, :1]) * 1e3  # row < h / 2 (a tie is class 0)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def ras_index(affine_file: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """For each voxel (i, j, k) of a file, its index in nibabel's closest-canonical (RAS) array,
    from nibabel's own ``as_closest_canonical`` affine: ``(3, *shape)``."""
    canon = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape, np.uint8), affine_file)).affine
    ijk = np.stack([*np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), np.ones(shape)])
    return np.rint(np.einsum("ab,b...->a...", np.linalg.inv(canon) @ affine_file, ijk)[:3]).astype(int)


@pytest.mark.parametrize("case", ["2d_plus30", "2d_minus30", "3d_oblique_permuted"])
def test_rows_of_the_model_are_the_ras_axis_on_oblique_files(tmp_path, case):
    """Round trip image -> RAS -> prediction -> source geometry on oblique files, with a "model"
    whose output depends on the position in the slice: the label map must be the posterior half
    of the RAS array, mapped to the file's voxels by nibabel's canonical affine."""
    from inference_helpers import oblique_affine, sitk_image

    if case.startswith("2d"):
        img = rotated_2d(30.0 if case == "2d_plus30" else -30.0, size=(20, 14))
        shape = (*img.GetSize(), 1)
        affine = ras_affine_2d(img)
    else:
        affine = oblique_affine(spacing=(1.1, 0.6, 3.0), angles=(0.05, 0.1, -0.4), flips=(-1, 1, -1), perm=(2, 0, 1))
        shape = (20, 24, 9)
        img = sitk_image(np.zeros(shape, np.float32), affine)
    src = tmp_path / "scan.mha"
    sitk.WriteImage(img, str(src))
    ras_shape = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape, np.uint8), affine)).shape
    rec = volume_record(image_size=(ras_shape[1], ras_shape[0]), intensity={"mode": "none"})  # no resizing
    Predictor(PosteriorRowsModel(), rec, device="cpu").predict_file(src, tmp_path / "pred.nii.gz")
    got = np.asarray(nib.load(str(tmp_path / "pred.nii.gz")).dataobj).reshape(shape)
    expected = ras_index(affine, shape)[1] < ras_shape[1] / 2
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected.sum() < expected.size

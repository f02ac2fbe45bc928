"""Every real scan file read with its geometry and predicted back onto exactly that geometry.

References are the third-party readers, used directly: SimpleITK (array, origin, spacing,
direction; the LPS -> RAS affine written out below) and nibabel (affine, qform/sform codes). The
"model" thresholds the raw intensity, so the expected label map is ``source array > t`` computed
on the file's own voxel grid: any flip, transpose or shift on the way in or out breaks equality.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vmunet.data.preprocessing import make_preprocessing
from vmunet.inference import Predictor
from vmunet.inference.io import ScanReadError, read_scan

pytestmark = pytest.mark.real


class ThresholdModel(nn.Module):
    """Logits whose argmax is ``x > t`` (class 1) -- a deterministic stand-in for a network."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), (x[:, :1] - self.t) * 1e3], dim=1)


def sitk_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array in file voxel order (i, j, k), voxel -> RAS mm affine) straight from SimpleITK."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())[None, :]
    lps[:3, 3] = img.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def scan_files(rec: dict) -> list[Path]:
    """The source's shipped 3D scans plus the images and labels of its converted data sets."""
    import SimpleITK as sitk

    root = rec["root"]
    files = []
    for rel in rec["files"]:
        p = root / rel
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
        if reader.GetDimension() == 3 and reader.GetNumberOfComponents() == 1:
            files.append(p)
    for name in rec["datasets"]:
        files += sorted((root / name).glob("*/*.nii.gz"))
    return files


def check_read_and_predict(path: Path, tmp_path: Path) -> None:
    ref, ref_affine = sitk_reference(path)
    # 1. read with geometry: file layout and RAS view both agree with SimpleITK
    raw = read_scan(path, orientation=None)
    np.testing.assert_array_equal(raw.array, ref)
    np.testing.assert_allclose(raw.affine, ref_affine, atol=1e-4)
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.to_original(scan.array), ref)
    ras_codes = "".join(__import__("nibabel").aff2axcodes(scan.affine))
    assert ras_codes == "RAS", f"{path.name}: reoriented scan is {ras_codes}"

    # 2. predict back: threshold at a value between the data's quartiles (both classes present)
    t = float(np.percentile(ref, 60)) + 0.5
    h, w = scan.array.shape[1], scan.array.shape[0]  # axial slices of (X, Y, Z) are (Y, X) images
    rec = make_preprocessing("nifti", in_chans=1, image_size=(h, w), class_names=["background", "above"],
                             num_classes=2, intensity={"mode": "none"}, orientation="RAS", slice_axis=2)
    out = tmp_path / f"{path.name}.pred.nii.gz"
    Predictor(ThresholdModel(t), rec, device="cpu", batch_size=16).predict_file(path, out)

    import SimpleITK as sitk

    src, got = sitk.ReadImage(str(path)), sitk.ReadImage(str(out))
    assert got.GetSize() == src.GetSize(), path.name
    np.testing.assert_allclose(got.GetOrigin(), src.GetOrigin(), atol=1e-3, err_msg=path.name)
    np.testing.assert_allclose(got.GetSpacing(), src.GetSpacing(), rtol=1e-5, err_msg=path.name)
    np.testing.assert_allclose(got.GetDirection(), src.GetDirection(), atol=1e-5, err_msg=path.name)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got).transpose(2, 1, 0), (ref > t).astype(np.uint8),
                                  err_msg=path.name)
    if path.name.endswith(".nii.gz"):  # NIfTI in, NIfTI out: the very same header geometry
        import nibabel as nib

        a, b = nib.load(str(path)), nib.load(str(out))
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
        assert int(b.header["qform_code"]) == int(a.header["qform_code"])
        assert int(b.header["sform_code"]) == int(a.header["sform_code"])
        np.testing.assert_allclose(b.get_qform(), a.get_qform(), atol=1e-5)


@pytest.mark.parametrize("source", ["pyradiomics", "invesalius", "itk"])
def test_real_scans_read_and_predicted_back_onto_their_geometry(source, request, tmp_path):
    rec = request.getfixturevalue(source)
    files = scan_files(rec)
    expected = {"pyradiomics": 10 + 2 * 5, "invesalius": 2 + 2 * 4, "itk": 4 + 2 * 4}[source]
    assert len(files) == expected, [p.name for p in files]
    torch.set_num_threads(1)
    for path in files:
        check_read_and_predict(path, tmp_path)


def test_real_orientations_are_what_the_packages_say(pyradiomics, itk):
    """The point of these files: non-LPS/RAS orientations really reach the reader."""
    import nibabel as nib

    codes = {p.name: "".join(nib.aff2axcodes(read_scan(p, orientation=None).affine))
             for p in [pyradiomics["root"] / "files" / "brain1_image.nrrd",
                       pyradiomics["root"] / "files" / "lung1_image.nrrd",
                       itk["root"] / "files" / "KmeansTest_T1UCharRaw.nii.gz"]}
    assert codes == {"brain1_image.nrrd": "LAS", "lung1_image.nrrd": "LPS",
                     "KmeansTest_T1UCharRaw.nii.gz": "LSA"}


def rescale(ds) -> tuple[float, float]:
    """Modality LUT (slope, intercept): top level, or the enhanced objects' functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq, [])[:1]:
            for item in group.get("PixelValueTransformationSequence", [])[:1]:
                return float(item.get("RescaleSlope", 1)), float(item.get("RescaleIntercept", 0))
    return 1.0, 0.0


def test_real_dicom_files_are_read_or_refused_clearly(pydicom_files, tmp_path):
    """Each single-file DICOM object, as a one-file series folder: read with the header's grid
    and values (pydicom is the reference), or refused with a one-line message naming the folder."""
    import pydicom

    read, refused = [], {}
    for rel in pydicom_files["files"]:
        src = pydicom_files["root"] / rel
        folder = tmp_path / src.stem
        folder.mkdir()
        shutil.copy(src, folder / src.name)
        ds = pydicom.dcmread(str(src), stop_before_pixels=True, force=True)
        try:
            scan = read_scan(folder, orientation=None)
        except ScanReadError as err:
            msg = str(err)
            assert msg.startswith(str(folder)), msg
            assert "\n" not in msg, msg
            refused[src.name] = msg
            continue
        read.append(src.name)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        assert scan.array.shape == (int(ds.Columns), int(ds.Rows), frames), src.name
        if "PixelSpacing" in ds:  # (row spacing, column spacing) -> SimpleITK (x, y)
            row, col = (float(v) for v in ds.PixelSpacing)
            if not (row > 0 and col > 0):  # RG1_J2KI says 0\0: GDCM falls back to 1 mm
                row = col = 1.0
            np.testing.assert_allclose(scan.spacing[:2], [col, row], rtol=1e-5, err_msg=src.name)
        if ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian:  # pydicom decodes it alone
            full = pydicom.dcmread(str(src), force=True)
            slope, intercept = rescale(full)
            values = full.pixel_array.astype(np.float64) * slope + intercept
            if int(full.BitsAllocated) == 1:  # DICOM-SEG bit planes: GDCM unpacks 1 to 255
                values = values * 255
            if full.PhotometricInterpretation == "MONOCHROME1":  # GDCM turns it into MONOCHROME2
                values = (2 ** int(full.BitsStored) - 1) - values
            got = scan.array.transpose(2, 1, 0)  # (frames, rows, columns), pydicom's order
            np.testing.assert_allclose(got, values.reshape(got.shape), err_msg=src.name)
    # the plain single-frame greyscale objects must be read, not refused
    for name in ("693_UNCR.dcm", "693_J2KR.dcm", "MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
                 "RG1_UNCR.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm"):
        assert name in read, refused.get(name)
    # multi-frame greyscale objects (enhanced MR, 10 frames; enhanced CT, 2 frames) are volumes
    for name in ("emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm", "eCT_Supplemental.dcm"):
        assert name in read, refused.get(name)
    # colour and palette objects are refused for what they are; so is a segmentation (DICOM-SEG)
    for name in ("SC_rgb.dcm", "US1_UNCR.dcm", "OT-PAL-8-face.dcm"):
        assert "single-channel" in refused[name], refused[name]
    assert "is a segmentation (DICOM-SEG)" in refused["liver.dcm"], refused.get("liver.dcm")
    assert len(read) + len(refused) == 68 and len(read) == 29  # README "Real data"


def test_real_truncated_dicom_is_refused_in_one_line(pydicom_files, tmp_path):
    """SimpleITK's error for this file spans two lines and names ITK's C++ source; ours is one line
    (the default tier reproduces it with a DICOM written in the test: tests/inference/test_io.py)."""
    src = pydicom_files["root"] / "files" / "emri_small_jpeg_2k_lossless_too_short.dcm"
    folder = tmp_path / "truncated"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    with pytest.raises(ScanReadError) as err:
        read_scan(folder)
    assert str(err.value) == (f"{folder}: cannot read its DICOM series (1 file: {src.name}); expected complete "
                              "DICOM files that GDCM can decode (SimpleITK: GDCMImageIO: Failed to change to "
                              "Implicit Transfer Syntax)")


def test_real_multiframe_dicom_is_read_as_a_volume(pydicom_files, tmp_path):
    import pydicom

    src = pydicom_files["root"] / "files" / "emri_small.dcm"
    folder = tmp_path / "emri"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    scan = read_scan(folder, orientation=None)
    ref = pydicom.dcmread(str(src)).pixel_array  # (frames, rows, cols)
    np.testing.assert_array_equal(scan.array, ref.transpose(2, 1, 0))

"""Inference on the real files whose headers are the hard cases (second audit, ``make test-real``):
ITK's 2D MetaImage/NRRD slices with +-30 degree directions, the coronal (LSA) T1, pydicom's
oblique single-frame MR, DICOM-SEG, and the pyradiomics lesion masks placed back as predictions.

References: SimpleITK and nibabel read the sources and the written label maps directly; expected
label maps are computed on the source's own voxel grid. The default tier reproduces each header
property with files written in the test (tests/inference/test_header_geometry.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from vmunet.data.preprocessing import make_preprocessing
from vmunet.inference import Predictor
from vmunet.inference.io import ScanReadError, read_scan, write_label_map

pytestmark = pytest.mark.real


class ThresholdModel(nn.Module):
    """Logits whose argmax is ``x > t`` (class 1)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), (x[:, :1] - self.t) * 1e3], dim=1)


class SliceMeanModel(nn.Module):
    """Class 1 on a whole slice when its mean exceeds ``t``: shows which planes were cut."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1].mean(dim=(2, 3), keepdim=True) - self.t).expand_as(x[:, :1]) * 1e3
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def record(image_size, slice_axis: int = 2) -> dict:
    return make_preprocessing("nifti", in_chans=1, image_size=image_size, class_names=["background", "above"],
                              num_classes=2, intensity={"mode": "none"}, orientation="RAS", slice_axis=slice_axis)


def info(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def ras_affine(img: sitk.Image) -> np.ndarray:
    """voxel -> RAS mm of a 2D or 3D SimpleITK image (a 2D one in the plane z = 0), by hand."""
    nd = img.GetDimension()
    aff = np.eye(4)
    aff[:nd, :nd] = np.asarray(img.GetDirection()).reshape(nd, nd) * np.asarray(img.GetSpacing())[None, :]
    aff[:nd, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def assert_same_geometry(got: sitk.Image, src: sitk.Image, name: str) -> None:
    assert got.GetDimension() == src.GetDimension() and got.GetSize() == src.GetSize(), name
    np.testing.assert_allclose(got.GetOrigin(), src.GetOrigin(), atol=1e-3, err_msg=name)
    np.testing.assert_allclose(got.GetSpacing(), src.GetSpacing(), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(got.GetDirection(), src.GetDirection(), atol=1e-5, err_msg=name)


def test_real_2d_itk_slices_are_predicted_onto_their_own_geometry(itk, tmp_path):
    """ITK's 2D files (+-30 degree directions, .mhd/.nhdr/.zraw/.mha): each greyscale one predicted
    back onto exactly its 2D geometry (they were refused as "expected a 3D volume"); the vector
    ones (itkBrainSliceComplex, 2 components; BayesianClassifierInitializerMemberships, 4) refused
    in one line naming the file."""
    torch.set_num_threads(1)
    done, refused = [], []
    for rel in itk["files"]:
        p = itk["root"] / rel
        if p.suffix in (".raw", ".zraw") or info(p).GetDimension() != 2:
            continue
        if info(p).GetNumberOfComponents() != 1:
            with pytest.raises(ScanReadError) as err:
                read_scan(p)
            assert str(err.value) == (f"{p}: expected a single-channel volume, got "
                                      f"{info(p).GetNumberOfComponents()} components per voxel")
            refused.append(p.name)
            continue
        src = sitk.ReadImage(str(p))
        ref = sitk.GetArrayFromImage(src)  # (y, x)
        t = float(np.percentile(ref, 60)) + 0.25
        x, y = src.GetSize()
        out = tmp_path / f"{p.name}.nii.gz"
        pred = Predictor(ThresholdModel(t), record((y, x)), device="cpu").predict_file(p, out)
        assert pred.num_slices == 1
        got = sitk.ReadImage(str(out))
        assert_same_geometry(got, src, p.name)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got), (ref > t).astype(np.uint8), err_msg=p.name)
        assert 0 < (ref > t).sum() < ref.size, p.name
        back = nib.load(str(out))
        assert back.shape == (x, y), p.name
        np.testing.assert_allclose(back.affine, ras_affine(src), atol=1e-4, err_msg=p.name)
        # the API returns what was written, and sizes a 2D file as an area: pixels x its two spacings
        np.testing.assert_array_equal(pred.labels, (ref > t).T, err_msg=p.name)
        area = float((ref > t).sum()) * float(np.prod(src.GetSpacing()))
        assert pred.areas_mm2() == pytest.approx({"above": area}, rel=1e-6), p.name
        done.append(p.name)
    assert len(done) == 23 and sorted(refused) == ["BayesianClassifierInitializerMemberships.mhd",
                                                   "itkBrainSliceComplex.mha"]
    rotated = [n for n in done if "Direction" in n]
    assert len(rotated) == 9  # the +-30 degree files: 3 images x (Plus30 .mhd, Plus30 .nhdr, Minus30 .mhd)


def test_real_coronal_t1_is_cut_along_its_acquired_planes(itk, tmp_path):
    """KmeansTest_T1UCharRaw is LSA: the file's k axis is anterior. A coronal model (RAS axis 1)
    must see the file's k-planes, whole: a per-slice decision is constant on each of them and
    equal to the decision computed on that plane of the file."""
    torch.set_num_threads(1)
    src = itk["root"] / "files" / "KmeansTest_T1UCharRaw.nii.gz"
    data = np.asarray(nib.load(str(src)).dataobj, dtype=np.float32)
    assert nib.aff2axcodes(nib.load(str(src)).affine) == ("L", "S", "A")
    t = float(np.median(data.mean(axis=(0, 1))))
    rec = record((data.shape[1], data.shape[0]), slice_axis=1)  # coronal slice: rows S (j), columns R (i)
    out = tmp_path / "t1.nii.gz"
    pred = Predictor(SliceMeanModel(t), rec, device="cpu", batch_size=16).predict_file(src, out)
    assert pred.num_slices == data.shape[2] == 62
    expected = np.broadcast_to((data.mean(axis=(0, 1)) > t)[None, None, :], data.shape).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), expected)


def test_real_oblique_single_frame_mr_round_trips_or_is_refused_by_plane(pydicom_files, tmp_path):
    """MR2_UNCR: one 1024^2 frame whose rows run at 55 degrees in the axial plane (ImageOrientation
    0.569\\0.822\\0\\0\\0\\-1), nearest to sagittal. A sagittal model predicts it back onto exactly that
    oblique geometry; an axial model refuses it naming both planes."""
    torch.set_num_threads(1)
    folder = tmp_path / "MR2_UNCR"
    folder.mkdir()
    shutil.copy(pydicom_files["root"] / "files" / "MR2_UNCR.dcm", folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    src = reader.Execute()
    direction = np.asarray(src.GetDirection()).reshape(3, 3)
    assert abs(direction[0, 0]) > 0.5 and abs(direction[0, 0]) < 0.6  # oblique, not axis-aligned
    ref = sitk.GetArrayFromImage(src)  # (1, rows, columns)
    t = float(np.percentile(ref, 70)) + 0.5
    out = tmp_path / "mr2.nii.gz"
    pred = Predictor(ThresholdModel(t), record((1024, 1024), slice_axis=0), device="cpu").predict_file(folder, out)
    got = sitk.ReadImage(str(out))
    assert_same_geometry(got, src, "MR2_UNCR")
    # one image (PixelSpacing 0.195313 \\ 0.195313; GDCM's third spacing is SpacingBetweenSlices 6.6, the
    # thickness 6.0): an area on the sagittal plane, RAS axis 0
    assert src.GetSpacing()[2] == pytest.approx(6.6) and pred.scan.plane_axis == 0
    assert pred.areas_mm2() == pytest.approx({"above": float((ref > t).sum()) * 0.195313 ** 2}, rel=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), (ref > t).astype(np.uint8))
    np.testing.assert_allclose(nib.load(str(out)).affine, ras_affine(src), atol=1e-4)
    with pytest.raises(ScanReadError) as err:
        Predictor(ThresholdModel(t), record((64, 64)), device="cpu").predict_file(folder, tmp_path / "axial.nii.gz")
    assert "the scan is a single sagittal image (one voxel along RAS axis 0), but this model segments axial " \
           "slices (slice_axis 2)" in str(err.value)


def test_real_dicom_seg_is_refused(pydicom_files, tmp_path):
    """liver.dcm (QIICR's liver DICOM-SEG): SimpleITK reads its bit planes as a 0/255 image; it was
    segmented like a CT."""
    for name in ("liver.dcm", "liver_expb.dcm"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(pydicom_files["root"] / "files" / name, folder)
        with pytest.raises(ScanReadError) as err:
            read_scan(folder)
        assert str(err.value) == (f"{folder}: {name} is a segmentation (DICOM-SEG) (modality SEG, SOP class "
                                  "1.2.840.10008.5.1.4.1.1.66.4); expected an image series to segment (CT, MR, ...)")


def test_real_lesion_masks_written_as_predictions_land_on_their_voxels(pyradiomics, tmp_path):
    """Each pyradiomics lesion mask, read to RAS and written as the "prediction" of its image (LAS
    brain MR, LPS chest CT and breast MR): the written label map is the NRRD mask, voxel for voxel,
    on the image's grid."""
    files = pyradiomics["root"] / "files"
    for case in ("brain1", "brain2", "breast1", "lung1", "lung2"):
        image, label = files / f"{case}_image.nrrd", files / f"{case}_label.nrrd"
        scan, lab = read_scan(image), read_scan(label)
        np.testing.assert_allclose(lab.affine, scan.affine, atol=1e-4)
        out = tmp_path / f"{case}.nii.gz"
        write_label_map(scan, lab.array.astype(np.uint8), out)
        got, src, mask = sitk.ReadImage(str(out)), sitk.ReadImage(str(image)), sitk.ReadImage(str(label))
        assert_same_geometry(got, src, case)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(mask), err_msg=case)
        assert sitk.GetArrayFromImage(mask).sum() > 0


def test_real_detached_headers_hash_the_data_files_they_name(itk):
    """The input hash (what `predict` compares before reusing an output) covers the file each
    header names, whatever its stem; the header text is the reference."""
    from vmunet.inference.io import input_files

    files = itk["root"] / "files"
    expected = {"BrainProtonDensitySliceBorder20DirectionMinus30.mhd": "BrainProtonDensitySliceBorder20.zraw",
                "BrainProtonDensitySliceBorder20DirectionPlus30.mhd": "BrainProtonDensitySliceBorder20.zraw",
                "BrainT1SliceBorder20DirectionMinus30.mhd": "BrainT1SliceBorder20DirectionPlus30.zraw",
                "BrainProtonDensitySliceBorder20DirectionPlus30.nhdr": "BrainProtonDensitySliceBorder20DirectionPlus30.raw",
                "RatLungSlice1.mha": "RatLungSlice1.raw", "BrainProtonDensity3Slices.mha": "BrainProtonDensity3Slices.raw"}
    for header, data in expected.items():
        text = (files / header).read_bytes()[:4096]
        assert data.encode() in text, header  # what the header says
        assert input_files(files / header) == [files / header, files / data], header
    assert input_files(files / "itkBrainSliceComplex.mha") == [files / "itkBrainSliceComplex.mha"]  # LOCAL


def test_real_folder_of_many_series_is_refused_in_a_short_line(pydicom_files):
    """pydicom-data's folder holds 21 series: the refusal lists 3 UIDs, not all 21."""
    folder = pydicom_files["root"] / "files"
    with pytest.raises(ScanReadError) as err:
        read_scan(folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder}: folder holds 21 DICOM series (series UIDs [") and "(+18 more)" in msg, msg
    assert msg.endswith("expected one series per folder: put each in its own folder") and len(msg) < 400, msg


class FirstRowsModel(nn.Module):
    """Class 1 on rows ``< h / 2`` of every slice, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[2], dtype=x.dtype)[None, None, :, None]
        fg = (x.shape[2] / 2 - rows).expand_as(x[:, :1]) * 1e3
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


@pytest.mark.parametrize(("source", "name"), [("pyradiomics", "brain1_image.nrrd"), ("pyradiomics", "lung1_image.nrrd"),
                                              ("itk", "KmeansTest_T1UCharRaw.nii.gz")])
@pytest.mark.parametrize("slice_axis", [2, 1])
def test_real_slice_rows_are_the_ras_axis(source, name, slice_axis, request, tmp_path):
    """LAS / LPS NRRD and the LSA T1, axial and coronal models: with a "model" that marks the first
    half of each slice's rows, the label map is the half of the RAS array below the middle of the
    row axis (Y for axial slices, Z for coronal ones), mapped to the file's voxels through nibabel's
    ``as_closest_canonical`` of the file's own affine (SimpleITK's, converted here by hand)."""
    torch.set_num_threads(1)
    path = request.getfixturevalue(source)["root"] / "files" / name
    src = sitk.ReadImage(str(path))
    shape = src.GetSize()
    affine = ras_affine(src)
    canon = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape, np.uint8), affine))
    row_axis = max(a for a in (0, 1, 2) if a != slice_axis)  # slices (slice axis; rows, columns) = reversed others
    col_axis = min(a for a in (0, 1, 2) if a != slice_axis)
    rec = record((canon.shape[row_axis], canon.shape[col_axis]), slice_axis=slice_axis)
    out = tmp_path / "rows.nii.gz"
    Predictor(FirstRowsModel(), rec, device="cpu", batch_size=32).predict_file(path, out)
    ijk = np.stack([*np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), np.ones(shape)])
    ras = np.rint(np.einsum("ab,b...->a...", np.linalg.inv(canon.affine) @ affine, ijk)[:3]).astype(int)
    expected = (ras[row_axis] < canon.shape[row_axis] / 2).astype(np.uint8)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0)
    np.testing.assert_array_equal(got, expected, err_msg=name)


def test_real_single_frame_dicom_is_sized_as_an_area_and_written_as_its_series(pydicom_files, tmp_path, caplog):
    """pydicom's single CT slices (693_UNCR: SliceThickness 5, SpacingBetweenSlices 20, so GDCM's
    third spacing is 20 mm; explicit_VR-UN: no SpacingBetweenSlices, 1.0) and CR radiographs
    (RG1_UNCR: PixelSpacing 0\\0; RG3_UNCR: none; GDCM gives both 1.0 mm): each is one 2D image,
    sized as pixel count x the two pixel spacings (pydicom's PixelSpacing for the CTs; GDCM's 1.0
    for the radiographs, which state none) -- it was a "volume" of area x the third spacing -- and
    its label map is the one-slice NIfTI of the series as SimpleITK reads it. The radiographs, and
    only they (pydicom reads no positive PixelSpacing), are warned about and marked
    ``spacing_known`` False: their "mm^2" are pixel counts."""
    import logging

    import pydicom

    torch.set_num_threads(1)
    for name, pixel_mm, third_mm in (("693_UNCR.dcm", (0.478516, 0.478516), 20.0),
                                     ("explicit_VR-UN.dcm", (0.859375, 0.859375), 1.0),
                                     ("RG1_UNCR.dcm", None, 1.0), ("RG3_UNCR.dcm", None, 1.0)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(pydicom_files["root"] / "files" / name, folder)
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        assert "NumberOfFrames" not in ds, name
        if pixel_mm is not None:
            assert [float(v) for v in ds.PixelSpacing] == list(pixel_mm), name
        stated = "PixelSpacing" in ds and all(float(v) > 0 for v in ds.PixelSpacing)
        assert "ImagerPixelSpacing" not in ds and stated == (pixel_mm is not None), name
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        src = reader.Execute()
        assert src.GetSpacing()[2] == pytest.approx(third_mm), name
        ref = sitk.GetArrayFromImage(src)[0]  # (rows, columns)
        t = float(ref.mean())  # RG3 is mostly saturated (1023): a percentile would mark nothing
        out = tmp_path / f"{name}.nii.gz"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vmunet.inference.io"):
            pred = Predictor(ThresholdModel(t), record(ref.shape), device="cpu").predict_file(folder, out)
        warned = [r.getMessage() for r in caplog.records if "states no pixel spacing" in r.getMessage()]
        assert pred.scan.spacing_known is stated, name
        assert len(warned) == (0 if stated else 1) and all(m.startswith(f"{folder}: {name} ") for m in warned), name
        got = sitk.ReadImage(str(out))
        assert_same_geometry(got, src, name)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got)[0], (ref > t).astype(np.uint8), err_msg=name)
        assert pred.size_unit == "areas_mm2" and 0 < (ref > t).sum() < ref.size, name
        pixel_area = float(np.prod(pixel_mm)) if pixel_mm is not None else 1.0
        assert pred.areas_mm2() == pytest.approx({"above": float((ref > t).sum()) * pixel_area}, rel=1e-6), name
        with pytest.raises(ValueError, match="single 2D image"):
            pred.volumes_ml()

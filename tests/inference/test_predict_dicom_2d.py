"""A single-frame DICOM series (one file, one frame: a radiograph, one CT slice) is a single 2D
image: sized in mm^2 and scored in 2D like a 2D file (``Scan.plane_axis``), while its label map
stays the 3D one-slice NIfTI of the series as GDCM reads it (it places the slice in space).

GDCM gives such a series a third spacing of SpacingBetweenSlices (0018,0088), or 1.0 without it,
never SliceThickness (0018,0050): the "volume" it used to report was area x that spacing.

References: the DICOM tags are read back with pydicom (PixelSpacing = row spacing \\ column
spacing); areas are pixel counts x those two spacings; Dice and HD95 are computed by hand in the
docstring of the ``--reference`` test (medpy's 2D hd95 agrees).
"""

from __future__ import annotations

import csv
import json
import locale

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from inference_helpers import ThresholdModel, volume_record

from vmunet.inference import Predictor

SBS = {"absent": None, "present": 7.0}  # SpacingBetweenSlices; SliceThickness is 2.0 mm in both


@pytest.fixture
def gdcm_writer_locale():
    """GDCM's writer sets the process locale to "C" and leaves it so; restored after the test."""
    saved = locale.setlocale(locale.LC_ALL)
    yield saved
    locale.setlocale(locale.LC_ALL, saved)


def write_dicom(folder, arr_yx: np.ndarray, spacing_xy: tuple[float, float], sbs: float | None):
    """One CT frame (rows y, columns x) at LPS origin (10, -20, 33), axial, thickness 2 mm."""
    folder.mkdir(parents=True)
    img = sitk.GetImageFromArray(arr_yx.astype(np.int16)[None])
    img.SetSpacing((*spacing_xy, sbs or 1.0))  # GDCM writes SpacingBetweenSlices from the 3rd spacing
    img.SetOrigin((10.0, -20.0, 33.0))
    img.SetMetaData("0008|0060", "CT")
    img.SetMetaData("0018|0050", "2.0")
    if sbs is not None:
        img.SetMetaData("0018|0088", f"{sbs}")
    sitk.WriteImage(img, str(folder / "slice.dcm"))
    ds = pydicom.dcmread(folder / "slice.dcm")
    if sbs is None and "SpacingBetweenSlices" in ds:  # GDCM writes one (1.0) once it has read a file with one
        del ds.SpacingBetweenSlices
        ds.save_as(folder / "slice.dcm")
    assert [float(v) for v in ds.PixelSpacing] == [spacing_xy[1], spacing_xy[0]]  # row (y) \ column (x)
    assert float(ds.SliceThickness) == 2.0
    assert (None if "SpacingBetweenSlices" not in ds else float(ds.SpacingBetweenSlices)) == sbs


@pytest.mark.parametrize("sbs", SBS)
def test_single_frame_dicom_is_sized_as_an_area_and_written_as_its_series(tmp_path, gdcm_writer_locale, sbs):
    """Pixels 0.8 mm (columns, x) x 0.5 mm (rows, y); area = count x 0.5 x 0.8 by hand, whatever
    the third spacing GDCM gives (1.0, or SpacingBetweenSlices 7.0; the thickness is 2.0)."""
    arr = np.random.default_rng(3).uniform(0, 100, size=(12, 10))  # (y, x)
    folder = tmp_path / "ct1"
    write_dicom(folder, arr, (0.8, 0.5), SBS[sbs])
    arr = np.rint(arr)  # as stored (int16)
    rec = volume_record(image_size=(12, 10), intensity={"mode": "none"})
    out = tmp_path / "pred.nii.gz"
    pred = Predictor(ThresholdModel(50.0), rec, device="cpu").predict_file(folder, out)

    expected = (arr.T > 50.0)[:, :, None]  # (x, y, 1): the series' voxel order
    assert pred.scan.plane_axis == 2
    assert pred.size_unit == "areas_mm2"
    assert pred.areas_mm2() == pytest.approx({"organ": int(expected.sum()) * 0.5 * 0.8}, rel=1e-6)
    with pytest.raises(ValueError, match=r"volumes_ml\(\) does not apply, the prediction is of a single 2D image"):
        pred.volumes_ml()

    # written as today: the 3D one-slice NIfTI with the series' geometry as SimpleITK reads it
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    src, got = reader.Execute(), sitk.ReadImage(str(out))
    assert src.GetSpacing() == pytest.approx((0.8, 0.5, SBS[sbs] or 1.0))
    assert got.GetDimension() == 3 and got.GetSize() == src.GetSize() == (10, 12, 1)
    np.testing.assert_allclose(got.GetOrigin(), (10.0, -20.0, 33.0), atol=1e-4)
    np.testing.assert_allclose(got.GetSpacing(), src.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(got.GetDirection(), src.GetDirection(), atol=1e-6)
    written = np.asarray(nib.load(str(out)).dataobj)
    assert pred.labels.shape == written.shape == (10, 12, 1)
    np.testing.assert_array_equal(written, expected)
    np.testing.assert_array_equal(pred.labels, expected)


@pytest.fixture()
def threshold_checkpoint(monkeypatch):
    """``predict -m anything``: a ThresholdModel (class 1 where the raw value is above 50) with an
    axial 16 x 16 record, so the CLI's label maps are known exactly."""

    def from_checkpoint(cls, path, **kwargs):
        return cls(ThresholdModel(), volume_record(image_size=(16, 16)), info={"checkpoint_sha256": "t" * 64},
                   **kwargs)

    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(from_checkpoint))


@pytest.mark.parametrize("sbs", SBS)
def test_predict_reference_on_a_single_frame_dicom_scores_the_image(tmp_path, threshold_checkpoint,
                                                                    gdcm_writer_locale, capsys, sbs):
    """By hand, in pixels (i = column, x; j = row, y), 0.5 mm along i and 3.0 mm along j
    (PixelSpacing 3.0 \\ 0.5): prediction A = i 6..9 x j 6..10 (20 px, contour 14 px), reference
    B = i 6, j 7..13 (7 px, all contour). Dice = 2 * 4 / 27 = 8/27. HD95 (pooled: the 95th
    percentile, linear, of the 21 contour distances = the second largest): B -> A gives 9 mm
    ((6,13) -> (6,10)), 6, 3, 0, 0, 0, 0; A -> B at most sqrt(1.5^2 + 3^2) = 3.35 mm; so HD95 =
    6.0 mm; in pixels sqrt(10), then 3: HD95 = 3.0 px. Area of A: 20 x 0.5 x 3.0 = 30 mm^2.
    Scored as the one-slice volume (third spacing 1.0, or 7.0 from SpacingBetweenSlices), every
    pixel of A is surface and HD95 is another number (checked with medpy below)."""
    from medpy import metric as medpy_metric

    from vmunet.cli import main

    a = np.zeros((16, 16))  # (j, i)
    a[6:11, 6:10] = 100.0
    b = np.zeros((16, 16), np.uint8)
    b[7:14, 6] = 1
    images, refs, out = tmp_path / "images", tmp_path / "refs", tmp_path / "out"
    write_dicom(images / "s1", a, (0.5, 3.0), SBS[sbs])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(images / "s1")))
    ref = sitk.GetImageFromArray(b[None])
    ref.CopyInformation(reader.Execute())  # the ground truth on the slice's grid, as a NIfTI
    refs.mkdir()
    sitk.WriteImage(ref, str(refs / "s1.nii.gz"))
    argv = ["predict", "-i", str(images), "-o", str(out), "-m", str(tmp_path / "t.ckpt"), "--device", "cpu",
            "--reference", str(refs)]
    for run in ("computed", "reused"):  # the reused case is scored from the label map read back
        assert main(argv) == 0, run
        with open(out / "metrics.csv") as f:
            (row,) = list(csv.DictReader(f))
        assert (row["case"], row["class"], row["status"]) == ("s1", "organ", "scored"), run
        assert float(row["dice"]) == pytest.approx(8 / 27)
        assert float(row["hd95"]) == pytest.approx(3.0)
        assert float(row["hd95_mm"]) == pytest.approx(6.0)
    assert "reused 1 up to date" in capsys.readouterr().out

    mask = np.zeros((16, 16), bool)
    mask[6:11, 6:10] = True
    assert medpy_metric.binary.hd95(mask, b.astype(bool), voxelspacing=(3.0, 0.5)) == pytest.approx(6.0)
    as_volume = medpy_metric.binary.hd95(mask[None], b.astype(bool)[None], voxelspacing=(SBS[sbs] or 1.0, 3.0, 0.5))
    assert as_volume != pytest.approx(6.0, abs=0.1)

    side = json.loads((out / "s1.json").read_text())
    assert side["areas_mm2"] == pytest.approx({"organ": 30.0}) and side["volumes_ml"] is None
    assert side["shape"] == [16, 16, 1] and side["spacing_ras_mm"] == pytest.approx([0.5, 3.0])


#: PixelSpacing as stored (None: the tag deleted); GDCM reads 1.0 mm for the first two.
PIXEL_SPACING = {"absent": None, "zero": "0\\0", "stated_1mm": "1\\1", "stated": "3.0\\0.5"}


@pytest.mark.parametrize("spacing", PIXEL_SPACING)
def test_dicom_without_a_pixel_spacing_is_warned_and_recorded(tmp_path, threshold_checkpoint, gdcm_writer_locale,
                                                               caplog, spacing):
    """A radiograph that states no pixel spacing (PixelSpacing deleted, or ``0\\0`` like pydicom's
    RG1_UNCR.dcm) is given 1.0 mm by GDCM: one warning naming the file, ``spacing_known`` false in
    the sidecar, its ``areas_mm2`` the pixel count, and no HD95 (mm) in metrics.csv (HD95 (vox) in
    pixels) -- also when the reused label map is scored. A stated spacing, 1\\1 included, is none of
    that. Images of the --reference test above: A = 20 px, Dice 8/27, HD95 3.0 px; with the stated
    3.0 \\ 0.5 mm, 30 mm^2 and 6.0 mm."""
    import logging

    from vmunet.cli import main

    a = np.zeros((16, 16))
    a[6:11, 6:10] = 100.0
    b = np.zeros((16, 16), np.uint8)
    b[7:14, 6] = 1
    images, refs, out = tmp_path / "images", tmp_path / "refs", tmp_path / "out"
    write_dicom(images / "cr", a, (0.5, 3.0), None)
    ds = pydicom.dcmread(images / "cr" / "slice.dcm")
    if PIXEL_SPACING[spacing] is None:
        del ds.PixelSpacing
    else:
        ds.PixelSpacing = PIXEL_SPACING[spacing].split("\\")
    ds.save_as(images / "cr" / "slice.dcm")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(images / "cr")))
    src = reader.Execute()
    unknown = spacing in ("absent", "zero")
    assert src.GetSpacing()[:2] == ((1.0, 1.0) if spacing != "stated" else (0.5, 3.0))
    ref = sitk.GetImageFromArray(b[None])
    ref.CopyInformation(src)
    refs.mkdir()
    sitk.WriteImage(ref, str(refs / "cr.nii.gz"))
    argv = ["predict", "-i", str(images), "-o", str(out), "-m", str(tmp_path / "t.ckpt"), "--device", "cpu",
            "--reference", str(refs)]
    caplog.set_level(logging.WARNING)
    for run in ("computed", "reused"):
        caplog.clear()
        assert main(argv) == 0, run
        warned = [r.getMessage() for r in caplog.records if "states no pixel spacing" in r.getMessage()]
        if unknown and run == "computed":  # the reused case reads its label map, not the DICOM
            assert warned == [f"{images / 'cr'}: slice.dcm states no pixel spacing (PixelSpacing (0028,0030) and "
                              "ImagerPixelSpacing (0018,1164) absent or 0); GDCM's nominal 1.0 mm stands in, so its "
                              "sizes (areas_mm2, volumes_ml) are pixel counts and HD95 (mm) is not reported "
                              "(spacing_known false in the sidecar)"]
        else:
            assert warned == [], run
        with open(out / "metrics.csv") as f:
            (row,) = list(csv.DictReader(f))
        assert float(row["dice"]) == pytest.approx(8 / 27), run
        assert float(row["hd95"]) == pytest.approx(3.0), run
        if unknown:
            assert row["hd95_mm"] == "", run
        else:
            assert float(row["hd95_mm"]) == pytest.approx(6.0 if spacing == "stated" else 3.0), run
    side = json.loads((out / "cr.json").read_text())
    assert side["spacing_known"] is not unknown
    assert side["areas_mm2"] == pytest.approx({"organ": 30.0 if spacing == "stated" else 20.0})

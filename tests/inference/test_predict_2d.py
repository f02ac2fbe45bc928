"""2D MetaImage/NRRD/NIfTI files (read as one slice): what the Python API returns and what
``vmunet predict`` reports for them -- the label map with the file's own axes, class sizes as
areas in mm^2 (no volume from a nominal 1 mm thickness), and ``--reference`` metrics on the 2D
image with its two pixel spacings.

References: areas are pixel counts of the source array written here x the product of the spacings
written here; Dice and HD95 of the ``--reference`` case are computed by hand in the test's
docstring (and medpy's 2D hd95 agrees).
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from inference_helpers import ThresholdModel, volume_record, write_nifti

from vmunet.inference import Predictor, io


def sitk_2d(arr_yx: np.ndarray, spacing, direction, origin=(-12.5, 40.25)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_yx)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    return img


def test_2d_file_gives_a_2d_label_map_and_areas_in_mm2(tmp_path):
    """Anisotropic 0.7 x 1.3 mm pixels, direction rotated by 30 degrees (ITK's DirectionPlus30)."""
    a = np.deg2rad(30.0)
    arr = np.random.default_rng(0).uniform(0, 100, size=(17, 23)).astype(np.float32)  # (y, x)
    src = tmp_path / "slice.mha"
    sitk.WriteImage(sitk_2d(arr, (0.7, 1.3), (np.cos(a), -np.sin(a), np.sin(a), np.cos(a))), str(src))
    predictor = Predictor(ThresholdModel(50.0), volume_record(image_size=(17, 23), intensity={"mode": "none"}),
                          device="cpu")
    out, probs = tmp_path / "pred.nii.gz", tmp_path / "probs.npz"
    pred = predictor.predict_file(src, out, probabilities_path=probs)

    expected = arr.T > 50.0  # (x, y): the file's voxel order
    written = np.asarray(nib.load(str(out)).dataobj)
    assert pred.labels.shape == written.shape == (23, 17)  # before: (23, 17, 1) beside a 2D file
    np.testing.assert_array_equal(pred.labels, expected)
    np.testing.assert_array_equal(written, expected)
    saved = np.load(probs)["probabilities"]
    assert pred.probabilities.shape == saved.shape == (2, 23, 17)
    np.testing.assert_array_equal(pred.probabilities, saved)
    assert pred.labels_oriented.shape == pred.scan.array.shape == (23, 17, 1)  # aligned with the RAS array

    assert pred.size_unit == "areas_mm2"
    assert pred.areas_mm2() == pytest.approx({"organ": int(expected.sum()) * 0.7 * 1.3}, rel=1e-6)
    with pytest.raises(ValueError, match=r"volumes_ml\(\) does not apply, the prediction is of a single 2D image"):
        pred.volumes_ml()


def test_2d_nifti_whose_third_axis_is_not_axial_is_sized_by_its_own_pixels(tmp_path):
    """A 2D NIfTI whose header puts i along S (0.6 mm), j along R (1.5 mm) and the missing k along A
    with pixdim 4 mm: a coronal model segments it; the area takes the two pixel sizes, never 4 mm."""
    data = np.random.default_rng(1).uniform(0, 100, size=(12, 10)).astype(np.float32)
    affine = np.array([[0, 1.5, 0, 3.0], [0, 0, 4.0, -7.0], [0.6, 0, 0, 11.0], [0, 0, 0, 1]])
    src = write_nifti(tmp_path / "cor.nii.gz", data, affine)
    assert nib.load(str(src)).shape == (12, 10)
    rec = volume_record(image_size=(12, 10), slice_axis=1, intensity={"mode": "none"})
    pred = Predictor(ThresholdModel(50.0), rec, device="cpu").predict_file(src, tmp_path / "pred.nii.gz")
    assert pred.scan.plane_axis == 1 and pred.labels_oriented.shape == (10, 1, 12)  # RAS: R, A, S
    np.testing.assert_array_equal(pred.labels, data > 50.0)
    assert np.asarray(nib.load(str(tmp_path / "pred.nii.gz")).dataobj).shape == (12, 10)
    assert pred.areas_mm2() == pytest.approx({"organ": int((data > 50.0).sum()) * 0.6 * 1.5})


def test_volumes_and_images_keep_their_sizes_and_refuse_areas(tmp_path):
    vol = np.zeros((10, 10, 4), np.float32)
    vol[:5, :4, :2] = 100  # 40 voxels of 0.5 x 2 x 3 mm
    scan = io.Scan("v", None, "array", vol, np.diag([0.5, 2.0, 3.0, 1.0]), None, vol.shape)
    pred = Predictor(ThresholdModel(), volume_record(image_size=(10, 10)), device="cpu").predict_scan(scan)
    assert pred.size_unit == "volumes_ml" and pred.volumes_ml() == pytest.approx({"organ": 40 * 3.0 / 1000})
    with pytest.raises(ValueError, match=r"areas_mm2\(\) does not apply, the prediction is of a volume"):
        pred.areas_mm2()
    img = np.zeros((10, 12), np.uint8)
    img[2:6, 3:9] = 200
    rec = volume_record(image_size=(10, 12), slice_axis=None, intensity={"mode": "window", "window": [0.0, 255.0]})
    flat = Predictor(ThresholdModel(), rec, device="cpu").predict_scan(io.Scan("i", None, "image", img, np.eye(4), None,
                                                                               img.shape))
    assert flat.size_unit is None and flat.labels.shape == (10, 12)  # png/jpg: unchanged, no physical spacing
    for size in (flat.volumes_ml, flat.areas_mm2):
        with pytest.raises(ValueError, match="a 2D image without physical pixel spacing"):
            size()


@pytest.fixture()
def threshold_checkpoint(monkeypatch):
    """``predict -m anything``: a ThresholdModel (class 1 where the windowed input is >= 0.5, i.e. the
    raw value above 50) with an axial 16 x 16 record, so the CLI's label maps are known exactly."""

    def from_checkpoint(cls, path, **kwargs):
        return cls(ThresholdModel(), volume_record(image_size=(16, 16)), info={"checkpoint_sha256": "t" * 64},
                   **kwargs)

    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(from_checkpoint))


def test_predict_reference_on_a_2d_file_scores_the_image_with_its_pixel_spacing(tmp_path, threshold_checkpoint,
                                                                                capsys):
    """By hand, in file voxels (i, j), pixels 0.5 mm along i and 3.0 mm along j (direction rotated
    by 90 degrees, so the RAS array holds them as (3.0, 0.5)):

    prediction A = i 6..9 x j 6..10 (20 px, contour: 14 px), reference B = i 6, j 7..13 (7 px, all
    contour). Dice = 2 * 4 / (20 + 7) = 8/27. HD95 (medpy's pooled: the 95th percentile, linear,
    of the 14 + 7 = 21 contour distances = the 20th of 21 sorted = the second largest):
    in mm, B -> A gives 9 ((6,13) -> (6,10)), 6, 3, 0, 0, 0, 0; A -> B at most sqrt(1.5^2 + 3^2)
    = 3.35 ((9,6) -> (6,7)); so HD95 = 6.0 mm. In pixels: largest sqrt(10) ((9,6) -> (6,7)), then
    3 ((9,7..10) -> (6,.) and (6,13) -> (6,10)): HD95 = 3.0 px. On the one-slice volume, as it was
    scored before, every pixel of A was surface (the slice's faces) and HD95 came out 5.21 mm.
    Area of A: 20 px x 0.5 x 3.0 mm = 30 mm^2.
    """
    from medpy import metric as medpy_metric

    a = np.zeros((16, 16), np.float32)  # (j, i) as SimpleITK holds it
    a[6:11, 6:10] = 100.0
    b = np.zeros((16, 16), np.uint8)
    b[7:14, 6] = 1
    geometry = {"spacing": (0.5, 3.0), "direction": (0.0, -1.0, 1.0, 0.0)}
    images, refs, out = tmp_path / "images", tmp_path / "refs", tmp_path / "out"
    images.mkdir()
    refs.mkdir()
    sitk.WriteImage(sitk_2d(a, **geometry), str(images / "s1.mha"))
    sitk.WriteImage(sitk_2d(b, **geometry), str(refs / "s1.nrrd"))
    argv = ["predict", "-i", str(images), "-o", str(out), "-m", str(tmp_path / "t.ckpt"), "--device", "cpu",
            "--reference", str(refs)]
    from vmunet.cli import main

    for run in ("computed", "reused"):  # the reused case is scored from the 2D label map read back
        assert main(argv) == 0, run
        with open(out / "metrics.csv") as f:
            (row,) = list(csv.DictReader(f))
        assert (row["case"], row["class"], row["status"], row["hd95_definition"]) == ("s1", "organ", "scored", "pooled")
        assert float(row["dice"]) == pytest.approx(8 / 27)
        assert float(row["hd95"]) == pytest.approx(3.0)
        assert float(row["hd95_mm"]) == pytest.approx(6.0)
    printed = capsys.readouterr().out
    assert "reused 1 up to date" in printed and "HD95 pooled" in printed

    mask = np.zeros((16, 16), bool)
    mask[6:11, 6:10] = True  # A and B in (j, i): medpy on the 2D arrays, spacing (j, i)
    assert medpy_metric.binary.hd95(mask, b.astype(bool), voxelspacing=(3.0, 0.5)) == pytest.approx(6.0)
    assert medpy_metric.binary.hd95(mask[..., None], b.astype(bool)[..., None], voxelspacing=(3.0, 0.5, 1.0)) \
        == pytest.approx(5.2062, abs=1e-4)  # the one-slice volume: another number

    side = json.loads((out / "s1.json").read_text())
    assert side["areas_mm2"] == pytest.approx({"organ": 30.0}) and side["volumes_ml"] is None
    assert side["shape"] == [16, 16] and side["spacing_ras_mm"] == pytest.approx([3.0, 0.5])

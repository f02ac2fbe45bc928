"""Inputs the other inference tests do not cover: a SimpleITK image handed to ``predict_volume`` and
every way ``vmunet predict --reference`` can be wrong."""

from __future__ import annotations

import csv
import logging

import nibabel as nib
import numpy as np
import pytest
from inference_helpers import (
    ThresholdModel,
    oblique_affine,
    sitk_image,
    structure_volume,
    volume_record,
    write_nifti,
)

from vmunet.inference import Predictor


def run(argv):
    """``vmunet predict`` as the console script runs it (usage errors: one line on stderr, status 2)."""
    from vmunet.cli import main

    return main(["predict", *map(str, argv)])


def test_predict_volume_takes_a_simpleitk_image_and_answers_in_its_voxel_order():
    """An oblique, flipped, permuted in-memory SimpleITK image: the label map comes back on the
    image's own voxels (x, y, z as SimpleITK indexes them), equal to the thresholded input."""
    affine = oblique_affine(spacing=(0.9, 1.4, 2.5), angles=(0.1, -0.05, 0.3), flips=(-1, 1, -1), perm=(1, 2, 0))
    vol = structure_volume((14, 18, 10), seed=3)  # every axis >= 8 voxels (io's minimum slice size)
    image = sitk_image(vol, affine)
    # The RAS-canonical shape from nibabel (not our reorientation code) gives the native slice size,
    # so no resizing happens and the answer is exact.
    ras_shape = nib.as_closest_canonical(nib.Nifti1Image(vol, affine)).shape
    predictor = Predictor(ThresholdModel(), volume_record(image_size=(ras_shape[1], ras_shape[0])), device="cpu")
    pred = predictor.predict_volume(image)
    assert pred.labels.shape == vol.shape and pred.num_slices == ras_shape[2]
    np.testing.assert_array_equal(pred.labels, vol > 50)
    # the oriented map is the same voxels seen in RAS
    canon = nib.as_closest_canonical(nib.Nifti1Image((vol > 50).astype(np.uint8), affine))
    np.testing.assert_array_equal(pred.labels_oriented, np.asarray(canon.dataobj))


# ------------------------------------------------------------------------------ --reference

@pytest.fixture()
def threshold_checkpoint(make_checkpoint):
    """A registered model is needed for a checkpoint; vmunet_test with seeded weights."""
    return make_checkpoint("m.ckpt", volume_record(image_size=(32, 32)), num_classes=2, in_chans=1)


@pytest.fixture()
def two_scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name, shape in (("case_a", (12, 10, 3)), ("case_b", (10, 12, 2))):
        write_nifti(folder / f"{name}.nii.gz", structure_volume(shape), np.diag([1.0, 1.0, 2.0, 1.0]))
    return folder


def test_reference_that_is_not_a_folder_is_a_usage_error(tmp_path, two_scans, threshold_checkpoint, capsys):
    ref = tmp_path / "ref.nii.gz"
    ref.write_bytes(b"")
    assert run(["-i", two_scans, "-o", tmp_path / "out", "-m", threshold_checkpoint, "--device", "cpu",
                "--reference", ref]) == 2
    assert capsys.readouterr().err == f"vmunet predict: error: --reference {ref} is not a folder\n"
    assert not (tmp_path / "out").exists()  # nothing was started


def test_reference_missing_for_a_case_is_a_warning_and_wrong_shape_fails_that_case(
        tmp_path, two_scans, threshold_checkpoint, caplog, capsys):
    refs, out = tmp_path / "refs", tmp_path / "out"
    refs.mkdir()
    # case_a: a reference of the wrong shape; case_b: none at all
    write_nifti(refs / "case_a.nii.gz", np.zeros((12, 10, 4), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
    caplog.set_level(logging.INFO)
    assert run(["-i", two_scans, "-o", out, "-m", threshold_checkpoint, "--device", "cpu",
                "--reference", refs]) == 1
    assert f"--reference {refs}: no reference for 1 of 2 case(s) ['case_b']; no metrics for them" in caplog.text
    assert (f"case_a.nii.gz: failed: reference {refs / 'case_a.nii.gz'} has shape (12, 10, 4) after "
            "reorientation, prediction (12, 10, 3)") in caplog.text
    assert "failed 1" in capsys.readouterr().out
    assert (out / "case_b.nii.gz").exists()
    assert (out / "metrics.csv").read_text().count("\n") == 1  # header only: no case was scored
    # with a good reference for case_a, only case_a is scored
    write_nifti(refs / "case_a.nii.gz", np.ones((12, 10, 3), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
    assert run(["-i", two_scans, "-o", out, "-m", threshold_checkpoint, "--device", "cpu",
                "--reference", refs]) == 0
    with open(out / "metrics.csv") as f:
        assert [(r["case"], r["class"]) for r in csv.DictReader(f)] == [("case_a", "organ")]


def test_reference_mask_that_is_not_binary_fails_that_image(tmp_path, caplog, make_checkpoint):
    from PIL import Image

    from vmunet.data.preprocessing import make_preprocessing

    rec = make_preprocessing("isic", in_chans=3, image_size=[32, 32], class_names=["background", "lesion"],
                             num_classes=1, intensity={"mode": "none"})
    ckpt = make_checkpoint("isic.ckpt", rec, num_classes=1, in_chans=3)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((12, 14, 3), np.uint8)).save(images / "ISIC_1.png")
    # an RGB photo, not a mask (read as training reads masks: RGB -> grayscale, then 0/1 or 0/255 only)
    Image.fromarray(np.full((12, 14, 3), (30, 60, 90), np.uint8)).save(masks / "ISIC_1.png")
    assert run(["-i", images, "-o", tmp_path / "out", "-m", ckpt, "--device", "cpu", "--reference", masks]) == 1
    assert (f"ISIC_1.png: failed: {masks / 'ISIC_1.png'}: mask values [54] are not binary; expected 0/255 "
            "(or 0/1)") in caplog.text

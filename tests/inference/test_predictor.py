"""Predictor: known structures land on the same voxels; probabilities are resized, then argmax'ed."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import (
    ThresholdModel,
    oblique_affine,
    save_checkpoint,
    sitk_image,
    structure_volume,
    volume_record,
    write_nifti,
)
from PIL import Image
from scipy import ndimage
from torch import nn

from vmunet.data.preprocessing import make_preprocessing
from vmunet.inference import CheckpointError, Predictor, io


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("resize", [False, True])
@pytest.mark.parametrize("fmt", [".nii.gz", ".mha"])
def test_known_structure_lands_on_same_voxels(tmp_path, fmt, resize):
    affine = oblique_affine(spacing=(1.1, 0.6, 3.0), angles=(0.05, 0.1, -0.4), flips=(-1, 1, -1), perm=(2, 0, 1))
    vol = structure_volume((20, 24, 9))
    src = tmp_path / f"case{fmt}"
    if fmt == ".mha":
        sitk.WriteImage(sitk_image(vol, affine), str(src))
    else:
        write_nifti(src, vol, affine)
    scan = io.read_scan(src)
    native = scan.array.shape[1::-1]  # axial slice = (Y, X) of the RAS array
    size = (32, 32) if resize else native
    predictor = Predictor(ThresholdModel(), volume_record(image_size=size), device="cpu", batch_size=4)
    out = tmp_path / "pred.nii.gz"
    pred = predictor.predict_file(src, out)
    assert pred.num_slices == scan.array.shape[2]
    if fmt == ".mha":
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0)
    else:
        got = np.asarray(nib.load(str(out)).dataobj)
        np.testing.assert_array_equal(nib.load(str(out)).affine, nib.load(str(src)).affine)
    expected = vol > 50
    assert got.shape == vol.shape and got.dtype == np.uint8
    if not resize:
        np.testing.assert_array_equal(got, expected)
    else:  # bilinear there and back: the structure stays put, only boundary voxels may move
        assert dice(got, expected) > 0.9
        np.testing.assert_allclose(ndimage.center_of_mass(got), ndimage.center_of_mass(expected), atol=0.5)
        assert np.array_equal(got[expected & ndimage.binary_erosion(expected)], np.ones(
            (expected & ndimage.binary_erosion(expected)).sum(), dtype=np.uint8))


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_every_slice_axis_round_trips(slice_axis):
    vol = structure_volume((12, 14, 10))
    inplane = [vol.shape[a] for a in (0, 1, 2) if a != slice_axis][::-1]  # rows, cols
    rec = volume_record(image_size=inplane, slice_axis=slice_axis)
    pred = Predictor(ThresholdModel(), rec, device="cpu", batch_size=3).predict_volume(vol)
    assert pred.num_slices == vol.shape[slice_axis]
    np.testing.assert_array_equal(pred.labels, vol > 50)


class RampModel(nn.Module):
    """Deterministic, non-flip-symmetric logits: class scores from the input and a column ramp."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.w = torch.linspace(-2.0, 3.0, num_classes)

    def forward(self, x):
        cols = torch.linspace(-1, 1, x.shape[-1])
        k = torch.arange(len(self.w), dtype=torch.float32)[None, :, None, None]
        return self.w[None, :, None, None] * x[:, :1] + 0.7 * k * cols


def resize_bilinear(a, shape):
    """Reference half-pixel bilinear resize (align_corners=False) of the last two axes, via scipy."""
    factors = [1] * (a.ndim - 2) + [shape[0] / a.shape[-2], shape[1] / a.shape[-1]]
    return ndimage.zoom(a, factors, order=1, mode="nearest", grid_mode=True)


def softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_resized_then_argmax_matches_reference(tta):
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 100, size=(23, 17, 3)).astype(np.float32)  # RAS (X, Y, Z)
    rec = volume_record(image_size=(32, 32), class_names=["bg", "a", "b"], num_classes=3)
    model = RampModel()
    pred = Predictor(model, rec, device="cpu", tta=tta).predict_volume(vol, return_probabilities=True)

    slices = (vol / 100.0).transpose(2, 1, 0)  # (Z, Y, X): axial images with rows along Y
    x = resize_bilinear(slices, (32, 32))[:, None]
    flips = [(), (3,), (2,), (2, 3)] if tta else [()]
    probs = 0
    for dims in flips:
        xi = np.flip(x, dims) if dims else x
        p = softmax(model(torch.from_numpy(xi.copy())).numpy(), 1)
        probs = probs + (np.flip(p, dims) if dims else p)
    probs_small = probs / len(flips)
    probs = resize_bilinear(probs_small, (17, 23))  # back to native (Y, X)
    expected_probs = probs.transpose(1, 3, 2, 0)  # (K, X, Y, Z)
    np.testing.assert_allclose(pred.probabilities.astype(np.float32), expected_probs, atol=2e-3)
    np.testing.assert_array_equal(pred.labels, expected_probs.argmax(0))
    if not tta:  # nearest-neighbour resizing of labels gives a different map: the order matters
        nearest = ndimage.zoom(probs_small.argmax(1), (1, 17 / 32, 23 / 32), order=0, grid_mode=True, mode="nearest")
        assert not np.array_equal(nearest.transpose(2, 1, 0), pred.labels)
    assert pred.probabilities.dtype == np.float16
    assert np.allclose(pred.probabilities.astype(np.float32).sum(0), 1, atol=3e-3)


def test_binary_single_output_uses_sigmoid_threshold():
    vol = structure_volume((16, 16, 4))
    rec = volume_record(image_size=(16, 16), num_classes=1)
    pred = Predictor(ThresholdModel(num_classes=1), rec, device="cpu").predict_volume(vol, return_probabilities=True)
    np.testing.assert_array_equal(pred.labels, vol > 50)
    assert pred.probabilities.shape == (2, 16, 16, 4)
    np.testing.assert_allclose(pred.probabilities[1].astype(np.float32),
                               1 / (1 + np.exp(-40 * (np.clip(vol, 0, 100) / 100 - 0.5))), atol=1e-3)


def test_rgb_image_with_three_channel_model(tmp_path):
    img = np.zeros((30, 40, 3), np.uint8)
    img[5:20, 8:30] = (200, 50, 20)
    Image.fromarray(img).save(tmp_path / "lesion.png")
    rec = make_preprocessing("isic", in_chans=3, image_size=[32, 32], class_names=["background", "lesion"],
                             num_classes=1, intensity={"mode": "zscore", "mean": [0, 0, 0], "std": [255, 255, 255]})
    predictor = Predictor(ThresholdModel(threshold=0.4, num_classes=1), rec, device="cpu")
    out = predictor.predict_file(tmp_path / "lesion.png", tmp_path / "out" / "lesion.png")
    got = np.asarray(Image.open(tmp_path / "out" / "lesion.png"))
    assert got.shape == (30, 40) and out.labels.shape == (30, 40)
    assert dice(got, img[..., 0] > 100) > 0.95
    # a grayscale image is read as training reads it (PIL's RGB conversion: R = G = B)
    Image.fromarray(img[..., 0]).save(tmp_path / "gray.png")
    gray = predictor.predict_file(tmp_path / "gray.png", tmp_path / "out" / "gray.png")
    Image.fromarray(np.repeat(img[..., :1], 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(gray.labels, predictor.predict_volume(str(tmp_path / "gray_rgb.png")).labels)
    one = Predictor(ThresholdModel(threshold=0.4, num_classes=1), {**rec, "in_chans": 1}, device="cpu")
    with pytest.raises(io.ScanReadError, match=r"lesion\.png: this model takes 1-channel images, got 3 channel"):
        one.predict_file(tmp_path / "lesion.png", tmp_path / "out" / "one.png")


def test_from_checkpoint_matches_wrapped_model_and_records_hash(tmp_path, tiny_checkpoint):
    import hashlib

    from vmunet.models import create_model

    p = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert p.info["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert p.class_names == ["background", "liver", "spleen"]
    torch.manual_seed(0)
    same = Predictor(create_model("vmunet_test", num_classes=3, in_chans=1), p.preprocessing, device="cpu")
    vol = np.random.default_rng(0).uniform(0, 100, size=(20, 18, 3)).astype(np.float32)
    a = p.predict_volume(vol, return_probabilities=True)
    b = same.predict_volume(vol, return_probabilities=True)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.labels.shape == vol.shape


def test_checkpoint_without_preprocessing_is_a_clear_error(tmp_path):
    ckpt = save_checkpoint(tmp_path / "old.ckpt", ThresholdModel(), "vmunet_test", {"num_classes": 2}, None)
    with pytest.raises(CheckpointError, match=r"old\.ckpt has no preprocessing record \(ckpt\['vmunet'\]\['preprocessing'\]\)"):
        Predictor.from_checkpoint(ckpt, device="cpu")


def test_volume_for_2d_model_and_4d_input_are_rejected(tmp_path):
    rec = make_preprocessing("isic", in_chans=3, image_size=[32, 32], class_names=["background", "lesion"],
                             num_classes=1, intensity={"mode": "none"})
    src = write_nifti(tmp_path / "ct.nii.gz", np.zeros((8, 8, 3), np.float32), np.eye(4))
    with pytest.raises(io.ScanReadError, match=r"ct\.nii\.gz: this model takes 2D images \(\.png, .*; slice_axis is "
                                               r"null\), got a scan read as a volume of shape \(8, 8, 3\)"):
        Predictor(ThresholdModel(), rec, device="cpu").predict_file(src, tmp_path / "o.nii.gz")


def test_output_never_overwrites_input(tmp_path):
    src = write_nifti(tmp_path / "ct.nii.gz", np.zeros((8, 8, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="would overwrite the input"):
        Predictor(ThresholdModel(), volume_record(), device="cpu").predict_file(src, src)


def test_volumes_ml():
    vol = np.zeros((10, 10, 4), np.float32)
    vol[:5, :4, :2] = 100  # 40 voxels
    scan = io.Scan("v", None, "array", vol, np.diag([0.5, 2.0, 3.0, 1.0]), None, vol.shape)
    pred = Predictor(ThresholdModel(), volume_record(image_size=(10, 10)), device="cpu").predict_scan(scan)
    assert pred.volumes_ml() == pytest.approx({"organ": 40 * 3.0 / 1000})


def test_synthetic_synapse_h5_and_raw_nifti_give_the_same_label_map(tmp_path):
    """The data side's synth writer (h5 + geometry sidecar, image windowed to [0, 1]) and the raw
    NIfTI of the same phantom give identical predictions in the raw scanner geometry."""
    from vmunet.data.preprocessing import SYNAPSE_HU_WINDOW
    from vmunet.data.synth import synth_synapse

    std = synth_synapse(tmp_path / "std", cases=2, size=32, slices=6, seed=3)
    synth_synapse(tmp_path / "raw", cases=2, size=32, slices=6, seed=3, raw=True)
    case = std["test_cases"][0]
    raw = next((tmp_path / "raw" / "img").glob(f"img{case[-4:]}.nii.gz"))
    h5 = tmp_path / "std" / "test_vol_h5" / f"{case}.npy.h5"
    # fake model: class 1 above 100 HU (window [-125, 275] -> 0.5625)
    threshold = (100 - SYNAPSE_HU_WINDOW[0]) / (SYNAPSE_HU_WINDOW[1] - SYNAPSE_HU_WINDOW[0])
    rec = volume_record(image_size=(32, 32), intensity={"mode": "window", "window": list(SYNAPSE_HU_WINDOW)})
    predictor = Predictor(ThresholdModel(threshold=threshold), rec, device="cpu")
    a = predictor.predict_file(raw, tmp_path / "from_raw.nii.gz")
    b = predictor.predict_file(h5, tmp_path / "from_h5.nii.gz")
    ia, ib = nib.load(str(tmp_path / "from_raw.nii.gz")), nib.load(str(tmp_path / "from_h5.nii.gz"))
    np.testing.assert_allclose(ib.affine, nib.load(str(raw)).affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj))
    hu = np.asarray(nib.load(str(raw)).dataobj)
    np.testing.assert_array_equal(np.asarray(ia.dataobj), hu > 100)
    assert a.labels.any() and b.num_slices == 6


def test_grey_slices_repeat_into_a_three_channel_model():
    seen = []

    class Spy(ThresholdModel):
        def forward(self, x):
            seen.append(x.shape[1])
            assert torch.equal(x[:, 0], x[:, 2])
            return super().forward(x)

    vol = structure_volume((16, 16, 3))
    pred = Predictor(Spy(), volume_record(image_size=(16, 16)), device="cpu", model_in_chans=3).predict_volume(vol)
    assert seen == [3] and np.array_equal(pred.labels, vol > 50)


def test_preprocessing_from_hyper_parameters_when_the_record_has_none(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    rec = ckpt["vmunet"]["preprocessing"]
    ckpt["vmunet"]["preprocessing"] = None
    torch.save(ckpt, tmp_path / "none.ckpt")
    with pytest.raises(CheckpointError, match=r"none\.ckpt has no preprocessing record"):
        Predictor.from_checkpoint(tmp_path / "none.ckpt", device="cpu")
    ckpt["hyper_parameters"] = {"preprocessing": rec}
    torch.save(ckpt, tmp_path / "hparams.ckpt")
    assert Predictor.from_checkpoint(tmp_path / "hparams.ckpt", device="cpu").preprocessing == rec

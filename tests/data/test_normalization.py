"""nnU-Net's normalisations (per-case z-score with/without the nonzero mask, CT foreground
percentiles) against hand-computed numbers, and multi-channel nnU-Net datasets in the data module."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from vmunet.data.errors import DataError
from vmunet.data.preprocessing import (
    apply_intensity,
    foreground_intensity_stats,
    normalize_channels,
    volume_to_slices,
)


def test_zscore_case_hand_computed():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2)
    out = apply_intensity(x, {"mode": "zscore_case"})
    # mean 2.5, population std sqrt(1.25)
    s = math.sqrt(1.25)
    np.testing.assert_allclose(out.ravel(), [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s], rtol=1e-6)
    assert out.dtype == np.float32
    # a constant case: nnU-Net divides by max(std, 1e-8) -> zeros, never NaN
    np.testing.assert_array_equal(apply_intensity(np.full((2, 2, 2), 7.0), {"mode": "zscore_case"}), 0.0)


def test_zscore_and_minmax_modes_hand_computed():
    # zscore with the record's (data-set) statistics; per channel along channel_axis
    x = np.array([[10.0, 20.0], [30.0, 50.0]])
    out = apply_intensity(x, {"mode": "zscore", "mean": 20.0, "std": 5.0})
    np.testing.assert_allclose(out, [[-2.0, 0.0], [2.0, 6.0]], rtol=1e-6)
    rgb = np.array([[[1.0, 10.0, 100.0]]])  # (H=1, W=1, C=3)
    out = apply_intensity(rgb, {"mode": "zscore", "mean": [0.0, 4.0, 50.0], "std": [1.0, 2.0, 25.0]}, channel_axis=-1)
    np.testing.assert_allclose(out, [[[1.0, 3.0, 2.0]]], rtol=1e-6)
    # minmax: the array's own min and max land on `range` (VM-UNet's ISIC myNormalize: 0..255)
    x = np.array([2.0, 4.0, 7.0, 12.0])
    np.testing.assert_allclose(apply_intensity(x, {"mode": "minmax", "range": [-1.0, 1.0]}), [-1.0, -0.6, 0.0, 1.0],
                               rtol=1e-6)
    np.testing.assert_allclose(apply_intensity(x, {"mode": "minmax", "range": [0.0, 255.0]}),
                               [0.0, 51.0, 127.5, 255.0], rtol=1e-6)
    # a constant image maps to the low end of the range
    np.testing.assert_array_equal(apply_intensity(np.full(3, 9.0), {"mode": "minmax", "range": [-1.0, 1.0]}), -1.0)


def _hollow_block() -> np.ndarray:
    """5^3 zeros; the inner 3^3 block is 3 except its centre, 0 (a hole the mask fills)."""
    x = np.zeros((5, 5, 5))
    x[1:4, 1:4, 1:4] = 3.0
    x[2, 2, 2] = 0.0
    return x


def test_zscore_case_with_nonzero_mask_hand_computed():
    x = _hollow_block()
    out = apply_intensity(x, {"mode": "zscore_case", "use_mask": True})
    # mask = the 27 block voxels (hole filled): mean 26/9, variance 26/3 - (26/9)^2 = 26/81, std sqrt(26)/9
    assert out[1, 1, 1] == pytest.approx(1 / math.sqrt(26), rel=1e-6)  # (3 - 26/9) / (sqrt(26)/9)
    assert out[2, 2, 2] == pytest.approx(-math.sqrt(26), rel=1e-6)  # (0 - 26/9) / (sqrt(26)/9)
    outside = np.ones(x.shape, bool)
    outside[1:4, 1:4, 1:4] = False
    assert np.all(out[outside] == 0.0)  # left at 0, as nnU-Net leaves the outside
    # without the mask: the plain statistics of all 125 voxels (sum 78, sum of squares 234)
    mean = 78 / 125
    std = math.sqrt(234 / 125 - mean**2)
    plain = apply_intensity(x, {"mode": "zscore_case", "use_mask": False})
    assert plain[0, 0, 0] == pytest.approx(-mean / std, rel=1e-6)
    assert plain[1, 1, 1] == pytest.approx((3 - mean) / std, rel=1e-6)


def test_ct_percentile_fingerprint_and_transform_hand_computed():
    # foreground intensities 0..100 split over two cases; background voxels (1000) do not count
    img1, lab1 = np.full((2, 51), 1000.0), np.zeros((2, 51), int)
    img1[0], lab1[0] = np.arange(51), 1
    img2, lab2 = np.full((2, 50), 1000.0), np.zeros((2, 50), int)
    img2[1], lab2[1] = np.arange(51, 101), 2
    (st,) = foreground_intensity_stats([(img1[None], lab1), (img2[None], lab2)])
    # 101 values 0..100: linear percentiles 0.5 and 99.5, mean 50, population std sqrt((101^2 - 1) / 12)
    assert st["percentile_00_5"] == pytest.approx(0.5) and st["percentile_99_5"] == pytest.approx(99.5)
    assert st["mean"] == pytest.approx(50.0) and st["std"] == pytest.approx(math.sqrt(850.0))
    rec = {"mode": "ct_percentile", "clip": [0.5, 99.5], "mean": 50.0, "std": math.sqrt(850.0)}
    out = apply_intensity(np.array([-7.0, 50.0, 1000.0]), rec)
    np.testing.assert_allclose(out, [-49.5 / math.sqrt(850), 0.0, 49.5 / math.sqrt(850)], rtol=1e-6)
    with pytest.raises(ValueError, match="needs foreground voxels"):
        foreground_intensity_stats([(img1[None], np.zeros_like(lab1))])


def test_multichannel_mask_comes_from_all_channels():
    # channel 1 is zero where channel 0 is not: nnU-Net's mask is "any channel nonzero"
    ch0 = np.zeros((4, 4, 1))
    ch0[0, 0, 0] = 100.0
    ch1 = np.zeros((4, 4, 1))
    ch1[1, 1, 0], ch1[2, 2, 0] = 1.0, 3.0
    out = normalize_channels(np.stack([ch0, ch1]), [{"mode": "window", "window": [0.0, 200.0]},
                                                    {"mode": "zscore_case", "use_mask": True}])
    assert out[0, 0, 0, 0] == pytest.approx(0.5)
    # channel 1 inside the 3-voxel mask {0, 1, 3}: mean 4/3, std sqrt(10/3 - 16/9) = sqrt(14)/3
    std = math.sqrt(14) / 3
    assert out[1, 0, 0, 0] == pytest.approx(-4 / 3 / std, rel=1e-6)
    assert out[1, 2, 2, 0] == pytest.approx((3 - 4 / 3) / std, rel=1e-6)
    assert out[1, 3, 3, 0] == 0.0  # outside the mask


def _write(path, data, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.fixture(scope="module")
def two_channel_root(tmp_path_factory):
    """nnU-Net raw dataset, channels CT + T2, 4 training cases of 12 x 12 x 3 (LPS-stored)."""
    root = tmp_path_factory.mktemp("mc")
    rng = np.random.default_rng(0)
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    for i in range(4):
        lab = np.zeros((12, 12, 3), np.uint8)
        lab[3:8, 4:9, :] = 1
        ct = rng.normal(-500, 300, lab.shape).astype(np.float32)
        ct[lab == 1] = rng.normal(60 + 10 * i, 15, int(lab.sum()))
        t2 = rng.uniform(0, 1000 * (i + 1), lab.shape).astype(np.float32)
        _write(root / "imagesTr" / f"c{i}_0000.nii.gz", ct, affine)
        _write(root / "imagesTr" / f"c{i}_0001.nii.gz", t2, affine)
        _write(root / "labelsTr" / f"c{i}.nii.gz", lab, affine)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "T2"}, "labels": {"background": 0, "tumour": 1},
        "numTraining": 4, "file_ending": ".nii.gz"}))
    return root


def _dm(root, **kw):
    from vmunet.data.nifti import NiftiDataModule

    kw = {"batch_size": 4, "num_workers": 0, "image_size": 12, "val_cases": 1, "augment": False,
          "check_files": False, **kw}
    return NiftiDataModule(str(root), **kw)


def test_two_channel_dataset_per_channel_normalisation(two_channel_root):
    dm = _dm(two_channel_root)
    assert dm.in_chans == 2 and dm.index.channels == ["CT", "T2"]
    assert dm.preprocessing["in_chans"] == 2
    assert dm.preprocessing["intensity"] == [{"mode": "window", "window": [-125.0, 275.0]},
                                             {"mode": "zscore_case", "use_mask": False}]
    dm.setup("validate")
    item = next(iter(dm.val_dataloader()))
    case = item["case"][0]
    assert item["image"].shape == (1, 3, 2, 12, 12)  # (B, D, C, H, W)
    ras = [np.asarray(nib.as_closest_canonical(nib.load(str(two_channel_root / "imagesTr" / f"{case}_000{c}.nii.gz")))
                      .dataobj, np.float64) for c in (0, 1)]
    ref_ct = volume_to_slices((np.clip(ras[0], -125, 275) + 125) / 400, 2)
    ref_t2 = volume_to_slices((ras[1] - ras[1].mean()) / ras[1].std(), 2)
    np.testing.assert_allclose(item["image"][0, :, 0].numpy(), ref_ct, atol=1e-5)
    np.testing.assert_allclose(item["image"][0, :, 1].numpy(), ref_t2, atol=1e-4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 2, 12, 12)


def test_ct_percentile_option_uses_training_foreground(two_channel_root):
    dm = _dm(two_channel_root, intensity="ct_percentile")
    fg = np.concatenate([np.asarray(nib.load(str(two_channel_root / "imagesTr" / f"{c.name}_0000.nii.gz")).dataobj,
                                    np.float64)[np.asarray(nib.load(str(c.label)).dataobj) > 0]
                         for c in dm.train_cases])
    rec = dm.preprocessing["intensity"][0]
    assert rec["mode"] == "ct_percentile"
    assert rec["clip"] == pytest.approx([np.percentile(fg, 0.5), np.percentile(fg, 99.5)])
    assert rec["mean"] == pytest.approx(fg.mean()) and rec["std"] == pytest.approx(fg.std())


def test_model_channels_must_match_dataset_json(two_channel_root):
    dm = _dm(two_channel_root)
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(hparams={"in_chans": 1}))
    with pytest.raises(DataError, match=r"dataset.json: declares 2 input channel\(s\) \['CT', 'T2'\], but the "
                                        r"model takes 1 \(model.in_chans\)"):
        dm.setup("fit")

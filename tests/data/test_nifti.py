"""NIfTI-folder data module: both layouts, RAS reorientation, slicing, normalization, caching, errors."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from vmunet.data.errors import DataError, LayoutError
from vmunet.data.nifti import NiftiDataModule
from vmunet.data.preprocessing import apply_intensity, slices_to_volume, volume_to_slices


def _dm(root, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "image_size": 24, "val_cases": 1, **kw}
    return NiftiDataModule(str(root), **kw)


def _canonical(path):
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.header.get_zooms()[:3]


def test_volume_slice_convention_round_trip():
    vol = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert np.array_equal(volume_to_slices(vol[0], 2), vol[0].transpose(2, 1, 0))
    for axis in (0, 1, 2):
        sl = volume_to_slices(vol, axis)
        assert sl.shape[1] == vol.shape[1 + axis]
        assert np.array_equal(slices_to_volume(sl, axis), vol)
    assert volume_to_slices(vol[0], 0).shape == (3, 5, 4)


def test_synth_orientations_are_not_ras(nifti_ct):
    codes = {nib.aff2axcodes(nib.load(str(p)).affine) for p in sorted((nifti_ct / "imagesTr").iterdir())}
    assert len(codes) > 1 and ("R", "A", "S") not in codes


@pytest.mark.parametrize("axis", [2, 0])
def test_ct_reorientation_slicing_and_window(nifti_ct, axis):
    # The model size is the native in-plane size of the slices along ``axis`` (24 x 24 for axial,
    # 6 x 24 for sagittal), so no resampling happens and every image value can be checked exactly.
    first = sorted((nifti_ct / "imagesTs").iterdir())[0]
    native = volume_to_slices(_canonical(first)[0], axis).shape[1:]
    dm = _dm(nifti_ct, slice_axis=axis, image_size=native, augment=False)
    assert dm.preprocessing["intensity"] == {"mode": "window", "window": [-125.0, 275.0]}
    assert dm.preprocessing["orientation"] == "RAS" and dm.preprocessing["slice_axis"] == axis
    assert dm.class_names == ["background", "liver", "spleen", "kidney"] and dm.num_classes == 4
    dm.setup("test")
    for item in dm.test_dataloader():
        case = item["case"][0]
        hu, zooms = _canonical(nifti_ct / "imagesTs" / f"{case}_0000.nii.gz")
        lab, _ = _canonical(nifti_ct / "labelsTs" / f"{case}.nii.gz")
        ref_lab = volume_to_slices(lab, axis)
        assert torch.equal(item["label"][0], torch.as_tensor(ref_lab.astype(np.int64)))
        inplane = [a for a in (0, 1, 2) if a != axis][::-1]
        assert item["spacing"][0].tolist() == pytest.approx([zooms[axis], *(zooms[a] for a in inplane)], rel=1e-5)
        ref_img = volume_to_slices(apply_intensity(hu, dm.preprocessing["intensity"]), axis)
        assert ref_img.shape[1:] == native
        assert torch.allclose(item["image"][0, :, 0], torch.as_tensor(ref_img), atol=1e-6)
        assert item["image"].shape[:3] == (1, ref_img.shape[0], 1)


def test_train_batches_and_foreground_oversampling(nifti_ct):
    torch.manual_seed(0)
    dm = _dm(nifti_ct, foreground_oversample=1.0, batch_size=8, image_size=32)
    dm.setup("fit")
    n_slices = sum(_canonical(c.image)[0].shape[2] for c in dm.train_cases)
    assert n_slices == 3 * 6
    assert len(dm._ds["train"]) == n_slices
    for batch in dm.train_dataloader():
        assert batch["image"].shape[1:] == (1, 32, 32) and batch["label"].dtype == torch.long
        assert all(batch["label"][i].any() for i in range(batch["label"].shape[0]))
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["case"][0] not in {c.name for c in dm.train_cases}


def test_mr_decathlon_zscore_per_case_like_nnunet(nifti_mr):
    # MR: nnU-Net's default, each case z-scored with its own mean and (population) std
    dm = _dm(nifti_mr, augment=False, image_size=24)
    assert dm.preprocessing["intensity"] == {"mode": "zscore_case", "use_mask": False}
    assert dm.in_chans == 1 and dm.index.channels == ["MR"]
    dm.setup("test")
    item = next(iter(dm.test_dataloader()))
    assert item["case"] == ["synth_003"]
    raw, _ = _canonical(nifti_mr / "imagesTs" / "synth_003.nii.gz")
    x = raw.astype(np.float64)
    ref = volume_to_slices((x - x.mean()) / x.std(), 2)
    assert torch.allclose(item["image"][0, :, 0], torch.as_tensor(ref, dtype=torch.float32), atol=1e-5)
    dm2 = _dm(nifti_mr, zscore_stats=(10.0, 2.0))
    assert dm2.preprocessing["intensity"] == {"mode": "zscore", "mean": 10.0, "std": 2.0}
    dm3 = _dm(nifti_mr, use_mask_for_norm=True)
    assert dm3.preprocessing["intensity"] == {"mode": "zscore_case", "use_mask": True}


def test_persistent_cache_is_read_back(tmp_path, nifti_ct):
    root = _copy(tmp_path, nifti_ct)
    cache = tmp_path / "cache"
    dm = _dm(root, cache=False, cache_dir=str(cache))
    dm.setup("validate")
    first = next(iter(dm.val_dataloader()))
    assert any(cache.iterdir())
    # Change the validation image on disk (same path, shape and affine): a cache that is read
    # back still serves the old voxels; a module without the cache sees the new file.
    case = first["case"][0]
    path = next(p for p in (root / "imagesTr").iterdir() if p.name.startswith(case))
    old = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.full(old.shape, -1000, np.int16), old.affine), str(path))
    again = _dm(root, cache=False, cache_dir=str(cache))
    again.setup("validate")
    cached = next(iter(again.val_dataloader()))
    assert cached["case"] == [case]
    assert torch.equal(first["image"], cached["image"]) and torch.equal(first["label"], cached["label"])
    fresh = _dm(root, cache=False)
    fresh.setup("validate")
    assert torch.equal(next(iter(fresh.val_dataloader()))["image"], torch.zeros_like(first["image"]))


def _copy(tmp_path, src):
    root = tmp_path / "ds"
    shutil.copytree(src, root)
    return root


def test_layout_errors(tmp_path, nifti_ct):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match=r"expected an nnU-Net raw folder .*no dataset.json found: .* is empty"):
        _dm(tmp_path / "empty")
    # a missing folder: the layout, and the commands that make data
    with pytest.raises(LayoutError) as err:
        _dm(tmp_path / "nothing")
    text = str(err.value)
    assert "nothing does not exist" in text and "imagesTr/<case>_0000<ending>, labelsTr/<case><ending>" in text
    assert "dataset.json" in text and "`vmunet synth nifti --out DIR`" in text and "`vmunet prepare" in text
    root = _copy(tmp_path, nifti_ct)
    (root / "dataset.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(LayoutError, match=r"dataset.json: expected an nnU-Net raw folder .*found keys \['foo'\]"):
        _dm(root)
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": [1, 2]}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"label 'liver' has value \[1, 2\]; only integer labels"):
        _dm(root)
    spec["labels"] = {"background": 0, "liver": 1}
    spec["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(spec))
    # dataset.json declares 2 channels: each case needs <case>_0000 and <case>_0001 (named in the error)
    with pytest.raises(DataError, match=r"imagesTr: case 'synth_000' has channel files \['synth_000_0000.nii.gz'\]; "
                       r"expected exactly \['synth_000_0000.nii.gz', 'synth_000_0001.nii.gz'\] \(2 channel\(s\)\)"):
        _dm(root)
    spec["channel_names"] = {"0": "T1", "2": "T2"}
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"'channel_names' keys must be 0..C-1 without gaps, got \[0, 2\]"):
        _dm(root)


def test_pairing_errors(tmp_path, nifti_ct):
    root = _copy(tmp_path, nifti_ct)
    (root / "labelsTr" / "synth_001.nii.gz").rename(root / "labelsTr" / "synth_099.nii.gz")
    with pytest.raises(DataError, match=r"labelsTr: no label for case\(s\) \['synth_001'\]"):
        _dm(root)
    (root / "labelsTr" / "synth_099.nii.gz").rename(root / "labelsTr" / "synth_001.nii.gz")
    shutil.copy(root / "labelsTr" / "synth_001.nii.gz", root / "labelsTr" / "synth_077.nii.gz")
    with pytest.raises(DataError, match=r"label\(s\) without an image .*\['synth_077'\]"):
        _dm(root)


@pytest.mark.parametrize("problem,message", [
    ("range", r"synth_002.nii.gz \(image synth_002_0000.nii.gz\): label values \[7\] outside the declared classes 0..3"),
    ("affine", r"synth_002.nii.gz \(image synth_002_0000.nii.gz\): label geometry \(affine\) differs"),
    ("shape", r"image/label shape mismatch"),
    ("corrupt", r"synth_002.nii.gz: unreadable or corrupt image file"),
    ("nan", r"synth_002_0000.nii.gz: image contains NaN or infinite values"),
])
def test_bad_volumes(tmp_path, nifti_ct, problem, message):
    root = _copy(tmp_path, nifti_ct)
    path = root / "labelsTr" / "synth_002.nii.gz"
    if problem == "nan":
        path = root / "imagesTr" / "synth_002_0000.nii.gz"
    img = nib.load(str(path))
    data, aff = np.asarray(img.dataobj).copy(), img.affine.copy()
    if problem == "nan":
        data = data.astype(np.float32)
        data[1, 1, 1] = np.nan
    elif problem == "range":
        data[0, 0, 0] = 7
    elif problem == "affine":
        aff[0, 3] += 5.0
    elif problem == "shape":
        data = data[:-1]
    if problem == "corrupt":
        path.write_bytes(b"\x1f\x8b garbage")
    else:
        nib.save(nib.Nifti1Image(data, aff), str(path))
    dm = _dm(root, val_cases=0, cache=False)
    with pytest.raises(DataError, match=message):
        dm.setup("fit")


def test_upper_case_suffixes_are_found_like_inference_finds_them(tmp_path, nifti_ct):
    """One I/O layer: ``.NII.GZ`` files count as ``.nii.gz`` here as in ``vmunet predict``."""
    from vmunet.inference import io

    root = _copy(tmp_path, nifti_ct)
    lower = _dm(nifti_ct).index
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        for p in (root / folder).iterdir():
            p.rename(p.with_name(p.name.replace(".nii.gz", ".NII.GZ")))
    upper = _dm(root).index
    assert [c.name for c in upper.train] == [c.name for c in lower.train] == ["synth_000", "synth_001",
                                                                             "synth_002", "synth_003"]
    assert [c.name for c in upper.test] == [c.name for c in lower.test]
    assert all(c.label is not None and c.label.name.endswith(".NII.GZ") for c in upper.train)
    scans = io.find_cases(root / "imagesTr")
    assert [io.case_name(p) for p in scans] == [c.image.name[:-len(".NII.GZ")] for c in upper.train]

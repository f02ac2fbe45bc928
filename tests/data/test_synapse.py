"""Synapse synthetic data + data module: layout, shapes, dtypes, split, augmentation, errors."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from vmunet.data.errors import DataError, LayoutError
from vmunet.data.preprocessing import validate_preprocessing
from vmunet.data.synapse import SynapseDataModule
from vmunet.data.synth import synth_synapse


def _dm(root, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "image_size": 32, **kw}
    return SynapseDataModule(str(root), **kw)


def test_synth_layout(synapse_root):
    lists = synapse_root / "lists" / "lists_Synapse"
    train = (lists / "train.txt").read_text().split()
    test = (lists / "test_vol.txt").read_text().split()
    # 5 cases -> 3 train + 2 test from the standard split, 6 slices each.
    assert test == ["case0001", "case0002"]
    assert len(train) == 3 * 6 and train[0] == "case0005_slice000"
    with np.load(synapse_root / "train_npz" / "case0005_slice003.npz") as z:
        assert z["image"].dtype == np.float32 and z["image"].shape == (32, 32)
        assert z["label"].dtype == np.uint8
        assert 0.0 <= z["image"].min() and z["image"].max() <= 1.0
    with h5py.File(synapse_root / "test_vol_h5" / "case0001.npy.h5") as f:
        assert f["image"].shape == f["label"].shape == (6, 32, 32)
        assert set(np.unique(f["label"][()])) <= set(range(9))


def test_preprocessing_available_after_init(synapse_root):
    dm = _dm(synapse_root, image_size=(48, 32))
    rec = validate_preprocessing(dm.preprocessing)
    assert rec["image_size"] == [48, 32] and rec["num_classes"] == 9 == dm.num_classes
    # TransUNet / VM-UNet numbering of the 8 Synapse organs (written out, not our constant)
    assert rec["class_names"] == dm.class_names == [
        "background", "aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach"]
    assert rec["intensity"] == {"mode": "window", "window": [-125.0, 275.0]}
    assert rec["orientation"] == "RAS" and rec["slice_axis"] == 2
    assert rec["image_interpolation"] == "bicubic"  # what training resizes with; inference follows it
    assert dm.in_chans == 1 and dm.eval_mode == "volume"
    bilinear = _dm(synapse_root, image_size=(48, 32), image_interpolation="bilinear")
    assert bilinear.preprocessing["image_interpolation"] == "bilinear"


def test_bad_image_interpolation_in_record_is_named():
    from vmunet.data.preprocessing import PreprocessingError, make_preprocessing

    with pytest.raises(PreprocessingError, match="'image_interpolation'"):
        make_preprocessing("synapse", in_chans=1, image_size=(8, 8), class_names=["bg", "fg"],
                           num_classes=2, intensity={"mode": "none"}, image_interpolation="nearest")


def test_train_val_test_batches(synapse_root):
    dm = _dm(synapse_root, image_size=(48, 40), val_cases=1, seed=3)
    dm.setup("fit")
    dm.setup("test")
    train_cases = {n.rsplit("_slice", 1)[0] for n in dm.train_slices}
    assert len(dm.val_case_names) == 1 and not (train_cases & set(dm.val_case_names))
    assert len(train_cases) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 48, 40) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 48, 40) and batch["label"].dtype == torch.long
    assert set(batch["label"].unique().tolist()) <= set(range(9))
    vals = list(dm.val_dataloader())
    assert len(vals) == 1
    v = vals[0]
    assert v["image"].shape == (1, 6, 1, 48, 40) and v["image"].dtype == torch.float32
    assert v["label"].shape == (1, 6, 32, 32) and v["label"].dtype == torch.long
    assert v["case"] == dm.val_case_names
    geom = json.loads((synapse_root / "train_npz" / f"{v['case'][0]}.geometry.json").read_text())
    assert torch.allclose(v["spacing"], torch.tensor([geom["spacing_dhw"]]))
    # The val volume is the case's slices stacked in slice order.
    with np.load(synapse_root / "train_npz" / f"{v['case'][0]}_slice004.npz") as z:
        assert np.array_equal(v["label"][0, 4].numpy(), z["label"].astype(np.int64))
    tests = list(dm.test_dataloader())
    assert [t["case"][0] for t in tests] == ["case0001", "case0002"]
    with h5py.File(synapse_root / "test_vol_h5" / "case0002.npy.h5") as f:
        assert np.array_equal(tests[1]["label"][0].numpy(), f["label"][()].astype(np.int64))
    geom = json.loads((synapse_root / "test_vol_h5" / "case0002.geometry.json").read_text())
    assert tests[1]["spacing"].tolist()[0] == pytest.approx(geom["spacing_dhw"])


def test_val_split_deterministic_and_seeded(synapse_root):
    picks = []
    for seed in (0, 0, 1, 2, 3, 4):
        dm = _dm(synapse_root, val_cases=1, seed=seed)
        dm.setup("validate")
        picks.append(tuple(dm.val_case_names))
    assert picks[0] == picks[1]
    assert len(set(picks)) > 1  # the seed matters
    dm = _dm(synapse_root, val_cases=0)
    dm.setup("fit")
    assert dm.val_dataloader() == [] and len(dm.train_slices) == 18
    with pytest.raises(ValueError, match="val_cases=3 leaves no training case"):
        _dm(synapse_root, val_cases=3).setup("fit")


def test_eval_resize_matches_training_resize(synapse_root):
    """A val slice at model size equals the (unaugmented) training pipeline's output."""
    dm = _dm(synapse_root, augment=False, val_cases=1, image_size=24, image_interpolation="bilinear")
    dm.setup("fit")
    v = next(iter(dm.val_dataloader()))
    case = v["case"][0]
    # Find that slice via a training-style pipeline on the held-out case.
    from monai.transforms import Compose

    from vmunet.data.synapse import LoadNpzSlice
    from vmunet.data.transforms import slice_train_transforms

    tf = Compose([LoadNpzSlice(9), *slice_train_transforms((24, 24), augment=False, image_mode="bilinear")])
    item = tf({"path": str(synapse_root / "train_npz" / f"{case}_slice002.npz"), "name": "x"})
    assert torch.allclose(item["image"], v["image"][0, 2], atol=1e-6)


def test_augmentation_keeps_image_and_label_in_step(synapse_root):
    """Rot90/flip/rotation move image and label together: organs keep their intensity."""
    torch.manual_seed(0)
    dm = _dm(synapse_root, image_size=32, val_cases=0, batch_size=18, image_interpolation="bilinear")
    dm.setup("fit")
    for _ in range(2):
        batch = next(iter(dm.train_dataloader()))
        img, lab = batch["image"][:, 0], batch["label"][:, 0]
        aorta = img[lab == 1]  # 260 HU -> (260 + 125) / 400 = 0.96 inside the window
        liver = img[lab == 5]  # 100 HU -> 0.56
        assert aorta.numel() > 0 and liver.numel() > 0
        assert aorta.median() > 0.8 and 0.45 < liver.median() < 0.7


def test_list_folder_alternative_name(tmp_path, synapse_root):
    root = tmp_path / "syn"
    shutil.copytree(synapse_root, root)
    (root / "lists" / "lists_Synapse").rename(root / "lists" / "list_Synapse")
    dm = _dm(root)
    dm.setup("test")
    assert dm.test_case_names == ["case0001", "case0002"]


def test_wrong_layout_errors(tmp_path, synapse_root, synapse_raw):
    with pytest.raises(LayoutError, match=r"missing train_npz/.*Expected train_npz/\*\.npz.*found: .*is empty"):
        (tmp_path / "empty").mkdir()
        _dm(tmp_path / "empty").setup("fit")
    with pytest.raises(LayoutError, match=r"raw BTCV download: convert it with `vmunet prepare synapse"):
        _dm(synapse_raw).setup("fit")
    root = tmp_path / "nolists"
    shutil.copytree(synapse_root, root)
    shutil.rmtree(root / "lists")
    with pytest.raises(LayoutError, match="no list folder lists/lists_Synapse or lists/list_Synapse"):
        _dm(root).setup("test")


def _copy(tmp_path, src):
    root = tmp_path / "syn"
    shutil.copytree(src, root)
    return root


def test_missing_and_corrupt_files(tmp_path, synapse_root):
    root = _copy(tmp_path, synapse_root)
    (root / "train_npz" / "case0006_slice002.npz").unlink()
    with pytest.raises(DataError, match=r"train.txt: 1 listed slice\(s\) have no file .*case0006_slice002"):
        _dm(root).setup("fit")
    (root / "train_npz" / "case0006_slice002.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"case0006_slice002.npz: unreadable or corrupt .npz file"):
        _dm(root, val_cases=0).setup("fit")  # the file check at setup
    dm = _dm(root, val_cases=0, batch_size=18, check_files=False)
    dm.setup("fit")
    with pytest.raises(DataError, match=r"case0006_slice002.npz: unreadable or corrupt .npz file"):
        next(iter(dm.train_dataloader()))  # and the reader when drawn
    (root / "test_vol_h5" / "case0002.npy.h5").write_bytes(b"\x00" * 100)
    dm.setup("test")
    with pytest.raises(DataError, match=r"case0002.npy.h5: unreadable or corrupt HDF5 file"):
        list(dm.test_dataloader())
    (root / "test_vol_h5" / "case0002.npy.h5").unlink()
    with pytest.raises(DataError, match=r"test_vol.txt: 1 listed case\(s\) have no .npy.h5 file .*case0002"):
        dm.setup("test")


@pytest.mark.parametrize("problem,message", [
    ("nan", "image contains NaN or infinite values"),
    ("shape", r"image/label shape mismatch: image \(32, 32\), label \(32, 31\)"),
    ("range", r"label values \[9, 12\] outside the declared classes 0..8"),
    ("nonint", "label has non-integer values"),
])
def test_bad_slice_content(tmp_path, synapse_root, problem, message):
    root = _copy(tmp_path, synapse_root)
    path = root / "train_npz" / "case0007_slice001.npz"
    with np.load(path) as z:
        image, label = z["image"].copy(), z["label"].astype(np.float32)
    if problem == "nan":
        image[3, 3] = np.nan
    elif problem == "shape":
        label = label[:, :31]
    elif problem == "range":
        label[0, 0], label[0, 1] = 9, 12
    else:
        label[0, 0] = 0.5
    np.savez(path, image=image, label=label)
    with pytest.raises(DataError, match="case0007_slice001.npz: " + message):
        _dm(root, val_cases=0).setup("fit")  # the file check at setup
    dm = _dm(root, val_cases=0, batch_size=18, check_files=False)
    dm.setup("fit")
    with pytest.raises(DataError, match="case0007_slice001.npz: " + message):
        next(iter(dm.train_dataloader()))  # and the reader when drawn


def test_synth_is_seeded(tmp_path):
    a, b, c = (synth_synapse(tmp_path / n, cases=2, size=16, slices=4, seed=s) for n, s in
               (("a", 5), ("b", 5), ("c", 6)))
    del a, b, c
    read = [np.load(tmp_path / n / "train_npz" / "case0005_slice001.npz")["image"] for n in "abc"]
    assert np.array_equal(read[0], read[1]) and not np.array_equal(read[0], read[2])


def test_training_loader_is_seeded_and_works_with_workers(synapse_root):
    dm = _dm(synapse_root, val_cases=0, batch_size=6)
    dm.setup("fit")
    batches = []
    for _ in range(2):
        torch.manual_seed(123)
        batches.append(next(iter(dm.train_dataloader())))
    assert torch.equal(batches[0]["image"], batches[1]["image"])
    assert torch.equal(batches[0]["label"], batches[1]["label"])
    dm = _dm(synapse_root, val_cases=1, num_workers=1, batch_size=6)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (6, 1, 32, 32)
    assert next(iter(dm.val_dataloader()))["label"].shape == (1, 6, 32, 32)


def test_cache_true_keeps_the_loaded_slices(tmp_path, synapse_root):
    """``cache: true``: CacheDataset holds the loaded arrays (the loader is a MONAI Transform, so
    caching does not stop before it), and items come from memory once the files are gone."""
    from monai.data import CacheDataset

    from vmunet.data.fileio import read_npz_slice

    root = _copy(tmp_path, synapse_root)
    dm = _dm(root, cache=True, augment=False)
    dm.setup("fit")
    ds = dm._ds["train"]
    assert isinstance(ds, CacheDataset) and len(ds._cache) == len(dm.train_slices)
    first = ds._cache[0]
    assert "path" not in first and first["name"] == dm.train_slices[0]  # loaded, not the path item
    image, label = read_npz_slice(root / "train_npz" / f"{first['name']}.npz", dm.num_classes)
    assert np.asarray(first["image"]).shape == (1, *image.shape)  # synth slices are 32x32 already
    np.testing.assert_allclose(np.asarray(first["image"])[0], image, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(first["label"])[0], label)
    expected = ds[0]
    shutil.rmtree(root / "train_npz")
    again = ds[0]  # would raise (file not found) if the load were not cached
    np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(expected["image"]))
    np.testing.assert_array_equal(np.asarray(again["label"]), np.asarray(expected["label"]))

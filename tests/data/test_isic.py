"""ISIC data module on synthetic data: pairing by id, stats, shapes, binary masks, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vmunet.data import isic_format as IF
from vmunet.data.errors import DataError, LayoutError
from vmunet.data.isic import ISICDataModule
from vmunet.data.preprocessing import apply_intensity, validate_preprocessing
from vmunet.data.synth import synth_isic


def _dm(root, **kw):
    kw = {"batch_size": 2, "num_workers": 0, "image_size": 32, **kw}
    return ISICDataModule(str(root), **kw)


def _pixels(root, split):
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64)
            for p in sorted((root / split / "images").iterdir())]


def test_layout_and_stats_without_file(isic_root):
    dm = _dm(isic_root)
    assert {s: len(v) for s, v in dm.splits.items()} == {"train": 4, "val": 2}
    px = np.concatenate([p.reshape(-1, 3) for p in _pixels(isic_root, "train")])
    assert dm.mean == pytest.approx(px.mean(0).tolist(), rel=1e-6)
    assert dm.std == pytest.approx(px.std(0).tolist(), rel=1e-6)
    rec = validate_preprocessing(dm.preprocessing)
    assert rec["dataset"] == "isic" and rec["num_classes"] == 1 == dm.num_classes
    assert rec["class_names"] == ["background", "lesion"] and dm.in_chans == 3
    assert rec["intensity"]["mode"] == "zscore" and rec["orientation"] is None
    assert dm.eval_mode == "image"


def test_stats_file_is_used(tmp_path, isic_root):
    root = tmp_path / "isic"
    shutil.copytree(isic_root, root)
    (root / "stats.json").write_text(json.dumps({"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}))
    dm = _dm(root)
    assert dm.preprocessing["intensity"] == {"mode": "zscore", "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}
    (root / "stats.json").write_text(json.dumps({"mean": [1.0], "std": [0.0]}))
    with pytest.raises(DataError, match=r"stats.json: expected \{'mean': \[r, g, b\]"):
        _dm(root)


def test_batches(isic_root):
    dm = _dm(isic_root, image_size=48)
    dm.setup("fit")
    dm.setup("test")
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (2, 3, 48, 48) and b["image"].dtype == torch.float32
    assert b["label"].shape == (2, 1, 48, 48) and b["label"].dtype == torch.float32
    assert set(b["label"].unique().tolist()) <= {0.0, 1.0}
    vals = list(dm.val_dataloader())
    assert [c for v in vals for c in v["case"]] == ["ISIC_0000004", "ISIC_0000005"]
    tests = list(dm.test_dataloader())  # no test/ -> val/
    assert [c for t in tests for c in t["case"]] == ["ISIC_0000004", "ISIC_0000005"]
    # Eval images are the preprocessing record applied to the resized raw image.
    v = vals[0]
    raw = np.asarray(Image.open(isic_root / "val" / "images" / "ISIC_0000004.jpg").convert("RGB"))
    ref = apply_intensity(raw, dm.preprocessing["intensity"], channel_axis=2).transpose(2, 0, 1)
    ref = torch.nn.functional.interpolate(torch.as_tensor(ref)[None], size=(48, 48), mode="bilinear")
    assert torch.allclose(v["image"][0], ref[0], atol=1e-4)
    mask = np.asarray(Image.open(isic_root / "val" / "masks" / "ISIC_0000004_segmentation.png")) // 255
    small = torch.nn.functional.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None],
                                            size=(48, 48), mode="nearest")
    assert torch.equal(v["label"][0], small[0])


def test_lesions_are_dark(isic_root):
    """The synthetic content is learnable: lesion pixels are darker than skin."""
    dm = _dm(isic_root, augment=False)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    lum = b["image"].mean(1)
    lab = b["label"][:, 0].bool()
    assert lum[lab].mean() < lum[~lab].mean() - 1.0


def test_pairs_by_id_not_position(tmp_path, isic_root):
    root = tmp_path / "isic"
    shutil.copytree(isic_root, root)
    # Rename a mask so sorted positions would shift; pairing must be by id.
    masks = root / "train" / "masks"
    (masks / "ISIC_0000001_segmentation.png").rename(masks / "ISIC_0000001.png")
    pairs = IF.pair_folder(root / "train" / "images", masks)
    assert [(p.case, p.mask.name) for p in pairs][:2] == [
        ("ISIC_0000000", "ISIC_0000000_segmentation.png"), ("ISIC_0000001", "ISIC_0000001.png")]
    (masks / "ISIC_0000002_segmentation.png").unlink()
    shutil.copy(masks / "ISIC_0000001.png", masks / "ISIC_0000099_segmentation.png")
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask .*\['ISIC_0000002'\]; "
                                        r"1 mask\(s\) without an image .*\['ISIC_0000099'\]"):
        _dm(root)


def test_bad_files(tmp_path, isic_root):
    root = tmp_path / "isic"
    shutil.copytree(isic_root, root)
    val = root / "val"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(val / "masks" / "ISIC_0000004_segmentation.png")
    with pytest.raises(DataError, match=r"ISIC_0000004_segmentation.png: mask values \[128\] are not binary"):
        _dm(root).setup("validate")  # the file check at setup
    dm = _dm(root, check_files=False)  # and the reader when drawn
    dm.setup("validate")
    with pytest.raises(DataError, match=r"ISIC_0000004_segmentation.png: mask values \[128\] are not binary"):
        next(iter(dm.val_dataloader()))
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(val / "masks" / "ISIC_0000004_segmentation.png")
    with pytest.raises(DataError, match=r"ISIC_0000004_segmentation.png: mask size \(30, 32\) does not match "
                                        r"image ISIC_0000004.jpg size \(32, 32\)"):
        next(iter(dm.val_dataloader()))
    shutil.copy(isic_root / "val" / "masks" / "ISIC_0000004_segmentation.png", val / "masks")
    (val / "images" / "ISIC_0000005.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"ISIC_0000005.jpg: unreadable or corrupt image"):
        list(dm.val_dataloader())


def test_layout_errors(tmp_path):
    official = tmp_path / "official"
    synth_isic(official, cases=3, size=16, layout="official", year="2017")
    with pytest.raises(LayoutError, match=r"Expected \{train,val\}/\{images,masks\}/.*official ISIC archive "
                                          r"layout: convert it with `vmunet prepare isic"):
        _dm(official)
    empty = tmp_path / "vm"
    (empty / "train" / "images").mkdir(parents=True)
    (empty / "train" / "masks").mkdir()
    (empty / "val" / "images").mkdir(parents=True)
    (empty / "val" / "masks").mkdir()
    with pytest.raises(DataError, match=r"train/images: no images"):
        _dm(empty)


def test_cache_true_keeps_the_loaded_pairs(tmp_path, isic_root):
    """``cache: true``: CacheDataset holds the loaded image/mask arrays (the loader is a MONAI
    Transform), and items come from memory once the files are gone."""
    from monai.data import CacheDataset

    root = tmp_path / "isic"
    shutil.copytree(isic_root, root)
    dm = _dm(root, cache=True, augment=False)
    dm.setup("fit")
    ds = dm._ds["train"]
    assert isinstance(ds, CacheDataset) and len(ds._cache) == len(dm.splits["train"])
    pair = dm.splits["train"][0]
    image, mask = IF.read_pair(pair)
    cached = ds._cache[0]
    assert cached["case"] == pair.case and not isinstance(cached["image"], str)
    expected = ds[0]
    shutil.rmtree(root / "train")
    again = ds[0]  # would raise (file not found) if the load were not cached
    np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(expected["image"]))
    np.testing.assert_array_equal(np.asarray(again["label"]), np.asarray(expected["label"]))
    assert np.asarray(again["label"]).shape[-2:] == (32, 32) and image.shape[:2] == mask.shape

"""prepare synapse / prepare isic and the CLI commands, end to end on synthetic raw data."""

from __future__ import annotations

import json
import shutil

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from vmunet.data.errors import DataError, LayoutError
from vmunet.data.isic import ISICDataModule
from vmunet.data.prepare import prepare_isic, prepare_synapse, split_cases
from vmunet.data.preprocessing import slices_to_volume
from vmunet.data.synapse import SynapseDataModule
from vmunet.data.synth import synth_isic


def cli(argv):
    """Run a ``vmunet`` command exactly as the console script does (errors: one line, status 2)."""
    from vmunet.cli import main

    return main([str(a) for a in argv])


def _save(path, array, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


AFFINE = np.array([[-2.0, 0, 0, 10], [0, -3.0, 0, 20], [0, 0, 4.0, -30], [0, 0, 0, 1]])


def _known_raw(root):
    """Two hand-made BTCV cases (1 = test, 5 = train) with known HU and label voxels."""
    shape = (4, 5, 3)
    for cid in (1, 5):
        hu = np.full(shape, -1000, np.int16)
        lab = np.zeros(shape, np.uint8)
        hu[0, 0, 0], lab[0, 0, 0] = 75, 8      # aorta (BTCV 8 -> 1), inside the window
        hu[3, 1, 2], lab[3, 1, 2] = 400, 11    # pancreas (11 -> 6), above the window -> 1.0
        hu[1, 4, 1], lab[1, 4, 1] = -500, 9    # inferior vena cava (9 -> background), below -> 0.0
        hu[2, 2, 1], lab[2, 2, 1] = 25, 2      # right kidney (2 -> 4)
        _save(root / "img" / f"img{cid:04d}.nii.gz", hu, AFFINE)
        _save(root / "label" / f"label{cid:04d}.nii.gz", lab, AFFINE)
    return shape


def _dhw(i, j, k, shape):
    """Raw voxel (i, j, k) stored with x and y flipped -> (d, h, w) in the h5 (canonical.T)."""
    return k, shape[1] - 1 - j, shape[0] - 1 - i


def test_prepare_synapse_window_remap_and_geometry(tmp_path):
    shape = _known_raw(tmp_path / "raw")
    summary = prepare_synapse(tmp_path / "raw", tmp_path / "out")
    assert summary["test"] == ["case0001"] and summary["train_slices"] == 3
    with h5py.File(tmp_path / "out" / "test_vol_h5" / "case0001.npy.h5") as f:
        img, lab = f["image"][()], f["label"][()]
    assert img.shape == (3, 5, 4)
    assert img[_dhw(0, 0, 0, shape)] == pytest.approx((75 + 125) / 400)
    assert img[_dhw(3, 1, 2, shape)] == 1.0 and img[_dhw(1, 4, 1, shape)] == 0.0
    assert lab[_dhw(0, 0, 0, shape)] == 1 and lab[_dhw(3, 1, 2, shape)] == 6
    assert lab[_dhw(1, 4, 1, shape)] == 0 and lab[_dhw(2, 2, 1, shape)] == 4
    assert int((lab > 0).sum()) == 3
    geom = json.loads((tmp_path / "out" / "test_vol_h5" / "case0001.geometry.json").read_text())
    assert np.allclose(geom["affine"], AFFINE) and geom["shape"] == list(shape)
    assert geom["spacing_dhw"] == pytest.approx([4.0, 3.0, 2.0])
    assert geom["orientation"] == "RAS" and geom["layout"] == "DHW" and geom["source"] == "img0001.nii.gz"
    # The sidecar is enough to put the h5 label back onto the original voxel grid.
    canon = slices_to_volume(lab, 2)
    ornt = nib.orientations.io_orientation(np.asarray(geom["affine"]))
    back = nib.orientations.apply_orientation(canon, nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), ornt))
    raw_lab = np.asarray(nib.load(str(tmp_path / "raw" / "label" / "label0001.nii.gz")).dataobj)
    remapped = np.vectorize({0: 0, 8: 1, 11: 6, 9: 0, 2: 4}.get)(raw_lab)
    assert np.array_equal(back, remapped)
    with np.load(tmp_path / "out" / "train_npz" / "case0005_slice002.npz") as z:
        assert z["label"][shape[1] - 1 - 1, shape[0] - 1 - 3] == 6


def test_prepare_synapse_matches_synth_standard(tmp_path, synapse_raw, synapse_root):
    out = tmp_path / "prep"
    assert cli(["prepare", "synapse", "--raw", synapse_raw, "--out", out]) == 0
    for name in ("lists/lists_Synapse/train.txt", "lists/lists_Synapse/test_vol.txt",
                 "test_vol_h5/case0002.geometry.json"):
        assert (out / name).read_text() == (synapse_root / name).read_text()
    with h5py.File(out / "test_vol_h5" / "case0002.npy.h5") as a, \
            h5py.File(synapse_root / "test_vol_h5" / "case0002.npy.h5") as b:
        assert np.array_equal(a["image"][()], b["image"][()]) and np.array_equal(a["label"][()], b["label"][()])
    dm = SynapseDataModule(str(out), num_workers=0, image_size=32, val_cases=1)
    dm.setup("test")
    assert dm.test_case_names == ["case0001", "case0002"]


def test_split_cases():
    assert split_cases([1, 5, 2, 6]) == ([5, 6], [1, 2])
    assert split_cases([1, 5, 2, 6], test_cases=[6]) == ([1, 2, 5], [6])
    a = split_cases(list(range(1, 11)), "random", test_fraction=0.3, seed=4)
    assert a == split_cases(list(range(1, 11)), "random", test_fraction=0.3, seed=4) and len(a[1]) == 3
    with pytest.raises(ValueError, match=r"case\(s\) \['11', '12'\] are not part of the standard"):
        split_cases([1, 5, 11, 12])
    with pytest.raises(ValueError, match="split leaves 0 training and 2 test case"):
        split_cases([1, 2])


def test_prepare_synapse_errors(tmp_path, synapse_raw, capsys):
    with pytest.raises(LayoutError, match=r"expected a raw BTCV/Synapse download .*found: .* does not exist"):
        prepare_synapse(tmp_path / "missing", tmp_path / "o")
    raw = tmp_path / "raw"
    shutil.copytree(synapse_raw, raw)
    (raw / "label" / "label0002.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        prepare_synapse(raw, tmp_path / "o")
    assert str(err.value) == (f"BTCV images and labels do not pair up by case number: "
                              f"1 image(s) without a label in {raw / 'label'}: ['2']")
    assert cli(["prepare", "synapse", "--raw", raw, "--out", tmp_path / "o"]) == 2
    assert "image(s) without a label" in capsys.readouterr().err
    shutil.copy(synapse_raw / "label" / "label0002.nii.gz", raw / "label" / "label0002.nii.gz")
    lab = nib.load(str(raw / "label" / "label0005.nii.gz"))
    data = np.asarray(lab.dataobj).copy()
    data[0, 0, 0] = 14
    nib.save(nib.Nifti1Image(data, lab.affine), str(raw / "label" / "label0005.nii.gz"))
    with pytest.raises(DataError, match=r"label0005.nii.gz \(image img0005.nii.gz\): label values \[14\] outside"):
        prepare_synapse(raw, tmp_path / "o")
    nib.save(nib.Nifti1Image(data[:-1], lab.affine), str(raw / "label" / "label0005.nii.gz"))
    with pytest.raises(DataError, match=r"label0005.nii.gz \(image img0005.nii.gz\): image/label shape mismatch"):
        prepare_synapse(raw, tmp_path / "o")
    with pytest.raises(ValueError, match="must differ from --raw"):
        prepare_synapse(raw, raw)


def test_prepare_isic_seeded_split_and_stats(tmp_path):
    raw = tmp_path / "raw"
    assert cli(["synth", "isic", "--out", raw, "--cases", 10, "--size", 24, "--layout", "official"]) == 0
    out = tmp_path / "out"
    summary = prepare_isic(raw, out, size=32, seed=1)
    assert summary["splits"] == {"train": 7, "val": 3} and summary["year"] == "2018"
    again = prepare_isic(raw, tmp_path / "out2", size=32, seed=1)
    assert sorted(p.name for p in (tmp_path / "out2" / "val" / "images").iterdir()) == \
        sorted(p.name for p in (out / "val" / "images").iterdir())
    assert again["mean"] == summary["mean"]
    with pytest.raises(ValueError, match=r"holds a data set written by an earlier prepare .*--overwrite"):
        prepare_isic(raw, out, size=32, seed=2)
    from vmunet.data.fileio import _FILE_MODE

    assert (out / "stats.json").stat().st_mode & 0o777 == _FILE_MODE  # not mkstemp's 0600
    train_imgs = sorted((out / "train" / "images").iterdir())
    px = np.concatenate([np.asarray(Image.open(p), np.float64).reshape(-1, 3) for p in train_imgs])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["mean"] == pytest.approx(px.mean(0).tolist()) and stats["std"] == pytest.approx(px.std(0).tolist())
    for p in (out / "val" / "masks").iterdir():
        m = np.asarray(Image.open(p))
        assert m.shape == (32, 32) and set(np.unique(m)) <= {0, 255}
    dm = ISICDataModule(str(out), num_workers=0, image_size=32)
    assert dm.preprocessing["intensity"]["mean"] == pytest.approx(stats["mean"])


def test_prepare_isic_official_splits_2017(tmp_path):
    raw = tmp_path / "raw"
    synth_isic(raw, cases=10, size=20, layout="official", year="2017", official_splits=True)
    summary = prepare_isic(raw, tmp_path / "out", size=24)
    assert summary["splits"] == {"train": 6, "val": 2, "test": 2} and summary["year"] == "2017"
    names = sorted(p.name for p in (tmp_path / "out" / "test" / "images").iterdir())
    assert names == ["ISIC_0000008.png", "ISIC_0000009.png"]  # superpixel files were ignored


def test_prepare_isic_errors(tmp_path):
    raw = tmp_path / "raw"
    synth_isic(raw, cases=4, size=16, layout="official", year="2018")
    gt = raw / "ISIC2018_Task1_Training_GroundTruth"
    (gt / "ISIC_0000001_segmentation.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask .*\['ISIC_0000001'\]"):
        prepare_isic(raw, tmp_path / "out")
    synth_isic(raw, cases=4, size=16, layout="official", year="2017")
    with pytest.raises(ValueError, match=r"holds ISIC \['2017', '2018'\]; choose one with --year"):
        prepare_isic(raw, tmp_path / "out")
    assert prepare_isic(raw, tmp_path / "out", year="2017", size=16)["splits"] == {"train": 3, "val": 1}
    with pytest.raises(LayoutError, match=r"expected the official ISIC archive layout"):
        prepare_isic(tmp_path / "out", tmp_path / "out3")


def test_cli_synth_all(tmp_path, capsys):
    assert cli(["synth", "synapse", "--out", tmp_path / "s", "--cases", 3, "--size", 16, "--slices", 4]) == 0
    assert json.loads(capsys.readouterr().out)["test_cases"] == ["case0001"]
    assert cli(["synth", "nifti", "--out", tmp_path / "n", "--cases", 2, "--size", 16, "--slices", 4,
                "--layout", "decathlon", "--modality", "MR"]) == 0
    assert len(json.loads((tmp_path / "n" / "dataset.json").read_text())["training"]) == 2
    assert cli(["synth", "synapse", "--out", tmp_path / "x", "--cases", 1]) == 2
    assert "cases must be between 2 and 30" in capsys.readouterr().err


def test_prepare_refuses_a_nonempty_output_and_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    """Issue 12.6: a second data set prepared into the same folder used to mix with the first."""
    from vmunet.data.manifest import MANIFEST

    _known_raw(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_synapse(tmp_path / "raw", out)  # cases 1 (test) and 5 (train)
    manifest = json.loads((out / MANIFEST).read_text())
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert manifest["complete"] is True and manifest["files"] == written and manifest["command"] == "prepare synapse"
    # another data set: case 2 (test) and case 6 (train) only
    other = tmp_path / "other"
    for kind in ("img", "label"):
        (other / kind).mkdir(parents=True)
        for cid in (2, 6):
            shutil.copy(tmp_path / "raw" / kind / f"{kind}0001.nii.gz", other / kind / f"{kind}{cid:04d}.nii.gz")
    assert cli(["prepare", "synapse", "--raw", other, "--out", out, "--test-cases", 2]) == 2
    assert "holds a data set written by an earlier prepare (vmunet-prepare.json); pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "test_vol_h5").glob("*.h5")) == ["case0001.npy.h5"]
    notes = out / "notes.txt"  # a file prepare did not write survives --overwrite
    notes.write_text("mine")
    with pytest.raises(DataError, match=r"is not empty \(1 file\(s\) not written by an earlier prepare, e\.g\. \['notes.txt'\]\)"):
        prepare_synapse(other, out, test_cases=[2], overwrite=True)
    assert notes.read_text() == "mine"
    notes.unlink()
    prepare_synapse(other, out, test_cases=[2], overwrite=True)
    assert sorted(p.name for p in (out / "test_vol_h5").glob("*.h5")) == ["case0002.npy.h5"]
    assert sorted({p.name.split("_slice")[0] for p in (out / "train_npz").glob("*.npz")}) == ["case0006"]
    assert (out / "lists" / "lists_Synapse" / "test_vol.txt").read_text() == "case0002\n"
    # a folder of someone else's files is refused, --overwrite or not, and left as it was
    foreign = tmp_path / "foreign"
    (foreign / "test_vol_h5").mkdir(parents=True)
    (foreign / "test_vol_h5" / "case0099.npy.h5").write_bytes(b"not ours")
    for extra in ([], ["--overwrite"]):
        assert cli(["prepare", "synapse", "--raw", tmp_path / "raw", "--out", foreign, *extra]) == 2
        assert "is not empty (1 file(s) not written by an earlier prepare" in capsys.readouterr().err
    assert (foreign / "test_vol_h5" / "case0099.npy.h5").read_bytes() == b"not ours"
    assert not (foreign / MANIFEST).exists()


def test_prepare_isic_overwrite_replaces_the_earlier_split(tmp_path):
    from vmunet.data.manifest import MANIFEST

    raw = tmp_path / "raw"
    synth_isic(raw, cases=6, size=24, seed=0, layout="official")
    out = tmp_path / "out"
    prepare_isic(raw, out, size=16, seed=0, split=0.5)
    prepare_isic(raw, out, size=16, seed=1, split=0.7, overwrite=True)
    counts = {s: len(list((out / s / "images").iterdir())) for s in ("train", "val")}
    assert counts == {"train": 4, "val": 2}  # nothing of the earlier 3/3 split is left
    assert json.loads((out / MANIFEST).read_text())["command"] == "prepare isic"


def test_a_prepare_that_fails_half_way_removes_what_it_wrote(tmp_path):
    from vmunet.data.manifest import MANIFEST

    _known_raw(tmp_path / "raw")
    lab = nib.load(str(tmp_path / "raw" / "label" / "label0005.nii.gz"))  # the second case is bad
    data = np.asarray(lab.dataobj).copy()
    data[0, 0, 0] = 14
    _save(tmp_path / "raw" / "label" / "label0005.nii.gz", data, lab.affine)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"label values \[14\] outside"):
        prepare_synapse(tmp_path / "raw", out)
    assert [p for p in out.rglob("*")] == []  # case0001 was written, then removed; no manifest left
    killed = tmp_path / "killed"  # a SIGKILLed prepare: claimed, files written, never listed
    (killed / "train_npz").mkdir(parents=True)
    (killed / MANIFEST).write_text(json.dumps({"command": "prepare synapse", "complete": False, "files": []}))
    (killed / "train_npz" / "case0005_slice000.npz").write_bytes(b"partial")
    with pytest.raises(DataError, match="was killed before it could list its files; nothing is removed"):
        prepare_synapse(tmp_path / "raw", killed, overwrite=True)
    assert (killed / "train_npz" / "case0005_slice000.npz").read_bytes() == b"partial"

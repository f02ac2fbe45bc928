"""`vmunet predict` with nnU-Net raw folders: case names, multi-channel cases, --reference labelsTs."""

from __future__ import annotations

import csv
import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import (
    oblique_affine,
    structure_volume,
    volume_record,
    write_nifti,
)
from torch import nn

from vmunet.inference import Predictor


def run(argv):
    from vmunet.cli import main

    return main(["predict", *map(str, argv)])


def _record(in_chans):
    intensity = {"mode": "window", "window": [0.0, 100.0]}
    return volume_record(in_chans=in_chans, intensity=intensity if in_chans == 1 else [intensity] * in_chans)


@pytest.fixture()
def images_ts(tmp_path):
    """imagesTs/ with two 2-channel cases (nnU-Net naming) and labelsTs/ for one of them."""
    folder, labels = tmp_path / "imagesTs", tmp_path / "labelsTs"
    folder.mkdir()
    labels.mkdir()
    for i, case in enumerate(["la_003", "la_007"]):
        aff = oblique_affine(angles=(0.1 * i, 0.0, 0.2))
        for c in range(2):
            write_nifti(folder / f"{case}_{c:04d}.nii.gz", structure_volume((12, 10, 3), seed=i + c), aff)
    write_nifti(labels / "la_003.nii.gz", (structure_volume((12, 10, 3)) > 50).astype(np.uint8),
                oblique_affine(angles=(0.0, 0.0, 0.2)))
    return folder


def test_single_channel_outputs_drop_the_channel_suffix_and_reference_matches(tmp_path, capsys, make_checkpoint):
    ckpt = make_checkpoint("one.ckpt", _record(1), num_classes=2, in_chans=1)
    scans, refs = tmp_path / "imagesTs", tmp_path / "labelsTs"
    scans.mkdir()
    refs.mkdir()
    for case in ("case_1", "case_2"):
        write_nifti(scans / f"{case}_0000.nii.gz", structure_volume((12, 10, 3)), np.diag([1.0, 1.0, 2.0, 1.0]))
        write_nifti(refs / f"{case}.nii.gz", (structure_volume((12, 10, 3)) > 50).astype(np.uint8),
                    np.diag([1.0, 1.0, 2.0, 1.0]))
    # predicting into the input folder: case_1_0000.nii.gz -> case_1.nii.gz beside it; run twice,
    # its own outputs are not cases (recognised by their sidecars) and are reused and scored
    for expected in ("predicted 2 case(s), 6 slices", "predicted 0 case(s), 0 slices"):
        assert run(["-i", scans, "-o", scans, "-m", ckpt, "--device", "cpu", "--reference", refs]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith(expected)
        with open(scans / "metrics.csv") as f:
            assert [r["case"] for r in csv.DictReader(f)] == ["case_1", "case_2"]
    assert sorted(p.name for p in scans.iterdir()) == [
        "case_1.json", "case_1.nii.gz", "case_1_0000.nii.gz", "case_2.json", "case_2.nii.gz", "case_2_0000.nii.gz",
        "metrics.csv"]
    assert "reused 2 up to date" in printed
    assert json.loads((scans / "case_1.json").read_text())["input"] == str(scans / "case_1_0000.nii.gz")


def test_grouping_rule_for_one_and_several_channels(tmp_path):
    from vmunet.data.errors import DataError
    from vmunet.inference import io

    names = ["a_0000.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz", "scan_0007.nii.gz", "plain.nii.gz", "x_0000.png"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    found = io.find_cases(tmp_path)
    # one channel: _0000 is stripped; a case with a _0000 file owns its other channel files (b: 2 files,
    # refused); a file of a case without _0000 stays a case under its full name; 2D images are never grouped
    with pytest.raises(DataError, match=r"case 'b' has channel files \['b_0000.nii.gz', 'b_0001.nii.gz'\]; "
                                        r"expected exactly \['b_0000.nii.gz'\] \(1 channel\(s\)\)"):
        io.group_cases(found, 1, tmp_path)
    (tmp_path / "b_0001.nii.gz").unlink()
    cases = io.group_cases(io.find_cases(tmp_path), 1, tmp_path)
    assert [(c.name, [f.name for f in c.files]) for c in cases] == [
        ("a", ["a_0000.nii.gz"]), ("b", ["b_0000.nii.gz"]), ("plain", ["plain.nii.gz"]),
        ("scan_0007", ["scan_0007.nii.gz"]), ("x_0000", ["x_0000.png"])]
    # several channels: every volume file must be a channel file
    with pytest.raises(DataError, match=r"files not named <case>_NNNN.nii.gz .*\['plain.nii.gz'\]"):
        io.group_cases(io.find_cases(tmp_path), 2, tmp_path)


def test_multichannel_cases_are_grouped_resumed_and_scored(tmp_path, images_ts, caplog, capsys, make_checkpoint):
    ckpt = make_checkpoint("two.ckpt", _record(2), num_classes=2, in_chans=2)
    out, refs = tmp_path / "out", tmp_path / "labelsTs"
    caplog.set_level(logging.INFO)
    assert run(["-i", images_ts, "-o", out, "-m", ckpt, "--device", "cpu", "--reference", refs]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["la_003.nii.gz", "la_007.nii.gz"]
    side = json.loads((out / "la_007.json").read_text())
    assert side["input"] == [str(images_ts / "la_007_0000.nii.gz"), str(images_ts / "la_007_0001.nii.gz")]
    src = nib.load(str(images_ts / "la_007_0000.nii.gz"))
    seg = nib.load(str(out / "la_007.nii.gz"))
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    # a partial reference folder: warned once, naming the case without a reference
    assert f"--reference {refs}: no reference for 1 of 2 case(s) ['la_007']" in caplog.text
    with open(out / "metrics.csv") as f:
        assert {r["case"] for r in csv.DictReader(f)} == {"la_003"}
    capsys.readouterr()
    # resume: up to date cases are reused; changing one channel file recomputes only that case
    write_nifti(images_ts / "la_007_0001.nii.gz", structure_volume((12, 10, 3), seed=9),
                oblique_affine(angles=(0.1, 0.0, 0.2)))
    assert run(["-i", images_ts, "-o", out, "-m", ckpt, "--device", "cpu"]) == 0
    assert "predicted 1 case(s), 3 slices" in capsys.readouterr().out
    assert ("la_007 (la_007_0000.nii.gz, la_007_0001.nii.gz): recomputing la_007.nii.gz: the input file differs"
            in caplog.text)


def test_missing_channel_is_a_one_line_error(tmp_path, images_ts, capsys, make_checkpoint):
    ckpt = make_checkpoint("two.ckpt", _record(2), num_classes=2, in_chans=2)
    (images_ts / "la_007_0001.nii.gz").unlink()
    assert run(["-i", images_ts, "-o", tmp_path / "out", "-m", ckpt, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == (f"vmunet predict: error: {images_ts}: case 'la_007' has channel files ['la_007_0000.nii.gz']; "
                   "expected exactly ['la_007_0000.nii.gz', 'la_007_0001.nii.gz'] (2 channel(s))\n")
    assert not (tmp_path / "out").exists()


def test_reference_folder_matching_nothing_is_an_error(tmp_path, images_ts, capsys, make_checkpoint):
    ckpt = make_checkpoint("two.ckpt", _record(2), num_classes=2, in_chans=2)
    refs = tmp_path / "other"
    refs.mkdir()
    write_nifti(refs / "la_003_0000.nii.gz", np.zeros((12, 10, 3), np.uint8), np.eye(4))
    assert run(["-i", images_ts, "-o", tmp_path / "out", "-m", ckpt, "--device", "cpu", "--reference", refs]) == 2
    assert capsys.readouterr().err == (
        f"vmunet predict: error: --reference {refs}: no file matches a case (references ['la_003_0000'], "
        "cases ['la_003', 'la_007']); expected <case>.nii.gz (nnU-Net labelsTs naming)\n")
    assert not (tmp_path / "out").exists()


class _Channel1(nn.Module):
    """Fixed fake model of 2 input channels: class 1 where channel 1 (normalized) exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 2
        fg = 40.0 * (x[:, 1:2] - 0.5)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def test_predictor_stacks_channels_in_order_and_normalizes_each(tmp_path):
    aff = oblique_affine(flips=(-1, 1, 1))
    signal = structure_volume((14, 12, 4), seed=3)  # structure at 100, noise +-10
    write_nifti(tmp_path / "c_0000.nii.gz", np.full_like(signal, 1000.0), aff)  # channel 0: useless
    write_nifti(tmp_path / "c_0001.nii.gz", signal * 7.0, aff)  # channel 1: the signal, another scale
    rec = volume_record(in_chans=2, intensity=[{"mode": "window", "window": [0.0, 100.0]},
                                               {"mode": "window", "window": [0.0, 700.0]}])
    pred = Predictor(_Channel1(), rec, device="cpu").predict_file(
        [tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"], tmp_path / "c.nii.gz", name="c")
    expected = (signal * 7.0 / 700.0 > 0.5).astype(np.uint8)  # file layout: the label map's layout
    np.testing.assert_array_equal(pred.labels, expected)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "c.nii.gz")).dataobj), expected)
    assert pred.scan.name == "c"
    with pytest.raises(Exception, match=r"this model takes 2-channel volumes, got 1 channel\(s\); nnU-Net naming"):
        Predictor(_Channel1(), rec, device="cpu").predict_volume(tmp_path / "c_0000.nii.gz")

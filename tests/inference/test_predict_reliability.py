"""Issue 12, inference side: no silent wrong results, no stale or mixed outputs, early errors.

Each test names the item it covers; each failed before the fix it checks.
"""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import (
    oblique_affine,
    save_checkpoint,
    structure_volume,
    volume_record,
    write_nifti,
)

from vmunet.inference import CheckpointError, Predictor, io
from vmunet.inference.slicewise import SliceInferer


def run(argv):
    from vmunet.cli import main

    return main(["predict", *map(str, argv)])


def nifti_labels(path):
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture()
def other_checkpoint(make_checkpoint):
    """Same model and record as ``tiny_checkpoint``, other weights."""
    rec = volume_record(class_names=["background", "liver", "spleen"], num_classes=3)
    return make_checkpoint("other.ckpt", rec, num_classes=3, in_chans=1, seed=1)


# ---------------------------------------------------------------- 12.1 non-finite voxels


def test_nonfinite_voxels_refuse_the_case_by_default_and_fill_only_on_request(tmp_path, tiny_checkpoint, caplog, capsys):
    vol = structure_volume((20, 16, 6))
    nan = vol.copy()
    nan[2:12, 3:13, 1] = np.nan  # 100 voxels on slice 1
    nan[5:15, 2:12, 4] = np.nan  # 100 voxels on slice 4
    nan[0, 0, 4] = np.inf
    scans = tmp_path / "scans"
    scans.mkdir()
    write_nifti(scans / "ct.nii.gz", nan, np.eye(4))
    caplog.set_level(logging.INFO)
    assert run(["-i", scans, "-o", tmp_path / "refused", "-m", tiny_checkpoint, "--device", "cpu"]) == 1
    assert "ct.nii.gz: failed: " in caplog.text
    assert "201 non-finite voxel(s) (NaN or infinite) on 2 slice(s); refusing to segment it" in caplog.text
    assert not (tmp_path / "refused" / "ct.nii.gz").exists()

    # filled explicitly: exactly the prediction of the scan with those voxels set to the window's low end (0)
    caplog.clear()
    out = tmp_path / "filled"
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--fill-nonfinite", "window-min"]) == 0
    assert "filled 201 non-finite voxel(s) on 2 slice(s) with 0 (fill_nonfinite=window-min)" in caplog.text
    side = json.loads((out / "ct.json").read_text())
    assert side["fill_nonfinite"] == "window-min" and side["nonfinite_filled"] == 201
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    write_nifti(by_hand / "ct.nii.gz", np.where(np.isfinite(nan), nan, 0.0).astype(np.float32), np.eye(4))
    assert run(["-i", by_hand, "-o", tmp_path / "ref", "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    np.testing.assert_array_equal(nifti_labels(out / "ct.nii.gz"), nifti_labels(tmp_path / "ref" / "ct.nii.gz"))
    assert run(["-i", scans, "-o", tmp_path / "v", "-m", tiny_checkpoint, "--device", "cpu", "--fill-nonfinite", "-50"]) == 0
    assert json.loads((tmp_path / "v" / "ct.json").read_text())["fill_nonfinite"] == -50.0


def test_predictor_api_refuses_nonfinite_arrays_and_bad_fill_settings():
    from inference_helpers import ThresholdModel

    from vmunet.errors import ConfigError

    vol = structure_volume((16, 16, 4))
    vol[3, 3, 2] = -np.inf
    with pytest.raises(io.ScanReadError, match=r"array: 1 non-finite voxel\(s\) \(NaN or infinite\) on 1 slice"):
        Predictor(ThresholdModel(), volume_record(), device="cpu").predict_volume(vol)
    filled = Predictor(ThresholdModel(), volume_record(), device="cpu", fill_nonfinite=100.0).predict_volume(vol)
    assert filled.nonfinite_filled == 1 and filled.labels[3, 3, 2] == 1  # 100 is above the model's threshold
    zscore = volume_record(intensity={"mode": "zscore", "mean": 0.0, "std": 1.0})
    with pytest.raises(ConfigError, match="'window-min' needs an intensity window"):
        Predictor(ThresholdModel(), zscore, device="cpu", fill_nonfinite="window-min")
    with pytest.raises(ConfigError, match="expected a finite number or 'window-min', got 'nan'"):
        Predictor(ThresholdModel(), volume_record(), device="cpu", fill_nonfinite="nan")


# ---------------------------------------------------------------- 12.5 stale predictions


def test_outputs_are_reused_only_for_the_same_checkpoint_options_and_input(tmp_path, tiny_checkpoint, other_checkpoint,
                                                                            caplog, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):
        write_nifti(scans / f"c{i}.nii.gz", structure_volume((20, 16, 4), seed=i), oblique_affine())
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert run(["-i", scans, "-o", out, "-m", other_checkpoint, "--device", "cpu"]) == 0
    assert "predicted 2 case(s)" in (printed := capsys.readouterr().out) and "recomputed 2 stale" in printed
    assert caplog.text.count("recomputing c0.nii.gz: the checkpoint differs (sha256 ") == 1
    fresh = tmp_path / "fresh"
    assert run(["-i", scans, "-o", fresh, "-m", other_checkpoint, "--device", "cpu"]) == 0
    for i in range(2):  # the outputs are the other checkpoint's, and say so
        np.testing.assert_array_equal(nifti_labels(out / f"c{i}.nii.gz"), nifti_labels(fresh / f"c{i}.nii.gz"))
        side = json.loads((out / f"c{i}.json").read_text())
        assert side["checkpoint_sha256"] == json.loads((fresh / f"c{i}.json").read_text())["checkpoint_sha256"]
    capsys.readouterr()
    caplog.clear()
    assert run(["-i", scans, "-o", out, "-m", other_checkpoint, "--device", "cpu"]) == 0
    assert "reused 2 up to date; recomputed 0 stale" in capsys.readouterr().out
    # an option that changes labels, then a changed input file: recomputed, with the reason
    assert run(["-i", scans, "-o", out, "-m", other_checkpoint, "--device", "cpu", "--tta"]) == 0
    assert "recomputing c1.nii.gz: tta was False, now True" in caplog.text
    write_nifti(scans / "c1.nii.gz", structure_volume((20, 16, 4), seed=7), oblique_affine())
    capsys.readouterr()
    assert run(["-i", scans, "-o", out, "-m", other_checkpoint, "--device", "cpu", "--tta"]) == 0
    assert "recomputing c1.nii.gz: the input file differs (sha256 " in caplog.text
    assert "predicted 1 case(s)" in capsys.readouterr().out
    # a sidecar from before this rule (no record of its input) is never trusted
    side = json.loads((out / "c0.json").read_text())
    del side["input_sha256"]
    (out / "c0.json").write_text(json.dumps(side))
    assert run(["-i", scans, "-o", out, "-m", other_checkpoint, "--device", "cpu", "--tta"]) == 0
    assert "recomputing c0.nii.gz: its sidecar c0.json does not record 'input_sha256'" in caplog.text


# ---------------------------------------------------------------- 12.7 own outputs are not inputs


def test_predict_into_its_input_folder_twice_does_not_segment_its_own_outputs(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", structure_volume((20, 16, 3)), np.eye(4))
    write_nifti(folder / "b_seg.nii.gz", structure_volume((20, 16, 3), seed=2), np.eye(4))  # a real input
    for _ in range(2):
        assert run(["-i", folder, "-o", folder, "-m", tiny_checkpoint, "--device", "cpu", "--suffix", "_seg"]) == 0
    assert sorted(p.name for p in folder.glob("*.nii.gz")) == [
        "a.nii.gz", "a_seg.nii.gz", "b_seg.nii.gz", "b_seg_seg.nii.gz"]
    assert "reused 2 up to date" in capsys.readouterr().out.splitlines()[-1]
    assert [c.name for c in io.find_cases(folder)] == ["a.nii.gz", "b_seg.nii.gz"]


# ---------------------------------------------------------------- 12.9 errors that came late


def test_unwritable_output_fails_before_any_case_is_computed(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    import tempfile

    scans = tmp_path / "scans"
    scans.mkdir()
    write_nifti(scans / "a.nii.gz", structure_volume((20, 16, 3)), np.eye(4))
    out = tmp_path / "ro"
    out.mkdir()
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # chmod does not stop root: refuse writes in `out` here
        if dir is not None and str(dir) == str(out):
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    calls = []
    real_call = SliceInferer.__call__
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(SliceInferer, "__call__", lambda *a, **k: calls.append(1) or real_call(*a, **k))
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"vmunet predict: error: --output {out}: folder is not writable (Permission denied)\n"
    assert calls == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run(["-i", scans, "-o", blocker / "sub", "-m", tiny_checkpoint, "--device", "cpu"]) == 2
    assert f"cannot create the folder, {blocker} is a regular file" in capsys.readouterr().err
    assert calls == []


def test_class_count_mismatch_between_model_and_record_fails_at_load(tmp_path):
    from vmunet.models import create_model

    kwargs = {"num_classes": 3, "in_chans": 1}
    ckpt = save_checkpoint(tmp_path / "mixed.ckpt", create_model("vmunet_test", **kwargs), "vmunet_test", kwargs,
                           volume_record())  # record: 2 classes (background, organ)
    with pytest.raises(CheckpointError, match=r"mixed\.ckpt: the model has 3 output class\(es\) .* but its "
                                              r"preprocessing record expects 2 \(class_names \['background', 'organ'\]\)"):
        Predictor.from_checkpoint(ckpt, device="cpu")


# ---------------------------------------------------------------- 12.10 smaller


def test_degenerate_in_plane_size_is_refused_without_running_the_model(tmp_path, monkeypatch):
    from inference_helpers import ThresholdModel

    calls = []
    monkeypatch.setattr(SliceInferer, "__call__", lambda *a, **k: calls.append(1))
    predictor = Predictor(ThresholdModel(), volume_record(), device="cpu")
    src = write_nifti(tmp_path / "line.nii.gz", np.zeros((1, 1, 500), np.float32), np.eye(4))
    with pytest.raises(io.ScanReadError, match=r"line\.nii\.gz: in-plane size 1 x 1 \(array shape \(1, 1, 500\)\) "
                                               r"is below the minimum of 8 voxels"):
        predictor.predict_file(src, tmp_path / "out.nii.gz")
    assert calls == []
    monkeypatch.undo()
    smallest = predictor.predict_volume(np.full((8, 9, 2), 100.0, np.float32))  # the smallest size accepted
    assert smallest.labels.shape == (8, 9, 2) and smallest.labels.all()


def test_qform_sform_disagreement_warns_naming_the_one_used(tmp_path, caplog):
    import SimpleITK as sitk

    sform = oblique_affine(angles=(0, 0, 0), origin=(10.0, 20.0, 30.0), flips=(1, 1, 1))
    qform = sform.copy()
    qform[:3, 3] = (-50.0, 5.0, 0.0)
    path = write_nifti(tmp_path / "two.nii.gz", structure_volume((12, 12, 3)), sform, qform=qform, qcode=1, scode=2)
    with caplog.at_level(logging.WARNING):
        scan = io.read_scan(path)
    assert "two.nii.gz: qform and sform disagree (largest difference 60 in the 4x4 affines); using the sform (code 2)" \
        in caplog.text
    np.testing.assert_allclose(io.original_affine(scan), sform)
    # the warning's claim about ITK: SimpleITK places this file by its qform (LPS origin = qform origin, x/y negated)
    np.testing.assert_allclose(sitk.ReadImage(str(path)).GetOrigin(), (50.0, -5.0, 0.0), atol=1e-4)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        io.read_scan(write_nifti(tmp_path / "one.nii.gz", structure_volume((12, 12, 3)), sform))
    assert "disagree" not in caplog.text


def test_not_a_checkpoint_says_so_without_torch_advice(tmp_path):
    from vmunet.models.safe_load import WeightsError

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError) as info:
        Predictor.from_checkpoint(junk, device="cpu")
    assert str(info.value).startswith(f"cannot read weights file {junk}: not a torch checkpoint (UnpicklingError: ")
    assert "weights_only" not in str(info.value)
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    (tmp_path / "cut.ckpt").write_bytes(whole.read_bytes()[:600])
    with pytest.raises(WeightsError, match=r"cut\.ckpt: not a torch checkpoint \(truncated or corrupt archive\)"):
        Predictor.from_checkpoint(tmp_path / "cut.ckpt", device="cpu")


def test_corrupt_geometry_sidecar_is_named_itself(tmp_path):
    import h5py

    h5 = tmp_path / "case0001.npy.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("image", data=np.zeros((3, 8, 8), np.float32))
    (tmp_path / "case0001.geometry.json").write_text('{"affine": [[1, 0')
    with pytest.raises(io.ScanReadError, match=r"case0001\.geometry\.json: not a readable JSON file"):
        io.read_scan(h5)

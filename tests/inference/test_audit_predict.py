"""Reliability audit of ``vmunet predict`` / ``--reference`` / ``export``: each test failed before
the fix it checks (docs/reliability.md names them)."""

from __future__ import annotations

import hashlib
import json
import logging
from unittest import mock

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import structure_volume, volume_record, write_nifti


def run(argv):
    from vmunet.cli import main

    return main(["predict", *map(str, argv)])


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _header_only(path, data, affine):
    """A NIfTI whose sform is ``affine`` as given (nibabel's constructor refuses to decompose a
    singular one into a qform): qform code 0, sform code 1."""
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, str(path))
    return path


def test_nonfinite_or_degenerate_affine_is_refused_naming_the_file(tmp_path, tiny_checkpoint, caplog):
    from vmunet.data.errors import DataError
    from vmunet.data.volumes import read_volume

    vol = structure_volume((16, 12, 4))
    zero = np.eye(4)
    zero[2, 2] = 0.0  # pixdim 0 along k: no place in space (nibabel: "Unable to find out axis 2.0 in start_ornt")
    nan = np.eye(4)
    nan[0, 3] = np.nan  # a NaN origin: read, predicted and written back with no error before
    dependent = np.eye(4)
    dependent[:3, 1] = [1.0, 0.0, 0.0]  # axes 0 and 1 along one direction
    cases = {"zero": (zero, "gives voxel size 0 along array axis 2"),
             "nan": (nan, "has non-finite entries (NaN or infinite)"),
             "dependent": (dependent, "has linearly dependent axes (a singular 3x3 part)")}
    for name, (affine, what) in cases.items():
        path = _header_only(tmp_path / f"{name}.nii.gz", vol, affine)
        with pytest.raises(DataError) as err:
            read_volume(path)
        assert str(err.value).startswith(f"{path}: voxel-to-world affine {what}: ")
        assert "expected finite voxel sizes > 0 along three independent axes" in str(err.value)

    scans = tmp_path / "scans"
    scans.mkdir()
    _header_only(scans / "zero.nii.gz", vol, zero)
    write_nifti(scans / "good.nii.gz", vol, np.diag([0.8, 0.8, 900.0, 1.0]))  # huge anisotropy is fine
    caplog.set_level(logging.INFO)
    assert run(["-i", scans, "-o", tmp_path / "out", "-m", tiny_checkpoint, "--device", "cpu"]) == 1
    assert f"zero.nii.gz: failed: {scans / 'zero.nii.gz'}: voxel-to-world affine gives voxel size 0" in caplog.text
    assert (tmp_path / "out" / "good.nii.gz").is_file() and not (tmp_path / "out" / "zero.nii.gz").exists()


def test_prepare_synapse_refuses_a_degenerate_affine_in_one_line(tmp_path, capsys):
    from vmunet.cli import main
    from vmunet.data.synth import synth_synapse

    raw = tmp_path / "raw"
    synth_synapse(raw, cases=2, size=16, slices=4, seed=0, raw=True)
    for sub, stem in (("img", "img"), ("label", "label")):
        path = sorted((raw / sub).glob(f"{stem}*.nii.gz"))[0]
        img = nib.load(str(path))
        affine = img.affine.copy()
        affine[:, 2] = [0.0, 0.0, 0.0, 0.0]
        affine[3, 3] = 1.0
        _header_only(path, np.asarray(img.dataobj), affine)
    out = tmp_path / "out"
    assert main(["prepare", "synapse", "--raw", str(raw), "--out", str(out), "--split", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vmunet prepare: error: {raw / 'img'}/img") and "\n" not in err  # was a traceback
    assert "voxel-to-world affine gives voxel size 0 along array axis 2" in err
    assert not out.exists()  # this run created it: removed again, empty


@pytest.fixture()
def predicted(tmp_path, tiny_checkpoint):
    """One scan (identity affine, 3 classes) predicted once into ``out``."""
    scans = tmp_path / "scans"
    scans.mkdir()
    vol = structure_volume((20, 16, 6))
    write_nifti(scans / "ct.nii.gz", vol, np.eye(4))
    out = tmp_path / "out"
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    return scans, out, (vol > 50).astype(np.uint8)


def test_reference_labels_are_checked_like_training_labels_and_on_the_scans_grid(tmp_path, predicted,
                                                                                  tiny_checkpoint, caplog):
    scans, out, lab = predicted
    shifted = np.eye(4)
    shifted[0, 3] = 30.0
    bad = {  # before: each was scored silently (rounded, cast, ignored or compared voxel by voxel)
        "big": (np.where(lab, 5, 0).astype(np.uint8), np.eye(4),
                " (classes ['background', 'liver', 'spleen']): label values [5] outside the declared classes 0..2"),
        "half": ((lab * 1.5).astype(np.float32), np.eye(4),
                 " (classes ['background', 'liver', 'spleen']): label has non-integer values; expected class ids 0..2"),
        "neg": (np.where(lab, -56, 0).astype(np.int8), np.eye(4),
                " (classes ['background', 'liver', 'spleen']): label values [-56] outside the declared classes 0..2"),
        "nan": (np.where(lab, np.nan, 0).astype(np.float32), np.eye(4),
                " (classes ['background', 'liver', 'spleen']): label contains NaN or infinite values"),
        "shifted": (lab, shifted, ": voxel grid differs from the scan's (voxel -> RAS mm affines after reorientation: "
                                  "reference [[1.0, 0.0, 0.0, 30.0], "),
        "spacing": (lab, np.diag([2.0, 2.0, 2.0, 1.0]), ": voxel grid differs from the scan's"),
    }
    caplog.set_level(logging.INFO)
    for name, (arr, affine, message) in bad.items():
        ref = tmp_path / f"ref_{name}"
        ref.mkdir()
        write_nifti(ref / "ct.nii.gz", arr, affine)
        caplog.clear()
        assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--reference", ref]) == 1, name
        assert f"ct.nii.gz: failed: --reference {ref / 'ct.nii.gz'}{message}" in caplog.text, name
        assert (out / "metrics.csv").read_text() == "case,class,status,dice,hd95,hd95_mm,convention,hd95_definition\n"

    # the same ground truth stored flipped (another voxel order, the same grid in space) is scored
    flipped = tmp_path / "ref_flipped"
    flipped.mkdir()
    write_nifti(flipped / "ct.nii.gz", lab[::-1].copy(), np.array([[-1.0, 0, 0, 19], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    plain = tmp_path / "ref_plain"
    plain.mkdir()
    write_nifti(plain / "ct.nii.gz", lab, np.eye(4))
    rows = {}
    for ref in (plain, flipped):
        assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--reference", ref]) == 0
        rows[ref.name] = (out / "metrics.csv").read_text()
    assert rows["ref_plain"] == rows["ref_flipped"] and "ct,liver," in rows["ref_plain"]


def test_reuse_needs_the_label_map_its_sidecar_describes(tmp_path, predicted, tiny_checkpoint, make_checkpoint,
                                                         caplog):
    """A run stopped between a new label map and its sidecar left the old sidecar beside the new
    file; the next run with the old checkpoint reused the other checkpoint's labels as its own."""
    import vmunet.data.fileio as fileio
    scans, out, _ = predicted
    first = md5(out / "ct.nii.gz")
    other = make_checkpoint("other.ckpt", volume_record(class_names=["background", "liver", "spleen"], num_classes=3),
                            num_classes=3, in_chans=1, seed=1)
    real = fileio.write_json

    def killed_at_the_sidecar(path, obj):
        if path.name == "ct.json":
            raise KeyboardInterrupt("stopped between the label map and its sidecar")
        return real(path, obj)

    with mock.patch.object(fileio, "write_json", killed_at_the_sidecar), pytest.raises(KeyboardInterrupt):
        run(["-i", scans, "-o", out, "-m", other, "--device", "cpu"])
    assert md5(out / "ct.nii.gz") != first  # the other checkpoint's labels, beside the first run's sidecar
    caplog.set_level(logging.INFO)
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    assert "recomputing ct.nii.gz: ct.nii.gz is not the label map its sidecar ct.json describes (sha256 differs)" in caplog.text
    assert md5(out / "ct.nii.gz") == first
    assert json.loads((out / "ct.json").read_text())["output_sha256"] == hashlib.sha256((out / "ct.nii.gz").read_bytes()).hexdigest()


def test_probabilities_of_another_checkpoint_are_not_reused(tmp_path, predicted, tiny_checkpoint, make_checkpoint,
                                                           caplog):
    scans, out, _ = predicted
    other = make_checkpoint("other.ckpt", volume_record(class_names=["background", "liver", "spleen"], num_classes=3),
                            num_classes=3, in_chans=1, seed=1)
    common = ["-i", scans, "-o", out, "--device", "cpu"]
    assert run([*common, "-m", tiny_checkpoint, "--save-probabilities", "--overwrite"]) == 0
    first = np.load(out / "ct_probabilities.npz")["probabilities"]
    assert run([*common, "-m", other]) == 0  # recomputed without probabilities: the old file stays
    caplog.set_level(logging.INFO)
    assert run([*common, "-m", other, "--save-probabilities"]) == 0
    assert ("recomputing ct.nii.gz: ct_probabilities.npz is not the one its sidecar ct.json describes "
            "(written by another run, or not written with this label map)") in caplog.text
    second = np.load(out / "ct_probabilities.npz")["probabilities"]
    assert not np.array_equal(first, second)  # before: the first checkpoint's probabilities, "up to date"
    caplog.clear()
    assert run([*common, "-m", other, "--save-probabilities"]) == 0
    assert "is up to date (same checkpoint, preprocessing, options and input), reused" in caplog.text


def test_isic_predict_reads_images_as_training_does(tmp_path, caplog):
    """Grayscale: training converts it to RGB (R = G = B), predict refused it; 16 bits: refused by both."""
    from inference_helpers import save_checkpoint
    from PIL import Image

    from vmunet.cli import main
    from vmunet.data.preprocessing import make_preprocessing
    from vmunet.models import create_model

    record = make_preprocessing("isic", in_chans=3, image_size=(32, 32), class_names=["background", "lesion"],
                                num_classes=1, intensity={"mode": "zscore", "mean": [120.0] * 3, "std": [40.0] * 3})
    torch.manual_seed(0)
    kwargs = {"num_classes": 1, "in_chans": 3}
    ckpt = save_checkpoint(tmp_path / "isic.ckpt", create_model("vmunet_test", **kwargs), "vmunet_test", kwargs, record)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    gray[10:30, 12:36] //= 3  # a dark lesion
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(gray).save(scans / "gray.png")
    Image.fromarray(np.repeat(gray[..., None], 3, axis=-1)).save(scans / "rgb.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(scans / "wide.png")
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    assert main(["predict", "-i", str(scans), "-o", str(out), "-m", str(ckpt), "--device", "cpu"]) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(out / "gray.png")), np.asarray(Image.open(out / "rgb.png")))
    assert f"wide.png: failed: {scans / 'wide.png'}: 16-bit image (PIL mode I;16); expected an 8-bit" in caplog.text
    assert not (out / "wide.png").exists()


def test_metrics_csv_always_describes_the_run_that_wrote_it(tmp_path, predicted, tiny_checkpoint, make_checkpoint,
                                                           caplog):
    """A --reference run whose cases all failed kept the earlier run's metrics.csv beside outputs it
    no longer described; a run without --reference that recomputed the cases did so silently."""
    scans, out, lab = predicted
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    write_nifti(good / "ct.nii.gz", lab, np.eye(4))
    write_nifti(bad / "ct.nii.gz", np.where(lab, 7, 0).astype(np.uint8), np.eye(4))
    common = ["-i", scans, "-o", out, "--device", "cpu"]
    assert run([*common, "-m", tiny_checkpoint, "--reference", good]) == 0
    assert "ct,liver," in (out / "metrics.csv").read_text()
    caplog.set_level(logging.WARNING)
    assert run([*common, "-m", tiny_checkpoint, "--reference", bad]) == 1
    assert (out / "metrics.csv").read_text().splitlines() == ["case,class,status,dice,hd95,hd95_mm,convention,hd95_definition"]
    assert f"--reference {bad}: no case was scored; {out / 'metrics.csv'} holds only its header" in caplog.text
    assert run([*common, "-m", tiny_checkpoint, "--reference", good]) == 0
    other = make_checkpoint("other.ckpt", volume_record(class_names=["background", "liver", "spleen"], num_classes=3),
                            num_classes=3, in_chans=1, seed=1)
    caplog.clear()
    assert run([*common, "-m", other]) == 0
    assert (f"{out / 'metrics.csv'} is from an earlier run with --reference: it does not describe the 1 case(s) "
            "computed now") in caplog.text


@pytest.mark.parametrize("reader", ["predict", "export"])
def test_a_checkpoint_replaced_while_predict_reads_it_is_refused(tmp_path, tiny_checkpoint, monkeypatch, reader):
    """Outputs are reused by the checkpoint's sha256 (and an export records it), hashed after the
    weights were read: a last.ckpt replaced meanwhile (training still writing it) gave its hash to
    the old weights. Both read it through ``read_checkpoint_with_sha256``."""
    import vmunet.models.checkpoint as checkpoint_mod
    from vmunet.inference import CheckpointError, Predictor
    from vmunet.inference.export import export_checkpoint

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    real = checkpoint_mod.read_checkpoint

    def read_while_training_writes(path):
        loaded = real(path)
        ckpt.write_bytes(tiny_checkpoint.read_bytes() + b"newer")
        return loaded

    monkeypatch.setattr(checkpoint_mod, "read_checkpoint", read_while_training_writes)
    with pytest.raises(CheckpointError) as err:
        if reader == "predict":
            Predictor.from_checkpoint(ckpt, device="cpu")
        else:
            export_checkpoint(ckpt, tmp_path / "model.pt", "torchscript")
    assert str(err.value) == (f"checkpoint {ckpt} changed while it was read (a training run still writing it?); "
                              "expected a complete checkpoint file -- run again once it is written")
    assert not (tmp_path / "model.pt").exists()

"""`vmunet predict`: outputs, sidecars, resume, --overwrite, bad inputs, exit statuses, metrics."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re

import nibabel as nib
import numpy as np
import pytest
from inference_helpers import oblique_affine, save_checkpoint, structure_volume, write_nifti

from vmunet.inference import io


def run(argv):
    """Run ``vmunet predict`` exactly as the console script does (usage errors: one line on
    stderr, status 2)."""
    from vmunet.cli import main

    return main(["predict", *map(str, argv)])


@pytest.fixture()
def scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, name in enumerate(["case_a", "case_b", "case_c"]):
        aff = oblique_affine(angles=(0.1 * i, 0.0, 0.2), flips=(-1, 1, 1) if i % 2 else (1, -1, 1))
        write_nifti(folder / f"{name}.nii.gz", structure_volume((20, 16, 3 + i), seed=i), aff)
    return folder


def test_predict_folder_writes_label_maps_and_sidecars(tmp_path, scans, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--suffix", "_seg",
                "--save-probabilities", "--batch-size", "2"]) == 0
    for i, name in enumerate(["case_a", "case_b", "case_c"]):
        src, seg = nib.load(str(scans / f"{name}.nii.gz")), nib.load(str(out / f"{name}_seg.nii.gz"))
        assert seg.shape == src.shape and seg.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(seg.affine, src.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
        side = json.loads((out / f"{name}_seg.json").read_text())
        assert side["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
        assert side["class_names"] == ["background", "liver", "spleen"]
        assert side["model"]["model_name"] == "vmunet_test"
        assert side["preprocessing"]["intensity"] == {"mode": "window", "window": [0.0, 100.0]}
        assert side["num_slices"] == 3 + i and side["seconds"] > 0
        with np.load(out / f"{name}_seg_probabilities.npz") as npz:
            probs = npz["probabilities"]
            assert probs.dtype == np.float16 and probs.shape == (3, *src.shape)
            # The label of each voxel has the largest saved probability. Rounding to float16 keeps the
            # order but can tie two classes, so compare the probability values, not an argmax.
            labels = np.asarray(seg.dataobj).astype(np.int64)
            np.testing.assert_array_equal(np.take_along_axis(probs, labels[None], 0)[0], probs.max(0))
            np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
            np.testing.assert_allclose(npz["affine"], src.affine, atol=1e-6)
    summary = capsys.readouterr().out
    assert "predicted 3 case(s), 12 slices in" in summary and "slices/s" in summary and "failed 0" in summary


def test_resume_reuses_up_to_date_outputs_and_overwrite_recomputes(tmp_path, scans, tiny_checkpoint, capsys,
                                                                   caplog):
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    capsys.readouterr()
    (out / "case_b.json").write_text((out / "case_b.json").read_text())  # same sidecar, new mtime
    stamp = (out / "case_b.nii.gz").stat().st_mtime_ns
    (out / "case_c.json").unlink()  # label map without its sidecar: interrupted before it, recomputed
    (out / "case_c.nii.gz").write_bytes(b"half")
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    assert (out / "case_b.nii.gz").stat().st_mtime_ns == stamp
    assert "case_b.nii.gz is up to date (same checkpoint, preprocessing, options and input), reused" in caplog.text
    assert "predicted 1 case(s)" in (printed := capsys.readouterr().out) and "reused 2 up to date" in printed
    assert nib.load(str(out / "case_c.nii.gz")).shape == (20, 16, 5)
    # stderr is not a terminal here: one log line per predicted case, no redrawn progress bars
    assert re.search(rf"case_c\.nii\.gz: 5 slices in [0-9.]+ s -> {re.escape(str(out / 'case_c.nii.gz'))}$",
                     caplog.text, re.M), caplog.text
    assert "slice/s" not in capsys.readouterr().err
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--overwrite"]) == 0
    assert (out / "case_b.nii.gz").stat().st_mtime_ns != stamp
    assert "predicted 3 case(s)" in capsys.readouterr().out


def test_interrupted_run_leaves_no_half_written_output_and_resumes(tmp_path, scans, tiny_checkpoint, monkeypatch):
    out = tmp_path / "out"
    real_write = io._write_nifti
    calls = []

    def dying_write(scan, data, tmp):
        calls.append(scan.name)
        if scan.name == "case_b":
            tmp.write_bytes(b"\x1f\x8b half a gzip stream")
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing case_b
        real_write(scan, data, tmp)

    monkeypatch.setattr(io, "_write_nifti", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"])
    assert calls == ["case_a", "case_b"]
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz")) == ["case_a.nii.gz"]
    assert not [p for p in out.iterdir() if p.name.startswith(io.TEMP_PREFIX)]
    # a hard kill (no cleanup) would leave a temp file behind: it must never count as a result
    (out / f"{io.TEMP_PREFIX}abc.nii.gz").write_bytes(b"\x1f\x8b killed mid-write")
    monkeypatch.setattr(io, "_write_nifti", real_write)
    before = (out / "case_a.nii.gz").stat().st_mtime_ns
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    assert (out / "case_a.nii.gz").stat().st_mtime_ns == before  # resumed, not recomputed
    for name in ("case_a", "case_b", "case_c"):
        nib.load(str(out / f"{name}.nii.gz")).get_fdata()  # complete, readable files


def test_corrupt_file_among_good_ones(tmp_path, scans, tiny_checkpoint, caplog, capsys):
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    write_nifti(scans / "dynamic.nii.gz", np.zeros((8, 8, 3, 2), np.float32), np.eye(4))
    out = tmp_path / "out"
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 1
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_a.nii.gz", "case_b.nii.gz", "case_c.nii.gz"]
    assert "broken.nii.gz: failed:" in caplog.text and "unreadable or corrupt image file" in caplog.text
    assert "dynamic.nii.gz: failed:" in caplog.text and "expected a 3D volume, got an array of shape (8, 8, 3, 2) (4D)" in caplog.text
    assert "2 case(s) failed:" in caplog.text
    assert "predicted 3 case(s)" in capsys.readouterr().out and not (out / "broken.nii.gz").exists()


def test_checkpoint_without_preprocessing_exits_2(tmp_path, scans, capsys):
    from inference_helpers import ThresholdModel

    ckpt = save_checkpoint(tmp_path / "old.ckpt", ThresholdModel(), "vmunet_test", {"num_classes": 2}, None)
    assert run(["-i", scans, "-o", tmp_path / "out", "-m", ckpt, "--device", "cpu"]) == 2
    assert "vmunet predict: error: checkpoint " in (err := capsys.readouterr().err)
    assert "old.ckpt has no preprocessing record" in err


def test_empty_folder_exits_2(tmp_path, tiny_checkpoint, capfd):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no scans here")
    assert run(["-i", empty, "-o", tmp_path / "out", "-m", tiny_checkpoint]) == 2
    # one line from us, and no C++ warning from ITK's DICOM scan of the folder before it (issue 12.10)
    assert capfd.readouterr().err == (f"vmunet predict: error: no scans found in {empty} (expected files ending in "
                                      f"{', '.join(io.SCAN_EXTS)} or DICOM series folders)\n")
    assert run(["-i", tmp_path / "missing", "-o", tmp_path / "out", "-m", tiny_checkpoint]) == 2
    assert "missing does not exist" in capfd.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reference_metrics_csv(tmp_path, scans, tiny_checkpoint, capsys):
    from medpy import metric as medpy_metric

    out, refs = tmp_path / "out", tmp_path / "refs"
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu"]) == 0
    refs.mkdir()
    for name in ("case_a", "case_b"):  # references: the prediction with class 2 wiped out
        seg = nib.load(str(out / f"{name}.nii.gz"))
        lab = np.asarray(seg.dataobj).copy()
        lab[lab == 2] = 0
        lab[:2] = 1
        nib.save(nib.Nifti1Image(lab, seg.affine, seg.header), str(refs / f"{name}.nii.gz"))
    os.remove(out / "case_a.nii.gz")  # one case predicted now, one resumed: both get metrics
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--reference", refs]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [
        ("case_a", "liver"), ("case_a", "spleen"), ("case_b", "liver"), ("case_b", "spleen")]
    for name in ("case_a", "case_b"):
        pred = io.read_scan(out / f"{name}.nii.gz", label=True)
        gt = io.read_scan(refs / f"{name}.nii.gz", label=True)
        liver, spleen = [r for r in rows if r["case"] == name]
        p, g = np.asarray(pred.array) == 1, np.asarray(gt.array) == 1
        assert float(liver["dice"]) == pytest.approx(medpy_metric.binary.dc(p, g))
        assert float(liver["hd95_mm"]) == pytest.approx(medpy_metric.binary.hd95(p, g, voxelspacing=pred.spacing))
        assert liver["status"] == "scored" and liver["hd95_definition"] == "pooled"
        # spleen is absent from the reference: strict leaves it out of the means, never HD95 0
        assert spleen["status"] in ("false_positive", "absent") and spleen["convention"] == "strict"
        assert spleen["dice"] == "" and spleen["hd95"] == ""
    printed = capsys.readouterr().out
    assert "mean" in printed and "convention strict" in printed and "HD95 pooled" in printed
    # vmunet test's table: its title and columns
    assert "predict: 2 cases, mean over cases, then classes" in printed
    assert any(line.split() == ["┃", "class", "┃", "Dice", "┃", "HD95", "(vox)", "┃", "HD95", "(mm)", "┃", "misses",
                                "┃", "false", "pos.", "┃"] for line in printed.splitlines()), printed
    assert run(["-i", scans, "-o", out, "-m", tiny_checkpoint, "--device", "cpu", "--reference", refs,
                "--metric-convention", "paper", "--hd95", "monai"]) == 0
    with open(out / "metrics.csv") as f:
        paper = list(csv.DictReader(f))
    assert {r["convention"] for r in paper} == {"paper"} and {r["hd95_definition"] for r in paper} == {"monai"}
    assert all(r["hd95"] == "0.0" for r in paper if r["class"] == "spleen")


def test_dispatcher_routes_predict(tmp_path, scans, tiny_checkpoint):
    from vmunet import cli  # an import error in any command module must fail here, not skip

    cli.build_parser()
    assert cli.main(["predict", "-i", str(scans / "case_a.nii.gz"), "-o", str(tmp_path / "o"), "-m", str(tiny_checkpoint),
                     "--device", "cpu"]) == 0
    assert (tmp_path / "o" / "case_a.nii.gz").exists()


def test_output_onto_input_and_name_clashes_are_refused(tmp_path, scans, tiny_checkpoint, caplog, capsys):
    before = (scans / "case_a.nii.gz").read_bytes()
    assert run(["-i", scans, "-o", scans, "-m", tiny_checkpoint, "--device", "cpu"]) == 2  # before any case runs
    assert (f"--output {scans}: case_a.nii.gz would overwrite the input {scans / 'case_a.nii.gz'}; expected "
            "another --output folder or a --suffix") in capsys.readouterr().err
    assert (scans / "case_a.nii.gz").read_bytes() == before
    import SimpleITK as sitk
    from inference_helpers import sitk_image

    sitk.WriteImage(sitk_image(structure_volume((8, 8, 3)), np.eye(4)), str(scans / "case_a.mha"))
    assert run(["-i", scans, "-o", tmp_path / "out", "-m", tiny_checkpoint, "--device", "cpu"]) == 2
    assert "several inputs share a case name, their outputs would collide: case_a:" in capsys.readouterr().err


def test_2d_images_with_binary_model_and_0_255_reference_masks(tmp_path, make_checkpoint):
    from PIL import Image

    from vmunet.data.preprocessing import make_preprocessing

    rec = make_preprocessing("isic", in_chans=3, image_size=[32, 32], class_names=["background", "lesion"],
                             num_classes=1, intensity={"mode": "zscore", "mean": [120.0] * 3, "std": [60.0] * 3})
    ckpt = make_checkpoint("isic.ckpt", rec, num_classes=1, in_chans=3)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for name in ("ISIC_001", "ISIC_002"):
        Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(images / f"{name}.jpg")
        m = np.zeros((24, 30), np.uint8)
        m[5:15, 8:20] = 255
        Image.fromarray(m).save(masks / f"{name}.png")
    out = tmp_path / "out"
    assert run(["-i", images, "-o", out, "-m", ckpt, "--device", "cpu", "--reference", masks]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [("ISIC_001", "lesion"), ("ISIC_002", "lesion")]
    for row in rows:
        pred = np.asarray(Image.open(out / f"{row['case']}.png"))
        assert pred.shape == (24, 30) and set(np.unique(pred)) <= {0, 1}
        gt = (np.asarray(Image.open(masks / f"{row['case']}.png")) > 127).astype(np.int64)
        ref_dice = 2 * np.sum((pred == 1) & (gt == 1)) / (np.sum(pred == 1) + np.sum(gt == 1))
        assert float(row["dice"]) == pytest.approx(ref_dice)

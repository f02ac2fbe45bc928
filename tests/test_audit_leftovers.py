"""Reliability audit leftovers (scan backends, export, predict, info, prepare): each test failed
before the fix it checks (docs/reliability.md names them)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vmunet.cli import main

BACKENDS = "('auto', 'ref', 'torch', 'numba', 'cuda', 'triton')"  # vmunet.ops.selective_scan.BACKENDS


@pytest.fixture(autouse=True)
def _inference_helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "inference"))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _checkpoint(path: Path) -> Path:
    from inference_helpers import save_checkpoint, volume_record

    from vmunet.models import create_model

    kwargs = {"num_classes": 2, "in_chans": 1}
    return save_checkpoint(path, create_model("vmunet_test", **kwargs), "vmunet_test", kwargs, volume_record())


def test_an_unknown_scan_backend_is_refused_when_the_model_is_built(tmp_path, capsys):
    from vmunet.data.synth import synth_synapse
    from vmunet.models import create_model

    expected = f"scan_backend: unknown backend 'foo'; choose from {BACKENDS}"
    with pytest.raises(ValueError) as err:  # before: built, refused only by the first forward pass
        create_model("vmunet_test", num_classes=2, in_chans=1, scan_backend="foo")
    assert str(err.value) == expected
    model = create_model("vmunet_test", num_classes=2, in_chans=1)
    with pytest.raises(ValueError) as err:
        model.set_scan_backend("foo")
    assert str(err.value) == expected
    data = tmp_path / "synapse"
    synth_synapse(data, cases=4, size=32, slices=4)
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    argv = ["fit", "--config", experiments / "demo.yaml", "--data.init_args.root", data, "--model.model_kwargs",
            "{scan_backend: foo}", "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", tmp_path / "runs"]
    assert main([str(a) for a in argv]) == 2
    assert _one_line(capsys) == f"vmunet fit: error: model.model_kwargs: {expected}"
    assert not (tmp_path / "runs").exists()  # refused before the Trainer started


def test_export_of_a_checkpoint_deleted_or_unreadable_meanwhile_is_one_line(tmp_path, capsys, monkeypatch):
    import vmunet.data.fileio as fileio
    import vmunet.inference.export as export

    ckpt = _checkpoint(tmp_path / "m.ckpt")
    argv = ["export", "-m", str(ckpt), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]
    real_check = export._check_paths

    def check_then_delete(checkpoint, *args):
        real_check(checkpoint, *args)
        checkpoint.rename(tmp_path / "moved.ckpt")  # gone between the check and the read

    monkeypatch.setattr(export, "_check_paths", check_then_delete)
    assert main(argv) == 2  # before: a FileNotFoundError traceback
    assert _one_line(capsys) == (f"vmunet export: error: --model {ckpt}: cannot read the checkpoint: No such file "
                                 "or directory (was it deleted or changed while exporting?)")
    monkeypatch.setattr(export, "_check_paths", real_check)
    (tmp_path / "moved.ckpt").rename(ckpt)

    def unreadable(path, digest=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(fileio, "hash_file", unreadable)
    assert main(argv) == 2
    assert _one_line(capsys) == (f"vmunet export: error: --model {ckpt}: cannot read the checkpoint: Permission "
                                 "denied (was it deleted or changed while exporting?)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]


def test_predict_names_the_output_file_a_full_disk_refused(tmp_path, caplog, monkeypatch):
    from inference_helpers import structure_volume, write_nifti

    import vmunet.inference.io as io

    scans = tmp_path / "scans"
    scans.mkdir()
    write_nifti(scans / "a.nii.gz", structure_volume((16, 16, 3)), np.eye(4))

    def full_disk(scan, data, tmp):  # what gzip's write raises: no file name
        Path(tmp).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_nifti", full_disk)
    out = tmp_path / "o"
    caplog.set_level(logging.ERROR)
    argv = ["predict", "-i", scans, "-o", out, "-m", _checkpoint(tmp_path / "m.ckpt"), "--device", "cpu"]
    assert main([str(a) for a in argv]) == 1
    # before: "...a.nii.gz: failed: [Errno 28] No space left on device", no output file named
    assert f"{scans / 'a.nii.gz'}: failed: [Errno 28] No space left on device: '{out / 'a.nii.gz'}'" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == []  # the temporary file is gone too


def test_info_size_error_names_what_info_accepts(capsys):
    assert main(["info", "vmunet_test", "--size", "33", "--no-memory"]) == 2
    # before: "... (or model_kwargs pad_to_multiple: true)", an option info does not have
    assert _one_line(capsys) == ("vmunet info: error: --size=[33, 33]: VMUNet needs height and width multiples "
                                 "of 32; expected e.g. [32, 32]")
    assert main(["info", "vmunet_test", "--size", "32", "--backend", "foo"]) == 2
    assert _one_line(capsys) == f"vmunet info: error: --backend: unknown backend 'foo'; choose from {BACKENDS}"


def _raw_with_nan_image(raw: Path) -> Path:
    from vmunet.data.prepare import btcv_cases, find_btcv_folder
    from vmunet.data.synth import synth_synapse

    synth_synapse(raw, cases=2, size=16, slices=4, seed=0, raw=True)
    img_path, _ = btcv_cases(find_btcv_folder(raw))[min(btcv_cases(find_btcv_folder(raw)))]
    img = nib.load(str(img_path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[0, 0, 0] = np.nan
    saved = nib.Nifti1Image(data, img.affine, img.header)
    saved.set_data_dtype(np.float32)  # the synthetic CT is int16, which has no NaN
    nib.save(saved, str(img_path))
    return img_path


def test_prepare_synapse_names_the_image_with_nan_voxels(tmp_path, capsys):
    img_path = _raw_with_nan_image(tmp_path / "raw")
    out = tmp_path / "out"
    assert main(["prepare", "synapse", "--raw", str(tmp_path / "raw"), "--out", str(out), "--split", "random"]) == 2
    # before: "label0001.nii.gz (image img0001.nii.gz): image contains NaN ..." -- the label named first
    assert _one_line(capsys) == f"vmunet prepare: error: {img_path}: image contains NaN or infinite values"


def test_a_failed_prepare_removes_the_folders_it_created_and_only_those(tmp_path, capsys):
    _raw_with_nan_image(tmp_path / "raw")
    base = ["prepare", "synapse", "--raw", str(tmp_path / "raw"), "--split", "random", "--out"]
    out = tmp_path / "new" / "deeper" / "out"
    assert main([*base, str(out)]) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()  # before: new/deeper/out left, empty
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main([*base, str(existing)]) == 2
    capsys.readouterr()
    assert existing.is_dir() and list(existing.iterdir()) == []  # it was there before: kept
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "note.txt").write_text("someone's")
    assert main([*base, str(kept / "sub" / "out")]) == 2
    capsys.readouterr()
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*")) == ["note.txt"]

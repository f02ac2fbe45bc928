"""Reliability audit of ``vmunet prepare | export | info | weights`` and ISIC images at predict:
each test failed before the fix it checks (docs/reliability.md names them)."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vmunet.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_isic_images_over_8_bits_are_refused_not_clipped_white(tmp_path, capsys):
    from vmunet.data.synth import synth_isic

    raw = tmp_path / "raw"
    synth_isic(raw, cases=4, size=16, seed=0, layout="official")
    jpg = sorted((raw / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[0]
    gray = np.asarray(Image.open(jpg).convert("L")).astype(np.uint16) * 257  # the same image in 16 bits
    wide = jpg.with_suffix(".png")
    Image.fromarray(gray).save(wide)
    jpg.unlink()
    assert Image.open(wide).mode == "I;16"  # PIL's convert("RGB") clips it at 255: all white before
    out = tmp_path / "out"
    assert main(["prepare", "isic", "--raw", str(raw), "--out", str(out)]) == 2
    assert _one_line(capsys) == (
        f"vmunet prepare: error: {wide}: 16-bit image (PIL mode I;16); expected an 8-bit RGB or grayscale image "
        "(values 0..255) -- convert it to 8 bits first (scale its range to 0..255)")
    assert not out.exists()  # this run created it: removed with what it wrote
    assert main(["prepare", "isic", "--raw", str(raw), "--out", str(tmp_path / "o2"), "--size", "0"]) == 2
    assert _one_line(capsys) == "vmunet prepare: error: --size: expected a positive number of pixels, got 0"


def test_export_never_writes_its_record_onto_the_checkpoint_nor_a_misleading_extension(tmp_path, capsys):
    from inference_helpers import save_checkpoint, volume_record

    from vmunet.models import create_model

    kwargs = {"num_classes": 2, "in_chans": 1}
    ckpt = save_checkpoint(tmp_path / "m.onnx.json", create_model("vmunet_test", **kwargs), "vmunet_test", kwargs,
                           volume_record())  # a checkpoint that happens to be named like -o m.onnx's record
    before = ckpt.read_bytes()
    base = ["export", "-m", str(ckpt), "--overwrite"]
    assert main([*base, "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    assert _one_line(capsys) == (
        f"vmunet export: error: --output {tmp_path / 'm.onnx'}: its record m.onnx.json would overwrite the checkpoint "
        f"{ckpt}; inputs are never overwritten -- choose another --output")
    assert ckpt.read_bytes() == before  # before: replaced by the JSON record
    assert main([*base, "--format", "onnx", "-o", str(tmp_path / "model.pt")]) == 2
    assert _one_line(capsys) == (
        f"vmunet export: error: --output {tmp_path / 'model.pt'}: the extension .pt is torchscript's, but --format "
        "onnx writes onnx; expected model.onnx (or --format torchscript)")
    assert main([*base, "--format", "torchscript", "-o", str(tmp_path / "model.pt2")]) == 2
    assert "the extension .pt2 is pt2's, but --format torchscript writes torchscript" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.json"]


def test_info_and_weights_inspect_refusals_are_one_line(tmp_path, capsys):
    assert main(["info", "vmunet_test", "--size", "33", "--no-memory"]) == 2  # was a ValueError traceback
    assert _one_line(capsys).startswith(
        "vmunet info: error: --size=[33, 33]: VMUNet needs height and width multiples of 32; expected e.g. [32, 32]")
    assert main(["info", "vmunet_test", "--size", "32", "--backend", "foo"]) == 2  # was a ValueError traceback
    assert _one_line(capsys) == ("vmunet info: error: --backend: unknown backend 'foo'; "
                                 "choose from ('auto', 'ref', 'torch', 'numba', 'cuda', 'triton')")
    assert main(["weights", "inspect", str(tmp_path)]) == 2
    assert _one_line(capsys) == (f"vmunet weights inspect: error: weights file {tmp_path} is a folder, expected a "
                                 "checkpoint file (.ckpt, .pth, .pt)")  # was "does not exist"
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert main(["weights", "inspect", str(empty)]) == 2
    assert _one_line(capsys) == (f"vmunet weights inspect: error: cannot read weights file {empty}: not a torch "
                                 "checkpoint (empty file, 0 bytes)")  # was "(EOFError: )"


def test_a_full_disk_is_one_line_and_prepare_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A disk that fills during ``prepare``: a traceback before, and the failure path's own manifest
    write failed too, so the written files and a ``complete: false`` manifest were left."""
    import vmunet.data.manifest as manifest
    import vmunet.data.synapse_format as synapse_format
    from vmunet.data.synth import synth_synapse

    raw = tmp_path / "raw"
    synth_synapse(raw, cases=2, size=16, slices=4, seed=0, raw=True)
    disk = {"full": False}
    real_npz, real_json = synapse_format.write_npz_slice, manifest.write_json

    def npz(path, image, label):
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_npz(path, image, label)
        disk["full"] = True  # the first slice took the last free space

    def manifest_json(path, obj):
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_json(path, obj)

    monkeypatch.setattr(synapse_format, "write_npz_slice", npz)
    monkeypatch.setattr(manifest, "write_json", manifest_json)
    out = tmp_path / "out"
    assert main(["prepare", "synapse", "--raw", str(raw), "--out", str(out), "--split", "random"]) == 2
    assert _one_line(capsys) == ("vmunet prepare: error: No space left on device ([Errno 28]); free some space "
                                 "and run it again")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == []


def test_dataset_json_label_conflicts_are_refused_and_a_wrong_count_warned(tmp_path, caplog):
    from vmunet.data.errors import DataError
    from vmunet.data.nifti_format import index_folder
    from vmunet.data.synth import synth_nifti

    root = tmp_path / "ds"
    synth_nifti(root, cases=3, test_cases=0, size=16, slices=4, seed=0)
    spec = json.loads((root / "dataset.json").read_text())

    def index_with(**changes):
        (root / "dataset.json").write_text(json.dumps({**spec, **changes}))
        return index_folder(root)

    with pytest.raises(DataError) as err:  # before: 'liver' silently dropped, class 1 named 'spleen'
        index_with(labels={"background": 0, "liver": 1, "spleen": 1, "kidney": 2})
    assert str(err.value) == (f"{root / 'dataset.json'}: labels 'liver' and 'spleen' both have value 1; "
                              "expected one name per value")
    with pytest.raises(DataError) as err:  # before: learnt as a fifth class named 'ignore'
        index_with(labels={**spec["labels"], "ignore": 4})
    assert str(err.value).startswith(f"{root / 'dataset.json'}: label 'ignore' (value 4) is nnU-Net's ignore label")
    caplog.set_level(logging.WARNING)
    assert len(index_with(numTraining=10).train) == 3
    assert (f"{root / 'dataset.json'}: numTraining is 10, but {root / 'imagesTr'} holds 3 training case(s); "
            "training on the 3 found") in caplog.text


@pytest.fixture(autouse=True)
def _inference_helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "inference"))

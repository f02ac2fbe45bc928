"""Issue 12.8: every user error of the ``vmunet`` commands is one line ``vmunet <command>: error:
...`` naming the file or option and what was expected, exit status 2, never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch


def _checkpoints(tmp_path):
    """Bad checkpoints of every kind, and a good one."""
    from inference_helpers import save_checkpoint, volume_record

    from vmunet.models import create_model

    torch.manual_seed(0)
    good = save_checkpoint(tmp_path / "good.ckpt", create_model("vmunet_test", num_classes=2, in_chans=1),
                           "vmunet_test", {"num_classes": 2, "in_chans": 1}, volume_record())
    (tmp_path / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(2048))
    (tmp_path / "truncated.ckpt").write_bytes(good.read_bytes()[:4000])
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "foreign.ckpt")  # a bare state dict
    save_checkpoint(tmp_path / "wrongclass.ckpt", create_model("vmunet_test", num_classes=2, in_chans=1),
                    "vmunet_test", {"num_classes": 5, "in_chans": 1}, volume_record())  # weights: 2 classes
    save_checkpoint(tmp_path / "nomodel.ckpt", create_model("vmunet_test", num_classes=2, in_chans=1),
                    "no_such_model", {"num_classes": 2, "in_chans": 1}, volume_record())
    save_checkpoint(tmp_path / "oddsize.ckpt", create_model("vmunet_test", num_classes=2, in_chans=1),
                    "vmunet_test", {"num_classes": 2, "in_chans": 1}, volume_record(image_size=(48, 48)))
    return good


def test_every_cli_user_error_is_one_line_with_exit_2(tmp_path, capfd, caplog, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "inference"))
    from inference_helpers import structure_volume, write_nifti

    from vmunet.cli import main
    from vmunet.data.synth import synth_isic, synth_synapse

    good = _checkpoints(tmp_path)
    scans = tmp_path / "scans"
    scans.mkdir()
    write_nifti(scans / "a.nii.gz", structure_volume((16, 16, 3)), np.eye(4))
    scan_bytes = (scans / "a.nii.gz").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    regular = tmp_path / "regular"
    regular.write_text("a file")
    official = tmp_path / "isic_official"
    synth_isic(official, cases=4, size=16, seed=0, layout="official")
    no_mask = tmp_path / "isic_no_mask"
    synth_isic(no_mask, cases=4, size=16, seed=0, layout="official")
    next((no_mask / "ISIC2018_Task1_Training_GroundTruth").glob("*.png")).unlink()
    nonempty = tmp_path / "nonempty"
    nonempty.mkdir()
    (nonempty / "old.txt").write_text("someone's")

    predict = ["predict", "-i", scans, "--device", "cpu"]
    cases = [  # (argv, words the one line must contain)
        ([*predict, "-o", regular / "out", "-m", good], [f"{regular} is a regular file"]),
        ([*predict, "-o", regular, "-m", good], [f"--output {regular}: is a regular file, expected a folder"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "random.ckpt"], ["random.ckpt: not a torch checkpoint (UnpicklingError"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "truncated.ckpt"], ["truncated.ckpt: not a torch checkpoint (truncated or corrupt archive)"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "foreign.ckpt"], ["foreign.ckpt has no ckpt['vmunet']['model_name']"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "wrongclass.ckpt"], ["wrongclass.ckpt", "5 output class(es)"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "nomodel.ckpt"], ["nomodel.ckpt: cannot rebuild model 'no_such_model'"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "missing.ckpt"], ["missing.ckpt does not exist"]),
        (["predict", "-i", empty, "-o", tmp_path / "o", "-m", good], [f"no scans found in {empty}"]),
        ([*predict, "-o", tmp_path / "o", "-m", good, "--reference", regular], [f"--reference {regular} is not a folder"]),
        ([*predict, "-o", tmp_path / "o", "-m", good, "--batch-size", "0"], ["batch_size must be >= 1, got 0"]),
        ([*predict, "-o", tmp_path / "o", "-m", good, "--suffix", "/../x"],
         ["--suffix '/../x': expected text without path separators (outputs stay in --output)"]),
        ([*predict, "-o", scans, "-m", good], [f"--output {scans}: a.nii.gz would overwrite the input {scans / 'a.nii.gz'}; "
                                               "expected another --output folder or a --suffix"]),
        ([*predict, "-o", tmp_path / "o", "-m", tmp_path / "oddsize.ckpt"],
         [f"checkpoint {tmp_path / 'oddsize.ckpt'}: preprocessing image_size=[48, 48]: VMUNet needs height and width "
          "multiples of 32; expected e.g. [64, 64] (or model_kwargs pad_to_multiple: true)"]),
        (["export", "-m", tmp_path / "oddsize.ckpt", "--format", "torchscript", "-o", tmp_path / "o" / "m.pt"],
         [f"checkpoint {tmp_path / 'oddsize.ckpt'}: preprocessing image_size=[48, 48]: VMUNet needs"]),
        (["prepare", "isic", "--raw", no_mask, "--out", tmp_path / "p1"], ["1 image(s) without a mask", "ISIC_"]),
        (["prepare", "synapse", "--raw", official, "--out", tmp_path / "p2"], [f"{official}: expected a raw BTCV"]),
        (["prepare", "isic", "--raw", official, "--out", nonempty], [f"--out {nonempty} is not empty"]),
        (["prepare", "isic", "--raw", official, "--out", regular], [f"--out {regular}: is a regular file"]),
        (["synth", "synapse", "--out", regular / "x"], [f"{regular} is a regular file"]),
        (["synth", "isic", "--out", tmp_path / "s", "--cases", "1"], ["need cases >= 2"]),
        (["info", "no_such_model"], ["unknown model 'no_such_model'; available:"]),
        (["ablate", "--config", Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml", "--out",
          tmp_path / "o", "--seed", "-1"], ["--seed: expected an integer in [0, 2**32), got -1"]),
        (["info", "vmunet_test", "--size", "0", "--no-memory"], ["--size takes one or two positive integers"]),
    ]
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    synapse = tmp_path / "synapse"
    synth_synapse(synapse, cases=4, size=32, slices=4)
    cases += [  # training commands whose errors come from the layers here (data folders, weights files)
        (["fit", "--config", experiments / "demo.yaml", "--model.weights", tmp_path / "random.ckpt",
          "--data.init_args.root", synapse, "--trainer.fast_dev_run", "true"],
         ["cannot read weights file", "random.ckpt: not a torch checkpoint"]),
        # a Synapse folder that does not exist: refused while the classes are built (no Trainer lines)
        (["fit", "--config", experiments / "demo.yaml", "--data.init_args.root", tmp_path / "nodata"],
         [f"{tmp_path / 'nodata'}: Synapse data folder does not exist", "`vmunet synth synapse --out DIR`"]),
        (["fit", "--config", experiments / "isic18_vmunet.yaml", "--data.root", official, "--trainer.fast_dev_run",
          "true", "--trainer.accelerator", "cpu"], [f"{official}: not an ISIC folder", "vmunet prepare isic --raw"]),
    ]
    if not torch.cuda.is_available():
        cases.append(([*predict, "-o", tmp_path / "o", "-m", good, "--device", "cuda"], ["CUDA is not available"]))
    caplog.set_level(logging.DEBUG)
    for argv, words in cases:
        argv = [str(a) for a in argv]
        try:
            status = main(argv)
        except BaseException as err:  # the console script would print a traceback
            pytest.fail(f"vmunet {' '.join(argv)} raised {type(err).__name__}: {err}")
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert status == 2, (argv, err)
        assert "Traceback" not in err and "Traceback" not in caplog.text, (argv, err)
        assert len(lines) == 1 and lines[0].startswith(f"vmunet {argv[0]}: error: "), (argv, err)
        for word in words:
            assert word in lines[0], (argv, word, lines[0])
        caplog.clear()
    assert not (tmp_path / "o").exists()  # nothing was started
    assert (scans / "a.nii.gz").read_bytes() == scan_bytes and sorted(scans.iterdir()) == [scans / "a.nii.gz"]

"""The README's main job (``python -m vmunet.demo``, i.e. ``make demo``) at a tiny size, and the
``python -m vmunet`` entry point."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_demo_end_to_end_tiny_and_its_dice_gate(tmp_path, monkeypatch, capsys, caplog):
    import vmunet.training.cli as cli_mod
    from vmunet import demo

    runs = []
    real = cli_mod.run_lightning_cli

    def spy(argv, **kwargs):
        runs.append(real(argv, **kwargs))
        return runs[-1]

    monkeypatch.setattr(cli_mod, "run_lightning_cli", spy)
    out = tmp_path / "demo"
    tiny = ["--out", str(out), "--config", str(REPO / "experiments" / "demo.yaml"), "--cases", "5",
            "--size", "32", "--slices", "4", "--max-epochs", "1", "--image-size", "32"]
    # Dice never exceeds 1, so a gate at 1.0 must fail the run (exit 1) after doing all the work.
    caplog.set_level(logging.INFO)
    assert demo.main([*tiny, "--min-dice", "1.0"]) == 1
    printed = capsys.readouterr().out
    assert len(runs) == 2  # fit, then test
    # one progress line per epoch (loss, val Dice); the results table printed once, on stdout
    progress = [r.getMessage() for r in caplog.records if r.name == "vmunet.training.progress"]
    epoch_lines = [line for line in progress if line.startswith("epoch ")]
    # and one per test volume (2 cases)
    assert [line.split(":")[0] for line in progress if line.startswith("test ")] == ["test 1/2", "test 2/2"], progress
    assert len(epoch_lines) == 1 and re.fullmatch(r"epoch 1/1: loss \S+, val loss \S+, val Dice \S+ \(\S+ s\)|"
                                                  r"epoch 1/1: loss \S+, val Dice \S+ \(\S+ s\)", epoch_lines[0])
    assert printed.count("test: 2 cases, mean over cases, then classes") == 1
    assert "Test metric" not in printed
    # the test reports lie in the fit's run folder (no second version_N)
    fit_dir = test_dir = out / "version_0"
    assert sorted(p.name for p in out.glob("version_*")) == ["version_0"]
    best = Path(runs[0].trainer.checkpoint_callback.best_model_path)
    assert best.parent == fit_dir / "checkpoints" and best.is_file() and (fit_dir / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((test_dir / "test_metrics.json").read_text())
    assert (test_dir / "test_per_class.csv").is_file()
    mean = float(re.search(r"mean Dice (\S+) over 2 synthetic test cases", printed).group(1))
    assert mean == pytest.approx(report["mean"]["dice"], abs=5e-5)
    assert f"best checkpoint : {best}" in printed
    # the NIfTI prediction lies on the raw scan's voxel grid (nibabel reads both)
    raw, pred = nib.load(str(out / "raw" / "img" / "img0001.nii.gz")), nib.load(str(out / "prediction" / "pred0001.nii.gz"))
    assert pred.shape == raw.shape
    np.testing.assert_allclose(pred.affine, raw.affine, atol=1e-5)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= set(range(9))
    assert f"mean test Dice {report['mean']['dice']:.4f} is not above 1.00" in caplog.text

    # The same fit/test results replayed: the gate passes just below the mean and fails at it
    # ("must be above").
    replay = iter(runs * 2)
    monkeypatch.setattr(cli_mod, "run_lightning_cli", lambda argv, **kwargs: next(replay))
    dice = report["mean"]["dice"]
    assert demo.main([*tiny, "--min-dice", repr(dice - 1e-3)]) == 0
    assert demo.main([*tiny, "--min-dice", repr(dice)]) == 1


def test_demo_without_its_config_says_so(tmp_path, caplog):
    from vmunet import demo

    missing = tmp_path / "nope.yaml"
    assert demo.main(["--out", str(tmp_path / "o"), "--config", str(missing)]) == 2
    assert f"config {missing} not found (run from the repository root or pass --config)" in caplog.text
    assert not (tmp_path / "o").exists()


def _module(*args):
    return subprocess.run([sys.executable, "-m", "vmunet", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_python_dash_m_vmunet():
    ok = _module("--help")
    assert ok.returncode == 0
    for command in ("fit", "validate", "test", "predict", "prepare", "synth", "info", "weights"):
        assert re.search(rf"^\s+{command}\b", ok.stdout, re.M), command
    assert _module().returncode == 2  # no command: help and the usage status
    bad = _module("predict", "-i", "no/such/folder", "-o", "out", "-m", "none.ckpt")
    assert bad.returncode == 2
    assert "no/such/folder does not exist" in bad.stderr and "Traceback" not in bad.stderr

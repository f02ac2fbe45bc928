"""Checkpoint files: written through a temp file in the same folder + fsync + rename; unusable
``--ckpt_path`` files and invalid settings give one line ``error: ...``, exit 2, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vmunet.cli import main
from vmunet.training.checkpoints import (
    AtomicCheckpointIO,
    TrainingCheckpointError,
    check_checkpoint,
)
from vmunet.training.cli import run_lightning_cli
from vmunet.training.module import SegmentationModule

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


def test_checkpoint_goes_through_a_fsynced_temp_file_in_the_same_folder(tmp_path, monkeypatch):
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(4)}, target)
    ((src, dst),) = replaced
    assert dst == target and src.parent == target.parent and src.suffix == ".tmp"
    assert len(synced) == 2  # the file before the rename, the folder after it
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(4))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_crash_mid_write_keeps_the_previous_checkpoint_and_leaves_no_partial_ckpt(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, target)
    before = target.read_bytes()

    def half_then_crash(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt_runs")
    run_lightning_cli(["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test",
                       "--model.val_hd95", "false", "--trainer.default_root_dir", str(root),
                       "--trainer.max_epochs", "1", *FAST])
    return root / "version_0" / "checkpoints" / "last.ckpt"


def test_last_ckpt_is_written_every_epoch_when_validation_is_not(tmp_path, caplog):
    # check_val_every_n_epoch 10 (the Synapse recipe): Lightning's default would save last.ckpt
    # only after a validation, so a 2-epoch run (or a crash before epoch 10) left no checkpoint
    import logging

    caplog.set_level(logging.INFO, logger="vmunet.training.progress")
    cli = run_lightning_cli(["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test",
                             "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2",
                             "--trainer.check_val_every_n_epoch", "10", *FAST, "--trainer.enable_progress_bar",
                             "true", "--trainer.callbacks+=train_toy.CheckpointFiles"])
    # a progress bar drawn into a non-terminal (pytest's capture, a log file) shows nothing per epoch: lines do
    lines = [r.getMessage() for r in caplog.records if r.name == "vmunet.training.progress"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], lines
    # the 1st epoch, not validated, left last.ckpt (and no best-*.ckpt)
    (spy,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "CheckpointFiles"]
    assert spy.seen[1] == (["last.ckpt"], 0)
    folder = tmp_path / "version_0" / "checkpoints"
    # the 2nd and last epoch is validated (FinalEpochValidation): a best-*.ckpt too
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[0].startswith("best-epoch001-dice") and names[1] == "last.ckpt", names
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1  # the end of the 2nd epoch


def _bad_checkpoints(trained: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, part of the expected message)."""
    ckpt = torch.load(trained, weights_only=True)
    out = {}
    data = trained.read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    out["truncated"] = (tmp / "truncated.ckpt", "not a readable checkpoint")
    (tmp / "random.ckpt").write_bytes(os.urandom(2048))
    out["random"] = (tmp / "random.ckpt", "not a readable checkpoint")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp / "foreign.pth")
    out["foreign"] = (tmp / "foreign.pth", "not a Lightning training checkpoint")
    torch.save({k: v for k, v in ckpt.items() if k != "vmunet"}, tmp / "novmunet.ckpt")
    out["no record"] = (tmp / "novmunet.ckpt", "no 'vmunet' record")
    wrong = dict(ckpt, vmunet=dict(ckpt["vmunet"], model_kwargs={"num_classes": 9, "in_chans": 1}))
    torch.save(wrong, tmp / "wrong_class.ckpt")
    out["wrong class"] = (tmp / "wrong_class.ckpt", "num_classes=9")
    shapes = dict(ckpt, state_dict={k: (v[:1] if "patch_embed" in k and v.ndim else v)
                                    for k, v in ckpt["state_dict"].items()})
    torch.save(shapes, tmp / "shapes.ckpt")
    out["shapes"] = (tmp / "shapes.ckpt", "weights do not fit")
    torch.save({k: v for k, v in ckpt.items() if k not in ("optimizer_states", "loops")}, tmp / "weights_only.ckpt")
    out["weights only"] = (tmp / "weights_only.ckpt", "cannot resume")
    out["missing"] = (tmp / "nothere.ckpt", "not found")
    return out


def test_check_checkpoint_names_the_file_and_what_was_expected(trained, tmp_path):
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1)
    assert check_checkpoint(trained, module, resume=True)["epoch"] == 0
    for name, (path, expected) in _bad_checkpoints(trained, tmp_path).items():
        with pytest.raises(TrainingCheckpointError) as err:
            check_checkpoint(path, module, resume=True)
        assert str(path) in str(err.value) and expected in str(err.value), (name, str(err.value))
    check_checkpoint(tmp_path / "weights_only.ckpt", module, resume=False)  # fine for test / validate


def test_training_checkpoint_errors_are_checkpoint_errors(tmp_path):
    """One family of checkpoint errors: what inference catches (CheckpointError) also catches a
    training run's unusable --ckpt_path, with the same message."""
    from vmunet.errors import VmunetError
    from vmunet.models.checkpoint import CheckpointError
    from vmunet.training.checkpoints import read_training_checkpoint

    assert issubclass(TrainingCheckpointError, CheckpointError)
    assert issubclass(TrainingCheckpointError, VmunetError) and issubclass(TrainingCheckpointError, ValueError)
    with pytest.raises(CheckpointError) as err:
        read_training_checkpoint(tmp_path / "nothere.ckpt")
    assert type(err.value) is TrainingCheckpointError
    assert str(err.value) == f"{tmp_path / 'nothere.ckpt'}: checkpoint file not found"


def test_every_cli_user_error_is_one_line_with_exit_2(trained, tmp_path, capsys):
    base = ["--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test", "--model.val_hd95", "false",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "1", *FAST]
    cases = [(["fit", *base, "--model.lr", "-1"], "model.lr: expected > 0, got -1.0")]
    for name, (path, expected) in _bad_checkpoints(trained, tmp_path).items():
        cases.append((["fit", *base, "--ckpt_path", str(path)], expected))
        if name != "weights only":
            cases.append((["test", *base, "--ckpt_path", str(path)], expected))
    for argv, expected in cases:
        code = main(argv)
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert code == 2, (argv, err[-2000:])
        assert "Traceback" not in captured.err + captured.out, argv
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(lines) == 1 and lines[0].startswith(f"vmunet {argv[0]}: error: ") and expected in lines[0], err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing ran


def test_resume_removes_stale_temp_checkpoints_and_only_those(trained, tmp_path, caplog):
    """A SIGKILL mid-write leaves ``.<name>.ckpt.<8 random>.tmp`` in the run's folder: the resumed
    run removes those (one log line names them), touches no other file, and resumes from the
    real last.ckpt, not from the newer partial file."""
    import logging
    import shutil
    import warnings

    from vmunet.training.checkpoints import is_temp_checkpoint

    run = tmp_path / "runs" / "version_0"
    shutil.copytree(trained.parent.parent, run)  # a copy of a finished 1-epoch run
    common = ["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test", "--model.val_hd95",
              "false", "--trainer.default_root_dir", str(tmp_path / "runs"), *FAST]
    ckpts = run / "checkpoints"
    last = ckpts / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    stale = [ckpts / ".last.ckpt.k3x9_q2z.tmp", ckpts / ".best-epoch000-dice0.1234.ckpt.a0b1c2d3.tmp"]
    for p in stale:  # what the killed writer left: the first bytes of a checkpoint
        p.write_bytes(last.read_bytes()[:4096])
    # not ours: another suffix, no random part, upper case, no leading dot, not a .ckpt target, a folder
    others = [ckpts / "notes.tmp", ckpts / ".last.ckpt.tmp", ckpts / ".last.ckpt.ABCDEFGH.tmp",
              ckpts / "last.ckpt.abcdefgh.tmp", ckpts / ".model.pt.abcdefgh.tmp", ckpts / ".last.ckpt.abcdefgh.bak"]
    for p in others:
        p.write_bytes(b"user file")
    (ckpts / ".x.ckpt.abcdefgh.tmp").mkdir()
    assert [p.name for p in [*stale, *others] if is_temp_checkpoint(p)] == [p.name for p in stale]

    with caplog.at_level(logging.INFO, logger="vmunet"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run_lightning_cli([*common, "--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    # resuming writes into the run's own checkpoints/ by design: no "exists and is not empty" warning
    assert not [w for w in seen if "exists and is not empty" in str(w.message)], [str(w.message) for w in seen]
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"user file" for p in others) and (ckpts / ".x.ckpt.abcdefgh.tmp").is_dir()
    removed = [r.getMessage() for r in caplog.records if "temporary checkpoint" in r.getMessage()]
    assert len(removed) == 1 and all(str(p) in removed[0] for p in sorted(stale)), removed
    assert any(f"resuming the run in {run.resolve()} (from epoch 0," in r.getMessage() for r in caplog.records)
    assert torch.load(last, weights_only=True)["epoch"] == 1  # epoch 0 restored + one more
    assert [p.name for p in tmp_path.joinpath("runs").iterdir()] == ["version_0"]

"""Run folders: claimed atomically (two runs never share one); a resumed run continues its own
folder, so best-*.ckpt is the best of the whole run; metrics.csv keeps the rows before the resume."""

from __future__ import annotations

import contextlib
import csv
import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vmunet.training.cli import run_lightning_cli
from vmunet.training.runs import claim_run_dir, csv_rows_before, run_dir_of_checkpoint

HERE = Path(__file__).resolve().parent
FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1"]


def _claim(root: str, barrier, out) -> None:
    barrier.wait()  # all processes list the folder and mkdir at the same moment
    out.put(claim_run_dir(root)[1])


def test_racing_claims_get_distinct_folders(tmp_path):
    (tmp_path / "version_3").mkdir()  # numbering continues after existing runs
    ctx = mp.get_context("fork")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(tmp_path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    versions = sorted(out.get(timeout=5) for _ in range(n))
    assert versions == list(range(4, 4 + n))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"version_{v}" for v in [3, *versions])


def test_run_dir_of_checkpoint(tmp_path):
    run = tmp_path / "version_12"
    (run / "checkpoints").mkdir(parents=True)
    assert run_dir_of_checkpoint(run / "checkpoints" / "last.ckpt") == (run.resolve(), 12)
    assert run_dir_of_checkpoint(tmp_path / "last.ckpt") is None
    assert run_dir_of_checkpoint(tmp_path / "version_x" / "checkpoints" / "last.ckpt") is None
    assert run_dir_of_checkpoint(None) is None and run_dir_of_checkpoint("last") is None


def test_csv_rows_before_keeps_rows_of_finished_steps(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text("epoch,step,train/loss,val/dice\n0,0,1.5,\n0,1,1.25,\n0,1,,0.5\n1,2,1.0,\n")
    assert csv_rows_before(f, 2) == [(0, {"epoch": 0, "train/loss": 1.5}), (1, {"epoch": 0, "train/loss": 1.25}),
                                     (1, {"epoch": 0, "val/dice": 0.5})]


def _val_dice(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/dice")]
    epochs = [int(r["epoch"]) for r in rows]
    assert len(epochs) == len(set(epochs)), "one validation row per epoch"
    return {int(r["epoch"]): float(r["val/dice"]) for r in rows}


def test_resumed_run_continues_its_folder_and_keeps_the_best_of_the_whole_run(tmp_path):
    root = tmp_path / "runs"
    common = ["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test", "--model.val_hd95",
              "false", "--trainer.default_root_dir", str(root), "--trainer.limit_train_batches", "2", *FAST]
    run_lightning_cli([*common, "--trainer.max_epochs", "2"])
    run = root / "version_0"
    first_best = torch.load(next((run / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    run_lightning_cli([*common, "--trainer.max_epochs", "4", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])

    assert [p.name for p in root.iterdir()] == ["version_0"]
    dice = _val_dice(run)
    assert sorted(dice) == [0, 1, 2, 3]  # the whole run's metrics in one metrics.csv
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    top = max(dice.values())
    assert best.name == f"best-epoch{max(dice, key=dice.get):03d}-dice{top:.4f}.ckpt"
    state = torch.load(best, weights_only=True)["callbacks"]
    scores = [s["best_model_score"] for k, s in state.items() if "val/dice" in k]
    assert len(scores) == 1 and float(scores[0]) == pytest.approx(top, abs=1e-6)
    assert top >= float(first_best["callbacks"][next(k for k in first_best["callbacks"] if "val/dice" in k)]
                        ["best_model_score"])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert yaml.safe_load((run / "config.resumed-epoch001.yaml").read_text())["trainer"]["max_epochs"] == 4


@pytest.mark.slow
def test_two_concurrent_fits_into_one_root_keep_their_own_folders(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    procs = {lr: subprocess.Popen([sys.executable, "-m", "vmunet", "fit", "--data", "train_toy.ToyVolumeData",
                                   "--model.model_name", "vmunet_test", "--model.lr", lr, "--model.val_hd95", "false",
                                   "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "2",
                                   "--trainer.limit_train_batches", "2", *FAST],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lr in ("0.001", "0.002")}
    for p in procs.values():
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    runs = sorted(root.iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    lrs = set()
    for run in runs:
        lr = yaml.safe_load((run / "config.yaml").read_text())["model"]["lr"]
        for ckpt in (run / "checkpoints").glob("*.ckpt"):
            assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["lr"] == lr, ckpt
        assert sorted(_val_dice(run)) == [0, 1]  # one run's rows only
        lrs.add(lr)
    assert lrs == {0.001, 0.002}


def test_discard_unused_run_removes_only_folders_without_results(tmp_path):
    from vmunet.training.runs import discard_unused_run

    empty = tmp_path / "version_0"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.yaml").write_text("seed_everything: 1\n")
    assert discard_unused_run(empty) and not empty.exists()
    kept = tmp_path / "version_1"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert not discard_unused_run(kept) and (kept / "checkpoints" / "last.ckpt").exists()


def test_failed_start_leaves_no_run_folder(tmp_path, capsys):
    """Bad data found in setup (after the run folder was claimed): one-line error, exit 2, no
    version_N left behind; a missing data folder names the layout and the commands that make data."""
    import json

    import nibabel as nib
    import numpy as np

    from vmunet.cli import main

    root = tmp_path / "ds"
    for i in range(3):
        lab = np.zeros((8, 8, 2), np.uint8)
        lab[2:5, 2:5] = 7 if i == 1 else 1  # case c1: a label outside the declared classes
        for sub, name, data in (("imagesTr", f"c{i}_0000", np.ones((8, 8, 2), np.float32)), ("labelsTr", f"c{i}", lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / sub / f"{name}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1},
                                                   "file_ending": ".nii.gz"}))
    runs = tmp_path / "runs"
    args = ["fit", "--data", "vmunet.data.nifti.NiftiDataModule", "--data.root", str(root), "--data.val_cases", "1",
            "--data.num_workers", "0", "--data.image_size", "32", "--data.batch_size", "2",
            "--model.model_name", "vmunet_test", "--trainer.default_root_dir", str(runs), *FAST]
    assert main(args) == 2
    assert "label values [7] outside the declared classes 0..1" in capsys.readouterr().err
    assert not runs.exists()  # (the root this run created goes too; an existing one stays: test below)
    assert main([*args[:4], str(tmp_path / "nothing"), *args[5:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vmunet fit: error: {tmp_path / 'nothing'}: expected an nnU-Net raw folder (dataset.json")
    assert "`vmunet synth nifti --out DIR`" in err and "`vmunet prepare synapse|isic`" in err
    assert not runs.exists()


def test_a_refused_start_leaves_no_new_root_folder_and_keeps_an_existing_one(tmp_path, capsys):
    """A trainer setting refused after the run folder was claimed: its version_N was given back, but a new
    trainer.default_root_dir (with its new parents) stayed, empty. A root that existed stays, as it was."""
    from vmunet.cli import main

    args = ["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test",
            "--trainer.devices", "abc", *FAST, "--trainer.default_root_dir"]
    assert main([*args, str(tmp_path / "new" / "runs")]) == 2
    assert "trainer.devices: expected a positive integer" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "runs" / "version_0").mkdir(parents=True)  # an earlier run (empty, so the test is strict)
    assert main([*args, str(tmp_path / "runs")]) == 2
    assert [p.relative_to(tmp_path) for p in sorted(tmp_path.rglob("*"))] == [Path("runs"), Path("runs/version_0")]


def test_missing_folders_are_given_back_only_while_empty(tmp_path, monkeypatch):
    from vmunet.data import fileio
    from vmunet.data.errors import DataError

    (tmp_path / "a").mkdir()
    assert fileio.missing_folders(tmp_path / "a" / "b" / "c") == [tmp_path / "a" / "b" / "c", tmp_path / "a" / "b"]
    assert fileio.missing_folders(tmp_path / "a") == []
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "kept.txt").write_text("x")  # written by someone else meanwhile
    assert fileio.remove_empty_folders([tmp_path / "a" / "b" / "c", tmp_path / "a" / "b"]) == [tmp_path / "a" / "b" / "c"]
    assert (tmp_path / "a" / "b" / "kept.txt").read_text() == "x"

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # an output folder found unwritable after it was created: refused, and the folders it created removed
    monkeypatch.setattr(fileio.tempfile, "mkstemp", unwritable)
    with pytest.raises(DataError, match="folder is not writable"):
        fileio.ensure_writable_folder(tmp_path / "a" / "new" / "out", "--output")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


#: A process that holds a run folder's lock until it is killed, and a forked child (as a data-loader
#: worker is) that lives on after it; the child's pid is printed.
# The forked child says when it runs Python code, i.e. after its at-fork handlers (which close its
# copy of the lock file) ran: on a loaded machine the child may not have been scheduled yet when
# the parent has already printed, and its open copy would still hold the lock.
# each line goes out in ONE os.write (atomic on a pipe below PIPE_BUF): print() in the two processes
# of a fork interleaved its pieces under load ("lockedchild 13455" and an empty line)
_HOLD_LOCK = ("import os, sys, time\nfrom vmunet.training.runs import lock_run_dir\nlock_run_dir(sys.argv[1])\n"
              "child = os.fork()\nif child == 0:\n    os.write(1, b'child\\n')\n    time.sleep(60)\n    os._exit(0)\n"
              "os.write(1, f'locked {child}\\n'.encode())\ntime.sleep(600)\n")


@contextlib.contextmanager
def _lock_holder(run: Path):
    """A process holding ``run``'s training lock, with a forked child of its own: yields
    ``(holder Popen, child pid)`` once both run Python code; both are killed on exit."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    child = None
    try:
        lines = sorted(holder.stdout.readline().split() for _ in range(2))  # ["child"], ["locked", pid]
        if not (lines[0] == ["child"] and lines[1][:1] == ["locked"]):
            holder.kill()
            pytest.fail(f"the lock holder printed {lines}, exit code {holder.wait(30)}, stderr:\n{holder.stderr.read()}")
        child = int(lines[1][1])
        yield holder, child
    finally:
        holder.kill()
        holder.wait(30)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_lock_run_dir_is_exclusive_and_dies_with_its_process(tmp_path):
    from vmunet.training.runs import LOCK_NAME, RunFolderBusyError, lock_run_dir

    run = tmp_path / "version_0"
    run.mkdir()
    lock = lock_run_dir(run)
    assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with pytest.raises(RunFolderBusyError, match=f"another process \\(pid {os.getpid()}\\) is training"):
        lock_run_dir(run)  # a second open file: refused even within one process
    lock.release()
    with _lock_holder(run) as (holder, child):
        with pytest.raises(RunFolderBusyError) as err:
            lock_run_dir(run)
        assert str(err.value) == (f"{run}: another process (pid {holder.pid}) is training in this run folder; wait "
                                  "for it to finish (or stop it) before resuming this run")
        holder.kill()  # SIGKILL: no clean-up code runs in the holder
        holder.wait(30)
        os.kill(child, 0)  # its forked child still runs ...
        lock_run_dir(run).release()  # ... yet the lock went with the holder: no stale lock


def test_second_fit_in_a_run_folder_being_trained_exits_2_and_writes_nothing(tmp_path, capsys):
    """(That the lock of a killed holder is gone, so the resume then runs, is the test above.)"""
    from vmunet.cli import main
    from vmunet.training.runs import LOCK_NAME

    root = tmp_path / "runs"
    common = ["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test", "--model.val_hd95",
              "false", "--trainer.default_root_dir", str(root), "--trainer.limit_train_batches", "1",
              "--trainer.limit_val_batches", "1", *FAST]
    assert main([*common, "--trainer.max_epochs", "1"]) == 0
    run = (root / "version_0").resolve()
    resume = [*common, "--trainer.max_epochs", "2", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}

    before = files()
    capsys.readouterr()
    with _lock_holder(run) as (holder, child):
        assert main(resume) == 2
        err = capsys.readouterr().err
        assert err == (f"vmunet fit: error: {run}: another process (pid {holder.pid}) is training in this run "
                       "folder; wait for it to finish (or stop it) before resuming this run\n")
        assert files() == before  # refused before it wrote anything (metrics.csv, config, checkpoints)

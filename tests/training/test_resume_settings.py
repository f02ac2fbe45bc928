"""A run started from a ``--ckpt_path`` with settings that differ from the checkpoint's, or from a
checkpoint its run has gone past: the user's setting is used, or refused in one line -- never
silently replaced by the checkpoint's (LightningCLI's own rule), never a resume that overwrites
the run's later checkpoints."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from cli_errors import one_error_line

from vmunet.errors import ConfigError
from vmunet.training.ckpt_settings import reconcile
from vmunet.training.cli import run_lightning_cli

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]
TOY = ["--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test", "--model.val_hd95", "false"]
BASE = [*TOY, "--model.lr", "0.003", *FAST]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A finished 1-epoch run (trained with lr 0.003, metric_conventions unset: strict) started from
    an initialization file (``--model.weights``) that is deleted afterwards."""
    from vmunet.models import create_model

    root = tmp_path_factory.mktemp("resume_settings")
    init = root / "init.pth"
    torch.save(create_model("vmunet_test", num_classes=3, in_chans=1).state_dict(), init)
    run_lightning_cli(["fit", *BASE, "--model.weights", str(init), "--trainer.default_root_dir", str(root),
                       "--trainer.max_epochs", "1"])
    init.unlink()  # moved or deleted: the checkpoint holds every weight a test or resume needs
    return root / "version_0"


def test_reconcile_decides_per_key(caplog):
    saved = {"model_name": "vmunet_test", "lr": 0.003, "metric_conventions": None, "num_classes": 3,
             "model_kwargs": {"drop_path_rate": 0.1}, "slice_batch_size": 32}
    caplog.set_level(logging.INFO, logger="vmunet.training.ckpt_settings")
    # the same values, and keys not given: the checkpoint's, nothing said
    assert reconcile({"lr": 0.003, "model_name": "vmunet_test"}, saved, subcommand="fit", ckpt_path="c") == saved
    assert not caplog.records
    # evaluation settings and runtime options: the given value (fit and test alike)
    for sub in ("fit", "test"):
        out = reconcile({"metric_conventions": ["paper"], "slice_batch_size": 4, "model_kwargs": {"scan_backend": "torch"}},
                        saved, subcommand=sub, ckpt_path="c")
        assert out == {**saved, "metric_conventions": ["paper"], "slice_batch_size": 4,
                       "model_kwargs": {"drop_path_rate": 0.1, "scan_backend": "torch"}}
    assert caplog.records[-1].getMessage() == (
        "test: using the given model.metric_conventions=['paper'] (checkpoint: None), "
        "model.model_kwargs.scan_backend='torch' (checkpoint: None), model.slice_batch_size=4 (checkpoint: 32)")
    # a training setting: refused when resuming, not used (and said so) by test
    with pytest.raises(ConfigError) as err:
        reconcile({"lr": 0.03}, saved, subcommand="fit", ckpt_path="c.ckpt")
    assert str(err.value) == (
        "c.ckpt: a resumed run continues with the checkpoint's optimizer, schedule and loss, but the config gives "
        "model.lr=0.03 (checkpoint: 0.003); remove these settings or give the checkpoint's values (to train on "
        "from its weights with new settings, start a new run with --model.weights c.ckpt)")
    assert reconcile({"lr": 0.03}, saved, subcommand="test", ckpt_path="c.ckpt") == saved
    assert caplog.records[-1].getMessage() == ("test: training settings not used (the checkpoint's model is "
                                               "evaluated): model.lr=0.03 (checkpoint: 0.003)")
    # another model: refused by every subcommand; linked keys are not compared
    for sub in ("fit", "validate", "test"):
        with pytest.raises(ConfigError) as err:
            reconcile({"model_name": "vmunet", "model_kwargs": {"drop_path_rate": 0.2}, "num_classes": 9}, saved,
                      subcommand=sub, ckpt_path="c.ckpt")
        assert str(err.value) == (
            "c.ckpt: the config describes another model than the checkpoint holds: model.model_kwargs.drop_path_rate"
            "=0.2 (checkpoint: 0.1), model.model_name='vmunet' (checkpoint: 'vmunet_test'); remove these settings "
            "or give the checkpoint's values")


def test_given_settings_are_used_or_refused_not_replaced_by_the_checkpoints(run_folder, tmp_path, capfd, caplog):
    last = run_folder / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    # test: the requested convention is reported (LightningCLI alone reported the checkpoint's: strict)
    caplog.set_level(logging.INFO)
    run_lightning_cli(["test", *BASE, "--model.metric_conventions", "[paper]", "--ckpt_path", str(last)],
                      print_results=False)
    assert json.loads((run_folder / "test_metrics.json").read_text())["conventions"] == ["paper"]
    # said once the configuration is built, with the other start-up lines (after "Seed set to 42", not before)
    shown = [r.getMessage() for r in caplog.records]
    used = "test: using the given model.metric_conventions=['paper'] (checkpoint: None)"
    assert shown.count(used) == 1 and shown.index("Seed set to 42") < shown.index(used), shown
    # another model: one line (LightningCLI alone tested the checkpoint's vmunet_test)
    line = one_error_line(["test", *BASE, "--model.model_name", "vmunet", "--ckpt_path", str(last)], capfd)
    assert line == (f"vmunet test: error: {last}: the config describes another model than the checkpoint holds: "
                    "model.model_name='vmunet' (checkpoint: 'vmunet_test'); remove these settings or give the "
                    "checkpoint's values")
    # resume with another learning rate: one line, nothing trained (LightningCLI alone trained on at 0.003)
    argv = ["fit", *BASE, "--model.lr", "0.03", "--trainer.max_epochs", "2", "--ckpt_path", str(last)]
    assert one_error_line(argv, capfd) == (
        f"vmunet fit: error: {last}: a resumed run continues with the checkpoint's optimizer, schedule and loss, "
        "but the config gives model.lr=0.03 (checkpoint: 0.003); remove these settings or give the checkpoint's "
        f"values (to train on from its weights with new settings, start a new run with --model.weights {last})")
    assert last.read_bytes() == before


def test_resume_from_a_checkpoint_the_run_has_gone_past_is_refused(run_folder, tmp_path, capfd):
    run = tmp_path / "runs" / "version_0"
    shutil.copytree(run_folder, run)
    ckpts = run / "checkpoints"
    early = ckpts / "early.ckpt"
    shutil.copy(ckpts / "last.ckpt", early)
    later = torch.load(ckpts / "last.ckpt", weights_only=True)
    step, epoch = int(later["global_step"]), int(later["epoch"])
    later.update(global_step=step + 3, epoch=epoch + 3)  # the run went on 3 more epochs
    torch.save(later, ckpts / "last.ckpt")
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv = ["fit", *BASE, "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "9",
            "--ckpt_path", str(early)]
    assert one_error_line(argv, capfd) == (
        f"vmunet fit: error: {early}: the run has gone further than this checkpoint (epoch {epoch}, step {step}): "
        f"last.ckpt is at epoch {epoch + 3}, step {step + 3}; resuming here would overwrite its later checkpoints "
        f"and metrics: resume from {ckpts / 'last.ckpt'}, or copy this checkpoint out of {ckpts} to start a new "
        "run from it")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files  # nothing written


def test_a_diverging_loss_is_one_line_naming_the_step(tmp_path, capfd):
    # lr 1e30: the first step's update makes every later output non-finite
    argv = ["fit", *TOY, *FAST, "--trainer.limit_train_batches", "3", "--model.lr", "1e30",
            "--model.eta_min", "0", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)]
    line = one_error_line(argv, capfd)
    assert line.startswith("vmunet fit: error: training loss is nan at epoch 0, batch 1 (step 1): the training "
                           "diverged; lower model.lr, clip gradients (trainer.gradient_clip_val) or train in 32-bit "
                           "precision; the checkpoints of finished epochs are kept"), line


def test_a_batch_limit_leaving_no_batch_is_one_line(tmp_path, capfd):
    # 0.1 of the toy's 4 training batches: Lightning refuses it only once the loader exists
    argv = ["fit", *BASE, "--trainer.limit_train_batches", "0.1", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path)]
    assert one_error_line(argv, capfd) == (
        "vmunet fit: error: invalid configuration: You requested to check 0.1 of the `train_dataloader` but 0.1 * 4 "
        "< 1. Please increase the `limit_train_batches` argument. Try at least `limit_train_batches=0.25`")
    assert not list(tmp_path.glob("version_*"))  # the failed start's folder is given back


def test_evaluating_or_resuming_on_otherwise_prepared_data_is_refused(run_folder, capfd):
    last = run_folder / "checkpoints" / "last.ckpt"
    before = sorted(p.name for p in run_folder.iterdir())
    for sub, why in [("test", "the model would be scored on inputs prepared otherwise than in its training"),
                     ("fit", "a resumed run would go on training on inputs prepared otherwise (to train on from its "
                      f"weights with this data, start a new run with --model.weights {last})")]:
        # trained at 32 x 32; before the check, test scored the model on 64 x 64 inputs without a word
        line = one_error_line([sub, *BASE, "--data.size", "64", "--trainer.max_epochs", "3", "--ckpt_path",
                                str(last)], capfd)
        assert line == (f"vmunet {sub}: error: {last}: the data module prepares its data differently from the data "
                        "the checkpoint was trained on: preprocessing image_size=[64, 64] (checkpoint: [32, 32]); "
                        f"{why}; use the data settings of the training run")
    assert sorted(p.name for p in run_folder.iterdir()) == before


def test_changed_data_settings_of_a_resume_are_named_in_a_warning(caplog):
    from vmunet.training.ckpt_settings import warn_changed_data_settings

    saved = {"_class_path": "vmunet.data.synapse.SynapseDataModule", "_instantiator": "x", "root": "data/s",
             "batch_size": 4, "seed": 42, "num_workers": 0, "cache": False}
    caplog.set_level(logging.WARNING, logger="vmunet.training.ckpt_settings")
    # loading-only settings (workers, caching) and the instantiator's bookkeeping: nothing to say
    assert warn_changed_data_settings(saved, {**saved, "num_workers": 2, "cache": True, "_instantiator": "y"}) == []
    assert not caplog.records
    diffs = warn_changed_data_settings(saved, {**saved, "batch_size": 2, "seed": 7})
    assert diffs == ["data.batch_size=2 (checkpoint: 4)", "data.seed=7 (checkpoint: 42)"]
    assert [r.getMessage() for r in caplog.records] == [
        "resuming with data settings other than the checkpoint's run: data.batch_size=2 (checkpoint: 4), data.seed=7 "
        "(checkpoint: 42); they apply from here on, so the resumed run does not repeat an uninterrupted one"]


def test_max_time_stops_at_an_epoch_end_so_the_resume_is_exact(tmp_path, monkeypatch):
    """Lightning's own max_time stopped after the batch in which the time ran out, validated, and saved
    last.ckpt as if the epoch were done: resuming skipped the rest of that epoch (fewer steps, other
    weights). Checked at epoch ends, the run stops after a whole epoch."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import timer

    clock = iter(range(0, 10**6, 100))  # every reading of the Timer's clock is 100 s later: the 1 s runs out at once
    monkeypatch.setattr(timer, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    run_lightning_cli(["fit", *BASE, "--trainer.limit_train_batches", "3", "--trainer.max_epochs", "3",
                       "--trainer.max_time", "00:00:00:01", "--trainer.default_root_dir", str(tmp_path)])
    ckpt = torch.load(tmp_path / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    done = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert (ckpt["epoch"], ckpt["global_step"], done) == (0, 3, 3)  # one whole epoch of 3 batches, then stopped


def test_a_run_started_from_a_weights_file_is_tested_and_resumed_without_it(run_folder, tmp_path, caplog):
    # before: "weights file .../init.pth does not exist" (the module loaded the initial weights, then
    # Lightning replaced them with the checkpoint's); `test` of this run: test_given_settings_...
    run = tmp_path / "runs" / "version_0"
    shutil.copytree(run_folder, run)
    last = run / "checkpoints" / "last.ckpt"
    caplog.set_level(logging.WARNING, logger="vmunet.training.ckpt_settings")
    run_lightning_cli(["fit", *BASE, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path / "runs"),
                       "--ckpt_path", str(last)])
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["hyper_parameters"]["weights"] == str(run_folder.parent / "init.pth")
    # the run was started with max_epochs 1: its (cosine) schedule does not depend on it, said in a warning
    assert [r.getMessage() for r in caplog.records if r.name == "vmunet.training.ckpt_settings"] == [
        "resuming with trainer.max_epochs=2 (the checkpoint's run: 1): the cosine schedule has its own period "
        "(model.t_max=100, not max_epochs): the rate follows it as in an uninterrupted run of 2 epochs"]
    assert ckpt["lr_schedulers"][0]["_last_lr"] == [pytest.approx(1e-5 + (0.003 - 1e-5) * (1 + math.cos(math.pi * 2 / 100)) / 2)]


def test_resuming_a_poly_schedule_for_another_max_epochs_is_refused(tmp_path, capfd):
    """The poly schedule's length is the run's max_epochs, and a resume restores it: the rate stayed at
    eta_min after the first run's end (before, without a word), or the schedule was cut short."""
    runs = tmp_path / "runs"
    run_lightning_cli(["fit", *BASE, "--model.scheduler", "poly", "--trainer.max_epochs", "1",
                       "--trainer.default_root_dir", str(runs)])
    last = runs / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    line = one_error_line(["fit", *BASE, "--model.scheduler", "poly", "--trainer.max_epochs", "3",
                            "--trainer.default_root_dir", str(runs), "--ckpt_path", str(last)], capfd)
    assert line == (
        f"vmunet fit: error: {last}: trainer.max_epochs=3, but the checkpoint's run has max_epochs=1, the length of "
        "its poly learning-rate schedule, which a resume keeps (the rate would stay at eta_min after epoch 1); "
        "resume with --trainer.max_epochs 1, or start a new run with a poly schedule over 3 epochs from its weights "
        f"with --model.weights {last}")
    assert last.read_bytes() == before


def test_schedule_length_of_a_resume_is_refused_or_named(caplog):
    from vmunet.training.ckpt_settings import check_schedule_length

    poly = {"name": "poly", "total": 10, "t_max": 100}
    caplog.set_level(logging.WARNING, logger="vmunet.training.ckpt_settings")
    check_schedule_length(poly, 10, "c.ckpt")  # the same length: nothing to say
    check_schedule_length(None, 5, "c.ckpt")  # no schedule of ours (an old or foreign checkpoint)
    assert not caplog.records
    with pytest.raises(ConfigError) as err:
        check_schedule_length(poly, 4, "c.ckpt")
    assert str(err.value) == (
        "c.ckpt: trainer.max_epochs=4, but the checkpoint's run has max_epochs=10, the length of its poly "
        "learning-rate schedule, which a resume keeps (the schedule would be cut at epoch 4, before the rate reaches "
        "eta_min); resume with --trainer.max_epochs 10, or start a new run with a poly schedule over 4 epochs from its "
        "weights with --model.weights c.ckpt")
    with pytest.raises(ConfigError, match=r"max_epochs=-1 \(no limit\), but .* stay at eta_min after epoch 10"):
        check_schedule_length(poly, -1, "c.ckpt")
    check_schedule_length({"name": "constant", "total": None}, 7, "c.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        "resuming with trainer.max_epochs=7 (the checkpoint's run: -1 (no limit)): the constant schedule does not "
        "depend on max_epochs: the rate goes on unchanged"]

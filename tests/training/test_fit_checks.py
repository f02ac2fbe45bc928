"""What a fit checks once model, data, Trainer and checkpoint meet (vmunet.training.fit_checks): a
resume of a run that already ended, a poly schedule resumed for another length (through the CLI and
through a plain ``Trainer.fit``), Trainer settings that differ from the checkpoint's run, data prepared
otherwise or data settings changed (``Trainer.fit`` / ``test`` as the CLI), and a best-checkpoint
monitor that no validation will ever log (said once: Lightning's own warning hidden)."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from cli_errors import one_error_line
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.callbacks import model_checkpoint as lightning_model_checkpoint
from lightning.pytorch.utilities.rank_zero import WarningCache

from vmunet.errors import ConfigError
from vmunet.training.cli import run_lightning_cli
from vmunet.training.fit_checks import check_best_monitor, check_resume, epochs_done
from vmunet.training.module import SegmentationModule

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]
BASE = ["--data", "train_toy.RecordedToyVolumeData", "--model.model_name", "vmunet_test", "--model.val_hd95", "false", *FAST]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run of `vmunet fit` that ended: 1 epoch of 1 batch (cosine schedule), max_epochs 1."""
    root = tmp_path_factory.mktemp("ended_run")
    run_lightning_cli(["fit", *BASE, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root)])
    return root / "version_0"


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_fit_of_a_run_that_has_ended_is_refused(run_folder, tmp_path, capfd):
    """Lightning restored the run, found max_epochs reached and exited 0: nothing trained, no word."""
    run = tmp_path / "runs" / "version_0"
    shutil.copytree(run_folder, run)
    last = run / "checkpoints" / "last.ckpt"
    before = _files(run)
    line = one_error_line(["fit", *BASE, "--trainer.max_epochs", "1", "--trainer.default_root_dir",
                            str(tmp_path / "runs"), "--ckpt_path", str(last)], capfd)
    assert line == (f"vmunet fit: error: {last}: its run has already ended (1 of trainer.max_epochs=1 epochs trained): "
                    "fit would train nothing; to train on, resume with --trainer.max_epochs N, N > 1 (to evaluate it: "
                    f"vmunet test --ckpt_path {last})")
    assert _files(run) == before  # refused before the fit wrote its config or logs into the run
    # (`vmunet test` of such a checkpoint, what it is for, runs as before: test_resume_settings.py tests the
    # ended run of its fixture)


def test_a_run_ended_by_max_steps_or_max_time_is_refused(run_folder):
    ckpt = torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert (ckpt["global_step"], ckpt["epoch"]) == (1, 0)
    # the epochs Lightning's fit loop counts against max_epochs (ckpt["epoch"] is 0): the best checkpoint's too
    best = next((run_folder / "checkpoints").glob("best-*.ckpt"))
    assert epochs_done(ckpt) == epochs_done(torch.load(best, weights_only=True)) == 1
    with pytest.raises(ConfigError) as err:
        check_resume(ckpt, _trainer(max_steps=1), "c.ckpt")
    assert str(err.value) == ("c.ckpt: its run has already ended (step 1 of trainer.max_steps=1): fit would train "
                              "nothing; to train on, resume with --trainer.max_steps N, N > 1 (to evaluate it: vmunet "
                              "test --ckpt_path c.ckpt)")
    check_resume(ckpt, _trainer(max_steps=2), "c.ckpt")  # a step to go (max_epochs unset: max_steps ends the run)
    # the Timer's state as Lightning saves it into the checkpoint (Timer.state_dict), 61 s trained
    timer = Timer(duration="00:00:01:00")
    ckpt["callbacks"][timer.state_key] = {**timer.state_dict(), "time_elapsed": {"train": 61.0}}
    with pytest.raises(ConfigError) as err:
        check_resume(ckpt, _trainer(max_epochs=5, callbacks=[timer]), "c.ckpt")
    assert str(err.value) == ("c.ckpt: its run has already ended (trained 0:01:01 of trainer.max_time=0:01:00, "
                              "h:mm:ss): fit would train nothing; to train on, resume with a longer --trainer.max_time "
                              "DD:HH:MM:SS (to evaluate it: vmunet test --ckpt_path c.ckpt)")
    ckpt["callbacks"][timer.state_key]["time_elapsed"]["train"] = 59.0
    check_resume(ckpt, _trainer(max_epochs=5, callbacks=[Timer(duration="00:00:01:00")]), "c.ckpt")


def test_trainer_fit_from_python_gets_the_resume_checks(tmp_path):
    """Trainer.fit(module, dm, ckpt_path=X) with a poly schedule: before, only `vmunet fit` compared the
    schedule's length with max_epochs; Trainer.fit trained on with the rate stuck at eta_min."""
    from train_toy import ToyVolumeData

    def fit(max_epochs: int, ckpt_path: str | None = None) -> pl.Trainer:
        trainer = _trainer(max_epochs=max_epochs, default_root_dir=tmp_path, num_sanity_val_steps=0,
                           limit_train_batches=1, limit_val_batches=1)
        module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1, scheduler="poly", val_hd95=False)
        trainer.fit(module, ToyVolumeData(), ckpt_path=ckpt_path)
        return trainer

    pl.seed_everything(0, verbose=False)
    ckpt = fit(1).checkpoint_callback.best_model_path
    before = _files(tmp_path)
    with pytest.raises(ConfigError) as err:
        fit(3, ckpt)
    assert str(err.value) == (
        f"{ckpt}: trainer.max_epochs=3, but the checkpoint's run has max_epochs=1, the length of its poly learning-rate "
        "schedule, which a resume keeps (the rate would stay at eta_min after epoch 1); resume with "
        f"--trainer.max_epochs 1, or start a new run with a poly schedule over 3 epochs from its weights with "
        f"--model.weights {ckpt}")
    with pytest.raises(ConfigError) as err:
        fit(1, ckpt)
    assert str(err.value) == (
        f"{ckpt}: its run has already ended (1 of trainer.max_epochs=1 epochs trained): fit would train nothing; its "
        f"poly learning-rate schedule ends there (a resume keeps its length): to train on, start a new run from its "
        f"weights with --model.weights {ckpt} (to evaluate it: vmunet test --ckpt_path {ckpt})")
    assert _files(tmp_path) == before  # nothing trained, no checkpoint rewritten


def test_other_trainer_settings_of_a_resume_are_named_in_a_warning(run_folder, tmp_path, caplog):
    run = tmp_path / "runs" / "version_0"
    shutil.copytree(run_folder, run)
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["vmunet"]["trainer"] == {
        "accumulate_grad_batches": 1, "precision": "32-true", "gradient_clip_val": 0.0, "gradient_clip_algorithm": None,
        "deterministic": torch.are_deterministic_algorithms_enabled(), "limit_train_batches": 1,
        "check_val_every_n_epoch": 1, "val_check_interval": 1.0, "world_size": 1}
    caplog.set_level(logging.WARNING, logger="vmunet.training.ckpt_settings")
    # accumulation and clipping change the updates; the logging interval changes nothing computed
    run_lightning_cli(["fit", *BASE, "--trainer.max_epochs", "2", "--trainer.accumulate_grad_batches", "2",
                       "--trainer.gradient_clip_val", "0.5", "--trainer.log_every_n_steps", "1",
                       "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", str(last)])
    said = [r.getMessage() for r in caplog.records if r.name == "vmunet.training.ckpt_settings"]
    assert said[-1] == (
        "resuming with trainer settings other than the checkpoint's run: trainer.accumulate_grad_batches=2 (checkpoint: "
        "1), trainer.gradient_clip_algorithm='norm' (checkpoint: None), trainer.gradient_clip_val=0.5 (checkpoint: "
        "0.0); they apply from here on, so the resumed run does not repeat an uninterrupted one"), said
    assert len(said) == 2 and said[0].startswith("resuming with trainer.max_epochs=2")  # the cosine schedule's note
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 1 and resumed["vmunet"]["trainer"]["accumulate_grad_batches"] == 2


def test_a_validation_monitor_without_validation_data_is_said_before_training(tmp_path, caplog, monkeypatch):
    """No validation data and checkpoint.monitor val/dice: no best checkpoint was ever written; Lightning
    said only, after the first epoch, that val/dice was not logged ("Did you call log('val/dice')?").
    Now our warning says why, before the first step, and Lightning's is hidden for that fit only."""
    caplog.set_level(logging.INFO)
    # Lightning says its warning once per process (a module-level WarningCache): as in a fresh process
    monkeypatch.setattr(lightning_model_checkpoint, "warning_cache", WarningCache())
    lightning_says = ("`ModelCheckpoint(monitor='val/dice')` could not find the monitored key in the returned "
                      "metrics: ")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        run_lightning_cli(["fit", *BASE, "--data.n_val", "0", "--trainer.max_epochs", "1",
                           "--trainer.default_root_dir", str(tmp_path / "a")])
        assert not [w for w in shown if lightning_says in str(w.message)], [str(w.message) for w in shown]
        # (Lightning did reach it: its cache holds the text it would have shown)
        assert any(m.startswith(lightning_says) for m in lightning_model_checkpoint.warning_cache)
        # scoped to that fit: the same warning from another fit shows again
        warnings.warn(f"{lightning_says}['train/loss']. HINT: ...", UserWarning, stacklevel=1)
        assert [str(w.message) for w in shown if lightning_says in str(w.message)] == [
            f"{lightning_says}['train/loss']. HINT: ..."]
    said = [r.getMessage() for r in caplog.records]
    why = ("the checkpoint callback monitors 'val/dice' (checkpoint.monitor), which only validation logs, but this fit "
           "has no validation data (an empty val_dataloader, e.g. data.val_cases 0, or trainer.limit_val_batches 0)")
    keep = ("to keep a best checkpoint without validation, monitor a training value: --checkpoint.monitor "
            "train/loss_epoch --checkpoint.mode min --checkpoint.save_on_train_epoch_end true --checkpoint.filename "
            "'best-epoch{epoch:03d}-loss{train/loss_epoch:.4f}' (as experiments/paper/synapse.yaml)")
    warning = f"{why}: no best checkpoint will be written, only last.ckpt; {keep}"
    first_epoch = next(i for i, m in enumerate(said) if m.startswith("epoch 1/1: loss"))
    assert said.count(warning) == 1 and said.index(warning) < first_epoch, said
    assert sorted(p.name for p in (tmp_path / "a" / "version_0" / "checkpoints").iterdir()) == ["last.ckpt"]
    # no last.ckpt either (save_last false, as here a lone best-score callback): the fit would save nothing at all
    with pytest.raises(ConfigError) as err:
        check_best_monitor(_trainer(limit_val_batches=0, callbacks=[ModelCheckpoint(monitor="val/dice")]))
    assert str(err.value) == (f"{why}: no checkpoint would be written at all (checkpoint.save_last is off); {keep}, "
                              "or set --checkpoint.save_last true")
    # a training value monitored (the paper's Synapse recipe): nothing to say
    caplog.clear()
    check_best_monitor(_trainer(limit_val_batches=0, callbacks=[ModelCheckpoint(monitor="train/loss_epoch")]))
    assert not [r for r in caplog.records if r.name.startswith("vmunet")]



def _python_trainer(root: Path, max_epochs: int = 2) -> pl.Trainer:
    return _trainer(max_epochs=max_epochs, default_root_dir=root, num_sanity_val_steps=0, limit_train_batches=1,
                    limit_val_batches=1, limit_test_batches=1)


def _python_module() -> SegmentationModule:
    return SegmentationModule("vmunet_test", num_classes=3, in_chans=1, val_hd95=False)  # (BASE's model)


def test_trainer_fit_and_test_from_python_refuse_otherwise_prepared_data_as_the_cli(run_folder, tmp_path, capfd):
    """Data prepared otherwise than the checkpoint's training data was refused by `vmunet fit|test` only:
    `Trainer.fit(module, dm, ckpt_path=X)` trained a 32-px model on 64-px inputs, `Trainer.test` scored it
    on them, without a word."""
    from train_toy import RecordedToyVolumeData

    run = tmp_path / "runs" / "version_0"
    shutil.copytree(run_folder, run)
    last = run / "checkpoints" / "last.ckpt"
    before = _files(run)
    for sub, why in [("test", "the model would be scored on inputs prepared otherwise than in its training"),
                     ("fit", "a resumed run would go on training on inputs prepared otherwise (to train on from its "
                      f"weights with this data, start a new run with --model.weights {last})")]:
        expected = (f"{last}: the data module prepares its data differently from the data the checkpoint was trained "
                    f"on: preprocessing image_size=[64, 64] (checkpoint: [32, 32]); {why}; use the data settings of "
                    "the training run")
        assert one_error_line([sub, *BASE, "--data.size", "64", "--trainer.max_epochs", "2", "--ckpt_path",
                                str(last)], capfd) == f"vmunet {sub}: error: {expected}"
        with pytest.raises(ConfigError) as err:
            getattr(_python_trainer(tmp_path / "py"), sub)(_python_module(), RecordedToyVolumeData(size=64),
                                                           ckpt_path=str(last))
        assert str(err.value) == expected
    assert _files(run) == before and not (tmp_path / "py").exists()  # nothing written by either


def test_changed_data_settings_of_a_resume_from_python_are_named_as_by_the_cli(run_folder, tmp_path, caplog):
    """A resume's other data settings (batch size, seed, ...) were named in a warning by `vmunet fit` only;
    `Trainer.fit(module, dm, ckpt_path=X)` went on without a word. (The run here is the CLI's, resumed from
    Python too: the data class, which only LightningCLI records, is not compared.)"""
    from train_toy import RecordedToyVolumeData

    logger = "vmunet.training.ckpt_settings"
    caplog.set_level(logging.WARNING, logger=logger)
    said = {}
    for name in ("cli", "py"):
        run = tmp_path / name / "version_0"
        shutil.copytree(run_folder, run)
        last = str(run / "checkpoints" / "last.ckpt")
        caplog.clear()
        if name == "cli":
            run_lightning_cli(["fit", *BASE, "--data.batch_size", "2", "--trainer.max_epochs", "2",
                               "--trainer.default_root_dir", str(tmp_path / name), "--ckpt_path", last])
        else:
            _python_trainer(tmp_path / "py_out").fit(_python_module(), RecordedToyVolumeData(batch_size=2),
                                                     ckpt_path=last)
        said[name] = [r.getMessage() for r in caplog.records if r.name == logger and "data settings" in r.getMessage()]
    assert said["cli"] == said["py"] == [
        "resuming with data settings other than the checkpoint's run: data.batch_size=2 (checkpoint: 4); they apply "
        "from here on, so the resumed run does not repeat an uninterrupted one"], said
    # the resumed epoch ran with it: its checkpoint records the new setting
    resumed = torch.load(tmp_path / "py_out" / "checkpoints" / "epoch=1-step=2.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["datamodule_hyper_parameters"]["batch_size"] == 2


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def test_a_refused_run_from_python_leaves_no_log_folder_and_touches_no_earlier_one(run_folder, tmp_path):
    """Lightning creates its loggers' folders (`lightning_logs/version_N` + a TensorBoard event file) before any
    hook can check the run: `Trainer.fit(module, dm, ckpt_path=X)` refused in the module's hook left an empty
    `version_1` (or the configured logger's folder) behind. Now nothing new is left, and the earlier run --
    its checkpoints, logs and folder -- is byte for byte what it was."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from train_toy import RecordedToyVolumeData

    root = tmp_path / "root"
    shutil.copytree(run_folder, root / "lightning_logs" / "version_0")
    last = str(root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    before = _tree(tmp_path)

    def refused(stage: str, data: RecordedToyVolumeData, max_epochs: int, logger) -> None:
        trainer = pl.Trainer(logger=logger, default_root_dir=root, max_epochs=max_epochs, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=1,
                             limit_val_batches=1, limit_test_batches=1)
        with pytest.raises(ConfigError, match="its run has already ended|prepares its data differently"):
            getattr(trainer, stage)(_python_module(), data, ckpt_path=last)

    refused("fit", RecordedToyVolumeData(), 1, True)  # the run has ended; Lightning's default logger (TensorBoard)
    # data prepared otherwise: a CSV logger whose folders (two levels) do not exist yet; a test run, default logger
    refused("fit", RecordedToyVolumeData(size=64), 2, CSVLogger(tmp_path / "new" / "logs"))
    refused("test", RecordedToyVolumeData(size=64), 2, True)
    # a logger told to write into the earlier run's own folder: its new (empty) event file goes, nothing else
    refused("fit", RecordedToyVolumeData(), 1, TensorBoardLogger(root, name="lightning_logs", version=0))
    assert _tree(tmp_path) == before

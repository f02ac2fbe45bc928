"""The shipped experiment configs parse against the current classes; bad data paths fail early."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vmunet.training.cli import run_lightning_cli

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.parametrize("name", ["synapse_vmunet", "isic17_vmunet", "isic18_vmunet", "demo"])
def test_experiment_config_parses_with_paper_settings(name, capsys):
    with pytest.raises(SystemExit) as exc:
        run_lightning_cli(["fit", "--config", str(EXPERIMENTS / f"{name}.yaml"), "--print_config"])
    assert exc.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    model, data = cfg["model"], cfg["data"]["init_args"]
    assert cfg["seed_everything"] == 42
    assert cfg["checkpoint"]["monitor"] == "val/dice" and cfg["checkpoint"]["mode"] == "max"
    assert cfg["checkpoint"]["save_last"] is True
    if name == "demo":
        assert model["model_name"] == "vmunet_test"
        return
    assert model["model_name"] == "vmunet"
    assert (model["lr"], model["weight_decay"], model["eta_min"]) == (1e-3, 1e-2, 1e-5)
    assert model["scheduler"] == "cosine" and (model["lambda_ce"], model["lambda_dice"]) == (1.0, 1.0)
    assert cfg["trainer"]["max_epochs"] == 300 and data["batch_size"] == 32
    if name == "synapse_vmunet":
        assert cfg["data"]["class_path"] == "vmunet.data.synapse.SynapseDataModule"
        assert data["image_size"] == 224 and model["t_max"] == 100
    else:
        assert cfg["data"]["class_path"] == "vmunet.data.isic.ISICDataModule"
        assert data["image_size"] == 256 and model["t_max"] == 50


def test_missing_data_folder_names_path_and_layout(tmp_path):
    empty = tmp_path / "synapse_here"
    empty.mkdir()
    args = ["fit", "--config", str(EXPERIMENTS / "synapse_vmunet.yaml"), "--data.init_args.root", str(empty),
            "--model.model_name", "vmunet_test", "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]
    with pytest.raises(ValueError) as exc:
        run_lightning_cli(args)
    msg = str(exc.value)
    assert str(empty) in msg and "train_npz" in msg and "test_vol_h5" in msg
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_vmunet_fit_reports_data_errors_without_traceback(tmp_path, capsys):
    from vmunet.cli import main

    empty = tmp_path / "synapse_here"
    empty.mkdir()
    code = main(["fit", "--config", str(EXPERIMENTS / "synapse_vmunet.yaml"), "--data.init_args.root", str(empty),
                 "--model.model_name", "vmunet_test", "--trainer.default_root_dir", str(tmp_path / "runs"),
                 "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err
    assert code == 2
    assert "vmunet fit: error:" in err and str(empty) in err and "Traceback" not in err


def test_nifti_config_for_nnunet_raw_datasets_parses(capsys):
    with pytest.raises(SystemExit) as exc:
        run_lightning_cli(["fit", "--config", str(EXPERIMENTS / "nifti_vmunet.yaml"), "--print_config"])
    assert exc.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    data = cfg["data"]["init_args"]
    assert cfg["data"]["class_path"] == "vmunet.data.nifti.NiftiDataModule"
    assert data["intensity"] == "auto" and data["use_mask_for_norm"] is False and data["slice_axis"] == 2
    assert cfg["model"]["model_name"] == "vmunet" and cfg["checkpoint"]["monitor"] == "val/dice"


def test_ultralight_isic_recipe_parses_and_a_short_fit_rebuilds_from_its_checkpoint(tmp_path, capsys):
    """experiments/isic17_ultralight.yaml (its values against the original config file:
    tests/parity/test_original_ultralight_vmunet.py) resolves, trains the model it names and the
    checkpoint rebuilds it with its model_kwargs."""
    import torch

    from vmunet.data.synth import synth_isic
    from vmunet.models.checkpoint import model_from_checkpoint

    config = EXPERIMENTS / "isic17_ultralight.yaml"
    with pytest.raises(SystemExit) as exc:
        run_lightning_cli(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model_name"] == "ultralight_vmunet" and cfg["trainer"]["max_epochs"] == 250
    assert cfg["data"]["init_args"]["batch_size"] == 8 and cfg["checkpoint"]["monitor"] == "val/loss"
    root = tmp_path / "isic"
    synth_isic(root, cases=6, size=40, seed=0)
    run_lightning_cli(["fit", "--config", str(config), "--data.init_args.root", str(root),
                       "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.accelerator", "cpu",
                       "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                       "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
                       "--trainer.log_every_n_steps", "1",
                       "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
                       "--data.init_args.image_size", "32"])
    (best,) = (tmp_path / "runs").glob("version_*/checkpoints/best-*.ckpt")
    model, record = model_from_checkpoint(best)
    assert record["model_name"] == "ultralight_vmunet" and record["model_kwargs"]["dims"] == [8, 16, 24, 32, 48, 64]
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in model.state_dict().items())

"""experiments/paper/*.yaml: the original VM-UNet settings, and a short fit + test of each on synthetic data.

The expected values are the original code's (JCruan519/VM-UNet ``configs/config_setting*.py``,
``utils.py`` loss classes, ``train*.py`` model selection), written here by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vmunet.training.cli import run_lightning_cli

PAPER = Path(__file__).resolve().parents[2] / "experiments" / "paper"

COMMON = {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 1e-2, "scheduler": "cosine", "eta_min": 1e-5,
          "lambda_ce": 1.0, "lambda_dice": 1.0, "weights": "pretrained/vmamba_small_e238_ema.pth",
          "model_name": "vmunet", "hd95": "pooled", "metric_conventions": ["paper", "strict"],
          "weights_entry": "model"}
LOSS = {
    "synapse": {"dice_squared_pred": True, "dice_smooth_nr": 1e-5, "dice_smooth_dr": 1e-5, "batch_dice": True,
                "dice_include_background": True, "t_max": 100},
    "isic": {"dice_squared_pred": False, "dice_smooth_nr": 1.0, "dice_smooth_dr": 1.0, "batch_dice": False,
             "t_max": 50, "threshold": 0.5},
}


def _printed_config(name: str, capsys) -> dict:
    with pytest.raises(SystemExit) as exc:
        run_lightning_cli(["fit", "--config", str(PAPER / f"{name}.yaml"), "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", ["synapse", "isic17", "isic18"])
def test_paper_config_has_the_original_settings(name, capsys):
    cfg = _printed_config(name, capsys)
    model, data, ckpt = cfg["model"], cfg["data"]["init_args"], cfg["checkpoint"]
    kind = "synapse" if name == "synapse" else "isic"
    for key, value in {**COMMON, **LOSS[kind]}.items():
        assert model[key] == pytest.approx(value) if isinstance(value, float) else model[key] == value, key
    assert cfg["seed_everything"] == 42 and cfg["trainer"]["max_epochs"] == 300 and data["batch_size"] == 32
    if kind == "synapse":
        assert data["val_cases"] == 0 and data["augmentation"] == "paper" and data["image_size"] == 224
        assert model["resample"] == "labels"
        assert (ckpt["monitor"], ckpt["mode"], ckpt["save_on_train_epoch_end"]) == ("train/loss_epoch", "min", True)
    else:
        assert data["normalization"] == "paper" and data["image_size"] == 256 and data["test_split"] == "val"
        assert data["root"] == {"isic17": "data/isic2017", "isic18": "data/isic2018"}[name]
        assert (ckpt["monitor"], ckpt["mode"]) == ("val/loss", "min")


def test_paper_model_instantiates_with_the_original_architecture():
    import torch

    from vmunet.models import create_model

    model = create_model("vmunet", num_classes=9, in_chans=1)
    n = sum(p.numel() for p in model.parameters())
    # VM-UNet (depths [2,2,2,2] / [2,2,2,1], dims 96..768, d_state 16): about 27.4M parameters
    assert 27.0e6 < n < 27.9e6
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 9, 32, 32)


def _short_run(config: Path, root: Path, runs: Path, extra: list[str]) -> Path:
    common = ["--data.init_args.root", str(root), "--model.model_name", "vmunet_test", "--model.weights", "null",
              "--trainer.default_root_dir", str(runs), "--trainer.accelerator", "cpu",
              "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
              "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
              "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
              "--data.init_args.image_size", "32", *extra]
    run_lightning_cli(["fit", "--config", str(config), *common])
    (version,) = runs.glob("version_*")
    return version


def test_paper_synapse_short_fit_selects_by_training_loss_and_reports_both_conventions(tmp_path):
    from vmunet.data.synth import synth_synapse

    root = tmp_path / "synapse"
    synth_synapse(root, cases=4, size=32, slices=4, seed=0)
    runs = tmp_path / "runs"
    version = _short_run(PAPER / "synapse.yaml", root, runs, ["--model.slice_batch_size", "4"])
    best = sorted(p.name for p in (version / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and best[0].startswith("best-epoch") and "-loss" in best[0]
    metrics = (version / "metrics.csv").read_text()
    assert "train/loss_epoch" in metrics and "val/" not in metrics  # no validation split
    run_lightning_cli(["test", "--config", str(PAPER / "synapse.yaml"), "--data.init_args.root", str(root),
                       "--model.model_name", "vmunet_test", "--model.weights", "null",
                       "--trainer.default_root_dir", str(tmp_path / "test_runs"), "--trainer.accelerator", "cpu",
                       "--trainer.enable_progress_bar", "false", "--data.init_args.num_workers", "0",
                       "--data.init_args.image_size", "32", "--model.slice_batch_size", "4",
                       "--ckpt_path", str(version / "checkpoints" / best[0])])
    report = version / "test_metrics.json"  # next to the evaluated checkpoint, in its run
    assert not (tmp_path / "test_runs").exists()
    summary = json.loads(report.read_text())
    assert summary["conventions"] == ["paper", "strict"] and summary["convention"] == "paper"
    assert summary["hd95_definition"] == "pooled"
    assert set(summary["by_convention"]) == {"paper", "strict"}
    per_class_csv = (report.parent / "test_per_class.csv").read_text().splitlines()
    assert per_class_csv[0].startswith("convention,class,dice,hd95")
    assert {line.split(",")[0] for line in per_class_csv[1:]} == {"paper", "strict"}


def test_paper_isic_short_fit_selects_by_validation_loss(tmp_path):
    from vmunet.data.synth import synth_isic

    root = tmp_path / "isic"
    synth_isic(root, cases=8, size=40, seed=0)
    version = _short_run(PAPER / "isic17.yaml", root, tmp_path / "runs", ["--trainer.limit_val_batches", "2"])
    best = sorted(p.name for p in (version / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and "-loss" in best[0]
    assert "val/loss" in (version / "metrics.csv").read_text()

"""`vmunet fit` settings a Lightning user expects to behave as Lightning documents them: the final
epoch is validated whatever `check_val_every_n_epoch` says, `seed_everything: true` draws a random
seed and records it, and a ModelSummary added by the user prints no false FLOPs."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from vmunet.errors import ConfigError
from vmunet.training.cli import random_run_seed, run_lightning_cli

TOY = ["--data", "train_toy.ToyImageData", "--model.model_name", "vmunet_test",
       "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
       "--trainer.log_every_n_steps", "1"]
# one batch, no validation: enough for the start-up (config.yaml, seeding, summary), little else
NO_TRAINING = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"]


def _run_dir(root: Path) -> Path:
    (run,) = root.glob("version_*")
    return run


def test_the_final_epoch_is_validated_and_competes_for_the_best_checkpoint(tmp_path):
    # the last epoch is not a multiple of the interval (as 7 and 5); a run shorter than the interval:
    # tests/training/test_checkpoints.py::test_last_ckpt_is_written_every_epoch_when_validation_is_not
    max_epochs, every, validated = 3, 2, [1, 2]  # Lightning alone validates epoch 1 (0-based) only
    root = tmp_path / "runs"
    run_lightning_cli(["fit", *TOY, "--trainer.default_root_dir", str(root), "--trainer.enable_model_summary",
                       "false", "--trainer.max_epochs", str(max_epochs), "--trainer.limit_train_batches", "1",
                       "--trainer.check_val_every_n_epoch", str(every), "--trainer.limit_val_batches", "1",
                       "--checkpoint.save_top_k", "-1"])  # a best-* file for every validated epoch
    run = _run_dir(root)
    with open(run / "metrics.csv") as fh:
        val_epochs = sorted({int(r["epoch"]) for r in csv.DictReader(fh) if r.get("val/dice")})
    assert val_epochs == validated
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert [int(re.match(r"best-epoch(\d{3})-dice", n).group(1)) for n in best] == validated, best
    assert sorted(p.name for p in (run / "val_images").iterdir()) == [f"epoch_{e:03d}.png" for e in validated]


def test_seed_everything_true_draws_a_random_seed_and_records_it(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # Lightning 2.6 would reuse it (else 0): not random
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    caplog.set_level(logging.INFO)
    root = tmp_path / "runs"
    run_lightning_cli(["fit", *TOY, "--trainer.default_root_dir", str(root), "--trainer.enable_model_summary",
                       "false", *NO_TRAINING, "--seed_everything", "true"])  # config.yaml is written first
    seed = yaml.safe_load((_run_dir(root) / "config.yaml").read_text())["seed_everything"]
    assert type(seed) is int and 0 <= seed < 2**32
    assert seed != 0 and os.environ["PL_GLOBAL_SEED"] == str(seed)  # the run was seeded with it (P(0) = 2**-32)
    mentions = [r.getMessage() for r in caplog.records if re.search(rf"\b{seed}\b", r.getMessage())]
    assert mentions == [f"seed_everything: true: random seed {seed} (saved in the run's config; "
                        f"--seed_everything {seed} repeats the run)"]
    assert "No seed found" not in caplog.text


def test_random_seeds_differ_and_launched_ranks_share_the_first_one(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # an earlier run's seed in this process: not reused
    seeds = {random_run_seed() for _ in range(8)}
    assert len(seeds) == 8 and 7 not in seeds and all(0 <= s < 2**32 for s in seeds)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process Lightning's DDP launcher started: rank 0's seed
    assert random_run_seed() == 7
    monkeypatch.delenv("PL_GLOBAL_SEED")  # e.g. torchrun's rank 1: nothing to share
    with pytest.raises(ConfigError, match=r"^seed_everything: true draws a random seed in each process"):
        random_run_seed()


@pytest.mark.parametrize("summary", ["ModelSummary", "RichModelSummary"])
def test_a_user_model_summary_prints_no_flops(tmp_path, caplog, capfd, summary):
    caplog.set_level(logging.INFO)
    run_lightning_cli(["fit", *TOY, "--trainer.default_root_dir", str(tmp_path), *NO_TRAINING,  # summary first
                       f"--trainer.callbacks+={summary}",
                       "--trainer.callbacks.max_depth", "2"])
    out, err = capfd.readouterr()
    printed = out + err + caplog.text
    # Lightning's: a "FLOPs" column and a "Total Flops" row (plain) / "Total FLOPs: 0" (rich)
    assert not re.search(r"FLOPs\s*(\||$)|Total FLOPs|Total Flops", printed, re.I | re.M), printed
    assert "already configured with model summary" not in printed
    (table,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model summary")]
    # the user's max_depth 2: the model's children are listed under it, e.g. "model.<child>"
    assert re.search(r"^\d+\s+\| model\.\w+\s+\|", table, re.M), table
    assert re.search(r"^\d+\s+\| loss_fn\s+\| DiceCELoss", table, re.M), table

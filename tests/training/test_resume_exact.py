"""Resume is exact: a run interrupted in epoch 1 and resumed from last.ckpt ends bit-identical to an
uninterrupted one, with the same metrics.csv, in the same run folder.

The data are synthetic Synapse slices with augmentation on (random rot90/flip/rotation drawn per
item) and drop-path in the model, so every random stream of an epoch is exercised. The interrupted
epoch is replayed from its start: last.ckpt is written at the end of epoch 0.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from vmunet.data.synth import synth_synapse
from vmunet.training.cli import run_lightning_cli

HERE = Path(__file__).resolve().parent


def _config(tmp_path: Path, data: Path, workers: int) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""seed_everything: 7
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  deterministic: true
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  enable_model_summary: false
  enable_progress_bar: false
model:
  model_name: vmunet_test
  lr: 0.003
  t_max: 2
  val_hd95: false
  model_kwargs: {{drop_path_rate: 0.2}}
data:
  class_path: vmunet.data.synapse.SynapseDataModule
  init_args:
    root: {data}
    batch_size: 4
    num_workers: {workers}
    image_size: 32
    val_cases: 1
    augment: true
""")
    return cfg


@pytest.fixture(scope="module")
def tiny_synapse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_synapse")
    synth_synapse(out, cases=5, size=32, slices=6, seed=1)  # 2 of 3 train cases: 12 slices, 3 steps
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1
    return ckpt["state_dict"]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise
    assert _rows(straight) == _rows(resumed)
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == \
        sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert (resumed / "config.yaml").is_file() and (resumed / "config.resumed-epoch000.yaml").is_file()


class Interrupt(Exception):
    pass


class StopAt(pl.Callback):
    """Raise in batch 1 of epoch 1: the in-process stand-in for a kill (nothing is saved after it)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise Interrupt


def test_interrupted_and_resumed_fit_is_bit_identical(tmp_path, tiny_synapse):
    cfg = _config(tmp_path, tiny_synapse, workers=1)  # a worker draws indices when the loader starts
    run_lightning_cli(["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "straight")])
    straight = tmp_path / "straight" / "version_0"

    cli_args = ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "cut")]
    with pytest.raises(Interrupt):
        run_lightning_cli([*cli_args, f"--trainer.callbacks+={__name__}.StopAt"])
    cut = tmp_path / "cut" / "version_0"
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    run_lightning_cli([*cli_args, "--ckpt_path", str(cut / "checkpoints" / "last.ckpt")])
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["version_0"]  # the run's own folder
    _assert_same_run(straight, cut)


def _fit(cfg: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vmunet", "fit", "--config", str(cfg), "--trainer.default_root_dir", str(root),
           *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_sigkilled_subprocess_fit_resumes_bit_identical(tmp_path, tiny_synapse):
    """A real SIGKILL in the middle of epoch 1 (two data-loader worker processes), then resume."""
    cfg = _config(tmp_path, tiny_synapse, workers=2)
    straight = _fit(cfg, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _fit(cfg, tmp_path / "cut", "--trainer.callbacks+=kill_at.KillAt", "--trainer.callbacks.epoch", "1",
                  "--trainer.callbacks.batch", "2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    cut = tmp_path / "cut" / "version_0"
    resumed = _fit(cfg, tmp_path / "cut", "--ckpt_path", str(cut / "checkpoints" / "last.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path / "straight" / "version_0", cut)

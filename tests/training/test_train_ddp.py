"""Distributed evaluation is exact: 2 CPU processes (DDP, gloo) == 1 process on the same checkpoint.

3 test volumes on 2 ranks: the distributed sampler pads to 4 by repeating a volume, which the
module must drop (rows are gathered from all ranks and de-duplicated by case name).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from train_toy import ToyVolumeData

from vmunet.training.module import SegmentationModule

HERE = Path(__file__).resolve().parent


def _test_cmd(ckpt: Path, root: Path, devices: int) -> list[str]:
    cmd = [sys.executable, "-m", "vmunet.cli", "test", "--data", "train_toy.ToyVolumeData",
           "--data.n_val", "3", "--model.model_name", "vmunet_test", "--ckpt_path", str(ckpt),
           "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
           "--verbose", "false"]
    if devices > 1:
        cmd += ["--trainer.strategy", "ddp"]
    return cmd


@pytest.mark.slow
def test_two_process_ddp_test_metrics_equal_single_process(tmp_path):
    pl.seed_everything(3)
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1, lr=5e-3, val_hd95=False)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0,
                         default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                         logger=False, enable_checkpointing=False)
    trainer.fit(module, ToyVolumeData())
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    reports = {}
    for devices in (1, 2):
        root = tmp_path / f"dev{devices}"
        proc = subprocess.run(_test_cmd(ckpt, root, devices), env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (report,) = root.glob("version_*/test_metrics.json")
        reports[devices] = json.loads(report.read_text())

    one, two = reports[1], reports[2]
    assert one["num_cases"] == two["num_cases"] == 3
    key = lambda r: (r["case"], r["class"])  # noqa: E731
    assert sorted(one["cases"], key=key) == sorted(two["cases"], key=key)
    assert one["mean"] == two["mean"] and one["per_class"] == two["per_class"]

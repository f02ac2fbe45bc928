"""Short training runs of ``vmunet_test`` on real scans, scored on held-out slices.

The recipes are the committed ``experiments/real_*.yaml`` (what the README's "Real data" table
reports); the test set is slab 2 of each scan, which training never sees. Both runs are seeded.
Bars: the issue's for the head CT (soft tissue and bone Dice >= 0.8; measured 0.96 / 0.84 on
2026-11-26). The k-means MR has no bar in the issue: 0.45 mean Dice over the five classes sits
below the measured 0.57 of the same day, so the test catches a run that stops learning the
intensity classes, not a change in the last digits.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vmunet.training.cli import run_lightning_cli

pytestmark = pytest.mark.real

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def fit_and_test(config: str, root: Path, out: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    common = ["--config", str(EXPERIMENTS / config), "--data.init_args.root", str(root),
              "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false"]
    fit = run_lightning_cli(["fit", *common])
    last = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    test = run_lightning_cli(["test", *common, "--ckpt_path", str(last)])
    return test.model.last_summary, time.perf_counter() - t0


def test_real_head_ct_soft_tissue_and_bone(invesalius, tmp_path):
    summary, seconds = fit_and_test("real_headct.yaml", invesalius["root"] / "headct", tmp_path)
    assert [r["case"] for r in summary["cases"]][:1] == ["cranium_slab2"]  # the held-out slab
    dice = {name: v["dice"] for name, v in summary["per_class"].items()}
    assert dice["soft_tissue"] >= 0.8 and dice["bone"] >= 0.8, (dice, seconds)


def test_real_mr_kmeans_classes(itk, tmp_path):
    summary, seconds = fit_and_test("real_mr_kmeans.yaml", itk["root"] / "mr_kmeans", tmp_path)
    assert {r["case"] for r in summary["cases"]} == {"t1_slab2"}
    assert summary["mean"]["dice"] >= MR_KMEANS_MIN_DICE, (summary["per_class"], seconds)


#: Mean Dice over the 5 k-means classes on the held-out coronal slab (measured 0.574, see above).
MR_KMEANS_MIN_DICE = 0.45

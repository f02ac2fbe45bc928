"""benchmarks/gpu/fit_check.py --smoke: every stage of the device's `vmunet fit` check runs on CPU
(tiny sizes, the CPU stand-in of the compiled kernel) and its two files hold what the device run's
reader needs. Numbers are not judged (CPU), except what holds on any machine: the counts follow
from the sizes asked for, and a resume on CPU reproduces the uninterrupted run exactly (the
project's exact-resume claim: EpochSeed + epoch-seeded loaders)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["env", "extension", "data", "fit_fp32", "loader", "step_fp32", "resume", "fit_bf16", "step_bf16",
          "deterministic"]


def test_fit_check_smoke_writes_every_stage(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    # 5 phantoms of 4 slices: 3 training cases (2 held out for validation) + 2 test cases; the one kept
    # is hard-linked once more: 8 training slices, batch 4: 2 batches an epoch; 2 epochs (resume after the 1st)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "fit_check.py"), "--smoke",
                           "--out", str(out), "--work", str(work)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["fit_check.json", "fit_check.md"]  # no temp files left
    res = json.loads((out / "fit_check.json").read_text())
    st = res["stages"]
    assert list(st) == STAGES
    assert all(s["status"] == "ok" for s in st.values()), {k: s.get("error") for k, s in st.items()}
    assert res["smoke"] is True and res["settings"]["batch"] == 4

    data = st["data"]
    assert data["train_slices"] == 8 and data["distinct_train_slices"] == 4 and data["slices"] == 4
    assert len(data["generated_cases"]) == 5 and len(data["val_cases"]) == 2 and data["size"] == 64
    lines = (work / "Synapse" / "lists" / "lists_Synapse" / "train.txt").read_text().split()
    cases = {n.rsplit("_slice", 1)[0] for n in lines}
    assert set(data["val_cases"]) <= cases and len(lines) == 8 + 2 * 4
    # no training slice is a copy of a validation case's slice (hard links share the inode)
    train_dir = work / "Synapse" / "train_npz"
    val_inodes = {(train_dir / f"{n}.npz").stat().st_ino for n in lines if n.rsplit("_slice", 1)[0] in data["val_cases"]}
    train_inodes = {(train_dir / f"{n}.npz").stat().st_ino for n in lines
                    if n.rsplit("_slice", 1)[0] not in data["val_cases"]}
    assert not val_inodes & train_inodes

    for name, epochs in (("fit_fp32", 2), ("fit_bf16", 1)):
        fit = st[name]
        assert len(fit["epochs"]) == epochs and fit["non_finite_losses"] == 0
        assert all(e["samples"] == 8 and e["batches"] == 2 and e["img_s"] > 0 for e in fit["epochs"])
        assert [v["sanity"] for v in fit["validations"]] == [True] + [False] * epochs
        assert 0.0 <= fit["metrics"]["val/dice"] <= 1.0 and fit["metrics"]["val/hd95"] >= 0.0
        assert 0.0 <= fit["mean_data_wait_share"] <= 1.0
    assert st["fit_fp32"]["precision"] == "32-true" and st["fit_bf16"]["precision"] == "bf16-mixed"

    rs = st["resume"]
    assert rs["resumed_from"].startswith("best-epoch000-") and rs["resumed_epochs"] == [1]
    assert rs["max_abs_weight_diff"] == 0.0 and rs["tensors_differing"] == 0 and rs["tensors"] > 0
    assert rs["metrics_resumed"] == rs["metrics_uninterrupted"]

    assert [r["samples"] for r in st["loader"]["rows"]] == [8]
    for name, precision in (("step_fp32", "32-true"), ("step_bf16", "bf16-mixed")):
        assert st[name]["precision"] == precision and st[name]["samples"] == 4  # 1 batch of 4, 1 round
        assert st[name]["non_finite_losses"] == 0
        for mode in ("", "_deterministic_off"):  # img/s is the samples over the timed seconds
            assert abs(st[name][f"img_s{mode}"] - 4 / st[name][f"timed_s{mode}"]) <= 0.05 * st[name][f"img_s{mode}"]
        assert st[name]["deterministic_algorithms"] == "warn"  # what the paper config's fits left set
    assert st["deterministic"]["runs"] is True  # on CPU every op has a deterministic version

    md = (out / "fit_check.md").read_text()
    assert md.startswith("# vmunet fit check (SMOKE")
    for title in ("Fit through `vmunet fit`", "Per epoch", "Bottleneck:", "Resume from a mid-run checkpoint",
                  "trainer.deterministic=true: runs"):
        assert title in md
    assert "| fit_fp32 | 32-true | 2 |" in md and "| fit_bf16 | bf16-mixed | 1 |" in md

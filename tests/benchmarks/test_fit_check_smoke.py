"""benchmarks/gpu/fit_check.py --smoke: every stage of the device's `vmunet fit` check runs on CPU
(tiny sizes, the CPU stand-in of the compiled kernel) and its two files hold what the device run's
reader needs. Numbers are not judged (CPU), except what holds on any machine: the counts follow
from the sizes asked for, and a resume on CPU reproduces the uninterrupted run exactly (the
project's exact-resume claim: EpochSeed + epoch-seeded loaders)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["env", "extension", "data", "fit_fp32", "resume", "deterministic", "loader", "step_fp32", "fit_bf16",
          "step_bf16", "sanity"]


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

    # fit_fp32: both volumes validated (Dice + HD95) after the last epoch only, no sanity check
    fp32 = st["fit_fp32"]
    assert len(fp32["epochs"]) == 2 and fp32["non_finite_losses"] == 0 and fp32["val_hd95"] is True
    assert [(v["epoch"], v["sanity"], v["batches"]) for v in fp32["validations"]] == [(1, False, 2)]
    assert 0.0 <= fp32["metrics"]["val/dice"] <= 1.0 and fp32["metrics"]["val/hd95"] >= 0.0
    # fit_bf16: --bf16-batches (2: the whole smoke epoch), one volume, Dice only
    bf16 = st["fit_bf16"]
    assert len(bf16["epochs"]) == 1 and bf16["non_finite_losses"] == 0 and bf16["val_hd95"] is False
    assert [(v["sanity"], v["batches"]) for v in bf16["validations"]] == [(False, 1)]
    assert 0.0 <= bf16["metrics"]["val/dice"] <= 1.0 and "val/hd95" not in bf16["metrics"]
    for fit in (fp32, bf16):
        assert all(e["samples"] == 8 and e["batches"] == 2 and e["img_s"] > 0 for e in fit["epochs"])
        assert 0.0 <= fit["mean_data_wait_share"] <= 1.0
        start = fit["start"]  # the first batch comes after the set-up; no sanity check in these fits
        assert start["sanity_s"] == 0 and start["sanity_volumes"] == 0
        assert 0 < start["setup_s"] <= start["to_first_batch_s"] <= fit["total_s"]
    assert fp32["precision"] == "32-true" and bf16["precision"] == "bf16-mixed"

    rs = st["resume"]
    assert rs["resumed_from"].startswith("best-epoch000-") and rs["resumed_epochs"] == [1]
    assert rs["max_abs_weight_diff"] == 0.0 and rs["tensors_differing"] == 0 and rs["tensors"] > 0
    # validated without HD95 (its time is not the point): the rest of the metrics agree exactly
    assert rs["resumed_run"]["val_hd95"] is False and "val/hd95" not in rs["metrics_resumed"]
    assert set(rs["metric_abs_diff"]) == {"train/loss_epoch", "val/loss", "val/dice"}
    assert all(rs["metrics_resumed"][k] == rs["metrics_uninterrupted"][k] for k in rs["metric_abs_diff"])

    assert [r["samples"] for r in st["loader"]["rows"]] == [8]
    for name, precision in (("step_fp32", "32-true"), ("step_bf16", "bf16-mixed")):
        assert st[name]["precision"] == precision and st[name]["samples"] == 4  # 1 batch of 4, 1 round
        assert st[name]["non_finite_losses"] == 0
        for mode in ("", "_deterministic_off"):  # img/s is the samples over the timed seconds
            assert abs(st[name][f"img_s{mode}"] - 4 / st[name][f"timed_s{mode}"]) <= 0.05 * st[name][f"img_s{mode}"]
        # what the paper config's fits left set: the deterministic stage's strict mode was undone
        assert st[name]["deterministic_algorithms"] == "warn"
    det = st["deterministic"]
    assert det["runs"] is True  # on CPU every op has a deterministic version
    alone = det["model_alone"]
    assert alone["strict_forward_backward"] == "runs" and alone["repeat_grads"] > 0
    assert alone["repeat_max_abs_grad_diff"] == 0.0 and alone["repeat_grads_differing"] == 0  # CPU: bit for bit

    # sanity: Lightning's check on both volumes (budget ample), then one training batch and no validation
    san = st["sanity"]
    assert san["volumes"] == 2 and [(v["sanity"], v["batches"]) for v in san["validations"]] == [(True, 2)]
    assert [e["batches"] for e in san["epochs"]] == [1] and san["val_hd95"] is True
    s0 = san["start"]
    assert s0["sanity_volumes"] == 2 and s0["sanity_s"] > 0
    assert s0["setup_s"] + s0["sanity_s"] <= s0["to_first_batch_s"] <= san["total_s"]

    md = (out / "fit_check.md").read_text()
    assert md.startswith("# vmunet fit check (SMOKE")
    for title in ("Fit through `vmunet fit`", "Per epoch", "Bottleneck:", "Resume from a mid-run checkpoint",
                  "trainer.deterministic=true: runs", "From the call (run_lightning_cli", "Lightning's sanity check (",
                  "The model alone (forward + backward, no loss op) under strict deterministic algorithms: runs"):
        assert title in md
    assert "| fit_fp32 | 32-true | 2 |" in md and "| fit_bf16 | bf16-mixed | 1 |" in md
    assert "| sanity (a default fit's start) |" in md


def test_budget_keeps_the_reserved_stages_time(tmp_path, monkeypatch):
    """A stage starts only if its estimate fits in what is left less the estimates of the reserved
    stages still to come; a reserved stage needs only its own (hand-worked numbers, 10 s budget)."""
    spec = importlib.util.spec_from_file_location("fit_check_budget", ROOT / "benchmarks" / "gpu" / "fit_check.py")
    fc = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, fc)  # (its dataclass looks its module up there)
    spec.loader.exec_module(fc)
    run = fc.Run(fc.parse_args(["--smoke", "--out", str(tmp_path), "--budget-s", "10"]))
    ran = []

    def stage(name, need, reserved=False):
        return fc.Stage(name, lambda: ran.append(name) or {}, need, reserved)

    # a: 10 - (4 + 1) kept < 6: skipped, though 6 < 10; b: 10 - 1 >= 4; c: 10 - 1 >= 3; d: 10 >= 1;
    # e: 10 < 20 (nothing kept after it)
    run.run_plan([stage("a", 6), stage("b", 4, True), stage("c", 3), stage("d", 1, True), stage("e", 20)])
    st = run.res["stages"]
    assert ran == ["b", "c", "d"]
    assert [st[k]["status"] for k in "abcde"] == ["skipped", "ok", "ok", "ok", "skipped"]
    assert st["a"]["why"].endswith("needs ~6 s + 5 s kept for b, d") and st["e"]["why"].endswith("needs ~20 s")
    assert [p["estimate_s"] for p in run.res["plan"]] == [6, 4, 3, 1, 20]
    assert json.loads((tmp_path / "fit_check.json").read_text())["stages"]["e"]["status"] == "skipped"

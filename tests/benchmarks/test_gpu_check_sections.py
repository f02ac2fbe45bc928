"""benchmarks/gpu_check.py --sections / --models: a device call runs only the sections named; a
name that is not a section or a registered model is refused with one line (exit 2); the exit code
asks only about the sections that ran."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

ALL = ["parity", "model_agreement", "train", "scan_time", "original", "cross_scan", "models", "profile"]


def test_parse_sections_all_subset_and_order():
    assert gpu_check.parse_sections("all") == ALL
    # the run order, whatever the order given; env/extension may be named (they always run)
    assert gpu_check.parse_sections("profile, models") == ["models", "profile"]
    assert gpu_check.parse_sections("env,extension,cross_scan") == ["cross_scan"]


@pytest.mark.parametrize("text", ["models,prof", "", "all,models"])
def test_parse_sections_refuses_unknown_names_listing_the_valid_ones(text):
    with pytest.raises(ValueError) as err:
        gpu_check.parse_sections(text)
    msg = str(err.value)
    assert msg.startswith("--sections: unknown section") and "\n" not in msg
    assert "valid: all, env, extension, " + ", ".join(ALL) in msg


def test_parse_models_refuses_unregistered_names():
    assert gpu_check.parse_models("vmunet, ultralight_vmunet") == ["vmunet", "ultralight_vmunet"]
    with pytest.raises(ValueError, match=r"--models: unknown model\(s\) 'vm_unet'; valid: .*ultralight_vmunet"):
        gpu_check.parse_models("vmunet,vm_unet")


def _sec(**kw):
    return {"status": "ok", "seconds": 1.0, **kw}


def test_exit_rule_asks_only_about_sections_that_ran():
    ran = {"env": _sec(), "extension": _sec(), "models": _sec(no_nan=True), "profile": _sec()}
    assert gpu_check.passed({"sections": ran})  # no parity / train asked for: not demanded
    assert not gpu_check.passed({"sections": {**ran, "models": _sec(no_nan=False)}})
    assert not gpu_check.passed({"sections": {**ran, "profile": {"status": "error", "error": "x"}}})
    assert not gpu_check.passed({"sections": {**ran, "parity": _sec(all_ok=False)}})
    assert not gpu_check.passed({"sections": {**ran, "train": _sec(no_nan=False)}})
    assert gpu_check.passed({"sections": {**ran, "parity": _sec(all_ok=True), "train": _sec(no_nan=True)}})


@pytest.mark.parametrize(("args", "needle"), [
    (["--sections", "parity,bogus"], "gpu_check: --sections: unknown section(s) 'bogus'; valid: all, env,"),
    (["--models", "nope"], "gpu_check: --models: unknown model(s) 'nope'; valid: "),
    (["--sections", "original"], "gpu_check: --sections original needs --original PATH"),
])
def test_cli_refuses_with_one_line_and_exit_2(tmp_path, capsys, args, needle):
    # main() itself (a subprocess costs ~6 s of imports): the refusal comes before any work
    assert gpu_check.main(["--smoke", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(needle) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_subset_runs_alone_and_passes_without_the_others(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out",
                           str(tmp_path), "--sections", "parity"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(res["sections"]) == ["env", "extension", "parity"] and res["sections_asked"] == ["parity"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "Parity, cuda vs float64" in md and "| train |" not in md and "Models (scan" not in md


@pytest.mark.parametrize(("dtypes", "bf16_status"), [(["fp32"], "not in this build"), (["fp32", "bf16"], "FAIL"),
                                                     ("all", "FAIL"), (None, "not in this build")])
def test_parity_a_refused_dtype_fails_when_the_manifest_lists_it(monkeypatch, dtypes, bf16_status):
    """A kernel that refuses bf16 inputs is "not in this build" only when its build manifest does not
    list bf16 (or there is none, e.g. pip's mamba-ssm); a build that says it has bf16 and refuses it
    is broken: FAIL, with the kernel's message."""
    def refuse_bf16(*, backend, **ins):
        if ins["u"].dtype == gpu_check.torch.bfloat16:
            raise RuntimeError("selective_scan_fwd not implemented for input type 'BFloat16' (this build ...)")
        return gpu_check.selective_scan_ref(**ins)

    monkeypatch.setattr(gpu_check, "selective_scan", refuse_bf16)
    ext = {"status": "ok"} if dtypes is None else {"status": "ok", "manifest": {"dtypes": dtypes}}
    chk = types.SimpleNamespace(args=types.SimpleNamespace(smoke=True), device="cpu",
                                res={"sections": {"extension": ext}})
    res = gpu_check.parity(chk)
    statuses = {r["dtype"]: r["status"] for r in res["rows"] if not r["z"]}
    assert statuses == {"float32": "ok", "bfloat16": bf16_status}
    assert res["all_ok"] is (bf16_status != "FAIL")
    failed = [r for r in res["rows"] if r["status"] == "FAIL"]
    assert all(r["error"].startswith("selective_scan_fwd not implemented for input type 'BFloat16'") for r in failed)

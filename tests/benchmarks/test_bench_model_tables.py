"""benchmarks/bench_model.py's tables from hand-made rows (no timing): the img/s ratio between two
models of one run, and the refusal of an unknown model name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_model  # noqa: E402


def _row(model: str, mode: str, seconds: float, cpu: float) -> dict:
    return {"model": model, "backend": "numba", "size": 256, "batch": 8, "mode": mode,
            "optimizer": "AdamW" if mode == "train" else None, "seconds": seconds, "cpu_seconds": cpu,
            "median_seconds": seconds * 1.5, "median_cpu_seconds": cpu * 1.5, "img_per_s": 8 / seconds,
            "peak_mib": 10.0, "peak_rss_mib": 100.0, "faults": 1234}


def test_model_ratio_is_img_per_s_over_the_first_models():
    rows = [_row("vmunet", "infer", 40.0, 10.0), _row("ultralight_vmunet", "infer", 1.0, 0.25),
            _row("vmunet", "train", 90.0, 36.0), _row("ultralight_vmunet", "train", 2.0, 0.72)]
    table = bench_model.model_ratio_table(rows, ["vmunet", "ultralight_vmunet"]).splitlines()
    # 10 / 0.25 = 40 (CPU), 40 / 1 = 40 (wall); 36 / 0.72 = 50, 90 / 2 = 45
    assert table[2:] == ["| ultralight_vmunet | 256x256 | 8 | infer | numba | 40.00 (40.00) |",
                         "| ultralight_vmunet | 256x256 | 8 | train + AdamW | numba | 50.00 (45.00) |"]
    main = bench_model.markdown_table(rows).splitlines()
    assert main[3].startswith("| ultralight_vmunet | 256x256 | 8 | infer | numba | 1.000, 1.500 | 0.250, 0.375 | 8.00 |")


def test_an_unknown_model_is_refused_before_anything_runs(capsys, monkeypatch):
    for var in ("OMP_WAIT_POLICY", "THP_MEM_ALLOC_ENABLE"):  # main() sets them if unset: keep them ours
        monkeypatch.setenv(var, "unchanged")
    with pytest.raises(SystemExit) as exit_:
        bench_model.main(["--models", "vmunet", "no_such_net"])
    assert exit_.value.code == 2
    assert "--models: unknown model(s) no_such_net; available: " in capsys.readouterr().err

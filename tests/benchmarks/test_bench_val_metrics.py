"""benchmarks/bench_val_metrics.py end to end on a tiny volume: every variant's rows equal the
old code's (read from git), every table is printed, the JSON holds the rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_val_metrics  # noqa: E402


def _has_before_commit() -> bool:
    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "e1518e9:vmunet/evaluation/metrics.py"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_before_commit(), reason="needs the git history (commit e1518e9)")
def test_tiny_run_reports_identical_rows_and_all_tables(tmp_path, capsys):
    out = tmp_path / "rows.json"
    bench_val_metrics.main(["--slices", "3", "--size", "40", "--repeats", "1", "--threads", "1",
                            "--json", str(out)])
    text = capsys.readouterr().out
    assert text.startswith("case_metrics of a 40x40x3 case, 9 classes")
    for head in ("| case | variant | wall s min / median |", "| case | step (1 thread, one run) |",
                 "| input shape | feature transform |", "| case | variant | peak traced MiB |"):
        assert head in text
    rows = json.loads(out.read_text())
    whole = [r for r in rows if "identical" in r and "case" in r]
    assert len(whole) == 2 * 4 and all(r["identical"] for r in whole)
    transforms = [r for r in rows if "transform" in r]
    assert len(transforms) == 3 and all(r["identical"] for r in transforms)
    assert {r["step"] for r in rows if "step" in r} == {"dice", "surfaces", "transform", "distances", "percentile"}


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as exit_:
        bench_val_metrics.main(["--size", "8"])
    assert exit_.value.code == 2

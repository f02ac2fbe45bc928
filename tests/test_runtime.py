"""Process defaults of the CLI (vmunet.runtime): OpenMP waits and huge pages for large tensors."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.mark.parametrize("variable, default", [("OMP_WAIT_POLICY", "PASSIVE"),
                                               ("THP_MEM_ALLOC_ENABLE", "1")])
@pytest.mark.parametrize("given", [None, "users-choice"])
def test_the_cli_sets_its_process_defaults_unless_the_user_chose(variable, default, given,
                                                                 monkeypatch):
    from vmunet.cli import main as cli_main

    if given is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, given)
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert os.environ[variable] == (default if given is None else given)


_FAULTS = textwrap.dedent("""
    import resource
    import torch
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(64 << 20, dtype=torch.uint8); del x  # 64 MiB: above any glibc mmap threshold
    before = faults()
    for _ in range(4):
        x = torch.ones(64 << 20, dtype=torch.uint8); del x
    print(faults() - before)
""")


def _thp_mode() -> str:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    text = path.read_text() if path.exists() else ""
    return text[text.find("[") + 1:text.find("]")] if "[" in text else "unavailable"


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"),
                    reason=f"transparent huge pages: {_thp_mode()}")
def test_huge_pages_stop_large_tensors_from_faulting_in_page_by_page():
    """Four 64 MiB tensors, allocated and freed in turn: 4 x 16384 page faults with torch's
    default (each is mmap-ed, faulted in 4 KiB at a time and unmapped); with the CLI's setting most
    of each tensor comes in 2 MiB pages."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    faults = {}
    for value in ("0", "1"):
        run = subprocess.run([sys.executable, "-c", _FAULTS], env={**env, "THP_MEM_ALLOC_ENABLE": value},
                             capture_output=True, text=True, timeout=120, check=True)
        faults[value] = int(run.stdout.split()[-1])
    assert faults["0"] >= 4 * 16384 * 0.9, faults
    assert faults["1"] * 8 < faults["0"], faults

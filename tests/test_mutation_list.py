"""The mutation sweep's list stays runnable as the code moves on.

``scripts/mutation_sweep.py`` refuses to run when any mutant's anchor no longer occurs exactly once
in its file; six anchors rotted silently between two sweeps. Checking the list here (text only, no
mutant is run) makes an edit that breaks an anchor fail in ``make test`` instead of at the next sweep.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sweep():
    spec = importlib.util.spec_from_file_location("mutation_sweep", ROOT / "scripts" / "mutation_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_every_mutant_anchor_occurs_exactly_once_and_changes_the_line() -> None:
    sweep = _sweep()
    stale = []
    for i, m in enumerate(sweep.MUTANTS, 1):
        count = (ROOT / m.path).read_text().count(m.old)
        if count != 1 or m.old == m.new:
            stale.append(f"{i} {m.group} {m.path}: anchor occurs {count} times: {m.old!r}")
    assert not stale, "\n".join(stale)


def test_every_group_has_mutants_and_existing_test_files() -> None:
    sweep = _sweep()
    groups = {m.group for m in sweep.MUTANTS}
    assert groups == set(sweep.GROUPS)
    missing = [f"{group}: {item}" for group, items in sweep.GROUPS.items() for item in items
               if item.startswith("tests/") and not (ROOT / item.split("::")[0]).exists()]
    assert not missing, "\n".join(missing)

"""vmunet.ops._availability.module_imports: the one cached "does this optional backend import"
check behind numba_available, triton_available and cross_scan_fused.triton_available / numba_available."""

from __future__ import annotations

import logging
import sys

from vmunet.ops import cross_scan_fused, numba_available, triton_available
from vmunet.ops._availability import module_imports


def test_true_for_a_module_that_imports_false_with_the_reason_logged_otherwise(tmp_path, monkeypatch, caplog):
    (tmp_path / "vmunet_probe_broken.py").write_text("raise OSError('libfoo.so: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_imports("vmunet.ops.scan_ref") is True
    with caplog.at_level(logging.DEBUG, logger="vmunet.ops._availability"):
        assert module_imports("vmunet_probe_no_such_module") is False  # ImportError
        assert module_imports("vmunet_probe_broken") is False  # any other error while loading
    assert "vmunet_probe_broken unavailable: libfoo.so: cannot open shared object" in caplog.text


def test_cached_per_name(tmp_path, monkeypatch):
    """The answer of the first call stands for the process (resolve_backend asks on every scan
    call): a module that appears later is not looked for again."""
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_imports("vmunet_probe_late") is False
    (tmp_path / "vmunet_probe_late.py").write_text("")
    assert module_imports("vmunet_probe_late") is False
    assert "vmunet_probe_late" not in sys.modules


def test_public_checks_answer_for_their_own_modules():
    assert numba_available() is module_imports("vmunet.ops.scan_numba")
    assert triton_available() is module_imports("vmunet.ops.scan_triton")
    assert cross_scan_fused.triton_available() is module_imports("vmunet.ops.cross_scan_triton")
    assert cross_scan_fused.numba_available() is module_imports("vmunet.ops.cross_scan_numba")

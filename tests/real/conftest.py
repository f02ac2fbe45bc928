"""The real-data tier (``make test-real``): scans fetched by ``vmunet data fetch-examples``.

Every test here is marked ``real`` (deselected by ``make test``) and skips, with the reason shown,
when its source is not in the cache (``$VMUNET_DATA`` or ``~/.cache/vmunet/examples``). Nothing
here downloads anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmunet.data.examples import SOURCES, default_cache, source_ready
from vmunet.data.fileio import read_json


@pytest.fixture(scope="session")
def real_cache() -> Path:
    return default_cache()


def need(cache: Path, key: str) -> dict[str, Any]:
    """``source.json`` of a fetched source, or skip saying how to fetch it."""
    if not source_ready(cache, SOURCES[key]):
        pytest.skip(f"real data source {key!r} not in {cache} (run `vmunet data fetch-examples "
                    f"--source {key}`, or set VMUNET_DATA to the cache folder)")
    rec = read_json(cache / key / "source.json")
    rec["root"] = cache / key
    return rec


def _source_fixture(key: str):
    """A session fixture: the ``source.json`` record of source ``key`` (or a skip, see :func:`need`)."""
    @pytest.fixture(scope="session")
    def fixture(real_cache: Path) -> dict[str, Any]:
        return need(real_cache, key)

    return fixture


pyradiomics = _source_fixture("pyradiomics")
invesalius = _source_fixture("invesalius")
itk = _source_fixture("itk")
pydicom_files = _source_fixture("pydicom")

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


@pytest.fixture(scope="session")
def pyradiomics(real_cache: Path) -> dict[str, Any]:
    return need(real_cache, "pyradiomics")


@pytest.fixture(scope="session")
def invesalius(real_cache: Path) -> dict[str, Any]:
    return need(real_cache, "invesalius")


@pytest.fixture(scope="session")
def itk(real_cache: Path) -> dict[str, Any]:
    return need(real_cache, "itk")


@pytest.fixture(scope="session")
def pydicom_files(real_cache: Path) -> dict[str, Any]:
    return need(real_cache, "pydicom")

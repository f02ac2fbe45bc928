"""Suite-wide settings: nothing a test run does may write outside its temporary folders."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """The data modules' file-check records go to a temporary folder, not ~/.cache/vmunet."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VMUNET_CACHE_DIR", str(tmp_path_factory.mktemp("vmunet_cache")))
    yield
    mp.undo()

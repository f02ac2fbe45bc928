"""Session-wide test set-up that must happen before any test module is imported, and settings
that keep every test run inside its temporary folders."""

import os

import pytest
import torch

# Without a GPU, Triton kernels (the "triton" selective-scan backend) run on CPU tensors only under
# Triton's interpreter, which is chosen when a kernel is defined, i.e. when vmunet.ops.scan_triton
# is first imported: set it here, before any test module can import it. Nothing else in the suite
# uses Triton on CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """The data modules' file-check records go to a temporary folder, not ~/.cache/vmunet."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VMUNET_CACHE_DIR", str(tmp_path_factory.mktemp("vmunet_cache")))
    yield
    mp.undo()

"""Session-wide test set-up that must happen before any test module is imported."""

import os

import torch

# Without a GPU, Triton kernels (the "triton" selective-scan backend) run on CPU tensors only under
# Triton's interpreter, which is chosen when a kernel is defined, i.e. when vmunet.ops.scan_triton
# is first imported: set it here, before any test module can import it. Nothing else in the suite
# uses Triton on CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

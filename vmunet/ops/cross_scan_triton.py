"""Cross-scan and cross-merge of VMamba's four orders as Triton kernels (``impl="triton"`` of
:mod:`vmunet.ops.cross_scan_fused`).

One kernel moves the data both ways, after VMamba's ``triton_cross_scan_flex``
(classification/models/csm_triton.py): a program owns a tile of ``BLOCK_C`` channels x
``BLOCK_L`` row-major pixels of one batch element. With ``pixel l = h*W + w`` and its
column-major position ``t = w*H + h``, the four sequences are

    y[:, 0, :, l] = x[..., l]   y[:, 1, :, t] = x[..., l]
    y[:, 2, :, L-1-l] = x[..., l]   y[:, 3, :, L-1-t] = x[..., l]

The scan reads x once and writes the four; the merge reads the four and writes their sum, added
in the order h, v, h_flip, v_flip like :func:`vmunet.ops.cross_scan.cross_merge`, so the merge
rounds exactly as the default does. Each is the other's backward. Nothing is compiled at install
time; on CPU tensors the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set
before this module is imported), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from vmunet.ops.cross_scan_fused import autograd_pair

#: Tile of a program: channels x row-major pixels (powers of two, for tl.arange). First guesses,
#: not tuned on a GPU yet.
BLOCK_C = 16
BLOCK_L = 128
NUM_WARPS = 4


@triton.jit
def _cross_kernel(x_ptr, y_ptr, C, H, W, MERGE: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_L: tl.constexpr):
    pid_l = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    L = H * W
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (offs_c[:, None] < C) & (offs_l[None, :] < L)
    t = (offs_l % W) * H + offs_l // W  # column-major position of row-major pixel l
    row = offs_c[:, None].to(tl.int64) * L
    x_at = x_ptr + b * C * L + row + offs_l[None, :]
    y_at = y_ptr + b * 4 * C * L + row
    p0 = y_at + offs_l[None, :]
    p1 = y_at + C * L + t[None, :]
    p2 = y_at + 2 * C * L + (L - 1 - offs_l)[None, :]
    p3 = y_at + 3 * C * L + (L - 1 - t)[None, :]
    if MERGE:
        acc = tl.load(p0, mask=mask) + tl.load(p1, mask=mask)
        acc = acc + tl.load(p2, mask=mask)
        acc = acc + tl.load(p3, mask=mask)
        tl.store(x_at, acc, mask=mask)
    else:
        v = tl.load(x_at, mask=mask)
        tl.store(p0, v, mask=mask)
        tl.store(p1, v, mask=mask)
        tl.store(p2, v, mask=mask)
        tl.store(p3, v, mask=mask)


def interpreted() -> bool:
    """True when Triton runs these kernels on the CPU (``TRITON_INTERPRET=1`` at import time)."""
    return not isinstance(_cross_kernel, triton.runtime.JITFunction)


def runs_on(t: Tensor) -> bool:
    """Whether the kernels can take ``t``: CUDA tensors, or any tensor under the interpreter."""
    return t.is_cuda or interpreted()


def _blocks(C: int, L: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_L): the GPU tiles; under the interpreter one tile as large as the data
    allows (it pays a fixed cost per program, and numpy works on the tile at once)."""
    if interpreted():
        return min(triton.next_power_of_2(C), 256), min(triton.next_power_of_2(L), 4096)
    return BLOCK_C, BLOCK_L


def _launch(x: Tensor, y: Tensor, merge: bool) -> None:
    B, C, H, W = x.shape
    block_c, block_l = _blocks(C, H * W)
    grid = (triton.cdiv(H * W, block_l), triton.cdiv(C, block_c), B)
    # launch on the tensors' GPU, not the current one
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _cross_kernel[grid](x, y, C, H, W, MERGE=merge, BLOCK_C=block_c, BLOCK_L=block_l,
                            num_warps=NUM_WARPS)


def scan4_triton(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W) in the orders h, v, h_flip, v_flip."""
    x = x.contiguous()
    B, C, H, W = x.shape
    y = x.new_empty((B, 4, C, H * W))
    _launch(x, y, merge=False)
    return y


def merge4_triton(y: Tensor, H: int, W: int) -> Tensor:
    """(B, 4, C, H*W) -> (B, C, H*W), the four sequences summed in row-major order."""
    y = y.contiguous()
    B, _, C, _ = y.shape
    x = y.new_empty((B, C, H, W))
    _launch(x, y, merge=True)
    return x.view(B, C, H * W)


CrossScanTritonFn, CrossMergeTritonFn = autograd_pair(scan4_triton, merge4_triton, "CrossScanTritonFn",
                                                      "CrossMergeTritonFn")

"""Cross-scan and cross-merge of VMamba's four orders as compiled CPU kernels (``impl="numba"`` of
:mod:`vmunet.ops.cross_scan_fused`).

With ``pixel l = h*W + w`` and its column-major position ``t = w*H + h``, the four sequences are

    y[:, 0, :, l] = x[..., l]   y[:, 1, :, t] = x[..., l]
    y[:, 2, :, L-1-l] = x[..., l]   y[:, 3, :, L-1-t] = x[..., l]

(as in :mod:`vmunet.ops.cross_scan_triton`). The default PyTorch code moves every full-size map
several times (two transposed copies, two flipped copies, then the stack; the merge a transposed
copy, two flips and three additions, and SS2D then copies the sum to channels-last): measured on
the paper model at 224², cross-scan and merge were about 15 % of a CPU forward pass. Here one
parallel pass reads ``x`` once and writes the four sequences, and one pass reads the four and
writes their sum.

The merge adds in the order h, v, h_flip, v_flip, ``((y0 + y1) + y2) + y3`` per pixel, exactly as
:func:`vmunet.ops.cross_scan.cross_merge` does, and is compiled without fast-math (which would
allow reassociation), so its result is bit for bit the default's. It writes the sum channels-last:
the returned ``(B, C, H*W)`` tensor has strides ``(C*L, 1, C)``, so SS2D's
``.transpose(1, 2).reshape(B, H, W, C)`` is a view instead of a copy (the values do not depend on
the layout). Each pass is the other's backward (:func:`~vmunet.ops.cross_scan_fused.autograd_pair`).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from vmunet.ops.cross_scan_fused import autograd_pair
from vmunet.ops.scan_numba import match_torch_threads

#: Channels per work item of the merge: one 64-byte line of float32 in the channels-last output.
MERGE_TILE = 16


@njit(parallel=True, cache=True)
def _scan4_kernel(x, y, H, W):
    """x: (B, C, L) row-major maps; y: (B, 4, C, L) receives the four orders."""
    B, C, L = x.shape
    for p in prange(B * C):
        b = p // C
        c = p % C
        xr = x[b, c]
        y0 = y[b, 0, c]
        y1 = y[b, 1, c]
        y2 = y[b, 2, c]
        y3 = y[b, 3, c]
        for i in range(L):
            v = xr[i]
            y0[i] = v
            y2[L - 1 - i] = v
        for w in range(W):
            for h in range(H):
                v = xr[h * W + w]
                t = w * H + h
                y1[t] = v
                y3[L - 1 - t] = v


@njit(parallel=True, cache=True)
def _merge4_kernel(y, out, H, W, tile):
    """y: (B, 4, C, L); out: (B, L, C) (channels-last) receives ((y0 + y1) + y2) + y3 per pixel."""
    B, _, C, L = y.shape
    n_tiles = (C + tile - 1) // tile
    for p in prange(B * n_tiles):
        b = p // n_tiles
        c0 = (p % n_tiles) * tile
        nc = min(tile, C - c0)
        buf = np.empty((nc, L), dtype=y.dtype)
        for j in range(nc):
            c = c0 + j
            y0 = y[b, 0, c]
            y1 = y[b, 1, c]
            y2 = y[b, 2, c]
            y3 = y[b, 3, c]
            row = buf[j]
            for h in range(H):
                for w in range(W):
                    i = h * W + w
                    t = w * H + h
                    row[i] = ((y0[i] + y1[t]) + y2[L - 1 - i]) + y3[L - 1 - t]
        ob = out[b]
        for i in range(L):
            for j in range(nc):
                ob[i, c0 + j] = buf[j, i]


def _check(t: Tensor, name: str) -> None:
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"{name}: the numba cross-scan takes float32/float64 CPU tensors, got {t.dtype} on {t.device}")


def scan4_numba(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W) in the orders h, v, h_flip, v_flip."""
    _check(x, "scan4_numba")
    x = x.contiguous()
    B, C, H, W = x.shape
    y = x.new_empty((B, 4, C, H * W))
    match_torch_threads()
    _scan4_kernel(x.detach().view(B, C, H * W).numpy(), y.numpy(), H, W)
    return y


def merge4_numba(y: Tensor, H: int, W: int) -> Tensor:
    """(B, 4, C, H*W) -> (B, C, H*W), the four sequences summed in row-major pixel order; stored
    channels-last (strides ``(C*L, 1, C)``)."""
    _check(y, "merge4_numba")
    y = y.contiguous()
    B, _, C, L = y.shape
    out = y.new_empty((B, L, C))
    match_torch_threads()
    _merge4_kernel(y.detach().numpy(), out.numpy(), H, W, MERGE_TILE)
    return out.transpose(1, 2)


CrossScanNumbaFn, CrossMergeNumbaFn = autograd_pair(scan4_numba, merge4_numba, "CrossScanNumbaFn",
                                                    "CrossMergeNumbaFn")

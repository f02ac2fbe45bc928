"""The cyclic diagonal scan orders (``cyc_d``, ``cyc_ad`` and their flips) against RS-Mamba's
``CrossScan`` / ``CrossMerge`` executed (walking-shadow/Official_Remote_Sensing_Mamba
``semantic_segmentation_mamba/rs_mamba_ss.py``, commit ``aa6494e``): its eight sequences are
VMamba's four then diagonal, antidiagonal and their reverses, forward and backward.

Frozen: RS-Mamba's ``CrossScan`` of the 3 x 4 map ``arange(12)`` (pixel indices, row-major).
"""

from __future__ import annotations

import pytest
import torch
from original_code import load_definitions, rs_mamba_file

from vmunet.ops import cross_merge, cross_scan

RS_MAMBA_ORDER = ("h", "v", "h_flip", "v_flip", "cyc_d", "cyc_ad", "cyc_d_flip", "cyc_ad_flip")
FROZEN_SCAN_3X4 = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11],
    [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0],
    [0, 5, 10, 1, 6, 11, 2, 7, 8, 3, 4, 9], [0, 7, 10, 1, 4, 11, 2, 5, 8, 3, 6, 9],
    [9, 4, 3, 8, 7, 2, 11, 6, 1, 10, 5, 0], [9, 6, 3, 8, 5, 2, 11, 4, 1, 10, 7, 0],
]


def test_scan_orders_equal_the_frozen_rs_mamba_cross_scan():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert cross_scan(x, RS_MAMBA_ORDER)[0, :, 0].long().tolist() == FROZEN_SCAN_3X4


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)])
def test_scan_and_merge_equal_rs_mamba_forward_and_backward(shape):
    ns = load_definitions(rs_mamba_file(), ["antidiagonal_gather", "diagonal_gather", "diagonal_scatter",
                                            "antidiagonal_scatter", "CrossScan", "CrossMerge"], {"torch": torch})
    scan, merge = ns["CrossScan"], ns["CrossMerge"]
    assert scan.apply(torch.arange(12.0).reshape(1, 1, 3, 4))[0, :, 0].long().tolist() == FROZEN_SCAN_3X4
    g = torch.Generator().manual_seed(sum(shape))
    h, w = shape
    x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=g)
    up = torch.randn(2, 8, 3, h * w, dtype=torch.float64, generator=g)
    ys = torch.randn(2, 8, 3, h * w, dtype=torch.float64, generator=g)
    grads = []
    for fn in (lambda t: scan.apply(t), lambda t: cross_scan(t, RS_MAMBA_ORDER)):
        leaf = x.clone().requires_grad_(True)
        out = fn(leaf)
        (out * up).sum().backward()
        grads.append((out.detach(), leaf.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=0, atol=1e-12)  # RS-Mamba's hand-written backward
    merged = []
    for fn in (lambda t: merge.apply(t.view(2, 8, 3, h, w)), lambda t: cross_merge(t, h, w, RS_MAMBA_ORDER)):
        leaf = ys.clone().requires_grad_(True)
        out = fn(leaf)
        (out * x.flatten(2)).sum().backward()
        merged.append((out.detach(), leaf.grad.reshape(2, 8, 3, h * w)))
    torch.testing.assert_close(merged[1][0], merged[0][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(merged[1][1], merged[0][1], rtol=0, atol=1e-12)

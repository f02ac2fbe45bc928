"""Cross-scan: flatten a 2D feature map into K 1D sequences along named scan orders, and back.

VMamba scans a (H, W) map in four orders (row-major, column-major and both reversed) so that every
pixel sees context from every direction. Each order here is a named permutation of the H*W pixels;
``cross_merge`` applies each inverse permutation and sums, so ``cross_merge(cross_scan(x)) == K * x``.

The four VMamba orders use views (transpose / flip), the rest an index gather, so adding
an order never slows the default ones down.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from vmunet.ops.cross_scan_fused import cross_merge_fused, cross_scan_fused, resolve_impl

#: VMamba's four orders, in VMamba's order.
VMAMBA_DIRECTIONS: tuple[str, ...] = ("h", "v", "h_flip", "v_flip")

#: Every available order. ``d``: along diagonals (i + j constant, top-left first, i ascending
#: inside a diagonal); ``ad``: along anti-diagonals (i - j constant, top-right first).
DIRECTIONS: tuple[str, ...] = (
    "h",
    "v",
    "h_flip",
    "v_flip",
    "d",
    "d_flip",
    "ad",
    "ad_flip",
)


def check_directions(directions: Sequence[str]) -> tuple[str, ...]:
    """Validate a sequence of scan-order names and return it as a tuple."""
    if isinstance(directions, str):
        raise TypeError(
            f"directions must be a sequence of names such as ('h', 'v'), got the string {directions!r}"
        )
    dirs = tuple(directions)
    if not dirs:
        raise ValueError(f"directions must not be empty; choose from {DIRECTIONS}")
    unknown = [d for d in dirs if d not in DIRECTIONS]
    if unknown:
        raise ValueError(f"unknown scan direction(s) {unknown}; choose from {DIRECTIONS}")
    return dirs


@lru_cache(maxsize=256)
def _order_cpu(direction: str, H: int, W: int) -> torch.Tensor:
    """Permutation ``p`` of length H*W: sequence position k reads pixel ``p[k]`` (row-major id)."""
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    base = direction.removesuffix("_flip")
    if base == "h":
        key = ii * W + jj
    elif base == "v":
        key = jj * H + ii
    elif base == "d":
        key = (ii + jj) * H + ii
    elif base == "ad":
        key = (ii - jj + W - 1) * H + ii
    else:  # pragma: no cover - check_directions guards this
        raise ValueError(direction)
    perm = torch.argsort(key)
    if direction.endswith("_flip"):
        perm = perm.flip(0)
    return perm


def scan_order(direction: str, H: int, W: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixel permutation (long tensor of length H*W) that defines ``direction`` on an H×W map."""
    check_directions((direction,))
    return _order_cpu(direction, H, W).to(device)


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def _scan_one(x: torch.Tensor, direction: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W) in the given order."""
    B, C, H, W = x.shape
    if direction == "h":
        return x.reshape(B, C, H * W)
    if direction == "v":
        return x.transpose(2, 3).reshape(B, C, H * W)
    if direction == "h_flip":
        return x.reshape(B, C, H * W).flip(-1)
    if direction == "v_flip":
        return x.transpose(2, 3).reshape(B, C, H * W).flip(-1)
    return x.reshape(B, C, H * W).index_select(-1, scan_order(direction, H, W, x.device))


def _unscan_one(y: torch.Tensor, H: int, W: int, direction: str) -> torch.Tensor:
    """Inverse of ``_scan_one``: (B, C, H*W) in scan order -> (B, C, H*W) in row-major order."""
    B, C, L = y.shape
    if direction == "h":
        return y
    if direction == "v":
        return y.reshape(B, C, W, H).transpose(2, 3).reshape(B, C, L)
    if direction == "h_flip":
        return y.flip(-1)
    if direction == "v_flip":
        return y.flip(-1).reshape(B, C, W, H).transpose(2, 3).reshape(B, C, L)
    return y.index_select(-1, _inverse(scan_order(direction, H, W, y.device)))


def cross_scan(
    x: torch.Tensor, directions: Sequence[str] = VMAMBA_DIRECTIONS
) -> torch.Tensor:
    """Flatten ``x`` (B, C, H, W) along each scan order: returns (B, K, C, H*W)."""
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    dirs = check_directions(directions)
    impl = resolve_impl(x, dirs)  # VMUNET_CROSS_SCAN: fused kernels for the VMamba orders
    if impl != "torch":
        return cross_scan_fused(x, impl)
    return torch.stack([_scan_one(x, d) for d in dirs], dim=1)


def cross_merge(
    y: torch.Tensor, H: int, W: int, directions: Sequence[str] = VMAMBA_DIRECTIONS
) -> torch.Tensor:
    """Sum K scanned sequences (B, K, C, H*W) back into row-major image order: (B, C, H*W)."""
    dirs = check_directions(directions)
    if y.dim() != 4 or y.shape[1] != len(dirs) or y.shape[-1] != H * W:
        raise ValueError(
            f"cross_merge expects y of shape (B, {len(dirs)}, C, {H * W}) for {len(dirs)} "
            f"directions on a {H}x{W} map, got {tuple(y.shape)}"
        )
    impl = resolve_impl(y, dirs)  # VMUNET_CROSS_SCAN: fused kernels for the VMamba orders
    if impl != "torch":
        return cross_merge_fused(y, H, W, impl)
    out = _unscan_one(y[:, 0], H, W, dirs[0])
    for k in range(1, len(dirs)):
        out = out + _unscan_one(y[:, k], H, W, dirs[k])
    return out

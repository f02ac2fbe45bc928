"""Cross-scan: flatten a 2D feature map into K 1D sequences along named scan orders, and back.

VMamba scans a (H, W) map in four orders (row-major, column-major and both reversed) so that every
pixel sees context from every direction. Each order here is a named permutation of the H*W pixels;
``cross_merge`` applies each inverse permutation and sums, so ``cross_merge(cross_scan(x)) == K * x``.

The orders (every name also exists with ``_flip``: the same path walked backwards):

========================  =============================================================================
``h`` / ``v``             row-major / column-major (VMamba)
``d`` / ``ad``            along diagonals (i + j constant, top-left first, i ascending inside a
                          diagonal) / anti-diagonals (i - j constant, top-right first)
``snake_h`` / ``snake_v`` boustrophedon (PlainMamba's zigzag): rows alternately left-to-right and
                          right-to-left, starting at the top-left / the same over columns
``hilbert``               Jakub Červený's generalized Hilbert curve ("gilbert", BSD-2-Clause,
                          github.com/jakubcerveny/gilbert, ``generate2d``) for any H x W, not only
                          powers of two: starts at the top-left with its major axis along the
                          width (= the reference's ``gilbert2d(W, H)`` when W >= H); every step
                          goes to a 4-neighbour except at most one diagonal step, which some sizes
                          force. On square power-of-two maps it is the classical Hilbert curve.
``hilbert_t``             the same with the major axis along the height (= ``gilbert2d(W, H)``
                          when H > W; on a square map the transpose of ``hilbert``)
``cyc_d`` / ``cyc_ad``    RS-Mamba's (Zhao et al. 2024) diagonals that wrap around the columns:
                          sequence position c * H + i reads pixel (i, (i + c) mod W) / (i, (c - i)
                          mod W) -- exactly RS-Mamba's ``diagonal_gather`` / ``antidiagonal_gather``
``local<w>``              LocalMamba-style windows (w >= 2): the map is tiled by w x w windows from
                          the top-left (windows at the bottom / right edge are cut to what is left,
                          no padding), windows visited in raster order, raster order inside each
``local<w>_t``            the same on the transposed map (LocalMamba's ``column_first``): windows
                          column by column, column-major inside
========================  =============================================================================

Every order is built by one function (:func:`_order_cpu`, cached per (name, H, W)); the four
VMamba orders additionally have view-based (transpose / flip) fast paths, so adding an order never
slows the default ones down.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import lru_cache

import torch

from vmunet.ops.cross_scan_fused import cross_merge_fused, cross_scan_fused, resolve_impl

#: VMamba's four orders, in VMamba's order.
VMAMBA_DIRECTIONS: tuple[str, ...] = ("h", "v", "h_flip", "v_flip")

#: Orders without a parameter (each also as ``<name>_flip``); see the module docstring.
BASE_DIRECTIONS: tuple[str, ...] = (
    "h", "v", "d", "ad", "snake_h", "snake_v", "hilbert", "hilbert_t", "cyc_d", "cyc_ad",
)

#: Every available order without a parameter. VMamba's first, then the rest in pairs (x, x_flip).
DIRECTIONS: tuple[str, ...] = (*VMAMBA_DIRECTIONS, *(
    name for base in BASE_DIRECTIONS[2:] for name in (base, f"{base}_flip")
))

#: The window orders take their window size in the name: ``local4``, ``local8_t_flip``.
LOCAL_PATTERN = re.compile(r"local([0-9]+)(_t)?")
LOCAL_FORMAT = "local<w>[_t][_flip] (window size w >= 2)"


def _parse(direction: str) -> tuple[str, int, bool] | None:
    """(base name, window size or 0, flipped) of a valid order name; None for anything else."""
    if not isinstance(direction, str):
        return None
    base = direction.removesuffix("_flip")
    flipped = base != direction
    if base in BASE_DIRECTIONS:
        return base, 0, flipped
    m = LOCAL_PATTERN.fullmatch(base)
    if m and int(m.group(1)) >= 2 and not m.group(1).startswith("0"):  # one spelling per order
        return base, int(m.group(1)), flipped
    return None


def is_direction(name: object) -> bool:
    """True when ``name`` names a scan order (one of :data:`DIRECTIONS` or a ``local<w>`` order)."""
    return isinstance(name, str) and _parse(name) is not None


def check_directions(directions: Sequence[str]) -> tuple[str, ...]:
    """Validate a sequence of scan-order names and return it as a tuple."""
    if isinstance(directions, str):
        raise TypeError(
            f"directions must be a sequence of names such as ('h', 'v'), got the string {directions!r}"
        )
    dirs = tuple(directions)
    if not dirs:
        raise ValueError(f"directions must not be empty; choose from {DIRECTIONS} or {LOCAL_FORMAT}")
    unknown = [d for d in dirs if not is_direction(d)]
    if unknown:
        raise ValueError(f"unknown scan direction(s) {unknown}; choose from {DIRECTIONS} or {LOCAL_FORMAT}")
    return dirs


def _gilbert(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Generalized Hilbert curve (J. Červený's ``generate2d``, BSD-2-Clause): the (x, y) cells of
    the rectangle spanned from (x, y) by the major axis (ax, ay) and the minor axis (bx, by)."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day = (ax > 0) - (ax < 0), (ay > 0) - (ay < 0)  # unit major direction
    dbx, dby = (bx > 0) - (bx < 0), (by > 0) - (by < 0)  # unit minor direction
    if h == 1:  # a single row
        for _ in range(w):
            yield x, y
            x, y = x + dax, y + day
        return
    if w == 1:  # a single column
        for _ in range(h):
            yield x, y
            x, y = x + dbx, y + dby
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:  # long rectangle: split in two along the major axis
        if w2 % 2 and w > 2:  # prefer even steps
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _gilbert(x, y, ax2, ay2, bx, by)
        yield from _gilbert(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:  # one step up, one long horizontal, one step down
        if h2 % 2 and h > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _gilbert(x, y, bx2, by2, ax2, ay2)
        yield from _gilbert(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _gilbert(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                            -bx2, -by2, -(ax - ax2), -(ay - ay2))


def _hilbert_ids(H: int, W: int, major_axis_width: bool) -> list[int]:
    """Row-major pixel ids along the generalized Hilbert curve (x = column, y = row)."""
    cells = _gilbert(0, 0, W, 0, 0, H) if major_axis_width else _gilbert(0, 0, 0, H, W, 0)
    return [y * W + x for x, y in cells]


@lru_cache(maxsize=512)
def _order_cpu(direction: str, H: int, W: int) -> torch.Tensor:
    """Permutation ``p`` of length H*W: sequence position k reads pixel ``p[k]`` (row-major id).

    The one place every order is defined: a sort key over the pixels (i, j) for the orders that
    have one, the explicit walk for the Hilbert curve; ``_flip`` reverses the result.
    """
    parsed = _parse(direction)
    if parsed is None:  # pragma: no cover - check_directions guards this
        raise ValueError(direction)
    base, window, flipped = parsed
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    if base in ("hilbert", "hilbert_t"):
        perm = torch.tensor(_hilbert_ids(H, W, major_axis_width=base == "hilbert"), dtype=torch.long)
    else:
        if base == "h":
            key = ii * W + jj
        elif base == "v":
            key = jj * H + ii
        elif base == "d":
            key = (ii + jj) * H + ii
        elif base == "ad":
            key = (ii - jj + W - 1) * H + ii
        elif base == "snake_h":  # odd rows right to left
            key = ii * W + torch.where(ii % 2 == 1, W - 1 - jj, jj)
        elif base == "snake_v":  # odd columns bottom to top
            key = jj * H + torch.where(jj % 2 == 1, H - 1 - ii, ii)
        elif base == "cyc_d":  # pixel (i, j) sits on wrapped diagonal c = (j - i) mod W
            key = ((jj - ii) % W) * H + ii
        elif base == "cyc_ad":  # wrapped anti-diagonal c = (i + j) mod W
            key = ((ii + jj) % W) * H + ii
        elif window and not base.endswith("_t"):  # window (a, b) in raster order, raster inside
            a, b, nb = ii // window, jj // window, -(-W // window)
            key = ((a * nb + b) * window + ii % window) * window + jj % window
        elif window:  # transposed: windows column by column, column-major inside
            a, b, na = ii // window, jj // window, -(-H // window)
            key = ((b * na + a) * window + jj % window) * window + ii % window
        else:  # pragma: no cover - every base name is handled above
            raise ValueError(direction)
        perm = torch.argsort(key)
    if flipped:
        perm = perm.flip(0)
    return perm


@lru_cache(maxsize=512)
def _inverse_cpu(direction: str, H: int, W: int) -> torch.Tensor:
    """Inverse of ``_order_cpu``: the sequence position of each row-major pixel."""
    return _inverse(_order_cpu(direction, H, W))


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
    check_directions((direction,))
    return y.index_select(-1, _inverse_cpu(direction, H, W).to(y.device))


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

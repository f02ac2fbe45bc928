"""Cross-scan / cross-merge: every direction is the permutation its docstring describes, merge
applies the inverse, merge(scan(x)) == K*x, gradients flow, bad input gets clear errors."""

from __future__ import annotations

import pytest
import torch

from vmunet.ops import DIRECTIONS, VMAMBA_DIRECTIONS, cross_merge, cross_scan, scan_order
from vmunet.ops.cross_scan import is_direction

H, W = 3, 5  # non-square on purpose: row/column and diagonal orders differ visibly

#: every fixed order plus window orders of two sizes (3 does not divide 5: cut windows)
ALL_ORDERS = (*DIRECTIONS, "local2", "local2_flip", "local2_t", "local2_t_flip", "local3", "local3_t_flip")

#: The generalized Hilbert curve on 3x4 / 4x3 maps, as (row, col), from the reference
#: ``gilbert2d.py`` (github.com/jakubcerveny/gilbert @4f9b20e, printed (x, y) swapped to (row, col)):
#: gilbert2d(4, 3) and gilbert2d(3, 4).
GILBERT_4x3 = [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (1, 3), (1, 2), (0, 2), (0, 3)]
GILBERT_3x4 = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2), (2, 2), (3, 2), (3, 1), (2, 1), (2, 0), (3, 0)]


def expected_order(direction: str, H: int, W: int) -> list[tuple[int, int]]:
    """The (row, col) visited at each sequence position, written as plain loops."""
    base = direction.removesuffix("_flip")
    cells: list[tuple[int, int]] = []
    if base == "h":  # row-major, top-left to bottom-right
        for i in range(H):
            for j in range(W):
                cells.append((i, j))
    elif base == "v":  # column-major
        for j in range(W):
            for i in range(H):
                cells.append((i, j))
    elif base == "d":  # diagonals i + j = s from the top-left corner, i ascending inside
        for s in range(H + W - 1):
            for i in range(H):
                if 0 <= s - i < W:
                    cells.append((i, s - i))
    elif base == "ad":  # anti-diagonals i - j = s from the top-right corner, i ascending inside
        for s in range(-(W - 1), H):
            for i in range(H):
                if 0 <= i - s < W:
                    cells.append((i, i - s))
    elif base == "snake_h":  # rows, odd rows right to left
        for i in range(H):
            cols = range(W) if i % 2 == 0 else range(W - 1, -1, -1)
            cells += [(i, j) for j in cols]
    elif base == "snake_v":  # columns, odd columns bottom to top
        for j in range(W):
            rows = range(H) if j % 2 == 0 else range(H - 1, -1, -1)
            cells += [(i, j) for i in rows]
    elif base in ("cyc_d", "cyc_ad"):  # RS-Mamba: wrapped diagonal c, rows top to bottom
        for c in range(W):
            for i in range(H):
                cells.append((i, (i + c) % W if base == "cyc_d" else (c - i) % W))
    elif base.startswith("local"):  # w x w tiles, tiles in raster order, raster inside
        w = int(base[5:].removesuffix("_t"))
        if base.endswith("_t"):  # the same on the transposed map
            return [(i, j) for j, i in expected_order(direction.replace("_t", "", 1), W, H)]
        for a in range(0, H, w):
            for b in range(0, W, w):
                for i in range(a, min(a + w, H)):
                    for j in range(b, min(b + w, W)):
                        cells.append((i, j))
    elif base in ("hilbert", "hilbert_t"):
        return [(i, j) for i, j in scan_cells(direction, H, W)]  # checked by its own tests below
    if direction.endswith("_flip"):
        cells.reverse()
    return cells


def scan_cells(direction: str, H: int, W: int) -> list[tuple[int, int]]:
    return [(p // W, p % W) for p in scan_order(direction, H, W).tolist()]


def test_directions_listed():
    assert VMAMBA_DIRECTIONS == ("h", "v", "h_flip", "v_flip")
    bases = ("h", "v", "d", "ad", "snake_h", "snake_v", "hilbert", "hilbert_t", "cyc_d", "cyc_ad")
    assert set(DIRECTIONS) == {*bases, *(b + "_flip" for b in bases)}
    assert len(DIRECTIONS) == 20


@pytest.mark.parametrize("name,valid", [
    ("local2", True), ("local16_t_flip", True), ("local8_flip", True), ("local1", False), ("local0", False),
    ("local04", False), ("local", False), ("local4_x", False), ("local_t", False), ("hilbert_flip_flip", False),
    ("snake", False), ("H", False), (4, False),
])
def test_which_names_are_orders(name, valid):
    assert is_direction(name) is valid


def test_literal_orders_on_3x4():
    """Each new order on a 3x4 map, written out by hand (row-major pixel ids i * 4 + j)."""
    expected = {
        "snake_h": [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11],
        "snake_v": [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3],
        "snake_h_flip": [11, 10, 9, 8, 4, 5, 6, 7, 3, 2, 1, 0],
        "cyc_d": [0, 5, 10, 1, 6, 11, 2, 7, 8, 3, 4, 9],
        "cyc_ad": [0, 7, 10, 1, 4, 11, 2, 5, 8, 3, 6, 9],
        "local2": [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11],
        "local2_t": [0, 4, 1, 5, 8, 9, 2, 6, 3, 7, 10, 11],
        "local3": [0, 1, 2, 4, 5, 6, 8, 9, 10, 3, 7, 11],
        "hilbert": [i * 4 + j for i, j in GILBERT_4x3],
    }
    for name, order in expected.items():
        assert scan_order(name, 3, 4).tolist() == order, name


def test_hilbert_matches_the_reference_gilbert_curve():
    """hilbert = gilbert2d(W, H) when W >= H, hilbert_t = gilbert2d(W, H) when H > W (frozen
    reference outputs above); on a square map hilbert_t is hilbert transposed."""
    assert scan_cells("hilbert", 3, 4) == GILBERT_4x3
    assert scan_cells("hilbert_t", 4, 3) == GILBERT_3x4
    for n in (4, 5, 6):
        assert scan_cells("hilbert_t", n, n) == [(j, i) for i, j in scan_cells("hilbert", n, n)]


def classical_hilbert(n: int) -> list[tuple[int, int]]:
    """(row, col) of the classical Hilbert curve on an n x n map, n a power of two (the ``d2xy``
    of Wikipedia's "Hilbert curve" article, x = column, y = row)."""
    cells = []
    for d in range(n * n):
        x = y = 0
        t, s = d, 1
        while s < n:
            rx = 1 & (t // 2)
            ry = 1 & (t ^ rx)
            if ry == 0:
                if rx == 1:
                    x, y = s - 1 - x, s - 1 - y
                x, y = y, x
            x, y, t, s = x + s * rx, y + s * ry, t // 4, s * 2
        cells.append((y, x))
    return cells


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_hilbert_on_powers_of_two_is_the_classical_curve(n):
    assert scan_cells("hilbert", n, n) == classical_hilbert(n)


def test_hilbert_is_a_walk_on_every_size():
    """Any H x W: a permutation from the top-left corner, 4-neighbour steps, at most one diagonal."""
    for h in range(1, 13):
        for w in range(1, 13):
            for name in ("hilbert", "hilbert_t"):
                cells = scan_cells(name, h, w)
                assert sorted(cells) == [(i, j) for i in range(h) for j in range(w)]
                assert cells[0] == (0, 0)
                steps = [(abs(a[0] - b[0]), abs(a[1] - b[1])) for a, b in zip(cells[:-1], cells[1:], strict=True)]
                odd = [s for s in steps if s not in ((0, 1), (1, 0))]
                assert odd in ([], [(1, 1)]), (name, h, w, odd)


def rs_mamba_gather(x: torch.Tensor, anti: bool) -> torch.Tensor:
    """RS-Mamba's ``diagonal_gather`` / ``antidiagonal_gather`` (rs_mamba_ss.py), verbatim in torch."""
    B, C, H, W = x.shape
    shift = torch.arange(H).unsqueeze(1)
    index = ((torch.arange(W) - shift) if anti else (shift + torch.arange(W))) % W
    return x.gather(3, index.expand(B, C, -1, -1)).transpose(-1, -2).reshape(B, C, H * W)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)])
def test_cyclic_diagonals_are_rs_mambas(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    for name, anti in (("cyc_d", False), ("cyc_ad", True)):
        assert torch.equal(cross_scan(x, [name])[:, 0], rs_mamba_gather(x, anti))
        assert torch.equal(cross_scan(x, [name + "_flip"])[:, 0], rs_mamba_gather(x, anti).flip(-1))


@pytest.mark.parametrize("direction", ALL_ORDERS)
def test_each_direction_is_the_documented_permutation(direction):
    cells = expected_order(direction, H, W)
    assert sorted(cells) == [(i, j) for i in range(H) for j in range(W)]  # a permutation
    perm = scan_order(direction, H, W)
    assert perm.tolist() == [i * W + j for i, j in cells]
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    seq = cross_scan(x, [direction])
    assert seq.shape == (2, 1, 3, H * W)
    for k, (i, j) in enumerate(cells):
        assert torch.equal(seq[:, 0, :, k], x[:, :, i, j])


@pytest.mark.parametrize("direction", ALL_ORDERS)
def test_merge_applies_the_inverse_permutation(direction):
    y = torch.randn(2, 1, 3, H * W, dtype=torch.float64)
    expected = torch.zeros(2, 3, H * W, dtype=torch.float64)
    for k, (i, j) in enumerate(expected_order(direction, H, W)):
        expected[:, :, i * W + j] = y[:, 0, :, k]
    assert torch.equal(cross_merge(y, H, W, [direction]), expected)


@pytest.mark.parametrize(
    "directions",
    [VMAMBA_DIRECTIONS, ALL_ORDERS, ("d",), ("ad_flip", "h"), ("v", "v"), ("local3_t", "hilbert_flip")],
    ids=["vmamba", "all", "d", "ad_flip+h", "v twice", "local3_t+hilbert_flip"],
)
@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (1, 7), (6, 1)])
def test_merge_of_scan_is_K_times_x(directions, shape):
    x = torch.randn(2, 4, *shape, dtype=torch.float64)
    seq = cross_scan(x, directions)
    assert seq.shape == (2, len(directions), 4, shape[0] * shape[1])
    merged = cross_merge(seq, *shape, directions)
    torch.testing.assert_close(merged, len(directions) * x.reshape(2, 4, -1), rtol=0, atol=1e-12)


def test_gradients_flow_and_are_adjoint():
    """<scan(x), w> == <x, merge(w)>: the gradient of scan is merge and vice versa."""
    x = torch.randn(2, 3, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, len(ALL_ORDERS), 3, H * W, dtype=torch.float64)
    (cross_scan(x, ALL_ORDERS) * w).sum().backward()
    torch.testing.assert_close(x.grad.reshape(2, 3, -1), cross_merge(w, H, W, ALL_ORDERS), rtol=0, atol=1e-12)

    y = w.clone().requires_grad_()
    v = torch.randn(2, 3, H * W, dtype=torch.float64)
    (cross_merge(y, H, W, ALL_ORDERS) * v).sum().backward()
    torch.testing.assert_close(y.grad, cross_scan(v.reshape(2, 3, H, W), ALL_ORDERS), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_a_plain_gather_reference(dtype):
    """Forward and backward of scan+merge against an autograd-free loop over the expected cells."""
    x = torch.randn(1, 2, H, W, dtype=dtype, requires_grad=True)
    w = torch.randn(1, len(ALL_ORDERS), 2, H * W, dtype=dtype)
    seq = cross_scan(x, ALL_ORDERS)
    (seq * w).sum().backward()
    grad = torch.zeros(1, 2, H, W, dtype=dtype)
    for k, name in enumerate(ALL_ORDERS):
        for pos, (i, j) in enumerate(expected_order(name, H, W)):
            assert torch.equal(seq[0, k, :, pos], x[0, :, i, j].detach())
            grad[0, :, i, j] += w[0, k, :, pos]
    torch.testing.assert_close(x.grad, grad, rtol=1e-6, atol=1e-6)


def test_default_directions_are_vmamba():
    x = torch.randn(1, 2, H, W)
    assert torch.equal(cross_scan(x), cross_scan(x, VMAMBA_DIRECTIONS))


@pytest.mark.parametrize(
    "directions,exc,message",
    [
        (("h", "diag"), ValueError, r"unknown scan direction\(s\) \['diag'\]; choose from \('h', 'v'"),
        ((), ValueError, r"directions must not be empty"),
        ("h", TypeError, r"directions must be a sequence of names such as \('h', 'v'\), got the string 'h'"),
    ],
)
def test_bad_directions(directions, exc, message):
    x = torch.randn(1, 2, H, W)
    with pytest.raises(exc, match=message):
        cross_scan(x, directions)
    with pytest.raises(exc, match=message):
        cross_merge(torch.randn(1, 1, 2, H * W), H, W, directions)
    with pytest.raises((ValueError, TypeError)):
        scan_order("diag", H, W)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"cross_scan expects x of shape \(B, C, H, W\), got \(2, 3, 15\)"):
        cross_scan(torch.randn(2, 3, 15))
    with pytest.raises(ValueError, match=r"cross_merge expects y of shape \(B, 4, C, 15\) for 4 directions on a 3x5 map, got \(1, 2, 3, 15\)"):
        cross_merge(torch.randn(1, 2, 3, 15), H, W)
    with pytest.raises(ValueError, match=r"got \(1, 4, 3, 16\)"):
        cross_merge(torch.randn(1, 4, 3, 16), H, W)

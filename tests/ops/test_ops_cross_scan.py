"""Cross-scan / cross-merge: every direction is the permutation its docstring describes, merge
applies the inverse, merge(scan(x)) == K*x, gradients flow, bad input gets clear errors."""

from __future__ import annotations

import pytest
import torch

from vmunet.ops import DIRECTIONS, VMAMBA_DIRECTIONS, cross_merge, cross_scan, scan_order

H, W = 3, 5  # non-square on purpose: row/column and diagonal orders differ visibly


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
    if direction.endswith("_flip"):
        cells.reverse()
    return cells


def test_directions_listed():
    assert VMAMBA_DIRECTIONS == ("h", "v", "h_flip", "v_flip")
    assert set(DIRECTIONS) == {"h", "v", "h_flip", "v_flip", "d", "d_flip", "ad", "ad_flip"}


@pytest.mark.parametrize("direction", DIRECTIONS)
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


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_merge_applies_the_inverse_permutation(direction):
    y = torch.randn(2, 1, 3, H * W, dtype=torch.float64)
    expected = torch.zeros(2, 3, H * W, dtype=torch.float64)
    for k, (i, j) in enumerate(expected_order(direction, H, W)):
        expected[:, :, i * W + j] = y[:, 0, :, k]
    assert torch.equal(cross_merge(y, H, W, [direction]), expected)


@pytest.mark.parametrize(
    "directions",
    [VMAMBA_DIRECTIONS, DIRECTIONS, ("d",), ("ad_flip", "h"), ("v", "v")],
    ids=["vmamba", "all", "d", "ad_flip+h", "v twice"],
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
    w = torch.randn(2, len(DIRECTIONS), 3, H * W, dtype=torch.float64)
    (cross_scan(x, DIRECTIONS) * w).sum().backward()
    torch.testing.assert_close(x.grad.reshape(2, 3, -1), cross_merge(w, H, W, DIRECTIONS), rtol=0, atol=1e-12)

    y = w.clone().requires_grad_()
    v = torch.randn(2, 3, H * W, dtype=torch.float64)
    (cross_merge(y, H, W, DIRECTIONS) * v).sum().backward()
    torch.testing.assert_close(y.grad, cross_scan(v.reshape(2, 3, H, W), DIRECTIONS), rtol=0, atol=1e-12)


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

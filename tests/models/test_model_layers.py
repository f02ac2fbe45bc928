"""Layer-level checks: patch ops against explicit index formulas / einops, SS2D shapes, errors."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from vmunet.layers import SS2D, FinalPatchExpand, PatchEmbed, PatchExpand, PatchMerging, VSSBlock


def test_patch_merging_neighbour_order():
    m = PatchMerging(3)
    with torch.no_grad():
        m.norm.weight.fill_(1), m.norm.bias.zero_()
    x = torch.randn(2, 4, 6, 3)
    i, j = 1, 2  # output pixel (1, 2) reads rows 2-3, columns 4-5
    expected = torch.cat([x[:, 2 * i, 2 * j], x[:, 2 * i + 1, 2 * j], x[:, 2 * i, 2 * j + 1],
                          x[:, 2 * i + 1, 2 * j + 1]], dim=-1)
    expected = torch.nn.functional.layer_norm(expected, (12,)) @ m.reduction.weight.T
    out = m(x)
    assert out.shape == (2, 2, 3, 6)
    assert torch.allclose(out[:, i, j], expected, atol=1e-6)
    with pytest.raises(ValueError, match="PatchMerging needs an even feature map, got 3x6"):
        m(torch.randn(1, 3, 6, 3))


@pytest.mark.parametrize("cls,args,scale", [(PatchExpand, (8, 4), 2), (FinalPatchExpand, (8,), 4)])
def test_patch_expand_is_the_einops_rearrange(cls, args, scale):
    m = cls(*args)
    x = torch.randn(2, 3, 5, 8)
    y = m.expand(x)
    c = y.shape[-1] // scale**2
    expected = rearrange(y, "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=scale, p2=scale, c=c)
    expected = torch.nn.functional.layer_norm(expected, (c,), m.norm.weight, m.norm.bias)
    assert torch.allclose(m(x), expected, atol=1e-6)
    assert m(x).shape == (2, 3 * scale, 5 * scale, c)


def test_final_expand_needs_divisible_dim():
    with pytest.raises(ValueError, match="FinalPatchExpand: dim=10 must be divisible by scale=4"):
        FinalPatchExpand(10)


def test_patch_embed_is_channels_last():
    m = PatchEmbed(1, 8, 4)
    x = torch.randn(2, 1, 16, 12)
    y = m(x)
    conv = torch.nn.functional.conv2d(x, m.proj.weight, m.proj.bias, stride=4).permute(0, 2, 3, 1)
    assert torch.allclose(y, torch.nn.functional.layer_norm(conv, (8,)), atol=1e-6)


def test_ss2d_parameter_layout_and_shapes():
    m = SS2D(40, d_state=8, directions=("h", "v", "d"))
    di, r, K = 80, 3, 3  # dt_rank = ceil(40 / 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["x_proj_weight"] == (K, r + 16, di)
    assert shapes["dt_projs_weight"] == (K, di, r) and shapes["dt_projs_bias"] == (K, di)
    assert shapes["A_logs"] == (K * di, 8) and shapes["Ds"] == (K * di,)
    assert shapes["in_proj.weight"] == (2 * di, 40) and shapes["conv2d.weight"] == (di, 1, 3, 3)
    assert m(torch.randn(2, 5, 7, 40)).shape == (2, 5, 7, 40)
    # VMamba's S4D-real initialisation: A = -(1, 2, ..., N) for every channel, D = 1
    torch.testing.assert_close(m.A_logs.exp(), torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8]]).expand(K * di, 8))
    assert torch.equal(m.Ds, torch.ones(K * di))


def test_ss2d_calls_the_scan_once_with_all_directions_stacked():
    m = SS2D(16, d_state=4, scan_backend="torch")
    calls = []
    original = m.selective_scan

    def spy(u, delta, A, B, C, D, delta_bias):
        calls.append((u.shape, delta.shape, A.shape, B.shape, C.shape, D.shape, delta_bias.shape))
        return original(u, delta, A, B, C, D, delta_bias)

    m.selective_scan = spy
    m(torch.randn(2, 4, 6, 16))
    assert calls == [((2, 128, 24), (2, 128, 24), (128, 4), (2, 4, 4, 24), (2, 4, 4, 24), (128,), (128,))]


def test_vss_block_is_residual_and_dt_init_option():
    block = VSSBlock(16, d_state=4)
    with torch.no_grad():
        block.self_attention.out_proj.weight.zero_()
    x = torch.randn(1, 4, 4, 16)
    assert torch.equal(block(x), x)
    with pytest.raises(ValueError, match="dt_init must be 'random' or 'constant', got 'zeros'"):
        SS2D(16, dt_init="zeros")
    const = SS2D(32, dt_init="constant")
    assert torch.all(const.dt_projs_weight == 2**-0.5)

"""Weight loading: the three checkpoint formats with the original key names and shapes, and
equality of our forward pass with an independent re-implementation of the original VM-UNet
forward that reads the ORIGINAL flat tensors directly."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from vmunet.layers import SS2D
from vmunet.models import create_model
from vmunet.models.checkpoint import model_from_checkpoint
from vmunet.models.weights import load_weights

PAPER = dict(depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1], dims=[96, 192, 384, 768])


# ------------------------------------------------------------------------------------------------
# the original key list, written from the original VSSM's structure (not from our model)
# ------------------------------------------------------------------------------------------------
def ss2d_shapes(d: int, N: int = 16, K: int = 4) -> dict[str, tuple[int, ...]]:
    di, r = 2 * d, math.ceil(d / 16)
    return {
        "ln_1.weight": (d,), "ln_1.bias": (d,),
        "self_attention.x_proj_weight": (K, r + 2 * N, di),
        "self_attention.dt_projs_weight": (K, di, r),
        "self_attention.dt_projs_bias": (K, di),
        "self_attention.A_logs": (K * di, N),
        "self_attention.Ds": (K * di,),
        "self_attention.in_proj.weight": (2 * di, d),
        "self_attention.conv2d.weight": (di, 1, 3, 3),
        "self_attention.conv2d.bias": (di,),
        "self_attention.out_norm.weight": (di,), "self_attention.out_norm.bias": (di,),
        "self_attention.out_proj.weight": (d, di),
    }


def original_vmunet_shapes(depths, depths_decoder, dims, num_classes=1, in_chans=3, N=16):
    s = {"patch_embed.proj.weight": (dims[0], in_chans, 4, 4), "patch_embed.proj.bias": (dims[0],),
         "patch_embed.norm.weight": (dims[0],), "patch_embed.norm.bias": (dims[0],)}
    for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
        for j in range(depth):
            s.update({f"layers.{i}.blocks.{j}.{k}": v for k, v in ss2d_shapes(d, N).items()})
        if i < len(dims) - 1:
            s[f"layers.{i}.downsample.norm.weight"] = (4 * d,)
            s[f"layers.{i}.downsample.norm.bias"] = (4 * d,)
            s[f"layers.{i}.downsample.reduction.weight"] = (2 * d, 4 * d)
    for i, (depth, d) in enumerate(zip(depths_decoder, dims[::-1], strict=True)):
        for j in range(depth):
            s.update({f"layers_up.{i}.blocks.{j}.{k}": v for k, v in ss2d_shapes(d, N).items()})
        if i > 0:
            s[f"layers_up.{i}.upsample.expand.weight"] = (4 * d, 2 * d)
            s[f"layers_up.{i}.upsample.norm.weight"] = (d,)
            s[f"layers_up.{i}.upsample.norm.bias"] = (d,)
    s["final_up.expand.weight"] = (4 * dims[0], dims[0])
    s["final_up.norm.weight"] = (dims[0] // 4,)
    s["final_up.norm.bias"] = (dims[0] // 4,)
    s["final_conv.weight"] = (num_classes, dims[0] // 4, 1, 1)
    s["final_conv.bias"] = (num_classes,)
    return s


def vmamba_v0_shapes(depths, dims, d_state=16, in_chans=3, classes: int | None = 1000):
    """VMamba v0 classifier (VM-UNet's vmamba.py VSSM): encoder keys + ImageNet norm/head (none
    with ``classes=None``)."""
    shapes = {k: v for k, v in original_vmunet_shapes(depths, [0] * len(dims), dims, in_chans=in_chans,
                                                      N=d_state).items()
              if k.startswith(("patch_embed", "layers."))}
    if classes is not None:
        shapes.update({"norm.weight": (dims[-1],), "norm.bias": (dims[-1],),
                       "head.weight": (classes, dims[-1]), "head.bias": (classes,)})
    return shapes


def assert_matches_original(model, x: torch.Tensor, ref: torch.Tensor, shape: tuple[int, ...], tol: float):
    """``model(x)`` in eval mode has ``shape`` and equals ``ref``, the plain re-implementation of the
    original forward, to ``tol`` relative to ``ref``'s largest logit."""
    with torch.no_grad():
        ours = model.eval()(x)
    assert ours.shape == ref.shape == shape
    assert torch.allclose(ours, ref, rtol=tol, atol=tol * ref.abs().max().item())


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.2
                   ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        t = torch.randn(shape, generator=g) * scale
        if "norm" in k and k.endswith("weight") or k.endswith("ln_1.weight") or k.endswith(".Ds"):
            t = 1 + t
        out[k] = t
    return out


def test_our_keys_and_shapes_are_the_original_ones():
    shapes = original_vmunet_shapes(**PAPER)
    assert len(shapes) == 222
    model = create_model("vmunet", num_classes=1, in_chans=3)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def _assert_all_equal(model, expected: dict[str, torch.Tensor]):
    sd = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(sd[k], v), k


def test_original_vmunet_checkpoint_loads_every_tensor(tmp_path, caplog):
    tensors = random_tensors(original_vmunet_shapes(**PAPER, num_classes=9))
    path = tmp_path / "best.pth"
    torch.save({"vmunet." + k: v for k, v in tensors.items()}, path)
    with caplog.at_level(logging.INFO, logger="vmunet.models.weights"):
        model = create_model("vmunet", num_classes=9, in_chans=3, weights=path)
    _assert_all_equal(model, tensors)
    assert "vmunet_original weights ((top level)): loaded 222 tensors" in caplog.text


def test_original_training_wrapper_and_in_chans_1(tmp_path):
    tensors = random_tensors(original_vmunet_shapes(**PAPER, num_classes=1))
    ckpt = {"epoch": 3, "model_state_dict": {"vmunet." + k: v for k, v in tensors.items()}}
    model = create_model("vmunet", num_classes=1, in_chans=1)
    report = load_weights(model, ckpt)
    w = tensors.pop("patch_embed.proj.weight")
    _assert_all_equal(model, tensors)
    assert torch.allclose(model.patch_embed.proj.weight, w.sum(1, keepdim=True))
    assert report.adapted == [("patch_embed.proj.weight", "summed 3 input channels into 1")]
    assert report.missing == [] and len(report.loaded) == 222


def test_gray_input_with_summed_kernel_equals_rgb_repeat():
    rgb = create_model("vmunet_test", num_classes=2, in_chans=3, scan_backend="torch").eval()
    gray = create_model("vmunet_test", num_classes=2, in_chans=1, scan_backend="torch").eval()
    load_weights(gray, rgb.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4)


def test_lightning_checkpoint_and_model_from_checkpoint(tmp_path):
    src = create_model("vmunet_test", num_classes=4, in_chans=1, d_state=2)
    ckpt = {
        "state_dict": {**{"model." + k: v for k, v in src.state_dict().items()},
                       "criterion.class_weights": torch.ones(4)},
        "hyper_parameters": {"lr": 1e-3},
        "vmunet": {"model_name": "vmunet_test", "model_kwargs": dict(src.model_kwargs),
                   "preprocessing": {}, "version": "0.1.0"},
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    model = create_model("vmunet_test", num_classes=4, in_chans=1, d_state=2)
    report = load_weights(model, path)
    assert report.layout == "vmunet"
    assert report.skipped == [("criterion.class_weights",
                               "not under the LightningModule's 'model.' prefix")]
    _assert_all_equal(model, src.state_dict())
    rebuilt, meta = model_from_checkpoint(path, scan_backend="ref")
    _assert_all_equal(rebuilt, src.state_dict())
    assert meta["model_name"] == "vmunet_test" and not rebuilt.training


def test_vmamba_checkpoint_initialises_encoder_and_mirrored_decoder():
    # VMamba-S v0 (vmamba_small_e238_ema.pth): depths [2,2,27,2], plus norm.* and head.*
    tensors = random_tensors(vmamba_v0_shapes([2, 2, 27, 2], [96, 192, 384, 768]))
    model = create_model("vmunet", num_classes=9, in_chans=1)
    report = load_weights(model, {"model": tensors})
    assert report.layout == "vmamba_v0"
    sd = model.state_dict()
    n_loaded = 0
    for k, v in tensors.items():
        if k == "patch_embed.proj.weight":
            assert torch.allclose(sd[k], v.sum(1, keepdim=True))
            n_loaded += 1
            continue
        if k in sd:
            assert torch.equal(sd[k], v), k
            n_loaded += 1
        parts = k.split(".")
        if parts[0] == "layers" and parts[2] == "blocks":
            dec = f"layers_up.{3 - int(parts[1])}." + ".".join(parts[2:])
            if dec in sd:
                assert torch.equal(sd[dec], v), dec
                n_loaded += 1
    # paper model: 4 + 8 encoder blocks*13 + 9 downsample + 7 decoder blocks*13
    assert n_loaded == len(report.loaded) == 4 + 8 * 13 + 9 + 7 * 13
    skipped = dict(report.skipped)
    assert skipped["head.weight"] == "ImageNet classifier part (norm/head), unused by VM-UNet"
    assert skipped["layers.2.blocks.26.ln_1.weight"] == "block beyond the model's depth"
    assert set(report.missing) == {k for k in sd if k.startswith(("final_", "layers_up.1.upsample",
                                                                  "layers_up.2.upsample",
                                                                  "layers_up.3.upsample"))}


def test_shape_mismatch_is_an_error_unless_not_strict():
    tensors = random_tensors(original_vmunet_shapes(**PAPER, num_classes=1))
    ckpt = {"vmunet." + k: v for k, v in tensors.items()}
    model = create_model("vmunet", num_classes=9)
    with pytest.raises(ValueError, match=r"final_conv.weight -> final_conv.weight: shape \(1, 24, 1, 1\) "
                                         r"in checkpoint vs \(9, 24, 1, 1\) in model"):
        load_weights(model, ckpt)
    report = load_weights(model, ckpt, strict=False)
    assert sorted(k for k, _ in report.skipped) == ["final_conv.bias", "final_conv.weight"]
    assert len(report.loaded) == 220


def test_missing_and_unexpected_keys_are_errors_for_complete_formats():
    src = create_model("vmunet_test", num_classes=2).state_dict()
    src.pop("final_conv.bias")
    src["layers.0.blocks.5.ln_1.weight"] = torch.ones(16)
    model = create_model("vmunet_test", num_classes=2)
    with pytest.raises(ValueError, match="unexpected key layers.0.blocks.5.ln_1.weight; missing key final_conv.bias"):
        load_weights(model, src)


def test_unrecognised_checkpoint_and_missing_file(tmp_path):
    model = create_model("vmunet_test", num_classes=2)
    with pytest.raises(ValueError, match=r"unrecognised checkpoint.*\['epoch', 'optimizer'\]"):
        load_weights(model, {"epoch": 1, "optimizer": {}})
    with pytest.raises(ValueError, match="weights file .*nope.pth does not exist"):
        load_weights(model, tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------------
# independent re-implementation of the original forward, on the original flat tensors
# ------------------------------------------------------------------------------------------------
def orig_selective_scan(u, delta, A, Bs, Cs, D, delta_bias):
    """mamba-ssm's selective_scan_fn as forward_corev0 calls it (z=None, delta_softplus=True),
    written out as a plain loop here so that no vmunet scan code is involved.
    u, delta: (B, K*d, L); A: (K*d, N); Bs, Cs: (B, K, N, L), direction k for channels k*d..(k+1)*d."""
    delta = F.softplus(delta + delta_bias[:, None])
    Bb, KD, L = u.shape
    K = Bs.shape[1]
    group = torch.arange(KD) // (KD // K)
    h = u.new_zeros(Bb, KD, A.shape[1])
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * Bs[..., t][:, group] * u[:, :, t, None]
        ys.append((h * Cs[..., t][:, group]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1)


def orig_ss2d(p: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Original SS2D.forward + forward_corev0 (VM-UNet models/vmunet/vmamba.py), x (B, H, W, C)."""
    g = lambda name: p[prefix + name]  # noqa: E731
    B, H, W, C = x.shape
    L, K = H * W, 4
    N = g("A_logs").shape[1]
    R = g("dt_projs_weight").shape[2]
    xz = x @ g("in_proj.weight").T
    x, z = xz.chunk(2, dim=-1)
    x = x.permute(0, 3, 1, 2).contiguous()
    x = F.silu(F.conv2d(x, g("conv2d.weight"), g("conv2d.bias"), padding=1, groups=x.shape[1]))
    x_hwwh = torch.stack([x.view(B, -1, L), torch.transpose(x, 2, 3).contiguous().view(B, -1, L)],
                         dim=1).view(B, 2, -1, L)
    xs = torch.cat([x_hwwh, torch.flip(x_hwwh, dims=[-1])], dim=1)
    x_dbl = torch.einsum("b k d l, k c d -> b k c l", xs.view(B, K, -1, L), g("x_proj_weight"))
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("b k r l, k d r -> b k d l", dts.view(B, K, -1, L), g("dt_projs_weight"))
    # the original casts with .float(); float64 stays float64 here so the full-model test can
    # compare in double precision
    f = torch.float64 if x.dtype == torch.float64 else torch.float32
    out_y = orig_selective_scan(
        xs.to(f).view(B, -1, L), dts.contiguous().to(f).view(B, -1, L),
        -torch.exp(g("A_logs").to(f)).view(-1, N), Bs.to(f).view(B, K, -1, L),
        Cs.to(f).view(B, K, -1, L), g("Ds").to(f).view(-1), g("dt_projs_bias").to(f).view(-1),
    ).view(B, K, -1, L)
    inv_y = torch.flip(out_y[:, 2:4], dims=[-1]).view(B, 2, -1, L)
    wh_y = torch.transpose(out_y[:, 1].view(B, -1, W, H), 2, 3).contiguous().view(B, -1, L)
    invwh_y = torch.transpose(inv_y[:, 1].view(B, -1, W, H), 2, 3).contiguous().view(B, -1, L)
    y = out_y[:, 0] + inv_y[:, 0] + wh_y + invwh_y
    y = torch.transpose(y, 1, 2).contiguous().view(B, H, W, -1)
    y = F.layer_norm(y, y.shape[-1:], g("out_norm.weight"), g("out_norm.bias"))
    y = y * F.silu(z)
    return y @ g("out_proj.weight").T


def _ln(p, prefix, x):
    return F.layer_norm(x, x.shape[-1:], p[prefix + "weight"], p[prefix + "bias"])


def orig_block(p: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """The original VSSBlock: x + SS2D(ln_1(x)) (channels last)."""
    return x + orig_ss2d(p, prefix + "self_attention.", _ln(p, prefix + "ln_1.", x))


def orig_expand(p: dict, prefix: str, x: torch.Tensor, scale: int) -> torch.Tensor:
    """The original PatchExpand2D / Final_PatchExpand2D: Linear, then
    rearrange 'b h w (p1 p2 c) -> b (h p1) (w p2) c', then LayerNorm."""
    x = x @ p[prefix + "expand.weight"].T
    B, H, W, C = x.shape
    c = C // scale**2
    x = x.view(B, H, W, scale, scale, c).permute(0, 1, 3, 2, 4, 5).reshape(B, H * scale, W * scale, c)
    return _ln(p, prefix + "norm.", x)


def orig_encoder(p: dict, x: torch.Tensor, depths) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The original VSSM.forward_features (patch embed, stages with PatchMerging2D between them):
    the deepest features and the input of every stage (the skips)."""
    x = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=4).permute(0, 2, 3, 1)
    x = _ln(p, "patch_embed.norm.", x)
    skips = []
    for i, depth in enumerate(depths):
        skips.append(x)
        for j in range(depth):
            x = orig_block(p, f"layers.{i}.blocks.{j}.", x)
        if i < len(depths) - 1:
            x0, x1, x2, x3 = x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]
            x = torch.cat([x0, x1, x2, x3], -1)
            x = _ln(p, f"layers.{i}.downsample.norm.", x) @ p[f"layers.{i}.downsample.reduction.weight"].T
    return x, skips


def orig_vssm(p: dict, x: torch.Tensor, depths, depths_decoder) -> torch.Tensor:
    """Original VSSM.forward (sigmoid is in VMUNet.forward, not here), p keyed 'vmunet.*'."""
    p = {k.removeprefix("vmunet."): v for k, v in p.items()}
    x, skips = orig_encoder(p, x, depths)
    for i, depth in enumerate(depths_decoder):
        if i > 0:
            x = orig_expand(p, f"layers_up.{i}.upsample.", x + skips[-i], 2)
        for j in range(depth):
            x = orig_block(p, f"layers_up.{i}.blocks.{j}.", x)
    x = orig_expand(p, "final_up.", x, 4).permute(0, 3, 1, 2)
    return F.conv2d(x, p["final_conv.weight"], p["final_conv.bias"])


def test_one_ss2d_block_matches_original_math():
    tensors = random_tensors({"self_attention." + k.split("self_attention.")[-1]: v
                              for k, v in ss2d_shapes(32).items() if "self_attention." in k}, seed=1)
    ss2d = SS2D(32, d_state=16, scan_backend="ref")
    ss2d.load_state_dict({k.removeprefix("self_attention."): v for k, v in tensors.items()})
    x = torch.randn(2, 6, 5, 32)  # H != W catches transposition mistakes
    with torch.no_grad():
        ours = ss2d(x)
        ref = orig_ss2d(tensors, "self_attention.", x)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_full_model_matches_original_logits():
    # paper depths at a quarter of the width to keep it fast (the 222-key paper layout itself is
    # checked above). Random weights at std 0.1: at larger scales the 15 untrained blocks amplify
    # the float32 round-off of a different summation order (the slow float64 test covers that)
    cfg = dict(PAPER, dims=[24, 48, 96, 192])
    tensors = {"vmunet." + k: v for k, v in
               random_tensors(original_vmunet_shapes(**cfg, num_classes=2), seed=2, scale=0.1).items()}
    model = create_model("vmunet", num_classes=2, weights=tensors, scan_backend="ref", **cfg).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert_matches_original(model, x, orig_vssm(tensors, x, cfg["depths"], cfg["depths_decoder"]), (2, 2, 32, 32), 1e-4)


@pytest.mark.slow
def test_full_paper_model_matches_original_logits_float64():
    tensors = {"vmunet." + k: v.double()
               for k, v in random_tensors(original_vmunet_shapes(**PAPER, num_classes=3), seed=2).items()}
    model = create_model("vmunet", num_classes=3, scan_backend="ref").double()
    load_weights(model, tensors)
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert_matches_original(model, x, orig_vssm(tensors, x, PAPER["depths"], PAPER["depths_decoder"]), (1, 3, 32, 64),
                            1e-8)

"""Mamba-UNet: the original VSSM's key list (ziyangwang007/Mamba-UNet ``code/networks/mamba_sys.py``)
and equal logits against a plain re-implementation of its forward (concatenated skips + Linear,
blocks before PatchExpand, encoder norm, x4 expand to dims[0]) on the original flat tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_model_weights import (
    _ln,
    assert_matches_original,
    orig_block,
    orig_encoder,
    orig_expand,
    original_vmunet_shapes,
    random_tensors,
    ss2d_shapes,
    vmamba_v0_shapes,
)

from vmunet.models import count_parameters, create_model
from vmunet.models.weights import load_weights

SMALL = dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])


def original_mamba_unet_shapes(depths, dims, num_classes=4, in_chans=3):
    """``VSSM.state_dict()`` of Mamba-UNet's mamba_sys.py, written from its __init__."""
    enc = original_vmunet_shapes(depths, [0] * 4, dims, in_chans=in_chans)
    s = {k: v for k, v in enc.items() if k.startswith(("patch_embed.", "layers."))}
    s["layers_up.0.expand.weight"] = (2 * dims[3], dims[3])
    s["layers_up.0.norm.weight"] = s["layers_up.0.norm.bias"] = (dims[3] // 2,)
    for i in (1, 2, 3):
        d = dims[3 - i]
        s[f"concat_back_dim.{i}.weight"] = (d, 2 * d)
        s[f"concat_back_dim.{i}.bias"] = (d,)
        for j in range(depths[3 - i]):
            s.update({f"layers_up.{i}.blocks.{j}.{k}": v for k, v in ss2d_shapes(d).items()})
        if i < 3:
            s[f"layers_up.{i}.upsample.expand.weight"] = (2 * d, d)
            s[f"layers_up.{i}.upsample.norm.weight"] = s[f"layers_up.{i}.upsample.norm.bias"] = (d // 2,)
    s["norm.weight"] = s["norm.bias"] = (dims[3],)
    s["norm_up.weight"] = s["norm_up.bias"] = (dims[0],)
    s["up.expand.weight"] = (16 * dims[0], dims[0])
    s["up.norm.weight"] = s["up.norm.bias"] = (dims[0],)
    s["output.weight"] = (num_classes, dims[0], 1, 1)
    return s


def orig_mamba_unet(p: dict, x: torch.Tensor, depths) -> torch.Tensor:
    """MambaUnet.forward -> VSSM.forward (forward_features, forward_up_features, up_x4)."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)

    # the encoder is VM-UNet's VSSM encoder (same keys, same math)
    x, x_down = orig_encoder(p, x, depths)
    x = _ln(p, "norm.", x)
    for inx in range(4):
        if inx == 0:
            x = orig_expand(p, "layers_up.0.", x, 2)
            continue
        x = torch.cat([x, x_down[3 - inx]], -1)
        x = x @ p[f"concat_back_dim.{inx}.weight"].T + p[f"concat_back_dim.{inx}.bias"]
        for j in range(depths[3 - inx]):
            x = orig_block(p, f"layers_up.{inx}.blocks.{j}.", x)
        if inx < 3:
            x = orig_expand(p, f"layers_up.{inx}.upsample.", x, 2)
    x = _ln(p, "norm_up.", x)
    x = orig_expand(p, "up.", x, 4).permute(0, 3, 1, 2)
    return F.conv2d(x, p["output.weight"])


def test_keys_and_shapes_are_the_originals_and_parameter_count():
    model = create_model("mamba_unet", num_classes=4, in_chans=3)
    shapes = original_mamba_unet_shapes([2, 2, 2, 2], [96, 192, 384, 768])
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert count_parameters(model) == sum(torch.Size(v).numel() for v in shapes.values()) == 19_121_664


def test_logits_equal_the_original_forward_float64():
    # gray input, H != W: the original repeats it to 3 channels; our 1-channel model gets the
    # 3-channel kernel summed by the loader
    tensors = {k: v.double() for k, v in
               random_tensors(original_mamba_unet_shapes(SMALL["depths"], SMALL["dims"], 3), seed=1, scale=0.1).items()}
    model = create_model("mamba_unet", num_classes=3, in_chans=1, scan_backend="torch", **SMALL).double()
    report = load_weights(model, tensors)
    assert report.layout == "mamba_unet" and report.missing == [] and report.skipped == []
    x = torch.randn(1, 1, 32, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_matches_original(model, x, orig_mamba_unet(tensors, x, SMALL["depths"]), (1, 3, 32, 64), 1e-10)


def test_vmamba_v0_initialises_encoder_and_mirrored_decoder_as_the_original_load_from():
    # the original MambaUnet.load_from maps VMamba 'layers.k' also to 'layers_up.(3-k)'
    tensors = random_tensors(vmamba_v0_shapes([1, 1, 2, 1], SMALL["dims"], classes=None))
    model = create_model("mamba_unet", num_classes=2, **SMALL)
    load_weights(model, {"model": tensors})
    sd = model.state_dict()
    for k in ("layers.2.blocks.0.self_attention.A_logs", "layers.0.downsample.reduction.weight"):
        assert torch.equal(sd[k], tensors[k])
    assert torch.equal(sd["layers_up.1.blocks.0.self_attention.Ds"], tensors["layers.2.blocks.0.self_attention.Ds"])
    assert "layers_up.1.blocks.1.self_attention.Ds" not in sd
    assert torch.equal(sd["layers_up.3.blocks.0.ln_1.weight"], tensors["layers.0.blocks.0.ln_1.weight"])


def test_dims_must_double():
    with pytest.raises(ValueError, match="each dims entry must double the previous one"):
        create_model("mamba_unet", num_classes=2, dims=[16, 32, 48, 96])


def test_original_state_dict_loads_by_name_and_strict_errors(tmp_path):
    # MambaUnet wraps the VSSM as self.mamba_unet; its training script saves model.state_dict()
    tensors = random_tensors(original_mamba_unet_shapes(SMALL["depths"], SMALL["dims"], 4))
    path = tmp_path / "mambaunet_best_model.pth"
    torch.save({"mamba_unet." + k: v for k, v in tensors.items()}, path)
    model = create_model("mamba_unet", num_classes=4, weights=path, **SMALL)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in tensors.items())
    bad = {"mamba_unet." + k: v for k, v in tensors.items() if k != "norm_up.bias"}
    with pytest.raises(ValueError, match=r"cannot load mamba_unet_original weights .* missing key norm_up.bias"):
        load_weights(create_model("mamba_unet", num_classes=4, **SMALL), bad)
    with pytest.raises(ValueError, match=r"output.weight -> output.weight: shape \(4, 16, 1, 1\) in checkpoint"):
        load_weights(create_model("mamba_unet", num_classes=2, **SMALL), path)

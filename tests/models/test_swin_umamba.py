"""Swin-UMamba: the original's key list (JiarunLiu/Swin-UMamba ``nnunetv2/nets/SwinUMamba.py``, with
MONAI's UNETR blocks), equal logits against a plain re-implementation of its forward (MONAI's
``UnetResBlock`` written out: conv, instance norm, leaky ReLU, 1x1 residual) on the original flat
tensors, and VMamba v0 / nnU-Net checkpoint loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_model_weights import (
    _ln,
    assert_matches_original,
    orig_ss2d,
    original_vmunet_shapes,
    random_tensors,
    vmamba_v0_shapes,
)

from vmunet.models import count_parameters, create_model
from vmunet.models.weights import load_weights

SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 32, 64, 128])


def _res_block(prefix, cin, cout):
    s = {prefix + "conv1.conv.weight": (cout, cin, 3, 3), prefix + "conv2.conv.weight": (cout, cout, 3, 3)}
    if cin != cout:
        s[prefix + "conv3.conv.weight"] = (cout, cin, 1, 1)
    return s


def original_swin_umamba_shapes(depths, dims, num_classes=14, in_chans=1):
    """``SwinUMamba.state_dict()`` (instance norms without affine parameters, as MONAI builds them)."""
    feat = [dims[0] // 2, *dims]
    s = {"stem.0.weight": (feat[0], in_chans, 7, 7), "stem.0.bias": (feat[0],),
         "stem.1.weight": (feat[0],), "stem.1.bias": (feat[0],)}
    enc = original_vmunet_shapes(depths, [0] * 4, dims, in_chans=feat[0])
    for k, v in enc.items():
        if k.startswith("patch_embed."):
            s["vssm_encoder." + k] = (dims[0], feat[0], 2, 2) if k == "patch_embed.proj.weight" else v
        elif k.startswith("layers."):
            s["vssm_encoder." + k.replace(".downsample.", ".").replace("layers.", "downsamples.")
              if ".downsample." in k else "vssm_encoder." + k] = v
    ins = [in_chans, *feat[:4]]
    for i in range(5):
        s.update(_res_block(f"encoder{i + 1}.layer.", ins[i], feat[i]))
    ups = [(6, dims[-1], feat[4])] + [(i + 2, feat[i + 1], feat[i]) for i in range(3, -1, -1)]
    for n, cin, cout in ups:
        s[f"decoder{n}.transp_conv.conv.weight"] = (cin, cout, 2, 2)
        s.update(_res_block(f"decoder{n}.conv_block.", 2 * cout, cout))
    s.update(_res_block("decoder1.layer.", feat[0], feat[0]))
    for i in range(4):
        s[f"out_layers.{i}.conv.conv.weight"] = (num_classes, feat[i], 1, 1)
        s[f"out_layers.{i}.conv.conv.bias"] = (num_classes,)
    return s


def orig_swin_umamba(p: dict, x: torch.Tensor, depths) -> torch.Tensor:
    """SwinUMamba.forward with deep_supervision=False (nnU-Net inference)."""
    def res(prefix, x):  # MONAI UnetResBlock, instance norm without affine, LeakyReLU(0.01)
        out = F.leaky_relu(F.instance_norm(F.conv2d(x, p[prefix + "conv1.conv.weight"], padding=1)), 0.01)
        out = F.instance_norm(F.conv2d(out, p[prefix + "conv2.conv.weight"], padding=1))
        if prefix + "conv3.conv.weight" in p:
            x = F.instance_norm(F.conv2d(x, p[prefix + "conv3.conv.weight"]))
        return F.leaky_relu(out + x, 0.01)

    def up(n, x, skip):  # MONAI UnetrUpBlock
        x = F.conv_transpose2d(x, p[f"decoder{n}.transp_conv.conv.weight"], stride=2)
        return res(f"decoder{n}.conv_block.", torch.cat([x, skip], dim=1))

    e = {k.removeprefix("vssm_encoder."): v for k, v in p.items() if k.startswith("vssm_encoder.")}
    x1 = F.conv2d(x, p["stem.0.weight"], p["stem.0.bias"], stride=2, padding=3)
    x1 = F.instance_norm(x1, weight=p["stem.1.weight"], bias=p["stem.1.bias"], eps=1e-5)
    h = F.conv2d(x1, e["patch_embed.proj.weight"], e["patch_embed.proj.bias"], stride=2).permute(0, 2, 3, 1)
    h = _ln(e, "patch_embed.norm.", h)
    vss = [x1]
    for i, depth in enumerate(depths):
        for j in range(depth):
            pre = f"layers.{i}.blocks.{j}."
            h = h + orig_ss2d(e, pre + "self_attention.", _ln(e, pre + "ln_1.", h))
        vss.append(h.permute(0, 3, 1, 2))
        if i < 3:
            h = torch.cat([h[:, 0::2, 0::2], h[:, 1::2, 0::2], h[:, 0::2, 1::2], h[:, 1::2, 1::2]], -1)
            h = _ln(e, f"downsamples.{i}.norm.", h) @ e[f"downsamples.{i}.reduction.weight"].T
    enc = [res("encoder1.layer.", x)] + [res(f"encoder{i + 2}.layer.", vss[i]) for i in range(4)]
    d = up(6, vss[4], enc[4])
    for n, skip in zip((5, 4, 3, 2), (enc[3], enc[2], enc[1], enc[0]), strict=True):
        d = up(n, d, skip)
    d = res("decoder1.layer.", d)
    return F.conv2d(d, p["out_layers.0.conv.conv.weight"], p["out_layers.0.conv.conv.bias"])


def test_keys_are_the_originals_minus_deep_supervision_heads_and_parameter_count():
    model = create_model("swin_umamba", num_classes=14, in_chans=1)
    shapes = original_swin_umamba_shapes([2, 2, 9, 2], [96, 192, 384, 768])
    heads = {k for k in shapes if k.startswith(("out_layers.1.", "out_layers.2.", "out_layers.3."))}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: v for k, v in shapes.items()
                                                                          if k not in heads}
    assert count_parameters(model) == 59_879_918
    # the original with its deep-supervision heads (AbdomenMRI's 14 classes, 1 channel)
    assert sum(torch.Size(v).numel() for v in shapes.values()) == 59_889_368


def test_logits_equal_the_original_forward_float64():
    shapes = original_swin_umamba_shapes(SMALL["depths"], SMALL["dims"], num_classes=3, in_chans=2)
    tensors = {k: v.double() for k, v in random_tensors(shapes, seed=1, scale=0.1).items()}
    model = create_model("swin_umamba", num_classes=3, in_chans=2, scan_backend="torch", **SMALL).double()
    report = load_weights(model, {"network_weights": tensors, "trainer_name": "nnUNetTrainerSwinUMamba"})
    assert report.layout == "swin_umamba" and report.missing == []
    assert {k for k, _ in report.skipped} == {k for k in tensors if k.startswith("out_layers.") and
                                              not k.startswith("out_layers.0.")}
    x = torch.randn(1, 2, 32, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_matches_original(model, x, orig_swin_umamba(tensors, x, SMALL["depths"]), (1, 3, 32, 64), 1e-10)


def test_vmamba_v0_initialises_the_encoder_as_load_pretrained_ckpt():
    dims = SMALL["dims"]
    tensors = random_tensors(vmamba_v0_shapes([1, 1, 3, 1], dims))
    model = create_model("swin_umamba", num_classes=2, in_chans=1, **SMALL)
    report = load_weights(model, {"model": tensors})
    sd = model.state_dict()
    assert torch.equal(sd["vssm_encoder.layers.2.blocks.1.self_attention.A_logs"],
                       tensors["layers.2.blocks.1.self_attention.A_logs"])
    assert torch.equal(sd["vssm_encoder.downsamples.1.reduction.weight"], tensors["layers.1.downsample.reduction.weight"])
    # the original's skip list names patch_embed.norm.weight twice and not the bias: the bias loads
    assert torch.equal(sd["vssm_encoder.patch_embed.norm.bias"], tensors["patch_embed.norm.bias"])
    skipped = dict(report.skipped)
    assert skipped["patch_embed.norm.weight"].startswith("skipped by Swin-UMamba's load_pretrained_ckpt")
    assert skipped["layers.2.blocks.2.ln_1.weight"] == "block beyond the model's depth"
    assert skipped["head.bias"].startswith("ImageNet classifier part")
    assert len(report.loaded) == 1 + (1 + 1 + 2 + 1) * 13 + 3 * 3


def test_strict_error_for_an_unexpected_key():
    shapes = original_swin_umamba_shapes(SMALL["depths"], SMALL["dims"], num_classes=2, in_chans=1)
    tensors = random_tensors(shapes)
    tensors["decoder7.transp_conv.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key decoder7.transp_conv.conv.weight"):
        load_weights(create_model("swin_umamba", num_classes=2, in_chans=1, **SMALL), tensors)


# ----- Swin-UMamba† (swin_umamba_d); its parity with the original: tests/parity/test_original_swin_umamba_d.py


def _d(**kw):
    torch.manual_seed(0)
    kw.setdefault("num_classes", 2)
    return create_model("swin_umamba_d", **SMALL, **kw)


def test_swin_umamba_d_init_is_get_swin_umamba_d_from_plans():
    """The encoder's Linears truncated normal (std 0.02, bias 0), then nnU-Net's
    ``InitWeights_He(1e-2)`` on every Conv2d: N(0, 2 / ((1 + 0.01^2) fan_in)), bias 0; the
    decoder's Linears keep PyTorch's default (uniform within 1/sqrt(fan_in), bias too)."""
    model = _d(in_chans=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + (1 + 1 + 2 + 1) + 2 * 3 + 1  # patch embedding, SS2D convs, the head
    assert all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in convs)
    # every kernel divided by its He std: one standard normal sample of 8,000+ values
    # (PyTorch's default would give std 1/sqrt(6) = 0.41)
    z = torch.cat([(c.weight * (c.weight[0].numel() * (1 + 1e-4) / 2) ** 0.5).flatten() for c in convs])
    assert z.numel() > 8000 and abs(z.std().item() - 1) < 0.05 and abs(z.mean().item()) < 0.05
    enc = [m for m in model.vssm_encoder.modules() if isinstance(m, torch.nn.Linear)]
    w = torch.cat([m.weight.flatten() for m in enc])
    assert abs(w.std().item() - 0.02) < 0.001 and all(m.bias is None or not m.bias.any() for m in enc)
    for m in model.decoder.concat_back_dim:
        bound = m.weight.shape[1] ** -0.5
        assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound and m.bias.any()


def test_swin_umamba_d_drop_path_is_the_originals():
    model = create_model("swin_umamba_d", num_classes=1, dims=16, d_state=4)  # the registry's depths, narrow
    enc = [b.drop_path.drop_prob for st in model.vssm_encoder.layers for b in st.blocks]
    dec = [b.drop_path.drop_prob for st in model.decoder.stages for b in st.blocks]
    assert enc == pytest.approx(torch.linspace(0, 0.2, 15).tolist())
    # UNetResDecoder: dpr = linspace(drop_path_rate, 0, 6), level s takes dpr[2s:2s+2]
    assert dec == pytest.approx([0.2, 0.16, 0.12, 0.08, 0.04, 0.0])


@pytest.mark.parametrize("channels", [1, 4])
def test_swin_umamba_d_vmamba_patch_embedding_loads_only_into_three_channels(channels):
    """load_pretrained_ckpt skips every patch_embed key when the file's channels (VMamba: 3) are
    not the model's, fewer or more; a 1-channel model gets no summed kernel (what the other models get)."""
    tensors = random_tensors(vmamba_v0_shapes([1, 1, 2, 1], SMALL["dims"]))
    rgb, gray = _d(in_chans=3), _d(in_chans=channels)
    before = gray.state_dict()["vssm_encoder.patch_embed.proj.weight"].clone()
    load_weights(rgb, {"model": tensors})
    report = load_weights(gray, {"model": tensors})
    for k in ("patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"):
        assert torch.equal(rgb.state_dict()["vssm_encoder." + k], tensors[k])
        assert dict(report.skipped)[k] == ("skipped by Swin-UMamba†'s load_pretrained_ckpt (3-channel patch "
                                           f"embedding, the model has {channels})")
    assert torch.equal(gray.state_dict()["vssm_encoder.patch_embed.proj.weight"], before) and report.adapted == []
    assert len(report.loaded) == (1 + 1 + 2 + 1) * 13 + 3 * 3


@pytest.mark.parametrize("kw,message", [
    (dict(dims=[16, 32, 48, 96]), "SwinUMambaD: each dims entry must double the previous one, got [16, 32, 48, 96]"),
    (dict(depths_decoder=[2, 2, 2, 2]), "SwinUMambaD: depths_decoder must have 3 entries (one per stage), "
                                        "got [2, 2, 2, 2]"),
    (dict(depths=[2]), "SwinUMambaD: depths must have at least 2 entries (a U-Net needs a skip), got [2]"),
])
def test_swin_umamba_d_bad_options_are_one_line_errors(kw, message):
    with pytest.raises((ValueError, TypeError)) as err:
        create_model("swin_umamba_d", num_classes=2, **{"depths": [1, 1, 1, 1], "dims": 16, **kw})
    assert str(err.value) == message

"""VM-UNet-V2: the original's key list, loading its state dicts and VMamba v0 encoders, equal
logits against an independent re-implementation of the original forward on the original flat
tensors (written here from nobodyplayer1/VM-UNetV2 ``models/vmunet/vmunet_v2.py``), and the
training loss of its fused deep-supervision output against the original ``BceDiceLoss``."""

from __future__ import annotations

import warnings

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
from vmunet.training.module import SegmentationModule

DEFAULT = dict(depths=[2, 2, 9, 2], dims=[96, 192, 384, 768], mid=48)
SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 32, 64, 128], mid=8)


# ------------------------------------------------------------------------------------------------
# the original VMUNetV2 key list, written from its structure (not from our model)
# ------------------------------------------------------------------------------------------------
def original_v2_shapes(depths, dims, mid, num_classes=1, in_chans=3):
    """``VMUNetV2.state_dict()`` shapes: ``vmunet.`` + the VSSM encoder (all 4 stages; its
    decoder and head are commented out), then the SDI decoder at the top level."""
    enc = original_vmunet_shapes(depths, [0] * 4, dims, in_chans=in_chans)
    s = {"vmunet." + k: v for k, v in enc.items() if k.startswith(("patch_embed.", "layers."))}
    for i, d in enumerate(dims, start=1):
        s[f"ca_{i}.fc1.weight"] = (d // 16, d, 1, 1)
        s[f"ca_{i}.fc2.weight"] = (d, d // 16, 1, 1)
        s[f"sa_{i}.conv1.weight"] = (1, 2, 7, 7)
    for i, d in enumerate(dims, start=1):
        s[f"Translayer_{i}.conv.weight"] = (mid, d, 1, 1)
        for b in ("weight", "bias", "running_mean", "running_var"):
            s[f"Translayer_{i}.bn.{b}"] = (mid,)
        s[f"Translayer_{i}.bn.num_batches_tracked"] = ()
    for i in range(1, 5):
        for j in range(4):
            s[f"sdi_{i}.convs.{j}.weight"] = (mid, mid, 3, 3)
            s[f"sdi_{i}.convs.{j}.bias"] = (mid,)
    for j in range(4):
        s[f"seg_outs.{j}.weight"] = (num_classes, mid, 1, 1)
        s[f"seg_outs.{j}.bias"] = (num_classes,)
    for i in range(2, 6):
        s[f"deconv{i}.weight"] = (mid, mid, 4, 4)
    # the original's is ConvTranspose2d(1, 1, ...): only num_classes=1 runs there
    s["deconv6.weight"] = (num_classes, num_classes, 3, 3)
    s["deconv6.bias"] = (num_classes,)
    return s


def original_v2_tensors(cfg, num_classes=1, seed=0, scale=0.2, dtype=torch.float32):
    shapes = original_v2_shapes(cfg["depths"], cfg["dims"], cfg["mid"], num_classes)
    out = {}
    for k, v in random_tensors({k: v for k, v in shapes.items() if v != ()}, seed=seed, scale=scale).items():
        if k.endswith("running_var"):
            v = v.abs() + 0.5
        out[k] = v.to(dtype)
    out.update({k: torch.tensor(7) for k, v in shapes.items() if v == ()})
    return out


def _v2(cfg, **kw):
    return dict(depths=cfg["depths"], dims=cfg["dims"], mid_channels=cfg["mid"], **kw)


# ------------------------------------------------------------------------------------------------
# independent re-implementation of VMUNetV2.forward on the original flat tensors
# ------------------------------------------------------------------------------------------------
def orig_v2_forward(p: dict, x: torch.Tensor, depths) -> tuple[torch.Tensor, torch.Tensor]:
    """VMUNetV2.forward with its final sigmoid left out (square inputs, as the original needs):
    the deep_supervision=True output and the deep_supervision=False one."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    e = {k.removeprefix("vmunet."): v for k, v in p.items() if k.startswith("vmunet.")}
    x = F.conv2d(x, e["patch_embed.proj.weight"], e["patch_embed.proj.bias"], stride=4).permute(0, 2, 3, 1)
    x = _ln(e, "patch_embed.norm.", x)
    skips = []
    for i, depth in enumerate(depths):  # all four stages run, as in the original VSSM.forward
        skips.append(x)
        for j in range(depth):
            pre = f"layers.{i}.blocks.{j}."
            x = x + orig_ss2d(e, pre + "self_attention.", _ln(e, pre + "ln_1.", x))
        if i < 3:
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            x = _ln(e, f"layers.{i}.downsample.norm.", x) @ e[f"layers.{i}.downsample.reduction.weight"].T
    fs = []
    for i, f in enumerate(skips, start=1):
        f = f.permute(0, 3, 1, 2)
        ca = lambda t: F.conv2d(F.relu(F.conv2d(t, p[f"ca_{i}.fc1.weight"])), p[f"ca_{i}.fc2.weight"])  # noqa: B023,E731
        f = torch.sigmoid(ca(F.adaptive_avg_pool2d(f, 1)) + ca(F.adaptive_max_pool2d(f, 1))) * f
        sa_in = torch.cat([f.mean(1, keepdim=True), f.max(1, keepdim=True)[0]], 1)
        f = torch.sigmoid(F.conv2d(sa_in, p[f"sa_{i}.conv1.weight"], padding=3)) * f
        f = F.conv2d(f, p[f"Translayer_{i}.conv.weight"])
        f = F.batch_norm(f, p[f"Translayer_{i}.bn.running_mean"], p[f"Translayer_{i}.bn.running_var"],
                         p[f"Translayer_{i}.bn.weight"], p[f"Translayer_{i}.bn.bias"], training=False)
        fs.append(f)

    def sdi(i, anchor):
        ans = torch.ones_like(anchor)
        t = anchor.shape[-1]
        for j, f in enumerate(fs):
            if f.shape[-1] > t:
                f = F.adaptive_avg_pool2d(f, (t, t))
            elif f.shape[-1] < t:
                f = F.interpolate(f, size=(t, t), mode="bilinear", align_corners=True)
            ans = ans * F.conv2d(f, p[f"sdi_{i}.convs.{j}.weight"], p[f"sdi_{i}.convs.{j}.bias"], padding=1)
        return ans

    f41, f31, f21, f11 = sdi(4, fs[3]), sdi(3, fs[2]), sdi(2, fs[1]), sdi(1, fs[0])

    def head(j, y):
        return F.conv2d(y, p[f"seg_outs.{j}.weight"], p[f"seg_outs.{j}.bias"])

    def deconv(i, y):
        return F.conv_transpose2d(y, p[f"deconv{i}.weight"], stride=2, padding=1)

    seg = [head(0, f41)]
    y = deconv(2, f41) + f31
    seg.append(head(1, y))
    y = deconv(3, y) + f21
    seg.append(head(2, y))
    y = deconv(4, y) + f11
    seg.append(head(3, y))
    seg = [F.interpolate(o, scale_factor=4, mode="bilinear") for o in seg]
    up = F.conv_transpose2d(seg[2], p["deconv6.weight"], p["deconv6.bias"], stride=2, padding=1,
                            output_padding=1)
    return seg[3] + up, seg[3]


# ------------------------------------------------------------------------------------------------
def test_our_keys_are_the_original_ones_minus_what_it_never_uses_and_parameter_count():
    model = create_model("vmunet_v2", num_classes=1)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    orig = {k.removeprefix("vmunet."): v for k, v in original_v2_shapes(**DEFAULT).items()}
    unused = {k for k in orig if k.startswith(("layers.3.blocks.", "seg_outs.0.", "seg_outs.1.", "deconv5."))}
    assert ours == {k: v for k, v in orig.items() if k not in unused}
    assert len(unused) == 2 * 13 + 4 + 1
    # the original counts its unused parts too (2 last-stage blocks 768 wide, seg_outs.0/1, deconv5)
    n_ours = count_parameters(model)
    assert n_ours == 13_822_100
    n_unused = sum(torch.Size(orig[k]).numel() for k in unused)
    n_orig = sum(torch.Size(v).numel() for k, v in orig.items() if "running_" not in k and "num_batches" not in k)
    assert n_orig == n_ours + n_unused == 22_770_934


def test_original_state_dict_round_trip_and_reasons_for_the_skipped_keys():
    tensors = original_v2_tensors(SMALL, num_classes=1)
    model = create_model("vmunet_v2", num_classes=1, **_v2(SMALL))
    report = load_weights(model, {"epoch": 2, "model_state_dict": tensors})
    assert report.layout == "vmunet_v2_original" and report.missing == []
    sd = model.state_dict()
    for k, v in tensors.items():
        k = k.removeprefix("vmunet.")
        if k in sd:
            assert torch.equal(sd[k], v), k
    skipped = dict(report.skipped)
    assert skipped["layers.3.blocks.0.ln_1.weight"] == \
        "last encoder stage: the original runs it and discards its output"
    assert skipped["deconv5.weight"] == "built but never called by the original"
    assert sorted(skipped) == sorted(k.removeprefix("vmunet.") for k in tensors
                                     if k.removeprefix("vmunet.") not in sd)
    # and our own state dict reloads by name (layout vmunet_v2), Lightning-wrapped too
    again = create_model("vmunet_v2", num_classes=1, **_v2(SMALL))
    rep2 = load_weights(again, {"state_dict": {"model." + k: v for k, v in sd.items()}})
    assert rep2.layout == "vmunet_v2" and rep2.skipped == [] and rep2.missing == []
    for k, v in sd.items():
        assert torch.equal(again.state_dict()[k], v), k


def test_without_deep_supervision_its_heads_are_skipped_too():
    tensors = original_v2_tensors(SMALL, num_classes=2)
    model = create_model("vmunet_v2", num_classes=2, deep_supervision=False, **_v2(SMALL))
    report = load_weights(model, tensors)
    skipped = dict(report.skipped)
    assert skipped["seg_outs.2.weight"] == "side head used only with deep supervision"
    assert skipped["deconv6.bias"] == "fusion upsampling used only with deep supervision"


def test_strict_errors_for_mismatches():
    tensors = original_v2_tensors(SMALL, num_classes=1)
    model = create_model("vmunet_v2", num_classes=3, **_v2(SMALL))
    with pytest.raises(ValueError, match=r"vmunet_v2_original weights .*seg_outs.2.weight -> seg_outs.2.weight: "
                                         r"shape \(1, 8, 1, 1\) in checkpoint vs \(3, 8, 1, 1\) in model"):
        load_weights(model, tensors)
    report = load_weights(model, tensors, strict=False)
    assert {k for k, _ in report.skipped} >= {"seg_outs.3.weight", "seg_outs.3.bias", "deconv6.weight"}
    bad = dict(tensors)
    bad.pop("sdi_2.convs.1.bias")
    bad["sdi_2.convs.9.bias"] = torch.zeros(8)
    with pytest.raises(ValueError, match="unexpected key sdi_2.convs.9.bias; missing key sdi_2.convs.1.bias"):
        load_weights(create_model("vmunet_v2", num_classes=1, **_v2(SMALL)), bad)


def test_vmamba_v0_checkpoint_initialises_the_encoder():
    # a VMamba v0 file (deeper than the model) + ImageNet norm/head, under 'model'
    dims = SMALL["dims"]
    tensors = random_tensors(vmamba_v0_shapes([2, 2, 4, 2], dims))
    model = create_model("vmunet_v2", num_classes=1, in_chans=1, **_v2(SMALL))
    report = load_weights(model, {"model": tensors})
    assert report.layout == "vmamba_v0"
    sd = model.state_dict()
    assert torch.allclose(sd["patch_embed.proj.weight"], tensors["patch_embed.proj.weight"].sum(1, keepdim=True))
    enc = [k for k in tensors if k in sd]
    assert len(enc) == len(report.loaded) == 4 + 4 * 13 + 9
    for k in enc:
        if k != "patch_embed.proj.weight":
            assert torch.equal(sd[k], tensors[k]), k
    skipped = dict(report.skipped)
    assert skipped["layers.3.blocks.1.self_attention.Ds"] == \
        "last encoder stage: the original runs it and discards its output"
    assert skipped["layers.2.blocks.3.ln_1.bias"] == "block beyond the model's depth"
    assert skipped["head.weight"].startswith("ImageNet classifier part")
    assert all(k.startswith(("ca_", "sa_", "Translayer_", "sdi_", "seg_outs", "deconv")) for k in report.missing)


def test_logits_equal_the_original_forward_float64_with_and_without_deep_supervision():
    # gray input: the original repeats it to 3 channels, our 1-channel models get the 3-channel
    # kernel summed by the loader -- one reference run checks both heads and that path
    tensors = original_v2_tensors(SMALL, num_classes=2, seed=1, scale=0.1, dtype=torch.float64)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        ref_ds, ref_plain = orig_v2_forward(tensors, x, SMALL["depths"])
    for ds, ref in ((True, ref_ds), (False, ref_plain)):
        model = create_model("vmunet_v2", num_classes=2, in_chans=1, scan_backend="torch",
                             **_v2(SMALL, deep_supervision=ds)).double()
        load_weights(model, tensors)
        assert_matches_original(model, x, ref, (1, 2, 32, 32), 1e-10)


@pytest.mark.slow
def test_default_config_logits_equal_the_original_forward_float64():
    tensors = original_v2_tensors(DEFAULT, num_classes=1, seed=5, scale=0.1, dtype=torch.float64)
    model = create_model("vmunet_v2", num_classes=1, scan_backend="ref").double()
    load_weights(model, tensors)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert_matches_original(model, x, orig_v2_forward(tensors, x, DEFAULT["depths"])[0], (1, 1, 64, 64), 1e-9)


def test_forward_backward_shapes_and_every_parameter_trains():
    torch.manual_seed(0)
    model = create_model("vmunet_v2", num_classes=3, in_chans=1, drop_path_rate=0.0, scan_backend="torch",
                         **_v2(SMALL)).train()
    x = torch.randn(2, 1, 32, 64)  # H != W works here (the original needs square inputs)
    y = model(x)
    assert y.shape == (2, 3, 32, 64)
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # channel attention of a 16-wide level has ONE hidden ReLU unit, which may be off for
        # both pooled inputs: its zero gradient is then the right one
        assert name.startswith("ca_") or p.grad.abs().sum() > 0, name
    assert [s.shape[-2:] for s in model.side_outputs(x)] == [(32, 64), (16, 32)]
    plain = create_model("vmunet_v2", num_classes=3, in_chans=1, scan_backend="torch",
                         **_v2(SMALL, deep_supervision=False)).eval()
    with torch.no_grad():
        assert [s.shape[-2:] for s in plain.side_outputs(x)] == [(32, 64)]
    assert not hasattr(plain, "deconv6") and list(plain.seg_outs) == ["3"]


def test_training_loss_is_the_original_bce_dice_of_the_fused_output():
    # the original trains VMUNetV2 with BceDiceLoss(wb=1, wd=1) on sigmoid(side_H + deconv6(side_H/2));
    # the module's ISIC loss settings (per-sample Dice, smoothing 1/1) applied to our logits
    torch.manual_seed(1)
    module = SegmentationModule("vmunet_v2", num_classes=1, in_chans=3, model_kwargs=_v2(SMALL, scan_backend="torch"),
                                batch_dice=False, dice_smooth_nr=1.0, dice_smooth_dr=1.0).train()
    x = torch.randn(2, 3, 32, 32)
    label = (torch.rand(2, 1, 32, 32) > 0.6).float()
    torch.manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step({"image": x, "label": label}, 0)
    with torch.no_grad():
        s_h, s_h2 = module.model.side_outputs(x)
        pred = torch.sigmoid(s_h + module.model.deconv6(s_h2)).view(2, -1)
        g = label.view(2, -1)
        bce = torch.nn.BCELoss()(pred, g)
        dice = 1 - ((2 * (pred * g).sum(1) + 1) / (pred.sum(1) + g.sum(1) + 1)).sum() / 2
    assert loss.item() == pytest.approx((bce + dice).item(), rel=1e-5)
